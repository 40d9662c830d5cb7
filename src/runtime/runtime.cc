#include "runtime/runtime.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <set>

#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"
#include "hypervisor/kvm_probe.h"
#include "image/registry_config.h"
#include "image/fetch_client.h"
#include "net/bridge.h"
#include "net/names.h"
#include "proto/logfile.h"
#include "proto/messages.h"
#include "proto/transport.h"
#include "runtime/idmap.h"
#include "runtime/log_lines.h"
#include "runtime/ownership.h"
#include "runtime/session.h"
#include "runtime/shim_launcher.h"
#include "store/names.h"
#include "proto/launch.h"
#include "sandbox/cgroup.h"

namespace cubby {

using proto::Json;
using store::BoxRecord;
using store::BoxStatus;
namespace msg = proto::msg;

std::string random_id() {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n > 0) got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) {
    s.push_back(hex[c >> 4]);
    s.push_back(hex[c & 15]);
  }
  return s;
}

namespace {

using launch::kAgentSocket;
// What a ShimConfig adds to its box's spec: a few paths and flags.
constexpr size_t kShimConfigMargin = 64 * 1024;
constexpr const char* kSlirpSocket = "slirp.sock";  // shim/network.h's kSlirpApiSocket


std::string self_dir() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

bool valid_name(const std::string& n) {
  static const std::regex re("[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}");
  return std::regex_match(n, re);
}

// RFC 1123 host names, at most 64 bytes (the kernel's limit for
// sethostname): the name also goes into the box's /etc/hosts, where a
// newline or a space would add an entry of the caller's choosing.
bool valid_hostname(const std::string& h) {
  if (h.empty() || h.size() > 64) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = h.find('.', start);
    std::string_view label(h.data() + start, (dot == std::string::npos ? h.size() : dot) - start);
    if (label.empty() || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    if (dot == std::string::npos) return true;
    start = dot + 1;
  }
}

proto::UnixTransport agent_transport(const std::string& box_dir) { return {box_dir, kAgentSocket}; }

// What an exec takes from its box when the request does not say: the box's
// env (the request's variables replace or add to it), cwd and user. Written
// next to the box at create (exec.json) so that exec_direct needs no store.
struct ExecDefaults {
  std::string name;
  std::vector<std::string> env;
  std::string cwd, user;
};

constexpr const char* kExecDefaults = "exec.json";

Json exec_defaults_json(const std::string& name, const BoxSpec& spec) {
  return {{"name", name}, {"env", spec.env}, {"cwd", spec.cwd}, {"user", spec.user}};
}

using store::name_file;

bool full_id(const std::string& s) {
  return s.size() == 32 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}


}  // namespace

std::string default_home() {
  if (const char* h = std::getenv("CUBBY_HOME"); h && *h) return h;
  if (::geteuid() == 0) return "/var/lib/cubby";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.local/share/cubby";
}

Result<Runtime::Options> Runtime::locate(Options opts) {
  std::string home = opts.home.empty() ? default_home() : opts.home;
  if (home.empty() || home[0] != '/') {
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return sys_fail("getcwd");
    home = std::string(cwd) + "/" + home;
  }
  std::string bin = opts.bin_dir;
  if (bin.empty()) {
    const char* env = std::getenv("CUBBY_LIBEXEC");
    bin = env && *env ? env : self_dir();
  }
  return Options{std::move(home), std::move(bin)};
}

Result<Runtime> Runtime::open(Options opts) {
  auto [home, bin] = CUBBY_TRY(locate(std::move(opts)));
  // The home and boxes/ are the owner's alone (0700): a box's upper dir is
  // the box's own / with its setuid files, and its records hold secrets.
  // One an older cubby made 0755 is closed here (the store does the home).
  CUBBY_TRYV(make_private_dir(home + "/boxes"));
  auto db = store::Store::open(home);
  if (!db) return std::unexpected(db.error());
  auto images = image::ImageStore::open(home + "/images");
  if (!images) return std::unexpected(images.error());
  // Image GC keeps every layer a box record names. It asks on a connection
  // of its own, when it runs (under the image store's lock).
  images->set_layers_in_use([home] { return store::Store::layers_in_use(home); });
  Runtime rt(std::move(home), std::move(bin), std::move(*db), std::move(*images));
  CUBBY_TRYV(rt.reconcile());
  CUBBY_TRYV(rt.sweep_orphans());
  return rt;
}

// ---------------------------------------------------------------------------
// Recovery

void Runtime::release_leftovers(const std::string& id) {
  if (::geteuid() == 0) {
    if (auto cg = sandbox::Cgroup::open_existing(id); cg && *cg) {
      if (auto r = (*cg)->destroy(); !r) LOG_WARN("box {}: cgroup cleanup: {}", id, r.error().message());
    }
  }
  net::sweep_box(home_, id);  // --network bridge: its table, veth, and maybe the idle bridge
  // The sockets a dead shim (and its slirp4netns, which dies with it) left.
  for (const char* sock : {kAgentSocket, kSlirpSocket}) ::unlink((box_dir(id) + "/" + sock).c_str());
}

Result<void> Runtime::end_dead_box(const BoxRecord& b, const std::string& why) {
  if (!b.shim_pid || !b.shim_start) return {};
  // Compare-and-set: only the reconciler that flips the record cleans up.
  // A --rm box goes straight to `removing`: nothing can start it meanwhile.
  bool remove = b.config.value("auto_remove", false);
  auto won = CUBBY_TRY(db_.mark_ended(b.id, *b.shim_pid, *b.shim_start,
                                      remove ? BoxStatus::kRemoving : BoxStatus::kExited, std::nullopt, why));
  if (!won) return {};
  release_leftovers(b.id);
  if (remove) CUBBY_TRYV(finish_removal(b));
  return {};
}

Result<void> Runtime::finish_removal(const BoxRecord& b) {
  CUBBY_TRYV(db_.finish_removal(b.id, box_dir(b.id)));
  // The last box of an untagged image held its layers; they can go now.
  if (!b.image_id.empty() && !images_.resolve("sha256:" + b.image_id)) {
    if (auto gc = images_.collect_garbage(); !gc) LOG_WARN("image garbage collection: {}", gc.error().message());
  }
  return {};
}

Result<void> Runtime::sweep_orphans() {
  std::vector<std::string> dirs = list_dir(home_ + "/boxes");
  std::erase_if(dirs, [](const std::string& n) {
    return n.size() != 32 || n.find_first_not_of("0123456789abcdef") != std::string::npos;
  });
  if (dirs.empty()) return {};
  // The records are read after the directory: a box created meanwhile
  // (record first) is in this list if its directory was in that one.
  auto ids = CUBBY_TRY(db_.box_ids());
  std::set<std::string> known(ids.begin(), ids.end());
  std::erase_if(dirs, [&](const std::string& n) { return known.count(n) != 0; });
  if (dirs.empty()) return {};
  auto shims = live_shim_box_ids();
  if (!shims) return {};
  for (const auto& id : dirs) {
    if (shims->count(id)) {  // an older cubby's rm lost it to a start: not ours to break
      LOG_WARN("box directory {} has no record but a live shim; left alone", box_dir(id));
      continue;
    }
    release_leftovers(id);
    if (auto r = remove_tree(box_dir(id)); !r) LOG_WARN("orphaned box directory: {}", r.error().message());
  }
  return {};
}

