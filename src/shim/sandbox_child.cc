// See sandbox_child.h: everything below clone3() in the child branch is
// async-signal-safe.
#include "shim/sandbox_child.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/process.h"

namespace cubby::shim {
namespace {

[[noreturn]] void child_fail(const SandboxChildPlan& p) {
  int e = errno;
  (void)!::write(p.err_fd, &e, sizeof e);
  ::_exit(125);
}

[[noreturn]] void child_main(const SandboxChildPlan& p) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Wait until the parent has written our uid/gid maps. EOF without a byte
  // means the parent died: leave quietly.
  char b;
  ssize_t n;
  do n = ::read(p.sync_fd, &b, 1);
  while (n < 0 && errno == EINTR);
  if (n != 1) ::_exit(125);

  // Raw syscalls: glibc's wrappers would signal threads we do not have.
  if (p.become_root && (::syscall(SYS_setgroups, 0, nullptr) < 0 || ::syscall(SYS_setresgid, 0, 0, 0) < 0 ||
                        ::syscall(SYS_setresuid, 0, 0, 0) < 0))
    child_fail(p);

  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Two passes: lift every source above the target range, then dup2 down.
  constexpr int kFds = launch::kAgentFdCount;
  int hi[kFds];
  for (int i = 0; i < kFds; ++i) {
    hi[i] = ::fcntl(p.fds[i], F_DUPFD_CLOEXEC, 16);
    if (hi[i] < 0) child_fail(p);
  }
  for (int i = 0; i < kFds; ++i)
    if (::dup2(hi[i], i) < 0) child_fail(p);
  int keep[2] = {p.err_fd < p.agent_fd ? p.err_fd : p.agent_fd, p.err_fd < p.agent_fd ? p.agent_fd : p.err_fd};
  close_fds_except(kFds, keep, 2);
  ::syscall(SYS_execveat, p.agent_fd, "", p.argv, p.envp, AT_EMPTY_PATH);
  child_fail(p);
}

}  // namespace

pid_t clone_sandbox_child(const SandboxChildPlan& plan, unsigned long ns_flags, int* pidfd) {
  clone_args args{};
  args.flags = ns_flags | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  args.exit_signal = SIGCHLD;
  long pid = ::syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) child_main(plan);
  return static_cast<pid_t>(pid);
}

}  // namespace cubby::shim
