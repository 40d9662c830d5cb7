// cubby-runc: a runc-compatible OCI runtime over libcubby (SPEC §4 "OCI
// runtime"). The command line is runc's, as containerd-shim-runc-v2 and
// go-runc drive it; each verb is a translation to cubby Runtime calls on
// the box that holds the container (see state.h for the state dir and
// relay.h for what the pid file holds and why).
//
// Errors: one line on stderr and, with --log, one record in the log file
// ({"level":"error","msg":...,"time":...} with --log-format json, which
// containerd reads back to tell its caller why), exit status 1.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"
#include "oci/box_options.h"
#include "oci/console.h"
#include "oci/hooks.h"
#include "oci/relay.h"
#include "oci/spec.h"
#include "oci/state.h"
#include "oci/stats.h"
#include "runtime/runtime.h"
#include "sandbox/cgroup.h"

using namespace cubby;
using namespace cubby::oci;
using nlohmann::json;

namespace {

struct Globals {
  std::string root = "/run/cubby-runc";
  std::string log_path;
  std::string log_format = "text";
  bool debug = false;
  bool systemd_cgroup = false;
};
Globals g;

std::string now_nano() {
  // RFC 3339 with nanoseconds, as logrus writes it for runc.
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  ::gmtime_r(&ts.tv_sec, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[96];
  std::snprintf(out, sizeof out, "%s.%09ldZ", buf, ts.tv_nsec);
  return out;
}

// One record in --log (runc's logrus formats: json or text).
void log_line(const std::string& level, const std::string& msg) {
  if (g.log_path.empty()) return;
  std::string line;
  if (g.log_format == "json") {
    line = json{{"level", level}, {"msg", msg}, {"time", now_nano()}}.dump() + "\n";
  } else {
    line = "time=\"" + now_nano() + "\" level=" + level + " msg=" + json(msg).dump() + "\n";
  }
  UniqueFd fd(::open(g.log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (fd) (void)sys::write_all(fd.get(), line.data(), line.size());
}

[[noreturn]] void die(const std::string& msg) {
  log_line("error", msg);
  std::string line = "cubby-runc: " + msg + "\n";
  (void)!::write(2, line.data(), line.size());
  std::exit(1);
}
template <typename T>
T check(Result<T> r) {
  if (!r) die(r.error().message());
  return std::move(*r);
}
void check(Result<void> r) {
  if (!r) die(r.error().message());
}
void debug(const std::string& msg) {
  if (g.debug) log_line("debug", msg);
}

Runtime open_runtime(const StateDir& dir) {
  check(mkdir_p(dir.root(), 0700));
  return check(Runtime::open({.home = dir.home(), .bin_dir = ""}));
}

int parse_signal(const std::string& s) {
  std::string n = s;
  if (n.rfind("SIG", 0) == 0) n = n.substr(3);
  if (!n.empty() && std::all_of(n.begin(), n.end(), ::isdigit)) {
    int v = std::atoi(n.c_str());
    if (v > 0 && v < NSIG) return v;
  }
  for (int i = 1; i < NSIG; ++i)
    if (const char* a = sigabbrev_np(i); a && n == a) return i;
  die("invalid signal \"" + s + "\"");
}

// Whether a running container is paused: read from its box's cgroup or
// its vm shim's marker, so `state` and `list` need no runtime.
bool is_paused(const ContainerState& s) { return Runtime::box_paused(StateDir(g.root).home(), s.box); }

// runc's statuses: created, running, paused, stopped.
std::string oci_status(const ContainerState& s) {
  std::string st = status_of(s);
  return st == "running" && is_paused(s) ? "paused" : st;
}

// The OCI state (runtime.md "State"), as `state` prints it and hooks read
// it on stdin; `status` overrides the one read (create's hooks see "creating").
json state_json(const ContainerState& s, const std::string& status_override = "") {
  std::string status = status_override.empty() ? oci_status(s) : status_override;
  json j = {{"ociVersion", "1.0.2"}, {"id", s.id}, {"status", status}, {"bundle", s.bundle},
            {"rootfs", s.bundle + "/rootfs"}, {"created", s.created}, {"owner", ""}};
  j["pid"] = status == "stopped" ? 0 : s.pid;
  if (!s.annotations.empty()) j["annotations"] = s.annotations;
  return j;
}

void write_pid_file(const std::string& path, pid_t pid) {
  if (path.empty()) return;
  check(write_file_atomic(path, std::to_string(pid), 0644));
}

// The box's PID 1 (its agent), whose namespaces the container-namespace
// hooks join (hooks.h).
struct ContainerInitFd {
  UniqueFd pidfd;
  pid_t pid = 0;
  ContainerInit get() const { return {pidfd.get(), pid}; }
};
Result<ContainerInitFd> container_init(const StateDir& dir, const ContainerState& s) {
  auto rt = CUBBY_TRY(Runtime::open({.home = dir.home(), .bin_dir = ""}));
  ContainerInitFd out;
  out.pid = CUBBY_TRY(rt.init_pid(s.box));
  out.pidfd = CUBBY_TRY(sys::pidfd_open(out.pid));
  return out;
}

void warn_all(const std::vector<std::string>& failures) {
  for (const auto& f : failures) log_line("warning", f);
}

// Ends the container's relay if it lives (SIGKILL), and so its tethered box.
void end_relay(const ContainerState& s) {
  if (auto pfd = sys::pidfd_open(s.pid); pfd && relay_alive(s)) {
    (void)sys::pidfd_send_signal(pfd->get(), SIGKILL);
    (void)sys::wait_readable(pfd->get(), std::chrono::seconds(30));  // backstop
  }
}

// What delete does (and a failed create, so nothing is left): ends the
// relay (and with it the tethered box) if it lives, removes the box and the
// state, then runs the poststop hooks (their failures are warnings).
Result<void> destroy(StateDir& dir, const ContainerState& s) {
  std::string st = status_of(s);
  if (st != "stopped" && is_paused(s)) {
    // Frozen processes would hold their SIGKILL until thawed.
    if (auto cg = sandbox::Cgroup::open_existing(s.box); cg && *cg) (void)(*cg)->freeze(sandbox::Leaf::kWorkload, false);
  }
  // created (or running with --force): end the relay, and with it the tether.
  if (st != "stopped") end_relay(s);
  auto rt = open_runtime(dir);
  if (auto r = rt.remove(s.box, /*force=*/true); !r && r.error().kind() != ErrorKind::kNotFound) return fail(r.error());
  CUBBY_TRYV(dir.remove(s.id));
  warn_all(run_hooks_warning("poststop", s.hooks.poststop, state_json(s, "stopped")));
  return {};
}

// create's hooks, once the box is up and held (hooks.h): prestart and
// createRuntime in the runtime's namespaces, createContainer in the box's.
Result<void> run_create_hooks(const StateDir& dir, const ContainerState& s) {
  const json state = state_json(s, "creating");
  CUBBY_TRYV(run_hooks("prestart", s.hooks.prestart, state));
  CUBBY_TRYV(run_hooks("createRuntime", s.hooks.create_runtime, state));
  if (!s.hooks.create_container.empty()) {
    auto in = CUBBY_TRY(container_init(dir, s));
    CUBBY_TRYV(run_hooks("createContainer", s.hooks.create_container, state, in.get()));
  }
  return {};
}

// ---- verbs ----

int cmd_create(const std::string& id, std::string bundle, const std::string& pid_file, const std::string& console) {
  StateDir dir(g.root);
  check(check_id(id));
  if (bundle.empty()) bundle = ".";
  char real[PATH_MAX];
  if (!::realpath(bundle.c_str(), real)) die(Error::sys("bundle " + bundle).message());
  bundle = real;
  Spec spec = check(load_spec(bundle));
  if (spec.process.terminal && console.empty()) die("config.json: process.terminal is true but no --console-socket was given");
  if (!spec.process.terminal && !console.empty()) die("--console-socket was given but config.json's process.terminal is false");
  BoxOptions bo = check(box_options(spec));
  for (const auto& w : bo.warnings) log_line("warning", w);
  check(dir.reserve(id));
  UniqueFd slave;
  if (spec.process.terminal) {
    auto s = send_console(console, spec.process.console_size);
    if (!s) {
      (void)dir.remove(id);
      die(s.error().message());
    }
    slave = std::move(*s);
  }
  auto [rd, wr] = check(sys::make_pipe());
  pid_t pid = ::fork();
  if (pid < 0) {
    (void)dir.remove(id);
    die(Error::sys("fork the relay").message());
  }
  if (pid == 0) {
    rd.reset();
    // Its own process group, so a terminal's signals to `create` (when a
    // person runs it) do not reach the container; with a console, its own
    // session on it, so a resize of the master reaches it as SIGWINCH.
    if (slave) {
      if (!take_terminal(slave.get())) {
        std::string m = "error " + Error::sys("take the console as the controlling terminal").message() + "\n";
        (void)!::write(wr.get(), m.data(), m.size());
        std::exit(1);
      }
    } else {
      ::setpgid(0, 0);
    }
    std::exit(run_relay(dir, id, spec, bo, wr.get()));
  }
  wr.reset();
  slave.reset();
  std::string out = check(sys::read_all(rd.get(), 1 << 16));
  if (out.rfind("ok ", 0) != 0) {
    // The relay failed before the box was started; reap it (it is our
    // child until we exit) and leave nothing behind.
    int st;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    (void)dir.remove(id);
    if (out.rfind("error ", 0) == 0) die(out.substr(6, out.find_last_not_of('\n') - 5));
    die("the relay exited before starting the container");
  }
  ContainerState s;
  s.id = id;
  s.box = out.substr(3, out.find('\n') - 3);
  s.bundle = bundle;
  s.pid = pid;
  s.pid_start = check(process_start_time(pid));
  s.created = now_rfc3339();
  s.annotations = spec.annotations;
  s.hooks = spec.hooks;
  check(dir.save(s));
  if (auto h = run_create_hooks(dir, s); !h) {
    // The spec: a failing prestart, createRuntime or createContainer hook
    // fails create, and the container is destroyed as delete would.
    if (auto d = destroy(dir, s); !d) log_line("warning", "clean up after the failed hook: " + d.error().message());
    die(h.error().message());
  }
  write_pid_file(pid_file, pid);
  debug("created " + id + " as box " + s.box + ", relay pid " + std::to_string(pid));
  return 0;
}

int cmd_start(const std::string& id) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  std::string st = status_of(s);
  if (st != "created") die("cannot start a container that is " + st);
  if (!s.hooks.start_container.empty()) {
    auto hooked = [&]() -> Result<void> {
      auto in = CUBBY_TRY(container_init(dir, s));
      return run_hooks("startContainer", s.hooks.start_container, state_json(s), in.get());
    }();
    if (!hooked) {
      // The spec: start fails and the container is stopped (its relay
      // ended, and the tethered box with it); delete removes it.
      end_relay(s);
      die(hooked.error().message());
    }
  }
  s.started = true;
  check(dir.save(s));
  UniqueFd fifo(::open(dir.start_fifo(id).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fifo) die(Error::sys("start " + id + ": its relay is gone").message());
  char b = 's';
  check(sys::write_all(fifo.get(), &b, 1));
  // The relay releases the workload on that byte; poststart's failures are
  // warnings (the spec), the container runs on.
  warn_all(run_hooks_warning("poststart", s.hooks.poststart, state_json(s, "running")));
  return 0;
}

int cmd_state(const std::string& id) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  std::cout << state_json(s).dump(2) << "\n";
  return 0;
}

int cmd_kill(const std::string& id, const std::string& sig_s, bool all) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  int sig = parse_signal(sig_s);
  std::string st = status_of(s);
  // runc's words: containerd's shim (checkKillError) matches "container not
  // running" to treat a kill of an ended container as done, not as a failure.
  if (st == "stopped") die("container not running: \"" + id + "\" has stopped");
  if (st == "created") {
    // The workload has not started: the relay stands for it. Its end (by
    // any signal that ends it) drops the tether, and the shim stops the box.
    auto pfd = check(sys::pidfd_open(s.pid));
    if (!relay_alive(s)) die("container not running: \"" + id + "\" has stopped");
    check(sys::pidfd_send_signal(pfd.get(), sig));
    return 0;
  }
  auto rt = open_runtime(dir);
  // (A paused container's SIGKILL lands: Runtime::kill and the shim's kill thaw it.)
  if (all) {
    if (sig != SIGKILL) die("kill --all: only SIGKILL is supported by cubby-runc yet");
    check(rt.stop(s.box, std::chrono::seconds(0)));
    return 0;
  }
  check(rt.kill(s.box, sig));
  return 0;
}

int cmd_pause(const std::string& id, bool pause) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  std::string st = oci_status(s);
  if (pause && st != "running") die("cannot pause a container that is " + st);
  if (!pause && st != "paused") die("cannot resume a container that is " + st + " (not paused)");
  auto rt = open_runtime(dir);
  check(rt.pause(s.box, pause));
  return 0;
}

// `update --resources FILE|-`, what containerd's shim calls: the memory,
// pids and CPU quota limits cubby's cgroups take (as config.json's).
int cmd_update(const std::string& id, const std::string& resources) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  if (resources.empty()) die("update: only --resources is supported by cubby-runc yet");
  std::string text = resources == "-" ? check(sys::read_all(0, 1 << 20)) : check(read_file(resources, 1 << 20));
  Resources r = check(parse_resources(text));
  std::string st = oci_status(s);
  if (st != "running" && st != "paused") die("cannot update a container that is " + st);
  sandbox::CgroupLimits l;
  if (r.memory_limit && *r.memory_limit > 0) l.memory_bytes = *r.memory_limit;
  if (r.memory_swap && *r.memory_swap != -1 && (!r.memory_limit || *r.memory_swap != *r.memory_limit))
    die("update: a swap limit other than the memory limit is not supported by cubby-runc yet");
  if (r.pids_limit && *r.pids_limit > 0) l.pids_max = *r.pids_limit;
  l.cpu_shares = r.cpu_shares;
  if (r.cpu_quota && *r.cpu_quota > 0) {
    uint64_t period = r.cpu_period.value_or(100000);
    if (period != 100000) die("update: only a quota over a 100000 us period is supported by cubby-runc yet");
    l.cpus = static_cast<double>(*r.cpu_quota) / 100000.0;
  }
  auto rt = open_runtime(dir);
  check(rt.update_limits(s.box, l));
  return 0;
}

