// spawn(): the parent prepares every buffer; the code between fork and exec
// below is async-signal-safe: raw syscalls on pre-built data only, no
// allocation, no locks, no logging. Keep it that way (audit point).
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/process.h"
#include "base/sys.h"

namespace cubby {
namespace {

struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;  // nullptr: inherit environ
  const int* src_fds;  // parent fds, one per child fd slot
  int nfds;
  int* scratch;  // nfds ints for the high-fd copies
  const char* cwd;  // nullptr: keep
  bool new_session;
  bool controlling_tty;
  bool die_with_parent;
  int join_userns;
  int join_netns;
  bool keep_net_admin;
  bool new_netns;
  bool new_userns;
  bool drop_capabilities;
  bool run_as;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t ngroups;
  bool no_new_privs;
  int umask;  // -1: keep
  pid_t parent;
  int err_fd;  // CLOEXEC pipe: the child writes errno on failure
  int devnull;
};

[[noreturn]] void child_fail(const ChildPlan& p, int stage) {
  int rec[2] = {stage, errno};
  (void)!::write(p.err_fd, rec, sizeof rec);
  ::_exit(127);
}

// Confinement, in the order privilege allows: the namespace and the
// bounding set need capabilities the credential change then removes.
void confine(const ChildPlan& p) {
  if (p.join_userns >= 0 && ::setns(p.join_userns, CLONE_NEWUSER) < 0) child_fail(p, 12);
  if (p.join_netns >= 0 && ::setns(p.join_netns, CLONE_NEWNET) < 0) child_fail(p, 12);
  if (p.keep_net_admin) {
    // Ambient needs the capability in the permitted and inheritable sets.
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &h, d) < 0) child_fail(p, 13);
    d[CAP_TO_INDEX(CAP_NET_ADMIN)].inheritable |= CAP_TO_MASK(CAP_NET_ADMIN);
    if (::syscall(SYS_capset, &h, d) < 0) child_fail(p, 13);
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) < 0) child_fail(p, 13);
  }
  if (p.new_netns && ::unshare(CLONE_NEWNET | (p.new_userns ? CLONE_NEWUSER : 0)) < 0) child_fail(p, 8);
  if (p.drop_capabilities) {
    for (long c = 0; c < 64; ++c)  // past the kernel's last capability: EINVAL
      if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL) child_fail(p, 9);
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) child_fail(p, 9);
  }
  // Raw syscalls: glibc's wrappers would try to signal every thread of the
  // parent (setxid broadcast), which the child does not have.
  if (p.run_as) {
    if (::syscall(SYS_setgroups, p.ngroups, p.groups) < 0) child_fail(p, 10);
    if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) < 0) child_fail(p, 10);
    if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) < 0) child_fail(p, 10);
  }
  if (p.drop_capabilities) {
    // A uid 0 that stays keeps its sets until here; an empty inheritable set
    // plus the empty bounding set leave exec nothing to grant.
    __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capset, &h, d) < 0) child_fail(p, 9);
  }
  if (p.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(p, 11);
}

[[noreturn]] void run_child(const ChildPlan& p) {
  // Before PR_SET_PDEATHSIG: a change of credentials clears it.
  confine(p);
  if (p.die_with_parent) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(p, 1);
    if (::getppid() != p.parent) ::_exit(127);  // parent died before prctl
  }
  // Reset signal state a supervisor may have changed.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    ::signal(s, SIG_DFL);
  }
  if (p.new_session && ::setsid() < 0) child_fail(p, 2);
  // Two passes so a source fd that is also a target is never clobbered:
  // copy every source above the target range, then dup2 into place.
  int base = p.nfds + 3 > p.err_fd + 1 ? p.nfds + 3 : p.err_fd + 1;
  if (base < p.devnull + 1) base = p.devnull + 1;
  for (int i = 0; i < p.nfds; ++i) {
    int src = p.src_fds[i];
    if (src < 0) src = i <= 2 ? p.devnull : -1;
    p.scratch[i] = src < 0 ? -1 : ::fcntl(src, F_DUPFD_CLOEXEC, base);
    if (src >= 0 && p.scratch[i] < 0) child_fail(p, 3);
  }
  for (int i = 0; i < p.nfds; ++i) {
    if (p.scratch[i] < 0) continue;
    if (::dup2(p.scratch[i], i) < 0) child_fail(p, 4);  // dup2 clears CLOEXEC
  }
  if (p.controlling_tty && ::ioctl(0, TIOCSCTTY, 0) < 0) child_fail(p, 7);
  int keep[1] = {p.err_fd};
  close_fds_except(p.nfds, keep, 1);
  if (p.cwd && ::chdir(p.cwd) < 0) child_fail(p, 5);
  if (p.umask >= 0) ::umask(static_cast<mode_t>(p.umask));
  if (p.envp)
    ::execve(p.path, p.argv, p.envp);
  else
    ::execv(p.path, p.argv);
  child_fail(p, 6);
}

}  // namespace

Result<ChildProcess> spawn(const SpawnSpec& spec) {
  if (spec.argv.empty()) return fail(Error::invalid("spawn: empty argv"));
  std::vector<char*> argv;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (spec.env) {
    for (auto& e : *spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  std::vector<int> scratch(spec.fds.size());
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return sys_fail("open /dev/null");
  auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());

  ChildPlan plan{spec.argv[0].c_str(),
                 argv.data(),
                 spec.env ? envp.data() : nullptr,
                 spec.fds.data(),
                 static_cast<int>(spec.fds.size()),
                 scratch.data(),
                 spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
                 spec.new_session,
                 spec.controlling_tty,
                 spec.die_with_parent,
                 spec.join_userns,
                 spec.join_netns,
                 spec.keep_net_admin,
                 spec.new_netns,
                 spec.new_userns,
                 spec.drop_capabilities,
                 spec.run_as.has_value(),
                 spec.run_as ? spec.run_as->uid : 0,
                 spec.run_as ? spec.run_as->gid : 0,
                 spec.run_as ? spec.run_as->groups.data() : nullptr,
                 spec.run_as ? spec.run_as->groups.size() : 0,
                 spec.no_new_privs,
                 spec.umask,
                 ::getpid(),
                 err_w.get(),
                 devnull.get()};

  pid_t pid = ::fork();
  if (pid < 0) return sys_fail("fork");
  if (pid == 0) run_child(plan);  // never returns

  // The child cannot be reaped by anyone but us, so its pid cannot be reused
  // before pidfd_open: no race.
  auto pidfd = sys::pidfd_open(pid);
  if (!pidfd) {
    ::kill(pid, SIGKILL);
    int st;
    ::waitpid(pid, &st, 0);
    return std::unexpected(pidfd.error());
  }
  ChildProcess child(pid, std::move(*pidfd));
  err_w.reset();
  int rec[2];
  ssize_t n;
  do n = ::read(err_r.get(), rec, sizeof rec);
  while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof rec)) {
    (void)child.wait();
    return fail(Error::sys((rec[0] >= 8 ? "confine " : "exec ") + spec.argv[0], rec[1]));
  }
  return child;
}

}  // namespace cubby
