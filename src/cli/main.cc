// cubby: the command-line front end. A thin layer over cubby::Runtime: it
// parses arguments, calls one library function per verb, and maps the
// outcome to Docker's exit codes (the workload's code; 125 when cubby
// itself fails; 126/127 when the command cannot run).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "base/log.h"
#include "base/unique_fd.h"
#include "cli/args.h"
#include "cli/format.h"
#include "runtime/runtime.h"

using namespace cubby;
using nlohmann::json;

namespace {

constexpr int kCubbyError = 125;

[[noreturn]] void die(const Error& e) {
  std::string line = "cubby: " + e.message() + "\n";
  (void)!::write(2, line.data(), line.size());
  std::exit(kCubbyError);
}

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

Runtime open_runtime(const Global& g) { return check(Runtime::open({g.home, ""})); }

// Options shared by run and create.
struct BoxOpts {
  std::string name, workdir, user, network = "default", isolation = "auto", memory, hostname, entrypoint;
  std::vector<std::string> env;
  double cpus = 0;
  int64_t pids = 0;
  bool detach = false, rm = false, interactive = false, tty = false;
};

const std::set<std::string> kBoxValueOpts = {"-e", "--env", "-w", "--workdir", "-u", "--user", "--name",
                                             "-m", "--memory", "--cpus", "--network", "--isolation",
                                             "--entrypoint", "--hostname", "-h", "--pids-limit"};

void add_box_options(CLI::App* c, BoxOpts& o, bool with_detach) {
  c->add_option("--name", o.name, "Name the box");
  c->add_option("-e,--env", o.env, "Set an environment variable (K=V, or K to copy it)");
  c->add_option("-w,--workdir", o.workdir, "Working directory inside the box");
  c->add_option("-u,--user", o.user, "User (name|uid[:group|gid])");
  c->add_option("-m,--memory", o.memory, "Memory limit (e.g. 512m, 1g)");
  c->add_option("--cpus", o.cpus, "CPU limit (e.g. 0.5)");
  c->add_option("--pids-limit", o.pids, "Maximum number of processes");
  c->add_option("--network", o.network, "none | default (outbound through user-mode networking)");
  c->add_option("--isolation", o.isolation, "auto | vm | sandbox");
  c->add_option("--hostname", o.hostname, "Hostname inside the box");
  c->add_option("--entrypoint", o.entrypoint, "Override the image's entrypoint");
  c->add_flag("--rm", o.rm, "Remove the box when it ends");
  c->add_flag("-i,--interactive", o.interactive, "Keep stdin open");
  c->add_flag("-t,--tty", o.tty, "Allocate a terminal (not implemented yet)");
  if (with_detach) c->add_flag("-d,--detach", o.detach, "Run in the background and print the box id");
}

CreateOptions to_create(const BoxOpts& o, const std::string& image, const std::vector<std::string>& cmd) {
  CreateOptions c;
  c.image = image;
  c.name = o.name;
  c.cmd = cmd;
  c.env = o.env;
  c.cwd = o.workdir;
  c.user = o.user;
  c.network = o.network;
  c.isolation = o.isolation;
  c.hostname = o.hostname;
  c.auto_remove = o.rm;
  c.interactive = o.interactive;
  c.tty = o.tty;
  if (!o.entrypoint.empty()) c.entrypoint = std::vector<std::string>{o.entrypoint};
  if (!o.memory.empty()) c.memory = check(parse_size(o.memory));
  if (o.cpus != 0) c.cpus = o.cpus;
  if (o.pids != 0) c.pids = o.pids;
  if (o.tty) die(Error::invalid("-t (terminal) is not implemented yet; interactive terminals are a separate issue"));
  return c;
}

// Parses `argv` (options + first positional) with a throwaway CLI11 app.
void parse_sub(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    std::exit(0);
  } catch (const CLI::ParseError& e) {
    std::string line = "cubby " + app.get_name() + ": " + e.what() + "\n";
    (void)!::write(2, line.data(), line.size());
    std::exit(kCubbyError);
  }
}

int cmd_run_or_create(const Global& g, const std::string& verb, const std::vector<std::string>& rest) {
  bool is_run = verb == "run";
  auto split = cli::split_at_command(rest, kBoxValueOpts);
  CLI::App app{is_run ? "Create and start a box" : "Create a box", verb};
  BoxOpts o;
  std::string image;
  add_box_options(&app, o, is_run);
  app.add_option("image", image, "Image reference")->required();
  parse_sub(app, split.options);
  if (o.detach && o.interactive) die(Error::invalid("-d and -i cannot be combined"));
  auto rt = open_runtime(g);
  auto box = check(rt.create(to_create(o, image, split.command)));
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
      std::cerr << "cubby: " << s->error << "\n";
      return s->code;
    }
    std::cout << box.id << "\n";
    return 0;
  }
  auto s = rt.start(box.id, /*hold=*/true);
  if (!s) {
    if (o.rm) (void)rt.remove(box.id, true);
    die(s.error());
  }
  if (s->ended) {
    if (!s->error.empty()) std::cerr << "cubby: " << s->error << "\n";
    return s->code;
  }
  StdioFds io{o.interactive ? 0 : -1, 1, 2, true};
  auto r = check(rt.attach_and_wait(box.id, io));
  if (!r.error.empty()) std::cerr << "cubby: " << r.error << "\n";
  return r.code;
}

