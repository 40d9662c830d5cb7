// Bind mounts of host paths into a sandbox box's rootfs (`-v SRC:DST[:ro]`),
// made by the agent in the box's own mount namespace after the rootfs is
// assembled and before pivot_root, so they vanish with the box.
//
// DST comes from the user, but the directories it walks through come from
// the image, which is untrusted: a layer holding `/data -> /etc` must not
// turn `-v x:/data` into a mount over the host's /etc (the runc
// CVE-2021-30465 class). DST is therefore resolved with openat2 and
// RESOLVE_IN_ROOT from an O_PATH fd of the rootfs (symlinks and ".." are
// clamped at the box's root, magic links refused), missing components are
// created with mkdirat under the fds so resolved, and the mount goes onto
// /proc/self/fd/N, the very inode that was checked, never a path re-walked.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::agent {

struct VolumePlan {
  std::string source;  // host path, canonical (checked at create)
  std::string target;  // absolute path inside the box
  bool read_only = false;
  UniqueFd source_fd;  // O_PATH of source, opened by the shim as root; unset: by path
};

// Mounts every volume into the tree rooted at `root` (a host path of the
// assembled rootfs, not yet pivoted into). A file SRC gets an empty file as
// its mount point, a directory an empty directory. Read-only volumes keep
// the flags the kernel locks on the source mount in a user namespace
// (nosuid, nodev, noexec, atime), which a remount could not clear anyway.
Result<void> mount_volumes(const std::string& root, const std::vector<VolumePlan>& volumes);

// `rel` (relative, no leading '/') resolved inside the tree of `root` (an
// O_PATH fd of the rootfs): symlinks and ".." clamped at it, magic links
// refused. Unset with errno on failure.
UniqueFd open_in_root(int root, const std::string& rel, int flags);
// An O_PATH fd of the mount point for the absolute box path `target`,
// created (directories all the way, and an empty file last when `dir` is
// false) where missing, each under the fd of its resolved parent.
Result<UniqueFd> make_mount_point(int root, const std::string& target, bool dir);

// "/proc/self/fd/N": how mount(2) and overlayfs are handed an fd. Before
// pivot_root the agent's /proc is the host's, which shows it too.
std::string fd_path(int fd);

}  // namespace cubby::agent
