// The host paths a sandbox box's agent builds its rootfs from (the overlay's
// target, upper and work dirs, the image layers, the -v sources), opened for
// it by the shim as root.
//
// Why not by path in the agent: with a range of host ids of its own
// (runtime/idmap.h) the box's root is nobody on the host. It cannot walk the
// 0700 home to its own upper dir, and the layers, owned by host root, would
// show up as 65534. So a short-lived child of the shim joins the box's
// mount namespace (setns on the box's pidfd: its mounts are the host's,
// copied, and the agent has not touched them yet) while keeping host
// privileges, and there
//  - opens the dirs and the volume sources O_PATH: the fds name mounts of
//    the box's own namespace, which overlayfs and bind mounts require
//    (a mount of the host's namespace is refused);
//  - clones each layer (open_tree(OPEN_TREE_CLONE)) and idmaps the clone
//    through the box's user namespace (mount_setattr(MOUNT_ATTR_IDMAP)),
//    so host uid N reads as box uid N: the image keeps its owners without a
//    shifted copy per box. The clone is a detached mount owned by the box's
//    namespaces, which overlayfs takes as a layer (Linux >= 6.15; a clone
//    made in the host's namespace is refused, EPERM: tried).
// The fds travel over SCM_RIGHTS straight to the agent (proto/launch.h's
// kAgentMountFd), which passes them to overlayfs and mount as
// /proc/self/fd/N. Nothing is ever attached to a mount table here: nothing
// can leak onto the host's.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::shim {

struct BoxMountPlan {
  std::vector<std::string> dirs;     // O_PATH|O_DIRECTORY
  std::vector<std::string> layers;   // idmapped clones (O_PATH dirs without a user namespace)
  std::vector<std::string> sources;  // O_PATH, following symlinks (canonical at create)
  size_t size() const { return dirs.size() + layers.size() + sources.size(); }
};

// Opens every path of `plan` in the mount namespace of the process behind
// `box_pidfd` and sends the fds over `sock`, in plan order (dirs, layers,
// sources). `userns_fd` >= 0: the layers are idmapped through that user
// namespace. Returns once every fd is sent (they sit in `sock`'s queue until
// the agent reads them); an error names the path that failed.
Result<void> send_box_mounts(int box_pidfd, int userns_fd, const BoxMountPlan& plan, int sock);

}  // namespace cubby::shim
