// Starts a box's shim so that it never becomes a child of the caller: an
// intermediate process clone3()s the shim with CLONE_PIDFD, hands the
// pidfd back over a socket and exits; we reap only that intermediate (by
// pid). The shim is adopted by the nearest subreaper or init, so a
// long-lived embedder never collects shim zombies, and a CLI that exits
// leaves a detached box running.
#pragma once

#include <string>

#include "base/error.h"
#include "base/unique_fd.h"
#include "proto/frame.h"

namespace cubby {

struct LaunchedShim {
  pid_t pid = -1;
  UniqueFd pidfd;
  proto::Conn control;  // the shim's fd 3
};

Result<LaunchedShim> launch_shim(const std::string& shim_path, const std::string& box_id,
                                 const std::string& log_path);

}  // namespace cubby