Result<void> Runtime::reconcile() {
  // Every running record is probed, on every open (guarantee 2); only the
  // shim identity is read for that, the full record only for a dead one.
  auto shims = CUBBY_TRY(db_.list_running_shims());
  for (auto& s : shims) {
    if (s.shim_pid && s.shim_start && is_shim_of(*s.shim_pid, *s.shim_start, s.id)) continue;
    auto b = CUBBY_TRY(db_.get_box(s.id));
    // Ended only if the record still names the shim we found dead (the
    // compare-and-set in end_dead_box uses these fields): a box restarted
    // meanwhile has a new, unprobed shim and is left alone.
    if (!b || b->status != BoxStatus::kRunning || b->shim_pid != s.shim_pid || b->shim_start != s.shim_start)
      continue;
    CUBBY_TRYV(end_dead_box(*b, "shim died unexpectedly"));
  }
  return {};
}

// ---------------------------------------------------------------------------
// Lookup

Result<BoxRecord> Runtime::resolve(const std::string& ref) {
  if (ref.empty()) return fail(Error::invalid("empty box reference"));
  auto found = CUBBY_TRY(db_.match(ref));
  for (auto& b : found)
    if (b.name == ref || b.id == ref) return b;  // exact name or id wins
  bool hex = ref.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex || ref.size() < 4) return fail(Error::not_found("no such box: " + ref));
  std::vector<BoxRecord> by_prefix;
  for (auto& b : found)
    if (b.id.compare(0, ref.size(), ref) == 0) by_prefix.push_back(b);
  if (by_prefix.empty()) return fail(Error::not_found("no such box: " + ref));
  if (by_prefix.size() > 1)
    return fail(Error::invalid("box prefix " + ref + " is ambiguous (" + std::to_string(by_prefix.size()) +
                               " boxes match)"));
  return by_prefix[0];
}

Result<std::vector<BoxRecord>> Runtime::list() { return db_.list_boxes(); }

Json Runtime::to_json(const BoxRecord& b, bool detailed) {
  Json j = {{"id", b.id},
            {"name", b.name},
            {"image", b.image},
            {"status", store::to_string(b.status)},
            {"exit_code", b.exit_code ? Json(*b.exit_code) : Json(nullptr)},
            {"isolation", b.isolation},
            {"created_at", b.created_at},
            {"pid", b.status == BoxStatus::kRunning && b.shim_pid ? Json(*b.shim_pid) : Json(nullptr)}};
  if (detailed) {
    j["image_id"] = b.image_id;
    j["started_at"] = b.started_at.empty() ? Json(nullptr) : Json(b.started_at);
    j["finished_at"] = b.finished_at.empty() ? Json(nullptr) : Json(b.finished_at);
    j["error"] = b.error.empty() ? Json(nullptr) : Json(b.error);
    j["oom_killed"] = b.oom_killed;  // Docker's State.OOMKilled
    j["labels"] = b.config.value("labels", Json::object());
    j["restart_count"] = b.restart_count;  // Docker's RestartCount
    Json cfg = b.config;
    cfg.erase("layers");
    j["config"] = cfg;
    Json ports = Json::array();
    for (const auto& p : b.config.value("ports", std::vector<PortMapping>{})) ports.push_back(to_string(p));
    j["ports"] = ports;
    Json mounts = Json::array();
    for (const auto& m : b.config.value("mounts", std::vector<Mount>{})) mounts.push_back(to_string(m));
    j["mounts"] = mounts;
  }
  return j;
}

// ---------------------------------------------------------------------------
// create / start

// A bundle rootfs stands in for an image (CreateOptions::rootfs): no layers
// in the store, no config; the record's image names the directory.
static image::ImageInfo rootfs_image(const std::string& dir) {
  image::ImageInfo i;
  i.ref = "rootfs:" + dir;
  return i;
}

