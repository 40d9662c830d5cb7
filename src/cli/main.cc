// cubby: the command-line front end. A thin layer over cubby::Runtime: it
// parses arguments, calls one library function per verb, and maps the
// outcome to Docker's exit codes (the workload's code; 125 when cubby
// itself fails; 126/127 when the command cannot run).
//
// Bad input of any kind gives exactly one line on stderr, "cubby VERB: what
// is wrong", and exit code 125, before anything is changed: flag values are
// parsed and checked here (not by CLI11, whose messages span lines or print
// numeric ranges), and CLI11's own parse errors are rewritten into one line.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "cli/args.h"
#include "cli/format.h"
#include "image/archive.h"
#include "image/fetch_client.h"
#include "image/helper_process.h"
#include "image/registry_config.h"
#include "proto/messages.h"
#include "runtime/box_filter.h"
#include "runtime/commit.h"
#include "runtime/runtime.h"

using namespace cubby;
using nlohmann::json;

namespace {

constexpr int kCubbyError = 125;

// "cubby run", "cubby rm", ...: the prefix of every error line.
std::string g_cmd = "cubby";

// Every error is exactly one line on stderr: "cubby VERB: what went wrong".
void error_line(const std::string& msg) {
  std::string line = g_cmd + ": " + cli::one_line(msg) + "\n";
  (void)!::write(2, line.data(), line.size());
}

[[noreturn]] void die(const std::string& msg) {
  error_line(msg);
  std::exit(kCubbyError);
}
[[noreturn]] void die(const Error& e) { die(e.message()); }

template <typename T>
T check(Result<T> r) {
  if (!r) die(r.error());
  return std::move(*r);
}
inline void check(Result<void> r) {
  if (!r) die(r.error());
}

struct Global {
  std::string home;
};

Runtime open_runtime(const Global& g) {
  store::tune_sqlite_for_short_process();  // before SQLite is first used
  return check(Runtime::open({g.home, ""}));
}

// A command's CLI11 app plus what CLI11 is not asked to enforce (so that the
// messages stay ours): required positionals, and the usage line they quote.
struct Command {
  CLI::App app;
  std::string usage;  // "cubby rm [OPTIONS] BOX..."
  std::vector<std::pair<CLI::Option*, std::string>> required;

  Command(const std::string& description, std::string usage_args)
      : app(description, g_cmd), usage("cubby " + std::move(usage_args)) {
    app.allow_extras();
  }
  // A positional that must be given; `what` is its name in messages.
  template <typename T>
  CLI::Option* positional(const std::string& what, T& into, const std::string& help) {
    auto* o = app.add_option(what, into, help)->required();
    required.emplace_back(o, what);
    return o;
  }

  [[noreturn]] void missing(const std::string& what) const { die("missing " + what + " (usage: " + usage + ")"); }

