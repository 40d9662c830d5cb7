// The relay: the process `create` leaves behind, whose pid goes into
// --pid-file as the container's init.
//
// Why not the workload's own pid: with cubby the workload is a grandchild of
// cubby-shim, under cubby-agent as PID 1 of the box's pid namespace, in the
// box's user namespace. containerd-shim-runc-v2 (a child subreaper) learns a
// container's exit by reaping the pid in the pid file after runc exits and
// that process is reparented to it; a process several levels inside another
// supervisor is never reparented to it and never reaped by it, so its exit
// would go unseen. Why not cubby-shim's pid: the shim's exit status is not
// the workload's, and the shim also serves the box after the workload ends.
//
// So `create` forks this relay, which stays in the caller's session with the
// caller's stdio (the container's stdio when terminal is false), creates and
// starts the box held (the workload waits), and when `start` writes to the
// start fifo attaches to the workload, pumps its stdio and exits with its
// status (128+N for signal N, as containerd reports a signalled init). The
// box is tethered to the relay (Runtime::start's tether): a SIGKILLed relay
// (containerd's kill of the init pid, a crashed shim) stops the box, so no
// container outlives the process its caller watches.
#pragma once

#include "oci/box_options.h"
#include "oci/spec.h"
#include "oci/state.h"

namespace cubby::oci {

// In the child of fork(): does the above, writing "ok <box id>\n" or
// "error <message>\n" to report_fd once the box is started held, and returns
// the exit code for the process.
int run_relay(const StateDir& dir, const std::string& id, const Spec& spec, const BoxOptions& bo, int report_fd);

}  // namespace cubby::oci
