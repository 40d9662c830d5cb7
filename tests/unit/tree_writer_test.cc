// copy::TreeWriter (src/copy/tree.h) as the layer unpacker sets it up
// (image/unpack.cc: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from the layer
// root, tar's replacement and owner rules). unpack.cc rejects unsafe entries
// by name before they get here (image_store_test covers that); these tests
// drive the writer directly, so they check the kernel's second line of
// defence and the metadata rules on their own. copy_tree_test covers the
// same writer as `cubby cp` sets it up.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/unique_fd.h"
#include "copy/tree.h"

namespace cubby::copy {
namespace {

namespace fs = std::filesystem;

Entry entry(Kind kind, const std::string& path, uint32_t perm, int64_t mtime = 1600000000) {
  Entry e;
  e.kind = kind;
  e.path = path;
  e.mode = perm;
  e.mtime_sec = mtime;
  e.atime_sec = mtime;
  e.atime_nsec = 0;
  return e;
}

Entry symlink(const std::string& path, const std::string& target) {
  Entry e = entry(Kind::kSymlink, path, 0777);
  e.target = target;
  return e;
}

Entry hardlink(const std::string& path, const std::string& target) {
  Entry e = entry(Kind::kHardlink, path, 0);
  e.target = target;
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
    root_fd_.reset(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    ASSERT_TRUE(root_fd_);
  }
  void TearDown() override {
    // Undo read-only modes a test set, then remove everything.
    for (auto& p : fs::recursive_directory_iterator(base_))
      if (p.is_directory() && !p.is_symlink()) ::chmod(p.path().c_str(), 0755);
    fs::remove_all(base_);
  }
  // As unpack.cc makes it.
  TreeWriter layer_writer() {
    WriterOptions o;
    o.root = root_fd_.get();
    o.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    o.owner = Owner::kRestore;
    o.replace_all = true;
    o.root_meta = true;
    o.sync_files = true;
    return TreeWriter(std::move(o));
  }
  // As unpack.cc writes a file: blocks at offsets, then end_file().
  static Result<void> write_file(TreeWriter& w, const std::string& rel, const std::string& data, uint32_t perm = 0644) {
    Entry e = entry(Kind::kFile, rel, perm);
    e.size = data.size();
    if (auto r = w.entry(e); !r) return r;
    if (auto r = w.data_at(0, data.data(), data.size()); !r) return r;
    return w.end_file();
  }
  std::string base_, root_, outside_;
  UniqueFd root_fd_;
};

// A symlink planted in the tree (by anything: the unpacker's own checks
// are bypassed here) is never followed by the writer, for any kind of entry.
TEST_F(TreeWriterTest, NeverWritesThroughASymlinkInThePath) {
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/esc").c_str()), 0);
  ASSERT_EQ(::symlink("../outside", (root_ + "/rel").c_str()), 0);
  TreeWriter w = layer_writer();
  for (const std::string dir : {"esc", "rel"}) {
    Entry f = entry(Kind::kFile, dir + "/x", 0644);
    f.size = 1;
    auto r = w.entry(f);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << r.error().message();
    EXPECT_NE(r.error().message().find("symlink"), std::string::npos) << r.error().message();
    EXPECT_FALSE(w.entry(entry(Kind::kDir, dir + "/sub/deeper", 0755)).has_value());
    EXPECT_FALSE(w.entry(symlink(dir + "/l", "/etc/passwd")).has_value());
    EXPECT_FALSE(w.entry(entry(Kind::kFifo, dir + "/p", 0644)).has_value());
    EXPECT_FALSE(w.open_dir(dir).has_value());
    EXPECT_FALSE(w.open_dir(dir + "/new").has_value());
  }
  ASSERT_TRUE(write_file(w, "target", "t").has_value());
  EXPECT_FALSE(w.entry(hardlink("esc/hl", "target")).has_value());   // link placed through a symlink
  EXPECT_FALSE(w.entry(hardlink("hl", "esc/something")).has_value());  // link target through a symlink
  EXPECT_TRUE(w.finish().has_value());
  EXPECT_TRUE(fs::is_empty(outside_));
}

// The last component: an existing symlink is replaced, never followed.
TEST_F(TreeWriterTest, ReplacesASymlinkInsteadOfFollowingIt) {
  std::string victim = outside_ + "/victim";
  { std::ofstream(victim) << "keep"; }
  ASSERT_EQ(::symlink(victim.c_str(), (root_ + "/f").c_str()), 0);
  ASSERT_EQ(::symlink(outside_.c_str(), (root_ + "/d").c_str()), 0);
  TreeWriter w = layer_writer();
  ASSERT_TRUE(write_file(w, "f", "new", 0600).has_value());
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "d", 0700)).has_value());
  ASSERT_TRUE(w.finish().has_value());
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
  TreeWriter w = layer_writer();
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "", 0711, 1300000000)).has_value());  // the layer's "./"
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "ro", 0555, 1500000000)).has_value());
  ASSERT_TRUE(write_file(w, "ro/inside", "x").has_value());
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "ro/sub", 0750, 1400000000)).has_value());
  ASSERT_TRUE(write_file(w, "missing/parents/file", "y").has_value());  // parents made on the way
  ASSERT_TRUE(w.entry(entry(Kind::kFifo, "ro/fifo", 0640)).has_value());
  ASSERT_TRUE(w.finish().has_value());
  struct stat st;
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
  EXPECT_EQ(st.st_mtime, 1300000000);
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
  TreeWriter w = layer_writer();
  ASSERT_TRUE(write_file(w, "a", "file first").has_value());
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "a", 0755)).has_value());  // file -> dir
  ASSERT_TRUE(write_file(w, "a/child", "c").has_value());
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "a", 0755)).has_value());  // dir over dir: children stay
  EXPECT_TRUE(fs::exists(root_ + "/a/child"));
  auto full = write_file(w, "a", "file over a non-empty dir");
  ASSERT_FALSE(full.has_value());
  EXPECT_EQ(full.error().kind(), ErrorKind::kInvalid) << full.error().message();
  ASSERT_TRUE(w.entry(entry(Kind::kDir, "empty", 0755)).has_value());
  ASSERT_TRUE(w.entry(symlink("empty", "a/child")).has_value());  // empty dir -> symlink
  ASSERT_TRUE(w.entry(hardlink("hl", "empty")).has_value());      // a link to a symlink is a symlink
  EXPECT_TRUE(fs::is_symlink(root_ + "/hl"));
  ASSERT_TRUE(w.finish().has_value());  // the replaced directory's metadata is dropped
  EXPECT_TRUE(fs::is_symlink(root_ + "/empty"));
}

