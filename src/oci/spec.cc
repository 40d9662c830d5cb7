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
                   "consoleSize"});
  Process out;
  if (j.contains("terminal")) out.terminal = boolean(j["terminal"], p + ".terminal");
  if (j.contains("consoleSize") && !j["consoleSize"].is_null()) {
    // Only a hint for the terminal's first size; accepted, shape checked.
    only_keys(j["consoleSize"], p + ".consoleSize", {"height", "width"});
  }
  if (j.contains("user")) {
    const auto& u = j["user"];
    const std::string up = p + ".user";
    only_keys(u, up, {"uid", "gid", "additionalGids", "umask"});
    if (u.contains("umask") && !u["umask"].is_null()) unsupported(up + ".umask");
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
  if (j.contains("noNewPrivileges")) out.no_new_privileges = boolean(j["noNewPrivileges"], p + ".noNewPrivileges");
  return out;
}

void decode_resources(const json& j, Resources& r) {
  const std::string p = "linux.resources";
  only_keys(j, p, {"devices", "memory", "pids", "cpu"});
  if (j.contains("devices") && !j["devices"].is_null()) {
    // The sandbox gives a container no device nodes of the host and no
    // device cgroup access beyond what its tmpfs /dev holds, so only rules
    // that deny are honoured as they stand; an "allow" rule would promise
    // access cubby does not grant (containerd's default list for /dev/null
    // etc. is refused until the device cgroup is implemented).
    const auto& d = j["devices"];
    if (!d.is_array()) refuse(p + ".devices", "must be an array");
    for (size_t i = 0; i < d.size(); ++i) {
      const std::string dp = p + ".devices[" + std::to_string(i) + "]";
      only_keys(d[i], dp, {"allow", "access", "type", "major", "minor"});
      if (!d[i].contains("allow") || boolean(d[i]["allow"], dp + ".allow")) refuse(dp, "device allow rules are not supported by cubby-runc yet");
    }
  }
  if (j.contains("memory") && !j["memory"].is_null()) {
    const auto& m = j["memory"];
    only_keys(m, p + ".memory", {"limit", "swap"});
    if (m.contains("limit")) r.memory_limit = integer<int64_t>(m["limit"], p + ".memory.limit");
    if (m.contains("swap")) r.memory_swap = integer<int64_t>(m["swap"], p + ".memory.swap");
  }
  if (j.contains("pids") && !j["pids"].is_null()) {
    only_keys(j["pids"], p + ".pids", {"limit"});
    r.pids_limit = integer<int64_t>(j["pids"].value("limit", json()), p + ".pids.limit");
  }
  if (j.contains("cpu") && !j["cpu"].is_null()) {
    const auto& c = j["cpu"];
    only_keys(c, p + ".cpu", {"shares", "quota", "period"});
    if (c.contains("shares")) r.cpu_shares = integer<uint64_t>(c["shares"], p + ".cpu.shares");
    if (c.contains("quota")) r.cpu_quota = integer<int64_t>(c["quota"], p + ".cpu.quota");
    if (c.contains("period")) r.cpu_period = integer<uint64_t>(c["period"], p + ".cpu.period");
  }
}

Linux decode_linux(const json& j) {
  only_keys(j, "linux", {"namespaces", "maskedPaths", "readonlyPaths", "resources", "cgroupsPath",
                         "rootfsPropagation"});
  Linux out;
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
    only_keys(j, "", {"ociVersion", "root", "process", "hostname", "mounts", "linux", "annotations"});
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