// `events --stats`: one stats record; `events`: one every --interval until
// the container ends (its relay's pidfd: the interval is the only timer).
int cmd_events(const std::string& id, bool stats, const std::string& interval) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  if (oci_status(s) == "stopped") die("container not running: \"" + id + "\" has stopped");
  if (stats) {
    std::cout << check(stats_event(id, s.box)).dump() << std::endl;
    return 0;
  }
  long ms = 5000;
  {
    // Go durations as runc takes them: "5s", "500ms", "1m".
    char* end = nullptr;
    double v = std::strtod(interval.c_str(), &end);
    std::string unit = end ? end : "";
    if (!(v > 0) || (unit != "s" && unit != "ms" && unit != "m")) die("invalid --interval \"" + interval + "\"");
    ms = static_cast<long>(unit == "ms" ? v : unit == "s" ? v * 1000 : v * 60000);
    if (ms < 1) ms = 1;
  }
  auto pfd = check(sys::pidfd_open(s.pid));
  for (;;) {
    if (!relay_alive(s)) return 0;
    auto ev = stats_event(id, s.box);
    if (!ev) return 0;  // ended between the check and the read
    std::cout << ev->dump() << std::endl;
    if (check(sys::wait_readable(pfd.get(), std::chrono::milliseconds(ms)))) return 0;
  }
}

