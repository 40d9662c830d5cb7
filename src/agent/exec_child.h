// The code that runs in a freshly forked child of the agent, between fork
// and exec. Audit point: everything here is async-signal-safe (raw
// syscalls on data the parent built before fork; no allocation, no locks,
// no logging). The agent is single-threaded, but this rule also keeps the
// child correct if that ever changes.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "sandbox/confine.h"

namespace cubby::agent {

struct ExecChildPlan {
  const char* path;  // resolved executable
  char* const* argv;
  char* const* envp;
  int stdin_fd, stdout_fd, stderr_fd;  // agent fds to install as 0..2
  const char* cwd;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t ngroups;
  const sandbox::SeccompFilter* seccomp;  // nullptr: no filter
  bool confine;                           // apply caps / no_new_privs / seccomp
  int err_fd;                             // CLOEXEC pipe for an ExecFailure
};

// Written to err_fd when the child cannot exec; EOF alone means it did.
struct ExecFailure {
  int stage;  // see kStageNames
  int err;    // errno
};
inline constexpr const char* kStageNames[] = {"", "set up stdio", "chdir", "set groups", "setgid",
                                              "setuid", "capabilities", "seccomp", "exec"};

[[noreturn]] void run_exec_child(const ExecChildPlan& p);

}  // namespace cubby::agent
