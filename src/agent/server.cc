#include "agent/server.h"

#include <fcntl.h>
#include <stdlib.h>
#include <termios.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "agent/copy_worker.h"
#include "agent/exec_child.h"
#include "agent/user.h"
#include "base/fs.h"
#include "base/log.h"
#include "proto/logfile.h"
#include "proto/messages.h"

namespace cubby::agent {

using proto::Json;
namespace msg = proto::msg;

struct Server::Session {
  uint64_t id = 0;
  UniqueFd fd;
  proto::FrameDecoder dec;
  std::string out;
  bool hello = false;
  bool attached = false;   // receives the main process's output and exit
  bool watch_start = false;  // told when the workload has started
  bool close_when_flushed = false;  // its exec is done: hang up once the exit is out
  bool writing = false;    // EPOLLOUT armed
  bool corked = false;     // replies are queued while a batch of requests is handled
  bool paused = false;     // not read: the stdin it feeds is full (see kStdinHighWater)
  uint64_t exec = 0;       // the exec this session drives, if any
};

struct Server::Exec {
  uint64_t id = 0;
  pid_t pid = -1;
  uint64_t session = 0;  // 0: nobody listening (detached or hung up)
  bool is_main = false;
  UniqueFd in_w, out_r, err_r, timer;
  std::string inbuf;
  bool in_eof = false;
  bool exited = false;
  bool timed_out = false;
  bool orphaned = false;  // its client went away: the timer is the hangup's grace
  bool tty = false;   // out_r is a pty master (in_w a dup of it)
  ExitStatus status;
  std::string error;  // why it could not start
};

namespace {
constexpr size_t kChunk = 64 * 1024;
constexpr size_t kSessionHighWater = 8u << 20;
// Stdin a process has not read yet, per exec: past the high-water mark the
// sessions feeding it are not read (their clients' writes block, or on vm the
// mux window fills) until it is below the low-water mark again, so a client
// that writes faster than the process reads costs at most this plus a frame,
// never more, and no other session waits for it.
constexpr size_t kStdinHighWater = 1u << 20;
constexpr size_t kStdinLowWater = 256u << 10;
constexpr size_t kFinishedKept = 4096;
// How long an exec whose client went away has after its SIGHUP before its
// process group is killed (a shell's or a server's orderly exit on hangup).
constexpr int64_t kOrphanGraceMs = 2000;

void arm_timer(UniqueFd& timer, int64_t ms) {
  if (!timer) timer.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  itimerspec its{};
  its.it_value.tv_sec = ms / 1000;
  its.it_value.tv_nsec = (ms % 1000) * 1000000;
  ::timerfd_settime(timer.get(), 0, &its, nullptr);
}

Json exit_message(uint64_t id, const ExitStatus& s, bool timed_out) {
  return Json{{"t", msg::kExit}, {"id", id}, {"code", timed_out ? 124 : s.shell_code()},
              {"signal", s.signaled ? s.signal : 0}, {"timed_out", timed_out}};
}

// A new pseudo-terminal from the box's own devpts instance.
Result<std::pair<UniqueFd, UniqueFd>> open_pty(const WinSize& ws) {
  UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master) return sys_fail("open /dev/ptmx");
  if (::grantpt(master.get()) < 0 || ::unlockpt(master.get()) < 0) return sys_fail("unlock pty");
  char name[128];
  if (::ptsname_r(master.get(), name, sizeof name) != 0) return sys_fail("ptsname");
  UniqueFd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave) return sys_fail(std::string("open ") + name);
  winsize w{ws.rows, ws.cols, 0, 0};
  ::ioctl(master.get(), TIOCSWINSZ, &w);
  return std::pair{std::move(master), std::move(slave)};
}

bool is_executable_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

std::string env_get(const std::vector<std::string>& env, const std::string& key) {
  for (auto& e : env)
    if (e.size() > key.size() && e.compare(0, key.size(), key) == 0 && e[key.size()] == '=')
      return e.substr(key.size() + 1);
  return "";
}
bool env_has(const std::vector<std::string>& env, const std::string& key) {
  for (auto& e : env)
    if (e.compare(0, key.size() + 1, key + "=") == 0) return true;
  return false;
}
}  // namespace

Server::Server(AgentOptions opts, UniqueFd listen_fd, UniqueFd log_fd, UniqueFd go_fd)
    : opts_(std::move(opts)), listen_(std::move(listen_fd)), log_(std::move(log_fd)), go_(std::move(go_fd)) {}

