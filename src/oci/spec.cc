// Strict decoding of config.json: see spec.h for why nothing is skipped.
#include "oci/spec.h"

#include <sys/resource.h>

#include <algorithm>
#include <map>
#include <set>

#include "base/fs.h"

namespace cubby::oci {
namespace {

using nlohmann::json;

// Decoding errors carry the key path; thrown inside this file only and
// turned into one Result error at the boundary (parse_spec).
struct Refused {
  std::string msg;
};

[[noreturn]] void refuse(const std::string& path, const std::string& why) { throw Refused{path + ": " + why}; }
[[noreturn]] void unsupported(const std::string& path) { refuse(path, "not supported by cubby-runc yet"); }

// A JSON object whose keys must all be known: `known` are decoded by the
// caller, everything else is refused by name. Keys whose value is null or
// empty are accepted as absent (generators write "hooks": {} and "seccomp":
// null for "none").
void only_keys(const json& j, const std::string& path, const std::set<std::string>& known) {
  if (!j.is_object()) refuse(path, "must be an object");
  for (const auto& [k, v] : j.items()) {
    if (known.count(k)) continue;
    if (v.is_null() || (v.is_object() && v.empty()) || (v.is_array() && v.empty())) continue;
    unsupported(path.empty() ? k : path + "." + k);
  }
}

std::string str(const json& j, const std::string& path) {
  if (!j.is_string()) refuse(path, "must be a string");
  return j.get<std::string>();
}
bool boolean(const json& j, const std::string& path) {
  if (!j.is_boolean()) refuse(path, "must be a boolean");
  return j.get<bool>();
}
std::vector<std::string> strings(const json& j, const std::string& path) {
  if (!j.is_array()) refuse(path, "must be an array of strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) {
    std::string s = str(j[i], path + "[" + std::to_string(i) + "]");
    if (s.find('\0') != std::string::npos) refuse(path, "contains a NUL byte");
    out.push_back(std::move(s));
  }
  return out;
}
template <typename T>
T integer(const json& j, const std::string& path) {
  if (!j.is_number_integer()) refuse(path, "must be an integer");
  if constexpr (std::is_unsigned_v<T>) {
    if (j.is_number_unsigned()) {
      auto v = j.get<uint64_t>();
      if (v > std::numeric_limits<T>::max()) refuse(path, "out of range");
      return static_cast<T>(v);
    }
    auto v = j.get<int64_t>();
    if (v < 0 || static_cast<uint64_t>(v) > std::numeric_limits<T>::max()) refuse(path, "out of range");
    return static_cast<T>(v);
  } else {
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max()))
      refuse(path, "out of range");
    auto v = j.get<int64_t>();
    if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) refuse(path, "out of range");
    return static_cast<T>(v);
  }
}

const std::vector<std::string> kCaps = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE"};

const std::map<std::string, int> kRlimits = {
    {"RLIMIT_CPU", RLIMIT_CPU},       {"RLIMIT_FSIZE", RLIMIT_FSIZE},     {"RLIMIT_DATA", RLIMIT_DATA},
    {"RLIMIT_STACK", RLIMIT_STACK},   {"RLIMIT_CORE", RLIMIT_CORE},       {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},   {"RLIMIT_NOFILE", RLIMIT_NOFILE},   {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},
    {"RLIMIT_AS", RLIMIT_AS},         {"RLIMIT_LOCKS", RLIMIT_LOCKS},     {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE}, {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},
    {"RLIMIT_RTTIME", RLIMIT_RTTIME}};

// The mount types runc's default spec and containerd's generated spec use.
const std::vector<std::string> kMountTypes = {"proc", "tmpfs", "bind", "sysfs", "devpts", "mqueue", "cgroup"};
const std::vector<std::string> kNamespaces = {"pid", "network", "ipc", "uts", "mount", "cgroup"};

std::vector<int> cap_list(const json& j, const std::string& path) {
  std::vector<int> out;
  for (const auto& name : strings(j, path)) {
    int n = capability_number(name);
    if (n < 0) refuse(path, "unknown capability \"" + name + "\"");
    out.push_back(n);
  }
  return out;
}

