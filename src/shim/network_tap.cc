#include "shim/network_tap.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/sys.h"
#include "shim/network.h"

namespace cubby::shim {
namespace {

// Which step the child failed at.
enum Step { kJoinUser = 1, kJoinNet, kOpenTun, kSetIff, kPersist };
const char* step_name(int s) {
  switch (s) {
    case kJoinUser: return "join the user namespace";
    case kJoinNet: return "join the network namespace";
    case kOpenTun: return "open /dev/net/tun";
    case kSetIff: return "create the tap (TUNSETIFF)";
    case kPersist: return "make the tap persistent (TUNSETPERSIST)";
  }
  return "?";
}

// --- post-fork: runs in the child of a possibly multi-threaded shim (a
// fork, or a CLONE_VM|CLONE_VFORK child on its own stack). Only raw
// syscalls on values prepared before (no allocation, no lock, no logging).
// A failure is {step, errno} on err_w, then exit 1.
[[noreturn]] void tap_child(int user_fd, int net_fd, const ifreq* req, int err_w) {
  auto die = [err_w](int step) {
    int rec[2] = {step, errno};
    (void)!::write(err_w, rec, sizeof rec);
    ::_exit(1);
  };
  if (user_fd >= 0 && ::setns(user_fd, CLONE_NEWUSER) != 0) die(kJoinUser);
  if (::setns(net_fd, CLONE_NEWNET) != 0) die(kJoinNet);
  int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tun < 0) die(kOpenTun);
  ifreq ifr = *req;
  if (::ioctl(tun, TUNSETIFF, &ifr) != 0) die(kSetIff);
  if (::ioctl(tun, TUNSETPERSIST, 1) != 0) die(kPersist);
  ::_exit(0);
}
struct ChildArgs {
  int user_fd, net_fd, err_w;
  const ifreq* req;
};
int tap_child_entry(void* p) {
  auto* a = static_cast<ChildArgs*>(p);
  tap_child(a->user_fd, a->net_fd, a->req, a->err_w);
}
// --- end of post-fork code

}  // namespace

Result<void> make_persistent_tap(const NetnsFds& ns, const char* name) {
  ifreq req{};
  req.ifr_flags = IFF_TAP | IFF_NO_PI;
  ::strncpy(req.ifr_name, name, IFNAMSIZ - 1);
  int user_fd = ns.user_to_join();
  auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());
  pid_t pid;
  if (user_fd >= 0) {
    // Joining a user namespace needs a process that shares its memory with
    // no other: a real fork.
    pid = ::fork();
    if (pid == 0) tap_child(user_fd, ns.net.get(), &req, err_w.get());
  } else {
    // Only the network namespace (root): a vfork-style child, which copies
    // no page tables (a fork of the shim measured 1-3 ms here).
    constexpr size_t kStack = 64 * 1024;
    void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return sys_fail("mmap the tap maker's stack");
    ChildArgs args{user_fd, ns.net.get(), err_w.get(), &req};
    pid = ::clone(tap_child_entry, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int saved = errno;
    ::munmap(stack, kStack);  // the child has exited: CLONE_VFORK returns after it
    errno = saved;
  }
  if (pid < 0) return sys_fail("fork to make the tap");
  err_w.reset();
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)  // this child only
    if (errno != EINTR) return sys_fail("wait for the tap maker");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return {};
  int rec[2] = {0, 0};
  if (::read(err_r.get(), rec, sizeof rec) == static_cast<ssize_t>(sizeof rec))
    return fail(Error::sys(std::string(step_name(rec[0])) + " for " + name, rec[1]));
  return fail(Error::internal(std::string("the maker of tap ") + name + " failed without saying why"));
}

}  // namespace cubby::shim