Server::~Server() = default;

void Server::add_watch(int fd, uint32_t events, Kind kind, uint64_t id) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
  watches_[fd] = Watch{kind, id};
}
void Server::mod_watch(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
}
void Server::del_watch(int fd) {
  if (fd < 0) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  watches_.erase(fd);
}

int Server::run() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  // PID 1 of a pid namespace drops SIG_DFL signals sent from inside it,
  // but never blocked ones (the kernel queues a blocked signal because its
  // handler may change before it is unblocked), so blocking them for the
  // signalfd is enough; Lifecycle.StopDeliversSigtermToTheWorkload fails
  // if they are not blocked.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  ::signal(SIGPIPE, SIG_IGN);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  sigfd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  // The agent changes no disposition from here on (signals arrive through
  // the signalfd), so the children's reset list is fixed now.
  for (int s = 1; s < NSIG; ++s)
    if (s != SIGKILL && s != SIGSTOP && !signal_at_default(s)) reset_signals_.push_back(s);
  // A rootless box's user namespace denies setgroups (its maps were written
  // unprivileged): its processes keep the groups they have, as in rootless
  // podman, rather than fail every exec.
  keep_groups_ = read_file("/proc/self/setgroups").value_or("") == "deny\n";
  if (opts_.confine) cap_drops_ = sandbox::bounding_set_drops();
  // A box's own filter is loaded by each child instead (AgentOptions::box_seccomp).
  if (opts_.confine && !opts_.box_seccomp) {
    auto f = sandbox::SeccompFilter::build_default();
    if (!f) {
      LOG_ERROR("build seccomp filter: {}", f.error().message());
      return 125;
    }
    // The filter confines the agent itself, so every process it starts
    // inherits it (and no_new_privs) through clone instead of installing it
    // again: loading a BPF program JIT-compiles it, 0.3-0.8 ms per exec on
    // a VM host. This is safe because a serving agent needs none of the
    // blocked syscalls (the box's mounts are done before the server starts;
    // in a vm, powering off is the guest init's job, another process), and a
    // child ends up exactly as confined as when it installed the filter.
    if (int rc = f->apply(); rc != 0) {
      LOG_ERROR("install seccomp filter: {}", std::strerror(-rc));
      return 125;
    }
  }
  int fl = ::fcntl(listen_.get(), F_GETFL);
  ::fcntl(listen_.get(), F_SETFL, fl | O_NONBLOCK);
  add_watch(listen_.get(), EPOLLIN, Kind::kListen, 0);
  add_watch(sigfd_.get(), EPOLLIN, Kind::kSignal, 0);
  if (go_) {
    add_watch(go_.get(), EPOLLIN, Kind::kGo, 0);
  } else {
    may_start_ = true;
    if (!opts_.hold) start_main(false);
  }

  epoll_event evs[32];
  while (!main_done_ && !shim_gone_) {
    int n = ::epoll_wait(epoll_.get(), evs, 32, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      LOG_ERROR("epoll_wait: {}", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n && !main_done_ && !shim_gone_; ++i) {
      auto it = watches_.find(evs[i].data.fd);
      if (it == watches_.end()) continue;  // closed by an earlier event in this batch
      Watch w = it->second;
      switch (w.kind) {
        case Kind::kListen: on_accept(); break;
        case Kind::kSignal: on_signal(); break;
        case Kind::kGo: on_go(); break;
        case Kind::kSession: on_session(w.id, evs[i].events); break;
        case Kind::kStdout: on_output(w.id, 1); break;
        case Kind::kStderr: on_output(w.id, 2); break;
        case Kind::kStdin: on_stdin_writable(w.id); break;
        case Kind::kTimer: on_timer(w.id); break;
      }
    }
    while (!resumed_.empty() && !main_done_ && !shim_gone_) {
      uint64_t sid = resumed_.back();
      resumed_.pop_back();
      auto it = sessions_.find(sid);
      if (it != sessions_.end() && !it->second->paused) (void)serve_frames(*it->second);
    }
  }
  shutdown_and_flush();
  if (shim_gone_ && !main_done_) return 137;
  return main_status_.shell_code();
}

void Server::on_accept() {
  for (;;) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;  // EAGAIN or a transient error
    auto s = std::make_unique<Session>();
    s->id = next_session_++;
    s->fd.reset(fd);
    add_watch(fd, EPOLLIN | EPOLLRDHUP, Kind::kSession, s->id);
    sessions_[s->id] = std::move(s);
  }
}

