// cubby-shim BOX_ID: the per-box supervisor.
//
// Its argv is exactly [<path>/cubby-shim, <box_id>] (guarantee 1: recovery
// identifies a shim by an exact argv match plus its start time); its
// configuration, which may hold secrets, arrives over the control socket
// on fd 3. It records itself in the store, launches the box through a
// backend, waits for the agent's handshake (bounded by the box's liveness,
// not by a timer), reports readiness, then supervises: it reaps the box's
// PID 1 or VMM, records the real exit status, and frees everything.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"
#include "proto/launch.h"
#include "proto/logfile.h"
#include "proto/messages.h"
#include "proto/transport.h"
#include "runtime/box_spec.h"
#include "shim/backend.h"
#include "shim/network.h"
#include "store/store.h"

using namespace cubby;
using proto::Json;

namespace {

constexpr int kDefaultStopGraceMs = 10000;

// The last lines the agent (or VM console) printed, for error reports.
class DiagTail {
 public:
  // A vm box's console also goes into its box log, for `cubby logs`.
  void copy_to_box_log(UniqueFd log) { box_log_ = std::move(log); }

  void drain(int fd) {
    if (fd < 0) return;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
      (void)!::write(2, buf, static_cast<size_t>(n));  // into shim.log
      if (box_log_) {
        std::string rec;  // one write per record: O_APPEND keeps records whole
        logfile::append_record(rec, logfile::kConsole, std::string_view(buf, static_cast<size_t>(n)));
        (void)sys::write_all(box_log_.get(), rec.data(), rec.size());
      }
      text_.append(buf, static_cast<size_t>(n));
      if (text_.size() > 4096) text_.erase(0, text_.size() - 4096);
    }
  }
  std::string last_line() const {
    std::string t = text_;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    auto nl = t.rfind('\n');
    std::string line = nl == std::string::npos ? t : t.substr(nl + 1);
    // The agent prefixes its lines; keep only the message.
    if (auto p = line.find(" error: "); p != std::string::npos) line = line.substr(p + 8);
    return line;
  }
  // QEMU's own complaints ("qemu-system-x86_64: ..." or "qemu: ..." lines: it failed to
  // start or aborted), as one line; "" if it made none.
  std::string vmm_error() const {
    std::string out;
    for (size_t at = 0; at < text_.size();) {
      size_t nl = text_.find('\n', at);
      std::string line = text_.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
      at = nl == std::string::npos ? text_.size() : nl + 1;
      std::erase(line, '\r');
      if (line.starts_with("qemu-system-") || line.starts_with("qemu: ")) out += (out.empty() ? "" : "; ") + line;
    }
    return out;
  }
  // The last n lines (the VM console's last words), oldest first.
  std::string last_lines(size_t n) const {
    std::string t = text_;
    while (!t.empty() && (t.back() == '\n' || t.back() == '\r')) t.pop_back();
    if (t.empty()) return t;
    // A guest kernel panic names its cause above the backtrace: keep that line.
    std::string panic;
    if (auto p = t.rfind("Kernel panic"); p != std::string::npos) panic = t.substr(p, t.find('\n', p) - p) + "\n";
    size_t at = t.size();
    for (size_t i = 0; i < n && at != std::string::npos && at > 0; ++i) at = t.rfind('\n', at - 1);
    std::string out = at == std::string::npos ? t : t.substr(at + 1);
    std::erase(out, '\r');
    return out.find(panic) == std::string::npos ? panic + out : out;
  }

 private:
  std::string text_;
  UniqueFd box_log_;
};

struct Shim {
  ShimConfig cfg;
  store::Store* db = nullptr;
  pid_t self = 0;
  uint64_t self_start = 0;
  proto::Conn ctl;

  void reply(const Json& m) {
    if (ctl.valid()) (void)ctl.send(m);
  }
};

