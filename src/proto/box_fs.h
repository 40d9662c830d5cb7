// A box's filesystem layout beyond its image and volumes: a read-only
// rootfs, extra tmpfs mounts, the size of /dev/shm, and paths to mask or
// make read-only (Docker's --read-only, --tmpfs, --shm-size; config.json's
// root.readonly, tmpfs mounts, maskedPaths, readonlyPaths).
//
// The runtime checks it at create (check_box_fs), the shim passes it on
// unchanged in the agent's config ("fs"), and the agent applies it while it
// assembles the rootfs (agent/box_init.cc), on both backends. It lives in
// proto because both ends read the same JSON and the same option rules:
// an option the runtime accepted is one the agent can turn into mount(2)
// arguments, so a box never fails to start over a spelling.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace cubby {

struct TmpfsMount {
  std::string destination;  // absolute, lexically clean, not "/"
  // mount(8) words: ro rw nosuid suid nodev dev noexec exec atime noatime
  // relatime norelatime strictatime nostrictatime nodiratime, and
  // mode=OCTAL size=N[k|m|g|%] nr_inodes=N[k|m|g|%] uid=N gid=N.
  // Default (none given): a writable tmpfs with tmpfs's own defaults.
  std::vector<std::string> options;
};

struct BoxFs {
  // The rootfs (the overlay) is remounted read-only once everything is
  // mounted in it; /dev, /proc, /sys, /tmp, the tmpfs mounts and volumes
  // keep their own flags (Docker's --read-only).
  bool read_only = false;
  // Mounted in order, after /proc, /dev, /sys and /tmp and before volumes,
  // so a volume below a tmpfs is seen (a tmpfs on /tmp replaces the box's
  // default one).
  std::vector<TmpfsMount> tmpfs;
  // Bytes /dev/shm may hold; unset: 64 MiB (Docker's default).
  std::optional<int64_t> shm_size;
  // In addition to cubby's own (Docker's list, always applied): a masked
  // file reads as /dev/null, a masked directory as an empty read-only
  // tmpfs; a read-only path is a read-only bind of itself. Paths missing in
  // the box are skipped (as runc does), paths through a symlink are
  // resolved inside the box's root.
  std::vector<std::string> masked_paths, readonly_paths;
  // Namespaced sysctls (Docker's --sysctl; config.json's linux.sysctl),
  // "net.ipv4.ping_group_range" -> "0 2147483647": written through the
  // box's own /proc/sys right after it is mounted, before it is made
  // read-only, so they reach only the box's namespaces. Only the keys the
  // kernel keeps per namespace (net.*, kernel.shm*, kernel.msg*, kernel.sem,
  // fs.mqueue.*) are accepted: any other would change the host.
  std::map<std::string, std::string> sysctls;

  bool empty() const {
    return !read_only && tmpfs.empty() && !shm_size && masked_paths.empty() && readonly_paths.empty() &&
           sysctls.empty();
  }
};

void to_json(nlohmann::json& j, const TmpfsMount& m);
void from_json(const nlohmann::json& j, TmpfsMount& m);
void to_json(nlohmann::json& j, const BoxFs& f);
void from_json(const nlohmann::json& j, BoxFs& f);

// What mount(2) takes for a tmpfs with these options.
struct MountArgs {
  unsigned long flags = 0;  // MS_*
  std::string data;         // "mode=755,size=65536k"
};
// Refuses an unknown word or a malformed value, naming it.
Result<MountArgs> tmpfs_mount_args(const std::vector<std::string>& options);

// Every path absolute and clean, every sysctl namespaced and well formed (no "..", ".", "//"), no tmpfs on "/" or
// twice on one destination, every tmpfs option valid, shm_size > 0.
Result<void> check_box_fs(const BoxFs& f);

}  // namespace cubby