void Server::on_signal() {
  signalfd_siginfo si;
  bool child = false;
  while (::read(sigfd_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGCHLD) {
      child = true;
    } else if (main_started_ && !main_done_) {
      // Stop requests and friends go to the workload, as docker stop does.
      auto it = execs_.find(main_id_);
      if (it != execs_.end() && it->second->pid > 0) ::kill(it->second->pid, static_cast<int>(si.ssi_signo));
    } else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      main_done_ = true;  // asked to stop before the workload ran
      main_status_.signaled = true;
      main_status_.signal = static_cast<int>(si.ssi_signo);
    }
  }
  if (child) reap();
}

void Server::on_go() {
  char b;
  ssize_t n = ::read(go_.get(), &b, 1);
  if (n == 1) {
    may_start_ = true;
    del_watch(go_.get());
    // Keep the fd: the shim holds the other end for its whole life; we do
    // not watch it again, PR_SET_PDEATHSIG covers the shim dying later.
    if (!opts_.hold) start_main(main_stdin_);
  } else if (n == 0) {
    shim_gone_ = true;  // the shim died before letting the workload start
  }
}

void Server::start_main(bool with_stdin) {
  if (main_started_) return;
  main_started_ = true;
  auto e = std::make_unique<Exec>();
  e->id = next_exec_++;
  e->is_main = true;
  main_id_ = e->id;
  Exec& ref = *e;
  execs_[e->id] = std::move(e);
  if (auto err = spawn(ref, opts_.main, with_stdin, main_winsize_)) {
    // The cause goes to the box log and our stderr (the shim reports it).
    std::string line = *err + "\n";
    std::string rec;
    logfile::append_record(rec, 2, line);
    (void)!::write(log_.get(), rec.data(), rec.size());
    LOG_ERROR("{}", *err);
    ref.error = *err;
    ref.exited = true;  // exit code was set by spawn()
    finish(ref);
    return;
  }
  for (auto& [id, s] : sessions_)
    if (s->watch_start) send(*s, {{"t", msg::kStarted}, {"id", ref.id}, {"pid", ref.pid}});
}

