#include "oci/hooks.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "base/process.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "oci/hook_child.h"

namespace cubby::oci {
namespace {

// The namespaces of `pid` that are not ours (setns refuses to re-enter
// one's own user namespace, and joining one's own others is a no-op).
int namespaces_to_join(pid_t pid) {
  static const std::pair<const char*, int> kTypes[] = {{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},
                                                       {"pid", CLONE_NEWPID},   {"net", CLONE_NEWNET},
                                                       {"ipc", CLONE_NEWIPC},   {"uts", CLONE_NEWUTS},
                                                       {"cgroup", CLONE_NEWCGROUP}};
  int flags = 0;
  for (const auto& [name, flag] : kTypes) {
    struct stat mine, theirs;
    std::string own = std::string("/proc/self/ns/") + name;
    std::string other = "/proc/" + std::to_string(pid) + "/ns/" + name;
    if (::stat(own.c_str(), &mine) == 0 && ::stat(other.c_str(), &theirs) == 0 &&
        (mine.st_ino != theirs.st_ino || mine.st_dev != theirs.st_dev))
      flags |= flag;
  }
  return flags;
}

Result<UniqueFd> memfd_with(const char* name, const std::string& data) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd) return sys_fail("memfd_create");
  CUBBY_TRYV(sys::write_all(fd.get(), data.data(), data.size()));
  if (::lseek(fd.get(), 0, SEEK_SET) < 0) return sys_fail("lseek");
  return fd;
}

// The end of what the hook wrote, on one line, for the error.
std::string output_tail(int fd) {
  constexpr off_t kTail = 512;
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size <= 0) return "";
  ::lseek(fd, size > kTail ? size - kTail : 0, SEEK_SET);
  std::string s = sys::read_all(fd, kTail).value_or("");
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s.empty() ? "" : ": " + std::string(size > kTail ? "..." : "") + s;
}

Result<void> run_one(const std::string& what, const Hook& h, const std::string& state, int container_pidfd,
                     int ns_flags) {
  auto in = CUBBY_TRY(memfd_with("cubby-hook-state", state));
  auto out = CUBBY_TRY(memfd_with("cubby-hook-output", ""));
  UniqueFd exe;
  if (container_pidfd >= 0) {
    exe.reset(::open(h.path.c_str(), O_PATH | O_CLOEXEC));
    if (!exe) return fail(Error::sys("open " + h.path));
  }
  std::vector<std::string> args = h.args.empty() ? std::vector<std::string>{h.path} : h.args;
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = h.env;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  auto [report_r, report_w] = CUBBY_TRY(sys::make_pipe());
  HookChildPlan plan{h.path.c_str(), exe ? exe.get() : -1, argv.data(), envp.data(), in.get(), out.get(),
                     container_pidfd, container_pidfd >= 0 ? ns_flags : 0, report_w.get()};

  pid_t pid = ::fork();
  if (pid < 0) return sys_fail("fork");
  if (pid == 0) run_hook_child(plan);
  report_w.reset();
  // Our child, not yet reaped: its pid cannot be reused, so the pidfd is its.
  auto pidfd = sys::pidfd_open(pid);
  if (!pidfd) {
    ::kill(pid, SIGKILL);
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return fail(pidfd.error().wrap(what));
  }
  ChildProcess child(pid, std::move(*pidfd));  // killed and reaped on any early return
  HookChildFailure f;
  auto n = sys::read_all(report_r.get(), sizeof f);
  if (n && n->size() == sizeof f) {
    std::memcpy(&f, n->data(), sizeof f);
    (void)child.wait();
    return fail(Error(ErrorKind::kInvalid, what + ": could not " + kHookStageNames[f.stage] + ": " + std::strerror(f.err)));
  }
  // It has exec'd: wait for it, up to its timeout.
  auto deadline = h.timeout ? std::chrono::milliseconds(std::chrono::seconds(*h.timeout)) : sys::kForever;
  bool ended = CUBBY_TRY(sys::wait_readable(child.pidfd(), deadline));
  if (!ended) {
    // Its process group (run_hook_child made it; the pid is not reaped yet,
    // so it is still this group's): the hook and what it started.
    ::kill(-pid, SIGKILL);
    (void)child.wait();
    return fail(Error(ErrorKind::kInvalid, what + ": timed out after " + std::to_string(*h.timeout) + " s (killed)" +
                                               output_tail(out.get())));
  }
  auto st = CUBBY_TRY(child.wait());
  if (st.signaled)
    return fail(Error(ErrorKind::kInvalid, what + ": killed by signal " + std::to_string(st.signal) + output_tail(out.get())));
  if (st.code != 0)
    return fail(Error(ErrorKind::kInvalid, what + ": exited with status " + std::to_string(st.code) + output_tail(out.get())));
  return {};
}

std::string describe(const std::string& phase, size_t i, const Hook& h) {
  return phase + " hook " + std::to_string(i) + " (" + h.path + ")";
}

}  // namespace

Result<void> run_hooks(const std::string& phase, const std::vector<Hook>& hooks, const nlohmann::json& state,
                       ContainerInit in) {
  if (hooks.empty()) return {};
  const std::string text = state.dump();
  const int flags = in.pidfd >= 0 ? namespaces_to_join(in.pid) : 0;
  for (size_t i = 0; i < hooks.size(); ++i) CUBBY_TRYV(run_one(describe(phase, i, hooks[i]), hooks[i], text, in.pidfd, flags));
  return {};
}

std::vector<std::string> run_hooks_warning(const std::string& phase, const std::vector<Hook>& hooks,
                                           const nlohmann::json& state) {
  std::vector<std::string> out;
  const std::string text = state.dump();
  for (size_t i = 0; i < hooks.size(); ++i)
    if (auto r = run_one(describe(phase, i, hooks[i]), hooks[i], text, -1, 0); !r) out.push_back(r.error().message());
  return out;
}

}  // namespace cubby::oci