  // Parses `args`; on --help prints the help and exits 0; on anything wrong
  // prints one line and exits 125.
  void parse(const std::vector<std::string>& args) {
    for (const auto& a : args) {
      if (a == "--") break;
      // CLI11 would take the next word as the value of "--opt=".
      if (a.size() > 3 && a.rfind("--", 0) == 0 && a.find('=') == a.size() - 1)
        die(a.substr(0, a.size() - 1) + ": empty value");
    }
    // A single-valued option given twice: the last one wins, as in Docker.
    for (auto* o : app.get_options())
      if (!o->get_positional() && o->get_items_expected_max() == 1)
        o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    std::vector<std::string> rev(args.rbegin(), args.rend());
    try {
      app.parse(rev);
    } catch (const CLI::CallForHelp&) {
      std::cout << app.help();
      std::exit(0);
    } catch (const CLI::RequiredError& e) {
      for (auto& [opt, what] : required)
        if (opt->count() == 0) missing(what);
      die(e.what());
    } catch (const CLI::ArgumentMismatch& e) {
      // "--memory: 1 required TEXT missing"; else e.g. a flag given twice.
      std::string what = e.what();
      if (what.find(" required ") != std::string::npos && what.find(" missing") != std::string::npos &&
          what.find(':') != std::string::npos)
        die(what.substr(0, what.find(':')) + " needs a value");
      die(what);
    } catch (const CLI::ParseError& e) {
      die(e.what());
    }
    auto extra = app.remaining();
    if (!extra.empty()) {
      const std::string& x = extra.front();
      if (x.size() > 1 && x[0] == '-')
        die("unknown flag " + x.substr(0, x.find('=')) + " (see '" + g_cmd + " --help')");
      die("unexpected argument \"" + x + "\" (usage: " + usage + ")");
    }
    for (auto& [opt, what] : required)
      if (opt->count() == 0) missing(what);
  }
};

// Options shared by run and create. Numbers are kept as text and parsed
// by us, so a bad value gets a clear message naming the flag.
struct BoxOpts {
  std::string name, workdir, user, network = "default", isolation, userns, memory, hostname, entrypoint;
  std::string cpus, pids;
  std::vector<std::string> env, publish, volumes, log_opts, allow_net, deny_net, add_hosts, dns;
  std::vector<std::string> env_files, labels, tmpfs;
  std::string restart, shm_size, pull = "missing";
  bool detach = false, rm = false, interactive = false, tty = false, read_only = false;
};

const std::set<std::string> kBoxValueOpts = {"-e", "--env", "-w", "--workdir", "-u", "--user", "--name",
                                             "-m", "--memory", "--cpus", "--network", "--isolation", "--userns",
                                             "--entrypoint", "--hostname", "-h", "--pids-limit",
                                             "-p", "--publish", "-v", "--volume", "--log-opt",
                                             "--env-file", "-l", "--label", "--restart",
                                             "--allow-net", "--deny-net", "--add-host", "--dns",
                                             "--tmpfs", "--shm-size", "--pull"};

// Repeatable options (-e) take one value per occurrence: with CLI11's
// default, "-e A=1 IMAGE" would swallow IMAGE into -e.
void add_box_options(CLI::App* c, BoxOpts& o, bool with_detach) {
  c->set_help_flag("--help", "Print this help and exit");  // -h is --hostname, as in Docker
  c->add_option("--name", o.name, "Name the box");
  c->add_option("-e,--env", o.env, "Set an environment variable (K=V, or K to copy it)")->allow_extra_args(false);
  c->add_option("-w,--workdir", o.workdir, "Working directory inside the box (absolute)");
  c->add_option("-u,--user", o.user, "User (name|uid[:group|gid])");
  c->add_option("-m,--memory", o.memory, "Memory limit (e.g. 512m, 1g; at least 6m)");
  c->add_option("--cpus", o.cpus, "CPU limit (e.g. 0.5)");
  c->add_option("--pids-limit", o.pids, "Maximum number of processes (default 2048; 0: no limit)");
  c->add_option("--network", o.network,
                "none | default (outbound through user-mode networking) | bridge (root: veth, bridge, NAT)");
  c->add_option("--allow-net", o.allow_net, "Let the box reach CIDR|NAME|*.NAME[:PORT] (names: --network default; repeatable)")
      ->allow_extra_args(false);
  c->add_option("--add-host", o.add_hosts, "Add NAME:IP to the box's /etc/hosts (repeatable)")->allow_extra_args(false);
  c->add_option("--dns", o.dns, "A DNS server for the box's /etc/resolv.conf (repeatable)")->allow_extra_args(false);
  c->add_option("--deny-net", o.deny_net, "Refuse the box CIDR[:PORT] or NAME|*.NAME (repeatable; the most specific rule wins)")
      ->allow_extra_args(false);
  c->add_option("--isolation", o.isolation, "auto | vm | sandbox (default: $CUBBY_ISOLATION, else config.json's \"isolation\", else auto)");
  c->add_option("--userns", o.userns,
                "auto | host (sandbox as root: auto, the default, gives the box host ids of its own; "
                "host maps box root to host root)");
  c->add_option("-h,--hostname", o.hostname, "Hostname inside the box");
  c->add_option("--entrypoint", o.entrypoint, "Override the image's entrypoint");
  c->add_option("-p,--publish", o.publish, "Publish a port: [IP:][HOST_PORT:]GUEST_PORT[/tcp|udp]")
      ->allow_extra_args(false);
  c->add_option("-v,--volume", o.volumes, "Bind-mount a host path: SRC:DST[:ro|rw] (SRC absolute and existing)")->allow_extra_args(false);
  c->add_option("--log-opt", o.log_opts,
                "Box log rotation, as Docker's json-file: max-size=SIZE (default 10m), max-file=N (default 2); "
                "repeatable or comma-separated")
      ->allow_extra_args(false);
  c->add_option("--env-file", o.env_files, "Read environment variables from a file (KEY=VALUE lines; -e wins)")
      ->allow_extra_args(false);
  c->add_option("-l,--label", o.labels, "Set a label on the box: KEY=VALUE (or KEY); shown by inspect, matched by ls --filter")
      ->allow_extra_args(false);
  c->add_option("--restart", o.restart,
                "Restart policy, carried out by the box's shim: no (default), always, unless-stopped (as always), "
                "on-failure[:N]; a stop or kill ends the box for good");
  c->add_flag("--read-only", o.read_only, "Mount the box's root filesystem read-only (tmpfs mounts and volumes stay writable)");
  c->add_option("--tmpfs", o.tmpfs,
                "Mount a tmpfs: PATH[:OPTIONS], options as Docker's (size=64m, mode=1777, exec, ro, uid=, gid=, ...; "
                "default noexec,nosuid,nodev; repeatable)")
      ->allow_extra_args(false);
  c->add_option("--shm-size", o.shm_size, "Size of /dev/shm (e.g. 256m; default 64m)");
  c->add_option("--pull", o.pull, "missing (default: pull an image not in the store) | never | always (pull first)");
  c->add_flag("--rm", o.rm, "Remove the box when it ends");
  c->add_flag("-i,--interactive", o.interactive, "Keep stdin open");
  c->add_flag("-t,--tty", o.tty, "Allocate a terminal (with -i: an interactive session)");
  if (with_detach) c->add_flag("-d,--detach", o.detach, "Run in the background and print the box id");
}

// -e K=V, or -e K (copied from our environment, dropped when unset).
std::vector<std::string> check_env(const std::vector<std::string>& env) {
  std::vector<std::string> out;
  for (const auto& e : env) {
    if (auto r = cli::check_env_var(e); !r) die(r.error());
    if (e.find('=') != std::string::npos) {
      out.push_back(e);
    } else if (const char* v = std::getenv(e.c_str())) {
      out.push_back(e + "=" + v);
    }
  }
  return out;
}

void check_workdir(const std::string& dir) {
  if (!dir.empty() && dir[0] != '/') die("--workdir: the working directory must be absolute: \"" + dir + "\"");
}

// An image reference, or an image id (full, "sha256:..." or a hex prefix).
void check_image_ref(const std::string& ref) {
  bool hex = !ref.empty() && ref.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (hex || ref.rfind("sha256:", 0) == 0) return;
  if (auto n = image::normalize_ref(ref); !n) die(n.error());
}

// --read-only, --tmpfs, --shm-size onto the runtime's BoxFs (checked again,
// whole, by Runtime::create; here so each message names its flag).
BoxFs to_box_fs(const BoxOpts& o) {
  BoxFs fs;
  fs.read_only = o.read_only;
  for (const auto& t : o.tmpfs) {
    size_t colon = t.find(':');
    // Docker's defaults for --tmpfs; the options given after them win
    // (mount(8)'s rule: "exec" undoes "noexec").
    TmpfsMount m{t.substr(0, colon), {"noexec", "nosuid", "nodev"}};
    if (colon != std::string::npos)
      for (size_t at = colon + 1; at <= t.size();) {
        size_t comma = std::min(t.find(',', at), t.size());
        std::string word = t.substr(at, comma - at);
        if (word.empty()) die("--tmpfs: empty option in \"" + cli::one_line(t) + "\"");
        m.options.push_back(word);
        at = comma + 1;
      }
    fs.tmpfs.push_back(std::move(m));
    if (auto c = check_box_fs(fs); !c) die("--tmpfs: " + c.error().message());
  }
  if (!o.shm_size.empty()) {
    auto n = parse_size(o.shm_size);
    if (!n) die("--shm-size: " + n.error().message());
    if (*n <= 0) die("--shm-size: the size must be positive");
    fs.shm_size = *n;
  }
  return fs;
}

CreateOptions to_create(const BoxOpts& o, const std::string& image, const std::vector<std::string>& cmd) {
  if (o.network != "none" && o.network != "default" && o.network != "bridge")
    die("--network: invalid value \"" + o.network + "\" (want none, default or bridge)");
  if (!o.isolation.empty() && o.isolation != "auto" && o.isolation != "sandbox" && o.isolation != "vm")
    die("--isolation: invalid value \"" + o.isolation + "\" (want auto, vm or sandbox)");
  if (!o.userns.empty() && o.userns != "auto" && o.userns != "host")
    die("--userns: invalid value \"" + o.userns + "\" (want auto or host)");
  auto pull = CreateOptions::parse_pull(o.pull);
  if (!pull) die("--pull: invalid value \"" + cli::one_line(o.pull) + "\" (want missing, never or always)");
  check_workdir(o.workdir);
  check_image_ref(image);
  CreateOptions c;
  c.pull = *pull;
  c.image = image;
  c.name = o.name;
  c.cmd = cmd;
  // Docker's order: the files' variables, then -e (a later one wins).
  std::vector<std::string> env;
  for (const auto& f : o.env_files) {
    auto text = read_file(f, 16u << 20);
    if (!text) die("--env-file: " + text.error().message());
    auto vars = cli::parse_env_file(*text, f);
    if (!vars) die("--env-file: " + vars.error().message());
    env.insert(env.end(), vars->begin(), vars->end());
  }
  env.insert(env.end(), o.env.begin(), o.env.end());
  c.env = check_env(env);
  for (const auto& l : o.labels) {
    std::string key = l.substr(0, l.find('='));
    if (key.empty()) die("--label: invalid label \"" + cli::one_line(l) + "\" (want KEY=VALUE or KEY)");
    c.labels[key] = l.find('=') == std::string::npos ? "" : l.substr(l.find('=') + 1);
  }
  c.publish = o.publish;
  c.allow_net = o.allow_net;
  c.deny_net = o.deny_net;
  c.add_hosts = o.add_hosts;
  c.dns = o.dns;
  c.volumes = o.volumes;
  c.cwd = o.workdir;
  c.user = o.user;
  c.network = o.network;
  c.isolation = o.isolation;
  c.userns = o.userns;
  c.hostname = o.hostname;
  c.auto_remove = o.rm;
  c.restart = o.restart;
  c.interactive = o.interactive;
  c.tty = o.tty;
  if (!o.entrypoint.empty()) c.entrypoint = std::vector<std::string>{o.entrypoint};
  if (!o.memory.empty()) {
    auto m = parse_size(o.memory);
    if (!m) die("--memory: " + m.error().message());
    c.memory = *m;
  }
  if (!o.cpus.empty()) {
    auto n = cli::parse_number(o.cpus);
    if (!n || *n < 0) die("--cpus: invalid value \"" + o.cpus + "\" (want a positive number of CPUs, e.g. 0.5 or 2)");
    if (*n > 0) c.cpus = *n;  // 0: no limit, as in Docker
  }
  if (!o.pids.empty()) {
    auto n = cli::parse_integer(o.pids);
    if (!n || *n < 0) die("--pids-limit: invalid value \"" + o.pids + "\" (want a positive whole number, or 0 for no limit)");
    c.pids = *n;  // 0: no limit; unset: the default (2048)
  }
  c.fs = to_box_fs(o);
  for (const auto& opt : o.log_opts) {
    for (size_t at = 0; at <= opt.size();) {
      size_t comma = std::min(opt.find(',', at), opt.size());
      std::string kv = opt.substr(at, comma - at);
      at = comma + 1;
      std::string key = kv.substr(0, kv.find('=')), value = kv.find('=') == std::string::npos ? "" : kv.substr(kv.find('=') + 1);
      if (key == "max-size") {
        auto m = parse_size(value);
        if (!m) die("--log-opt max-size: " + m.error().message());
        c.log_max_size = *m;
      } else if (key == "max-file") {
        auto n = cli::parse_integer(value);
        if (!n || *n < 1 || *n > 1000000) die("--log-opt max-file: invalid value \"" + value + "\" (want a whole number of files, at least 1)");
        c.log_max_files = static_cast<int>(*n);
      } else {
        die("--log-opt: unknown option \"" + cli::one_line(kv) + "\" (want max-size=SIZE or max-file=N)");
      }
    }
  }
  return c;
}

// SPEC §1: `--isolation auto` says on stderr, the first time, which backend
// it picked (and `inspect`/`info` say it every time).
void note_auto_isolation(Runtime& rt, const CreateOptions& opts) {
  if (rt.isolation_setting(opts.isolation).value_or("") != "auto") return;
  std::string marker = rt.home() + "/.isolation-auto-noted";
  if (::access(marker.c_str(), F_OK) == 0) return;
  auto choice = rt.auto_isolation();
  std::cerr << "cubby: --isolation auto chose " << choice.isolation << " (" << choice.why << ")\n";
  int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);
}

int cmd_run_or_create(const Global& g, const std::string& verb, const std::vector<std::string>& rest) {
  bool is_run = verb == "run";
  auto split = cli::split_at_command(rest, kBoxValueOpts);
  Command cmd(is_run ? "Create and start a box" : "Create a box", verb + " [OPTIONS] IMAGE [COMMAND [ARG...]]");
  BoxOpts o;
  std::string image;
  std::vector<std::string> shown_command;  // only for the help text: the split keeps it away from CLI11
  add_box_options(&cmd.app, o, is_run);
  cmd.positional("IMAGE", image, "Image reference or id");
  cmd.app.add_option("COMMAND", shown_command, "Command and arguments (default: the image's)");
  cmd.parse(split.options);
  if (o.detach && o.interactive && !o.tty) die("-d and -i cannot be combined (use -dit to attach later)");
  if (o.interactive && o.tty && !o.detach && !::isatty(0)) die("the input device is not a TTY (drop -t, or run from a terminal)");
  auto opts = to_create(o, image, split.command);
  auto rt = open_runtime(g);
  auto box = check(rt.create(opts));
  note_auto_isolation(rt, opts);
  if (!is_run) {
    std::cout << box.id << "\n";
    return 0;
  }
  if (o.detach) {
    auto s = rt.start(box.id, false);
    if (!s) {
      if (o.rm) (void)rt.remove(box.id, true);
      die(s.error());
    }
    if (s->ended && s->code != 0 && !s->error.empty()) {
      error_line(s->error);
      return s->code;
    }
    std::cout << box.id << "\n";
    return 0;
  }
  // A throwaway box (--rm) is tethered to this process: killed, it takes the box along.
  auto s = rt.start(box.id, /*hold=*/true, /*tether=*/o.rm);
  if (!s) {
    if (o.rm) (void)rt.remove(box.id, true);
    die(s.error());
  }
  if (s->ended) {
    if (!s->error.empty()) error_line(s->error);
    return s->code;
  }
  StdioFds io{o.interactive ? 0 : -1, 1, 2, true};
  io.tty = o.tty;
  auto r = check(rt.attach_and_wait(box.id, io));
  if (r.detached) return 0;
  if (!r.error.empty()) error_line(r.error);
  return r.code;
}

