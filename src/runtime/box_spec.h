// BoxSpec: everything a box needs to start, fixed at create time and kept in
// the store (boxes.config). The shim receives it (plus the launch details in
// ShimConfig) over its control socket, never through argv or the environment,
// because env values may be secrets.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proto/box_fs.h"
#include "proto/logfile.h"
#include "proto/seccomp_program.h"
#include "runtime/idmap.h"
#include "runtime/ports.h"
#include "runtime/volumes.h"

namespace cubby {

struct BoxSpec {
  std::vector<std::string> argv;  // entrypoint + cmd, resolved at create
  std::vector<std::string> env;   // image env overlaid with -e
  std::string cwd = "/";
  std::string user;
  std::string hostname;
  std::string network = "none";   // none | default
  std::optional<int64_t> memory;  // bytes
  std::optional<double> cpus;
  std::optional<int64_t> pids;
  std::optional<uint64_t> cpu_shares;
  uint64_t cap_drop = 0;  // CAP_* bits of the default set withheld (--cap-drop)
  bool auto_remove = false;       // --rm
  bool interactive = false;       // -i
  bool tty = false;               // -t
  std::vector<std::string> layers;  // unpacked layer dirs, lowest first
  bool rootfs_dir = false;          // layers[0] is a given directory (an OCI bundle's rootfs), not the store's
  std::vector<PortMapping> ports;   // -p, host ports fixed at create
  std::vector<Mount> mounts;        // -v, host paths canonical at create
  // --allow-net / --deny-net (net/bridge.h's rules, normalized at create).
  std::vector<std::string> allow_net, deny_net;
  std::vector<std::string> extra_hosts;  // --add-host, as /etc/hosts lines ("IP\tNAME")
  std::vector<std::string> dns;          // --dns servers
  // --userns: "auto" (a range of host ids of its own, `ids`, as root;
  // root -> the caller rootless) or "host" (the identity map, as root). A
  // record from before the option has none: "host", what it ran with, so
  // its upper dir (owned by host root) keeps working.
  std::string userns = "host";
  std::optional<IdRange> ids;       // sandbox as root with userns auto: fixed at create
  // --log-opt max-size / max-file: the box log's rotation (proto/logfile.h).
  int64_t log_max_size = logfile::kDefaultMaxSize;
  int log_max_files = logfile::kDefaultMaxFiles;
  std::map<std::string, std::string> labels;  // --label K=V (Docker's Config.Labels)
  // --restart, carried out by the shim (no daemon): "no", "always" or
  // "on-failure" (with restart_max > 0: at most that many restarts). A
  // user's stop or kill ends the box for good.
  std::string restart = "no";
  int restart_max = 0;
  BoxFs fs;  // read-only rootfs, tmpfs, /dev/shm size, masked paths
  // Namespaces the box joins instead of making its own (sandbox only):
  // "network", "ipc" or "uts" -> an nsfs path (/proc/PID/ns/X or a bind
  // mount of one). cubby-runc's, for a CRI pod's containers.
  std::map<std::string, std::string> join_ns;
  // The box's own seccomp filter (CreateOptions::seccomp); empty: cubby's default.
  SeccompProgram seccomp;
};

inline void to_json(nlohmann::json& j, const BoxSpec& s) {
  j = {{"argv", s.argv}, {"env", s.env}, {"cwd", s.cwd}, {"user", s.user}, {"hostname", s.hostname},
       {"network", s.network}, {"auto_remove", s.auto_remove}, {"interactive", s.interactive},
       {"tty", s.tty}, {"layers", s.layers}, {"ports", s.ports}, {"mounts", s.mounts}, {"userns", s.userns},
       {"log_max_size", s.log_max_size}, {"log_max_files", s.log_max_files}};
  if (s.ids) j["ids"] = *s.ids;
  if (s.rootfs_dir) j["rootfs_dir"] = true;
  if (!s.labels.empty()) j["labels"] = s.labels;
  if (s.restart != "no") {
    j["restart"] = s.restart;
    j["restart_max"] = s.restart_max;
  }
  if (!s.allow_net.empty()) j["allow_net"] = s.allow_net;
  if (!s.deny_net.empty()) j["deny_net"] = s.deny_net;
  if (!s.extra_hosts.empty()) j["extra_hosts"] = s.extra_hosts;
  if (!s.dns.empty()) j["dns"] = s.dns;
  if (s.memory) j["memory"] = *s.memory;
  if (s.cpus) j["cpus"] = *s.cpus;
  if (s.pids) j["pids"] = *s.pids;
  if (s.cpu_shares) j["cpu_shares"] = *s.cpu_shares;
  if (s.cap_drop) j["cap_drop"] = s.cap_drop;
  if (!s.fs.empty()) j["fs"] = s.fs;
  if (!s.join_ns.empty()) j["join_ns"] = s.join_ns;
  if (!s.seccomp.empty()) j["seccomp"] = s.seccomp;
}

inline void from_json(const nlohmann::json& j, BoxSpec& s) {
  s.argv = j.value("argv", std::vector<std::string>{});
  s.env = j.value("env", std::vector<std::string>{});
  s.cwd = j.value("cwd", std::string("/"));
  s.user = j.value("user", std::string());
  s.hostname = j.value("hostname", std::string());
  s.network = j.value("network", std::string("none"));
  s.auto_remove = j.value("auto_remove", false);
  s.interactive = j.value("interactive", false);
  s.tty = j.value("tty", false);
  s.layers = j.value("layers", std::vector<std::string>{});
  s.ports = j.value("ports", std::vector<PortMapping>{});
  s.mounts = j.value("mounts", std::vector<Mount>{});
  s.userns = j.value("userns", std::string("host"));
  // A record from before rotation gets the defaults.
  s.log_max_size = j.value("log_max_size", logfile::kDefaultMaxSize);
  s.log_max_files = j.value("log_max_files", logfile::kDefaultMaxFiles);
  s.labels = j.value("labels", std::map<std::string, std::string>{});
  s.restart = j.value("restart", std::string("no"));
  s.restart_max = j.value("restart_max", 0);
  if (j.contains("ids")) s.ids = j["ids"].get<IdRange>();
  s.rootfs_dir = j.value("rootfs_dir", false);
  s.allow_net = j.value("allow_net", std::vector<std::string>{});
  s.deny_net = j.value("deny_net", std::vector<std::string>{});
  s.extra_hosts = j.value("extra_hosts", std::vector<std::string>{});
  s.dns = j.value("dns", std::vector<std::string>{});
  if (j.contains("memory")) s.memory = j["memory"].get<int64_t>();
  if (j.contains("cpus")) s.cpus = j["cpus"].get<double>();
  if (j.contains("pids")) s.pids = j["pids"].get<int64_t>();
  if (j.contains("cpu_shares")) s.cpu_shares = j["cpu_shares"].get<uint64_t>();
  s.cap_drop = j.value("cap_drop", uint64_t{0});
  if (j.contains("fs")) s.fs = j["fs"].get<BoxFs>();
  s.join_ns = j.value("join_ns", std::map<std::string, std::string>{});
  if (j.contains("seccomp")) s.seccomp = j["seccomp"].get<SeccompProgram>();
}

// What the runtime sends the shim as its first (and only) control message.
inline constexpr int64_t kDefaultBootTimeoutMs = 300'000;

struct ShimConfig {
  std::string home;
  std::string box_id;
  std::string box_dir;
  std::string agent_path;  // the static cubby-agent to run as PID 1
  std::string isolation = "sandbox";
  bool hold = false;       // wait for an attach before starting the workload
  // Tie the box to the process that starts it (see launch.h): when that
  // process is gone, the box is stopped. For throwaway boxes only.
  bool tether = false;
  // Started only to serve a `cp` on a box that is not running (with hold and
  // tether: the workload never starts, and the box stops when the copy's
  // client lets go): the record gets back its status, exit code and times
  // at the end, as if the box had never run (store's restore_ended).
  bool copy_only = false;
  // The backstop on the agent's handshake (guarantee 8: readiness is an
  // event; this only ends a guest that never comes up, e.g. a kernel that
  // spins). Large by default; CUBBY_BOOT_TIMEOUT (seconds) sets it.
  int64_t boot_timeout_ms = kDefaultBootTimeoutMs;
  // A vm box's first start from a snapshot's directory (`run --from`,
  // `fork`; proto/vm_snapshot.h): restored, not booted.
  std::string restore_dir;
  BoxSpec spec;
};

inline void to_json(nlohmann::json& j, const ShimConfig& c) {
  j = {{"t", "config"}, {"home", c.home}, {"box_id", c.box_id}, {"box_dir", c.box_dir},
       {"agent_path", c.agent_path}, {"isolation", c.isolation}, {"hold", c.hold}, {"tether", c.tether}, {"copy_only", c.copy_only}, {"boot_timeout_ms", c.boot_timeout_ms}, {"restore_dir", c.restore_dir}, {"spec", c.spec}};
}
inline void from_json(const nlohmann::json& j, ShimConfig& c) {
  c.home = j.at("home").get<std::string>();
  c.box_id = j.at("box_id").get<std::string>();
  c.box_dir = j.at("box_dir").get<std::string>();
  c.agent_path = j.at("agent_path").get<std::string>();
  c.isolation = j.value("isolation", std::string("sandbox"));
  c.hold = j.value("hold", false);
  c.tether = j.value("tether", false);
  c.copy_only = j.value("copy_only", false);
  c.boot_timeout_ms = j.value("boot_timeout_ms", kDefaultBootTimeoutMs);
  c.restore_dir = j.value("restore_dir", std::string());
  c.spec = j.at("spec").get<BoxSpec>();
}

}  // namespace cubby