int cmd_start(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Start boxes", "start"};
  std::vector<std::string> boxes;
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  int rc = 0;
  for (auto& b : boxes) {
    auto r = rt.start(b, false);
    if (!r) {
      std::cerr << "cubby: " << r.error().message() << "\n";
      rc = kCubbyError;
    } else if (r->ended && r->code != 0 && !r->error.empty()) {
      std::cerr << "cubby: " << r->error << "\n";
      rc = r->code;
    } else {
      std::cout << b << "\n";
    }
  }
  return rc;
}

int cmd_exec(const Global& g, const std::vector<std::string>& rest) {
  auto split = cli::split_at_command(rest, {"-e", "--env", "-w", "--workdir", "-u", "--user", "--timeout"});
  CLI::App app{"Run a command in a running box", "exec"};
  bool interactive = false, tty = false, detach = false;
  std::vector<std::string> env;
  std::string workdir, user, box;
  double timeout = 0;
  app.add_flag("-i,--interactive", interactive, "Stream stdin to the command");
  app.add_flag("-t,--tty", tty, "Allocate a terminal (not implemented yet)");
  app.add_flag("-d,--detach", detach, "Run in the background");
  app.add_option("-e,--env", env, "Set an environment variable");
  app.add_option("-w,--workdir", workdir, "Working directory");
  app.add_option("-u,--user", user, "User");
  app.add_option("--timeout", timeout, "Kill the command after this many seconds (exit code 124)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("box", box, "Box")->required();
  parse_sub(app, split.options);
  if (split.command.empty()) die(Error::invalid("exec: no command given"));
  if (tty) die(Error::invalid("-t (terminal) is not implemented yet; interactive terminals are a separate issue"));
  auto rt = open_runtime(g);
  ExecRequest req;
  req.argv = split.command;
  req.env = env;
  req.cwd = workdir;
  req.user = user;
  req.interactive = interactive;
  req.detach = detach;
  if (timeout > 0) req.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000));
  auto r = check(rt.exec(box, req, StdioFds{interactive ? 0 : -1, 1, 2, true}));
  if (!r.error.empty()) std::cerr << "cubby: " << r.error << "\n";
  return r.code;
}

int cmd_ls(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"List boxes", "ls"};
  bool all = false, quiet = false;
  std::string format = "table";
  app.add_flag("-a,--all", all, "Show every box, not only running ones");
  app.add_flag("-q,--quiet", quiet, "Only ids");
  app.add_option("--format", format, "table | json")->check(CLI::IsMember({"table", "json"}));
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  auto boxes = check(rt.list());
  std::erase_if(boxes, [&](const store::BoxRecord& b) { return !all && b.status != store::BoxStatus::kRunning; });
  if (format == "json") {
    json arr = json::array();
    for (auto& b : boxes) arr.push_back(Runtime::to_json(b, false));
    std::cout << arr.dump() << "\n";
  } else if (quiet) {
    for (auto& b : boxes) std::cout << b.id << "\n";
  } else {
    print_box_table(boxes);
  }
  return 0;
}

int cmd_inspect(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Show a box as JSON", "inspect"};
  std::vector<std::string> boxes;
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  if (boxes.size() == 1) {
    std::cout << Runtime::to_json(check(rt.resolve(boxes[0])), true).dump(2) << "\n";
    return 0;
  }
  json arr = json::array();
  for (auto& b : boxes) arr.push_back(Runtime::to_json(check(rt.resolve(b)), true));
  std::cout << arr.dump(2) << "\n";
  return 0;
}

int for_each_box(const std::vector<std::string>& boxes, const std::function<Result<void>(const std::string&)>& f) {
  int rc = 0;
  for (auto& b : boxes) {
    if (auto r = f(b); !r) {
      std::cerr << "cubby: " << r.error().message() << "\n";
      rc = kCubbyError;
    } else {
      std::cout << b << "\n";
    }
  }
  return rc;
}

int cmd_stop(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Stop boxes (SIGTERM, then SIGKILL after the grace period)", "stop"};
  std::vector<std::string> boxes;
  int secs = 10;
  app.add_option("-t,--time", secs, "Seconds to wait before killing")->check(CLI::NonNegativeNumber);
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.stop(b, std::chrono::seconds(secs)); });
}

int cmd_kill(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Send a signal to a box's main process", "kill"};
  std::vector<std::string> boxes;
  std::string sig = "KILL";
  app.add_option("-s,--signal", sig, "Signal name or number");
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  int signo = check(parse_signal(sig));
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.kill(b, signo); });
}

int cmd_rm(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Remove boxes", "rm"};
  std::vector<std::string> boxes;
  bool force = false;
  app.add_flag("-f,--force", force, "Stop a running box first (SIGKILL)");
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  return for_each_box(boxes, [&](const std::string& b) { return rt.remove(b, force); });
}