// `cubby shell [OPTS] [IMAGE]`: a throwaway box with an interactive login
// shell; removed when the shell ends unless --name keeps it.
int cmd_shell(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Open an interactive shell in a temporary box", "shell [OPTIONS] [IMAGE]");
  BoxOpts o;
  std::string image;
  add_box_options(&cmd.app, o, false);
  cmd.app.add_option("IMAGE", image, "Image (default: $CUBBY_SHELL_IMAGE, else busybox)");
  cmd.parse(rest);
  if (image.empty()) image = std::getenv("CUBBY_SHELL_IMAGE") ? std::getenv("CUBBY_SHELL_IMAGE") : "busybox";
  o.interactive = true;
  o.tty = ::isatty(0) != 0;
  o.rm = o.name.empty();
  auto opts = to_create(o, image, {"/bin/sh", "-l"});
  auto rt = open_runtime(g);
  auto box = check(rt.create(opts));
  note_auto_isolation(rt, opts);
  auto s = rt.start(box.id, /*hold=*/true, /*tether=*/o.rm);
  if (!s) {
    if (o.rm) (void)rt.remove(box.id, true);
    die(s.error());
  }
  if (s->ended) return s->code;
  StdioFds io{0, 1, 2, true};
  io.tty = o.tty;
  auto r = check(rt.attach_and_wait(box.id, io));
  if (!r.error.empty()) error_line(r.error);
  // Our terminal went away (or we were told to stop): a temporary shell
  // box has nobody left to talk to, so it goes too.
  if (r.interrupted && o.rm) (void)rt.remove(box.id, true);
  return r.detached ? 0 : r.code;
}

// `cubby attach BOX`: the workload's terminal (or stdio) of a running box.
int cmd_attach(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Attach to a running box's main process (detach: Ctrl-P Ctrl-Q)", "attach BOX");
  std::string box;
  bool no_stdin = false;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_flag("--no-stdin", no_stdin, "Do not attach stdin");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  auto rec = check(rt.resolve(box));
  BoxSpec spec = rec.config.get<BoxSpec>();
  StdioFds io{no_stdin ? -1 : 0, 1, 2, true};
  io.tty = spec.tty;
  auto r = check(rt.attach(rec.id, io));
  return r.detached ? 0 : r.code;
}

int cmd_start(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Start boxes", "start BOX...");
  std::vector<std::string> boxes;
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  int rc = 0;
  for (auto& b : boxes) {
    auto r = rt.start(b, false);
    if (!r) {
      error_line(r.error().message());
      rc = kCubbyError;
    } else if (r->ended && r->code != 0 && !r->error.empty()) {
      error_line(r->error);
      rc = r->code;
    } else {
      std::cout << b << "\n";
    }
  }
  return rc;
}

int cmd_exec(const Global& g, const std::vector<std::string>& rest) {
  auto split = cli::split_at_command(rest, {"-e", "--env", "-w", "--workdir", "-u", "--user", "--timeout"});
  Command cmd("Run a command in a running box", "exec [OPTIONS] BOX COMMAND [ARG...]");
  bool interactive = false, tty = false, detach = false;
  std::vector<std::string> env, shown_command;
  std::string workdir, user, box, timeout;
  cmd.app.add_flag("-i,--interactive", interactive, "Stream stdin to the command");
  cmd.app.add_flag("-t,--tty", tty, "Allocate a terminal in the box");
  cmd.app.add_flag("-d,--detach", detach, "Run in the background");
  cmd.app.add_option("-e,--env", env, "Set an environment variable (K=V, or K to copy it)")->allow_extra_args(false);
  cmd.app.add_option("-w,--workdir", workdir, "Working directory (absolute)");
  cmd.app.add_option("-u,--user", user, "User");
  cmd.app.add_option("--timeout", timeout, "Kill the command after this many seconds (exit code 124)");
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_option("COMMAND", shown_command, "Command and arguments");
  cmd.parse(split.options);
  if (split.command.empty()) cmd.missing("COMMAND");
  if (interactive && detach) die("-d and -i cannot be combined");
  if (interactive && tty && !::isatty(0)) die("the input device is not a TTY (drop -t, or run from a terminal)");
  check_workdir(workdir);
  ExecRequest req;
  if (!timeout.empty()) {
    auto t = cli::parse_number(timeout);
    if (!t || *t < 0 || *t > cli::kMaxSeconds)
      die("--timeout: invalid value \"" + timeout + "\" (want a number of seconds, 0 for none)");
    if (*t > 0) req.timeout = std::chrono::milliseconds(std::max<int64_t>(1, static_cast<int64_t>(*t * 1000)));
  }
  req.argv = split.command;
  req.env = check_env(env);
  req.cwd = workdir;
  req.user = user;
  req.interactive = interactive;
  req.detach = detach;
  req.tty = tty;
  StdioFds io{interactive ? 0 : -1, 1, 2, true};
  io.tty = tty;
  // The hot path: a running box by full id or name, no store opened; else
  // (a prefix, a box that is not running) the store says what it is.
  auto direct = check(Runtime::exec_direct({g.home, ""}, box, req, io));
  auto r = direct ? std::move(*direct) : check(open_runtime(g).exec(box, req, io));
  if (detach && r.error.empty()) {
    // The exec's id, for `cubby exec-status BOX ID` (docker exec -d prints
    // nothing; its status is only in the API's exec inspect).
    std::cout << r.exec_id << "\n";
    return 0;
  }
  if (r.detached) return 0;
  if (!r.error.empty()) error_line(r.error);
  return r.code;
}

// The status of an exec (an `exec -d` above all), as docker's exec inspect
// gives it: {"id", "running", "exit_code", "timed_out"}. Kept by the box's
// agent while the box runs.
int cmd_exec_status(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show the status of an exec (its id from exec -d) as JSON", "exec-status BOX EXEC_ID");
  std::string box, id;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.positional("EXEC_ID", id, "The id exec -d printed");
  cmd.parse(rest);
  auto n = cli::parse_integer(id);
  if (!n || *n < 0) die("invalid exec id \"" + id + "\" (want the number exec -d printed)");
  auto rt = open_runtime(g);
  auto r = rt.exec_status(box, static_cast<uint64_t>(*n));
  json j = {{"id", *n}, {"running", false}, {"exit_code", nullptr}, {"timed_out", false}};
  if (!r) {
    // Still running is an answer, not an error (the box itself is running).
    auto b = rt.resolve(box);
    if (r.error().kind() != ErrorKind::kConflict || !b || b->status != store::BoxStatus::kRunning) die(r.error());
    j["running"] = true;
  } else {
    j["exit_code"] = r->code;
    j["timed_out"] = r->timed_out;
  }
  std::cout << j.dump() << "\n";
  return 0;
}

// --format table|json
void check_format(const std::string& format) {
  if (format != "table" && format != "json") die("--format: invalid value \"" + format + "\" (want table or json)");
}

// A box as `ls --format json` and `inspect` show it: the record, and for a
// running box whether it is paused (runtime state, not the store's).
json box_json(Runtime& rt, const store::BoxRecord& b, bool full) {
  return rt.describe(b, full);
}

int cmd_ls(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("List boxes", "ls [OPTIONS]");
  bool all = false, quiet = false, no_trunc = false;
  std::string format = "table";
  std::vector<std::string> filters;
  cmd.app.add_flag("-a,--all", all, "Show every box, not only running ones");
  cmd.app.add_flag("-q,--quiet", quiet, "Only ids");
  cmd.app.add_flag("--no-trunc", no_trunc, "Full ids and commands");
  cmd.app.add_option("-f,--filter", filters,
                     "Only boxes matching KEY=VALUE: status, name, id, label (KEY or KEY=VALUE), image; "
                     "repeatable (one key: any value; different keys: all)")
      ->allow_extra_args(false);
  cmd.app.add_option("--format", format, "table | json");
  cmd.parse(rest);
  check_format(format);
  auto filter = check(BoxFilter::parse(filters));
  auto rt = open_runtime(g);
  auto boxes = check(rt.list());
  // A status filter shows ended boxes without -a, as in Docker.
  const bool every = all || filter.filters_status();
  std::erase_if(boxes, [&](const store::BoxRecord& b) {
    return (!every && b.status != store::BoxStatus::kRunning) || !filter.matches(b);
  });
  if (format == "json") {
    json arr = json::array();
    for (auto& b : boxes) arr.push_back(box_json(rt, b, false));
    std::cout << arr.dump() << "\n";
  } else if (quiet) {
    for (auto& b : boxes) std::cout << (no_trunc ? b.id : b.id.substr(0, 12)) << "\n";
  } else {
    std::set<std::string> paused;
    for (auto& b : boxes)
      if (b.status == store::BoxStatus::kRunning && rt.is_paused(b)) paused.insert(b.id);
    print_box_table(boxes, no_trunc, paused);
  }
  return 0;
}