void Server::on_session(uint64_t sid, uint32_t events) {
  auto it = sessions_.find(sid);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  if (events & EPOLLOUT) {
    flush(s);
    if (s.close_when_flushed && s.out.empty()) {
      close_session(sid);
      return;
    }
  }
  if (s.paused) {
    // Only a hangup can be reported while it is not read (its watch asks
    // for no input): the client is gone, as at EOF.
    if (events & (EPOLLHUP | EPOLLERR)) close_session(sid);
    return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
    char buf[kChunk];
    for (;;) {
      ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
      if (n > 0) {
        s.dec.feed(buf, static_cast<size_t>(n));
        if (!serve_frames(s)) return;
        if (s.paused) return;  // the rest waits in the socket (and s.dec)
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      close_session(sid);  // EOF or error: the client went away
      return;
    }
  }
}

bool Server::serve_frames(Session& s) {
  const uint64_t sid = s.id;
  // The replies to the requests of one read go out in one write: a client
  // that pipelines hello and exec gets hello and started together, and
  // wakes once for them instead of twice.
  s.corked = true;
  while (!s.paused) {
    auto f = s.dec.next();
    if (!f) {
      refuse(s, f.error().message());  // a bad frame ends its session, with the reason
      return false;
    }
    if (!*f) break;
    handle_message(s, (*f)->msg);
    if (!sessions_.count(sid)) return false;
  }
  s.corked = false;
  flush(s);
  if (s.close_when_flushed && s.out.empty()) {
    close_session(sid);
    return false;
  }
  return true;
}

uint32_t Server::session_events(const Session& s) const {
  return (s.paused ? 0u : static_cast<uint32_t>(EPOLLIN | EPOLLRDHUP)) | (s.writing ? static_cast<uint32_t>(EPOLLOUT) : 0u);
}

void Server::pause_input(Session& s) {
  if (s.paused) return;
  s.paused = true;
  mod_watch(s.fd.get(), session_events(s));
}

void Server::resume_input_of(const Exec& e) {
  for (auto& [sid, s] : sessions_) {
    if (!s->paused || !(e.is_main ? s->attached : s->exec == e.id)) continue;
    s->paused = false;
    mod_watch(s->fd.get(), session_events(*s));
    // Frames it sent before the pause are in s.dec already, where epoll
    // cannot see them: served from the main loop, not from inside this
    // exec's stdin handling.
    resumed_.push_back(sid);
  }
}

void Server::refuse(Session& s, const std::string& why) {
  send(s, {{"t", msg::kError}, {"msg", why}});
  flush(s);
  close_session(s.id);
}

void Server::handle_message(Session& s, const Json& m) {
  // Decoded once, here: the handlers below see only checked values. A
  // malformed frame ends its session (with the reason), nothing more.
  auto req = msg::decode_request(m);
  if (!req) {
    refuse(s, req.error().message());
    return;
  }
  const msg::Request& r = *req;
  if (!s.hello) {
    auto* h = std::get_if<msg::Hello>(&r);
    if (!h || h->version < proto::kMinVersion || h->min_version > proto::kVersion) {
      refuse(s, "unsupported protocol (agent speaks " + std::to_string(proto::kMinVersion) + ".." +
                    std::to_string(proto::kVersion) + ")");
      return;
    }
    s.hello = true;
    send(s, {{"t", msg::kHello},
             {"v", std::min(h->version, proto::kVersion)},
             {"agent", "cubby-agent " CUBBY_VERSION}});
    return;
  }
  if (std::holds_alternative<msg::Ping>(r)) {
    send(s, {{"t", msg::kPong}});
  } else if (auto* x = std::get_if<msg::Exec>(&r)) {
    handle_exec(s, *x);
  } else if (std::holds_alternative<msg::In>(r) || std::holds_alternative<msg::InEof>(r)) {
    uint64_t eid = s.attached ? main_id_ : s.exec;
    auto it = execs_.find(eid);
    if (it == execs_.end() || !it->second->in_w) return;
    if (auto* in = std::get_if<msg::In>(&r))
      it->second->inbuf.append(reinterpret_cast<const char*>(in->data.data()), in->data.size());
    else if (!it->second->tty)
      it->second->in_eof = true;  // a terminal has no EOF of its own: ^D is a byte
    pump_stdin(*it->second);
    if (it->second->inbuf.size() >= kStdinHighWater) pause_input(s);
  } else if (auto* rs = std::get_if<msg::Resize>(&r)) {
    uint64_t eid = s.attached ? main_id_ : s.exec;
    auto it = execs_.find(eid);
    WinSize ws{rs->size.rows, rs->size.cols};
    if (!s.attached || !main_started_) main_winsize_ = ws;
    if (it != execs_.end() && it->second->tty && it->second->out_r) {
      winsize w{ws.rows, ws.cols, 0, 0};
      ::ioctl(it->second->out_r.get(), TIOCSWINSZ, &w);  // the kernel sends SIGWINCH
    }
  } else if (auto* sig = std::get_if<msg::Signal>(&r)) {
    auto it = execs_.find(s.exec);
    if (it != execs_.end() && it->second->pid > 0) ::kill(it->second->pid, sig->sig);
  } else if (auto* st = std::get_if<msg::ExecStatus>(&r)) {
    uint64_t id = st->id;
    if (auto f = finished_.find(id); f != finished_.end())
      send(s, exit_message(id, f->second, finished_timed_out_[id]));
    else if (execs_.count(id))
      send(s, {{"t", msg::kRunning}, {"id", id}});
    else
      send(s, {{"t", msg::kError}, {"msg", "no such exec " + std::to_string(id)}});
  } else if (auto* a = std::get_if<msg::Attach>(&r)) {
    s.attached = true;
    if (a->with_stdin) main_stdin_ = true;
    if (a->size) main_winsize_ = {a->size->rows, a->size->cols};
    if (a->start && opts_.hold) {
      opts_.hold = false;
      if (may_start_) start_main(main_stdin_);
    }
    send(s, {{"t", msg::kOk}});
  } else if (std::holds_alternative<msg::WatchStart>(r)) {
    // The shim's readiness probe: "started" once the workload runs (at once
    // if it already does); if it cannot start, the agent exits with 126/127.
    auto it = execs_.find(main_id_);
    if (main_started_ && it != execs_.end())
      send(s, {{"t", msg::kStarted}, {"id", main_id_}, {"pid", it->second->pid}});
    else if (main_started_)
      send(s, {{"t", msg::kStarted}, {"id", main_id_}, {"pid", 0}});  // already finished
    else
      s.watch_start = true;
  } else if (auto* k = std::get_if<msg::Kill>(&r)) {
    auto it = execs_.find(main_id_);
    if (it != execs_.end() && it->second->pid > 0 && !it->second->exited) {
      ::kill(it->second->pid, k->sig);
      send(s, {{"t", msg::kOk}});
    } else {
      send(s, {{"t", msg::kError}, {"msg", "the box's main process is not running"}});
    }
  } else if (std::holds_alternative<msg::CpStat>(r) || std::holds_alternative<msg::CpPut>(r) ||
             std::holds_alternative<msg::CpGet>(r)) {
    start_copy_worker(s, r);
  } else if (auto* u = std::get_if<msg::Unknown>(&r)) {
    send(s, {{"t", msg::kError}, {"msg", "unknown message type: " + u->type}});
  } else {
    send(s, {{"t", msg::kError}, {"msg", "unexpected hello"}});
  }
}

void Server::start_copy_worker(Session& s, const msg::Request& first) {
  if (s.exec || s.attached) {
    send(s, {{"t", msg::kError}, {"msg", "a copy needs a session of its own"}});
    return;
  }
  // We have no threads, so the child may run ordinary code (see copy_worker.h).
  pid_t pid = ::fork();
  if (pid < 0) {
    send(s, {{"t", msg::kError}, {"msg", std::string("start a copy: fork: ") + std::strerror(errno)}});
    return;
  }
  if (pid == 0) {
    // It works in the box for the box's client: under the box's filter,
    // which the agent itself does not have when it is the box's own.
    if (opts_.confine && opts_.box_seccomp && opts_.box_seccomp->apply() != 0) ::_exit(125);
    run_copy_worker(std::move(s.fd), std::move(s.dec), std::move(s.out), first);
  }
  // The worker owns the session now; our copy of its fd goes, and its exit
  // is reaped by reap() like any orphan's.
  close_session(s.id);
}

void Server::handle_exec(Session& s, const msg::Exec& m) {
  ProcessSpec spec{m.argv, m.env, m.cwd, m.user, m.tty};
  auto e = std::make_unique<Exec>();
  e->id = next_exec_++;
  e->session = m.detach ? 0 : s.id;
  Exec& ref = *e;
  execs_[e->id] = std::move(e);
  WinSize ws{m.size.rows, m.size.cols};
  if (auto err = spawn(ref, spec, m.with_stdin || spec.tty, ws)) {
    uint64_t id = ref.id;
    finished_[id] = ref.status;
    execs_.erase(id);
    send(s, {{"t", msg::kExit}, {"id", id}, {"code", ref.status.code}, {"error", *err}});
    return;
  }
  if (ref.session) s.exec = ref.id;
  if (m.timeout_ms > 0) {
    arm_timer(ref.timer, m.timeout_ms);
    add_watch(ref.timer.get(), EPOLLIN, Kind::kTimer, ref.id);
  }
  send(s, {{"t", msg::kStarted}, {"id", ref.id}, {"pid", ref.pid}});
}

// Starts `spec` for exec `e`. On failure sets e.status (126/127) and
// returns the reason.
std::optional<std::string> Server::spawn(Exec& e, const ProcessSpec& spec, bool with_stdin, WinSize ws) {
  auto failure = [&](int code, std::string why) {
    e.status = ExitStatus{code, 0, false};
    return std::optional<std::string>(std::move(why));
  };
  auto user = resolve_user(spec.user);
  if (!user) return failure(126, user.error().message());
  std::vector<std::string> env = spec.env;
  if (!env_has(env, "PATH")) env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  if (!env_has(env, "HOME")) env.push_back("HOME=" + user->home);
  if (!env_has(env, "HOSTNAME")) {
    char h[256] = {};
    ::gethostname(h, sizeof h - 1);
    env.push_back(std::string("HOSTNAME=") + h);
  }
  // Resolve the executable before fork, so "not found" is a clean 127.
  std::string path;
  const std::string& cmd = spec.argv[0];
  if (cmd.find('/') != std::string::npos) {
    if (::access(cmd.c_str(), F_OK) != 0)
      return failure(127, "exec: " + cmd + ": no such file or directory");
    path = cmd;
  } else {
    std::string p = env_get(env, "PATH");
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      std::string dir = p.substr(start, end - start);
      if (dir.empty()) dir = ".";
      if (is_executable_file(dir + "/" + cmd)) {
        path = dir + "/" + cmd;
        break;
      }
      start = end + 1;
    }
    if (path.empty()) return failure(127, "exec: \"" + cmd + "\": executable file not found in $PATH");
  }

  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  UniqueFd out_r, out_w, err_r, err_w, in_r, in_w, tty_slave;
  if (spec.tty) {
    // A terminal: the master stays here, the slave becomes the process's
    // controlling terminal and its stdin/stdout/stderr.
    auto pty = open_pty(ws);
    if (!pty) return failure(126, pty.error().message());
    out_r = std::move(pty->first);
    tty_slave = std::move(pty->second);
    in_w.reset(::fcntl(out_r.get(), F_DUPFD_CLOEXEC, 3));
    if (!env_has(env, "TERM")) env.push_back("TERM=xterm");
  } else {
    int out[2], err[2], in[2];
    if (::pipe2(out, O_CLOEXEC) < 0) return failure(126, std::string("pipe: ") + std::strerror(errno));
    out_r.reset(out[0]);
    out_w.reset(out[1]);
    if (::pipe2(err, O_CLOEXEC) < 0) return failure(126, std::string("pipe: ") + std::strerror(errno));
    err_r.reset(err[0]);
    err_w.reset(err[1]);
    if (with_stdin) {
      if (::pipe2(in, O_CLOEXEC) < 0) return failure(126, std::string("pipe: ") + std::strerror(errno));
      in_r.reset(in[0]);
      in_w.reset(in[1]);
    }
  }

  std::vector<char*> argv, envp;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& v : env) envp.push_back(const_cast<char*>(v.c_str()));
  envp.push_back(nullptr);
  std::string cwd = spec.cwd.empty() ? "/" : spec.cwd;
  ExecChildPlan plan{path.c_str(),
                     argv.data(),
                     envp.data(),
                     spec.tty ? tty_slave.get() : with_stdin ? in_r.get() : devnull.get(),
                     spec.tty ? tty_slave.get() : out_w.get(),
                     spec.tty ? tty_slave.get() : err_w.get(),
                     spec.tty ? tty_slave.get() : -1,
                     cwd.c_str(),
                     user->uid,
                     user->gid,
                     user->groups.data(),
                     user->groups.size(),
                     // The default filter is inherited from the agent (see run()); a box's own is loaded here.
                     opts_.box_seccomp ? &*opts_.box_seccomp : nullptr,
                     opts_.confine,
                     nullptr};
  ExecFailure f;
  plan.failure = &f;
  static const int kNoSignal[1] = {0};
  plan.reset_signals = reset_signals_.empty() ? kNoSignal : reset_signals_.data();
  plan.nreset_signals = reset_signals_.size();
  plan.cap_drops = cap_drops_;
  plan.cap_drops_known = true;
  plan.cap_keep = sandbox::default_capability_mask() & ~opts_.cap_drop;
  plan.keep_groups = keep_groups_;
  std::vector<int> cgroup_fds;
  for (const auto& fd : opts_.workload_cgroup) cgroup_fds.push_back(fd.get());
  plan.cgroup_fds = cgroup_fds.data();
  plan.ncgroup_fds = cgroup_fds.size();
  plan.pids_current_fd = opts_.workload_pids_current ? opts_.workload_pids_current.get() : -1;
  plan.pids_max = opts_.pids_max;
  pid_t pid = spawn_exec_child(plan);
  if (pid < 0) return failure(126, std::string("clone: ") + std::strerror(-pid));
  if (f.stage != 0) {
    int st;
    ::waitpid(pid, &st, 0);  // our own child, by pid: nothing else is reaped
    int code = (f.stage == 8 && f.err == ENOENT) ? 127 : 126;
    if (f.stage == kStagePidsLimit)
      return failure(code, "cannot start " + cmd + ": the box's pids limit (" + std::to_string(opts_.pids_max) +
                               ") is reached");
    const bool known = f.stage >= 0 && f.stage < static_cast<int>(std::size(kStageNames));
    const char* stage = known ? kStageNames[f.stage] : "?";
    return failure(code, std::string("exec ") + cmd + ": " + stage + ": " + std::strerror(f.err));
  }
  e.pid = pid;
  e.tty = spec.tty;
  auto nonblock = [](int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); };
  nonblock(out_r.get());
  e.out_r = std::move(out_r);
  add_watch(e.out_r.get(), EPOLLIN, Kind::kStdout, e.id);
  if (err_r) {
    nonblock(err_r.get());
    e.err_r = std::move(err_r);
    add_watch(e.err_r.get(), EPOLLIN, Kind::kStderr, e.id);
  }
  if (in_w) {
    nonblock(in_w.get());
    e.in_w = std::move(in_w);
  }
  return std::nullopt;
}

