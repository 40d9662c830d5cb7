// The agent's service loop: one thread, one epoll. It accepts sessions on
// the listening socket (bound by the shim before the agent existed: early
// bind, late serve), runs execs, streams their output, and is the box's only
// reaper: a single waitpid(-1) loop driven by SIGCHLD through a signalfd,
// which deposits every exit into a sticky per-exec record, so an exec's
// status is never stolen and can be read any number of times, while orphans
// are reaped and forgotten (no zombies accumulate).
//
// Single-threaded by design: fork() is then always safe, and "no thread is
// started before the workload is forked" holds trivially.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/process.h"
#include "base/unique_fd.h"
#include "proto/frame.h"
#include "proto/messages.h"
#include "sandbox/confine.h"

namespace cubby::agent {

struct ProcessSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd;
  std::string user;
  bool tty = false;  // run on a fresh pseudo-terminal
};

// Initial terminal size, set before the process starts (so the first prompt
// already has the right geometry).
struct WinSize {
  unsigned short rows = 24, cols = 80;
};

struct AgentOptions {
  ProcessSpec main;
  bool hold = false;  // start the workload only when a client attaches with start
  bool confine = true;
  // Sandbox: every process the agent starts writes "0" to each of these
  // before it execs, moving into the box's workload cgroup, which carries
  // the limits (sandbox::Cgroup::open_self_join); the agent stays outside.
  std::vector<UniqueFd> workload_cgroup;
  // The workload leaf's pids.current and the box's pids limit: a child that
  // joined the leaf checks it is still within the limit before it execs
  // (joining is not held to pids.max). Invalid: no limit.
  UniqueFd workload_pids_current;
  int64_t pids_max = 0;
  // CAP_* bits of Docker's default set that no process of the box gets
  // (CreateOptions::cap_drop).
  uint64_t cap_drop = 0;
  // The box's own seccomp filter (config "seccomp": BoxSpec::seccomp), in
  // place of the default one. Unlike the default, it is not loaded into the
  // agent (a profile may deny what the agent needs to serve): each process
  // the agent starts loads it just before exec.
  std::optional<sandbox::SeccompFilter> box_seccomp;
};

class Server {
 public:
  Server(AgentOptions opts, UniqueFd listen_fd, UniqueFd log_fd, UniqueFd go_fd);
  ~Server();
  // Runs until the main process has exited (or the shim went away); returns
  // the agent's exit code: the workload's code, or 128+N for signal N.
  // With confine, run() first puts the agent itself under the box's seccomp
  // filter (its children inherit it), so request handlers must not need a
  // blocked syscall (mount, setns, unshare, ptrace, bpf, ...: see confine.h).
  int run();

 private:
  struct Session;
  struct Exec;
  enum class Kind { kListen, kSignal, kGo, kSession, kStdout, kStderr, kStdin, kTimer };
  struct Watch {
    Kind kind;
    uint64_t id;  // session id or exec id
  };

  void add_watch(int fd, uint32_t events, Kind kind, uint64_t id);
  void mod_watch(int fd, uint32_t events);
  void del_watch(int fd);

  void on_accept();
  void on_signal();
  void on_go();
  void on_session(uint64_t sid, uint32_t events);
  void on_output(uint64_t eid, int stream);
  void on_stdin_writable(uint64_t eid);
  void on_timer(uint64_t eid);

  // Handles the frames already in s's decoder, until it pauses; false if
  // that ended the session.
  bool serve_frames(Session& s);
  uint32_t session_events(const Session& s) const;
  // Stdin backpressure: stop reading a session / read again the sessions
  // that feed exec e (see kStdinHighWater).
  void pause_input(Session& s);
  void resume_input_of(const Exec& e);
  void handle_message(Session& s, const proto::Json& m);
  void handle_exec(Session& s, const proto::msg::Exec& m);
  void start_copy_worker(Session& s, const proto::msg::Request& first);
  // Answers with an error and ends the session.
  void refuse(Session& s, const std::string& why);
  void start_main(bool with_stdin);
  std::optional<std::string> spawn(Exec& e, const ProcessSpec& spec, bool with_stdin, WinSize ws);

  void send(Session& s, const proto::Json& m);
  void flush(Session& s);
  void close_session(uint64_t sid);
  void deliver_output(Exec& e, int stream, std::string_view data);
  void reap();
  void maybe_finish(Exec& e);
  void finish(Exec& e);
  void pump_stdin(Exec& e);
  void shutdown_and_flush();

  AgentOptions opts_;
  UniqueFd listen_, log_, go_, epoll_, sigfd_;
  // Taken once in run(), for every exec child (see ExecChildPlan): the
  // signals not at SIG_DFL, and the bounding-set capabilities to drop.
  std::vector<int> reset_signals_;
  uint64_t cap_drops_ = 0;
  bool keep_groups_ = false;  // setgroups is denied here (rootless)
  std::map<int, Watch> watches_;
  std::map<uint64_t, std::unique_ptr<Session>> sessions_;
  std::map<uint64_t, std::unique_ptr<Exec>> execs_;      // running
  std::map<uint64_t, ExitStatus> finished_;               // sticky statuses
  std::map<uint64_t, bool> finished_timed_out_;
  std::vector<uint64_t> resumed_;  // sessions to serve_frames() after this batch of events
  uint64_t next_session_ = 1, next_exec_ = 1;
  uint64_t main_id_ = 0;  // exec id of the workload once started
  bool may_start_ = false, main_started_ = false, main_done_ = false, shim_gone_ = false;
  bool main_stdin_ = false;
  WinSize main_winsize_;
  ExitStatus main_status_;
};

}  // namespace cubby::agent