int cmd_inspect(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show a box as JSON", "inspect BOX...");
  std::vector<std::string> boxes;
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  if (boxes.size() == 1) {
    std::cout << box_json(rt, check(rt.resolve(boxes[0])), true).dump(2) << "\n";
    return 0;
  }
  json arr = json::array();
  for (auto& b : boxes) arr.push_back(box_json(rt, check(rt.resolve(b)), true));
  std::cout << arr.dump(2) << "\n";
  return 0;
}

// `docker port`: each published port as "80/tcp -> 0.0.0.0:8080", or the
// host address of one guest port.
int cmd_port(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("List a box's published ports", "port BOX [GUEST_PORT[/tcp|udp]]");
  std::string box, which;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_option("GUEST_PORT", which, "Only this guest port");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  auto b = check(rt.resolve(box));
  auto ports = b.config.value("ports", std::vector<PortMapping>{});
  bool found = false;
  for (const auto& p : ports) {
    std::string guest = std::to_string(p.guest_port) + "/" + p.proto;
    if (!which.empty() && which != guest && which + "/tcp" != guest) continue;
    found = true;
    std::string host = p.host_ip + ":" + std::to_string(p.host_port);
    std::cout << (which.empty() ? guest + " -> " + host : host) << "\n";
  }
  if (!which.empty() && !found) die("no public port '" + which + "' published for " + b.name);
  return 0;
}

int for_each_box(const std::vector<std::string>& boxes, const std::function<Result<void>(const std::string&)>& f) {
  int rc = 0;
  for (auto& b : boxes) {
    if (auto r = f(b); !r) {
      error_line(r.error().message());
      rc = kCubbyError;
    } else {
      std::cout << b << "\n";
    }
  }
  return rc;
}

int cmd_stop(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Stop boxes (SIGTERM, then SIGKILL after the grace period)", "stop [OPTIONS] BOX...");
  std::vector<std::string> boxes;
  std::string time = "10";
  cmd.app.add_option("-t,--time", time, "Seconds to wait before killing (default 10)");
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto secs = cli::parse_integer(time);
  if (!secs || *secs < 0 || *secs > cli::kMaxSeconds)
    die("--time: invalid value \"" + time + "\" (want a whole number of seconds, 0 or more)");
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.stop(b, std::chrono::seconds(*secs)); });
}

// `docker restart`: stop (with the grace period) if running, then start.
int cmd_restart(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Restart boxes (stop if running, then start)", "restart [OPTIONS] BOX...");
  std::vector<std::string> boxes;
  std::string time = "10";
  cmd.app.add_option("-t,--time", time, "Seconds to wait before killing (default 10)");
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto secs = cli::parse_integer(time);
  if (!secs || *secs < 0 || *secs > cli::kMaxSeconds)
    die("--time: invalid value \"" + time + "\" (want a whole number of seconds, 0 or more)");
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) -> Result<void> {
    CUBBY_TRYV(rt.stop(b, std::chrono::seconds(*secs)));
    auto s = CUBBY_TRY(rt.start(b, false));
    if (s.ended && s.code != 0 && !s.error.empty()) return fail(Error::internal(s.error));
    return {};
  });
}

// `docker pause` / `unpause`: the workload (main process and every exec)
// frozen through the cgroup freezer, its memory kept; the agent serves on.
int cmd_pause_or_unpause(const Global& g, const std::vector<std::string>& rest, bool pause) {
  Command cmd(pause ? "Freeze every process of boxes (memory kept)" : "Thaw paused boxes",
              pause ? "pause BOX..." : "unpause BOX...");
  std::vector<std::string> boxes;
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.set_paused(b, pause); });
}
int cmd_pause(const Global& g, const std::vector<std::string>& rest) { return cmd_pause_or_unpause(g, rest, true); }
int cmd_unpause(const Global& g, const std::vector<std::string>& rest) { return cmd_pause_or_unpause(g, rest, false); }

// Memory snapshots of running vm boxes (runtime/snapshots.cc).
int cmd_snapshot(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Save a running vm box (memory, devices, disk); it runs on", "snapshot BOX [NAME]");
  std::string box, name;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_option("NAME", name, "Snapshot name (default: the box's name and a short id)");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  auto s = check(rt.snapshot(box, name));
  std::cout << s.id << "\n";
  return 0;
}

int cmd_snapshots(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("List snapshots", "snapshots [OPTIONS]");
  std::string format = "table";
  bool quiet = false, no_trunc = false;
  cmd.app.add_option("--format", format, "table | json");
  cmd.app.add_flag("-q,--quiet", quiet, "Only ids");
  cmd.app.add_flag("--no-trunc", no_trunc, "Full ids");
  cmd.parse(rest);
  check_format(format);
  auto rt = open_runtime(g);
  auto snaps = check(rt.snapshots());
  if (format == "json") {
    json arr = json::array();
    for (auto& s : snaps) arr.push_back(Runtime::snapshot_json(s));
    std::cout << arr.dump() << "\n";
  } else if (quiet) {
    for (auto& s : snaps) std::cout << (no_trunc ? s.id : s.id.substr(0, 12)) << "\n";
  } else {
    print_snapshot_table(snaps, no_trunc);
  }
  return 0;
}

int cmd_rm_snapshot(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Remove snapshots", "rm-snapshot SNAPSHOT...");
  std::vector<std::string> snaps;
  cmd.positional("SNAPSHOT", snaps, "Snapshot id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  return for_each_box(snaps, [&](const std::string& s) { return rt.remove_snapshot(s); });
}

int cmd_fork(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Start N running copies of a running vm box (each its own disk and identity)", "fork BOX [N]");
  std::string box;
  int n = 1;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_option("N", n, "How many copies (default 1)");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  for (auto& b : check(rt.fork(box, n))) std::cout << b.id << "\n";
  return 0;
}

// `run --from SNAPSHOT`: a box restored from a snapshot, whose processes
// run on from where they were. Attached to its output (no stdin: the
// restored process's was the original's) unless -d.
int cmd_run_from(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Start a box from a snapshot", "run --from SNAPSHOT [OPTIONS]");
  std::string from, name;
  bool detach = false;
  cmd.app.add_option("--from", from, "Snapshot id, id prefix or name")->required();
  cmd.app.add_option("--name", name, "Name of the box");
  cmd.app.add_flag("-d,--detach", detach, "Print the box id and return");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  auto boxes = check(rt.run_from_snapshot(from, 1, name));
  if (detach) {
    std::cout << boxes[0].id << "\n";
    return 0;
  }
  auto r = check(rt.attach(boxes[0].id, StdioFds{-1, 1, 2, false}));
  return r.detached ? 0 : r.code;
}

int cmd_kill(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Send a signal to a box's main process", "kill [OPTIONS] BOX...");
  std::vector<std::string> boxes;
  std::string sig = "KILL";
  cmd.app.add_option("-s,--signal", sig, "Signal name or number (default KILL)");
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto signo = parse_signal(sig);
  if (!signo) die("--signal: " + signo.error().message());
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.kill(b, *signo); });
}

int cmd_rm(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Remove boxes", "rm [OPTIONS] BOX...");
  std::vector<std::string> boxes;
  bool force = false;
  cmd.app.add_flag("-f,--force", force, "Stop a running box first (SIGKILL)");
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.remove(b, force); });
}

int cmd_wait(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Wait for boxes to end and print their exit codes", "wait BOX...");
  std::vector<std::string> boxes;
  cmd.positional("BOX", boxes, "Box id, id prefix or name");
  cmd.parse(rest);
  auto rt = open_runtime(g);
  int rc = 0;
  for (auto& b : boxes) {
    auto r = rt.wait(b);
    if (!r) {
      error_line(r.error().message());
      rc = kCubbyError;
      continue;
    }
    if (r->exit_code)
      std::cout << *r->exit_code << "\n";
    else
      std::cout << "null\n";
  }
  return rc;
}

int cmd_logs(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show what a box's workload wrote (and a vm box's console, on stderr)", "logs [OPTIONS] BOX");
  std::string box, tail = "all", since, until;
  bool no_console = false;
  LogsOptions o;
  cmd.app.add_flag("-f,--follow", o.follow, "Keep following until the box ends");
  cmd.app.add_option("-n,--tail", tail, "Only the last N lines (default all)");
  cmd.app.add_option("--since", since, "Only lines since a time: a duration (10m, 1h30m), Unix time or RFC 3339");
  cmd.app.add_option("--until", until, "Only lines before a time (as --since)");
  cmd.app.add_flag("-t,--timestamps", o.timestamps, "Prefix each line with the time it was written");
  cmd.app.add_flag("--no-console", no_console, "Only the workload's output (leave out a vm box's console)");
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.parse(rest);
  o.console = !no_console;
  if (tail != "all") {
    auto n = cli::parse_integer(tail);
    if (!n) die("--tail: invalid value \"" + tail + "\" (want a number of lines, or all)");
    if (*n >= 0) o.tail = *n;  // negative: all, as in Docker
  }
  struct timespec now;
  ::clock_gettime(CLOCK_REALTIME, &now);
  const int64_t now_ns = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  if (!since.empty()) {
    auto t = cli::parse_log_time(since, now_ns);
    if (!t) die("--since: " + t.error().message());
    o.since_ns = *t;
  }
  if (!until.empty()) {
    auto t = cli::parse_log_time(until, now_ns);
    if (!t) die("--until: " + t.error().message());
    o.until_ns = *t;
  }
  auto rt = open_runtime(g);
  check(rt.logs(box, o, 1, 2));
  return 0;
}