int cmd_delete(const std::string& id, bool force) {
  StateDir dir(g.root);
  auto loaded = dir.load(id);
  if (!loaded) {
    if (force && loaded.error().kind() == ErrorKind::kNotFound) return 0;
    die(loaded.error().message());
  }
  auto s = *loaded;
  std::string st = status_of(s);
  if (st == "running" && !force) die("cannot delete container \"" + id + "\" that is running: kill it first or use --force");
  check(destroy(dir, s));
  return 0;
}

// An exec's pid, like the init's, must be a process the caller can reap and
// whose status is the exec's (relay.h): a forked child that runs the exec
// in the box with the caller's stdio and exits with its status. It is
// written to --pid-file at once; an exec that cannot start (127, 126) is
// that process's status, which containerd reports.
int cmd_exec(const std::string& id, const std::string& process_file, const std::string& pid_file, bool detach,
             const std::string& console) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  if (status_of(s) != "running") die("cannot exec in a container that is " + status_of(s));
  if (process_file.empty()) die("exec: --process is required (commands on the command line are not supported by cubby-runc yet)");
  Process p = check(parse_process(check(read_file(process_file, 1 << 20))));
  if (p.terminal && console.empty()) die("process.json: process.terminal is true but no --console-socket was given");
  if (!p.terminal && !console.empty()) die("--console-socket was given but the process's terminal is false");
  // The container's own rlimits, which the exec inherits from the agent.
  Spec spec = check(load_spec(s.bundle));
  ExecRequest req = check(exec_request(p, spec.process));
  UniqueFd slave;
  if (p.terminal) slave = check(send_console(console, p.console_size));
  pid_t pid = ::fork();
  if (pid < 0) die(Error::sys("fork the exec relay").message());
  if (pid == 0) {
    if (slave) {
      if (!take_terminal(slave.get())) std::exit(125);
    } else {
      ::setpgid(0, 0);
    }
    log::set_level(log::Level::kError);
    auto rt = Runtime::open({.home = dir.home(), .bin_dir = ""});
    if (!rt) std::exit(125);
    auto r = rt->exec(s.box, req, StdioFds{.in = 0, .out = 1, .err = 2, .tty = req.tty, .detach_keys = false});
    if (!r) {
      std::string m = "cubby-runc exec: " + r.error().message() + "\n";
      (void)!::write(2, m.data(), m.size());
      std::exit(125);
    }
    if (!r->error.empty()) {
      std::string m = "cubby-runc exec: " + r->error + "\n";
      (void)!::write(2, m.data(), m.size());
    }
    std::exit(r->code);
  }
  slave.reset();
  write_pid_file(pid_file, pid);
  if (detach) return 0;
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die(Error::sys("wait for the exec").message());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

