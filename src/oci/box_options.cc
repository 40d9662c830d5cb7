#include "oci/box_options.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

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
    {"/proc", "proc"}, {"/dev", "tmpfs"}, {"/dev/pts", "devpts"}, {"/dev/mqueue", "mqueue"}, {"/sys", "sysfs"}};

// The character devices the box's /dev holds (agent/box_init.cc: binds of
// the host's null, zero, full, random, urandom, tty; its own devpts with
// ptmx), plus those Docker's and containerd's default allow lists name
// that it does not (console 5:1, tun 10:200, fuse 10:229): allowing what
// is absent grants nothing, and no node can be made in a user namespace.
const std::set<std::pair<int64_t, int64_t>> kAllowedChars = {{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, {5, 0},
                                                             {5, 1}, {5, 2}, {10, 200}, {10, 229}};

// tmpfs's size syntax (N, Nk, Nm, Ng) in bytes, or -1.
int64_t size_bytes(const std::string& v) {
  if (v.empty()) return -1;
  int64_t mul = 1;
  std::string n = v;
  switch (v.back()) {
    case 'k': case 'K': mul = 1 << 10; n.pop_back(); break;
    case 'm': case 'M': mul = 1 << 20; n.pop_back(); break;
    case 'g': case 'G': mul = 1 << 30; n.pop_back(); break;
    default: break;
  }
  if (n.empty() || n.size() > 12 || n.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(n) * mul;
}

// Deny rules are what the box has anyway (no device cgroup entry is needed
// for a node that is not there); an allow rule must name a device above.
Result<void> check_devices(const std::vector<DeviceRule>& rules, std::vector<std::string>& warnings) {
  bool allows = false;
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& d = rules[i];
    if (!d.allow) continue;
    allows = true;
    bool mknod_only = d.access == "m" && !d.major && !d.minor && d.type != "a";
    bool known = d.type == "c" && d.major &&
                 (d.minor ? kAllowedChars.count({*d.major, *d.minor}) > 0 : *d.major == 136 /* pts */);
    if (!mknod_only && !known)
      return fail(refused("linux.resources.devices[" + std::to_string(i) + "]",
                          "allowing this device is not supported by cubby-runc yet (the box's /dev has only null, "
                          "zero, full, random, urandom, tty and its own pts)"));
  }
  if (allows)
    warnings.push_back("linux.resources.devices: no device cgroup is written; the box's /dev holds only null, zero, full, "
                       "random, urandom, tty and its own pts, and no device node can be made or bound into it");
  return {};
}

// The agent's masked and read-only /proc paths (agent/box_init.cc,
// harden_proc), plus the ones whose absence it does not need to mask (the
// kernel here has no /proc/timer_stats; /proc/acpi etc. are checked below).
const std::set<std::string> kBoxMasked = {"/proc/kcore", "/proc/keys", "/proc/timer_list",
                                          "/proc/sched_debug", "/proc/latency_stats"};
const std::set<std::string> kBoxReadonly = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"};

std::string cap_name(int n) { return capability_names()[static_cast<size_t>(n)]; }

// The capabilities of Docker's default set the config leaves out, for
// CreateOptions::cap_drop: every set must be a subset of Docker's (the
// agent gives no other), and for root effective and permitted must equal
// bounding (the agent gives a process exactly its bounding set; a non-root
// user gets none, as with Docker).
Result<std::vector<int>> cap_drop_of(const Process& p) {
  if (!p.capabilities) return fail(refused("process.capabilities", "absent (no capabilities) is not supported by cubby-runc yet: it gives Docker's default set or a subset of it"));
  const auto& c = *p.capabilities;
  auto names = [&](const std::vector<int>& v) {
    std::set<std::string> got;
    for (int n : v) got.insert(cap_name(n));
    return got;
  };
  std::set<std::string> bounding = names(c.bounding);
  for (const auto& n : bounding)
    if (!kBoxCaps.count(n))
      return fail(refused("process.capabilities.bounding", n + " is outside Docker's default set (CAP_CHOWN CAP_DAC_OVERRIDE CAP_FSETID "
                          "CAP_FOWNER CAP_MKNOD CAP_NET_RAW CAP_SETGID CAP_SETUID CAP_SETFCAP CAP_SETPCAP CAP_NET_BIND_SERVICE "
                          "CAP_SYS_CHROOT CAP_KILL CAP_AUDIT_WRITE), which is all cubby-runc gives"));
  if (p.user.uid == 0) {
    if (names(c.effective) != bounding) return fail(refused("process.capabilities.effective", "must equal the bounding set for cubby-runc"));
    if (names(c.permitted) != bounding) return fail(refused("process.capabilities.permitted", "must equal the bounding set for cubby-runc"));
  }
  if (!c.inheritable.empty()) return fail(refused("process.capabilities.inheritable", "must be empty (cubby clears it, CVE-2022-24769)"));
  // runc's default spec repeats the set as ambient. For uid 0 that adds
  // nothing (root's execs keep permitted and effective anyway); for another
  // user it would grant capabilities the agent does not give.
  for (const auto& n : names(c.ambient))
    if (p.user.uid != 0 || !bounding.count(n))
      return fail(refused("process.capabilities.ambient", "ambient capabilities are not supported by cubby-runc yet (but for root, within the bounding set)"));
  std::vector<int> drop;
  for (const auto& n : kBoxCaps)
    if (!bounding.count(n)) drop.push_back(capability_number(n));
  std::sort(drop.begin(), drop.end());
  return drop;
}

Result<void> check_process(const Process& p) {
  // Docker writes the primary group again ([0] for root): that much the
  // process has; other supplementary groups it would not.
  for (uint32_t g : p.user.additional_gids)
    if (g != p.user.gid)
      return fail(refused("process.user.additionalGids", "supplementary groups other than the primary group are not supported by cubby-runc yet"));
  for (const auto& e : p.env)
    if (e.find('=') == std::string::npos || e[0] == '=') return fail(refused("process.env", "\"" + e + "\" is not KEY=VALUE"));
  return {};
}

std::string user_of(const Process& p) { return std::to_string(p.user.uid) + ":" + std::to_string(p.user.gid); }

}  // namespace

