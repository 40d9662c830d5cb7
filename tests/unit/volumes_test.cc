// -v parsing: SRC:DST[:ro|rw] with an existing absolute host path, the
// canonical SRC and clean DST kept, and each refusal a single message
// naming the value.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "base/fs.h"
#include "runtime/volumes.h"

namespace cubby {
namespace {

class ParseVolume : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/cubby-volumes-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    dir_ = t;
    ASSERT_TRUE(mkdir_p(dir_ + "/real"));
    ASSERT_TRUE(write_file(dir_ + "/file", "x"));
    ASSERT_EQ(::symlink("real", (dir_ + "/link").c_str()), 0);
  }
  void TearDown() override { (void)remove_tree(dir_); }
  std::string dir_;
};

TEST_F(ParseVolume, DockerForms) {
  auto rw = parse_volume(dir_ + "/real:/data");
  ASSERT_TRUE(rw) << rw.error().message();
  EXPECT_EQ(rw->target, "/data");
  EXPECT_FALSE(rw->read_only);
  EXPECT_EQ(to_string(*rw), dir_ + "/real:/data:rw");

  auto ro = parse_volume(dir_ + "/file:/etc/app.conf:ro");
  ASSERT_TRUE(ro);
  EXPECT_TRUE(ro->read_only);
  EXPECT_EQ(ro->source, dir_ + "/file");

  auto explicit_rw = parse_volume(dir_ + "/real:/x:rw");
  ASSERT_TRUE(explicit_rw);
  EXPECT_FALSE(explicit_rw->read_only);
}

TEST_F(ParseVolume, SourceIsCanonicalAndTargetClean) {
  auto m = parse_volume(dir_ + "/./link/..//link:/a/./b//../c/");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->source, dir_ + "/real");
  EXPECT_EQ(m->target, "/a/c");
  auto up = parse_volume(dir_ + "/real:/data/../../etc");
  ASSERT_TRUE(up);
  EXPECT_EQ(up->target, "/etc");  // ".." stops at the root, as in the box
}

TEST_F(ParseVolume, CleanPath) {
  EXPECT_EQ(clean_path("/"), "/");
  EXPECT_EQ(clean_path("/.."), "/");
  EXPECT_EQ(clean_path("//a//b/"), "/a/b");
  EXPECT_EQ(clean_path("/a/../../b/./c/.."), "/b");
}

TEST_F(ParseVolume, Refusals) {
  struct Case {
    std::string spec, why;
  };
  std::vector<Case> cases = {
      {"", "empty"},
      {dir_ + "/real", "anonymous volumes"},
      {"myvol:/data", "named volumes are not supported"},
      {"./real:/data", "must be absolute"},
      {"real/x:/data", "must be absolute"},
      {":/data", "host path is empty"},
      {dir_ + "/missing:/data", "does not exist"},
      {dir_ + "/real:data", "box path must be absolute"},
      {dir_ + "/real:", "box path must be absolute"},
      {dir_ + "/real:/", "\"/\""},
      {dir_ + "/real:/x/..", "\"/\""},
      {dir_ + "/real:/proc/x", "/proc"},
      {dir_ + "/real:/sys", "/sys"},
      {dir_ + "/real:/data:z", "unknown option \"z\""},
      {dir_ + "/real:/data:ro,z", "unknown option"},
      {dir_ + "/real:/data:ro:x", "too many ':'"},
  };
  for (const auto& c : cases) {
    auto r = parse_volume(c.spec);
    ASSERT_FALSE(r) << c.spec;
    const std::string& msg = r.error().message();
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << c.spec;
    EXPECT_NE(msg.find("\"" + c.spec + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.why), std::string::npos) << c.spec << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST_F(ParseVolume, OneTargetOnce) {
  auto ok = parse_volumes({dir_ + "/real:/a", dir_ + "/file:/b:ro"});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->size(), 2u);
  auto twice = parse_volumes({dir_ + "/real:/a", dir_ + "/file:/a/"});
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.error().message().find("already mounted on /a"), std::string::npos) << twice.error().message();
}

}  // namespace
}  // namespace cubby