// One side of `cubby cp`: "-", a host path, or BOX:PATH. As in docker cp, a
// host path with a colon in it must start with "/" or "." to be read as one.
struct CpSide {
  std::string box, path;
  bool in_box() const { return !box.empty(); }
};
CpSide cp_side(const std::string& arg) {
  if (arg == "-" || arg.empty() || arg[0] == '/' || arg[0] == '.') return {"", arg};
  size_t colon = arg.find(':');
  if (colon == std::string::npos) return {"", arg};
  if (colon == 0) die("\"" + arg + "\": empty box name in BOX:PATH");
  if (colon + 1 == arg.size()) die("\"" + arg + "\": empty path in BOX:PATH");
  return {arg.substr(0, colon), arg.substr(colon + 1)};
}

int cmd_cp(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Copy files between a box and the host (BOX:PATH on one side; - is a tar stream)",
              "cp [OPTIONS] SRC DST");
  std::string src, dst;
  CopyOptions o;
  cmd.app.add_flag("-a,--archive", o.archive, "Keep uid/gid (default: the box's root in a box, you on the host)");
  cmd.app.add_flag("-L,--follow-link", o.follow_links, "Follow SRC if it is a symlink");
  cmd.positional("SRC", src, "BOX:PATH, host path, or - (a tar on standard input)");
  cmd.positional("DST", dst, "BOX:PATH, host path, or - (a tar on standard output)");
  cmd.parse(rest);
  if (src.empty() || dst.empty()) die("empty path (usage: " + cmd.usage + ")");
  CpSide from = cp_side(src), to = cp_side(dst);
  if (from.in_box() && to.in_box()) die("copying between two boxes is not supported; one side must be a host path");
  if (!from.in_box() && !to.in_box()) die("one of SRC and DST must be BOX:PATH");
  auto rt = open_runtime(g);
  if (to.in_box())
    check(rt.copy_to_box(from.path, to.box, to.path, o, 0));
  else
    check(rt.copy_from_box(from.box, from.path, to.path, o, 1));
  return 0;
}

// Docker's go-units: four significant digits of the largest unit that fits.
std::string size_in(uint64_t bytes, double base, const char* const (&units)[6]) {
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= base && u + 1 < std::size(units)) {
    v /= base;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g%s", v, units[u]);
  return buf;
}
// units.HumanSize: decimal ("212B", "16.43MB").
std::string human_size(uint64_t bytes) {
  static const char* const kUnits[6] = {"B", "kB", "MB", "GB", "TB", "PB"};
  return size_in(bytes, 1000, kUnits);
}
// units.BytesSize: binary ("1.5MiB").
std::string binary_size(uint64_t bytes) {
  static const char* const kUnits[6] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return size_in(bytes, 1024, kUnits);
}

// One box's line of `stats`: the sample, and CPU % from the one before it.
struct StatsRow {
  std::string id, name;
  Runtime::BoxStats s;
  std::optional<double> cpu_percent;
};

int64_t monotonic_ns() {
  struct timespec t;
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

int64_t host_memory_bytes() {
  auto m = read_file("/proc/meminfo", 1u << 16);
  long kb = 0;
  if (!m || std::sscanf(m->c_str(), "MemTotal: %ld kB", &kb) != 1) return 0;
  return int64_t{kb} * 1024;
}

json stats_row_json(const StatsRow& r, int64_t host_mem) {
  auto v = [](const std::optional<int64_t>& x) { return x ? json(*x) : json(nullptr); };
  const int64_t limit = r.s.memory_limit_bytes.value_or(host_mem);
  json j = {{"id", r.id}, {"name", r.name}, {"cpu_percent", r.cpu_percent ? json(*r.cpu_percent) : json(nullptr)},
            {"cpu_usage_ns", v(r.s.cpu_usage_ns)}, {"memory_bytes", v(r.s.memory_bytes)},
            {"memory_limit_bytes", r.s.memory_bytes ? json(limit) : json(nullptr)},
            {"memory_percent", r.s.memory_bytes && limit > 0 ? json(100.0 * *r.s.memory_bytes / limit) : json(nullptr)},
            {"net_rx_bytes", v(r.s.net_rx_bytes)}, {"net_tx_bytes", v(r.s.net_tx_bytes)},
            {"block_read_bytes", v(r.s.io_read_bytes)}, {"block_write_bytes", v(r.s.io_write_bytes)},
            {"pids", v(r.s.pids)}};
  return j;
}

// `docker stats`'s table; "--" where the host reports nothing (a vm box has
// no host cgroup).
std::string stats_table(const std::vector<StatsRow>& rows, int64_t host_mem) {
  std::vector<std::vector<std::string>> t = {{"BOX ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"}};
  char pct[32];
  for (const auto& r : rows) {
    const int64_t limit = r.s.memory_limit_bytes.value_or(host_mem);
    auto pair = [](const std::optional<int64_t>& a, const std::optional<int64_t>& b) {
      return a && b ? human_size(static_cast<uint64_t>(*a)) + " / " + human_size(static_cast<uint64_t>(*b)) : std::string("--");
    };
    std::string cpu = "--", mem = "--", memp = "--";
    if (r.cpu_percent) std::snprintf(pct, sizeof pct, "%.2f%%", *r.cpu_percent), cpu = pct;
    if (r.s.memory_bytes) {
      mem = binary_size(static_cast<uint64_t>(*r.s.memory_bytes)) + " / " + binary_size(static_cast<uint64_t>(limit));
      if (limit > 0) std::snprintf(pct, sizeof pct, "%.2f%%", 100.0 * *r.s.memory_bytes / limit), memp = pct;
    }
    t.push_back({r.id.substr(0, 12), r.name, cpu, mem, memp, pair(r.s.net_rx_bytes, r.s.net_tx_bytes),
                 pair(r.s.io_read_bytes, r.s.io_write_bytes), r.s.pids ? std::to_string(*r.s.pids) : "--"});
  }
  std::vector<size_t> w(t[0].size(), 0);
  for (const auto& row : t)
    for (size_t i = 0; i < row.size(); ++i) w[i] = std::max(w[i], row[i].size());
  std::string out;
  for (const auto& row : t) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) line += i + 1 < row.size() ? row[i] + std::string(w[i] - row[i].size() + 3, ' ') : row[i];
    out += line + "\n";
  }
  return out;
}