int cmd_wait(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Wait for boxes to end and print their exit codes", "wait"};
  std::vector<std::string> boxes;
  app.add_option("box", boxes)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  int rc = 0;
  for (auto& b : boxes) {
    auto r = rt.wait(b);
    if (!r) {
      std::cerr << "cubby: " << r.error().message() << "\n";
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
  CLI::App app{"Show what a box's workload wrote", "logs"};
  std::string box;
  bool follow = false;
  app.add_flag("-f,--follow", follow, "Keep following until the box ends");
  app.add_option("box", box)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  check(rt.logs(box, follow, 1, 2));
  return 0;
}

int cmd_info(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Show what this host can do", "info"};
  std::string format = "table";
  app.add_option("--format", format)->check(CLI::IsMember({"table", "json"}));
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  json j = rt.info();
  if (format == "json") {
    std::cout << j.dump() << "\n";
  } else {
    for (auto& [k, v] : j.items()) std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
  }
  return 0;
}

int cmd_import(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"Make an image from a rootfs tarball (like docker import)", "import"};
  std::string file, ref;
  app.add_option("file", file, "Tarball, or - for stdin")->required();
  app.add_option("ref", ref, "Image reference")->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  UniqueFd fd;
  if (file == "-") {
    fd.reset(::dup(0));
  } else {
    fd.reset(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) die(Error::sys("open " + file));
  }
  auto img = check(rt.images().import_tarball(fd.get(), ref));
  std::cout << "sha256:" << img.id << "\n";
  return 0;
}

int cmd_images(const Global& g, const std::vector<std::string>& rest) {
  CLI::App app{"List images", "images"};
  std::string format = "table";
  bool quiet = false;
  app.add_option("--format", format)->check(CLI::IsMember({"table", "json"}));
  app.add_flag("-q,--quiet", quiet);
  parse_sub(app, rest);
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
  CLI::App app{"Remove images", "rmi"};
  std::vector<std::string> refs;
  app.add_option("ref", refs)->required();
  parse_sub(app, rest);
  auto rt = open_runtime(g);
  auto boxes = check(rt.list());
  int rc = 0;
  for (auto& r : refs) {
    auto img = rt.images().resolve(r);
    if (!img) {
      std::cerr << "cubby: " << img.error().message() << "\n";
      rc = kCubbyError;
      continue;
    }
    bool used = std::any_of(boxes.begin(), boxes.end(), [&](auto& b) { return b.image_id == img->id; });
    if (used) {
      std::cerr << "cubby: image " << r << " is used by a box; remove the box first\n";
      rc = kCubbyError;
      continue;
    }
    if (auto d = rt.images().remove(r); !d) {
      std::cerr << "cubby: " << d.error().message() << "\n";
      rc = kCubbyError;
      continue;
    }
    std::cout << "Untagged: " << img->ref << "\n";
  }
  return rc;
}

const char* kUsage =
    "Usage: cubby [--home DIR] COMMAND [ARGS...]\n\n"
    "Boxes:   run create start exec ls inspect stop kill rm wait logs\n"
    "Images:  import images rmi\n"
    "Host:    info\n\n"
    "Run 'cubby COMMAND --help' for a command's options.\n";

}  // namespace

int main(int argc, char** argv) {
  log::set_prefix("cubby");
  ::signal(SIGPIPE, SIG_IGN);
  Global g;
  std::vector<std::string> args(argv + 1, argv + argc);
  size_t i = 0;
  // Global options come before the command.
  for (; i < args.size() && args[i].size() > 1 && args[i][0] == '-'; ++i) {
    if (args[i] == "--home" && i + 1 < args.size()) {
      g.home = args[++i];
    } else if (args[i].rfind("--home=", 0) == 0) {
      g.home = args[i].substr(7);
    } else if (args[i] == "-h" || args[i] == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (args[i] == "--version" || args[i] == "-v") {
      std::cout << "cubby " << CUBBY_VERSION << "\n";
      return 0;
    } else {
      std::cerr << "cubby: unknown option " << args[i] << "\n";
      return kCubbyError;
    }
  }
  if (i == args.size()) {
    std::cerr << kUsage;
    return kCubbyError;
  }
  std::string verb = args[i];
  std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
  if (verb == "run" || verb == "create") return cmd_run_or_create(g, verb, rest);
  if (verb == "start") return cmd_start(g, rest);
  if (verb == "exec") return cmd_exec(g, rest);
  if (verb == "ls" || verb == "ps") return cmd_ls(g, rest);
  if (verb == "inspect") return cmd_inspect(g, rest);
  if (verb == "stop") return cmd_stop(g, rest);
  if (verb == "kill") return cmd_kill(g, rest);
  if (verb == "rm") return cmd_rm(g, rest);
  if (verb == "wait") return cmd_wait(g, rest);
  if (verb == "logs") return cmd_logs(g, rest);
  if (verb == "info") return cmd_info(g, rest);
  if (verb == "import") return cmd_import(g, rest);
  if (verb == "images") return cmd_images(g, rest);
  if (verb == "rmi") return cmd_rmi(g, rest);
  std::cerr << "cubby: unknown command \"" << verb << "\" (see cubby --help)\n";
  return kCubbyError;
}