// Waits for the agent's hello, or for the box to die first.
enum class Boot { kReady, kDied, kTimedOut };
// Handshake, then (unless the workload is held for an attach) let the
// workload start and wait until the agent says it runs.
Result<Boot> await_agent(shim::BoxInstance& box, const std::string& box_dir, DiagTail& diag, bool hold,
                         std::chrono::milliseconds backstop) {
  proto::UnixTransport t(box_dir, shim::kAgentSocket);
  auto fd = CUBBY_TRY(t.connect());  // queued in the backlog even if the agent is not serving yet
  proto::Conn conn(std::move(fd));
  CUBBY_TRYV(conn.send({{"t", proto::msg::kHello}, {"v", proto::kVersion}, {"min", proto::kMinVersion}}));
  const auto deadline = std::chrono::steady_clock::now() + backstop;
  for (;;) {
    int fds[3] = {conn.fd(), box.pidfd(), box.diag_fd()};
    int n = box.diag_fd() >= 0 ? 3 : 2;
    // Readiness is the hello and liveness is the pidfd; the deadline is only
    // the large backstop for a guest that neither answers nor dies.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    int which = CUBBY_TRY(sys::wait_any_readable(std::span<const int>(fds, n), std::max(left, std::chrono::milliseconds(0))));
    if (which < 0) return Boot::kTimedOut;
    if (which == 2) {
      diag.drain(box.diag_fd());
      continue;
    }
    if (which == 1) return Boot::kDied;
    auto f = conn.recv();
    if (!f) {
      // The agent closed the connection: it is exiting. Let the pidfd tell.
      CUBBY_TRYV(sys::wait_readable(box.pidfd(), sys::kForever));
      return Boot::kDied;
    }
    const std::string_view t = proto::msg::type_of(f->msg);
    if (t == proto::msg::kHello) {
      CUBBY_TRYV(proto::msg::decode<proto::msg::Hello>(f->msg));
      if (hold) return Boot::kReady;
      CUBBY_TRYV(conn.send({{"t", proto::msg::kWatchStart}}));
      CUBBY_TRYV(box.allow_start());
      continue;
    }
    if (t == proto::msg::kStarted) {
      CUBBY_TRYV(proto::msg::decode<proto::msg::Started>(f->msg));
      return Boot::kReady;
    }
    return fail(Error::protocol("agent answered the handshake with " + std::string(t)));
  }
}

// How many times the shim starts a box's slirp4netns again after it died
// (crashed on what the box sent, killed by someone) before it gives up and
// ends the box: a running box always has the network it was created with.
constexpr int kMaxNetworkRestarts = 5;

// A note from the shim into the box log (console stream: `cubby logs` shows
// it on stderr) and shim.log.
void note_in_box_log(shim::BoxInstance& box, const std::string& text) {
  LOG_WARN("{}", text);
  box.note_in_log("cubby: " + text + "\n");  // through the box log's writer: it rotates the file
}

// How supervision ended, beyond the box's own exit status.
struct Supervised {
  bool stopped = false;  // a stop request (or a gone client) ended it
  std::string error;     // cubby ended the box (its network could not be kept): the reason
};