void Server::deliver_output(Exec& e, int stream, std::string_view data) {
  if (e.is_main) {
    std::string rec;
    logfile::append_record(rec, stream, data);
    (void)!::write(log_.get(), rec.data(), rec.size());
    Json m{{"t", msg::kOut}, {"s", stream}, {"d", Json::binary(std::vector<uint8_t>(data.begin(), data.end()))}};
    for (auto& [id, s] : sessions_)
      if (s->attached) send(*s, m);
    return;
  }
  if (!e.session) return;
  auto it = sessions_.find(e.session);
  if (it == sessions_.end()) return;
  send(*it->second, {{"t", msg::kOut}, {"s", stream},
                     {"d", Json::binary(std::vector<uint8_t>(data.begin(), data.end()))}});
}

void Server::on_output(uint64_t eid, int stream) {
  auto it = execs_.find(eid);
  if (it == execs_.end()) return;
  Exec& e = *it->second;
  UniqueFd& fd = stream == 1 ? e.out_r : e.err_r;
  char buf[kChunk];
  for (int rounds = 0; rounds < 4 && fd; ++rounds) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n > 0) {
      deliver_output(e, stream, std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    del_watch(fd.get());
    fd.reset();
  }
  // Backpressure: stop reading while the client is far behind.
  if (e.session && fd) {
    auto s = sessions_.find(e.session);
    if (s != sessions_.end() && s->second->out.size() > kSessionHighWater) mod_watch(fd.get(), 0);
  }
  maybe_finish(e);
}

