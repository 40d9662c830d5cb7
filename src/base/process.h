// Processes: identity probes, an owning child handle built on pidfds, and a
// spawn primitive whose post-fork code is async-signal-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby {

// How a process ended. Kept apart from "cubby failed" (an Error).
struct ExitStatus {
  int code = 0;        // exit code when !signaled
  int signal = 0;      // terminating signal when signaled
  bool signaled = false;
  // Docker convention: the code, or 128+N for signal N.
  int shell_code() const { return signaled ? 128 + signal : code; }
  static ExitStatus from_wait_status(int status);
};

// ---- Read-only probes of /proc ----
// State letter and start time from one read of /proc/PID/stat.
struct ProcStat {
  char state = 0;           // 'R', 'S', 'Z', ... (field 3)
  uint64_t start_time = 0;  // clock ticks since boot (field 22)
};
Result<ProcStat> process_stat(pid_t pid);
// Start time of pid in clock ticks since boot (field 22 of /proc/PID/stat).
Result<uint64_t> process_start_time(pid_t pid);
// State letter from /proc/PID/stat ('R', 'S', 'Z', ...).
Result<char> process_state(pid_t pid);
// argv of pid, split at NULs. Empty for kernel threads and zombies.
Result<std::vector<std::string>> process_argv(pid_t pid);

// ---- fd hygiene (async-signal-safe, for use between fork and exec) ----
// Closes every fd >= lowfd except those in keep[0..nkeep). Tries close_range,
// then /proc/self/fd via getdents64 (checked to be procfs), then a brute-force
// loop bounded by the real RLIMIT_NOFILE. keep must be sorted ascending.
void close_fds_except(int lowfd, const int* keep, int nkeep);

// ---- Owning child handle ----
// Holds a pidfd for a child of this process. Destruction kills (SIGKILL) and
// reaps the child unless it was waited for or released, so an early return
// can never leak a process or a zombie. Reaping is scoped: waitid(P_PIDFD)
// on this one child, never waitpid(-1), so no caller's status is stolen.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(pid_t pid, UniqueFd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  ChildProcess(ChildProcess&&) noexcept = default;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  bool valid() const { return pidfd_.valid(); }

  Result<void> signal(int sig);
  // Blocks until the child exits and reaps it.
  Result<ExitStatus> wait();
  // Reaps if exited; nullopt if still running.
  Result<std::optional<ExitStatus>> try_wait();
  // Gives up ownership (the caller takes over reaping).
  UniqueFd release();

 private:
  void kill_and_reap();
  pid_t pid_ = -1;
  UniqueFd pidfd_;
};

// A spawn request. Everything is prepared before fork; the child only makes
// raw syscalls (see spawn_child.cc).
struct SpawnSpec {
  std::vector<std::string> argv;             // argv[0] must be a path
  std::optional<std::vector<std::string>> env;  // nullopt: inherit
  // Child fd i is dup'd from the parent fd fds[i] (-1: /dev/null for 0..2,
  // closed otherwise). Everything else is closed.
  std::vector<int> fds = {0, 1, 2};
  std::string cwd;
  bool new_session = false;
  bool controlling_tty = false;  // with new_session: fd 0 becomes the controlling terminal
  bool die_with_parent = false;  // PR_SET_PDEATHSIG(SIGKILL) + getppid check
  // Confinement, applied in the child before exec, in this order (each step
  // needs the privileges the next one takes away):
  // Joins these namespaces first (parent fds; -1: stay). A user namespace
  // must not be the caller's own (setns refuses that: EINVAL).
  int join_userns = -1, join_netns = -1;
  // Keeps CAP_NET_ADMIN (of the user namespace joined) across exec, as an
  // ambient capability: a joiner whose uid is not that namespace's root
  // (or not mapped there at all) would otherwise lose it at exec.
  bool keep_net_admin = false;
  bool new_netns = false;  // unshare(CLONE_NEWNET): a namespace holding only a down `lo`
  // With new_netns, for a caller without CAP_SYS_ADMIN: the namespace is
  // owned by a new user namespace (no id mapped in it; the program keeps
  // its uid outside and gains no capability at exec).
  bool new_userns = false;
  // Empties the bounding, inheritable and ambient capability sets, so the
  // program gains no capability at exec even as uid 0.
  bool drop_capabilities = false;
  struct Credentials {
    uid_t uid;
    gid_t gid;
    std::vector<gid_t> groups;  // supplementary groups (setgroups)
  };
  std::optional<Credentials> run_as;  // setgroups + setresgid + setresuid
  bool no_new_privs = false;          // PR_SET_NO_NEW_PRIVS
  // The child's umask (-1: inherit). For a helper whose files (a socket, a
  // disk image) we cannot give a mode ourselves.
  int umask = -1;
};

// Spawns a child and returns once it has exec'd (or reports why not: the
// child writes errno to a CLOEXEC pipe; EOF means exec succeeded).
Result<ChildProcess> spawn(const SpawnSpec& spec);

}  // namespace cubby