// Supervises the running box until its PID 1 (or VMM) exits: stop
// requests (SIGTERM with the grace as its value), the grace timer, the
// console, the network helper, and, for a tethered box, its client.
Result<Supervised> supervise(Shim& sh, shim::BoxInstance& box, DiagTail& diag) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  UniqueFd timer(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  Supervised out;
  int net_restarts = 0;
  bool stopping = false;
  // Graceful stop: the signals to the workload now, SIGKILL when the grace is over.
  auto stop = [&](std::initializer_list<int> sigs, int grace_ms) {
    out.stopped = true;
    if (grace_ms <= 0) {
      (void)box.kill();
      return;
    }
    for (int sig : sigs) (void)box.request_stop(sig);
    if (stopping) return;  // the first grace period stands
    stopping = true;
    itimerspec its{};
    its.it_value.tv_sec = grace_ms / 1000;
    its.it_value.tv_nsec = (grace_ms % 1000) * 1000000L;
    ::timerfd_settime(timer.get(), 0, &its, nullptr);
  };
  enum Kind { kBox, kSignal, kTimer, kDiag, kNet, kTether };
  for (;;) {
    std::vector<int> fds;
    std::vector<Kind> kinds;
    auto watch = [&](int fd, Kind k) {
      if (fd < 0) return;
      fds.push_back(fd);
      kinds.push_back(k);
    };
    watch(box.pidfd(), kBox);
    watch(sigfd.get(), kSignal);
    watch(timer.get(), kTimer);
    watch(box.diag_fd(), kDiag);
    if (box.network()) watch(box.network()->pidfd(), kNet);
    watch(sh.ctl.fd(), kTether);
    auto which = CUBBY_TRY(sys::wait_any_readable(fds, sys::kForever));
    switch (kinds[static_cast<size_t>(which)]) {
      case kBox: return out;
      case kDiag: diag.drain(box.diag_fd()); break;
      case kSignal: {
        signalfd_siginfo si;
        while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
          // stop: SIGTERM to the workload, then SIGKILL after the grace the
          // runtime passed as the signal's value (sigqueue-style).
          int grace = si.ssi_code == SI_QUEUE ? si.ssi_int : kDefaultStopGraceMs;
          LOG_INFO("stop requested (grace {} ms)", grace);
          stop({SIGTERM}, grace);
        }
        break;
      }
      case kTimer: {
        uint64_t ticks;
        (void)!::read(timer.get(), &ticks, sizeof ticks);
        LOG_INFO("grace period over: killing the box");
        (void)box.kill();
        break;
      }
      case kNet: {
        // Reaped at once (never a zombie), then started again into the
        // box's namespace, a bounded number of times; past that, or if it
        // cannot start, the box ends with the reason: never a box that is
        // `running` without the network it was created with.
        std::string how = box.network()->reap();
        if (stopping) break;  // the box is ending anyway
        std::string why;
        if (net_restarts < kMaxNetworkRestarts) {
          ++net_restarts;
          note_in_box_log(box, "the box's network helper slirp4netns " + how + "; restarting it (" +
                                              std::to_string(net_restarts) + " of " +
                                              std::to_string(kMaxNetworkRestarts) + ")");
          auto r = box.network()->restart();
          if (r) {
            note_in_box_log(box, "the box's network is back (connections it had are lost)");
            break;
          }
          why = "the box's network helper slirp4netns " + how + " and could not be restarted: " + r.error().message();
        } else {
          why = "the box's network helper slirp4netns " + how + " after " + std::to_string(kMaxNetworkRestarts) +
                " restarts";
        }
        out.error = why + "; the box was stopped";
        note_in_box_log(box, out.error);
        stop({SIGTERM}, kDefaultStopGraceMs);
        break;
      }
      case kTether: {
        // The client that holds this box (`shell`, an attached `run --rm`)
        // either detached (it says so: the box runs on) or is gone, killed
        // or crashed: its throwaway box has nobody left and goes too.
        auto f = sh.ctl.recv();
        if (f && proto::msg::type_of(f->msg) == proto::msg::kUntether) {
          LOG_INFO("the client detached: the box runs on without it");
          sh.ctl.close();
          break;
        }
        sh.ctl.close();
        LOG_INFO("the client holding this box is gone: stopping the box");
        // SIGHUP as a terminal hangup would (an interactive shell ignores
        // SIGTERM but exits on it), SIGTERM as a stop does.
        stop({SIGHUP, SIGTERM}, kDefaultStopGraceMs);
        break;
      }
    }
  }
}