void Server::pump_stdin(Exec& e) {
  while (e.in_w && !e.inbuf.empty()) {
    ssize_t n = ::write(e.in_w.get(), e.inbuf.data(), e.inbuf.size());
    if (n > 0) {
      e.inbuf.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EAGAIN) {
      if (!watches_.count(e.in_w.get())) add_watch(e.in_w.get(), EPOLLOUT, Kind::kStdin, e.id);
      return;
    }
    if (n < 0 && errno == EINTR) continue;
    e.inbuf.clear();  // EPIPE: the process closed its stdin
    break;
  }
  if (e.inbuf.size() < kStdinLowWater) resume_input_of(e);
  if (e.in_w && e.inbuf.empty()) {
    del_watch(e.in_w.get());
    if (e.in_eof) e.in_w.reset();
  }
}

void Server::on_stdin_writable(uint64_t eid) {
  auto it = execs_.find(eid);
  if (it != execs_.end()) pump_stdin(*it->second);
}

void Server::on_timer(uint64_t eid) {
  auto it = execs_.find(eid);
  if (it == execs_.end()) return;
  Exec& e = *it->second;
  uint64_t ticks;
  (void)!::read(e.timer.get(), &ticks, sizeof ticks);
  del_watch(e.timer.get());
  e.timer.reset();
  if (e.exited || e.pid <= 0) return;
  if (!e.orphaned) e.timed_out = true;  // else: the hangup's grace is over
  ::kill(-e.pid, SIGKILL);  // the exec's whole process group
  ::kill(e.pid, SIGKILL);
}