// Blocks for one sampling period on a timerfd (the period is what `stats`
// measures over, not a wait for an event).
void wait_period(std::chrono::milliseconds period) {
  UniqueFd t(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
  if (!t) die(Error::sys("timerfd_create"));
  struct itimerspec its = {};
  its.it_value.tv_sec = period.count() / 1000;
  its.it_value.tv_nsec = (period.count() % 1000) * 1'000'000;
  if (::timerfd_settime(t.get(), 0, &its, nullptr) < 0) die(Error::sys("timerfd_settime"));
  uint64_t n;
  while (::read(t.get(), &n, sizeof n) < 0 && errno == EINTR) {
  }
}

// `docker stats [BOX...] [--no-stream] [--format json]`: every running box
// (re-listed each period, so new ones appear and ended ones go), or the
// boxes named (an ended one is dropped; the stream ends when none is left).
// CPU % is the workload's CPU time over the wall time between two samples
// (100% = one core, as Docker's), so even --no-stream takes two samples.
int cmd_stats(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show running boxes' resource use (CPU, memory, network, block I/O, processes)", "stats [OPTIONS] [BOX...]");
  std::vector<std::string> boxes;
  bool no_stream = false;
  std::string format = "table", interval = "1s";
  cmd.app.add_option("BOX", boxes, "Box ids, id prefixes or names (default: every running box)");
  cmd.app.add_flag("--no-stream", no_stream, "Print one sample and exit");
  cmd.app.add_option("--format", format, "table | json (one JSON object a box a line)");
  cmd.app.add_option("--interval", interval, "Sampling period (default 1s; --no-stream: the time between its two samples, 500ms)");
  cmd.parse(rest);
  check_format(format);
  auto period_ns = cli::parse_duration_ns(interval);
  if (!period_ns || *period_ns < 10'000'000 || *period_ns > int64_t{3600} * 1'000'000'000)
    die("--interval: invalid value \"" + interval + "\" (want a duration from 10ms to 1h, e.g. 1s or 500ms)");
  std::chrono::milliseconds period(*period_ns / 1'000'000);
  if (no_stream && !cmd.app.get_option("--interval")->count()) period = std::chrono::milliseconds(500);
  auto rt = open_runtime(g);
  std::vector<std::string> named;
  for (const auto& b : boxes) {
    auto rec = check(rt.resolve(b));
    if (rec.status != store::BoxStatus::kRunning) die("box " + rec.name + " is not running");
    named.push_back(rec.id);
  }
  const int64_t host_mem = host_memory_bytes();
  const bool on_terminal = ::isatty(1) && format == "table";
  std::map<std::string, std::pair<int64_t, int64_t>> last;  // id -> (cpu ns, monotonic ns)
  auto sample = [&]() {
    std::vector<std::pair<std::string, std::string>> targets;  // id, name
    if (!boxes.empty()) {
      for (const auto& id : named)
        if (auto r = rt.resolve(id); r && r->status == store::BoxStatus::kRunning) targets.emplace_back(r->id, r->name);
    } else {
      for (const auto& b : check(rt.list()))
        if (b.status == store::BoxStatus::kRunning) targets.emplace_back(b.id, b.name);
    }
    std::vector<StatsRow> rows;
    for (const auto& [id, name] : targets) {
      auto s = rt.stats(id);
      if (!s) continue;  // it ended meanwhile
      StatsRow r{id, name, *s, std::nullopt};
      const int64_t now = monotonic_ns();
      if (auto it = last.find(id); it != last.end() && s->cpu_usage_ns && now > it->second.second)
        r.cpu_percent = 100.0 * static_cast<double>(*s->cpu_usage_ns - it->second.first) /
                        static_cast<double>(now - it->second.second);
      if (s->cpu_usage_ns) last[id] = {*s->cpu_usage_ns, now};
      rows.push_back(std::move(r));
    }
    return rows;
  };
  auto print = [&](const std::vector<StatsRow>& rows) {
    std::string out;
    if (format == "json") {
      for (const auto& r : rows) out += stats_row_json(r, host_mem).dump() + "\n";
    } else {
      // On a terminal each sample replaces the last (clear, home), as Docker's.
      if (on_terminal && !no_stream) out += "\033[2J\033[H";
      out += stats_table(rows, host_mem);
    }
    (void)sys::write_all(1, out.data(), out.size());
  };
  auto rows = sample();
  if (!no_stream && on_terminal) print(rows);  // something at once; CPU % follows with the next sample
  for (;;) {
    wait_period(period);
    rows = sample();
    print(rows);
    if (no_stream) return 0;
    if (!boxes.empty() && rows.empty()) return 0;  // every box named has ended
  }
}

// `docker top BOX [ps OPTIONS]`: the box's processes, as the host's ps(1)
// shows them (host pids; default columns `-f`). The workload's processes
// only: the box's agent (its PID 1, cubby's) is not listed.
int cmd_top(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show a running box's processes (host pids, as ps -f shows them)", "top BOX [ps OPTIONS]");
  std::string box;
  std::vector<std::string> ps_args;
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.app.add_option("PS_OPTIONS", ps_args, "Options for ps(1) (default: -f)");
  auto split = cli::split_at_command(rest, {});
  cmd.parse(split.options);
  ps_args = split.command.empty() ? std::vector<std::string>{"-f"} : split.command;
  for (const auto& a : ps_args)
    if (a == "-p" || a.rfind("--pid", 0) == 0 || a == "-e" || a == "-A" || a == "ax" || a == "-a")
      die("ps option " + a + " selects processes itself; top lists the box's");
  auto rt = open_runtime(g);
  auto pids = check(rt.processes(box));
  std::string list;
  for (pid_t p : pids) list += (list.empty() ? "" : ",") + std::to_string(p);
  if (list.empty()) list = "0";  // none (a box between two execs, its main process gone): the header alone
  auto ps = image::find_on_path("ps");
  if (!ps) die("ps(1) is not installed (Debian: apt-get install procps)");
  SpawnSpec spec;
  spec.argv = {*ps};
  spec.argv.insert(spec.argv.end(), ps_args.begin(), ps_args.end());
  spec.argv.insert(spec.argv.end(), {"-p", list});
  spec.fds = {-1, 1, 2};
  auto child = spawn(spec);
  if (!child) die("run ps: " + child.error().message());
  auto st = child->wait();
  if (!st) die(st.error());
  // ps exits 1 when no pid is there any more: the header is still the answer.
  return st->code == 1 && pids.empty() ? 0 : st->code;
}

// Docker's prune prompt; -f skips it. Anything but y/Y is a no.
bool confirmed(bool force, const std::string& what) {
  if (force) return true;
  std::cout << "WARNING! This will remove " << what << ".\nAre you sure you want to continue? [y/N] " << std::flush;
  std::string answer;
  if (!std::getline(std::cin, answer)) return false;
  return answer == "y" || answer == "Y" || answer == "yes";
}

void print_pruned(const char* heading, const std::vector<std::string>& items, const std::string& prefix) {
  if (items.empty()) return;
  std::cout << heading << "\n";
  for (const auto& i : items) std::cout << prefix << i << "\n";
  std::cout << "\n";
}

// `docker container prune` (as `cubby prune`), `image prune`, `system prune`.
int cmd_prune_kind(const Global& g, const std::vector<std::string>& rest, bool boxes, bool images) {
  Command cmd(boxes && images ? "Remove boxes that are not running, then images no box uses"
              : boxes         ? "Remove every box that is not running"
                              : "Remove images no box uses",
              boxes && images ? "system prune [OPTIONS]" : boxes ? "prune [OPTIONS]" : "image prune [OPTIONS]");
  bool force = false, all = false;
  std::vector<std::string> filters;
  cmd.app.add_flag("-f,--force", force, "Do not ask for confirmation");
  if (images)
    cmd.app.add_flag("-a,--all", all, "Accepted for Docker's sake: cubby has no dangling images, so unused ones go");
  if (boxes && !images)
    cmd.app.add_option("--filter", filters, "Only boxes matching KEY=VALUE (as ls --filter)")->allow_extra_args(false);
  cmd.parse(rest);
  auto filter = check(BoxFilter::parse(filters));
  std::string what = boxes && images ? "all stopped boxes and all images not used by a box"
                     : boxes         ? "all stopped boxes"
                                     : "all images not used by a box";
  if (!confirmed(force, what)) return 0;
  auto rt = open_runtime(g);
  uint64_t bytes = 0;
  if (boxes) {
    auto p = check(rt.prune_boxes([&](const store::BoxRecord& b) { return filter.matches(b); }));
    print_pruned("Deleted Boxes:", p.removed, "");
    bytes += p.bytes;
  }
  if (images) {
    auto p = check(rt.prune_images());
    print_pruned("Deleted Images:", p.removed, "untagged: ");
    bytes += p.bytes;
  }
  std::cout << "Total reclaimed space: " << human_size(bytes) << "\n";
  return 0;
}

int cmd_prune(const Global& g, const std::vector<std::string>& rest) { return cmd_prune_kind(g, rest, true, false); }

int cmd_system(const Global& g, const std::vector<std::string>& rest) {
  if (rest.empty() || (rest[0] != "prune" && rest[0] != "--help"))
    die("unknown system command" + (rest.empty() ? std::string() : " \"" + rest[0] + "\"") + " (want prune)");
  if (rest[0] == "--help") {
    std::cout << "Usage: cubby system prune [-f]\n";
    return 0;
  }
  g_cmd = "cubby system prune";
  return cmd_prune_kind(g, std::vector<std::string>(rest.begin() + 1, rest.end()), true, true);
}

// `docker version`'s client half (there is no daemon): what this binary is.
int cmd_version(const Global&, const std::vector<std::string>& rest) {
  Command cmd("Show the version of cubby and what it was built with", "version [OPTIONS]");
  std::string format = "table";
  cmd.app.add_option("--format", format, "table | json");
  cmd.parse(rest);
  check_format(format);
  struct utsname u;
  ::uname(&u);
  json j = {{"version", CUBBY_VERSION},
            {"git_commit", CUBBY_GIT_COMMIT},
            {"built", std::string(__DATE__) + " " + __TIME__},
            {"compiler", std::string("gcc ") + __VERSION__},
            {"os_arch", std::string("linux/") + u.machine},
            {"agent_protocol", proto::kVersion},
            {"store_schema", store::Store::kSchemaVersion},
            {"isolations", {"sandbox", "vm"}},
            {"features", {"restart-policy", "cp-stopped-boxes", "log-timestamps", "labels", "ls-filters", "prune",
                          "log-rotation", "userns"}}};
  if (format == "json") {
    std::cout << j.dump() << "\n";
    return 0;
  }
  auto list = [](const json& a) {
    std::string s;
    for (auto& v : a) s += (s.empty() ? "" : ", ") + v.get<std::string>();
    return s;
  };
  std::cout << "Client:\n"
            << " Version:          " << CUBBY_VERSION << "\n"
            << " Git commit:       " << CUBBY_GIT_COMMIT << "\n"
            << " Built:            " << j["built"].get<std::string>() << "\n"
            << " Compiler:         " << j["compiler"].get<std::string>() << "\n"
            << " OS/Arch:          " << j["os_arch"].get<std::string>() << "\n"
            << " Agent protocol:   " << proto::kVersion << "\n"
            << " Store schema:     " << store::Store::kSchemaVersion << "\n"
            << " Isolations:       " << list(j["isolations"]) << "\n"
            << " Features:         " << list(j["features"]) << "\n";
  return 0;
}

// `docker export`: the box's filesystem (its root mount: not /proc, /sys,
// /dev or volumes, which stay as empty directories) as a tar, from a box in
// any state. To stdout, or -o FILE (written aside and renamed into place).
int cmd_export(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Write a box's filesystem as a tar archive", "export [OPTIONS] BOX");
  std::string box, file;
  cmd.app.add_option("-o,--output", file, "Write to a file instead of standard output");
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.parse(rest);
  if (file.empty() && ::isatty(1)) die("refusing to write a tar to a terminal (use -o FILE or redirect)");
  auto rt = open_runtime(g);
  CopyOptions o;
  o.archive = true;  // owners as the box has them
  o.one_fs = true;
  if (file.empty()) {
    check(rt.copy_from_box(box, "/.", "-", o, 1));
    return 0;
  }
  std::string tmp = file + ".cubby-tmp-XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) die(Error::sys("cannot create " + file));
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd.get(), 0666 & ~mask);
  auto r = rt.copy_from_box(box, "/.", "-", o, fd.get());
  if (r && ::fsync(fd.get()) < 0) r = sys_fail("fsync " + file);
  fd.reset();
  if (r && ::rename(tmp.c_str(), file.c_str()) < 0) r = sys_fail("rename to " + file);
  if (!r) {
    ::unlink(tmp.c_str());
    die(r.error());
  }
  return 0;
}

// `docker commit`: the box's changes as a new layer on its image, tagged REF.
int cmd_commit(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Make an image from a box's changes (sandbox boxes)", "commit [OPTIONS] BOX REF");
  std::string box, ref;
  std::vector<std::string> changes;
  cmd.app.add_option("-c,--change", changes, "Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR or USER")
      ->allow_extra_args(false);
  cmd.positional("BOX", box, "Box id, id prefix or name");
  cmd.positional("REF", ref, "Image reference for the new image");
  cmd.parse(rest);
  if (auto n = image::normalize_ref(ref); !n) die(n.error());
  image::ConfigChanges config;
  for (const auto& c : changes)
    if (auto r = cli::apply_change(c, config); !r) die(r.error());
  auto rt = open_runtime(g);
  auto img = check(commit_box(rt, box, ref, config));
  std::cout << "sha256:" << img.id << "\n";
  return 0;
}

int cmd_info(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Show what this host can do", "info [OPTIONS]");
  std::string format = "table";
  cmd.app.add_option("--format", format, "table | json");
  cmd.parse(rest);
  check_format(format);
  auto rt = open_runtime(g);
  json j = rt.info();
  if (format == "json") {
    std::cout << j.dump() << "\n";
  } else {
    for (auto& [k, v] : j.items()) std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  }
  return 0;
}

// `import FILE` and `load -i FILE` on a terminal: how much of the archive
// has been read ("import x.tar: 12.3MB / 45.1MB (27%)"), redrawn on stderr
// every 200 ms from the file's offset (the fd the store reads shares it).
// Only for a regular file (a pipe has no size) and a terminal on stderr.
class ReadProgress {
 public:
  ReadProgress(int fd, std::string label) : fd_(fd), label_(std::move(label)) {
    struct stat st;
    if (!::isatty(2) || ::fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size == 0) return;
    total_ = static_cast<uint64_t>(st.st_size);
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> l(mu_);
      // The 200 ms is the refresh period of a display, not a wait for an event.
      while (!cv_.wait_for(l, std::chrono::milliseconds(200), [this] { return done_; })) draw();
    });
  }
  ~ReadProgress() { finish(false); }
  // Stops the display with its last line: all of it when `complete` (a tar
  // ends before its file's padding does), else as far as it was read.
  void finish(bool complete) {
    if (!thread_.joinable()) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    draw(complete);
    (void)!::write(2, "\n", 1);
  }

 private:
  void draw(bool complete = false) {
    off_t at = complete ? static_cast<off_t>(total_) : ::lseek(fd_, 0, SEEK_CUR);
    if (at < 0) return;
    uint64_t n = std::min<uint64_t>(static_cast<uint64_t>(at), total_);
    std::string line = "\r" + label_ + ": " + human_size(n) + " / " + human_size(total_) + " (" +
                       std::to_string(n * 100 / total_) + "%)   ";
    (void)!::write(2, line.data(), line.size());
  }
  int fd_;
  std::string label_;
  uint64_t total_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