Result<BoxRecord> Runtime::create(const CreateOptions& o) {
  const std::string setting = CUBBY_TRY(isolation_setting(o.isolation));
  if (o.network != "none" && o.network != "default" && o.network != "bridge")
    return fail(Error::invalid("invalid --network \"" + o.network + "\" (want none, default or bridge)"));
  if (o.network == "bridge") CUBBY_TRYV(net::bridge_available());
  if (!o.name.empty() && !valid_name(o.name))
    return fail(Error::invalid("invalid box name \"" + o.name.substr(0, 64) + (o.name.size() > 64 ? "...\"" : "\"") +
                               ": use 1 to 128 characters of [a-zA-Z0-9_.-], starting with a letter or digit"));
  if (o.memory && *o.memory < 6 * 1024 * 1024)
    return fail(Error::invalid("--memory must be at least 6MB"));
  if (o.cpus && !(*o.cpus >= 0.01 && *o.cpus <= 1024))  // also refuses NaN
    return fail(Error::invalid("invalid --cpus " + std::to_string(*o.cpus) + ": want a number from 0.01 to 1024"));
  if (o.pids && (*o.pids < 0 || *o.pids > kMaxPidsLimit))
    return fail(Error::invalid("invalid --pids-limit " + std::to_string(*o.pids) + ": want 1 to " +
                               std::to_string(kMaxPidsLimit) + ", or 0 for no limit"));
  if (!o.hostname.empty() && !valid_hostname(o.hostname))
    return fail(Error::invalid("invalid --hostname \"" + o.hostname.substr(0, 80) + (o.hostname.size() > 80 ? "..." : "") +
                               "\": want 1 to 64 characters of letters, digits, '-' and '.', in labels that "
                               "neither start nor end with '-'"));
  const std::string isolation = setting == "auto" ? auto_isolation().isolation : setting;
  const std::string userns = o.userns.empty() ? "auto" : o.userns;
  if (userns != "auto" && userns != "host")
    return fail(Error::invalid("invalid --userns \"" + o.userns + "\" (want auto or host)"));
  if (userns == "host" && ::geteuid() != 0)
    return fail(Error::invalid("--userns host needs root (a rootless box's root is always you)"));
  if (userns == "host" && isolation == "vm")
    return fail(Error::invalid("--userns host: a vm box has no host user namespace (use --isolation sandbox)"));
  // Read before any lock: the range itself is picked inside the insert.
  std::optional<IdPool> id_pool;
  if (userns == "auto" && isolation == "sandbox" && ::geteuid() == 0) id_pool = CUBBY_TRY(load_id_pool());
  auto mounts = CUBBY_TRY(parse_volumes(o.volumes));
  // The vm backend's volumes are virtio-fs (shim/virtiofs.h): directories
  // only, served by a virtiofsd that must run as root.
  if (!mounts.empty() && isolation == "vm") {
    if (::geteuid() != 0)
      return fail(Error::invalid("-v on the vm backend needs root (its virtiofsd runs as root; use --isolation sandbox)"));
    for (const auto& m : mounts)
      if (!std::filesystem::is_directory(m.source))
        return fail(Error::invalid("-v " + to_string(m) +
                                   ": the vm backend shares directories only (virtio-fs); bind the file's directory"));
  }
  // --isolation vm never falls back (SPEC §1): where KVM cannot boot the
  // guest and TCG was not asked for, refuse before anything is created.
  if (isolation == "vm")
    CUBBY_TRYV(hypervisor::choose_accel(hypervisor::probe(home_), std::getenv("CUBBY_VM_ACCEL")));

  auto found = o.rootfs.empty() ? images_.resolve(o.image) : Result<image::ImageInfo>(rootfs_image(o.rootfs));
  bool by_id = o.image.starts_with("sha256:") ||
               (o.image.size() == 64 && o.image.find_first_not_of("0123456789abcdef") == std::string::npos);
  bool missing = !found && found.error().kind() == ErrorKind::kNotFound;
  if (o.rootfs.empty() && !by_id &&
      ((missing && o.pull == CreateOptions::Pull::kMissing) || o.pull == CreateOptions::Pull::kAlways)) {
    // Not here: pull it, as Docker does. One line either way: a note on
    // success, a single error (naming both failures) otherwise.
    auto pulled = image::pull_image(images_, bin_dir_, home_, o.image);
    if (!pulled && !missing) return fail(Error(pulled.error().kind(), "pull " + o.image + ": " + pulled.error().message()));
    if (!pulled)
      return fail(Error(pulled.error().kind() == ErrorKind::kNotFound ? ErrorKind::kNotFound : pulled.error().kind(),
                        "no such image: " + o.image + " (not found locally; pull: " + pulled.error().message() + ")"));
    if (missing) {
      std::string note = "cubby: unable to find image '" + o.image + "' locally; pulled " + pulled->ref + " (" +
                         pulled->manifest_digest + ")\n";
      (void)!::write(2, note.data(), note.size());
    }
    found = std::move(pulled);
  }
  auto img = CUBBY_TRY(std::move(found));
  BoxSpec spec;
  std::vector<std::string> entry = o.entrypoint ? *o.entrypoint : img.config.entrypoint;
  std::vector<std::string> cmd = !o.cmd.empty() ? o.cmd : (o.entrypoint ? std::vector<std::string>{} : img.config.cmd);
  spec.argv = entry;
  spec.argv.insert(spec.argv.end(), cmd.begin(), cmd.end());
  if (spec.argv.empty()) return fail(Error::invalid("no command specified (the image has no Cmd or Entrypoint)"));
  spec.env = img.config.env;
  for (const auto& e : o.env) {
    std::string kv = e;
    if (kv.find('=') == std::string::npos) {  // "-e NAME" takes NAME from the caller
      const char* v = std::getenv(kv.c_str());
      if (!v) continue;
      kv += std::string("=") + v;
    }
    std::string key = kv.substr(0, kv.find('='));
    if (key.empty()) return fail(Error::invalid("invalid environment variable: " + e));
    std::erase_if(spec.env, [&](const std::string& x) { return x.compare(0, key.size() + 1, key + "=") == 0; });
    spec.env.push_back(kv);
  }
  spec.cwd = !o.cwd.empty() ? o.cwd : (img.config.working_dir.empty() ? "/" : img.config.working_dir);
  if (spec.cwd[0] != '/') return fail(Error::invalid("the working directory must be absolute: " + spec.cwd));
  spec.user = !o.user.empty() ? o.user : img.config.user;
  spec.network = o.network;
  for (const auto& p : o.publish) {
    auto m = CUBBY_TRY(parse_publish(p));
    spec.ports.insert(spec.ports.end(), m.begin(), m.end());
  }
  for (auto [in, out] : {std::pair{&o.allow_net, &spec.allow_net}, std::pair{&o.deny_net, &spec.deny_net}})
    for (const auto& r : *in) out->push_back(net::to_string(CUBBY_TRY(net::parse_egress_rule(r))));
  CUBBY_TRYV(net::parse_egress_policy(spec.allow_net, spec.deny_net));  // the checks across rules (a denied name's port)
  for (const auto& h : o.add_hosts) spec.extra_hosts.push_back(CUBBY_TRY(net::parse_add_host(h)));
  for (const auto& d : o.dns) spec.dns.push_back(CUBBY_TRY(net::parse_dns_server(d)));
  if ((!spec.allow_net.empty() || !spec.deny_net.empty()) && spec.network == "none")
    return fail(Error::invalid("--allow-net and --deny-net need a network (--network default or bridge)"));
  // Domain rules need the box's DNS proxy, which --network default has.
  if (spec.network == "bridge" && net::has_name_rules(CUBBY_TRY(net::parse_egress_policy(spec.allow_net, spec.deny_net))))
    return fail(Error::invalid("--allow-net/--deny-net with a domain name needs --network default (its DNS proxy); "
                               "--network bridge takes addresses and CIDRs only"));
  if (isolation == "vm" && std::any_of(spec.allow_net.begin(), spec.allow_net.end(), [](const std::string& r) {
        return r.rfind(net::kHostName, 0) == 0;
      }))
    return fail(Error::invalid(std::string("--allow-net ") + net::kHostName + " is not supported on the vm backend yet"));
  if (!spec.ports.empty() && spec.network == "none")
    return fail(Error::invalid("-p needs --network default (a box with --network none has no network to publish from)"));
  CUBBY_TRYV(assign_host_ports(spec.ports));
  spec.mounts = std::move(mounts);
  for (const auto& [type, path] : o.join_ns) {
    if (type != "network" && type != "ipc" && type != "uts")
      return fail(Error::invalid("joining a " + type + " namespace is not supported (only network, ipc and uts)"));
    if (path.empty() || path[0] != '/') return fail(Error::invalid("the " + type + " namespace to join must be an absolute path"));
    if (isolation != "sandbox")
      return fail(Error::invalid("joining a " + type + " namespace needs the sandbox backend (a vm box has the guest's own)"));
  }
  if (o.join_ns.count("uts") && !o.hostname.empty())
    return fail(Error::invalid("a box that joins a uts namespace has its hostname: none can be set"));
  if (o.join_ns.count("network") && spec.network != "none")
    return fail(Error::invalid("a box that joins a network namespace takes its network from it: network must be none"));
  spec.join_ns = o.join_ns;
  if (!o.seccomp.empty() && !o.seccomp.well_formed())
    return fail(Error::invalid("seccomp: the box's filter is not a BPF program (1 to 4096 instructions, in hex)"));
  spec.seccomp = o.seccomp;
  CUBBY_TRYV(check_box_fs(o.fs));
  spec.fs = o.fs;
  spec.memory = o.memory;
  spec.cpus = o.cpus;
  if (o.cpu_shares && (*o.cpu_shares < 2 || *o.cpu_shares > 262144))
    return fail(Error::invalid("invalid --cpu-shares " + std::to_string(*o.cpu_shares) + ": want 2 to 262144"));
  spec.cpu_shares = o.cpu_shares;
  for (int c : o.cap_drop) {
    if (c < 0 || c > 63 || !(launch::kDefaultCapabilityMask & (uint64_t{1} << c)))
      return fail(Error::invalid("--cap-drop: capability " + std::to_string(c) + " is not in the default set (no box gets it)"));
    spec.cap_drop |= uint64_t{1} << c;
  }
  // A fork bomb in a box must not exhaust the host's pids: podman's default
  // (where cubby can set limits at all: rootless has no cgroup delegation yet).
  if (!o.pids)
    spec.pids = ::geteuid() == 0 ? std::optional<int64_t>(kDefaultPidsLimit) : std::nullopt;
  else if (*o.pids > 0)
    spec.pids = o.pids;
  spec.userns = userns;
  if (o.log_max_size) {
    if (*o.log_max_size < logfile::kMinMaxSize)
      return fail(Error::invalid("invalid --log-opt max-size " + std::to_string(*o.log_max_size) + ": want at least 4k"));
    spec.log_max_size = *o.log_max_size;
  }
  if (o.log_max_files) {
    if (*o.log_max_files < 1 || *o.log_max_files > logfile::kMaxMaxFiles)
      return fail(Error::invalid("invalid --log-opt max-file " + std::to_string(*o.log_max_files) + ": want 1 to " +
                                 std::to_string(logfile::kMaxMaxFiles)));
    spec.log_max_files = *o.log_max_files;
  }
  spec.labels = o.labels;
  if (!o.restart.empty() && o.restart != "no") {
    // unless-stopped is always here: with no daemon, nothing restarts boxes
    // when the host comes back, so the two do not differ.
    const std::string& r = o.restart;
    if (r == "always" || r == "unless-stopped") {
      spec.restart = "always";
    } else if (r.rfind("on-failure", 0) == 0 && (r.size() == 10 || r[10] == ':')) {
      spec.restart = "on-failure";
      if (r.size() > 10) {
        std::string n = r.substr(11);
        if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos)
          return fail(Error::invalid("invalid --restart \"" + r + "\": the retry count must be a whole number"));
        spec.restart_max = std::stoi(n);
      }
    } else {
      return fail(Error::invalid("invalid --restart \"" + r + "\" (want no, always, unless-stopped or on-failure[:N])"));
    }
    if (o.auto_remove) return fail(Error::invalid("--restart and --rm cannot be combined"));
  }
  spec.auto_remove = o.auto_remove;
  spec.interactive = o.interactive;
  spec.tty = o.tty;
  if (o.tty && std::none_of(spec.env.begin(), spec.env.end(), [](auto& e) { return e.rfind("TERM=", 0) == 0; }))
    spec.env.push_back(std::string("TERM=") + (std::getenv("TERM") ? std::getenv("TERM") : "xterm"));

  // Before anything exists: the agent gets argv and env in one frame (the
  // vm's config, an exec), and execve has bounds of its own.
  if (auto r = msg::check_command_size(spec.argv, spec.env); !r)
    return fail(Error::invalid("the box's " + r.error().message()));

  BoxRecord b;
  b.id = random_id();
  b.name = o.name.empty() ? "box-" + b.id.substr(0, 12) : o.name;
  // A joined uts namespace keeps its owner's hostname: none is set.
  spec.hostname = o.hostname.empty() && !o.join_ns.count("uts") ? b.id.substr(0, 12) : o.hostname;
  b.image = img.ref;
  b.image_id = img.id;
  b.isolation = isolation;
  b.created_at = now_rfc3339();
  // The layers are looked up and recorded under the image store's shared
  // lock: its garbage collection (exclusive) runs either before (they are
  // missing: an error here) or after the record names them (kept).
  CUBBY_TRYV(images_.with_read_lock([&]() -> Result<void> {
    spec.layers = o.rootfs.empty() ? CUBBY_TRY(images_.layer_dirs(img)) : std::vector<std::string>{o.rootfs};
    spec.rootfs_dir = !o.rootfs.empty();
    b.config = spec;
    // The shim gets the spec in one control frame (see ShimConfig); the
    // rest of it (paths of its own) is far below this margin.
    if (size_t n = Json::to_msgpack(b.config).size(); n + kShimConfigMargin > proto::kMaxPayload)
      return fail(Error::invalid("the box's configuration takes " + std::to_string(n >> 10) + " KiB, over the " +
                                 std::to_string((proto::kMaxPayload - kShimConfigMargin) >> 10) +
                                 " KiB a box may have (its command, environment, ports, volumes and layers)"));
    // The record first: if we are killed right after, the box exists as
    // `created` and start()/rm work on it; a directory without a record is
    // an orphan (swept at open).
    if (!id_pool) return db_.insert_box(b);
    // Its id range is claimed in the same write transaction as the record
    // (and freed with it), so concurrent creates get disjoint ranges.
    return db_.insert_box_claiming(b, "ids", [&](const std::vector<Json>& taken) -> Result<Json> {
      std::vector<IdRange> held;
      for (const auto& t : taken) {
        // A range we cannot read might be anywhere: refuse rather than guess.
        if (!t.is_object() || !t.contains("uid") || !t["uid"].is_number_unsigned() || !t.contains("gid") ||
            !t["gid"].is_number_unsigned() || !t.contains("count") || !t["count"].is_number_unsigned())
          return fail(Error::internal("a box record holds a malformed id range: " + t.dump()));
        held.push_back({t["uid"].get<uint32_t>(), t["gid"].get<uint32_t>(), t["count"].get<uint32_t>()});
      }
      return Json(CUBBY_TRY(pick_id_range(*id_pool, held)));
    });
  }));
  CUBBY_TRYV(mkdir_p(box_dir(b.id), 0700));
  write_exec_index(b);
  return b;
}

