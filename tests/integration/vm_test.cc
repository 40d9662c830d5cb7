// The vm backend (QEMU microvm, own guest kernel) through the real CLI.
// These hosts have no KVM, so the boxes boot under TCG (CUBBY_VM_ACCEL=tcg):
// about 2-3 s per boot, so only a few cases.
#include <netinet/in.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <thread>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

class Vm : public BoxTest {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0) GTEST_SKIP() << "qemu-system-x86_64 is not installed";
    if (::access((bin_dir() + "/../assets/initramfs.cpio.gz").c_str(), R_OK) != 0)
      GTEST_SKIP() << "vm assets not built";
    ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
    BoxTest::SetUp();
  }
  void TearDown() override {
    if (home_.empty()) return;  // skipped
    BoxTest::TearDown();
    // No QEMU may outlive its box (its command line names the home's disk).
    // A QEMU that is still exiting gets a bounded wait on its pidfd.
    for (pid_t p : processes_mentioning(home_)) {
      if (auto fd = sys::pidfd_open(p)) (void)sys::wait_readable(fd->get(), 5s);
    }
    EXPECT_TRUE(processes_mentioning(home_).empty()) << "a QEMU process outlived its box";
    ::unsetenv("CUBBY_VM_ACCEL");
  }
  std::vector<std::string> run(std::vector<std::string> cmd) {
    std::vector<std::string> a = {"run", "--isolation", "vm", "--network", "none"};
    a.insert(a.end(), cmd.begin(), cmd.end());
    return a;
  }
};

