// The box side of `cubby cp`. The agent's event loop is single-threaded and
// must never stall on a slow disk or a slow client, so the first cp_*
// message of a session makes it fork a worker that owns that session from
// then on and does plain blocking I/O (fork is safe: the agent has no
// threads). The worker keeps only the session's socket, serves cp_stat,
// cp_put and cp_get requests (proto/messages.h) until the client hangs up,
// and exits; the agent reaps it like any orphan.
//
// Why not tar in the box: the agent is static and copied into a memfd at
// every box start (and sits in the vm initramfs), so it stays free of
// libarchive. The host reads and writes tar (runtime/copy.cc); the agent
// only walks and creates files, resolving every path with openat2
// RESOLVE_IN_ROOT from the box's "/" (copy/tree.h).
#pragma once

#include <string>

#include "base/unique_fd.h"
#include "proto/frame.h"
#include "proto/messages.h"

namespace cubby::agent {

// Post-fork, in the worker: never returns. `unsent` is output the event
// loop had queued for the session; `dec` holds the frames it had read but
// not handled; `first` is the request that started the worker.
[[noreturn]] void run_copy_worker(UniqueFd session, proto::FrameDecoder dec, std::string unsent,
                                  const proto::msg::Request& first);

}  // namespace cubby::agent