void Runtime::write_exec_index(const BoxRecord& b) {
  // Only an aid to exec_direct, which falls back to the store without it:
  // a failure here is not the box's.
  (void)write_file(box_dir(b.id) + "/" + kExecDefaults, exec_defaults_json(b.name, b.config.get<BoxSpec>()).dump());
  const std::string tmp = name_file(home_, "." + b.id);
  if (mkdir_p(home_ + "/names", 0700) && write_file(tmp, b.id))
    if (::rename(tmp.c_str(), name_file(home_, b.name).c_str()) < 0) ::unlink(tmp.c_str());
}

Result<StartResult> Runtime::start(const std::string& ref, bool hold, bool tether) {
  return start_record(CUBBY_TRY(resolve(ref)), hold, tether, false);
}

Result<bool> Runtime::start_for_copy(BoxRecord& b) {
  if (b.status == BoxStatus::kRunning) return false;
  auto s = CUBBY_TRY(start_record(b, /*hold=*/true, /*tether=*/true, /*copy_only=*/true));
  if (s.ended) return fail(Error::internal("box " + b.name + " could not be started for the copy: " + s.error));
  b = CUBBY_TRY(resolve(b.id));
  return true;
}

void Runtime::end_copy_start(const BoxRecord& b) {
  // Letting go of the tether stops the box (its workload never ran); the
  // shim then puts the record back. Waited for, so that `cp` returns with
  // the box as it found it.
  tethers_.erase(b.id);
  if (b.shim_pid && b.shim_start)
    if (auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id)) (void)sys::wait_readable(shim->get(), sys::kForever);
}

Result<StartResult> Runtime::start_record(const BoxRecord& b, bool hold, bool tether, bool copy_only) {
  auto shim = CUBBY_TRY(launch_start(b, hold, tether, copy_only, ""));
  return await_start(b, shim, tether);
}

