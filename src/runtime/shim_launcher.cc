#include "runtime/shim_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/process.h"
#include "base/sys.h"
#include "proto/launch.h"

namespace cubby {
namespace {

struct Plan {
  const char* path;
  char* const* argv;
  char* const* envp;
  int control_fd;  // becomes fd 3
  int log_fd;      // becomes 1 and 2
  int devnull;     // becomes 0
  int handoff_fd;  // the intermediate sends the pidfd here
};

// --- post-fork code: async-signal-safe only (audit point) ---

[[noreturn]] void exec_shim(const Plan& p) {
  int hi[4] = {::fcntl(p.devnull, F_DUPFD_CLOEXEC, 10), ::fcntl(p.log_fd, F_DUPFD_CLOEXEC, 10),
               ::fcntl(p.log_fd, F_DUPFD_CLOEXEC, 10), ::fcntl(p.control_fd, F_DUPFD_CLOEXEC, 10)};
  for (int i = 0; i < 4; ++i)
    if (hi[i] < 0 || ::dup2(hi[i], i) < 0) ::_exit(126);
  close_fds_except(4, nullptr, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(p.path, p.argv, p.envp);
  ::_exit(127);
}

[[noreturn]] void intermediate(const Plan& p) {
  ::setsid();  // the shim must not get the caller's terminal signals
  int pidfd = -1;
  pid_t pid = sys::clone_with_pidfd(0, &pidfd);
  if (pid == 0) exec_shim(p);
  if (pid < 0) ::_exit(1);
  // Hand the pidfd and the pid to the launcher (SCM_RIGHTS).
  int32_t data = static_cast<int32_t>(pid);
  iovec iov{&data, sizeof data};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
  if (::sendmsg(p.handoff_fd, &msg, MSG_NOSIGNAL) < 0) ::_exit(1);
  ::_exit(0);
}

// --- end of post-fork code ---

}  // namespace

Result<LaunchedShim> launch_shim(const std::string& shim_path, const std::string& box_id,
                                 const std::string& log_path) {
  auto [ctl_ours, ctl_theirs] = CUBBY_TRY(sys::make_socketpair(SOCK_STREAM));
  auto [hand_r, hand_w] = CUBBY_TRY(sys::make_socketpair(SOCK_DGRAM));
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!log) return sys_fail("open " + log_path);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull) return sys_fail("open /dev/null");

  std::vector<std::string> args = {shim_path, box_id};
  std::vector<std::string> env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"};
  if (const char* l = std::getenv("CUBBY_LOG")) env.push_back(std::string("CUBBY_LOG=") + l);
  // The vm backend's opt-ins (TCG without KVM; another guest asset dir).
  for (const char* k : {"CUBBY_VM_ACCEL", "CUBBY_VM_ASSETS", "CUBBY_VM_TEMPLATES"})
    if (const char* v = std::getenv(k)) env.push_back(std::string(k) + "=" + v);
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  Plan plan{shim_path.c_str(), argv.data(), envp.data(), ctl_theirs.get(), log.get(), devnull.get(), hand_w.get()};

  pid_t mid = ::fork();
  if (mid < 0) return sys_fail("fork");
  if (mid == 0) intermediate(plan);
  hand_w.reset();
  ctl_theirs.reset();
  int st = 0;
  while (::waitpid(mid, &st, 0) < 0 && errno == EINTR) {  // our own child, by pid
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return fail(Error::internal("could not start cubby-shim"));

  int32_t pid = 0;
  iovec iov{&pid, sizeof pid};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  if (::recvmsg(hand_r.get(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT) != sizeof pid)
    return fail(Error::internal("cubby-shim handoff failed"));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return fail(Error::internal("cubby-shim handoff carried no pidfd"));
  int pidfd;
  std::memcpy(&pidfd, CMSG_DATA(c), sizeof(int));
  LaunchedShim out;
  out.pid = pid;
  out.pidfd.reset(pidfd);
  out.control = proto::Conn(std::move(ctl_ours));
  return out;
}

}  // namespace cubby
