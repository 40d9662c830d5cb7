// spawn(): the parent prepares every buffer; the code between fork and exec
// below is async-signal-safe: raw syscalls on pre-built data only, no
// allocation, no locks, no logging. Keep it that way (audit point).
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
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
  pid_t parent;
  int err_fd;  // CLOEXEC pipe: the child writes errno on failure
  int devnull;
};

[[noreturn]] void child_fail(const ChildPlan& p, int stage) {
  int rec[2] = {stage, errno};
  (void)!::write(p.err_fd, rec, sizeof rec);
  ::_exit(127);
}

[[noreturn]] void run_child(const ChildPlan& p) {
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
    return fail(Error::sys("exec " + spec.argv[0], rec[1]));
  }
  return child;
}

}  // namespace cubby