Process decode_process(const json& j, const std::string& p) {
  only_keys(j, p, {"terminal", "user", "args", "env", "cwd", "capabilities", "rlimits", "noNewPrivileges",
                   "consoleSize", "oomScoreAdj"});
  Process out;
  if (j.contains("terminal")) out.terminal = boolean(j["terminal"], p + ".terminal");
  if (j.contains("consoleSize") && !j["consoleSize"].is_null()) {
    // The terminal's first size (later ones come as resizes of the master).
    const auto& c = j["consoleSize"];
    only_keys(c, p + ".consoleSize", {"height", "width"});
    out.console_size = std::pair<int, int>{integer<uint16_t>(c.value("height", json(0)), p + ".consoleSize.height"),
                                           integer<uint16_t>(c.value("width", json(0)), p + ".consoleSize.width")};
  }
  if (j.contains("user")) {
    const auto& u = j["user"];
    const std::string up = p + ".user";
    only_keys(u, up, {"uid", "gid", "additionalGids", "umask"});
    // podman writes 0022, the umask every box process has (the agent's).
    if (u.contains("umask") && !u["umask"].is_null() && integer<uint32_t>(u["umask"], up + ".umask") != 022)
      refuse(up + ".umask", "a umask other than 0022 is not supported by cubby-runc yet");
    if (u.contains("uid")) out.user.uid = integer<uint32_t>(u["uid"], up + ".uid");
    if (u.contains("gid")) out.user.gid = integer<uint32_t>(u["gid"], up + ".gid");
    if (u.contains("additionalGids") && !u["additionalGids"].is_null()) {
      if (!u["additionalGids"].is_array()) refuse(up + ".additionalGids", "must be an array");
      for (const auto& g : u["additionalGids"]) out.user.additional_gids.push_back(integer<uint32_t>(g, up + ".additionalGids"));
    }
  }
  if (!j.contains("args")) refuse(p + ".args", "is required");
  out.args = strings(j["args"], p + ".args");
  if (out.args.empty()) refuse(p + ".args", "must not be empty");
  if (j.contains("env") && !j["env"].is_null()) out.env = strings(j["env"], p + ".env");
  if (j.contains("cwd")) out.cwd = str(j["cwd"], p + ".cwd");
  if (out.cwd.empty() || out.cwd[0] != '/') refuse(p + ".cwd", "must be an absolute path");
  if (j.contains("capabilities") && !j["capabilities"].is_null()) {
    const auto& c = j["capabilities"];
    const std::string cp = p + ".capabilities";
    only_keys(c, cp, {"bounding", "effective", "inheritable", "permitted", "ambient"});
    Capabilities caps;
    auto get = [&](const char* k, std::vector<int>& dst) {
      if (c.contains(k) && !c[k].is_null()) dst = cap_list(c[k], cp + "." + k);
    };
    get("bounding", caps.bounding);
    get("effective", caps.effective);
    get("inheritable", caps.inheritable);
    get("permitted", caps.permitted);
    get("ambient", caps.ambient);
    out.capabilities = std::move(caps);
  }
  if (j.contains("rlimits") && !j["rlimits"].is_null()) {
    if (!j["rlimits"].is_array()) refuse(p + ".rlimits", "must be an array");
    for (size_t i = 0; i < j["rlimits"].size(); ++i) {
      const auto& r = j["rlimits"][i];
      const std::string rp = p + ".rlimits[" + std::to_string(i) + "]";
      only_keys(r, rp, {"type", "soft", "hard"});
      Rlimit rl;
      rl.type = str(r.value("type", json()), rp + ".type");
      auto it = kRlimits.find(rl.type);
      if (it == kRlimits.end()) refuse(rp + ".type", "unknown rlimit \"" + rl.type + "\"");
      rl.resource = it->second;
      rl.soft = integer<uint64_t>(r.value("soft", json()), rp + ".soft");
      rl.hard = integer<uint64_t>(r.value("hard", json()), rp + ".hard");
      if (rl.soft > rl.hard) refuse(rp, "soft limit above the hard limit");
      out.rlimits.push_back(rl);
    }
  }
  if (j.contains("oomScoreAdj") && !j["oomScoreAdj"].is_null()) {
    int v = integer<int>(j["oomScoreAdj"], p + ".oomScoreAdj");
    if (v < -1000 || v > 1000) refuse(p + ".oomScoreAdj", "must be between -1000 and 1000");
    out.oom_score_adj = v;
  }
  if (j.contains("noNewPrivileges")) out.no_new_privileges = boolean(j["noNewPrivileges"], p + ".noNewPrivileges");
  return out;
}

