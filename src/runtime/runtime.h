// libcubby's C++ API. The CLI, the C API (include/cubby/cubby.h) and later
// the REST server and SDKs are thin layers over this class.
//
// Every Runtime::open() reconciles the store with reality (guarantee 2): a
// box whose recorded shim is alive stays running; one whose shim is gone is
// marked ended (with the real exit status when the shim recorded it) and its
// leftovers (cgroups, socket) are released. Nothing is marked ended while
// its shim lives, because liveness is judged by ownership.h's exact probe.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string_view>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "image/image_store.h"
#include "proto/frame.h"
#include "proto/seccomp_program.h"
#include "runtime/box_spec.h"
#include "runtime/log_lines.h"
#include "runtime/shim_launcher.h"
#include "sandbox/cgroup.h"
#include "store/store.h"

namespace cubby {

// A box's pids limit when none is asked for (podman's default), and the
// largest one accepted (the kernel's PID_MAX_LIMIT).
inline constexpr int64_t kDefaultPidsLimit = 2048;
inline constexpr int64_t kMaxPidsLimit = 4194304;

struct CreateOptions {
  std::string image;
  // Instead of an image: this directory (an OCI bundle's rootfs, for
  // cubby-runc) is the box's only layer, under its own upper dir. The
  // command, env and cwd must then be given (there is no image config).
  std::string rootfs;
  // An image not in the store is pulled (kMissing: `docker run`'s default)
  // or refused as unknown (kNever); kAlways pulls even when it is there.
  enum class Pull { kMissing, kNever, kAlways };
  Pull pull = Pull::kMissing;
  // "missing" | "never" | "always" (`run --pull`, the API's "pull").
  static std::optional<Pull> parse_pull(std::string_view word) {
    if (word == "missing") return Pull::kMissing;
    if (word == "never") return Pull::kNever;
    if (word == "always") return Pull::kAlways;
    return std::nullopt;
  }
  std::string name;
  std::optional<std::vector<std::string>> entrypoint;  // --entrypoint
  std::vector<std::string> cmd;                        // overrides the image's Cmd
  std::vector<std::string> env;                        // -e K=V (or K: taken from the caller's env)
  std::vector<std::string> publish;                    // -p [IP:][HOST:]GUEST[/tcp|udp]
  std::vector<std::string> volumes;                    // -v SRC:DST[:ro|rw], SRC an existing host path
  std::string cwd, user, hostname;
  std::string network = "default";
  std::vector<std::string> allow_net, deny_net;  // --allow-net / --deny-net CIDR[:PORT] (--network bridge)
  std::vector<std::string> add_hosts, dns;       // --add-host NAME:IP, --dns IP
  // "auto", "vm", "sandbox", or "" for the configured default (Runtime::isolation_setting).
  std::string isolation;
  // --userns: "auto" (or ""): as root, a sandbox box's ids are a range of
  // host ids of its own (runtime/idmap.h); "host": the identity map, box
  // root = host root (root only, sandbox only).
  std::string userns;
  std::optional<int64_t> memory;
  std::optional<double> cpus;
  std::optional<int64_t> pids;  // unset: kDefaultPidsLimit; 0: no limit
  std::optional<uint64_t> cpu_shares;  // --cpu-shares: relative CPU weight (2..262144; 1024 default)
  // --cap-drop: capabilities (CAP_* numbers) of Docker's default set that
  // no process of the box gets. Others are never given, so naming one is
  // an error.
  std::vector<int> cap_drop;
  // --log-opt max-size / max-file (unset: logfile::kDefaultMaxSize/Files).
  std::optional<int64_t> log_max_size;
  std::optional<int> log_max_files;
  bool auto_remove = false;
  bool interactive = false;
  bool tty = false;
  std::map<std::string, std::string> labels;  // --label K=V
  std::string restart;  // --restart no|always|unless-stopped|on-failure[:N] ("": no)
  // The box's filesystem beyond image and volumes (proto/box_fs.h): a
  // read-only rootfs (--read-only), tmpfs mounts with options (--tmpfs),
  // /dev/shm's size (--shm-size), masked and read-only paths (config.json).
  // Checked at create; both backends apply it.
  BoxFs fs;
  // The box's own seccomp filter, compiled (cubby-runc: config.json's
  // linux.seccomp), in place of cubby's default for every process of the
  // box. Empty: the default filter.
  SeccompProgram seccomp;
  // Namespaces to join instead of new ones (BoxSpec::join_ns): "network",
  // "ipc", "uts" -> an nsfs path. Sandbox only; a joined network means
  // network "none" (the namespace has its own).
  std::map<std::string, std::string> join_ns;
};

// What `--isolation auto` picks on this host, and why (SPEC §1): "vm" only
// where the KVM probe (hypervisor/kvm_probe.h) says KVM can boot the guest.
struct IsolationChoice {
  std::string isolation;  // "vm" or "sandbox"
  std::string why;        // "KVM works here", or the probe's reason
};

struct ExecRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd, user;
  bool interactive = false;  // stream stdin
  bool tty = false;          // run on a pseudo-terminal in the box
  bool detach = false;
  std::optional<std::chrono::milliseconds> timeout;
  // A tty exec's first size (rows, cols) when the caller's fds are not
  // terminals (the REST server); else it is read from the caller's terminal.
  std::optional<std::pair<int, int>> tty_size;
};