void Server::reap() {
  // The box's single reaper (we are its PID 1): every exit lands here, is
  // matched to its exec record, or is an orphan and simply disappears.
  for (;;) {
    int st;
    pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (auto& [id, e] : execs_) {
      if (e->pid == pid && !e->exited) {
        e->exited = true;
        e->status = ExitStatus::from_wait_status(st);
        maybe_finish(*e);
        break;
      }
    }
  }
}

void Server::maybe_finish(Exec& e) {
  if (!e.exited) return;
  // Everything the process wrote is already in the pipes: drain what is
  // there and stop (a background grandchild holding them must not stall us).
  for (int stream : {1, 2}) {
    UniqueFd& fd = stream == 1 ? e.out_r : e.err_r;
    char buf[kChunk];
    while (fd) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n > 0) {
        deliver_output(e, stream, std::string_view(buf, static_cast<size_t>(n)));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    if (fd) {
      del_watch(fd.get());
      fd.reset();
    }
  }
  finish(e);
}

void Server::finish(Exec& e) {
  uint64_t id = e.id;
  finished_[id] = e.status;
  finished_timed_out_[id] = e.timed_out;
  while (finished_.size() > kFinishedKept) {
    finished_timed_out_.erase(finished_.begin()->first);
    finished_.erase(finished_.begin());
  }
  Json m = exit_message(id, e.status, e.timed_out);
  if (!e.error.empty()) m["error"] = e.error;
  if (e.is_main) {
    main_done_ = true;
    main_status_ = e.status;
    for (auto& [sid, s] : sessions_)
      if (s->attached) send(*s, m);
  }
  uint64_t sid = e.is_main ? 0 : e.session;
  if (e.in_w) del_watch(e.in_w.get());
  if (e.timer) del_watch(e.timer.get());
  execs_.erase(id);
  // An exec session carries one process: once its exit is delivered the
  // agent hangs up itself, so per-session fds are gone by the time the
  // client has read the exit (no lingering until the client's close).
  if (auto it = sessions_.find(sid); sid && it != sessions_.end()) {
    Session& s = *it->second;
    s.exec = 0;
    s.close_when_flushed = true;
    send(s, m);  // closes the session once flushed
  }
}