void decode_resources(const json& j, Resources& r) {
  const std::string p = "linux.resources";
  only_keys(j, p, {"devices", "memory", "pids", "cpu", "blockIO"});
  if (j.contains("blockIO") && !j["blockIO"].is_null()) {
    // Docker writes {"weight": 0}: no block I/O limit, which is cubby's.
    only_keys(j["blockIO"], p + ".blockIO", {"weight"});
    if (j["blockIO"].contains("weight") && integer<uint16_t>(j["blockIO"]["weight"], p + ".blockIO.weight") != 0)
      refuse(p + ".blockIO.weight", "block I/O weights are not supported by cubby-runc yet");
  }
  if (j.contains("devices") && !j["devices"].is_null()) {
    // Decoded here, judged in box_options.cc (what the box's /dev holds).
    const auto& d = j["devices"];
    if (!d.is_array()) refuse(p + ".devices", "must be an array");
    for (size_t i = 0; i < d.size(); ++i) {
      const std::string dp = p + ".devices[" + std::to_string(i) + "]";
      only_keys(d[i], dp, {"allow", "access", "type", "major", "minor"});
      DeviceRule rule;
      if (!d[i].contains("allow")) refuse(dp + ".allow", "is required");
      rule.allow = boolean(d[i]["allow"], dp + ".allow");
      if (d[i].contains("type") && !d[i]["type"].is_null()) rule.type = str(d[i]["type"], dp + ".type");
      if (rule.type != "a" && rule.type != "c" && rule.type != "b") refuse(dp + ".type", "must be a, c or b");
      if (d[i].contains("access") && !d[i]["access"].is_null()) rule.access = str(d[i]["access"], dp + ".access");
      if (rule.access.empty() || rule.access.find_first_not_of("rwm") != std::string::npos)
        refuse(dp + ".access", "must be letters of rwm");
      if (d[i].contains("major") && !d[i]["major"].is_null()) rule.major = integer<int64_t>(d[i]["major"], dp + ".major");
      if (d[i].contains("minor") && !d[i]["minor"].is_null()) rule.minor = integer<int64_t>(d[i]["minor"], dp + ".minor");
      // -1 is how some generators write "any".
      if (rule.major == -1) rule.major.reset();
      if (rule.minor == -1) rule.minor.reset();
      r.devices.push_back(rule);
    }
  }
  if (j.contains("memory") && !j["memory"].is_null()) {
    const auto& m = j["memory"];
    only_keys(m, p + ".memory", {"limit", "swap", "disableOOMKiller"});
    if (m.contains("disableOOMKiller") && boolean(m["disableOOMKiller"], p + ".memory.disableOOMKiller"))
      refuse(p + ".memory.disableOOMKiller", "true is not supported by cubby-runc yet");
    if (m.contains("limit")) r.memory_limit = integer<int64_t>(m["limit"], p + ".memory.limit");
    if (m.contains("swap")) r.memory_swap = integer<int64_t>(m["swap"], p + ".memory.swap");
  }
  if (j.contains("pids") && !j["pids"].is_null()) {
    only_keys(j["pids"], p + ".pids", {"limit"});
    r.pids_limit = integer<int64_t>(j["pids"].value("limit", json()), p + ".pids.limit");
  }
  if (j.contains("cpu") && !j["cpu"].is_null()) {
    const auto& c = j["cpu"];
    only_keys(c, p + ".cpu", {"shares", "quota", "period", "cpus", "mems"});
    for (const char* k : {"cpus", "mems"})
      if (c.contains(k) && !str(c[k], p + ".cpu." + k).empty())
        refuse(p + ".cpu." + k, "cpuset limits are not supported by cubby-runc yet");
    // 0 is how Docker and containerd write "not set".
    if (c.contains("shares") && integer<uint64_t>(c["shares"], p + ".cpu.shares") != 0)
      r.cpu_shares = integer<uint64_t>(c["shares"], p + ".cpu.shares");
    if (c.contains("quota")) r.cpu_quota = integer<int64_t>(c["quota"], p + ".cpu.quota");
    if (c.contains("period")) r.cpu_period = integer<uint64_t>(c["period"], p + ".cpu.period");
  }
}

