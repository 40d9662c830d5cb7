// The message vocabulary of protocol version 1: the one schema of every
// frame cubby reads, as typed structs with one decoder each. Each session (a
// Unix socket connection, or a channel of a multiplexed transport) starts
// with a hello.
//
//   host -> agent                          agent -> host
//   hello {v, min}                         hello {v, agent}     (handshake)
//                                          error {msg, missing} (then close)
//   ping {}                                pong {}              (heartbeat)
//   exec {argv, env[], cwd, user,          started {id, pid}
//         stdin, tty, rows, cols,          out {s: 1|2, d: bin}
//         timeout_ms, detach}
//   resize {rows, cols}  (its terminal)
//   in {d: bin}   in_eof {}                exit {id, code, signal, timed_out, error}
//   signal {sig}  (to the exec)            (an exec that cannot start: exit with
//                                           code 126/127 and its error)
//   exec_status {id}                       exit {...} | running {id}
//   attach {start, stdin, rows, cols}      out/exit as for exec (main process)
//   kill {sig}              (main process) ok {}
//   watch_start {}                         started {id, pid} once the workload runs
//   cp_stat {path}                         cp_stat {kind: d|f|o} | error {msg, missing}
//   cp_put {dir, keep_owner}, then entries ok {} | error {msg}
//   cp_get {path, follow, one_fs}          entries | error {msg}
//     entries: (cp_entry {p, k, mode, uid, gid, mt, mtn, size, x, target}
//               cp_data {d: bin}...)... cp_end {}   (see copy/entry.h)
//     x (a sparse file's data extents): [offset, length, offset, length...]
//
// The mux layer (mux.h) adds close {} and mux_ack {n} on session channels,
// and its control channel carries config {cfg} / go {} / signal {sig} to the
// guest's init and log {d: bin} / exit {code} back.
//
// The first cp_* message hands the session to a copy worker the agent forks
// (agent/copy_worker.h); it serves any number of cp requests, then exits.
//
// An "exit" is sent only after the process's output pipes are drained, and
// the agent keeps finished execs' statuses so exec_status can read them any
// number of times.
//
// Decoding. Every peer is untrusted (a box's code can reach agent.sock's
// peer, and the guest side of the vm mux), so a frame is decoded exactly
// once, by decode<T>() below, into its struct; handlers never touch the
// Json. A decoder checks each field's type, range and size and fails with
// kProtocol naming the message and the first bad field ("malformed hello:
// \"v\" must be an integer"); an absent optional field takes the default
// written here. Unknown fields are ignored (a newer peer may add some).
// frame.h's parse_payload() has already bounded the payload's depth and size.
// A receiver answers a malformed frame with an error and ends that session;
// nothing a peer sends ends the process reading it.
#pragma once

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/error.h"
#include "proto/frame.h"

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
// The mux layer's own (mux.h).
inline constexpr const char* kMuxClose = "close";
inline constexpr const char* kMuxAck = "mux_ack";
inline constexpr const char* kConfig = "config";
inline constexpr const char* kGo = "go";
inline constexpr const char* kLog = "log";
// The guest's init, once its port is open and before its config is read:
// nothing box-specific touched yet (a template may be taken now).
inline constexpr const char* kRendezvous = "rendezvous";
// The shim's control socket of a tethered box (ShimConfig::tether), after "ready".
inline constexpr const char* kUntether = "untether";
inline constexpr const char* kEnded = "ended";
// A vm box's shim answers this itself, as the first frame of a session on
// agent.sock ({"paused": bool}; "ok" or "error"): its vCPUs stop or run on
// (QMP). It never reaches the guest, which cannot answer while stopped.
inline constexpr const char* kVmPause = "vm_pause";

// Sizes and ranges the decoders enforce.
inline constexpr size_t kMaxPath = 4096;    // cwd, cp paths (PATH_MAX)
inline constexpr size_t kMaxName = 256;     // a user spec, the agent's name
inline constexpr size_t kMaxText = 65536;   // error texts, entry paths and link targets
inline constexpr int kMaxSignal = 64;       // the kernel's _NSIG - 1
inline constexpr size_t kMaxExtents = 4096;  // of one sparse file (a reader merges beyond)
inline constexpr int kMaxProtoVersion = 1 << 30;
// The argv and environment of one process (the workload or an exec),
// counted as execve counts them: each string with its NUL plus its pointer.
// The kernel's own bounds are a quarter of the stack limit in total (2 MiB
// under the usual 8 MiB) and 128 KiB per string; ours keeps the request that
// carries them (exec, the box's config) well inside one frame (kMaxPayload)
// with room for everything else, and a refusal names the limit up front
// instead of a "Broken pipe" when the agent drops an oversized frame.
inline constexpr size_t kMaxCommandBytes = 512 * 1024;
inline constexpr size_t kMaxArgBytes = 128 * 1024;  // one string, with its NUL (MAX_ARG_STRLEN)
// kInvalid naming the limit when argv + env are over one of the bounds above.
Result<void> check_command_size(const std::vector<std::string>& argv, const std::vector<std::string>& env);

// The message type of a frame parse_payload() accepted ("" otherwise).
std::string_view type_of(const Json& m);

struct TermSize {
  uint16_t rows = 24, cols = 80;
};

