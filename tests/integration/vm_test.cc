// What only the vm backend (QEMU microvm, own guest kernel) has, through the
// real CLI. The lifecycle guarantees it shares with the sandbox run on both
// backends in lifecycle_test.cc. These hosts have no KVM, so the boxes boot
// under TCG (CUBBY_VM_ACCEL=tcg, about 2.5 s a boot).
#include <netinet/in.h>
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
// for a vm box, on stderr; the workload's stdout stays clean.
TEST_F(Vm, ConsoleIsInTheLogsOnStderr) {
  auto r = cubby(box_args("run", {"--name", "con", image_, "sh", "-c", "echo out; exit 3"}));
  EXPECT_EQ(r.rc, 3) << r.err;
  auto logs = cubby({"logs", "con"});
  EXPECT_EQ(logs.rc, 0) << logs.err;
  EXPECT_EQ(logs.out, "out\n");
  EXPECT_NE(logs.err.find("CUBBY-EXIT 3"), std::string::npos) << logs.err;  // init's last console line
  auto quiet = cubby({"logs", "--no-console", "con"});
  EXPECT_EQ(quiet.out, "out\n");
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(cubby({"rm", "con"}).rc, 0);
}

TEST_F(Vm, GuestThatCannotBootIsReportedWithItsConsole) {
  // A real kernel with a broken initramfs panics at once.
  std::string assets = home_ + "/bad-assets";
  ASSERT_TRUE(mkdir_p(assets));
  ASSERT_EQ(::symlink((bin_dir() + "/../assets/vmlinuz").c_str(), (assets + "/vmlinuz").c_str()), 0);
  ASSERT_TRUE(write_file(assets + "/initramfs.cpio.gz", "not an initramfs"));
  ::setenv("CUBBY_VM_ASSETS", assets.c_str(), 1);
  auto r = cubby(box_args("run", {"--rm", image_, "true"}));
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
  auto n = cubby(box_args("run", {"--rm", image_, "ls", "/sys/class/net"}));
  EXPECT_EQ(n.out, "lo\n") << n.err;
}

TEST_F(Vm, NoKvmAndNoTcgOptInIsAClearError) {
  if (::access("/dev/kvm", R_OK | W_OK) == 0) GTEST_SKIP() << "this host has KVM";
  ::unsetenv("CUBBY_VM_ACCEL");
  auto r = cubby(box_args("run", {"--rm", image_, "true"}));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("CUBBY_VM_ACCEL=tcg"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace cubby::test
