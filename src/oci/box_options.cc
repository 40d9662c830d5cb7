#include "oci/box_options.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

namespace cubby::oci {
namespace {

Error refused(const std::string& field, const std::string& why) {
  return Error::invalid("config.json: " + field + ": " + why);
}

// Docker's default capability set: what cubby's agent gives every process
// it starts (sandbox/confine.h). A config asking for exactly this set (as
// containerd's and Docker's generated configs do) is honoured; any other
// set is refused until the agent takes a set per container.
const std::set<std::string> kBoxCaps = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
                                        "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID",
                                        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                                        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"};

// The mounts the agent makes in every box (agent/box_init.cc), by
// destination and type: a config's mount of one of these is what the box
// has anyway.
const std::map<std::string, std::string> kBoxMounts = {
    {"/proc", "proc"},   {"/dev", "tmpfs"},   {"/dev/pts", "devpts"}, {"/dev/shm", "tmpfs"},
    {"/dev/mqueue", "mqueue"}, {"/sys", "sysfs"}};

// The agent's masked and read-only /proc paths (agent/box_init.cc,
// harden_proc), plus the ones whose absence it does not need to mask (the
// kernel here has no /proc/timer_stats; /proc/acpi etc. are checked below).
const std::set<std::string> kBoxMasked = {"/proc/kcore", "/proc/keys", "/proc/timer_list",
                                          "/proc/sched_debug", "/proc/latency_stats"};
const std::set<std::string> kBoxReadonly = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"};

std::string cap_name(int n) { return capability_names()[static_cast<size_t>(n)]; }

Result<void> check_caps(const Process& p) {
  if (!p.capabilities) return fail(refused("process.capabilities", "absent (no capabilities) is not supported by cubby-runc yet: it gives Docker's default set"));
  const auto& c = *p.capabilities;
  auto same = [&](const std::vector<int>& v, const char* name) -> Result<void> {
    std::set<std::string> got;
    for (int n : v) got.insert(cap_name(n));
    if (got == kBoxCaps) return {};
    return fail(refused(std::string("process.capabilities.") + name,
                        "cubby-runc gives exactly Docker's default set (CAP_CHOWN CAP_DAC_OVERRIDE CAP_FSETID CAP_FOWNER "
                        "CAP_MKNOD CAP_NET_RAW CAP_SETGID CAP_SETUID CAP_SETFCAP CAP_SETPCAP CAP_NET_BIND_SERVICE "
                        "CAP_SYS_CHROOT CAP_KILL CAP_AUDIT_WRITE) for now; other sets are not supported yet"));
  };
  CUBBY_TRYV(same(c.bounding, "bounding"));
  // A non-root user gets no effective/permitted capabilities from the agent (as Docker).
  if (p.user.uid == 0) {
    CUBBY_TRYV(same(c.effective, "effective"));
    CUBBY_TRYV(same(c.permitted, "permitted"));
  }
  if (!c.inheritable.empty()) return fail(refused("process.capabilities.inheritable", "must be empty (cubby clears it, CVE-2022-24769)"));
  if (!c.ambient.empty()) return fail(refused("process.capabilities.ambient", "ambient capabilities are not supported by cubby-runc yet"));
  return {};
}

Result<void> check_process(const Process& p) {
  if (!p.user.additional_gids.empty())
    return fail(refused("process.user.additionalGids", "not supported by cubby-runc yet"));
  for (const auto& e : p.env)
    if (e.find('=') == std::string::npos || e[0] == '=') return fail(refused("process.env", "\"" + e + "\" is not KEY=VALUE"));
  return check_caps(p);
}

std::string user_of(const Process& p) { return std::to_string(p.user.uid) + ":" + std::to_string(p.user.gid); }

}  // namespace

Result<ExecRequest> exec_request(const Process& p, const std::vector<Rlimit>& container_rlimits) {
  CUBBY_TRYV(check_process(p));
  if (p.terminal) return fail(refused("process.terminal", "terminals (--console-socket) are not supported by cubby-runc yet"));
  // An exec is a new process under the box's agent, not the relay's
  // descendant: the container's rlimits apply, its own cannot be set yet.
  auto same = [](const Rlimit& a, const Rlimit& b) { return a.resource == b.resource && a.soft == b.soft && a.hard == b.hard; };
  for (const auto& r : p.rlimits)
    if (std::none_of(container_rlimits.begin(), container_rlimits.end(), [&](const Rlimit& c) { return same(r, c); }))
      return fail(refused("process.rlimits", r.type + " other than the container's: per-exec rlimits are not supported by cubby-runc yet"));
  ExecRequest r;
  r.argv = p.args;
  r.env = p.env;
  r.cwd = p.cwd;
  r.user = user_of(p);
  r.interactive = true;
  return r;
}

Result<BoxOptions> box_options(const Spec& s) {
  BoxOptions out;
  CreateOptions& o = out.create;
  o.rootfs = s.root.path;
  if (s.root.readonly) return fail(refused("root.readonly", "a read-only rootfs is not supported by cubby-runc yet (the box writes to its own upper dir)"));
  o.isolation = "sandbox";
  o.network = "none";
  // Box root is a range of host ids of its own (--userns auto, as root):
  // what a container's root reaches on the host it reaches as a stranger.
  o.userns = "auto";
  o.cmd = s.process.args;
  o.entrypoint = std::vector<std::string>{};
  CUBBY_TRYV(check_process(s.process));
  o.env = s.process.env;
  o.cwd = s.process.cwd;
  o.user = user_of(s.process);
  o.tty = s.process.terminal;
  o.interactive = true;
  if (!s.process.no_new_privileges)
    out.warnings.push_back("process.noNewPrivileges is false, but cubby sets no_new_privileges on every box process");
  out.warnings.push_back("cubby applies its default seccomp filter (config.json has no linux.seccomp)");
  o.hostname = s.hostname;

  // cubby gives every box new pid, network, ipc, uts and mount namespaces
  // (and a user namespace); sharing one of the host's is not possible yet.
  std::set<std::string> have;
  for (const auto& n : s.linux.namespaces) {
    if (!n.path.empty()) return fail(refused("linux.namespaces", "joining the " + n.type + " namespace at " + n.path + " is not supported by cubby-runc yet"));
    have.insert(n.type);
  }
  for (const char* t : {"pid", "network", "ipc", "uts", "mount"})
    if (!have.count(t))
      return fail(refused("linux.namespaces", std::string("no new ") + t + " namespace: sharing the host's is not supported by cubby-runc (every box has its own)"));

  for (size_t i = 0; i < s.mounts.size(); ++i) {
    const auto& m = s.mounts[i];
    const std::string f = "mounts[" + std::to_string(i) + "] (" + m.destination + ")";
    if (m.type == "bind") {
      bool ro = std::find(m.options.begin(), m.options.end(), "ro") != m.options.end();
      for (const auto& opt : m.options)
        if (opt != "bind" && opt != "rbind" && opt != "ro" && opt != "rw" && opt != "rprivate" && opt != "private" &&
            opt != "nosuid" && opt != "nodev" && opt != "noexec")
          return fail(refused(f, "bind option \"" + opt + "\" is not supported by cubby-runc yet"));
      o.volumes.push_back(m.source + ":" + m.destination + (ro ? ":ro" : ""));
      continue;
    }
    if (m.type == "cgroup" && m.destination == "/sys/fs/cgroup") {
      // runc's default spec has it; the box has no cgroupfs of its own yet.
      out.warnings.push_back(f + ": no cgroupfs is mounted; /sys/fs/cgroup is an empty directory of the box's read-only sysfs");
      continue;
    }
    auto it = kBoxMounts.find(m.destination);
    if (it == kBoxMounts.end() || it->second != m.type)
      return fail(refused(f, "a " + m.type + " mount there is not supported by cubby-runc yet (it gives every box its own "
                             "/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and read-only /sys, and /tmp)"));
  }
  for (const auto& p : s.linux.masked_paths)
    if (!kBoxMasked.count(p))
      return fail(refused("linux.maskedPaths", "masking \"" + p + "\" is not supported by cubby-runc yet (it masks " +
                                               "/proc/kcore, /proc/keys, /proc/timer_list, /proc/sched_debug, /proc/latency_stats)"));
  for (const auto& p : s.linux.readonly_paths)
    if (!kBoxReadonly.count(p))
      return fail(refused("linux.readonlyPaths", "\"" + p + "\" is not supported by cubby-runc yet (it makes /proc/sys, " +
                                                 "/proc/sysrq-trigger, /proc/irq and /proc/bus read-only)"));
  if (kBoxMasked.size() > s.linux.masked_paths.size())
    out.warnings.push_back("cubby masks /proc/kcore, /proc/keys, /proc/timer_list, /proc/sched_debug and /proc/latency_stats in every box");

  const auto& r = s.linux.resources;
  if (r.memory_limit && *r.memory_limit > 0) o.memory = *r.memory_limit;
  if (r.memory_swap && (!r.memory_limit || *r.memory_swap != *r.memory_limit) && *r.memory_swap != -1)
    return fail(refused("linux.resources.memory.swap", "a swap limit other than the memory limit is not supported by cubby-runc yet"));
  if (r.pids_limit) o.pids = *r.pids_limit > 0 ? *r.pids_limit : 0;
  if (r.cpu_shares) return fail(refused("linux.resources.cpu.shares", "not supported by cubby-runc yet (it sets a quota only)"));
  if (r.cpu_quota && *r.cpu_quota > 0) {
    uint64_t period = r.cpu_period.value_or(100000);
    if (period == 0) return fail(refused("linux.resources.cpu.period", "must not be 0"));
    double cpus = static_cast<double>(*r.cpu_quota) / static_cast<double>(period);
    if (std::fabs(cpus * 100000 - std::round(cpus * 100000)) > 1e-6 || period != 100000)
      return fail(refused("linux.resources.cpu", "only a quota over a 100000 us period is supported by cubby-runc yet"));
    o.cpus = cpus;
  }
  if (!s.linux.cgroups_path.empty())
    out.warnings.push_back("linux.cgroupsPath \"" + s.linux.cgroups_path + "\" is not used: the box's cgroup is cubby's own");
  return out;
}

}  // namespace cubby::oci
