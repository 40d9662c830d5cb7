// base/fs modes: mkdir_p gives every directory it makes exactly its mode
// (whatever the umask; it used to ignore the mode and leave 0755), leaves the
// ones already there alone, and make_private closes what is open to others.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "base/fs.h"

namespace cubby {
namespace {

mode_t mode_of(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 ? st.st_mode & 07777 : 01;
}

class FsModes : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/cubby-fs-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    dir_ = t;
  }
  void TearDown() override {
    ::umask(old_umask_);
    (void)remove_tree(dir_);
  }
  std::string dir_;
  mode_t old_umask_ = ::umask(022);
};

TEST_F(FsModes, MkdirPMakesEveryMissingDirectoryWithItsMode) {
  ASSERT_TRUE(mkdir_p(dir_ + "/a/b/c"));
  for (const char* d : {"/a", "/a/b", "/a/b/c"}) EXPECT_EQ(mode_of(dir_ + d), 0700u) << d;
  ::umask(077);  // a box's upper dir is its /: 0755 means 0755
  ASSERT_TRUE(mkdir_p(dir_ + "/a/up/", 0755));
  EXPECT_EQ(mode_of(dir_ + "/a/up"), 0755u);
  EXPECT_EQ(mode_of(dir_ + "/a"), 0700u) << "an existing directory was changed";
  ASSERT_TRUE(mkdir_p(dir_ + "/a/b/c", 0755));  // all there already: nothing changes
  EXPECT_EQ(mode_of(dir_ + "/a/b/c"), 0700u);
  ASSERT_TRUE(write_file(dir_ + "/f", "x"));
  EXPECT_EQ(mode_of(dir_ + "/f"), 0600u);
  auto r = mkdir_p(dir_ + "/f");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().sys_errno(), ENOTDIR);
}

TEST_F(FsModes, MakePrivateDropsGroupAndOtherBits) {
  ASSERT_EQ(::mkdir((dir_ + "/home").c_str(), 0755), 0);
  ASSERT_EQ(::chmod((dir_ + "/home").c_str(), 02775), 0);
  ASSERT_TRUE(write_file(dir_ + "/db", "x", 0644));
  ASSERT_TRUE(make_private_dir(dir_ + "/home"));
  EXPECT_EQ(mode_of(dir_ + "/home"), 02700u);
  ASSERT_TRUE(make_private(dir_ + "/db"));
  EXPECT_EQ(mode_of(dir_ + "/db"), 0600u);
  EXPECT_TRUE(make_private(dir_ + "/missing"));
  ASSERT_TRUE(make_private_dir(dir_ + "/new/home"));
  EXPECT_EQ(mode_of(dir_ + "/new/home"), 0700u);
}

}  // namespace
}  // namespace cubby
