// copy/: path cleaning, a host tree read and written back (modes, mtimes,
// symlinks, directories fixed after their contents), and the host-side
// writer's refusals for a hostile stream (writes through symlinks, "..",
// replacing a directory with a file).
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "base/fs.h"
#include "copy/entry.h"
#include "copy/tree.h"

namespace cubby::copy {
namespace {

class Collect : public EntrySink {
 public:
  Result<void> entry(const Entry& e) override {
    entries.push_back(e);
    return {};
  }
  Result<void> data(const char* d, size_t n) override {
    bytes.append(d, n);
    return {};
  }
  Result<void> finish() override {
    finished = true;
    return {};
  }
  std::vector<Entry> entries;
  std::string bytes;
  bool finished = false;
};

class CopyTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/cubby-copy-unit-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    dir_ = t;
  }
  void TearDown() override { (void)remove_tree(dir_); }
  TreeWriter host_writer(const std::string& dest) {
    fd_.reset(::open(dest.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    WriterOptions o;
    o.root = fd_.get();
    o.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    o.strip_setid = true;
    return TreeWriter(std::move(o));
  }
  static Entry file(const std::string& p, uint64_t size, uint32_t mode = 0644) {
    Entry e;
    e.path = p;
    e.kind = Kind::kFile;
    e.size = size;
    e.mode = mode;
    return e;
  }
  std::string dir_;
  UniqueFd fd_;
};

TEST(CopyPath, CleanPathNormalisesAndRefusesEscapes) {
  EXPECT_EQ(clean_path("a//b/./c/", "x").value(), "a/b/c");
  EXPECT_EQ(clean_path("./", "x").value(), "");
  EXPECT_EQ(clean_path("", "x").value(), "");
  EXPECT_FALSE(clean_path("/etc/passwd", "x"));
  EXPECT_FALSE(clean_path("a/../../b", "x"));
  EXPECT_FALSE(clean_path("..", "x"));
  EXPECT_EQ(clean_path("a/..b", "x").value(), "a/..b");
}

TEST_F(CopyTree, ReadThenWriteKeepsModesTimesAndLinks) {
  ASSERT_TRUE(mkdir_p(dir_ + "/src/sub"));
  ASSERT_TRUE(write_file(dir_ + "/src/sub/f", "data", 0640));
  ASSERT_EQ(::symlink("sub/f", (dir_ + "/src/l").c_str()), 0);
  timespec ts[2] = {{0, UTIME_OMIT}, {1400000000, 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ + "/src/sub").c_str(), ts, 0), 0);
  ASSERT_EQ(::chmod((dir_ + "/src/sub").c_str(), 0555), 0);
  ASSERT_TRUE(mkdir_p(dir_ + "/dst"));
  TreeWriter w = host_writer(dir_ + "/dst");
  // As the runtime's Rebase would: the root lands as "copy".
  class Prefix : public EntrySink {
   public:
    explicit Prefix(EntrySink& in) : in_(in) {}
    Result<void> entry(const Entry& e) override {
      Entry r = e;
      r.path = e.path.empty() ? "copy" : "copy/" + e.path;
      return in_.entry(r);
    }
    Result<void> data(const char* d, size_t n) override { return in_.data(d, n); }
    Result<void> finish() override { return in_.finish(); }
    EntrySink& in_;
  } p(w);
  auto r = read_tree(AT_FDCWD, dir_ + "/src", 0, false, p);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(read_file(dir_ + "/dst/copy/sub/f").value_or(""), "data");
  struct stat st;
  ASSERT_EQ(::stat((dir_ + "/dst/copy/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0555u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1400000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);
  ASSERT_EQ(::stat((dir_ + "/dst/copy/sub/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  char buf[64] = {};
  ASSERT_GT(::readlink((dir_ + "/dst/copy/l").c_str(), buf, sizeof buf - 1), 0);
  EXPECT_STREQ(buf, "sub/f");
  ::chmod((dir_ + "/src/sub").c_str(), 0755);
  ::chmod((dir_ + "/dst/copy/sub").c_str(), 0755);
}

TEST_F(CopyTree, HardLinksStayLinked) {
  ASSERT_TRUE(mkdir_p(dir_ + "/src"));
  ASSERT_TRUE(write_file(dir_ + "/src/a", "same"));
  ASSERT_EQ(::link((dir_ + "/src/a").c_str(), (dir_ + "/src/b").c_str()), 0);
  ASSERT_TRUE(mkdir_p(dir_ + "/dst"));
  TreeWriter w = host_writer(dir_ + "/dst");
  ASSERT_TRUE(read_tree(AT_FDCWD, dir_ + "/src", 0, false, w));
  struct stat a, b;
  ASSERT_EQ(::stat((dir_ + "/dst/a").c_str(), &a), 0);
  ASSERT_EQ(::stat((dir_ + "/dst/b").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(read_file(dir_ + "/dst/b").value_or(""), "same");
}

TEST_F(CopyTree, ReadTreeSendsTheRootFirstAndTheLinkNotItsTarget) {
  ASSERT_TRUE(write_file(dir_ + "/f", "x"));
  ASSERT_EQ(::symlink("f", (dir_ + "/l").c_str()), 0);
  Collect c;
  ASSERT_TRUE(read_tree(AT_FDCWD, dir_ + "/l", 0, false, c));
  ASSERT_EQ(c.entries.size(), 1u);
  EXPECT_EQ(c.entries[0].kind, Kind::kSymlink);
  EXPECT_EQ(c.entries[0].target, "f");
  Collect followed;
  ASSERT_TRUE(read_tree(AT_FDCWD, dir_ + "/l", 0, true, followed));
  ASSERT_EQ(followed.entries.size(), 1u);
  EXPECT_EQ(followed.entries[0].kind, Kind::kFile);
  EXPECT_EQ(followed.bytes, "x");
  EXPECT_TRUE(followed.finished);
  Collect missing;
  auto r = read_tree(AT_FDCWD, dir_ + "/nope", 0, false, missing);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind(), ErrorKind::kNotFound);
}

TEST_F(CopyTree, HostWriterRefusesSymlinksOnTheWayAndStripsSetuid) {
  ASSERT_TRUE(mkdir_p(dir_ + "/dst"));
  ASSERT_TRUE(mkdir_p(dir_ + "/victim"));
  TreeWriter w = host_writer(dir_ + "/dst");
  Entry link;
  link.path = "link";
  link.kind = Kind::kSymlink;
  link.target = dir_ + "/victim";
  ASSERT_TRUE(w.entry(link));
  auto through = w.entry(file("link/pwned", 1));
  ASSERT_FALSE(through);
  EXPECT_NE(through.error().message().find("symlink"), std::string::npos) << through.error().message();
  // A directory entry onto the symlink is refused too.
  Entry d;
  d.path = "link";
  d.kind = Kind::kDir;
  EXPECT_FALSE(w.entry(d));
  // A file entry replaces the symlink itself, never its target.
  ASSERT_TRUE(w.entry(file("link", 1, 04755)));
  ASSERT_TRUE(w.data("y", 1));
  ASSERT_TRUE(w.finish());
  struct stat st;
  ASSERT_EQ(::lstat((dir_ + "/dst/link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "setuid must be stripped from an untrusted file";
  EXPECT_NE(::access((dir_ + "/victim/pwned").c_str(), F_OK), 0);
  // A directory is not replaced by a file.
  ASSERT_TRUE(mkdir_p(dir_ + "/dst/adir"));
  EXPECT_FALSE(w.entry(file("adir", 0)));
}

}  // namespace
}  // namespace cubby::copy
