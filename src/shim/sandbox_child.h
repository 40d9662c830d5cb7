// Post-clone code of the sandbox backend: the first instructions of the
// box's PID 1 before it becomes cubby-agent. Audit point: async-signal-safe
// only (raw syscalls on data built before clone).
#pragma once

#include <sys/types.h>

#include "proto/launch.h"

namespace cubby::shim {

struct SandboxChildPlan {
  int sync_fd;        // read end: one byte once uid/gid maps are written
  int fds[launch::kAgentMaxFds];  // parent fds to install as 0..nfds-1 (see proto/launch.h)
  int nfds;
  int agent_fd;       // memfd holding the agent binary
  char* const* argv;
  char* const* envp;
  int err_fd;         // CLOEXEC pipe: errno if exec fails
  // Root only: become the box's uid/gid 0 with no supplementary groups
  // before exec. Our host uid 0 need not be mapped in the box (it is not
  // with a range of the box's own), and until then we would act as the
  // overflow id, still holding root's host groups.
  bool become_root;
};

// Returns the child's pid (and *pidfd) in the parent; never returns in the child.
pid_t clone_sandbox_child(const SandboxChildPlan& plan, unsigned long ns_flags, int* pidfd);

}  // namespace cubby::shim