// linux.seccomp as the spec has it; actions, operators and names are
// judged when it is compiled (sandbox/seccomp_profile.h).
sandbox::SeccompProfile decode_seccomp(const json& sc) {
  const std::string p = "linux.seccomp";
  only_keys(sc, p, {"defaultAction", "defaultErrnoRet", "architectures", "flags", "syscalls", "listenerPath",
                    "listenerMetadata"});
  sandbox::SeccompProfile out;
  if (sc.contains("listenerPath") && !sc["listenerPath"].is_null() && !str(sc["listenerPath"], p + ".listenerPath").empty())
    refuse(p + ".listenerPath", "a seccomp agent (SCMP_ACT_NOTIFY) is not supported by cubby-runc");
  if (sc.contains("listenerMetadata") && !sc["listenerMetadata"].is_null() &&
      !str(sc["listenerMetadata"], p + ".listenerMetadata").empty())
    refuse(p + ".listenerMetadata", "a seccomp agent (SCMP_ACT_NOTIFY) is not supported by cubby-runc");
  if (!sc.contains("defaultAction")) refuse(p + ".defaultAction", "is required");
  out.default_action = str(sc["defaultAction"], p + ".defaultAction");
  if (sc.contains("defaultErrnoRet") && !sc["defaultErrnoRet"].is_null())
    out.default_errno_ret = integer<uint32_t>(sc["defaultErrnoRet"], p + ".defaultErrnoRet");
  if (sc.contains("architectures") && !sc["architectures"].is_null())
    out.architectures = strings(sc["architectures"], p + ".architectures");
  if (sc.contains("flags") && !sc["flags"].is_null()) out.flags = strings(sc["flags"], p + ".flags");
  if (sc.contains("syscalls") && !sc["syscalls"].is_null()) {
    const auto& calls = sc["syscalls"];
    if (!calls.is_array()) refuse(p + ".syscalls", "must be an array");
    for (size_t i = 0; i < calls.size(); ++i) {
      const auto& c = calls[i];
      const std::string cp = p + ".syscalls[" + std::to_string(i) + "]";
      only_keys(c, cp, {"names", "action", "errnoRet", "args"});
      sandbox::SeccompRule rule;
      if (!c.contains("names")) refuse(cp + ".names", "is required");
      rule.names = strings(c["names"], cp + ".names");
      if (rule.names.empty()) refuse(cp + ".names", "must not be empty");
      if (!c.contains("action")) refuse(cp + ".action", "is required");
      rule.action = str(c["action"], cp + ".action");
      if (c.contains("errnoRet") && !c["errnoRet"].is_null()) rule.errno_ret = integer<uint32_t>(c["errnoRet"], cp + ".errnoRet");
      if (c.contains("args") && !c["args"].is_null()) {
        if (!c["args"].is_array()) refuse(cp + ".args", "must be an array");
        for (size_t k = 0; k < c["args"].size(); ++k) {
          const auto& a = c["args"][k];
          const std::string ap = cp + ".args[" + std::to_string(k) + "]";
          only_keys(a, ap, {"index", "value", "valueTwo", "op"});
          sandbox::SeccompArg arg;
          if (!a.contains("index")) refuse(ap + ".index", "is required");
          arg.index = integer<uint32_t>(a["index"], ap + ".index");
          if (!a.contains("value")) refuse(ap + ".value", "is required");
          arg.value = integer<uint64_t>(a["value"], ap + ".value");
          if (a.contains("valueTwo") && !a["valueTwo"].is_null()) arg.value_two = integer<uint64_t>(a["valueTwo"], ap + ".valueTwo");
          if (!a.contains("op")) refuse(ap + ".op", "is required");
          arg.op = str(a["op"], ap + ".op");
          rule.args.push_back(std::move(arg));
        }
      }
      out.syscalls.push_back(std::move(rule));
    }
  }
  return out;
}

