// Post-fork code only: see hook_child.h for the rules it keeps.
#include "oci/hook_child.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "base/process.h"

namespace cubby::oci {
namespace {

[[noreturn]] void die(int report_fd, int stage) noexcept {
  HookChildFailure f{stage, errno};
  (void)!::write(report_fd, &f, sizeof f);
  ::_exit(127);
}

// The intermediate of a pid-namespace hook: the hook's status is ours.
[[noreturn]] void wait_and_mirror(pid_t hook) noexcept {
  int st = 0;
  while (::waitpid(hook, &st, 0) < 0)
    if (errno != EINTR) ::_exit(127);
  ::_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
}

}  // namespace

void run_hook_child(const HookChildPlan& p) noexcept {
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);

  // Everything we keep goes above 9 first, so installing 0-3 clobbers none of it.
  int report = ::fcntl(p.report_fd, F_DUPFD_CLOEXEC, 10);
  if (report < 0) die(p.report_fd, 1);
  int in = ::fcntl(p.stdin_fd, F_DUPFD_CLOEXEC, 10);
  int out = ::fcntl(p.output_fd, F_DUPFD_CLOEXEC, 10);
  int exe = p.exe_fd >= 0 ? ::fcntl(p.exe_fd, F_DUPFD_CLOEXEC, 10) : -1;
  if (in < 0 || out < 0 || (p.exe_fd >= 0 && exe < 0)) die(report, 1);

  if (p.ns_pidfd >= 0) {
    // One call joins them all, the user namespace first, so the others are
    // joined with its rights (they are the box's: owned by it).
    if (::setns(p.ns_pidfd, p.ns_flags) < 0) die(report, 2);
    if (p.ns_flags & CLONE_NEWUSER) {
      // Host root is not mapped in the box's user namespace: become its
      // root, the container's own (setgroups may be denied there: rootless).
      (void)::syscall(SYS_setgroups, 0, nullptr);
      if (::syscall(SYS_setresgid, 0, 0, 0) < 0 || ::syscall(SYS_setresuid, 0, 0, 0) < 0) die(report, 3);
    }
  }
  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) die(report, 1);
  // dup2 clears FD_CLOEXEC: fd 3 stays open across exec, for a script's
  // interpreter to read it as /dev/fd/3.
  if (exe >= 0 && ::dup2(exe, 3) < 0) die(report, 1);
  close_fds_except(exe >= 0 ? 4 : 3, &report, 1);

  if (p.ns_pidfd >= 0 && (p.ns_flags & CLONE_NEWPID)) {
    pid_t hook = ::fork();
    if (hook < 0) die(report, 4);
    if (hook > 0) {
      ::close(report);  // the hook's copy says when it has exec'd
      wait_and_mirror(hook);
    }
    // Killing the intermediate (a timeout) kills the hook too; the group
    // kill covers the moment before this call.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  }
  if (exe >= 0) {
    ::syscall(SYS_execveat, 3, "", p.argv, p.envp, AT_EMPTY_PATH);
  } else {
    ::execve(p.path, p.argv, p.envp);
  }
  die(report, 5);
}

}  // namespace cubby::oci