Result<LaunchedShim> Runtime::launch_start(const BoxRecord& b, bool hold, bool tether, bool copy_only,
                                           const std::string& restore_dir) {
  if (b.status == BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is already running"));
  if (b.status == BoxStatus::kRemoving) return fail(Error::conflict("box " + b.name + " is being removed"));
  ShimConfig cfg;
  cfg.home = home_;
  cfg.box_id = b.id;
  cfg.box_dir = box_dir(b.id);
  cfg.agent_path = bin_dir_ + "/cubby-agent";
  cfg.isolation = b.isolation;
  cfg.hold = hold;
  cfg.tether = tether;
  if (const char* t = std::getenv("CUBBY_BOOT_TIMEOUT"); t && *t) {
    char* end = nullptr;
    double sec = std::strtod(t, &end);
    if (*end || !(sec > 0 && sec <= 86400))
      return fail(Error::invalid(std::string("invalid CUBBY_BOOT_TIMEOUT \"") + t + "\" (want seconds, up to 86400)"));
    cfg.boot_timeout_ms = std::max<int64_t>(1, static_cast<int64_t>(sec * 1000));
  }
  cfg.spec = b.config.get<BoxSpec>();
  if (copy_only) {
    // Nothing of the box's runs: no network, no published port to take.
    cfg.copy_only = true;
    cfg.spec.network = "none";
    cfg.spec.ports.clear();
  }
  cfg.restore_dir = restore_dir;
  CUBBY_TRYV(mkdir_p(cfg.box_dir, 0700));
  auto shim = CUBBY_TRY(launch_shim(bin_dir_ + "/" + kShimName, b.id, cfg.box_dir + "/shim.log"));
  CUBBY_TRYV(shim.control.send(Json(cfg)));
  return shim;
}

Result<StartResult> Runtime::await_start(const BoxRecord& b, LaunchedShim& shim, bool tether) {
  // Wait for the shim's verdict; its death (pidfd) ends the wait at once.
  for (;;) {
    int fds[2] = {shim.control.fd(), shim.pidfd.get()};
    int which = CUBBY_TRY(sys::wait_any_readable(fds, sys::kForever));
    auto f = shim.control.recv();
    if (!f) {
      if (which == 0) CUBBY_TRYV(sys::wait_readable(shim.pidfd.get(), sys::kForever));
      CUBBY_TRYV(reconcile());
      auto after = db_.get_box(b.id);
      std::string why = after && *after && !(*after)->error.empty() ? (*after)->error : "cubby-shim exited during start";
      return fail(Error::internal("start box " + b.name + ": " + why));
    }
    const std::string t = f->msg["t"].get<std::string>();
    if (t == "ready") {
      if (tether) tethers_[b.id] = std::move(shim.control);  // its hangup stops the box
      return StartResult{};
    }
    if (t == "exited") {
      // The box ended during start. Wait for the shim so its record is final.
      CUBBY_TRYV(sys::wait_readable(shim.pidfd.get(), sys::kForever));
      return StartResult{true, f->msg.value("code", 0), f->msg.value("msg", std::string())};
    }
    if (t == "failed") {
      CUBBY_TRYV(sys::wait_readable(shim.pidfd.get(), sys::kForever));
      return fail(Error::internal("start box " + b.name + ": " + f->msg.value("msg", std::string("?"))));
    }
  }
}

Result<ExecResult> Runtime::attach_and_wait(const std::string& id, const StdioFds& io) {
  auto b = CUBBY_TRY(resolve(id));
  return attach_record(b, io, /*start=*/true);
}

Result<ExecResult> Runtime::attach(const std::string& ref, const StdioFds& io) {
  auto b = CUBBY_TRY(resolve(ref));
  return attach_record(b, io, /*start=*/false);
}

Result<ExecResult> Runtime::attach_record(const BoxRecord& b, const StdioFds& io, bool start) {
  // Held until the box has ended (or the user detached); every early return
  // drops it, which stops a tethered box: nobody is attached to it any more.
  proto::Conn tether;
  if (auto t = tethers_.extract(b.id)) tether = std::move(t.mapped());
  if (b.status != BoxStatus::kRunning || !b.shim_pid) return fail(Error::conflict("box " + b.name + " is not running"));
  auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id);
  auto t = agent_transport(box_dir(b.id));
  auto conn = proto::connect_and_hello(t);
  std::optional<ExecResult> res;
  if (conn) {
    Json m = {{"t", msg::kAttach}, {"start", start}, {"stdin", io.in >= 0}};
    if (io.tty) {
      if (auto sz = terminal_size(io.in >= 0 ? io.in : io.out)) {
        m["rows"] = sz->first;
        m["cols"] = sz->second;
      }
    }
    CUBBY_TRYV(conn->send(m));
    auto r = stream_session(*conn, io, msg::kKill);
    if (r && r->detached) {
      if (tether.valid()) (void)tether.send({{"t", msg::kUntether}});  // the box runs on without us
      return *r;
    }
    if (r && r->interrupted) return *r;  // the box runs on, unless tethered
    if (r) res = *r;
  }
  // The shim records the final status after cleanup; wait for it to exit.
  if (shim) CUBBY_TRYV(sys::wait_readable(shim->get(), sys::kForever));
  // A tethered box's shim sent its end status before it could remove the
  // record (--rm): the same truth the record holds.
  std::optional<msg::Ended> ended;
  if (tether.valid()) {
    if (auto f = tether.recv(); f && msg::type_of(f->msg) == msg::kEnded) {
      if (auto e = msg::decode<msg::Ended>(f->msg)) ended = *e;
    }
  }
  CUBBY_TRYV(reconcile());
  auto after = CUBBY_TRY(db_.get_box(b.id));
  ExecResult out = res.value_or(ExecResult{});
  if (after && after->exit_code) out.code = *after->exit_code;  // the recorded truth wins
  else if (ended) out.code = ended->code;
  else if (!res) return fail(Error::internal("box " + b.name + " ended without an exit status"));
  // cubby ended the box (e.g. its network could not be kept): say why.
  if (ended && out.code == 125 && out.error.empty()) out.error = ended->msg;
  return out;
}

// ---------------------------------------------------------------------------
// exec

namespace {
// "box web exited (0)": what an exec into a box that is not running says.
Error not_running(const BoxRecord& b) {
  std::string code = b.exit_code ? " (" + std::to_string(*b.exit_code) + ")" : "";
  switch (b.status) {
    case BoxStatus::kExited: return Error::conflict("box " + b.name + " exited" + code);
    case BoxStatus::kStopped: return Error::conflict("box " + b.name + " was stopped" + code);
    case BoxStatus::kCreated: return Error::conflict("box " + b.name + " is not running (created, never started)");
    default: return Error::conflict("box " + b.name + " is not running");
  }
}
}  // namespace

Error Runtime::ended_or(const BoxRecord& b, Error e) {
  // The agent is the box's PID 1: a session cut short is most often the box
  // ending. Its shim then records the status and exits at once; the
  // timeout only bounds a shim that lives on (the box is still running,
  // and the lost connection is the real story).
  if (!b.shim_pid || !b.shim_start) return e;
  auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id);
  if (shim) {
    auto done = sys::wait_readable(shim->get(), std::chrono::seconds(5));
    if (!done || !*done) return e;
  }
  (void)reconcile();
  auto now = db_.get_box(b.id);
  if (!now) return e;
  if (!*now) return Error::conflict("box " + b.name + " ended and was removed");
  if ((*now)->status == BoxStatus::kRunning) return e;
  return not_running(**now);
}

namespace {

// The exec frame for `req` in a box with these defaults.
Result<Json> exec_message(const ExecDefaults& d, const ExecRequest& req, const StdioFds& io) {
  if (req.argv.empty()) return fail(Error::invalid("exec: no command given"));
  std::vector<std::string> env = d.env;
  for (const auto& e : req.env) {
    std::string key = e.substr(0, e.find('='));
    std::erase_if(env, [&](const std::string& x) { return x.compare(0, key.size() + 1, key + "=") == 0; });
    env.push_back(e);
  }
  if (auto r = msg::check_command_size(req.argv, env); !r) return fail(Error::invalid("exec: " + r.error().message()));
  Json m = {{"t", msg::kExec}, {"argv", req.argv}, {"env", env},
            {"cwd", req.cwd.empty() ? d.cwd : req.cwd}, {"user", req.user.empty() ? d.user : req.user},
            {"stdin", req.interactive}, {"detach", req.detach}};
  if (req.timeout) m["timeout_ms"] = req.timeout->count();
  if (req.tty) {
    m["tty"] = true;
    if (auto sz = req.tty_size ? req.tty_size : terminal_size(io.in >= 0 ? io.in : io.out)) {
      m["rows"] = sz->first;
      m["cols"] = sz->second;
    }
    // TERM comes from the caller's terminal unless -e set it.
    bool has_term = std::any_of(req.env.begin(), req.env.end(), [](auto& e) { return e.rfind("TERM=", 0) == 0; });
    if (const char* term = std::getenv("TERM"); term && !has_term) m["env"].push_back(std::string("TERM=") + term);
  }
  return m;
}

// A transport whose one stream is already connected (exec_direct connects
// first, to know the agent took it before anything is sent).
class ConnectedTransport : public proto::Transport {
 public:
  explicit ConnectedTransport(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<UniqueFd> connect() override {
    if (!fd_) return fail(Error::internal("the connection was used already"));
    return std::move(fd_);
  }

 private:
  UniqueFd fd_;
};

// The exec's session, from the hello on, over a connected agent session.
// `lost` explains an error of the session (how the box ended, if it did).
Result<ExecResult> run_exec(proto::Transport& t, const Json& m, const ExecRequest& req, const StdioFds& io,
                            const std::function<Error(Error)>& lost) {
  // The request rides behind the hello in one write: one round trip fewer.
  auto conn = proto::connect_and_hello(t, m);
  if (!conn) return fail(lost(conn.error()));
  if (req.detach) {
    auto f = CUBBY_TRY(conn->recv());
    ExecResult r;
    if (msg::type_of(f.msg) == msg::kStarted) {
      r.exec_id = CUBBY_TRY(msg::decode<msg::Started>(f.msg)).id;
      return r;
    }
    if (msg::type_of(f.msg) == msg::kError) return fail(Error::protocol("agent: " + msg::error_text(f.msg, "?")));
    auto e = CUBBY_TRY(msg::decode<msg::Exit>(f.msg));
    r.code = e.code;
    r.error = e.error.empty() ? "exec failed" : e.error;
    return r;
  }
  StdioFds eio = io;
  if (!req.interactive) eio.in = -1;
  eio.tty = req.tty;
  auto r = stream_session(*conn, eio, msg::kSignal);
  if (!r) return fail(lost(r.error()));
  return r;
}

// Whether a box's workload is paused: a vm box's shim keeps a marker file
// while its vCPUs are stopped; a sandbox box's workload cgroup is frozen
// (a box without a freezer cgroup is never paused). Neither asks the box.
bool box_paused_in(const std::string& dir, const std::string& id) {
  if (::access((dir + "/" + launch::kVmPausedFile).c_str(), F_OK) == 0) return true;
  auto cg = sandbox::Cgroup::open_existing(id);
  return cg && *cg && (*cg)->frozen(sandbox::Leaf::kWorkload).value_or(false);
}

Error paused_error(const std::string& name) {
  return Error::conflict("box " + name + " is paused: unpause it first (cubby unpause " + name + ")");
}

// An exec into a paused box would start a process that cannot run (or,
// in a stopped VM, wait on an agent that cannot answer): refused, as Docker
// and runc refuse it.
Result<void> refuse_paused_exec(const std::string& dir, const std::string& id, const std::string& name) {
  if (box_paused_in(dir, id)) return fail(paused_error(name));
  return {};
}

}  // namespace

Result<ExecResult> Runtime::exec(const std::string& ref, const ExecRequest& req, const StdioFds& io) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(not_running(b));
  CUBBY_TRYV(refuse_paused_exec(box_dir(b.id), b.id, b.name));
  BoxSpec spec = b.config.get<BoxSpec>();
  Json m = CUBBY_TRY(exec_message({b.name, spec.env, spec.cwd, spec.user}, req, io));
  auto t = agent_transport(box_dir(b.id));
  return run_exec(t, m, req, io, [&](Error e) { return ended_or(b, e.wrap("exec in box " + b.name)); });
}

