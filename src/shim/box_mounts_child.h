// Post-fork code of box_mounts.h: the child that joins a box's mount
// namespace and opens its rootfs pieces. Audit point: async-signal-safe
// only (raw syscalls on data built before the fork).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace cubby::shim {

enum class MountOpen : unsigned char { kDir, kIdmapped, kAny };

// The child's failure record, written to err_fd before _exit.
struct MountChildError {
  int stage;  // 0 setns, 1 open, 2 open_tree, 3 idmap, 4 send
  int err;    // errno
  int index;  // which path, -1 for none
};

struct MountChildPlan {
  int box_pidfd;
  int userns_fd;  // for kIdmapped
  int sock;       // where the fds go, in order
  int err_fd;     // CLOEXEC pipe: one MountChildError on failure; EOF on success
  const char* const* paths;
  const MountOpen* kinds;
  size_t count;
  int* fds;          // count slots
  char* cmsg;        // cmsg_size bytes, aligned for cmsghdr
  size_t cmsg_size;  // room for kMountFdsPerMessage fds
};

inline constexpr size_t kMountFdsPerMessage = 250;  // SCM_MAX_FD is 253

// Returns the child's pid (and *pidfd) in the parent; never returns in the child.
pid_t clone_mount_child(const MountChildPlan& plan, int* pidfd);

}  // namespace cubby::shim
