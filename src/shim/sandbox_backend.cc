// The sandbox backend: the box's PID 1 is cubby-agent in fresh user, pid,
// mount, net, uts and ipc namespaces; the agent assembles the overlay rootfs
// itself (see agent/box_init.cc), so every mount lives and dies with the box.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "base/fs.h"
#include "base/log.h"
#include "base/ns.h"
#include "base/sys.h"
#include "proto/launch.h"
#include "proto/transport.h"
#include "sandbox/cgroup.h"
#include "shim/backend.h"
#include "proto/logfile.h"
#include "shim/box_log.h"
#include "shim/box_mounts.h"
#include "net/bridge.h"
#include "net/names.h"
#include "shim/network.h"
#include "shim/sandbox_child.h"

namespace cubby::shim {
namespace {

// Runs the agent from a sealed in-memory copy, so a process in the box that
// reaches /proc/1/exe can never write to the host's agent binary (the
// runc CVE-2019-5736 class of escape).
Result<UniqueFd> sealed_copy(const std::string& path) {
  UniqueFd src(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!src) return sys_fail("open agent " + path);
  struct stat st;
  if (::fstat(src.get(), &st) < 0) return sys_fail("stat " + path);
  UniqueFd mem(::memfd_create("cubby-agent", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!mem) return sys_fail("memfd_create");
  off_t off = 0;
  while (off < st.st_size) {
    ssize_t n = ::sendfile(mem.get(), src.get(), &off, static_cast<size_t>(st.st_size - off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("copy agent");
    }
    if (n == 0) break;
  }
  // F_SEAL_FUTURE_WRITE, not F_SEAL_WRITE: the latter waits for every
  // transient page reference (sendfile's splice pipe can still hold some)
  // and fails with EBUSY under load; the former refuses every later write
  // and writable mapping just the same, and we hold no writable mapping.
  if (::fcntl(mem.get(), F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE) < 0)
    return sys_fail("seal agent copy");
  return mem;
}

class SandboxInstance : public BoxInstance {
 public:
  int pidfd() const override { return pidfd_.get(); }
  int diag_fd() const override { return diag_.get(); }
  Network* network() override { return net_.get(); }

  Result<ExitStatus> reap() override {
    siginfo_t si{};
    while (::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &si, WEXITED) < 0)
      if (errno != EINTR) return sys_fail("waitid agent");
    reaped_ = true;
    ExitStatus s;
    if (si.si_code == CLD_EXITED) {
      s.code = si.si_status;
    } else {
      s.signaled = true;
      s.signal = si.si_status;
    }
    return s;
  }

  Result<void> allow_start() override {
    // The workload starts with its network, never before (see start_user_network).
    if (net_) {
      if (auto r = net_->await_ready(); !r) {
        auto e = r.error().wrap("set up --network default");
        hint_ = e.message();  // what start reports: the agent, killed for it, has no last words
        return std::unexpected(e);
      }
    }
    char b = 'g';
    return sys::write_all(go_.get(), &b, 1);
  }

  Result<void> request_stop(int sig) override {
    // The agent is PID 1 of the box and forwards this to the workload. A
    // paused box takes its stop: thawed, the workload hears it and has its
    // grace, as a running one has.
    thaw_workload();
    return sys::pidfd_send_signal(pidfd_.get(), sig);
  }

  Result<void> kill() override {
    auto r = sys::pidfd_send_signal(pidfd_.get(), SIGKILL);
    // The agent's end kills every process of the box's pid namespace and
    // waits for them; under v1's freezer a frozen one keeps its SIGKILL
    // pending until thawed, and the box would never end.
    thaw_workload();
    return r;
  }

  void note_in_log(const std::string& line) override {
    if (log_) log_->note(logfile::kConsole, line);
  }

  std::string failure_hint() const override { return hint_; }

  void thaw_workload() {
    if (!cgroup_ || !cgroup_->frozen(sandbox::Leaf::kWorkload).value_or(false)) return;
    if (auto r = cgroup_->freeze(sandbox::Leaf::kWorkload, false); !r) LOG_WARN("thaw the box: {}", r.error().message());
  }

  bool oom_killed() override {
    if (!cgroup_) return false;
    auto r = cgroup_->oom_killed();
    if (!r) LOG_WARN("read the workload's OOM kills: {}", r.error().message());
    return r.value_or(false);
  }

  void cleanup() override {
    if (!reaped_ && pidfd_) {
      (void)kill();
      (void)reap();
    }
    if (log_) log_->finish();  // the agent is gone: all it wrote is in the pipe
    net_.reset();
    bridge_.detach();
    if (cgroup_) {
      if (auto r = cgroup_->destroy(); !r) LOG_WARN("cgroup cleanup: {}", r.error().message());
      cgroup_.reset();
    }
    ::unlink((box_dir_ + "/" + kAgentSocket).c_str());
  }

  ~SandboxInstance() override { cleanup(); }

  std::string box_dir_;
  UniqueFd pidfd_, go_, diag_;
  bool reaped_ = false;
  std::unique_ptr<sandbox::Cgroup> cgroup_;
  std::unique_ptr<Network> net_;
  net::BridgeAttachment bridge_;  // --network bridge
  std::string hint_;              // why cubby failed the start, if it did
  std::unique_ptr<BoxLog> log_;
};

Result<void> write_id_maps(pid_t pid, const std::optional<IdRange>& ids) {
  std::string base = "/proc/" + std::to_string(pid);
  if (::geteuid() == 0 && ids) {
    // The box's own range (runtime/idmap.h): its root is nobody on the host.
    CUBBY_TRYV(write_file(base + "/uid_map", "0 " + std::to_string(ids->uid) + " " + std::to_string(ids->count) + "\n"));
    CUBBY_TRYV(write_file(base + "/gid_map", "0 " + std::to_string(ids->gid) + " " + std::to_string(ids->count) + "\n"));
  } else if (::geteuid() == 0) {
    // --userns host: identity-map every id. Capabilities stay confined to
    // the box's own user namespace (no module loading, no host mounts, ...).
    CUBBY_TRYV(write_file(base + "/uid_map", "0 0 4294967295\n"));
    CUBBY_TRYV(write_file(base + "/gid_map", "0 0 4294967295\n"));
  } else {
    // Rootless: the caller becomes root in the box; nothing else is mapped.
    CUBBY_TRYV(write_file(base + "/setgroups", "deny\n"));
    CUBBY_TRYV(write_file(base + "/uid_map", "0 " + std::to_string(::geteuid()) + " 1\n"));
    CUBBY_TRYV(write_file(base + "/gid_map", "0 " + std::to_string(::getegid()) + " 1\n"));
  }
  return {};
}

// As root, the agent gets its rootfs as fds (shim/box_mounts.h): in this
// order, the overlay's target, upper and work dirs, the layers (top first),
// then the volume sources.
Result<void> send_rootfs(pid_t pid, int pidfd, const ShimConfig& cfg, const std::vector<std::string>& lower,
                         int sock) {
  BoxMountPlan plan;
  plan.dirs = {cfg.box_dir + "/rootfs", cfg.box_dir + "/upper", cfg.box_dir + "/work"};
  plan.layers = lower;
  for (const auto& m : cfg.spec.mounts) plan.sources.push_back(m.source);
  UniqueFd userns;
  if (cfg.spec.ids) {
    userns.reset(::open(("/proc/" + std::to_string(pid) + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC));
    if (!userns) return sys_fail("open the box's user namespace");
  }
  return send_box_mounts(pidfd, userns.get(), plan, sock);
}

class SandboxBackend : public Backend {
 public:
  Result<std::unique_ptr<BoxInstance>> launch(const ShimConfig& cfg) override {
    auto inst = std::make_unique<SandboxInstance>();
    inst->box_dir_ = cfg.box_dir;
    const BoxSpec& spec = cfg.spec;

    sandbox::CgroupLimits limits{spec.memory, spec.cpus, spec.pids, spec.cpu_shares};
    if (::geteuid() == 0) {
      auto cg = sandbox::Cgroup::create(cfg.box_id, limits);
      if (!cg) return std::unexpected(cg.error().wrap("create cgroup"));
      inst->cgroup_ = std::move(*cg);
    } else if (spec.memory || spec.cpus || spec.pids) {
      return fail(Error::invalid("resource limits need root (cgroup delegation is not supported yet)"));
    }

    // upper is the box's / (overlayfs takes the root's attributes from the
    // upper dir): 0755, or the box's non-root users could not reach any
    // path. Its setuid files are kept from host users by the 0700 box dir
    // around it, not by this mode.
    CUBBY_TRYV(mkdir_p(cfg.box_dir + "/upper", 0755));
    for (const char* d : {"work", "rootfs"}) CUBBY_TRYV(mkdir_p(cfg.box_dir + "/" + d, 0700));
    // overlayfs works in upper and work as the box's root (the mounter).
    if (const auto& ids = spec.ids; ids && ::geteuid() == 0)
      for (const char* d : {"upper", "work"})
        if (::chown((cfg.box_dir + "/" + d).c_str(), ids->uid, ids->gid) < 0) return sys_fail("chown " + cfg.box_dir + "/" + d);
    auto listen = CUBBY_TRY(proto::listen_unix(cfg.box_dir, kAgentSocket));
    inst->log_ = CUBBY_TRY(BoxLog::open(cfg.box_dir, {spec.log_max_size, spec.log_max_files}));
    auto log = CUBBY_TRY(inst->log_->add_input());  // the agent's records (its fd 5)
    inst->log_->start();
    auto agent = CUBBY_TRY(sealed_copy(cfg.agent_path));
    UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    auto [cfg_r, cfg_w] = CUBBY_TRY(sys::make_pipe());
    auto [go_r, go_w] = CUBBY_TRY(sys::make_pipe());
    auto [diag_r, diag_w] = CUBBY_TRY(sys::make_pipe());
    auto [sync_r, sync_w] = CUBBY_TRY(sys::make_pipe());
    auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());
    auto [mounts_w, mounts_r] = CUBBY_TRY(sys::make_socketpair(SOCK_SEQPACKET));
    const bool root = ::geteuid() == 0;
    // The agent's children (the workload and every exec) move themselves
    // into the workload leaf through these before they exec; the agent
    // itself goes into the agent leaf below.
    std::vector<UniqueFd> join;
    if (inst->cgroup_) join = CUBBY_TRY(inst->cgroup_->open_self_join(sandbox::Leaf::kWorkload));
    if (join.size() > static_cast<size_t>(launch::kAgentMaxCgroupFds))
      return fail(Error::internal("more cgroup hierarchies than the agent takes"));
    UniqueFd pids_current;
    if (inst->cgroup_ && spec.pids && *spec.pids > 0)
      pids_current = CUBBY_TRY(inst->cgroup_->open_pids_current(sandbox::Leaf::kWorkload));

    static char arg0[] = "cubby-agent", arg1[] = "init";
    char* argv[] = {arg0, arg1, nullptr};
    std::string log_env = std::string("CUBBY_LOG=") + (getenv("CUBBY_LOG") ? getenv("CUBBY_LOG") : "warn");
    char* envp[] = {log_env.data(), nullptr};
    SandboxChildPlan plan{sync_r.get(),
                          {devnull.get(), devnull.get(), diag_w.get(), cfg_r.get(), listen.get(), log.get(),
                           go_r.get(), mounts_r.get()},
                          launch::kAgentFdCount,
                          agent.get(),
                          argv,
                          envp,
                          err_w.get(),
                          root};
    for (const auto& fd : join) plan.fds[plan.nfds++] = fd.get();
    const int ncgroup_fds = plan.nfds - launch::kAgentFdCount;
    const int pids_fd = pids_current ? plan.nfds : -1;
    if (pids_current) plan.fds[plan.nfds++] = pids_current.get();
    int pidfd = -1;
    unsigned long flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC;
    // A namespace to join (BoxSpec::join_ns) is entered by this thread for
    // the clone, which then makes no new one of that type: the child, in a
    // new user namespace, could not setns into one its owner holds.
    auto joined = CUBBY_TRY(JoinedNamespaces::open(spec.join_ns));
    flags &= ~static_cast<unsigned long>(joined.clone_flags());
    CUBBY_TRYV(joined.enter());
    pid_t pid = clone_sandbox_child(plan, flags, &pidfd);
    if (pid < 0) {
      auto e = Error::sys("clone box namespaces", errno);
      (void)joined.leave();
      return fail(e);
    }
    inst->pidfd_.reset(pidfd);
    CUBBY_TRYV(joined.leave());
    // From here on, inst's destructor kills and reaps the child on any error.
    // The box's network namespace is held from its birth (the child waits
    // on sync_r): slirp4netns joins it by these fds even if the agent fails
    // its set-up and exits first.
    NetnsFds netns;
    if (spec.network == "default" || spec.network == "bridge") netns = CUBBY_TRY(open_netns_of(pid));
    sync_r.reset();
    cfg_r.reset();
    go_r.reset();
    diag_w.reset();
    listen.reset();  // the agent holds the only copy: if it dies, connects fail fast
    log.reset();
    err_w.reset();
    mounts_r.reset();
    join.clear();
    pids_current.reset();
    CUBBY_TRYV(write_id_maps(pid, spec.ids));
    if (inst->cgroup_) CUBBY_TRYV(inst->cgroup_->add_process(pid, sandbox::Leaf::kAgent));
    std::vector<std::string> lower(spec.layers.rbegin(), spec.layers.rend());  // overlay wants top first
    if (root) {
      auto sent = send_rootfs(pid, inst->pidfd_.get(), cfg, lower, mounts_w.get());
      if (!sent) return std::unexpected(sent.error().wrap("set up the rootfs"));
    }
    mounts_w.reset();  // EOF after the fds
    char b = 's';
    CUBBY_TRYV(sys::write_all(sync_w.get(), &b, 1));
    sync_w.reset();
    int child_errno = 0;
    ssize_t n;
    do n = ::read(err_r.get(), &child_errno, sizeof child_errno);
    while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof child_errno))
      return fail(Error::sys("start cubby-agent", child_errno));

    // --network bridge: attached before the agent's config is written, which
    // names the bridge's gateway as host.cubby.internal.
    std::vector<std::string> extra_hosts = spec.extra_hosts;
    if (spec.network == "bridge") {
      auto egress = CUBBY_TRY(net::parse_egress_policy(spec.allow_net, spec.deny_net));
      auto br = net::attach_bridge(cfg.home, cfg.box_id, netns.net.get(), spec.ports, egress);
      if (!br) return std::unexpected(br.error().wrap("set up --network bridge"));
      inst->bridge_ = std::move(*br);
      extra_hosts.push_back(inst->bridge_.gateway() + "\t" + net::kHostName);
    }
    // --network default: slirp's 10.0.2.2, which reaches the host's loopback
    // only where the box's rules allow it (shim/network.h).
    UserNetworkPolicy user_net;
    if (spec.network == "default") {
      user_net = CUBBY_TRY(user_network_policy(spec.allow_net, spec.deny_net, spec.dns));
      extra_hosts.push_back(std::string(kSlirpHostAlias) + "\t" + net::kHostName);
    }
    nlohmann::json agent_cfg = {
        {"main", {{"argv", spec.argv}, {"env", spec.env}, {"cwd", spec.cwd}, {"user", spec.user}, {"tty", spec.tty}}},
        {"hold", cfg.hold},
        {"hostname", spec.hostname},
        {"network", spec.network},
        {"workload_cgroup_fds", ncgroup_fds}};
    if (!spec.join_ns.empty()) {
      std::vector<std::string> types;
      for (const auto& [t, p] : spec.join_ns) types.push_back(t);
      agent_cfg["joined_ns"] = types;
    }
    if (auto rc = net::resolv_conf_for(spec.dns, spec.network == "bridge"); !rc.empty()) agent_cfg["resolv_conf"] = rc;
    if (!extra_hosts.empty()) agent_cfg["extra_hosts"] = extra_hosts;
    if (!spec.fs.empty()) agent_cfg["fs"] = spec.fs;
    if (spec.cap_drop) agent_cfg["cap_drop"] = spec.cap_drop;
    if (!spec.seccomp.empty()) agent_cfg["seccomp"] = spec.seccomp;
    if (pids_fd >= 0) {
      agent_cfg["workload_pids_fd"] = pids_fd;
      agent_cfg["pids_max"] = *spec.pids;
    }
    agent_cfg["rootfs"] = {{"lower", lower},
                           {"upper", cfg.box_dir + "/upper"},
                           {"work", cfg.box_dir + "/work"},
                           {"target", cfg.box_dir + "/rootfs"},
                           {"volumes", spec.mounts},
                           {"fds", root}};
    std::string text = agent_cfg.dump();
    // An agent that dies before reading its config (a broken image, a
    // stand-in agent) closes the pipe: that is the box ending during start,
    // and the caller learns it, with the agent's last words, from the pidfd.
    bool agent_gone = false;
    if (auto w = sys::write_all(cfg_w.get(), text.data(), text.size()); !w) {
      if (w.error().sys_errno() != EPIPE) return std::unexpected(w.error());
      agent_gone = true;
    }
    cfg_w.reset();
    if (spec.network == "default" && !agent_gone) {
      auto net = start_user_network(std::move(netns), cfg.box_dir, spec.ports, std::move(user_net),
                                    /*defer_ready=*/true);
      if (!net) return std::unexpected(net.error().wrap("set up --network default"));
      inst->net_ = std::move(*net);
    }
    inst->go_ = std::move(go_w);
    inst->diag_ = std::move(diag_r);
    ::fcntl(inst->diag_.get(), F_SETFL, O_NONBLOCK);
    return std::unique_ptr<BoxInstance>(std::move(inst));
  }
};

}  // namespace

std::unique_ptr<Backend> make_sandbox_backend() { return std::make_unique<SandboxBackend>(); }

}  // namespace cubby::shim
