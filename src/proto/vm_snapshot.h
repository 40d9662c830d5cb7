// The frames of a vm box's memory snapshot (issue 14: `cubby snapshot`,
// `run --from`, `fork`). Three parties: the runtime asks the shim, the shim
// quiesces the guest's end of the session stream, QEMU saves the VM.
//
// A running VM's session stream must be at a frame boundary in both
// directions when it is saved, or a copy restored from the snapshot would
// read the rest of a frame it never got the start of (or the start of one
// whose rest the original's host already has). So:
//   1. the shim writes kQuiesce (control channel) and holds every byte it
//      has for the guest after it;
//   2. the guest's init, having read everything before kQuiesce, writes
//      kQuiesced as its last frame and then writes nothing (it stops reading
//      its sessions, log and children) until it hears again;
//   3. the shim, having read everything before kQuiesced, saves the VM
//      (stopped: migration to a file, then its disk), and writes kResume
//      to the original; a copy restored from the snapshot is told
//      kRestored instead, with its own identity, and drops every session
//      (their clients were the original's).
#pragma once

namespace cubby::proto::vm_snapshot {

// runtime -> shim: the first frame of a session on a vm box's agent.sock,
// {"t": kRequest, "dir": DIR}; answered "ok" or "error", then closed. The
// shim writes DIR/state (QEMU's migration stream), DIR/disk.ext4 (the box
// disk, sparse) and DIR/image.ext4 (a hard link to the image disk the guest
// has cached), and DIR/key (what a restore must match).
inline constexpr const char* kRequest = "vm_snapshot";

// shim <-> guest init, on the control channel.
inline constexpr const char* kQuiesce = "quiesce";
inline constexpr const char* kQuiesced = "quiesced";
inline constexpr const char* kResume = "resume";
// {"t": kRestored, "seed": 64 hex digits, "now_ns": u64, "hostname": str}
inline constexpr const char* kRestored = "restored";

// The files of a snapshot's directory.
inline constexpr const char* kStateFile = "state";
inline constexpr const char* kDiskFile = "disk.ext4";
inline constexpr const char* kImageFile = "image.ext4";
inline constexpr const char* kKeyFile = "key";

}  // namespace cubby::proto::vm_snapshot