// --- host -> agent ----------------------------------------------------------
struct Hello {  // both ways; the agent's has `agent`, the host's `min`
  static constexpr const char* kType = kHello;
  int version = 0;      // v
  int min_version = 0;  // min (default: v)
  std::string agent;
};
struct Ping {
  static constexpr const char* kType = kPing;
};
struct Exec {
  static constexpr const char* kType = kExec;
  std::vector<std::string> argv;  // not empty; no NULs, as in env, cwd, user
  std::vector<std::string> env;
  std::string cwd, user;
  bool with_stdin = false;  // stdin
  bool tty = false, detach = false;
  TermSize size;            // rows, cols
  int64_t timeout_ms = 0;   // 0: none
};
struct Resize {
  static constexpr const char* kType = kResize;
  TermSize size;
};
struct In {
  static constexpr const char* kType = kIn;
  std::vector<uint8_t> data;  // d
};
struct InEof {
  static constexpr const char* kType = kInEof;
};
struct Signal {  // to a session's exec; on the mux control channel, to the guest's agent
  static constexpr const char* kType = kSignal;
  int sig = SIGTERM;  // 1..kMaxSignal
};
struct ExecStatus {
  static constexpr const char* kType = kExecStatus;
  uint64_t id = 0;
};
struct Attach {
  static constexpr const char* kType = kAttach;
  bool start = false, with_stdin = false;
  std::optional<TermSize> size;  // when rows is given
};
struct Kill {
  static constexpr const char* kType = kKill;
  int sig = SIGKILL;
};
struct WatchStart {
  static constexpr const char* kType = kWatchStart;
};
struct CpStat {
  static constexpr const char* kType = kCpStat;
  std::string path;
};
struct CpPut {
  static constexpr const char* kType = kCpPut;
  std::string dir;
  bool keep_owner = false;
};
struct CpGet {
  static constexpr const char* kType = kCpGet;
  std::string path;
  bool follow = false;
  bool one_fs = false;  // stay on the mount of path (export: the box's filesystem, not /proc or volumes)
};

// --- copy streams, both ways (copy/entry.h turns a CpEntry into an Entry) --
struct CpEntry {
  static constexpr const char* kType = kCpEntry;
  std::string path;      // p
  char kind = 'f';       // k: d f l h
  uint32_t mode = 0;     // 07777 at most
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;     // mt
  uint32_t mtime_nsec = 0;   // mtn, < 1e9 or UTIME_OMIT
  uint64_t size = 0;         // kind f
  // Kind f with x: a sparse file, whose data frames carry only these
  // ranges, in order. Checked: at most kMaxExtents, each non-empty, in
  // increasing order without overlap, within size.
  bool sparse = false;
  std::vector<std::pair<uint64_t, uint64_t>> extents;  // (offset, length)
  std::string target;        // kinds l and h
};
struct CpData {
  static constexpr const char* kType = kCpData;
  std::vector<uint8_t> data;  // d
};
struct CpEnd {
  static constexpr const char* kType = kCpEnd;
};

// --- agent -> host ----------------------------------------------------------
struct ErrorReply {
  static constexpr const char* kType = kError;
  std::string msg;
  bool missing = false;  // cp: the path does not exist
};
struct Pong {
  static constexpr const char* kType = kPong;
};
struct Started {
  static constexpr const char* kType = kStarted;
  uint64_t id = 0;
  int pid = 0;  // 0: the workload already finished
};
struct Out {
  static constexpr const char* kType = kOut;
  int stream = 1;  // s: 1 stdout, 2 stderr
  std::vector<uint8_t> data;
};
struct Exit {
  static constexpr const char* kType = kExit;
  uint64_t id = 0;
  int code = 0;     // 0..255
  int signal = 0;   // 0..kMaxSignal
  bool timed_out = false;
  std::string error;
};
struct Running {
  static constexpr const char* kType = kRunning;
  uint64_t id = 0;
};
struct Ok {
  static constexpr const char* kType = kOk;
};
struct CpStatReply {
  static constexpr const char* kType = kCpStat;
  char kind = 'o';  // d f o
};

// --- the mux layer ----------------------------------------------------------
struct MuxClose {
  static constexpr const char* kType = kMuxClose;
};
struct MuxAck {
  static constexpr const char* kType = kMuxAck;
  uint64_t bytes = 0;  // n
};
struct Config {  // the guest agent's config (read by agent/config.h)
  static constexpr const char* kType = kConfig;
  Json cfg;  // a map
};
struct Go {
  static constexpr const char* kType = kGo;
};
struct Log {
  static constexpr const char* kType = kLog;
  std::vector<uint8_t> data;  // d
};
struct GuestExit {
  static constexpr const char* kType = kExit;
  int code = 0;  // 0..255
};

// --- a tethered box's control socket (runtime <-> shim) -----------------------
// The client detached: the box runs on without it (its hangup no longer stops it).
struct Untether {
  static constexpr const char* kType = kUntether;
};
// The box ended, sent before its record may go (--rm): its status as recorded.
struct Ended {
  static constexpr const char* kType = kEnded;
  int code = 0;  // 0..255
  std::string msg;
};

// Decodes m (whose type must be T::kType) into T; kProtocol naming the
// field if anything is wrong. Defined for every struct above.
template <class T>
Result<T> decode(const Json& m);

// The text of an error frame m: its msg, or fallback when it has none, or
// why m is malformed.
std::string error_text(const Json& m, std::string_view fallback);

// What the agent's event loop accepts on a session; a type it does not know
// is Unknown (answered with an error, the session goes on).
struct Unknown {
  std::string type;
};
using Request = std::variant<Unknown, Hello, Ping, Exec, Resize, In, InEof, Signal, ExecStatus, Attach, Kill,
                             WatchStart, CpStat, CpPut, CpGet>;
Result<Request> decode_request(const Json& m);

}  // namespace msg

}  // namespace cubby::proto