int cmd_import(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Make an image from a rootfs tarball (like docker import)", "import [OPTIONS] FILE|- REF");
  std::string file, ref;
  std::vector<std::string> changes;
  cmd.app.add_option("-c,--change", changes, "Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR or USER")
      ->allow_extra_args(false);
  cmd.positional("FILE", file, "Tarball (plain, gzip, bzip2, xz or zstd), or - for stdin");
  cmd.positional("REF", ref, "Image reference");
  cmd.parse(rest);
  image::ConfigChanges config;
  for (const auto& c : changes)
    if (auto r = cli::apply_change(c, config); !r) die(r.error());
  // The reference first: a bad one must not cost reading a large archive.
  if (auto n = image::normalize_ref(ref); !n) die(n.error());
  UniqueFd fd;
  if (file == "-") {
    fd.reset(::fcntl(0, F_DUPFD_CLOEXEC, 3));
    if (!fd) die(Error::sys("read standard input"));
  } else {
    fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) die(Error::sys("cannot open " + file));
    struct stat st;
    if (::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) die(file + " is a directory, not a tarball");
  }
  auto rt = open_runtime(g);
  ReadProgress progress(fd.get(), "import " + file);
  auto img = rt.images().import_tarball(fd.get(), ref, config);
  progress.finish(img.has_value());  // its last line before any message
  if (!img) die(img.error());
  std::cout << "sha256:" << img->id << "\n";
  return 0;
}

int cmd_images(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("List images", "images [OPTIONS]");
  std::string format = "table";
  bool quiet = false;
  cmd.app.add_option("--format", format, "table | json");
  cmd.app.add_flag("-q,--quiet", quiet, "Only ids");
  cmd.parse(rest);
  check_format(format);
  auto rt = open_runtime(g);
  auto imgs = check(rt.images().list());
  if (format == "json") {
    json arr = json::array();
    for (auto& i : imgs)
      arr.push_back({{"ref", i.ref}, {"id", "sha256:" + i.id}, {"digest", i.manifest_digest},
                     {"created_at", i.created}, {"size", i.size}});
    std::cout << arr.dump() << "\n";
  } else if (quiet) {
    for (auto& i : imgs) std::cout << i.id.substr(0, 12) << "\n";
  } else {
    print_image_table(imgs);
  }
  return 0;
}

int cmd_rmi(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Remove images", "rmi REF...");
  std::vector<std::string> refs;
  cmd.positional("REF", refs, "Image reference or id");
  cmd.parse(rest);
  for (auto& r : refs) check_image_ref(r);
  auto rt = open_runtime(g);
  auto boxes = check(rt.list());
  int rc = 0;
  for (auto& r : refs) {
    auto img = rt.images().resolve(r);
    if (!img) {
      error_line(img.error().message());
      rc = kCubbyError;
      continue;
    }
    bool used = std::any_of(boxes.begin(), boxes.end(), [&](auto& b) { return b.image_id == img->id; });
    if (used) {
      error_line("image " + r + " is used by a box; remove the box first");
      rc = kCubbyError;
      continue;
    }
    if (auto d = rt.images().remove(r); !d) {
      error_line(d.error().message());
      rc = kCubbyError;
      continue;
    }
    std::cout << "Untagged: " << img->ref << "\n";
  }
  return rc;
}

// Where cubby's helpers live (cubby-fetch): as Runtime finds cubby-shim.
std::string helper_dir(Runtime& rt) {
  json info = rt.info();
  if (info.contains("bin_dir") && info["bin_dir"].is_string()) return info["bin_dir"].get<std::string>();
  return ".";
}

int cmd_pull(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Pull an image from a registry", "pull [OPTIONS] REF");
  std::string ref, platform;
  bool quiet = false;
  cmd.app.add_option("--platform", platform, "os/arch[/variant] to pick from a multi-platform image");
  cmd.app.add_flag("-q,--quiet", quiet, "Print only the image reference");
  cmd.positional("REF", ref, "Image reference");
  cmd.parse(rest);
  if (auto n = image::normalize_ref(ref); !n) die(n.error());
  // A pull touches no box, so the box database is not opened (on a fresh
  // home, creating it was ~10 ms of a 150 ms pull).
  // cubby-fetch creates the store if need be, and its answer is all we print.
  auto where = check(Runtime::locate({g.home, ""}));
  check(make_private_dir(where.home));
  auto img = check(image::fetch_image(where.home + "/images", where.bin_dir, where.home, ref, platform));
  if (quiet) {
    std::cout << img.ref << "\n";
  } else {
    std::cout << "Digest: " << img.digest << "\n";
    std::cout << "Pulled: " << img.ref << " (" << img.id << ")\n";
  }
  return 0;
}

int cmd_login(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Log in to a registry (credentials go to CUBBY_HOME/config.json)", "login [OPTIONS] [SERVER]");
  std::string server, username, password;
  bool password_stdin = false;
  cmd.app.add_option("-u,--username", username, "Username");
  cmd.app.add_option("-p,--password", password, "Password (prefer --password-stdin)");
  cmd.app.add_flag("--password-stdin", password_stdin, "Read the password from standard input");
  cmd.app.add_option("SERVER", server, "Registry (default docker.io)");
  cmd.parse(rest);
  std::string domain = check(image::login_domain(server));
  if (username.empty()) die("--username is required");
  if (password_stdin) {
    if (!password.empty()) die("--password and --password-stdin cannot be combined");
    auto in = sys::read_all(0, 1u << 16);
    if (!in) die(in.error());
    password = *in;
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  }
  if (password.empty()) die("a password is required (--password-stdin)");
  if (password.find('\n') != std::string::npos) die("the password must be one line");
  auto rt = open_runtime(g);
  check(image::login_check(helper_dir(rt), rt.home(), domain, username, password));
  check(image::save_login(rt.home(), domain, {username, password}));
  std::cout << "Login Succeeded\n";
  return 0;
}