Result<ExecRequest> exec_request(const Process& p, const Process& container) {
  CUBBY_TRYV(check_process(p));
  // The agent gives every process of the box the box's set.
  if (CUBBY_TRY(cap_drop_of(p)) != CUBBY_TRY(cap_drop_of(container)))
    return fail(refused("process.capabilities", "an exec's capabilities other than the container's are not supported by cubby-runc yet"));
  const auto& container_rlimits = container.rlimits;
  const auto container_oom = container.oom_score_adj;
  // An exec is a new process under the box's agent, not the relay's
  // descendant: the container's rlimits apply, its own cannot be set yet.
  auto same = [](const Rlimit& a, const Rlimit& b) { return a.resource == b.resource && a.soft == b.soft && a.hard == b.hard; };
  for (const auto& r : p.rlimits)
    if (std::none_of(container_rlimits.begin(), container_rlimits.end(), [&](const Rlimit& c) { return same(r, c); }))
      return fail(refused("process.rlimits", r.type + " other than the container's: per-exec rlimits are not supported by cubby-runc yet"));
  if (p.oom_score_adj && *p.oom_score_adj != container_oom.value_or(0))
    return fail(refused("process.oomScoreAdj", "an exec's own oom_score_adj is not supported by cubby-runc yet (it has the container's)"));
  ExecRequest r;
  r.argv = p.args;
  r.env = p.env;
  r.cwd = p.cwd;
  r.user = user_of(p);
  r.interactive = true;
  r.tty = p.terminal;
  return r;
}