void Server::send(Session& s, const Json& m) {
  proto::encode_into(s.out, m);
  if (s.corked) return;  // on_session flushes after the batch
  flush(s);
  if (s.close_when_flushed && s.out.empty()) close_session(s.id);
}

void Server::flush(Session& s) {
  while (!s.out.empty()) {
    ssize_t n = ::send(s.fd.get(), s.out.data(), s.out.size(), MSG_NOSIGNAL);
    if (n > 0) {
      s.out.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!s.writing) {
        s.writing = true;
        mod_watch(s.fd.get(), session_events(s));
      }
      return;
    }
    s.out.clear();  // the peer is gone; the read side will notice
    return;
  }
  if (s.writing) {
    s.writing = false;
    mod_watch(s.fd.get(), session_events(s));
    // Resume output that was paused for this session.
    for (auto& [id, e] : execs_) {
      if (e->session != s.id) continue;
      if (e->out_r) mod_watch(e->out_r.get(), EPOLLIN);
      if (e->err_r) mod_watch(e->err_r.get(), EPOLLIN);
    }
  }
}

void Server::close_session(uint64_t sid) {
  auto it = sessions_.find(sid);
  if (it == sessions_.end()) return;
  Session& s = *it->second;
  // An exec whose client went away (a killed `cubby exec`, what
  // subprocess.run(timeout=) does) has nobody to report to: it is hung up,
  // as a terminal's would be, and its process group is killed after a
  // grace. Detached execs have no session and are not touched; the status
  // stays readable (exec_status) either way.
  for (auto& [id, e] : execs_) {
    if (e->session != sid) continue;
    e->session = 0;
    if (e->pid > 0 && !e->exited && !e->is_main) {
      ::kill(-e->pid, SIGHUP);
      ::kill(-e->pid, SIGCONT);
      e->orphaned = true;
      bool watched = static_cast<bool>(e->timer);
      arm_timer(e->timer, kOrphanGraceMs);  // also replaces a longer --timeout
      if (!watched) add_watch(e->timer.get(), EPOLLIN, Kind::kTimer, e->id);
    }
    e->in_eof = true;
    if (e->out_r) mod_watch(e->out_r.get(), EPOLLIN);
    if (e->err_r) mod_watch(e->err_r.get(), EPOLLIN);
    pump_stdin(*e);
  }
  if (s.attached && main_started_) {
    auto m = execs_.find(main_id_);
    // The workload's terminal stays open for the next `cubby attach`.
    if (m != execs_.end() && !m->second->tty) {
      m->second->in_eof = true;
      pump_stdin(*m->second);
    }
  }
  del_watch(s.fd.get());
  sessions_.erase(it);
}

void Server::shutdown_and_flush() {
  // The workload is done: end everything else in the box (we are PID 1, so
  // kill(-1) reaches every other process of the namespace), then hand the
  // last frames to the kernel before exiting.
  ::kill(-1, SIGKILL);
  for (auto& [sid, s] : sessions_) {
    if (s->out.empty()) continue;
    int fd = s->fd.get();
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{2, 0};  // backstop for a client that stopped reading
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (!s->out.empty()) {
      ssize_t n = ::send(fd, s->out.data(), s->out.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      s->out.erase(0, static_cast<size_t>(n));
    }
  }
}

}  // namespace cubby::agent