int cmd_logout(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Log out from a registry", "logout [SERVER]");
  std::string server;
  cmd.app.add_option("SERVER", server, "Registry (default docker.io)");
  cmd.parse(rest);
  std::string domain = check(image::login_domain(server));
  auto rt = open_runtime(g);
  bool removed = check(image::remove_login(rt.home(), domain));
  std::cout << (removed ? "Removing login credentials for " : "Not logged in to ") << domain << "\n";
  return 0;
}

int cmd_load(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Load images from a docker-archive or OCI archive", "load -i FILE");
  std::string file, tag;
  cmd.app.add_option("-i,--input", file, "Archive file (docker save / OCI archive), or - for stdin");
  cmd.app.add_option("-t,--tag", tag, "Reference for an archive whose image has no usable name");
  cmd.parse(rest);
  if (file.empty()) die("missing -i FILE (usage: cubby load -i FILE)");
  if (!tag.empty())
    if (auto n = image::normalize_ref(tag); !n) die(n.error());
  UniqueFd fd;
  if (file == "-") {
    fd.reset(::fcntl(0, F_DUPFD_CLOEXEC, 3));
  } else {
    fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) die(Error::sys("cannot open " + file));
    struct stat st;
    if (::fstat(fd.get(), &st) == 0 && S_ISDIR(st.st_mode)) die(file + " is a directory, not an archive");
  }
  auto rt = open_runtime(g);
  ReadProgress progress(fd.get(), "load " + file);
  auto loaded = image::load_archive(rt.images(), fd.get(), tag);
  progress.finish(loaded.has_value());
  auto imgs = check(std::move(loaded));
  for (auto& i : imgs) std::cout << "Loaded image: " << i.ref << "\n";
  return 0;
}

int cmd_save(const Global& g, const std::vector<std::string>& rest) {
  Command cmd("Write an image as an OCI archive", "save -o FILE REF");
  std::string file, ref;
  cmd.app.add_option("-o,--output", file, "Output file");
  cmd.positional("REF", ref, "Image reference or id");
  cmd.parse(rest);
  if (file.empty()) die("missing -o FILE (usage: cubby save -o FILE REF)");
  check_image_ref(ref);
  auto rt = open_runtime(g);
  auto img = check(rt.images().resolve(ref));
  // Written next to the target and renamed into place: no half archive.
  std::string tmp = file + ".cubby-tmp-XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) die(Error::sys("cannot create " + file));
  // mkostemp made it 0600; the archive gets what a plain create would
  // (0666 less the umask), as docker save's does, not a fixed 0644.
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd.get(), 0666 & ~mask);
  auto r = image::save_archive(rt.images(), img, fd.get());
  if (r && ::fsync(fd.get()) < 0) r = sys_fail("fsync " + file);
  fd.reset();
  if (r && ::rename(tmp.c_str(), file.c_str()) < 0) r = sys_fail("rename to " + file);
  if (!r) {
    ::unlink(tmp.c_str());
    die(r.error());
  }
  return 0;
}

int cmd_image(const Global& g, const std::vector<std::string>& rest) {
  if (rest.empty() || (rest[0] != "inspect" && rest[0] != "ls" && rest[0] != "rm" && rest[0] != "pull" &&
                       rest[0] != "load" && rest[0] != "save" && rest[0] != "prune" && rest[0] != "--help" &&
                       rest[0] != "-h"))
    die("unknown image command" + (rest.empty() ? std::string() : " \"" + rest[0] + "\"") +
        " (want inspect, ls, rm, pull, load, save or prune)");
  if (rest[0] == "--help" || rest[0] == "-h") {
    std::cout << "Usage: cubby image inspect|ls|rm|pull|load|save|prune ...\n";
    return 0;
  }
  std::vector<std::string> sub(rest.begin() + 1, rest.end());
  g_cmd = "cubby image " + rest[0];
  if (rest[0] == "ls") return cmd_images(g, sub);
  if (rest[0] == "rm") return cmd_rmi(g, sub);
  if (rest[0] == "pull") return cmd_pull(g, sub);
  if (rest[0] == "load") return cmd_load(g, sub);
  if (rest[0] == "save") return cmd_save(g, sub);
  if (rest[0] == "prune") return cmd_prune_kind(g, sub, false, true);
  Command cmd("Show images as JSON", "image inspect REF...");
  std::vector<std::string> refs;
  cmd.positional("REF", refs, "Image reference or id");
  cmd.parse(sub);
  for (auto& r : refs) check_image_ref(r);
  auto rt = open_runtime(g);
  json arr = json::array();
  for (auto& r : refs) arr.push_back(check(image::inspect_json(rt.images(), check(rt.images().resolve(r)))));
  std::cout << (arr.size() == 1 ? arr[0] : arr).dump(2) << "\n";
  return 0;
}

// `cubby serve`: the REST + WebSocket API, in its own binary (cubby-serve,
// next to cubby-shim) so the CLI stays small; the flags are its own.
int cmd_serve(const Global& g, const std::vector<std::string>& rest) {
  auto where = check(Runtime::locate({g.home, ""}));
  std::string path = where.bin_dir + "/cubby-serve";
  std::vector<std::string> args = {"cubby serve", "--home", where.home};
  args.insert(args.end(), rest.begin(), rest.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(path.c_str(), argv.data());
  die(Error::sys("cannot run " + path));
}

const char* kUsage =
    "Usage: cubby [--home DIR] COMMAND [ARGS...]\n\n"
    "Boxes:   run create start restart exec exec-status shell attach cp export ls inspect stop kill rm wait logs\n"
    "         port stats top prune pause unpause\n"
    "vm:      snapshot snapshots rm-snapshot fork (run --from SNAPSHOT)\n"
    "Images:  pull load save import commit images rmi image login logout\n"
    "Host:    info version system serve\n\n"
    "Run 'cubby COMMAND --help' for a command's options.\n";

using Handler = int (*)(const Global&, const std::vector<std::string>&);

int dispatch(const Global& g, const std::string& verb, const std::vector<std::string>& rest) {
  g_cmd = "cubby " + verb;
  if (verb == "run" && std::any_of(rest.begin(), rest.end(), [](const std::string& a) {
        return a == "--from" || a.rfind("--from=", 0) == 0;
      }))
    return cmd_run_from(g, rest);
  if (verb == "run" || verb == "create") return cmd_run_or_create(g, verb, rest);
  static const std::map<std::string, Handler> kVerbs = {
      {"start", cmd_start}, {"exec", cmd_exec}, {"exec-status", cmd_exec_status},     {"ls", cmd_ls},         {"ps", cmd_ls},
      {"inspect", cmd_inspect}, {"stop", cmd_stop}, {"restart", cmd_restart}, {"pause", cmd_pause}, {"unpause", cmd_unpause}, {"kill", cmd_kill},     {"rm", cmd_rm},
      {"wait", cmd_wait},   {"logs", cmd_logs},     {"info", cmd_info},     {"import", cmd_import},
      {"images", cmd_images}, {"rmi", cmd_rmi},       {"shell", cmd_shell},   {"attach", cmd_attach},
      {"pull", cmd_pull},     {"login", cmd_login},   {"logout", cmd_logout}, {"load", cmd_load},
      {"save", cmd_save},     {"image", cmd_image},   {"port", cmd_port},
      {"cp", cmd_cp},         {"prune", cmd_prune},   {"system", cmd_system}, {"version", cmd_version}, {"export", cmd_export}, {"commit", cmd_commit},
      {"stats", cmd_stats},   {"top", cmd_top},       {"serve", cmd_serve},
      {"snapshot", cmd_snapshot}, {"snapshots", cmd_snapshots}, {"rm-snapshot", cmd_rm_snapshot}, {"fork", cmd_fork}};
  if (auto it = kVerbs.find(verb); it != kVerbs.end()) return it->second(g, rest);
  g_cmd = "cubby";
  die("unknown command \"" + verb + "\" (see 'cubby --help')");
}

}  // namespace

int main(int argc, char** argv) {
  log::set_prefix("cubby");
  ::signal(SIGPIPE, SIG_IGN);
  Global g;
  std::vector<std::string> args(argv + 1, argv + argc);
  size_t i = 0;
  // Global options come before the command.
  for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
    if (args[i] == "--home") {
      if (i + 1 == args.size() || args[i + 1].empty()) die("--home needs a value");
      g.home = args[++i];
    } else if (args[i].rfind("--home=", 0) == 0) {
      g.home = args[i].substr(7);
      if (g.home.empty()) die("--home: empty value");
    } else if (args[i] == "-h" || args[i] == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (args[i] == "--version" || args[i] == "-v") {
      std::cout << "cubby " << CUBBY_VERSION << "\n";
      return 0;
    } else {
      die("unknown flag " + args[i] + " (see 'cubby --help')");
    }
  }
  if (i == args.size()) die("no command given (see 'cubby --help')");
  std::string verb = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
  if (verb == "help") {  // cubby help [COMMAND]
    if (rest.empty()) {
      std::cout << kUsage;
      return 0;
    }
    return dispatch(g, rest[0], {"--help"});
  }
  return dispatch(g, verb, rest);
}
