// The bundle's config.json (OCI runtime spec 1.0.x) as typed structs.
//
// The decoder is strict on purpose: every key is either decoded into a field
// below (and honoured by the launcher) or refused with one error naming it
// ("config.json: linux.seccomp: not supported by cubby-runc yet"). A key that
// was silently dropped would run the container with less isolation than its
// author asked for, which is the one thing a runtime must never do.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "sandbox/seccomp_profile.h"

namespace cubby::oci {

struct Rlimit {
  int resource = 0;  // RLIMIT_* number
  std::string type;  // as written, for messages
  uint64_t soft = 0, hard = 0;
};

struct Capabilities {
  // Each list is a set of capability numbers (CAP_*), decoded from names.
  std::vector<int> bounding, effective, inheritable, permitted, ambient;
};

struct User {
  uint32_t uid = 0, gid = 0;
  std::vector<uint32_t> additional_gids;
};

struct Process {
  bool terminal = false;
  User user;
  std::vector<std::string> args;
  std::vector<std::string> env;
  std::string cwd = "/";
  std::optional<Capabilities> capabilities;
  std::vector<Rlimit> rlimits;
  bool no_new_privileges = false;
  std::optional<int> oom_score_adj;  // -1000..1000
  std::optional<std::pair<int, int>> console_size;  // rows, cols
};

struct Root {
  std::string path;  // absolute (resolved against the bundle)
  bool readonly = false;
};

struct Mount {
  std::string destination, type, source;
  std::vector<std::string> options;
};

struct Namespace {
  std::string type;  // pid, network, ipc, uts, mount, cgroup
  std::string path;  // join this namespace instead of making one
};

// One linux.resources.devices rule (a device cgroup entry).
struct DeviceRule {
  bool allow = false;
  std::string type = "a";  // a, c or b
  std::optional<int64_t> major, minor;  // unset: any
  std::string access = "rwm";
};

struct Resources {
  std::vector<DeviceRule> devices;
  std::optional<int64_t> memory_limit;   // bytes
  std::optional<int64_t> memory_swap;    // bytes (v1 memsw)
  std::optional<int64_t> pids_limit;
  std::optional<uint64_t> cpu_shares;
  std::optional<int64_t> cpu_quota;
  std::optional<uint64_t> cpu_period;
};

struct Linux {
  std::vector<Namespace> namespaces;
  std::map<std::string, std::string> sysctl;
  // linux.seccomp, decoded whole (compiled and judged in box_options.cc:
  // it replaces cubby's default filter for this box).
  std::optional<sandbox::SeccompProfile> seccomp;
  std::vector<std::string> masked_paths, readonly_paths;
  Resources resources;
  std::string cgroups_path;
  std::string rootfs_propagation;
};

// One OCI hook (config.md "POSIX-platform Hooks"); oci/hooks.h runs them.
struct Hook {
  std::string path;               // absolute; resolved in the runtime's namespaces
  std::vector<std::string> args;  // argv as execv takes it (empty: {path})
  std::vector<std::string> env;   // the hook's whole environment
  std::optional<int> timeout;     // seconds (> 0); unset: no limit
};

struct Hooks {
  // prestart is deprecated: it runs when createRuntime does, before it.
  std::vector<Hook> prestart, create_runtime, create_container, start_container, poststart, poststop;
};

void to_json(nlohmann::json& j, const Hook& h);
void from_json(const nlohmann::json& j, Hook& h);
void to_json(nlohmann::json& j, const Hooks& h);
void from_json(const nlohmann::json& j, Hooks& h);

struct Spec {
  std::string oci_version;
  Root root;
  Process process;
  std::string hostname;
  std::vector<Mount> mounts;
  Linux linux;
  Hooks hooks;
  nlohmann::json annotations = nlohmann::json::object();
};

// Decodes a config.json text; `bundle` resolves a relative root.path.
Result<Spec> parse_spec(const std::string& text, const std::string& bundle);
// Reads <bundle>/config.json and decodes it.
Result<Spec> load_spec(const std::string& bundle);
// A process.json for `exec --process` (the same schema as "process").
Result<Process> parse_process(const std::string& text);

// `update --resources`'s JSON (a linux.resources object).
Result<Resources> parse_resources(const std::string& text);

// CAP_* name <-> number; -1 for an unknown name.
int capability_number(const std::string& name);
// The names this build knows, in number order (for `features`).
std::vector<std::string> capability_names();
// The mount types, namespace types and key paths the decoder accepts (for `features`).
std::vector<std::string> supported_mount_types();
std::vector<std::string> supported_namespaces();

}  // namespace cubby::oci