Linux decode_linux(const json& j) {
  only_keys(j, "linux", {"namespaces", "maskedPaths", "readonlyPaths", "resources", "cgroupsPath",
                         "rootfsPropagation", "sysctl", "seccomp"});
  Linux out;
  if (j.contains("sysctl") && !j["sysctl"].is_null()) {
    if (!j["sysctl"].is_object()) refuse("linux.sysctl", "must be an object");
    for (const auto& [k, v] : j["sysctl"].items()) out.sysctl[k] = str(v, "linux.sysctl." + k);
  }
  if (j.contains("seccomp") && !j["seccomp"].is_null() && !(j["seccomp"].is_object() && j["seccomp"].empty()))
    out.seccomp = decode_seccomp(j["seccomp"]);
  if (j.contains("namespaces") && !j["namespaces"].is_null()) {
    if (!j["namespaces"].is_array()) refuse("linux.namespaces", "must be an array");
    std::set<std::string> seen;
    for (size_t i = 0; i < j["namespaces"].size(); ++i) {
      const auto& n = j["namespaces"][i];
      const std::string np = "linux.namespaces[" + std::to_string(i) + "]";
      only_keys(n, np, {"type", "path"});
      Namespace ns;
      ns.type = str(n.value("type", json()), np + ".type");
      if (ns.type == "user") refuse(np, "user namespaces from config.json (uidMappings) are not supported by cubby-runc yet");
      if (std::find(kNamespaces.begin(), kNamespaces.end(), ns.type) == kNamespaces.end())
        refuse(np + ".type", "unknown namespace \"" + ns.type + "\"");
      if (!seen.insert(ns.type).second) refuse(np, "namespace \"" + ns.type + "\" given twice");
      if (n.contains("path") && !n["path"].is_null()) ns.path = str(n["path"], np + ".path");
      if (!ns.path.empty() && ns.path[0] != '/') refuse(np + ".path", "must be an absolute path");
      out.namespaces.push_back(std::move(ns));
    }
  }
  auto paths = [&](const char* k, std::vector<std::string>& dst) {
    if (!j.contains(k) || j[k].is_null()) return;
    dst = strings(j[k], std::string("linux.") + k);
    for (const auto& s : dst)
      if (s.empty() || s[0] != '/') refuse(std::string("linux.") + k, "\"" + s + "\" is not an absolute path");
  };
  paths("maskedPaths", out.masked_paths);
  paths("readonlyPaths", out.readonly_paths);
  if (j.contains("resources") && !j["resources"].is_null()) decode_resources(j["resources"], out.resources);
  if (j.contains("cgroupsPath")) out.cgroups_path = str(j["cgroupsPath"], "linux.cgroupsPath");
  if (j.contains("rootfsPropagation")) {
    out.rootfs_propagation = str(j["rootfsPropagation"], "linux.rootfsPropagation");
    const std::set<std::string> ok = {"", "private", "rprivate", "slave", "rslave"};
    if (!ok.count(out.rootfs_propagation)) refuse("linux.rootfsPropagation", "\"" + out.rootfs_propagation + "\" is not supported by cubby-runc yet");
  }
  return out;
}

