// Image layers look the same in a box on both backends: the sandbox joins
// them with overlayfs (in the box's user namespace, so opaque directories
// are user.overlay.* xattrs), the vm backend flattens them into one ext4
// image (shim/vm_disk.cc). Deleted files, opaque directories, a directory
// replaced by a file and the reverse, and hardlinks must all come out as an
// OCI runtime would show them.
#include <dirent.h>
#include <unistd.h>

#include "harness.h"

namespace cubby::test {
namespace {

class Layers : public BackendTest {};

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) out.push_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

TEST_P(Layers, WhiteoutsOpaqueDirsAndHardlinksAreApplied) {
  std::string archive = home_ + "/whiteouts.oci.tar";
  std::string build = std::string(CUBBY_TEST_SOURCE_DIR) + "/integration/layers/build-whiteout-image.sh " +
                      CUBBY_TEST_ROOTFS + " " + archive + " 2>&1";
  ASSERT_EQ(::system(build.c_str()), 0) << build;
  auto load = cubby({"load", "-i", archive});
  ASSERT_EQ(load.rc, 0) << load.err;
  auto r = cubby({"run", "--rm", "--network", "none", "--isolation", isolation(), "example.com/whiteouts:v1", "sh",
                  "-c", "find /data | sort; cat /data/dir2file; stat -c '%h %i' /data/h1 /data/h2 | uniq -c"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, r.out.find("now a file")),
            "/data\n/data/dir2file\n/data/file2dir\n/data/file2dir/y.txt\n/data/h1\n/data/h2\n/data/keep\n"
            "/data/keep/a.txt\n/data/opq\n/data/opq/new.txt\n");
  EXPECT_NE(r.out.find("now a file\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("      2 2 "), std::string::npos) << "h1 and h2 are not one inode with two links: " << r.out;

  if (isolation() != "vm") return;
  // The image's cached vm disk goes once the image is removed (at the next
  // vm start), and the busybox image's own disk takes its place.
  ASSERT_EQ(cubby({"rmi", "example.com/whiteouts:v1"}).rc, 0);
  ASSERT_EQ(cubby({"run", "--rm", "--network", "none", "--isolation", "vm", image_, "true"}).rc, 0);
  int disks = 0;
  for (const auto& name : list_dir(home_ + "/vm/disks")) disks += name.ends_with(".ext4");
  EXPECT_EQ(disks, 1) << "the removed image's vm disk was kept";
}

INSTANTIATE_TEST_SUITE_P(BothBackends, Layers, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace cubby::test