// A sparse entry: blocks at their offsets, the holes (a missing tail too)
// left unwritten; and the file's xattrs and atime are kept.
TEST_F(TreeWriterTest, SparseBlocksXattrsAndAtime) {
  TreeWriter w = layer_writer();
  Entry e = entry(Kind::kFile, "sparse", 0644, 1500000000);
  e.atime_sec = 1200000000;
  e.size = 3 << 20;
  e.xattrs = {{"user.cubby.test", "v"}};
  ASSERT_TRUE(w.entry(e).has_value());
  ASSERT_FALSE(w.entry(entry(Kind::kDir, "too-early", 0755)).has_value());  // the file is still open
  ASSERT_TRUE(w.data_at(1 << 20, "abc", 3).has_value());
  ASSERT_TRUE(w.end_file().has_value());
  ASSERT_TRUE(w.finish().has_value());
  struct stat st;
  ASSERT_EQ(::stat((root_ + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 3 << 20);
  EXPECT_LT(st.st_blocks * 512, 1 << 20) << "the holes were written";
  EXPECT_EQ(st.st_mtime, 1500000000);
  EXPECT_EQ(st.st_atime, 1200000000);
  char v[8] = {};
  ssize_t n = ::getxattr((root_ + "/sparse").c_str(), "user.cubby.test", v, sizeof v);
  if (n < 0 && errno == ENOTSUP) GTEST_SKIP() << "no user xattrs on /tmp";
  ASSERT_EQ(n, 1);
  EXPECT_EQ(v[0], 'v');
}

}  // namespace
}  // namespace cubby::copy

namespace cubby::copy {
namespace {

// A hostile layer's sparse map: blocks beyond the declared size, or going
// back over what was written, are refused rather than growing the file.
TEST_F(TreeWriterTest, SparseBlocksOutOfOrderOrBeyondTheSizeAreRefused) {
  struct Case {
    uint64_t first, second, len;
  };
  for (auto c : {Case{0, 5, 10} /* overlap */, Case{100, 50, 10} /* backwards */, Case{0, 8190, 10} /* beyond */}) {
    TreeWriter w = layer_writer();
    Entry e = entry(Kind::kFile, "f" + std::to_string(c.second), 0644);
    e.size = 8192;
    ASSERT_TRUE(w.entry(e).has_value());
    ASSERT_TRUE(w.data_at(c.first, "abcdefghij", 10).has_value());
    auto r = w.data_at(c.second, "abcdefghij", c.len);
    ASSERT_FALSE(r.has_value()) << c.first << " then " << c.second;
    EXPECT_NE(r.error().message().find("out of order or beyond the file's size"), std::string::npos)
        << r.error().message();
  }
}

}  // namespace
}  // namespace cubby::copy