Result<std::optional<ExecResult>> Runtime::exec_direct(const Options& opts, const std::string& ref,
                                                       const ExecRequest& req, const StdioFds& io) {
  const std::optional<ExecResult> slow;
  auto where = CUBBY_TRY(locate(opts));
  std::string id;
  // A name file for a 32-hex ref would make it ambiguous: the store decides.
  const bool named = valid_name(ref) && ::access(name_file(where.home, ref).c_str(), F_OK) == 0;
  if (named && !full_id(ref)) {
    auto text = read_file(name_file(where.home, ref), 64);
    if (!text || !full_id(*text)) return slow;
    id = *text;
  } else if (!named && full_id(ref)) {
    id = ref;
  } else {
    return slow;
  }
  const std::string dir = box_dir_in(where.home, id);
  auto text = read_file(dir + "/" + kExecDefaults, 1u << 20);
  if (!text) return slow;
  ExecDefaults d;
  try {
    Json j = Json::parse(*text);
    d = {j.at("name").get<std::string>(), j.at("env").get<std::vector<std::string>>(), j.at("cwd").get<std::string>(),
         j.at("user").get<std::string>()};
  } catch (const std::exception&) {
    return slow;  // torn or foreign: the store has the truth
  }
  if (named && d.name != ref) return slow;  // a name file a removed box left, its id reused: not ours
  CUBBY_TRYV(refuse_paused_exec(dir, id, d.name));
  Json m = CUBBY_TRY(exec_message(d, req, io));
  auto fd = agent_transport(dir).connect();
  if (!fd) return slow;  // not running (or not yet): nothing was sent
  ConnectedTransport t(std::move(*fd));
  return run_exec(t, m, req, io, [&](Error e) -> Error {
    // The session broke: how the box ended is in the store.
    auto rt = Runtime::open(where);
    if (!rt) return e.wrap("exec in box " + d.name);
    auto b = rt->resolve(id);
    if (!b) return e.wrap("exec in box " + d.name);
    return rt->ended_or(*b, e.wrap("exec in box " + d.name));
  });
}

Result<ExecResult> Runtime::exec_status(const std::string& ref, uint64_t exec_id) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(not_running(b));
  auto t = agent_transport(box_dir(b.id));
  auto conn = CUBBY_TRY(proto::connect_and_hello(t));
  CUBBY_TRYV(conn.send({{"t", msg::kExecStatus}, {"id", exec_id}}));
  auto f = CUBBY_TRY(conn.recv());
  const std::string_view type = msg::type_of(f.msg);
  if (type == msg::kRunning) return fail(Error::conflict("exec " + std::to_string(exec_id) + " is still running"));
  if (type != msg::kExit) return fail(Error::not_found(msg::error_text(f.msg, "no such exec")));
  auto e = CUBBY_TRY(msg::decode<msg::Exit>(f.msg));
  ExecResult r;
  r.exec_id = exec_id;
  r.code = e.code;
  r.signal = e.signal;
  r.timed_out = e.timed_out;
  return r;
}

Result<Runtime::Captured> Runtime::exec_capture(const std::string& ref, const ExecRequest& req,
                                                std::string_view stdin_data, size_t max_bytes) {
  Captured c;
  StdioFds io{-1, -1, -1};
  io.detach_keys = false;
  if (req.interactive) io.stdin_data = stdin_data;
  io.sink = [&](int stream, std::string_view d) {
    std::string& into = stream == 2 ? c.err : c.out;
    bool& cut = stream == 2 ? c.err_truncated : c.out_truncated;
    size_t room = max_bytes - std::min(max_bytes, into.size());
    if (d.size() > room) cut = true;
    into.append(d.substr(0, room));
  };
  c.result = CUBBY_TRY(exec(ref, req, io));
  return c;
}

// ---------------------------------------------------------------------------
// stop / kill / rm / wait

Result<void> Runtime::stop_record(const BoxRecord& b, std::chrono::milliseconds grace) {
  if (b.status != BoxStatus::kRunning || !b.shim_pid || !b.shim_start) return {};
  auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id);
  if (!shim) return end_dead_box(b, "shim died unexpectedly");
  // SIGTERM carries the grace period as its sigqueue value; the shim
  // forwards SIGTERM to the workload and SIGKILLs the box when it expires.
  siginfo_t si{};
  si.si_signo = SIGTERM;
  si.si_code = SI_QUEUE;
  si.si_pid = ::getpid();
  si.si_uid = ::getuid();
  si.si_value.sival_int = static_cast<int>(grace.count());
  CUBBY_TRYV(sys::pidfd_send_signal(shim->get(), SIGTERM, &si));
  // The shim's exit is the event; the timeout is a backstop for a wedged shim.
  auto done = CUBBY_TRY(sys::wait_readable(shim->get(), grace + std::chrono::seconds(20)));
  if (!done) {
    LOG_WARN("box {}: shim did not stop; killing it", b.id);
    (void)sys::pidfd_send_signal(shim->get(), SIGKILL);
    CUBBY_TRYV(sys::wait_readable(shim->get(), std::chrono::seconds(10)));
    auto cur = CUBBY_TRY(db_.get_box(b.id));
    if (cur) CUBBY_TRYV(end_dead_box(*cur, "shim killed after it did not stop"));
  }
  return {};
}

Result<void> Runtime::stop(const std::string& ref, std::chrono::seconds grace) {
  auto b = CUBBY_TRY(resolve(ref));
  return stop_record(b, grace);
}