// hooks.<phase>[i]: every key decoded; judged where it runs (main.cc).
std::vector<Hook> decode_hooks(const json& j, const std::string& p) {
  if (!j.is_array()) refuse(p, "must be an array");
  std::vector<Hook> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const std::string hp = p + "[" + std::to_string(i) + "]";
    only_keys(j[i], hp, {"path", "args", "env", "timeout"});
    Hook h;
    if (!j[i].contains("path")) refuse(hp + ".path", "is required");
    h.path = str(j[i]["path"], hp + ".path");
    if (h.path.empty() || h.path[0] != '/') refuse(hp + ".path", "must be an absolute path");
    if (j[i].contains("args") && !j[i]["args"].is_null()) h.args = strings(j[i]["args"], hp + ".args");
    if (j[i].contains("env") && !j[i]["env"].is_null()) h.env = strings(j[i]["env"], hp + ".env");
    if (j[i].contains("timeout") && !j[i]["timeout"].is_null()) {
      h.timeout = integer<int>(j[i]["timeout"], hp + ".timeout");
      if (*h.timeout <= 0) refuse(hp + ".timeout", "must be greater than zero");
    }
    out.push_back(std::move(h));
  }
  return out;
}

Hooks decode_all_hooks(const json& j) {
  only_keys(j, "hooks", {"prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"});
  Hooks h;
  auto get = [&](const char* k, std::vector<Hook>& dst) {
    if (j.contains(k) && !j[k].is_null()) dst = decode_hooks(j[k], std::string("hooks.") + k);
  };
  get("prestart", h.prestart);
  get("createRuntime", h.create_runtime);
  get("createContainer", h.create_container);
  get("startContainer", h.start_container);
  get("poststart", h.poststart);
  get("poststop", h.poststop);
  return h;
}

Mount decode_mount(const json& j, const std::string& p) {
  only_keys(j, p, {"destination", "type", "source", "options"});
  Mount m;
  m.destination = str(j.value("destination", json()), p + ".destination");
  if (m.destination.empty() || m.destination[0] != '/') refuse(p + ".destination", "must be an absolute path");
  if (j.contains("type")) m.type = str(j["type"], p + ".type");
  if (j.contains("source")) m.source = str(j["source"], p + ".source");
  if (j.contains("options") && !j["options"].is_null()) m.options = strings(j["options"], p + ".options");
  // runc treats a mount with a "bind"/"rbind" option as a bind, whatever its type says.
  bool bind = std::any_of(m.options.begin(), m.options.end(), [](const std::string& o) { return o == "bind" || o == "rbind"; });
  if (bind) m.type = "bind";
  if (std::find(kMountTypes.begin(), kMountTypes.end(), m.type) == kMountTypes.end())
    refuse(p + ".type", "mount type \"" + m.type + "\" is not supported by cubby-runc yet");
  if (m.type == "bind" && (m.source.empty() || m.source[0] != '/'))
    refuse(p + ".source", "a bind mount needs an absolute source");
  return m;
}

}  // namespace

// state.json keeps the hooks that run after create (start's and delete's),
// so a bundle changed or gone by then changes nothing.
void to_json(json& j, const Hook& h) {
  j = {{"path", h.path}, {"args", h.args}, {"env", h.env}};
  if (h.timeout) j["timeout"] = *h.timeout;
}
void from_json(const json& j, Hook& h) {
  h.path = j.at("path").get<std::string>();
  h.args = j.value("args", std::vector<std::string>{});
  h.env = j.value("env", std::vector<std::string>{});
  if (j.contains("timeout")) h.timeout = j["timeout"].get<int>();
}
void to_json(json& j, const Hooks& h) {
  j = {{"prestart", h.prestart},         {"createRuntime", h.create_runtime}, {"createContainer", h.create_container},
       {"startContainer", h.start_container}, {"poststart", h.poststart},         {"poststop", h.poststop}};
}
void from_json(const json& j, Hooks& h) {
  h.prestart = j.value("prestart", std::vector<Hook>{});
  h.create_runtime = j.value("createRuntime", std::vector<Hook>{});
  h.create_container = j.value("createContainer", std::vector<Hook>{});
  h.start_container = j.value("startContainer", std::vector<Hook>{});
  h.poststart = j.value("poststart", std::vector<Hook>{});
  h.poststop = j.value("poststop", std::vector<Hook>{});
}

