// The message vocabulary of protocol version 1. Each session (a Unix socket
// connection, or a channel of a multiplexed transport) starts with a hello.
//
//   host -> agent                          agent -> host
//   hello {v, min}                         hello {v, agent}     (handshake)
//                                          error {msg}          (then close)
//   ping {}                                pong {}              (heartbeat)
//   exec {argv, env[], cwd, user,          started {id, pid}
//         stdin, tty, rows, cols,          out {s: 1|2, d: bin}
//         timeout_ms}
//   resize {rows, cols}  (its terminal)
//   in {d: bin}   in_eof {}                exit {id, code, signal, timed_out}
//   signal {sig}  (to the exec)            exec_error {msg, code} (126/127)
//   exec_status {id}                       exit {...} | running {id}
//   attach {start, stdin, rows, cols}      out/exit as for exec (main process)
//   kill {sig}              (main process) ok {}
//   watch_start {}                         started {id, pid} once the workload runs
//   cp_stat {path}                         cp_stat {kind: d|f|o} | error {msg, missing}
//   cp_put {dir, keep_owner}, then entries ok {} | error {msg}
//   cp_get {path, follow}                  entries | error {msg}
//     entries: (cp_entry {p, k, mode, uid, gid, mt, mtn, size, target}
//               cp_data {d: bin}...)... cp_end {}   (see copy/entry.h)
//
// The first cp_* message hands the session to a copy worker the agent forks
// (agent/copy_worker.h); it serves any number of cp requests, then exits.
//
// An "exit" is sent only after the process's output pipes are drained, and
// the agent keeps finished execs' statuses so exec_status can read them any
// number of times.
#pragma once

#include <cstdint>

namespace cubby::proto {

inline constexpr int kVersion = 1;
inline constexpr int kMinVersion = 1;

namespace msg {
inline constexpr const char* kHello = "hello";
inline constexpr const char* kError = "error";
inline constexpr const char* kPing = "ping";
inline constexpr const char* kPong = "pong";
inline constexpr const char* kExec = "exec";
inline constexpr const char* kStarted = "started";
inline constexpr const char* kOut = "out";
inline constexpr const char* kIn = "in";
inline constexpr const char* kInEof = "in_eof";
inline constexpr const char* kSignal = "signal";
inline constexpr const char* kExit = "exit";
inline constexpr const char* kExecError = "exec_error";
inline constexpr const char* kExecStatus = "exec_status";
inline constexpr const char* kRunning = "running";
inline constexpr const char* kAttach = "attach";
inline constexpr const char* kKill = "kill";
inline constexpr const char* kOk = "ok";
inline constexpr const char* kWatchStart = "watch_start";
inline constexpr const char* kResize = "resize";
inline constexpr const char* kCpStat = "cp_stat";
inline constexpr const char* kCpPut = "cp_put";
inline constexpr const char* kCpGet = "cp_get";
inline constexpr const char* kCpEntry = "cp_entry";
inline constexpr const char* kCpData = "cp_data";
inline constexpr const char* kCpEnd = "cp_end";
}  // namespace msg

}  // namespace cubby::proto