Result<void> Runtime::kill(const std::string& ref, int sig) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  // A user's kill ends a box for good, whatever its --restart policy (as in
  // Docker): the shim hears so first (SIGUSR1, which only shims of boxes
  // with a policy are sure to read), then the workload gets the signal.
  if (b.config.value("restart", std::string("no")) != "no" && b.shim_pid && b.shim_start)
    if (auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id)) CUBBY_TRYV(sys::pidfd_send_signal(shim->get(), SIGUSR1));
  // A paused box: SIGKILL ends it (the kill, then the thaw that lets it
  // land: a frozen process keeps it pending, as runc does it); a stopped VM
  // runs again first, its agent being the one that signals. Any other
  // signal waits in a frozen workload until unpause; a stopped VM cannot
  // take one at all, so that is refused.
  const bool paused = is_paused(b);
  if (paused && b.isolation == "vm") {
    if (sig != SIGKILL) return fail(paused_error(b.name));
    CUBBY_TRYV(pause(b.id, false));
  }
  auto t = agent_transport(box_dir(b.id));
  auto conn = CUBBY_TRY(proto::connect_and_hello(t));
  CUBBY_TRYV(conn.send({{"t", msg::kKill}, {"sig", sig}}));
  if (paused && b.isolation != "vm" && sig == SIGKILL) CUBBY_TRYV(pause(b.id, false));
  auto f = CUBBY_TRY(conn.recv());
  if (msg::type_of(f.msg) != msg::kOk) return fail(Error::conflict(msg::error_text(f.msg, "kill failed")));
  return {};
}

namespace {
// The disk a directory tree takes (allocated blocks), not following links.
uint64_t disk_usage(const std::string& dir) {
  std::error_code ec;
  uint64_t total = 0;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, std::filesystem::directory_options::skip_permission_denied, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}
}  // namespace

Result<Runtime::Pruned> Runtime::prune_boxes(const std::function<bool(const BoxRecord&)>& match) {
  Pruned out;
  for (const auto& b : CUBBY_TRY(list())) {
    if (b.status == BoxStatus::kRunning || b.status == BoxStatus::kRemoving || (match && !match(b))) continue;
    uint64_t bytes = disk_usage(box_dir(b.id));
    // Without force: a box started since list() is refused, and left.
    if (auto r = remove(b.id, false); !r) {
      if (r.error().kind() == ErrorKind::kConflict) continue;
      return fail(r.error());
    }
    out.removed.push_back(b.id);
    out.bytes += bytes;
  }
  return out;
}

Result<Runtime::Pruned> Runtime::prune_images() {
  Pruned out;
  auto boxes = CUBBY_TRY(list());
  for (const auto& img : CUBBY_TRY(images_.list())) {
    if (std::any_of(boxes.begin(), boxes.end(), [&](const BoxRecord& b) { return b.image_id == img.id; })) continue;
    if (auto r = images_.remove(img.ref); !r) {
      if (r.error().kind() == ErrorKind::kNotFound) continue;  // removed meanwhile
      return fail(r.error());
    }
    out.removed.push_back(img.ref);
    out.bytes += img.size;
  }
  return out;
}

Result<std::unique_ptr<sandbox::Cgroup>> Runtime::running_cgroup(const BoxRecord& b) {
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  if (b.isolation != "sandbox")
    return fail(Error::invalid("box " + b.name + ": update is supported for sandbox boxes only yet"));
  auto cg = CUBBY_TRY(sandbox::Cgroup::open_existing(b.id));
  if (!cg) return fail(Error(ErrorKind::kSystem, "box " + b.name + " has no cgroup"));
  return cg;
}

// A sandbox box's workload cgroup is frozen (its agent keeps running: it
// still answers, and signals queue); a vm box's shim stops the VM's vCPUs
// over QMP, asked through agent.sock (the shim's mux answers kVmPause).
Result<void> Runtime::pause(const std::string& ref, bool paused) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  if (b.isolation != "vm") return CUBBY_TRY(running_cgroup(b))->freeze(sandbox::Leaf::kWorkload, paused);
  auto fd = CUBBY_TRY(agent_transport(box_dir(b.id)).connect());
  proto::Conn conn(std::move(fd));
  CUBBY_TRYV(conn.send({{"t", msg::kVmPause}, {"paused", paused}}));
  auto f = conn.recv();
  if (!f) return fail(f.error().wrap((paused ? "pause box " : "unpause box ") + b.name));
  if (msg::type_of(f->msg) != msg::kOk)
    return fail(Error(ErrorKind::kSystem, "box " + b.name + ": " + msg::error_text(f->msg, "the shim refused")));
  return {};
}

Result<bool> Runtime::paused(const std::string& ref) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  if (b.isolation != "vm") return CUBBY_TRY(running_cgroup(b))->frozen(sandbox::Leaf::kWorkload);
  return is_paused(b);
}

Result<void> Runtime::set_paused(const std::string& ref, bool pause) {
  auto b = CUBBY_TRY(resolve(ref));
  if (CUBBY_TRY(paused(b.id)) == pause)
    return fail(Error::conflict("box " + b.name + (pause ? " is already paused" : " is not paused")));
  return this->pause(b.id, pause);
}

bool Runtime::is_paused(const store::BoxRecord& b) {
  return b.status == BoxStatus::kRunning && box_paused_in(box_dir(b.id), b.id);
}

nlohmann::json Runtime::describe(const store::BoxRecord& b, bool detailed) {
  nlohmann::json j = to_json(b, detailed);
  if (b.status == BoxStatus::kRunning) j["paused"] = is_paused(b);
  return j;
}

bool Runtime::box_paused(const std::string& home, const std::string& id) { return box_paused_in(box_dir_in(home, id), id); }

Result<void> Runtime::update_limits(const std::string& ref, const sandbox::CgroupLimits& limits) {
  auto cg = CUBBY_TRY(running_cgroup(CUBBY_TRY(resolve(ref))));
  return cg->set_limits(limits);
}

Result<void> Runtime::remove(const std::string& ref, bool force) {
  auto b = CUBBY_TRY(resolve(ref));
  // Each pass acts on the record as read. Losing the compare-and-set to
  // `removing` means it changed (a `start` won, its shim ended it): read it
  // again and decide again, so a box that became running is never removed
  // without -f, and with -f is stopped first.
  for (int pass = 0;; ++pass) {
    if (b.status == BoxStatus::kRunning) {
      if (!force)
        return fail(Error::conflict("cannot remove running box " + b.name + ": stop it first or use rm -f"));
      if (pass >= 8) return fail(Error::conflict("box " + b.name + " keeps being started; not removed"));
      CUBBY_TRYV(stop_record(b, std::chrono::milliseconds(0)));
    } else if (CUBBY_TRY(db_.mark_removing(b))) {
      release_leftovers(b.id);
      return finish_removal(b);
    }
    auto now = CUBBY_TRY(db_.get_box(b.id));
    if (!now) return {};  // removed meanwhile (its shim's --rm, another rm)
    b = std::move(*now);
  }
}

Result<BoxRecord> Runtime::wait(const std::string& ref) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status == BoxStatus::kRunning && b.shim_pid && b.shim_start) {
    if (auto shim = open_shim(*b.shim_pid, *b.shim_start, b.id))
      CUBBY_TRYV(sys::wait_readable(shim->get(), sys::kForever));
    CUBBY_TRYV(reconcile());
  }
  auto after = CUBBY_TRY(db_.get_box(b.id));
  if (!after) {
    b.status = BoxStatus::kExited;  // removed on exit (--rm); report what we saw
    return b;
  }
  return *after;
}

// ---------------------------------------------------------------------------
// logs

Result<void> Runtime::logs(const std::string& ref, bool follow, int out_fd, int err_fd, bool console) {
  LogsOptions o;
  o.follow = follow;
  o.console = console;
  return logs(ref, o, out_fd, err_fd);
}

