// The code that runs in a freshly forked child of cubby-runc to become an
// OCI hook, between fork and exec. Audit point: everything here is
// async-signal-safe (raw syscalls on data hooks.cc built before fork; no
// allocation, no locks, no logging).
#pragma once

#include <sys/types.h>

namespace cubby::oci {

struct HookChildPlan {
  const char* path;  // exec'd by this path when exe_fd is -1
  // An O_PATH fd of the hook's executable, opened in the runtime's
  // namespaces (the spec: a hook's path resolves there) for a hook that runs
  // in the container's: it is exec'd as fd 3 once the namespaces are joined
  // (a script's interpreter, #!, then resolves in the container).
  int exe_fd;
  char* const* argv;
  char* const* envp;
  int stdin_fd;   // the container's state (a memfd)
  int output_fd;  // stdout and stderr (a memfd)
  // setns(ns_pidfd, ns_flags) first (-1: stay in the runtime's). With
  // CLONE_NEWUSER the hook becomes the namespace's root (uid and gid 0);
  // with CLONE_NEWPID the child forks once more, so the hook is in the
  // pid namespace, and waits for it, exiting with its status (128+N for
  // signal N).
  int ns_pidfd;
  int ns_flags;
  int report_fd;  // CLOEXEC pipe: a HookChildFailure when exec did not happen; EOF when it did
};

struct HookChildFailure {
  int stage = 0;  // kHookStageNames
  int err = 0;    // errno
};
inline constexpr const char* kHookStageNames[] = {"", "set up stdio", "join the container's namespaces",
                                                  "become the namespace's root", "fork into the pid namespace",
                                                  "exec"};

// Never returns. Its own process group first, so a timeout's SIGKILL to
// the group reaches the hook and what it started.
[[noreturn]] void run_hook_child(const HookChildPlan& plan) noexcept;

}  // namespace cubby::oci
