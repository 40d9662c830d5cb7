// The code that runs in a freshly forked child of the agent, between fork
// and exec. Audit point: everything here is async-signal-safe (raw
// syscalls on data the parent built before fork; no allocation, no locks,
// no logging). The agent is single-threaded, but this rule also keeps the
// child correct if that ever changes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>

#include "sandbox/confine.h"

namespace cubby::agent {

struct ExecChildPlan {
  const char* path;  // resolved executable
  char* const* argv;
  char* const* envp;
  int stdin_fd, stdout_fd, stderr_fd;  // agent fds to install as 0..2
  int tty_fd;                          // pty slave to make the controlling terminal, or -1
  const char* cwd;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t ngroups;
  const sandbox::SeccompFilter* seccomp;  // nullptr: none to install (the agent's own is inherited)
  bool confine;                           // apply caps / no_new_privs / seccomp
  struct ExecFailure* failure;            // shared memory (CLONE_VM): why exec did not happen
  // Precomputed by the agent once (its dispositions and bounding set never
  // change while it serves), so the child makes ~120 fewer syscalls:
  // the signals whose disposition is not SIG_DFL (nullptr: reset all), and
  // the bounding-set capabilities to drop (sandbox::bounding_set_drops()).
  const int* reset_signals = nullptr;
  size_t nreset_signals = 0;
  uint64_t cap_drops = 0;
  bool cap_drops_known = false;  // false: probe the bounding set in the child
  bool keep_groups = false;      // skip setgroups: the user namespace denies it (rootless)
  // Written "0" first thing: the child moves itself into the workload's
  // cgroup (AgentOptions::workload_cgroup) before anything of it runs.
  const int* cgroup_fds = nullptr;
  size_t ncgroup_fds = 0;
  // Then, if pids_current_fd >= 0, the child reads the leaf's pids.current
  // (itself included) and gives up (kStagePidsLimit, EAGAIN) when it is over
  // pids_max: the kernel holds fork to the limit but not a process moving in.
  int pids_current_fd = -1;
  int64_t pids_max = 0;
};

// Signal dispositions through the raw system call: glibc's sigaction() and
// signal() refuse the two real-time signals it keeps for itself (32, 33),
// yet an ignored one is inherited through fork and exec like any other
// (under ctest a box's processes saw SigIgn 0x180000000). Async-signal-safe.
bool signal_at_default(int sig);
void reset_signal(int sig);

// Filled in by the child when it cannot exec; stage 0 means it did.
struct ExecFailure {
  int stage = 0;  // see kStageNames
  int err = 0;    // errno
};
inline constexpr const char* kStageNames[] = {"", "set up stdio", "chdir", "set groups", "setgid",
                                              "setuid", "capabilities", "seccomp", "exec",
                                              "join the workload cgroup", "pids limit"};
inline constexpr int kStagePidsLimit = 10;

// Starts the child with clone(CLONE_VM | CLONE_VFORK), as posix_spawn does:
// no page tables are copied, and the call returns only once the child has
// exec'd or failed (then *plan.failure says why). Returns the pid or -errno.
// The child runs on one stack kept for the agent's life: call it from one
// thread only (the agent is single-threaded).
pid_t spawn_exec_child(const ExecChildPlan& plan);

}  // namespace cubby::agent
