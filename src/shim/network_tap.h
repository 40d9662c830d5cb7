// The tap device a box's slirp4netns serves, made by the shim as a
// persistent device before the helper attaches to it.
//
// Why: a tap the helper creates itself is unregistered when the helper's fd
// closes, inside the helper's exit: three synchronize_rcu_expedited() and an
// rcu_barrier() (perf: ~25 ms here), and the shim waits for that exit before
// it can report the box's end. A persistent tap outlives the helper's fd;
// it goes with its namespace, when the kernel's cleanup_net worker frees
// that (asynchronously: nobody waits). A helper started again after a crash
// attaches to the same, still configured, device.
#pragma once

#include "base/error.h"

namespace cubby::shim {

struct NetnsFds;

// Creates the persistent tap `name` (IFF_TAP | IFF_NO_PI, what slirp4netns
// attaches with) in ns.net, joining ns.user first when that is not ours.
// Runs in a forked child: a user namespace can only be joined by a
// single-threaded process, and the shim has threads.
Result<void> make_persistent_tap(const NetnsFds& ns, const char* name);

}  // namespace cubby::shim
