// The contract between cubby-shim and cubby-agent when the shim starts the
// agent as PID 1 of a sandbox: which fd carries what. Both sides include
// this file, so the numbers cannot drift apart.
#pragma once

#include <cstdint>

namespace cubby::launch {

// The agent's inherited fds (everything else is closed before exec).
inline constexpr int kAgentConfigFd = 3;  // pipe: the agent's JSON config, then EOF
inline constexpr int kAgentListenFd = 4;  // listening socket, bound before the agent ran
inline constexpr int kAgentLogFd = 5;     // the box log (workload stdout/stderr), O_APPEND
inline constexpr int kAgentGoFd = 6;      // pipe: one byte = start the workload; EOF = shim gone
// unix socket: the rootfs's mounts and directories as fds (SCM_RIGHTS), when
// the config's rootfs says "fds" (root: opened by the shim, see
// shim/box_mounts.h); then EOF.
inline constexpr int kAgentMountFd = 7;
inline constexpr int kAgentFdCount = 8;
// Then, from fd 8 on, the fds through which a child of the agent moves itself
// into the box's workload cgroup (sandbox::Cgroup::open_self_join: one per v1
// hierarchy); the config's "workload_cgroup_fds" says how many (0: none).
inline constexpr int kAgentWorkloadCgroupFd = kAgentFdCount;
inline constexpr int kAgentMaxCgroupFds = 6;  // v1: memory, cpu, pids, freezer, cpuacct, blkio
// After those, when the box has a pids limit: a read-only fd of the workload
// leaf's pids.current, at the fd the config's "workload_pids_fd" names (with
// the limit in "pids_max"). Moving a process into a cgroup is not held to
// pids.max (the kernel checks it on fork only), so every exec child checks
// the count once it has joined.
inline constexpr int kAgentMaxFds = kAgentFdCount + kAgentMaxCgroupFds + 1;

// Docker's default capability set (CAP_* bits), what the agent gives a box's
// processes; the config's "cap_drop" withholds some of it (--cap-drop).
// sandbox/confine.cc asserts it is the set it applies.
inline constexpr uint64_t kDefaultCapabilityMask = 0xa80425fbull;

// Files of a box's directory that the shim makes and the runtime reads.
inline constexpr const char* kAgentSocket = "agent.sock";  // the agent's sessions (vm: the shim's mux)
// A vm box whose vCPUs the shim stopped (`cubby pause`) has this file; the
// shim makes it before it stops them and removes it once they run again, so
// an exec that finds no file never waits on a stopped guest (what a sandbox
// box's freezer state tells, read without the VM).
inline constexpr const char* kVmPausedFile = "vm.paused";

// The shim's inherited fds.
inline constexpr int kShimControlFd = 3;  // socketpair to the runtime that launched it
// A tethered box (ShimConfig::tether: `shell`, an attached `run --rm`) keeps
// it open after "ready": its hangup (the client is gone) stops the box, and
// msg::Untether and msg::Ended (proto/messages.h) travel on it.

}  // namespace cubby::launch