// Where a session's bytes go. -1 disables a stream.
struct StdioFds {
  int in = -1, out = 1, err = 2;
  bool forward_signals = false;  // relay SIGINT/SIGTERM/SIGHUP to the process
  // Drive a terminal: `in` (if it is a tty) goes into raw mode for the
  // session and is always restored; SIGWINCH becomes a resize; Ctrl-P
  // Ctrl-Q detaches (Docker's detach keys).
  bool tty = false;
  // With tty: Ctrl-P Ctrl-Q detaches (a terminal user's keys). Off for the
  // REST server (an API client's bytes are data) and an OCI runtime (its
  // terminal belongs to its caller, which has detach keys of its own).
  bool detach_keys = true;
  // Output goes here instead of out/err (stream 1 or 2), called on the
  // session's thread (Runtime::exec_capture).
  std::function<void(int stream, std::string_view data)> sink;
  // Sent as the process's whole stdin (then EOF) when `in` is -1 and the
  // request streams stdin.
  std::optional<std::string_view> stdin_data;
  // Commands from another thread: a stream of ControlRecord (resize, signal).
  int control = -1;
};

// One command on StdioFds::control, written whole (12 bytes < PIPE_BUF, so
// writes from several threads never interleave).
struct ControlRecord {
  enum Kind : int32_t { kResize = 1, kSignal = 2 };
  int32_t kind = 0;
  int32_t a = 0, b = 0;  // resize: rows, cols; signal: the signal number
};

// How a process inside a box ended (never "cubby failed": that is an Error).
struct ExecResult {
  uint64_t exec_id = 0;
  int code = 0;          // exit code, 128+N for signal N, 124 on --timeout
  int signal = 0;        // the signal that ended it (0: it exited)
  bool timed_out = false;
  bool detached = false;  // the user detached (Ctrl-P Ctrl-Q); the process runs on
  bool interrupted = false;  // a terminal session ended by a signal to the caller (code = 128+N)
  std::string error;     // set when the command could not start (126/127)
};

// `cubby cp` options (as docker cp's).
struct CopyOptions {
  bool archive = false;       // -a: keep uid/gid (default: box root in a box, the caller on the host)
  bool follow_links = false;  // -L: SRC itself is followed when it is a symlink
  bool one_fs = false;        // box to host: only the mount SRC is on (`export`)
};

// 32 random lowercase hex digits: a box's or a snapshot's id.
std::string random_id();

struct StartResult {
  bool ended = false;  // the box finished during start (e.g. `true`)
  int code = 0;
  std::string error;
};