int run_shim(const std::string& box_id) {
  Shim sh;
  // dup2 gave us fd 3 without close-on-exec; no process we start may
  // inherit it (for a tethered box it is the client's tie to the box).
  ::fcntl(launch::kShimControlFd, F_SETFD, FD_CLOEXEC);
  sh.ctl = proto::Conn(UniqueFd(launch::kShimControlFd));
  auto first = sh.ctl.recv();
  if (!first) return 1;  // the launcher died before sending the config
  try {
    sh.cfg = first->msg.get<ShimConfig>();
  } catch (const std::exception& e) {
    sh.reply({{"t", "failed"}, {"msg", std::string("bad shim config: ") + e.what()}});
    return 1;
  }
  if (sh.cfg.box_id != box_id) {
    sh.reply({{"t", "failed"}, {"msg", "config is for another box"}});
    return 1;
  }
  log::set_prefix("cubby-shim[" + box_id.substr(0, 12) + "]");
  // Block the signals we read through a signalfd before anything can send them.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto db = store::Store::open(sh.cfg.home);
  if (!db) {
    sh.reply({{"t", "failed"}, {"msg", db.error().message()}});
    return 1;
  }
  sh.db = &*db;
  sh.self = ::getpid();
  sh.self_start = process_start_time(sh.self).value_or(0);
  auto claimed = db->mark_running(box_id, sh.self, sh.self_start);
  if (!claimed || !*claimed) {
    sh.reply({{"t", "failed"}, {"msg", claimed ? "box is already running or was removed" : claimed.error().message()}});
    return 1;
  }

  auto record_end = [&](store::BoxStatus st, std::optional<int> code, const std::string& err, bool oom_killed = false) {
    // A --rm box goes to `removing` in the same compare-and-set, then loses
    // its directory, then its record: a crash between leaves what rm finishes.
    bool remove = sh.cfg.spec.auto_remove;
    auto r = db->mark_ended(box_id, sh.self, sh.self_start, remove ? store::BoxStatus::kRemoving : st, code, err,
                            oom_killed);
    if (!r) LOG_ERROR("record exit: {}", r.error().message());
    else if (*r && remove) (void)db->finish_removal(box_id, sh.cfg.box_dir);
  };

  // A published port another process holds: one clear line, before any
  // helper fails on it deep inside the start.
  for (const auto& p : sh.cfg.spec.ports) {
    if (auto free = check_host_port_free(p); !free) {
      record_end(store::BoxStatus::kExited, 125, free.error().message());
      sh.reply({{"t", "failed"}, {"msg", free.error().message()}});
      return 1;
    }
  }

  auto backend = sh.cfg.isolation == "vm" ? shim::make_vm_backend() : shim::make_sandbox_backend();
  auto launched = backend->launch(sh.cfg);
  if (!launched) {
    std::string m = launched.error().message();
    LOG_ERROR("launch: {}", m);
    record_end(store::BoxStatus::kExited, 125, m);
    sh.reply({{"t", "failed"}, {"msg", m}});
    return 1;
  }
  auto& box = **launched;
  DiagTail diag;
  if (auto log = box.console_log(); log && *log) diag.copy_to_box_log(std::move(*log));
  Supervised sup;

  auto boot = await_agent(box, sh.cfg.box_dir, diag, sh.cfg.hold, std::chrono::milliseconds(sh.cfg.boot_timeout_ms));
  if (boot && *boot == Boot::kReady) {
    if (sh.cfg.hold) {
      if (auto r = box.allow_start(); !r) LOG_WARN("start workload: {}", r.error().message());
    }
    sh.reply({{"t", "ready"}});
    // The launcher may go away now; we are on our own. Unless the box is
    // tethered to it: then the control socket stays open, its hangup stops
    // the box, and the box's end status travels back on it.
    if (!sh.cfg.tether) sh.ctl.close();
    if (auto r = supervise(sh, box, diag)) {
      sup = std::move(*r);
    } else {
      LOG_ERROR("supervise: {}", r.error().message());
      (void)box.kill();
    }
  } else if (!boot) {
    LOG_ERROR("boot: {}", boot.error().message());
    (void)box.kill();
  } else if (*boot == Boot::kTimedOut) {
    LOG_ERROR("boot: no handshake within {} ms: killing the box", sh.cfg.boot_timeout_ms);
    (void)box.kill();
  }
  diag.drain(box.diag_fd());
  auto status = box.reap();
  const bool oom_killed = box.oom_killed();  // cleanup() removes the cgroup that counted it
  box.cleanup();
  int code = status ? status->shell_code() : 125;
  std::string err;
  if (boot && *boot == Boot::kTimedOut) {
    // A cubby failure, not the workload's status: the SIGKILL was ours.
    code = 125;
    std::string last = sh.cfg.isolation == "vm" ? diag.last_lines(8) : diag.last_line();
    err = "the box did not come up within " + std::to_string(sh.cfg.boot_timeout_ms / 1000.0).substr(0, 6) +
          " s (its agent never answered; the backstop is CUBBY_BOOT_TIMEOUT)" +
          (last.empty() ? std::string() : "; last console lines:\n" + last);
    sh.reply({{"t", "exited"}, {"code", code}, {"msg", err}});
  } else if (!boot || *boot == Boot::kDied) {
    // The box ended before (or instead of) its handshake; a clean exit 0
    // is success, anything else carries the agent's last words (for a VMM
    // that failed to start, its own one-line message).
    if (code != 0) {
      if (sh.cfg.isolation == "vm") err = diag.vmm_error();
      if (err.empty()) err = sh.cfg.isolation == "vm" ? diag.last_lines(8) : diag.last_line();
      if (err.empty()) err = box.failure_hint();
      if (err.empty()) err = "box exited during start";
    }
    sh.reply({{"t", "exited"}, {"code", code}, {"msg", err}});
  } else if (!sup.error.empty()) {
    code = 125;  // cubby ended the box, not its workload
    err = sup.error;
  } else {
    err = box.failure_hint();  // a VMM that died on its own after start says so in inspect
  }
  // A tethered client learns the end before the record can go (--rm), so
  // it reports the real status, not a missing one.
  if (sh.ctl.valid()) (void)sh.ctl.send({{"t", proto::msg::kEnded}, {"code", code}, {"msg", err}});
  record_end(sup.stopped && sup.error.empty() ? store::BoxStatus::kStopped : store::BoxStatus::kExited, code, err, oom_killed);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    static const char usage[] = "usage: cubby-shim BOX_ID (started by the cubby runtime)\n";
    (void)!::write(2, usage, sizeof usage - 1);
    return 2;
  }
  return run_shim(argv[1]);
}
