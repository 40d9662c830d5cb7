// Sandbox-side set-up done by the agent as PID 1 of fresh user, pid, mount,
// net, uts and ipc namespaces, before it serves anything: the overlay
// rootfs, fresh /proc /dev /sys /tmp, pivot_root, hostname and loopback.
// All mounts live in the box's own mount namespace, so they vanish with the
// box: nothing can leak onto the host's mount table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/volumes.h"
#include "base/error.h"
#include "base/unique_fd.h"
#include "proto/box_fs.h"

namespace cubby::agent {

struct RootfsPlan {
  std::vector<std::string> lower;  // highest layer first
  std::string upper, work;         // per-box, persists across stop/start
  std::string target;              // where to assemble it before pivot_root
  std::string hostname;
  bool network_default = false;    // write resolv.conf for slirp's DNS
  bool joined_net = false;         // a joined network namespace: its lo is its owner's
  std::string resolv_conf;         // when set: the box's resolv.conf (--dns, --network bridge)
  std::vector<std::string> extra_hosts;  // --add-host: "IP\tNAME" lines for /etc/hosts
  // vm mode: the old root is the initramfs (rootfs cannot be pivoted away),
  // so move the new root onto / and chroot, as switch_root does.
  bool switch_root = false;
  std::vector<VolumePlan> volumes;  // -v, mounted last so nothing covers them
  BoxFs fs;  // read-only rootfs, tmpfs mounts, /dev/shm size, masked paths
  // As root, the shim opened these for us (shim/box_mounts.h), in the box's
  // mount namespace: the paths above then only name them in messages (with
  // a range of host ids of its own, the box's root cannot walk them). The
  // lower fds are idmapped clones of the layers. Unset: the paths are used
  // (rootless, vm).
  UniqueFd target_fd, upper_fd, work_fd;
  std::vector<UniqueFd> lower_fds;
};

Result<void> setup_sandbox_root(const RootfsPlan& plan);
// Brings up `lo` in the box's network namespace.
Result<void> bring_up_loopback();

}  // namespace cubby::agent