class Runtime {
 public:
  struct Options {
    std::string home;     // empty: $CUBBY_HOME, else the SPEC default
    std::string bin_dir;  // where cubby-shim/cubby-agent live; empty: next to this executable
  };
  static Result<Runtime> open(Options opts);
  // `exec` without opening the store (the CLI's hot path): a box named by
  // its full id or its exact name is found through files its create wrote
  // (boxes/<id>/exec.json: the box's name, env, cwd and user; names/<name>:
  // its id), and the request goes straight to its agent. nullopt when that
  // cannot be known without the store (an id prefix, a box made by an older
  // cubby) or when its agent does not take the connection (the box is not
  // running): then open() and exec() say what is the matter, so nothing is
  // run twice and no status is guessed. Not reconciling here is safe: only
  // the box the agent answers for is used, and the next call that opens the
  // store reconciles every box.
  static Result<std::optional<ExecResult>> exec_direct(const Options& opts, const std::string& ref,
                                                       const ExecRequest& req, const StdioFds& io);
  // Where open() would look: an absolute home and the helpers' directory,
  // without opening anything (for commands that need only the image store).
  static Result<Options> locate(Options opts);

  Result<store::BoxRecord> create(const CreateOptions& o);
  // Starts a created or ended box. With hold, the workload waits for attach().
  // With tether (for throwaway boxes: `shell`, an attached `run --rm`), the
  // box is tied to this Runtime: if it goes away before attach_and_wait()
  // has seen the box end (the process was killed, or never attached), the
  // shim stops the box, and a --rm box is then removed. A detach releases
  // the tie. attach_and_wait() also gets the box's exit status over it, so
  // it reports the real status even when --rm removed the record first.
  Result<StartResult> start(const std::string& ref, bool hold = false, bool tether = false);
  // Attaches to a held box's workload, starts it, streams its output until it
  // ends and returns its exit code (after the shim recorded it).
  Result<ExecResult> attach_and_wait(const std::string& id, const StdioFds& io);
  // Attaches to a running box's workload (`cubby attach`): its output, and
  // stdin when io.in >= 0, until it ends (returns its code) or the user
  // detaches.
  Result<ExecResult> attach(const std::string& ref, const StdioFds& io);
  Result<ExecResult> exec(const std::string& ref, const ExecRequest& req, const StdioFds& io);
  // exec with its output captured, at most max_bytes per stream (the rest
  // is read and dropped, so the process never blocks on a full pipe), and
  // `stdin_data` as its whole stdin when req.interactive.
  struct Captured {
    ExecResult result;
    std::string out, err;
    bool out_truncated = false, err_truncated = false;
  };
  Result<Captured> exec_capture(const std::string& ref, const ExecRequest& req, std::string_view stdin_data,
                                size_t max_bytes);
  // Reads an exec's status again (it is kept by the agent).
  Result<ExecResult> exec_status(const std::string& ref, uint64_t exec_id);
  Result<void> stop(const std::string& ref, std::chrono::seconds grace);
  Result<void> kill(const std::string& ref, int sig);
  Result<void> remove(const std::string& ref, bool force);
  // Pauses or resumes a running box, its memory kept. Sandbox: the cgroup
  // freezer holds its workload (main process and every exec; the agent
  // keeps serving, so kill and exec status still work; sandbox/cgroup.h).
  // vm: the shim stops the VM's vCPUs (QMP, shim/qmp.h). A stop or a kill
  // of a paused box resumes it to end it.
  Result<void> pause(const std::string& ref, bool paused);
  Result<bool> paused(const std::string& ref);
  // `cubby pause`/`unpause`: pause() with Docker's rules: pausing a paused
  // box or unpausing a running one is a conflict, naming the box.
  Result<void> set_paused(const std::string& ref, bool paused);
  // Whether a running box is paused (false where it cannot be).
  bool is_paused(const store::BoxRecord& b);

