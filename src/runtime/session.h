// The client side of one agent session that runs a process (an exec, or an
// attach to the box's workload): relays stdin, writes output to the caller's
// fds, forwards signals, and returns how the process ended. Only the "d"
// bytes of output frames are ever written to the caller's terminal.
#pragma once

#include <optional>
#include <utility>

#include "proto/frame.h"
#include "runtime/runtime.h"

namespace cubby {

// `signal_type` is the message used to forward a caught signal: "signal"
// for an exec, "kill" for the workload of an attach.
// The terminal size of fd (rows, cols), if it is a terminal.
std::optional<std::pair<int, int>> terminal_size(int fd);

Result<ExecResult> stream_session(proto::Conn& conn, const StdioFds& io, const char* signal_type);

}  // namespace cubby
