// TreeWriter (src/image/tree_writer.h): the kernel-confined writer under the
// layer unpacker. unpack.cc rejects unsafe entries by name before they get
// here (image_store_test covers that); these tests drive the writer
// directly, so they check the kernel's second line of defence and the
// metadata rules on their own.
#include "image/tree_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

namespace cubby::image {
namespace {

namespace fs = std::filesystem;

struct EntryFree {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using Entry = std::unique_ptr<struct archive_entry, EntryFree>;

Entry entry(mode_t type, mode_t perm, time_t mtime = 1600000000) {
  Entry e(archive_entry_new());
  archive_entry_set_filetype(e.get(), type);
  archive_entry_set_perm(e.get(), perm);
  archive_entry_set_mtime(e.get(), mtime, 0);
  archive_entry_set_uid(e.get(), 0);
  archive_entry_set_gid(e.get(), 0);
  return e;
}

class TreeWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cubby-tree-writer-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    base_ = tmpl;
    root_ = base_ + "/root";
    outside_ = base_ + "/outside";
    fs::create_directory(root_);
    fs::create_directory(outside_);
  }
  void TearDown() override {
    // Undo read-only modes a test set, then remove everything.
    for (auto& p : fs::recursive_directory_iterator(base_))
      if (p.is_directory() && !p.is_symlink()) ::chmod(p.path().c_str(), 0755);
    fs::remove_all(base_);
  }
  Result<void> write_file(TreeWriter& w, const std::string& rel, const std::string& data, mode_t perm = 0644) {
    auto fd = w.create_file(rel);
    if (!fd) return std::unexpected(fd.error());
    if (::pwrite(fd->get(), data.data(), data.size(), 0) != static_cast<ssize_t>(data.size()))
      return std::unexpected(Error::sys("pwrite"));
    auto e = entry(AE_IFREG, perm);
    archive_entry_set_size(e.get(), static_cast<la_int64_t>(data.size()));
    return w.finish_file(fd->get(), rel, e.get());
  }
  std::string base_, root_, outside_;
};

// A symlink planted in the tree (by anything: the unpacker's own checks
// are bypassed here) is never followed by the writer, for any kind of entry.
TEST_F(TreeWriterTest, NeverWritesThroughASymlinkInThePath) {
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/esc").c_str()), 0);
  ASSERT_EQ(::symlink("../outside", (root_ + "/rel").c_str()), 0);
  auto w = TreeWriter::open(root_);
  ASSERT_TRUE(w.has_value()) << w.error().message();
  for (const std::string dir : {"esc", "rel"}) {
    auto f = w->create_file(dir + "/x");
    ASSERT_FALSE(f.has_value());
    EXPECT_EQ(f.error().kind(), ErrorKind::kInvalid) << f.error().message();
    EXPECT_NE(f.error().message().find("symlink is in the way"), std::string::npos) << f.error().message();
    auto d = entry(AE_IFDIR, 0755);
    EXPECT_FALSE(w->create_other(dir + "/sub/deeper", d.get()).has_value());
    auto l = entry(AE_IFLNK, 0777);
    archive_entry_set_symlink(l.get(), "/etc/passwd");
    EXPECT_FALSE(w->create_other(dir + "/l", l.get()).has_value());
    EXPECT_FALSE(w->open_dir(dir).has_value());
  }
  ASSERT_TRUE(write_file(*w, "target", "t").has_value());
  EXPECT_FALSE(w->link("esc/hl", "target").has_value());   // link placed through a symlink
  EXPECT_FALSE(w->link("hl", "esc/something").has_value());  // link target through a symlink
  EXPECT_TRUE(fs::is_empty(outside_));
}

// The last component: an existing symlink is replaced, never followed.
TEST_F(TreeWriterTest, ReplacesASymlinkInsteadOfFollowingIt) {
  std::string victim = outside_ + "/victim";
  { std::ofstream(victim) << "keep"; }
  ASSERT_EQ(::symlink(victim.c_str(), (root_ + "/f").c_str()), 0);
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/d").c_str()), 0);
  auto w = TreeWriter::open(root_);
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE(write_file(*w, "f", "new", 0600).has_value());
  auto d = entry(AE_IFDIR, 0700);
  ASSERT_TRUE(w->create_other("d", d.get()).has_value());
  ASSERT_TRUE(w->finish().has_value());
  EXPECT_FALSE(fs::is_symlink(root_ + "/f"));
  EXPECT_FALSE(fs::is_symlink(root_ + "/d"));
  EXPECT_TRUE(fs::is_directory(root_ + "/d"));
  std::ifstream in(victim);
  std::string got;
  in >> got;
  EXPECT_EQ(got, "keep");
  struct stat st;
  ASSERT_EQ(::stat(outside_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);  // the outside dir's mode was not touched
}

// Directory metadata is applied last: a read-only directory still takes its
// entries, and its mtime is the archive's, not the time its children came.
TEST_F(TreeWriterTest, DirectoryModeAndTimesAreAppliedLast) {
  auto w = TreeWriter::open(root_);
  ASSERT_TRUE(w.has_value());
  auto ro = entry(AE_IFDIR, 0555, 1500000000);
  ASSERT_TRUE(w->create_other("ro", ro.get()).has_value());
  ASSERT_TRUE(write_file(*w, "ro/inside", "x").has_value());
  auto sub = entry(AE_IFDIR, 0750, 1400000000);
  ASSERT_TRUE(w->create_other("ro/sub", sub.get()).has_value());
  ASSERT_TRUE(write_file(*w, "missing/parents/file", "y").has_value());  // parents made on the way
  auto fifo = entry(AE_IFIFO, 0640);
  ASSERT_TRUE(w->create_other("ro/fifo", fifo.get()).has_value());
  ASSERT_TRUE(w->finish().has_value());
  struct stat st;
  ASSERT_EQ(::stat((root_ + "/ro").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  EXPECT_EQ(st.st_mtime, 1500000000);
  ASSERT_EQ(::stat((root_ + "/ro/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_mtime, 1400000000);
  ASSERT_EQ(::lstat((root_ + "/ro/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_TRUE(fs::is_regular_file(root_ + "/missing/parents/file"));
}

// Later entries replace earlier ones; a directory is only replaced when
// empty (tar's rule), and a directory entry over a directory keeps it.
TEST_F(TreeWriterTest, LaterEntriesReplaceEarlierOnes) {
  auto w = TreeWriter::open(root_);
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE(write_file(*w, "a", "file first").has_value());
  auto d = entry(AE_IFDIR, 0755);
  ASSERT_TRUE(w->create_other("a", d.get()).has_value());  // file -> dir
  ASSERT_TRUE(write_file(*w, "a/child", "c").has_value());
  ASSERT_TRUE(w->create_other("a", d.get()).has_value());  // dir over dir: children stay
  EXPECT_TRUE(fs::exists(root_ + "/a/child"));
  auto full = write_file(*w, "a", "file over a non-empty dir");
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().kind(), ErrorKind::kInvalid) << full.error().message();
  auto e = entry(AE_IFDIR, 0755);
  ASSERT_TRUE(w->create_other("empty", e.get()).has_value());
  auto l = entry(AE_IFLNK, 0777);
  archive_entry_set_symlink(l.get(), "a/child");
  ASSERT_TRUE(w->create_other("empty", l.get()).has_value());  // empty dir -> symlink
  ASSERT_TRUE(w->link("hl", "empty").has_value());             // a link to a symlink is a symlink
  EXPECT_TRUE(fs::is_symlink(root_ + "/hl"));
  ASSERT_TRUE(w->finish().has_value());  // the replaced directory's metadata is dropped
  EXPECT_TRUE(fs::is_symlink(root_ + "/empty"));
}

}  // namespace
}  // namespace cubby::image