// Guarantee 7: a host connect made while the VM boots waits for the agent
// instead of failing. The exec is issued as soon as the box's socket exists
// (inotify), seconds before the guest kernel has even started under TCG.
TEST_F(Vm, ExecDuringBootWaitsForTheAgent) {
  auto created = cubby({"create", "--isolation", "vm", "--network", "none", image_, "sleep", "1000000"});
  ASSERT_EQ(created.rc, 0) << created.err;
  std::string id = created.out.substr(0, 32);
  std::string dir = home_ + "/boxes/" + id;
  UniqueFd in(::inotify_init1(IN_CLOEXEC));
  ASSERT_GE(::inotify_add_watch(in.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO), 0);
  auto starter = spawn_cubby(home_, {"start", id});
  bool seen = ::access((dir + "/agent.sock").c_str(), F_OK) == 0;
  alignas(inotify_event) char buf[4096];
  while (!seen) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    ASSERT_GT(n, 0);
    for (ssize_t off = 0; off < n;) {
      auto* e = reinterpret_cast<inotify_event*>(buf + off);
      if (e->len && std::string(e->name) == "agent.sock") seen = true;
      off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  auto during = cubby({"exec", id, "sh", "-c", "exit 4"});
  EXPECT_EQ(during.rc, 4) << "a connect during boot failed instead of waiting: " << during.err;
  EXPECT_EQ(starter.wait().value().code, 0);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Vm, TwentyVmBoxesInARowLeaveNothing) {
  // Alternate the two ways a vm box ends: by itself (--rm) and by rm -f.
  // TearDown then checks for QEMU processes, sockets, mounts, cgroups, dirs.
  for (int i = 0; i < 20; ++i) {
    if (i % 2 == 0) {
      ASSERT_EQ(cubby(run({"--rm", image_, "true"})).rc, 0) << "round " << i;
    } else {
      auto r = cubby(run({"-d", image_, "sleep", "1000000"}));
      ASSERT_EQ(r.rc, 0) << r.err;
      ASSERT_EQ(cubby({"rm", "-f", r.out.substr(0, 32)}).rc, 0);
    }
  }
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
}

TEST_F(Vm, UnameIsTheGuestKernel) {
  auto r = cubby(run({"--rm", image_, "uname", "-r"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  utsname u;
  ::uname(&u);
  EXPECT_NE(r.out, std::string(u.release) + "\n");
  EXPECT_NE(r.out.find("cloud-amd64"), std::string::npos) << r.out;
}

TEST_F(Vm, WorkloadExitCodeIsTheCliExitCode) {
  auto r = cubby(run({"--rm", image_, "sh", "-c", "echo out; exit 7"}));
  EXPECT_EQ(r.rc, 7) << r.err;
  EXPECT_EQ(r.out, "out\n");
}

// The guest console (kernel, init and QEMU messages) is part of `cubby logs`
// for a vm box, on stderr; the workload's stdout stays clean.
TEST_F(Vm, ConsoleIsInTheLogsOnStderr) {
  auto r = cubby(run({"--name", "con", image_, "sh", "-c", "echo out; exit 3"}));
  EXPECT_EQ(r.rc, 3) << r.err;
  auto logs = cubby({"logs", "con"});
  EXPECT_EQ(logs.rc, 0) << logs.err;
  EXPECT_EQ(logs.out, "out\n");
  EXPECT_NE(logs.err.find("CUBBY-EXIT 3"), std::string::npos) << logs.err;  // init's last console line
  EXPECT_EQ(cubby({"rm", "con"}).rc, 0);
}

TEST_F(Vm, StdinAndStdoutFlowBothWaysAtOnce) {
  // More than every buffer on the path (session, mux, virtio-serial): the
  // guest's multiplexer must keep output flowing while input waits.
  std::string in;
  for (int i = 0; in.size() < (12u << 20); ++i) in += "line " + std::to_string(i) + " of the stdin stream\n";
  auto r = cubby(run({"-i", "--rm", image_, "cat"}), in);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.size(), in.size());
  EXPECT_TRUE(r.out == in);
}

TEST_F(Vm, ExecOnARunningVmBoxAndRmForce) {
  auto r = cubby(run({"-d", image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  auto e = cubby({"exec", id, "sh", "-c", "exit 3"});
  EXPECT_EQ(e.rc, 3) << e.err;
  auto e2 = cubby({"exec", id, "uname", "-r"});
  EXPECT_EQ(e2.rc, 0) << e2.err;
  EXPECT_NE(e2.out.find("cloud-amd64"), std::string::npos) << e2.out;
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  EXPECT_TRUE(processes_mentioning(home_).empty()) << "rm -f left QEMU running";
}

TEST_F(Vm, FilesSurviveStopAndStart) {
  auto r = cubby(run({"-d", image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  ASSERT_EQ(cubby({"exec", id, "sh", "-c", "echo kept > /kept.txt"}).rc, 0);
  ASSERT_EQ(cubby({"stop", "-t", "5", id}).rc, 0);
  EXPECT_TRUE(processes_mentioning(home_).empty()) << "stop left QEMU running";
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  auto c = cubby({"exec", id, "cat", "/kept.txt"});
  EXPECT_EQ(c.rc, 0) << c.err;
  EXPECT_EQ(c.out, "kept\n");
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Vm, KilledShimTakesQemuWithIt) {
  auto r = cubby(run({"-d", image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  pid_t shim = shim_pid(id);
  ASSERT_GT(shim, 0);
  ASSERT_FALSE(processes_mentioning(home_).empty());
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  for (int i = 0; i < 100 && !processes_mentioning(home_).empty(); ++i) {
    reap_adopted();
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(processes_mentioning(home_).empty()) << "QEMU outlived its SIGKILLed shim";
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Vm, GuestThatCannotBootIsReportedWithItsConsole) {
  // A real kernel with a broken initramfs panics at once.
  std::string assets = home_ + "/bad-assets";
  ASSERT_TRUE(mkdir_p(assets));
  ASSERT_EQ(::symlink((bin_dir() + "/../assets/vmlinuz").c_str(), (assets + "/vmlinuz").c_str()), 0);
  ASSERT_TRUE(write_file(assets + "/initramfs.cpio.gz", "not an initramfs"));
  ::setenv("CUBBY_VM_ASSETS", assets.c_str(), 1);
  auto r = cubby(run({"--rm", image_, "true"}));
  ::unsetenv("CUBBY_VM_ASSETS");
  EXPECT_EQ(r.rc, 125);
  EXPECT_NE(r.err.find("Kernel panic"), std::string::npos) << r.err;
}

TEST_F(Vm, NetworkDefaultReachesTheHostAndNoneHasNoNic) {
  // A one-shot HTTP server on the host's loopback, reached as slirp's 10.0.2.2.
  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(ls, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t al = sizeof a;
  ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &al);
  ::listen(ls, 4);
  std::thread srv([ls] {
    int c = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    char buf[4096];
    (void)!::read(c, buf, sizeof buf);
    static const char resp[] = "HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host";
    (void)!::write(c, resp, sizeof resp - 1);
    ::close(c);
  });
  std::string url = "http://10.0.2.2:" + std::to_string(ntohs(a.sin_port)) + "/";
  auto r = cubby({"run", "--isolation", "vm", "--rm", image_, "wget", "-q", "-O", "-", url});
  ::shutdown(ls, SHUT_RDWR);
  srv.join();
  ::close(ls);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "hello-from-host");
  auto n = cubby(run({"--rm", image_, "ls", "/sys/class/net"}));
  EXPECT_EQ(n.out, "lo\n") << n.err;
}

TEST_F(Vm, NoKvmAndNoTcgOptInIsAClearError) {
  if (::access("/dev/kvm", R_OK | W_OK) == 0) GTEST_SKIP() << "this host has KVM";
  ::unsetenv("CUBBY_VM_ACCEL");
  auto r = cubby(run({"--rm", image_, "true"}));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("CUBBY_VM_ACCEL=tcg"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cubby::test