Result<BoxOptions> box_options(const Spec& s) {
  BoxOptions out;
  CreateOptions& o = out.create;
  o.rootfs = s.root.path;
  o.fs.read_only = s.root.readonly;
  // The backend per container: the annotation, else the runtime's
  // CUBBY_RUNC_ISOLATION (a RuntimeClass's handler can set it in its
  // options' environment), else the sandbox.
  o.isolation = "sandbox";
  if (const char* e = std::getenv("CUBBY_RUNC_ISOLATION"); e && *e) o.isolation = e;
  if (auto it = s.annotations.find("io.cubby.isolation"); it != s.annotations.end() && it->is_string())
    o.isolation = it->get<std::string>();
  if (o.isolation != "sandbox" && o.isolation != "vm")
    return fail(refused("annotations.io.cubby.isolation", "\"" + o.isolation + "\" (want sandbox or vm)"));
  o.network = "none";
  // Box root is a range of host ids of its own (--userns auto, as root):
  // what a container's root reaches on the host it reaches as a stranger.
  o.userns = "auto";
  // containerd's and Docker's snapshotters hand over an overlayfs mount as
  // root.path, and the kernel cannot idmap an overlayfs mount (EINVAL): such
  // a box keeps the host's ids, as runc without a user namespace does. Said
  // in the log; the box's capabilities, seccomp filter and namespaces stay.
  struct statfs sf;
  if (o.isolation == "sandbox" && ::statfs(o.rootfs.c_str(), &sf) == 0 && sf.f_type == OVERLAYFS_SUPER_MAGIC) {
    o.userns = "host";
    out.warnings.push_back("root.path is an overlayfs mount, which cannot be idmapped: the box's ids are the host's "
                           "(its root is host root with Docker's capability set, as under runc), not a range of its own");
  }
  o.cmd = s.process.args;
  o.entrypoint = std::vector<std::string>{};
  CUBBY_TRYV(check_process(s.process));
  o.cap_drop = CUBBY_TRY(cap_drop_of(s.process));
  o.env = s.process.env;
  o.cwd = s.process.cwd;
  o.user = user_of(s.process);
  o.tty = s.process.terminal;
  o.interactive = true;
  if (!s.process.no_new_privileges)
    out.warnings.push_back("process.noNewPrivileges is false, but cubby sets no_new_privileges on every box process");
  if (s.linux.seccomp) {
    // The config's profile is the box's filter, in place of cubby's default.
    auto compiled = sandbox::compile_profile(*s.linux.seccomp);
    if (!compiled) {
      // Its errors name the field inside the profile ("syscalls[2].action: ...").
      const auto& e = compiled.error();
      return fail(Error::invalid("config.json: linux.seccomp" + std::string(e.kind() == ErrorKind::kInvalid ? "." : ": ") + e.message()));
    }
    o.seccomp = compiled->filter.program();
    if (!compiled->unknown_syscalls.empty()) {
      std::string names;
      for (const auto& n : compiled->unknown_syscalls) names += (names.empty() ? "" : " ") + n;
      out.warnings.push_back("linux.seccomp: syscalls unknown to this libseccomp are skipped (as runc does): " + names);
    }
  } else {
    // Docker's seccomp=unconfined: cubby is stricter than asked, and says so.
    out.warnings.push_back("cubby applies its default seccomp filter (config.json has no linux.seccomp)");
  }
  // These join the box's namespaces from the host (oci/hooks.h): its PID 1
  // is found as root, and a vm's namespaces are its guest's.
  for (const auto& [phase, hooks] : {std::pair{"createContainer", &s.hooks.create_container},
                                     std::pair{"startContainer", &s.hooks.start_container}}) {
    if (hooks->empty()) continue;
    if (o.isolation != "sandbox")
      return fail(refused(std::string("hooks.") + phase, "runs in the container's namespaces, which a vm container keeps in its guest: "
                                                         "it needs the sandbox backend"));
    if (::geteuid() != 0)
      return fail(refused(std::string("hooks.") + phase, "runs in the container's namespaces, which cubby-runc joins only as root"));
  }
  o.fs.sysctls = s.linux.sysctl;
  o.hostname = s.hostname;

  // cubby gives every box new pid, network, ipc, uts and mount namespaces
  // (and a user namespace); sharing one of the host's is not possible. A
  // network, ipc or uts namespace may be joined by path (a CRI pod's, which
  // its containers share; the shim checks the path is such a namespace and
  // not the host's). pid and mount cannot: the agent must be PID 1 of the
  // box and assembles the box's rootfs in a mount namespace of its own.
  std::set<std::string> have;
  for (const auto& n : s.linux.namespaces) {
    have.insert(n.type);
    if (n.path.empty()) continue;
    if (n.type != "network" && n.type != "ipc" && n.type != "uts")
      return fail(refused("linux.namespaces", "joining the " + n.type + " namespace at " + n.path +
                                                  " is not supported by cubby-runc (cubby's agent is PID 1 of the box and "
                                                  "mounts its rootfs in a namespace of its own; only network, ipc and uts "
                                                  "can be joined)"));
    if (o.isolation != "sandbox")
      return fail(refused("linux.namespaces", "joining the " + n.type + " namespace at " + n.path +
                                                  " needs the sandbox backend (a vm container has the guest's own)"));
    o.join_ns[n.type] = n.path;
  }
  // What a joined namespace's sysctls would need: rights its owner has,
  // not the box (the write fails with EPERM in the box).
  for (const auto& [k, v] : s.linux.sysctl) {
    const char* ns = k.rfind("net.", 0) == 0                                                    ? "network"
                     : k.rfind("kernel.shm", 0) == 0 || k.rfind("kernel.msg", 0) == 0 ||
                               k == "kernel.sem" || k.rfind("fs.mqueue.", 0) == 0 ? "ipc"
                     : k == "kernel.hostname" || k == "kernel.domainname"                      ? "uts"
                                                                                                : nullptr;
    if (ns && o.join_ns.count(ns))
      return fail(refused("linux.sysctl." + k, std::string("the ") + ns + " namespace is joined: set it where that namespace is made"));
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
      // With no device cgroup, a bound device node would be reachable
      // whatever linux.resources.devices says.
      struct stat st;
      if (::stat(m.source.c_str(), &st) == 0 && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)))
        return fail(refused(f, "binding a device node is not supported by cubby-runc yet"));
      o.volumes.push_back(m.source + ":" + m.destination + (ro ? ":ro" : ""));
      continue;
    }
    if (m.type == "cgroup" && m.destination == "/sys/fs/cgroup") {
      // runc's default spec has it; the box has no cgroupfs of its own yet.
      out.warnings.push_back(f + ": no cgroupfs is mounted; /sys/fs/cgroup is an empty directory of the box's read-only sysfs");
      continue;
    }
    if (m.type == "tmpfs" && m.destination == "/dev/shm") {
      // The box's /dev/shm is always nosuid,nodev,noexec,mode=1777; its size is the config's.
      for (const auto& opt : m.options) {
        if (opt.rfind("size=", 0) == 0) {
          int64_t n = size_bytes(opt.substr(5));
          if (n <= 0) return fail(refused(f, "size \"" + opt.substr(5) + "\" is not a size cubby-runc reads (N, Nk, Nm, Ng)"));
          o.fs.shm_size = n;
        } else if (opt != "nosuid" && opt != "nodev" && opt != "noexec" && opt != "mode=1777" && opt != "rw") {
          return fail(refused(f, "option \"" + opt + "\" is not supported for /dev/shm by cubby-runc yet"));
        }
      }
      continue;
    }
    if (m.type == "tmpfs" && m.destination != "/dev") {
      if (auto a = tmpfs_mount_args(m.options); !a) return fail(refused(f, a.error().message()));
      o.fs.tmpfs.push_back({m.destination, m.options});
      continue;
    }
    auto it = kBoxMounts.find(m.destination);
    if (it == kBoxMounts.end() || it->second != m.type)
      return fail(refused(f, "a " + m.type + " mount there is not supported by cubby-runc yet (it gives every box its own "
                             "/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue and read-only /sys, and /tmp; tmpfs and bind "
                             "mounts go anywhere else)"));
  }
  // cubby's own lists (kBoxMasked, kBoxReadonly) are applied in every box;
  // the config's others are applied too (BoxFs).
  for (const auto& p : s.linux.masked_paths)
    if (!kBoxMasked.count(p)) o.fs.masked_paths.push_back(p);
  for (const auto& p : s.linux.readonly_paths)
    if (!kBoxReadonly.count(p)) o.fs.readonly_paths.push_back(p);
  if (auto c = check_box_fs(o.fs); !c) return fail(refused("linux", c.error().message()));
  if (std::any_of(kBoxMasked.begin(), kBoxMasked.end(), [&](const std::string& p) {
        return std::find(s.linux.masked_paths.begin(), s.linux.masked_paths.end(), p) == s.linux.masked_paths.end();
      }))
    out.warnings.push_back("cubby masks /proc/kcore, /proc/keys, /proc/timer_list, /proc/sched_debug and /proc/latency_stats in every box");
  CUBBY_TRYV(check_devices(s.linux.resources.devices, out.warnings));

  const auto& r = s.linux.resources;
  if (r.memory_limit && *r.memory_limit > 0) o.memory = *r.memory_limit;
  if (r.memory_swap && (!r.memory_limit || *r.memory_swap != *r.memory_limit) && *r.memory_swap != -1)
    return fail(refused("linux.resources.memory.swap", "a swap limit other than the memory limit is not supported by cubby-runc yet"));
  if (r.pids_limit) o.pids = *r.pids_limit > 0 ? *r.pids_limit : 0;
  if (r.cpu_shares) {
    if (*r.cpu_shares < 2 || *r.cpu_shares > 262144) return fail(refused("linux.resources.cpu.shares", "must be between 2 and 262144"));
    o.cpu_shares = *r.cpu_shares;
  }
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