int capability_number(const std::string& name) {
  auto it = std::find(kCaps.begin(), kCaps.end(), name);
  return it == kCaps.end() ? -1 : static_cast<int>(it - kCaps.begin());
}
std::vector<std::string> capability_names() { return kCaps; }
std::vector<std::string> supported_mount_types() { return kMountTypes; }
std::vector<std::string> supported_namespaces() { return kNamespaces; }

Result<Spec> parse_spec(const std::string& text, const std::string& bundle) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(Error::invalid("config.json: not valid JSON"));
  try {
    only_keys(j, "", {"ociVersion", "root", "process", "hostname", "mounts", "linux", "annotations", "hooks"});
    Spec s;
    s.oci_version = str(j.value("ociVersion", json()), "ociVersion");
    if (s.oci_version.rfind("1.", 0) != 0) refuse("ociVersion", "\"" + s.oci_version + "\" is not a 1.x version");
    if (!j.contains("root")) refuse("root", "is required");
    only_keys(j["root"], "root", {"path", "readonly"});
    s.root.path = str(j["root"].value("path", json()), "root.path");
    if (s.root.path.empty()) refuse("root.path", "must not be empty");
    if (s.root.path[0] != '/') s.root.path = bundle + "/" + s.root.path;
    if (j["root"].contains("readonly")) s.root.readonly = boolean(j["root"]["readonly"], "root.readonly");
    if (!j.contains("process")) refuse("process", "is required (cubby-runc runs a process, not a bare rootfs)");
    s.process = decode_process(j["process"], "process");
    if (j.contains("hostname")) s.hostname = str(j["hostname"], "hostname");
    if (j.contains("mounts") && !j["mounts"].is_null()) {
      if (!j["mounts"].is_array()) refuse("mounts", "must be an array");
      for (size_t i = 0; i < j["mounts"].size(); ++i)
        s.mounts.push_back(decode_mount(j["mounts"][i], "mounts[" + std::to_string(i) + "]"));
    }
    if (!j.contains("linux")) refuse("linux", "is required (cubby-runc runs Linux containers)");
    s.linux = decode_linux(j["linux"]);
    if (j.contains("hooks") && !j["hooks"].is_null()) s.hooks = decode_all_hooks(j["hooks"]);
    if (j.contains("annotations") && !j["annotations"].is_null()) {
      if (!j["annotations"].is_object()) refuse("annotations", "must be an object");
      for (const auto& [k, v] : j["annotations"].items()) str(v, "annotations." + k);
      s.annotations = j["annotations"];
    }
    bool uts = std::any_of(s.linux.namespaces.begin(), s.linux.namespaces.end(), [](const Namespace& n) { return n.type == "uts" && n.path.empty(); });
    if (!s.hostname.empty() && !uts) refuse("hostname", "needs a new uts namespace");
    return s;
  } catch (const Refused& r) {
    return fail(Error::invalid("config.json: " + r.msg));
  } catch (const json::exception& e) {
    return fail(Error::invalid(std::string("config.json: ") + e.what()));
  }
}

Result<Spec> load_spec(const std::string& bundle) {
  auto text = read_file(bundle + "/config.json");
  if (!text) return fail(text.error().wrap("read the bundle's config.json"));
  return parse_spec(*text, bundle);
}

Result<Resources> parse_resources(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(Error::invalid("resources: not valid JSON"));
  try {
    Resources r;
    decode_resources(j, r);
    return r;
  } catch (const Refused& r) {
    return fail(Error::invalid("resources: " + r.msg));
  } catch (const json::exception& e) {
    return fail(Error::invalid(std::string("resources: ") + e.what()));
  }
}

Result<Process> parse_process(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(Error::invalid("process.json: not valid JSON"));
  try {
    return decode_process(j, "process");
  } catch (const Refused& r) {
    return fail(Error::invalid("process.json: " + r.msg));
  } catch (const json::exception& e) {
    return fail(Error::invalid(std::string("process.json: ") + e.what()));
  }
}

}  // namespace cubby::oci