  // Memory snapshots of running vm boxes (runtime/snapshots.cc,
  // proto/vm_snapshot.h). snapshot() saves a box as it runs (memory,
  // devices, its disk) under `name` ("" for one made of the box's name and
  // the time); the box runs on.
  Result<store::SnapshotRecord> snapshot(const std::string& ref, const std::string& name);
  Result<std::vector<store::SnapshotRecord>> snapshots();
  Result<store::SnapshotRecord> resolve_snapshot(const std::string& ref);
  Result<void> remove_snapshot(const std::string& ref);
  // `run --from`: n new running boxes, each a copy of the snapshot's box as
  // it was (its processes, memory and disk) with an identity of its own
  // (id, name, hostname, RNG, clock); name only for n == 1. Started
  // together; a box that fails to start is removed and the error returned.
  Result<std::vector<store::BoxRecord>> run_from_snapshot(const std::string& snapshot_ref, int n,
                                                          const std::string& name = "");
  // `fork`: n running copies of a running vm box (a snapshot taken for
  // them, then dropped). The copies publish no ports (the original holds
  // them).
  Result<std::vector<store::BoxRecord>> fork(const std::string& ref, int n);
  // A snapshot as `snapshots --format json` and the API show it.
  static nlohmann::json snapshot_json(const store::SnapshotRecord& s);
  // New limits for a running sandbox box's workload (only those set).
  Result<void> update_limits(const std::string& ref, const sandbox::CgroupLimits& limits);
  // Blocks until the box is no longer running; returns its record.
  Result<store::BoxRecord> wait(const std::string& ref);
  // The workload's stdout/stderr to out_fd/err_fd; for a vm box also its
  // console (kernel, init, QEMU messages) to err_fd, unless !console.
  Result<void> logs(const std::string& ref, bool follow, int out_fd, int err_fd, bool console = true);
  // The same with Docker's --tail, --since/--until and -t (runtime/log_lines.h).
  Result<void> logs(const std::string& ref, const LogsOptions& o, int out_fd, int err_fd);
  // The same lines to a sink (stream 1 stdout, 2 stderr and console), in
  // the order they were written; a sink that returns false ends the call.
  // The one implementation: the fd forms write through it.
  using LogSink = LogLines::Sink;
  Result<void> logs(const std::string& ref, const LogsOptions& o, const LogSink& sink);
  Result<void> logs(const std::string& ref, bool follow, const LogSink& sink, bool console = true);

  // `cubby cp` (runtime/copy.cc), with docker cp's rules for files and
  // directories. Host to box: src is a host path, or "-" for a tar stream
  // read from in_fd that is extracted into box_path (a directory).
  Result<void> copy_to_box(const std::string& src, const std::string& ref, const std::string& box_path,
                           const CopyOptions& o, int in_fd = 0);
  // Box to host: dst is a host path, or "-" for a tar stream written to out_fd.
  // What the box sends is untrusted: nothing lands outside dst, and nothing
  // is written through a symlink.
  Result<void> copy_from_box(const std::string& ref, const std::string& box_path, const std::string& dst,
                             const CopyOptions& o, int out_fd = 1);

  // `prune` (docker container prune): removes every box that is not
  // running (created, stopped, exited) and that `keep_if_not` lets go (a
  // filter; null: all). Returns the removed ids and the bytes their
  // directories took; a box that changed meanwhile (started) is left.
  struct Pruned {
    std::vector<std::string> removed;
    uint64_t bytes = 0;
  };
  Result<Pruned> prune_boxes(const std::function<bool(const store::BoxRecord&)>& match = nullptr);
  // `image prune`: removes every image no box record uses (cubby's images
  // all have a reference, so there are no dangling ones: this is docker
  // image prune -a). Returns the references removed and their sizes.
  Result<Pruned> prune_images();
  // What a running box's workload uses now (its cgroup: CPU, memory, pids,
  // block I/O) and what its network namespace has carried (every interface
  // but lo, as the box sees them); kConflict if it is not running. Values a
  // host does not report stay unset: a vm box has no host cgroup (only the
  // network is unset too: its interfaces are the guest's).
  struct BoxStats : sandbox::CgroupStats {
    std::optional<int64_t> net_rx_bytes, net_tx_bytes;
  };
  Result<BoxStats> stats(const std::string& ref);
  // The host pids of a running box's workload processes (`top`): the main
  // process and every exec, from its cgroup's workload leaf, not the agent.
  // kConflict for a box without a host cgroup (vm, rootless), saying so.
  Result<std::vector<pid_t>> processes(const std::string& ref);
  // The host pid of a running sandbox box's PID 1 (its agent), as root.
  Result<pid_t> init_pid(const std::string& ref);

  Result<std::vector<store::BoxRecord>> list();
  Result<store::BoxRecord> resolve(const std::string& ref);
  Result<void> reconcile();

