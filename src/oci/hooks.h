// The OCI lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks",
// runtime.md "Lifecycle"), as cubby-runc runs them:
//
//   phase            when (verb)                                 namespaces  a failure
//   prestart         create, once the box is up (held), first    runtime     fails create; nothing is left
//   createRuntime    create, after prestart                      runtime     fails create; nothing is left
//   createContainer  create, after createRuntime                 container   fails create; nothing is left
//   startContainer   start, before the workload is released      container   fails start; the container is stopped
//   poststart        start, once the workload is released        runtime     a warning in the log
//   poststop         delete, once the box is gone                runtime     a warning in the log
//
// Each hook gets the container's state (runtime.md "State": ociVersion, id,
// status, pid, bundle, annotations) on stdin, its own args and env (and no
// other environment), and its stdout and stderr go to a buffer whose tail is
// quoted when it fails. A timeout is a deadline on the hook's pidfd; at it
// the hook's process group is killed.
//
// "runtime" is cubby-runc's own namespaces. "container" is the box's: its
// user, mount, pid, network, ipc, uts and cgroup namespaces, those of its
// PID 1 (the agent), joined with setns before exec, as the box's root (the
// container's root, never host root inside the box). The hook's path is
// opened in the runtime's namespaces first, as the spec says, but cubby's
// box is already pivoted into its rootfs when the hook runs (runc runs
// createContainer before pivot_root), so what the hook opens, a script's
// interpreter included, resolves in the container's root. Sandbox backend
// only: a vm container's namespaces are its guest's, out of the host's reach
// (box_options refuses those hooks for vm).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "oci/spec.h"

namespace cubby::oci {

// The box's PID 1, whose namespaces are the container's: a pidfd (what
// setns joins) and its pid (to tell which of them differ from ours).
struct ContainerInit {
  int pidfd = -1;
  pid_t pid = 0;
};

// Runs hooks[0..] of `phase` in order and stops at the first that fails,
// returning why ("createRuntime hook 1 (/bin/x): exited with status 3:
// <output>"). With `in` (pidfd >= 0) they run in the container's
// namespaces, else in the runtime's.
Result<void> run_hooks(const std::string& phase, const std::vector<Hook>& hooks, const nlohmann::json& state,
                       ContainerInit in = {});

// For poststart and poststop: runs every hook, returning each failure's
// message (for warnings); the lifecycle goes on.
std::vector<std::string> run_hooks_warning(const std::string& phase, const std::vector<Hook>& hooks,
                                           const nlohmann::json& state);

}  // namespace cubby::oci
