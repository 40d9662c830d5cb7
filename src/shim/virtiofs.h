// virtio-fs for the vm backend's `-v SRC:DST[:ro]`: one virtiofsd per volume,
// the shim's child.
//
// Per volume, not per box: Debian 12's virtiofsd (the C one QEMU 7.2 ships)
// serves exactly one source tree over exactly one vhost-user connection, so
// several volumes in one daemon would need a host tree assembling them (bind
// mounts in a mount namespace of its own) and lose the per-volume read-only
// mount below.
//
// The daemon reaches SRC through a detached clone of its mount
// (open_tree(OPEN_TREE_CLONE)), made read-only with mount_setattr for `:ro`,
// so the host kernel refuses a write whatever the guest or virtiofsd do;
// virtiofsd chroots into it (`-o sandbox=chroot`). Its vhost-user socket is
// a listening socket the shim binds in the box dir, connects to itself and
// unlinks before virtiofsd starts (it accepts the queued connection), so no
// path outlives the start; QEMU gets the connected end as a chardev fd.
// virtiofsd exits when QEMU's end closes (QEMU died or powered off) and
// dies with the shim (PR_SET_PDEATHSIG); the handle kills and reaps it too.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"
#include "base/unique_fd.h"
#include "runtime/volumes.h"

namespace cubby::shim {

struct VirtiofsVolume {
  std::string tag;      // the virtio-fs mount tag the guest mounts
  ChildProcess daemon;  // virtiofsd
  UniqueFd qemu_end;    // the connected vhost-user socket, for QEMU's chardev
};

// Starts the daemon for `m` (its target is the guest's business) with the
// mount tag `tag`, its stderr to `log_fd`. Fails with the source named if it
// is gone or is not a directory (virtio-fs shares directories), or
// virtiofsd is missing.
Result<VirtiofsVolume> start_virtiofs(const std::string& box_dir, const Mount& m, const std::string& tag, int log_fd);

// Where Debian's qemu-system-common puts virtiofsd (CUBBY_VIRTIOFSD overrides).
std::string virtiofsd_path();

}  // namespace cubby::shim
