// The box filesystem options (proto/box_fs.h) that cubby-runc maps
// config.json's tmpfs mounts, masked/read-only paths and root.readonly
// onto: mount(2) arguments from mount(8) words, and one error per bad value.
#include <gtest/gtest.h>
#include <sys/mount.h>

#include "proto/box_fs.h"

using namespace cubby;

namespace {

TEST(OciBoxFs, TmpfsWordsBecomeFlagsAndData) {
  // containerd's /run and Docker's --tmpfs defaults.
  auto a = tmpfs_mount_args({"nosuid", "strictatime", "mode=755", "size=65536k"});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->flags, static_cast<unsigned long>(MS_NOSUID | MS_STRICTATIME));
  EXPECT_EQ(a->data, "mode=755,size=65536k");
  a = tmpfs_mount_args({"ro", "noexec", "nodev", "rw", "uid=1000", "gid=5", "nr_inodes=10k", "size=50%"});
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->flags, static_cast<unsigned long>(MS_NOEXEC | MS_NODEV));  // rw undoes ro
  EXPECT_EQ(a->data, "uid=1000,gid=5,nr_inodes=10k,size=50%");
  EXPECT_EQ(tmpfs_mount_args({})->data, "");
}

TEST(OciBoxFs, BadOptionsAndPathsAreRefusedByName) {
  EXPECT_EQ(tmpfs_mount_args({"tmpcopyup"}).error().message().rfind("tmpfs option \"tmpcopyup\" is not supported", 0), 0u);
  EXPECT_EQ(tmpfs_mount_args({"mode=999"}).error().message(), "tmpfs option \"mode=999\" has a malformed value");
  EXPECT_EQ(tmpfs_mount_args({"size=1x"}).error().message(), "tmpfs option \"size=1x\" has a malformed value");
  EXPECT_EQ(tmpfs_mount_args({"size=1,huge=always"}).error().message(), "tmpfs option \"size=1,huge=always\" has a malformed value");
  EXPECT_EQ(tmpfs_mount_args({"size=1k", "size=2k"}).error().message(), "tmpfs option size= given twice");
  BoxFs f;
  f.tmpfs = {{"/run", {"size=1m"}}, {"/run", {}}};
  EXPECT_EQ(check_box_fs(f).error().message(), "two tmpfs mounts on /run");
  for (const char* bad : {"run", "/", "/a/../etc", "/a//b", "/a/"}) {
    f.tmpfs = {{bad, {}}};
    EXPECT_FALSE(check_box_fs(f)) << bad;
  }
  f.tmpfs = {{"/run", {"mode=7777x"}}};
  EXPECT_EQ(check_box_fs(f).error().message(), "tmpfs on /run: tmpfs option \"mode=7777x\" has a malformed value");
  f = BoxFs{};
  f.masked_paths = {"/proc/../etc/shadow"};
  EXPECT_FALSE(check_box_fs(f));
  f = BoxFs{};
  f.shm_size = 0;
  EXPECT_FALSE(check_box_fs(f));
  f = BoxFs{};
  EXPECT_TRUE(f.empty());
  f.read_only = true;
  f.tmpfs = {{"/run", {"nosuid"}}};
  f.masked_paths = {"/proc/acpi"};
  EXPECT_TRUE(check_box_fs(f));
  // What the shim passes the agent reads back the same.
  nlohmann::json j = f;
  auto back = j.get<BoxFs>();
  EXPECT_TRUE(back.read_only);
  EXPECT_EQ(back.tmpfs[0].destination, "/run");
  EXPECT_EQ(back.masked_paths, f.masked_paths);
}

}  // namespace