  image::ImageStore& images() { return images_; }
  const std::string& home() const { return home_; }
  std::string box_dir(const std::string& id) const { return box_dir_in(home_, id); }
  static std::string box_dir_in(const std::string& home, const std::string& id) { return home + "/boxes/" + id; }
  // Whether box `id` of `home` is paused, read without the store or the box
  // (exec's refusal, cubby-runc's `state`): see pause().
  static bool box_paused(const std::string& home, const std::string& id);
  nlohmann::json info();
  // The isolation a box asked for resolves to: `requested` if given, else
  // $CUBBY_ISOLATION, else config.json's "isolation", else "auto". An
  // unknown value is an error naming where it came from.
  Result<std::string> isolation_setting(const std::string& requested) const;
  IsolationChoice auto_isolation() const;
  // The JSON objects of `ls --format json` / `inspect` (SPEC §4 keys).
  static nlohmann::json to_json(const store::BoxRecord& b, bool detailed);
  // A box as `ls --format json`, `inspect`, the API and the C API show it:
  // to_json's record, and for a running box whether it is paused (the
  // box's state, not the store's).
  nlohmann::json describe(const store::BoxRecord& b, bool detailed);

 private:
  Runtime(std::string home, std::string bin_dir, store::Store db, image::ImageStore images)
      : home_(std::move(home)), bin_dir_(std::move(bin_dir)), db_(std::move(db)), images_(std::move(images)) {}
  Result<std::unique_ptr<sandbox::Cgroup>> running_cgroup(const store::BoxRecord& b);
  Result<void> end_dead_box(const store::BoxRecord& b, const std::string& why);
  // After a won mark_removing: directory, record, then image GC if the box
  // held the last use of its image's layers.
  Result<void> finish_removal(const store::BoxRecord& b);
  // Removes box directories that have no record (and no live shim).
  Result<void> sweep_orphans();
  void release_leftovers(const std::string& id);
  Result<void> stop_record(const store::BoxRecord& b, std::chrono::milliseconds grace);
  Result<ExecResult> attach_record(const store::BoxRecord& b, const StdioFds& io, bool start);
  // e, or "box X exited (N)" when the box has ended (an exec cut short).
  Error ended_or(const store::BoxRecord& b, Error e);
  // The files exec_direct reads (exec.json, names/<name>), at create.
  void write_exec_index(const store::BoxRecord& b);
  Result<StartResult> start_record(const store::BoxRecord& b, bool hold, bool tether, bool copy_only);
  // start_record's two halves: the shim launched with its config (a vm box
  // restored from restore_dir if given), then its verdict awaited. Several
  // boxes start at once when all are launched before any is awaited.
  Result<LaunchedShim> launch_start(const store::BoxRecord& b, bool hold, bool tether, bool copy_only,
                                    const std::string& restore_dir);
  Result<StartResult> await_start(const store::BoxRecord& b, LaunchedShim& shim, bool tether);
  // snapshots.cc: the box saved into dir (made here, removed on failure).
  Result<void> take_snapshot(const store::BoxRecord& b, const std::string& dir);
  // n box records copied from a snapshot's (or a box's) spec, then started
  // restored from dir.
  Result<std::vector<store::BoxRecord>> start_copies(const store::BoxRecord& like, const nlohmann::json& config,
                                                     const std::string& dir, int n, const std::string& name,
                                                     bool keep_ports);
  // `cp` on a box that is not running: starts it with only its agent (no
  // workload, no network; ShimConfig::copy_only) and updates b; false if it
  // was running already. end_copy_start() stops it again and waits until
  // its record is back as it was.
  Result<bool> start_for_copy(store::BoxRecord& b);
  void end_copy_start(const store::BoxRecord& b);
  friend struct CopyStart;

  std::string home_, bin_dir_;
  store::Store db_;
  image::ImageStore images_;
  // Tethered boxes' control sockets to their shims, by box id (start() to attach).
  std::map<std::string, proto::Conn> tethers_;
};

// The default home: $CUBBY_HOME, else /var/lib/cubby for root, else
// ~/.local/share/cubby.
std::string default_home();

}  // namespace cubby
