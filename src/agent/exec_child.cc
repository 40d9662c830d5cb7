// Post-fork child code; see exec_child.h for the rules that apply here.
#include "agent/exec_child.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "base/process.h"

namespace cubby::agent {
namespace {
// The child shares our memory until it execs (CLONE_VM): it writes only to
// its own stack and to plan.failure.
[[noreturn]] void die(const ExecChildPlan& p, int stage) {
  p.failure->err = errno;
  p.failure->stage = stage;
  ::_exit(127);
}

[[noreturn]] void run_exec_child(const ExecChildPlan& p);

// The kernel's struct sigaction (x86_64 and arm64 layouts agree).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

int child_entry(void* arg) { run_exec_child(*static_cast<const ExecChildPlan*>(arg)); }
}  // namespace

bool signal_at_default(int sig) {
  KernelSigaction old{};
  return ::syscall(SYS_rt_sigaction, sig, nullptr, &old, sizeof old.mask) != 0 || old.handler == SIG_DFL;
}

void reset_signal(int sig) {
  KernelSigaction dfl{SIG_DFL, 0, nullptr, 0};
  (void)::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof dfl.mask);
}

namespace {
void run_exec_child(const ExecChildPlan& p) {
  // Into the workload's cgroup first, so everything this process does from
  // here on (and every process it forks) is charged to and limited by it.
  // We are single-threaded (clone without CLONE_THREAD), so the v1 `tasks`
  // files move the whole process. Until execve we share the agent's memory;
  // an OOM kill in the workload cgroup cannot take the agent with us
  // meanwhile, because the OOM killer skips a vfork child that shares its
  // parent's mm (the kernel's in_vfork()).
  for (size_t i = 0; i < p.ncgroup_fds; ++i) {
    ssize_t n;
    do n = ::write(p.cgroup_fds[i], "0", 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) die(p, 9);
  }
  if (p.pids_current_fd >= 0) {
    // Racing processes err on the side of the limit: two execs that join at
    // once may both see the count over it and both give up.
    char buf[32];
    ssize_t n;
    do n = ::pread(p.pids_current_fd, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) die(p, 9);
    int64_t current = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) current = current * 10 + (buf[i] - '0');
    if (current > p.pids_max) {
      errno = EAGAIN;
      die(p, kStagePidsLimit);
    }
  }
  // The agent blocks signals it reads through signalfd; a workload must
  // start with a clean mask and default dispositions. execve resets handled
  // signals itself but keeps ignored ones, so only the signals the agent
  // listed as not SIG_DFL need resetting. Dispositions go first, while the
  // agent's mask still holds, so no handler can run in this shared-memory
  // child after the mask opens.
  if (p.reset_signals) {
    for (size_t i = 0; i < p.nreset_signals; ++i) reset_signal(p.reset_signals[i]);
  } else {
    for (int s = 1; s < NSIG; ++s)
      if (s != SIGKILL && s != SIGSTOP) reset_signal(s);
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::setsid();  // own process group: a timeout or signal reaches its children too
  if (p.tty_fd >= 0 && ::ioctl(p.tty_fd, TIOCSCTTY, 0) < 0) die(p, 1);

  // Move the stdio sources above 2 first so installing one cannot clobber another.
  int src[3] = {p.stdin_fd, p.stdout_fd, p.stderr_fd};
  int hi[3];
  for (int i = 0; i < 3; ++i) {
    hi[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 10);
    if (hi[i] < 0) die(p, 1);
  }
  for (int i = 0; i < 3; ++i)
    if (::dup2(hi[i], i) < 0) die(p, 1);
  close_fds_except(3, nullptr, 0);

  if (p.cwd && ::chdir(p.cwd) < 0) die(p, 2);
  if (p.confine && (p.cap_drops_known ? sandbox::apply_default_capabilities(true, p.cap_drops)
                                       : sandbox::apply_default_capabilities(true)) != 0)
    die(p, 6);
  if (!p.keep_groups && ::syscall(SYS_setgroups, p.ngroups, p.groups) < 0) die(p, 3);
  if (::syscall(SYS_setresgid, p.gid, p.gid, p.gid) < 0) die(p, 4);
  // Dropping to a non-root uid clears the permitted set (no KEEPCAPS), as
  // Docker does for non-root users.
  if (::syscall(SYS_setresuid, p.uid, p.uid, p.uid) < 0) die(p, 5);
  if (p.confine && p.seccomp) {
    int rc = p.seccomp->apply();
    if (rc != 0) {
      errno = -rc;
      die(p, 7);
    }
  } else if (p.confine) {
    ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  }
  ::execve(p.path, p.argv, p.envp);
  die(p, 8);
}
}  // namespace

pid_t spawn_exec_child(const ExecChildPlan& plan) {
  // One stack, mapped once and reused: CLONE_VFORK suspends us until the
  // child has exec'd or exited, so no two children ever run on it, and its
  // pages stay mapped (a fresh mapping per exec cost an mmap, a munmap and
  // a page fault per stack page touched, each expensive on a VM host).
  constexpr size_t kStack = 256 * 1024;
  static void* stack = nullptr;
  if (!stack) {
    void* s = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (s == MAP_FAILED) return -errno;
    stack = s;
  }
  pid_t pid = ::clone(child_entry, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                      const_cast<ExecChildPlan*>(&plan));
  return pid < 0 ? -errno : pid;
}

}  // namespace cubby::agent
