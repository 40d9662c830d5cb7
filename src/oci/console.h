// --console-socket (runc's protocol, as go-runc's ReceiveMaster reads it):
// when process.terminal is true, the runtime makes a pseudo-terminal and
// sends its master over the caller's Unix socket in one SCM_RIGHTS message
// (payload: the terminal's name), then runs the process on the slave.
//
// cubby's workload runs on a terminal of its own inside the box (the
// agent's), so the pair made here is the host end: the relay takes the slave
// as its controlling terminal and stdio and drives it as `cubby run -t` drives
// a user's terminal (raw mode, SIGWINCH becomes a resize of the box's
// terminal, no detach keys). What containerd writes to the master reaches the
// box's terminal unchanged, and its resize of the master reaches the box.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::oci {

// Makes the pair, sends the master to `socket_path`, returns the slave
// (close-on-exec; the master is closed here once sent). `size` (rows,
// cols; config.json's process.consoleSize) is set on it first.
Result<UniqueFd> send_console(const std::string& socket_path, std::optional<std::pair<int, int>> size);

// In a freshly forked child: a new session whose controlling terminal and
// stdio are `slave`. Async-signal-safe (raw syscalls only). False on failure.
bool take_terminal(int slave);

}  // namespace cubby::oci