// The host pids of the container's processes: its box's workload leaf
// (the main process and every exec; not the box's agent).
int cmd_ps(const std::string& id, const std::string& format) {
  StateDir dir(g.root);
  auto s = check(dir.load(id));
  json pids = json::array();
  if (status_of(s) != "stopped") {
    auto cg = check(sandbox::Cgroup::open_existing(s.box));
    if (cg && !cg->paths().empty()) {
      std::string procs = read_file(cg->paths()[0] + "/workload/cgroup.procs").value_or("");
      std::istringstream in(procs);
      long pid;
      while (in >> pid) pids.push_back(pid);
    }
  }
  if (format == "json") {
    std::cout << pids.dump() << "\n";
  } else {
    std::cout << "PID\n";
    for (const auto& p : pids) std::cout << p.get<long>() << "\n";
  }
  return 0;
}

int cmd_list(const std::string& format, bool quiet) {
  StateDir dir(g.root);
  json arr = json::array();
  for (const auto& id : dir.ids())
    if (auto s = dir.load(id)) arr.push_back(state_json(*s));
  if (quiet) {
    for (const auto& c : arr) std::cout << c["id"].get<std::string>() << "\n";
  } else if (format == "json") {
    std::cout << arr.dump() << "\n";
  } else {
    std::printf("%-20s %-8s %-10s %-40s %s\n", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
    for (const auto& c : arr)
      std::printf("%-20s %-8d %-10s %-40s %s\n", c["id"].get<std::string>().c_str(), c["pid"].get<int>(),
                  c["status"].get<std::string>().c_str(), c["bundle"].get<std::string>().c_str(),
                  c["created"].get<std::string>().c_str());
  }
  return 0;
}

int cmd_features() {
  json f = {{"ociVersionMin", "1.0.0"},
            {"ociVersionMax", "1.0.2"},
            {"hooks", {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"}},
            {"mountOptions", {"bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"}},
            {"linux",
             {{"namespaces", supported_namespaces()},
              {"capabilities", capability_names()},
              {"cgroup", {{"v1", true}, {"v2", true}, {"systemd", false}, {"systemdUser", false}}},
              {"seccomp",
               {{"enabled", true},
                {"actions", {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                             "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"}},
                {"operators", {"SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                               "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"}},
                {"supportedFlags", {"SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"}}}},
              {"apparmor", {{"enabled", false}}},
              {"selinux", {{"enabled", false}}}}},
            {"annotations", {{"io.cubby.isolation", "sandbox|vm"}}}};
  std::cout << f.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cubby-runc: an OCI runtime (runc's command line) over cubby's sandbox boxes"};
  app.set_version_flag("-v,--version",
                       std::string("runc version ") + CUBBY_VERSION + "-cubby\ncommit: cubby-" CUBBY_VERSION +
                           "\nspec: 1.0.2");
  app.add_option("--root", g.root, "state directory");
  app.add_option("--log", g.log_path, "log file");
  app.add_option("--log-format", g.log_format, "text or json");
  app.add_flag("--debug", g.debug, "debug records in the log");
  app.add_flag("--systemd-cgroup", g.systemd_cgroup, "refused: cubby manages its own cgroups");
  std::string criu, rootless;
  app.add_option("--criu", criu)->group("");
  app.add_option("--rootless", rootless)->group("");
  app.require_subcommand(1);
  app.fallthrough();

  std::string id, bundle, pid_file, console, sig = "SIGTERM", format = "table";
  bool all = false, force = false, quiet = false, no_pivot = false, no_new_keyring = false;
  auto* create = app.add_subcommand("create", "create a container (its process waits for start)");
  create->add_option("-b,--bundle", bundle);
  create->add_option("--pid-file", pid_file);
  create->add_option("--console-socket", console);
  create->add_flag("--no-pivot", no_pivot);
  create->add_flag("--no-new-keyring", no_new_keyring);
  create->add_option("id", id)->required();
  auto* start = app.add_subcommand("start", "start a created container");
  start->add_option("id", id)->required();
  auto* state = app.add_subcommand("state", "the container's OCI state as JSON");
  state->add_option("id", id)->required();
  auto* kill = app.add_subcommand("kill", "signal the container's process");
  kill->add_flag("-a,--all", all);
  kill->add_option("id", id)->required();
  kill->add_option("signal", sig);
  auto* del = app.add_subcommand("delete", "delete a container");
  del->add_flag("-f,--force", force);
  del->add_option("id", id)->required();
  auto* list = app.add_subcommand("list", "list containers");
  list->add_option("-f,--format", format);
  list->add_flag("-q,--quiet", quiet);
  auto* features = app.add_subcommand("features", "what this runtime supports, as JSON");
  std::string process_file;
  bool detach = false;
  auto* exec = app.add_subcommand("exec", "run a process in a running container");
  exec->add_option("-p,--process", process_file);
  exec->add_flag("-d,--detach", detach);
  exec->add_option("--pid-file", pid_file);
  exec->add_option("--console-socket", console);
  exec->add_option("id", id)->required();
  auto* ps = app.add_subcommand("ps", "the container's processes");
  ps->add_option("-f,--format", format);
  ps->add_option("id", id)->required();
  auto* pause = app.add_subcommand("pause", "freeze the container's processes");
  pause->add_option("id", id)->required();
  auto* resume = app.add_subcommand("resume", "thaw a paused container");
  resume->add_option("id", id)->required();
  std::string resources, interval = "5s";
  auto* update = app.add_subcommand("update", "new resource limits for a running container");
  update->add_option("-r,--resources", resources, "linux.resources JSON: a file, or - for stdin");
  update->add_option("id", id)->required();
  bool stats = false;
  auto* events = app.add_subcommand("events", "the container's cgroup stats as JSON");
  events->add_flag("--stats", stats, "one record, then exit");
  events->add_option("--interval", interval);
  events->add_option("id", id)->required();
  // runc's other verbs: one clear refusal each, never "unknown command".
  std::vector<CLI::App*> refused;
  std::vector<std::string> ignored_args;
  for (const char* v : {"checkpoint", "restore", "run", "spec"}) {
    auto* c = app.add_subcommand(v, "not supported by cubby-runc yet");
    c->add_option("args", ignored_args);
    c->allow_extras();
    c->prefix_command();
    refused.push_back(c);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string m = e.what();
    std::replace(m.begin(), m.end(), '\n', ' ');
    die(m);
  }
  if (g.log_format != "json" && g.log_format != "text") {
    std::string f = g.log_format;
    g.log_format = "text";
    die("invalid --log-format \"" + f + "\" (want text or json)");
  }
  if (g.systemd_cgroup)
    die("--systemd-cgroup is not supported: cubby manages its boxes' cgroups itself (cgroupfs), and there is no "
        "systemd cgroup driver in cubby-runc");
  if (!g.root.empty() && g.root[0] != '/') die("--root must be an absolute path");
  if (create->parsed()) return cmd_create(id, bundle, pid_file, console);
  if (start->parsed()) return cmd_start(id);
  if (state->parsed()) return cmd_state(id);
  if (kill->parsed()) return cmd_kill(id, sig, all);
  if (del->parsed()) return cmd_delete(id, force);
  if (list->parsed()) return cmd_list(format, quiet);
  if (features->parsed()) return cmd_features();
  if (exec->parsed()) return cmd_exec(id, process_file, pid_file, detach, console);
  if (ps->parsed()) return cmd_ps(id, format);
  if (pause->parsed()) return cmd_pause(id, true);
  if (resume->parsed()) return cmd_pause(id, false);
  if (update->parsed()) return cmd_update(id, resources);
  if (events->parsed()) return cmd_events(id, stats, interval);
  for (auto* c : refused)
    if (c->parsed()) die("\"" + c->get_name() + "\" is not supported by cubby-runc yet");
  die("no command");
}
