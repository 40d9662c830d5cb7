// What only the vm backend (QEMU microvm, own guest kernel) has, through the
// real CLI. The lifecycle guarantees it shares with the sandbox run on both
// backends in lifecycle_test.cc. These hosts have no usable KVM (a PVM
// /dev/kvm), so the boxes boot under TCG (CUBBY_VM_ACCEL=tcg, about 2.5 s a
// boot); the harness picks TCG only where the KVM probe says no.
#include <signal.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "hypervisor/kvm_probe.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

class Vm : public BoxTest {
 protected:
  Vm() { isolation_ = "vm"; }
};

TEST_F(Vm, UnameIsTheGuestKernel) {
  auto r = cubby(box_args("run", {"--rm", image_, "uname", "-r"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  utsname u;
  ::uname(&u);
  EXPECT_NE(r.out, std::string(u.release) + "\n");
  EXPECT_NE(r.out.find("cloud-amd64"), std::string::npos) << r.out;
}

// The guest console (kernel, init and QEMU messages) is part of `cubby logs`
// for a vm box, on stderr (GuestThatCannotBootIsReportedWithItsConsole shows
// a panic there); the workload's stdout stays clean, and a box that boots and
// ends normally adds no noise of cubby's or of the machine's.
TEST_F(Vm, ConsoleIsInTheLogsOnStderr) {
  auto r = cubby(box_args("run", {"--name", "con", image_, "sh", "-c", "echo out; echo err >&2; exit 3"}));
  EXPECT_EQ(r.rc, 3) << r.err;
  auto logs = cubby({"logs", "con"});
  EXPECT_EQ(logs.rc, 0) << logs.err;
  EXPECT_EQ(logs.out, "out\n");
  EXPECT_NE(logs.err.find("err\n"), std::string::npos) << logs.err;
  // (Not yet: the kernel's "PCI: Fatal: No config space access function
  // found", a KERN_ERR line pci=off does not silence on microvm.)
  for (const char* noise : {"CUBBY-EXIT", "Power down"})
    EXPECT_EQ(logs.err.find(noise), std::string::npos) << noise << " in: " << logs.err;
  auto quiet = cubby({"logs", "--no-console", "con"});
  EXPECT_EQ(quiet.out, "out\n");
  EXPECT_EQ(quiet.err, "err\n");
  EXPECT_EQ(cubby({"rm", "con"}).rc, 0);
}

TEST_F(Vm, GuestThatCannotBootIsReportedWithItsConsole) {
  // A real kernel with a broken initramfs panics at once.
  std::string assets = home_ + "/bad-assets";
  ASSERT_TRUE(mkdir_p(assets));
  ASSERT_EQ(::symlink((bin_dir() + "/../assets/vmlinuz").c_str(), (assets + "/vmlinuz").c_str()), 0);
  // Readable by QEMU's own unprivileged uid (it opens its files as that uid).
  ASSERT_TRUE(write_file(assets + "/initramfs.cpio.gz", "not an initramfs", 0644));
  ::setenv("CUBBY_VM_ASSETS", assets.c_str(), 1);
  auto r = cubby(box_args("run", {"--rm", image_, "true"}));
  ::unsetenv("CUBBY_VM_ASSETS");
  EXPECT_EQ(r.rc, 125);
  EXPECT_NE(r.err.find("Kernel panic"), std::string::npos) << r.err;
}

// --network default is tested on both backends in network_test.cc
// (outbound traffic, the host's loopback refused, -p, confinement).
TEST_F(Vm, NetworkNoneHasNoNic) {
  auto n = cubby(box_args("run", {"--rm", image_, "ls", "/sys/class/net"}));
  EXPECT_EQ(n.out, "lo\n") << n.err;
}

// Where KVM cannot boot the guest (no /dev/kvm, or one like this host's PVM
// that opens and boots nothing), --isolation vm without CUBBY_VM_ACCEL=tcg is
// one line naming the cause and the way out, exit 125, nothing created; with
// the opt-in it runs under TCG although /dev/kvm exists.
TEST_F(Vm, UnusableKvmWithoutTcgOptInIsOneClearLine) {
  const auto& kvm = hypervisor::probe("");
  if (kvm.usable) GTEST_SKIP() << "KVM can boot the guest on this host";
  ::unsetenv("CUBBY_VM_ACCEL");
  auto r = cubby(box_args("run", {"--rm", "--name", "refused", image_, "true"}));
  EXPECT_EQ(r.rc, 125);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find(kvm.reason), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("CUBBY_VM_ACCEL=tcg"), std::string::npos) << r.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "a refused box must leave no record";
  EXPECT_NE(cubby({"create", "--isolation", "vm", image_, "true"}).rc, 0);
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
  ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
  auto tcg = cubby(box_args("run", {"--rm", image_, "true"}));
  EXPECT_EQ(tcg.rc, 0) << tcg.err;
}

// QEMU dying of a signal the shim did not send (an abort, as QEMU does on a
// KVM it cannot drive) is a cubby failure: 125 with the cause, never the
// signal passed off as the workload's status (134 before this was fixed).
TEST_F(Vm, QemuDyingOfItsOwnSignalIsACubbyErrorNotTheWorkloadsStatus) {
  std::string id = run_detached();
  auto qemu = processes_mentioning(home_ + "/boxes/" + id);
  ASSERT_EQ(qemu.size(), 1u) << "expected exactly the box's QEMU to name its box directory";
  ASSERT_EQ(::kill(qemu[0], SIGABRT), 0);
  auto w = cubby({"wait", id});
  EXPECT_EQ(w.out, "125\n") << w.err;
  auto j = nlohmann::json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["exit_code"], 125);
  EXPECT_NE(j["error"].dump().find("killed by signal 6"), std::string::npos) << j.dump();
}

// Guest assets in a scratch directory: the real kernel and an initramfs
// whose /init is a shell script (busybox-static), for guests that misbehave.
std::string assets_with_init(const std::string& dir, const std::string& init_script) {
  std::string root = dir + "/root";
  EXPECT_TRUE(mkdir_p(root + "/bin"));
  EXPECT_TRUE(mkdir_p(root + "/dev"));
  EXPECT_EQ(::symlink((bin_dir() + "/../assets/vmlinuz").c_str(), (dir + "/vmlinuz").c_str()), 0);
  EXPECT_EQ(::system(("cp /bin/busybox " + root + "/bin/busybox && ln -s busybox " + root + "/bin/sh").c_str()), 0);
  EXPECT_TRUE(write_file(root + "/init", "#!/bin/sh\n" + init_script, 0755));
  std::string pack = "cd " + root + " && find . | cpio --quiet -o -H newc -R 0:0 | gzip -1 > " + dir + "/initramfs.cpio.gz";
  EXPECT_EQ(::system(pack.c_str()), 0);
  return dir;
}

// Guarantee 8's backstop: a guest whose agent never says hello (here an
// init that announces itself and then waits forever) fails after the
// backstop with the console's last lines in the error, and leaves nothing
// (the harness checks processes, QEMU included, mounts and box directories).
TEST_F(Vm, GuestThatNeverSaysHelloFailsAfterTheBackstop) {
  ::setenv("CUBBY_VM_ASSETS", assets_with_init(home_ + "/hang-assets", "echo cubby-test-init-hangs-now\nexec /bin/busybox sleep 1000000\n").c_str(), 1);
  ::setenv("CUBBY_BOOT_TIMEOUT", "15", 1);
  auto r = cubby(box_args("run", {"--rm", image_, "true"}));
  ::unsetenv("CUBBY_BOOT_TIMEOUT");
  ::unsetenv("CUBBY_VM_ASSETS");
  EXPECT_EQ(r.rc, 125) << r.err;
  EXPECT_NE(r.err.find("did not come up within 15"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cubby-test-init-hangs-now"), std::string::npos) << "the console's last lines: " << r.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
}

// QEMU that fails to start is a cubby error: exit 125 with QEMU's own
// message in one line, never its exit or abort status as the workload's.
TEST_F(Vm, QemuThatFailsToStartIsACubbyErrorWithItsMessage) {
  std::string assets = home_ + "/bad-kernel";
  ASSERT_TRUE(mkdir_p(assets));
  ASSERT_TRUE(write_file(assets + "/vmlinuz", "not a kernel", 0644));
  ASSERT_TRUE(write_file(assets + "/initramfs.cpio.gz", "not an initramfs", 0644));
  // With --network default too: QEMU's words, not the network helper's
  // failure on the namespace that went with QEMU (the first cause wins).
  for (const char* net : {"none", "default"}) {
    SCOPED_TRACE(net);
    if (std::string(net) == "default" && ::access("/usr/bin/slirp4netns", X_OK) != 0) continue;
    ::setenv("CUBBY_VM_ASSETS", assets.c_str(), 1);
    auto r = cubby({"run", "--rm", "--isolation", "vm", "--network", net, image_, "true"});
    ::unsetenv("CUBBY_VM_ASSETS");
    EXPECT_EQ(r.rc, 125);
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    // QEMU 7.2 says "qemu: linux kernel too old to load a ram disk" here.
    EXPECT_NE(r.err.find(": qemu"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("VM ended before its agent"), std::string::npos) << "QEMU's own words, not a guess: " << r.err;
    EXPECT_EQ(r.err.find("slirp4netns"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace cubby::test
