// See sandbox_child.h: everything below clone3() in the child branch is
// async-signal-safe.
#include "shim/sandbox_child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/process.h"
#include "base/sys.h"

namespace cubby::shim {
namespace {

[[noreturn]] void child_fail(int err_fd) {
  int e = errno;
  (void)!::write(err_fd, &e, sizeof e);
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
    child_fail(p.err_fd);

  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Two passes: lift every source above the target range, then dup2 down.
  // The agent memfd and the error pipe are lifted too: the shim may hold
  // them at numbers inside the range.
  constexpr int kAbove = 16;
  static_assert(kAbove >= launch::kAgentMaxFds);
  int hi[launch::kAgentMaxFds];
  for (int i = 0; i < p.nfds; ++i) {
    hi[i] = ::fcntl(p.fds[i], F_DUPFD_CLOEXEC, kAbove);
    if (hi[i] < 0) child_fail(p.err_fd);
  }
  int err_fd = ::fcntl(p.err_fd, F_DUPFD_CLOEXEC, kAbove);
  if (err_fd < 0) child_fail(p.err_fd);
  int agent_fd = ::fcntl(p.agent_fd, F_DUPFD_CLOEXEC, kAbove);
  if (agent_fd < 0) child_fail(err_fd);
  for (int i = 0; i < p.nfds; ++i)
    if (::dup2(hi[i], i) < 0) child_fail(err_fd);
  int keep[2] = {err_fd < agent_fd ? err_fd : agent_fd, err_fd < agent_fd ? agent_fd : err_fd};
  close_fds_except(p.nfds, keep, 2);
  ::syscall(SYS_execveat, agent_fd, "", p.argv, p.envp, AT_EMPTY_PATH);
  child_fail(err_fd);
}

}  // namespace

pid_t clone_sandbox_child(const SandboxChildPlan& plan, unsigned long ns_flags, int* pidfd) {
  pid_t pid = sys::clone_with_pidfd(ns_flags, pidfd);
  if (pid == 0) child_main(plan);
  return pid;
}

}  // namespace cubby::shim