Result<void> Runtime::logs(const std::string& ref, const LogsOptions& o, int out_fd, int err_fd) {
  return logs(ref, o, [&](int stream, std::string_view d) {
    (void)sys::write_all(stream == 1 ? out_fd : err_fd, d.data(), d.size());
    return true;
  });
}

Result<void> Runtime::logs(const std::string& ref, bool follow, const LogSink& sink, bool console) {
  LogsOptions o;
  o.follow = follow;
  o.console = console;
  return logs(ref, o, sink);
}

Result<void> Runtime::logs(const std::string& ref, const LogsOptions& o, const LogSink& sink) {
  const bool follow = o.follow;
  LogLines lines(o, sink);
  auto b = CUBBY_TRY(resolve(ref));
  const std::string dir = box_dir(b.id);
  UniqueFd dirfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dirfd && errno == ENOENT) return {};
  if (!dirfd) return sys_fail("open " + dir);
  UniqueFd inotify, shim;
  if (follow && b.status == BoxStatus::kRunning && b.shim_pid) {
    auto s = open_shim(*b.shim_pid, *b.shim_start, b.id);
    if (s) shim = std::move(*s);
    if (shim) {
      // The directory, not the file: box.log is renamed away when it rotates.
      inotify.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
      ::inotify_add_watch(inotify.get(), dir.c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO);
    }
  }
  // The files, oldest first: box.log.(N-1) ... box.log.1, box.log (the
  // shim's BoxLog rotates them; proto/logfile.h). A file is opened without
  // following a symlink and read to its end; a record never spans two files.
  auto open_log = [&](int i) { return UniqueFd(::openat(dirfd.get(), logfile::file_name(i).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)); };
  auto inode = [](int fd) {
    struct stat st;
    return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
  };
  std::string buf;
  bool stopped = false;  // the sink wants no more
  auto pump = [&](int fd, const std::string& name) -> Result<void> {
    char tmp[65536];
    for (;;) {
      ssize_t n = ::read(fd, tmp, sizeof tmp);
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_fail("read " + dir + "/" + name);
      }
      if (n == 0) return {};
      buf.append(tmp, static_cast<size_t>(n));
      size_t pos = 0;
      bool ok = logfile::parse_stamped_records(buf, pos, [&](int stream, int64_t t, std::string_view d) {
        if (!lines.stopped()) lines.record(stream, t, d);
      });
      if (lines.stopped()) stopped = true;
      if (!ok) return fail(Error::invalid("corrupt box log " + dir + "/" + name));
      if (stopped) return {};
      buf.erase(0, pos);
    }
  };
  // box.log is opened before the rotated files are read, so a rotation
  // meanwhile makes it one of them: reading rotated files from..1 stops at
  // it (read as cur), never reading it twice.
  UniqueFd cur = open_log(0);  // none yet: the shim creates it as it starts the box
  auto read_rotated = [&](int from) -> Result<void> {
    for (int i = from; i >= 1 && !stopped; --i) {
      UniqueFd f = open_log(i);
      if (!f) continue;
      if (cur && inode(f.get()) == inode(cur.get())) break;
      buf.clear();
      CUBBY_TRYV(pump(f.get(), logfile::file_name(i)));
    }
    buf.clear();
    return cur && !stopped ? pump(cur.get(), logfile::file_name(0)) : Result<void>{};
  };
  CUBBY_TRYV(read_rotated(logfile::kMaxMaxFiles));
  lines.end_of_history();
  if (lines.stopped()) stopped = true;
  // After a rotation the file we hold is box.log.K (or gone, when we fell
  // more than max-file files behind): finish it, then everything newer.
  auto follow_rotation = [&]() -> Result<void> {
    for (;;) {
      struct stat now;
      if (!cur || ::fstatat(dirfd.get(), "box.log", &now, AT_SYMLINK_NOFOLLOW) < 0 || now.st_ino == inode(cur.get())) return {};
      CUBBY_TRYV(pump(cur.get(), "box.log"));
      // Renames move a file up one name at a time, top first: scanning
      // upwards finds it (every name: one may be missing mid-rotation).
      int k = logfile::kMaxMaxFiles + 1;
      for (int i = 1; i <= logfile::kMaxMaxFiles; ++i) {
        struct stat st;
        if (::fstatat(dirfd.get(), logfile::file_name(i).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_ino == inode(cur.get())) {
          k = i;
          break;
        }
      }
      cur = open_log(0);
      CUBBY_TRYV(read_rotated(std::min(k - 1, logfile::kMaxMaxFiles)));
    }
  };
  while (shim && !stopped) {
    // o.reader_fd: a pipe's write end polls POLLERR once its reader is gone.
    int fds[3] = {inotify.get(), shim.get(), o.reader_fd};
    int which = CUBBY_TRY(sys::wait_any_readable(fds, sys::kForever));
    if (which == 2) break;
    if (which == 0) {
      char ev[4096];
      while (::read(inotify.get(), ev, sizeof ev) > 0) {
      }
    }
    if (!cur) cur = open_log(0);
    if (cur) CUBBY_TRYV(pump(cur.get(), "box.log"));
    CUBBY_TRYV(follow_rotation());
    if (which == 1) break;  // the box ended; everything it wrote is read
  }
  return {};
}

// ---------------------------------------------------------------------------

Result<std::string> Runtime::isolation_setting(const std::string& requested) const {
  std::string value = requested, from = "--isolation";
  if (value.empty()) {
    if (const char* e = std::getenv("CUBBY_ISOLATION"); e && *e) {
      value = e;
      from = "CUBBY_ISOLATION";
    }
  }
  if (value.empty()) {
    // config.json is the registry configuration's file too; only this key is read here.
    if (auto text = read_file(image::config_path(home_), 1 << 20)) {
      auto j = Json::parse(*text, nullptr, false);
      if (auto it = j.is_object() ? j.find("isolation") : j.end(); it != j.end()) {
        from = image::config_path(home_) + " \"isolation\"";
        if (!it->is_string()) return fail(Error::invalid(from + " must be a string (auto, vm or sandbox)"));
        value = it->get<std::string>();
      }
    }
  }
  if (value.empty()) return std::string("auto");
  if (value != "auto" && value != "sandbox" && value != "vm")
    return fail(Error::invalid("invalid " + from + " \"" + value + "\" (want auto, vm or sandbox)"));
  return value;
}

IsolationChoice Runtime::auto_isolation() const {
  const auto& kvm = hypervisor::probe(home_);
  if (kvm.usable) return {"vm", "KVM works here"};
  return {"sandbox", kvm.reason};
}

Json Runtime::info() {
  const auto& kvm = hypervisor::probe(home_);
  auto setting = isolation_setting("");
  IsolationChoice chosen = auto_isolation();
  if (setting && *setting != "auto") chosen = {*setting, "set by CUBBY_ISOLATION or config.json"};
  bool vsock = ::access("/dev/vhost-vsock", R_OK | W_OK) == 0;
  auto cg = sandbox::detect_cgroup_version();
  return {{"version", CUBBY_VERSION},
          {"home", home_},
          {"kvm", {{"present", kvm.present}, {"usable", kvm.usable}, {"kind", kvm.kind}, {"reason", kvm.reason}}},
          {"vhost_vsock", vsock},
          {"default_isolation", chosen.isolation},
          {"default_isolation_reason", chosen.why},
          {"isolations", Json::array({"sandbox", "vm"})},
          {"cgroup_version", cg == sandbox::CgroupVersion::kV2 ? Json(2) : cg == sandbox::CgroupVersion::kV1 ? Json(1) : Json(nullptr)},
          {"rootless", ::geteuid() != 0},
          {"bin_dir", bin_dir_}};
}

}  // namespace cubby
