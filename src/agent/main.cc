// cubby-agent: PID 1 inside a box. Statically linked so it runs in any image.
//
//   cubby-agent init     started by cubby-shim in fresh namespaces, with the
//                        fds of proto/launch.h; sets up the rootfs, then serves.
//   /init                as PID 1 of a micro-VM (no /proc yet): see vm_init.cc.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>

#include "agent/box_init.h"
#include "agent/config.h"
#include "agent/server.h"
#include "agent/vm_init.h"
#include "base/log.h"
#include "base/sys.h"
#include "proto/launch.h"

using namespace cubby;

namespace {

// The shim's fds for the rootfs (shim/box_mounts.h), in its order: target,
// upper, work, the layers (top first), the volume sources.
Result<void> receive_rootfs_fds(agent::RootfsPlan& plan) {
  const size_t want = 3 + plan.lower.size() + plan.volumes.size();
  std::vector<UniqueFd> fds;
  while (fds.size() < want) {
    auto got = CUBBY_TRY(sys::recv_fds(launch::kAgentMountFd, want - fds.size()));
    if (got.empty()) break;
    for (auto& fd : got) fds.push_back(std::move(fd));
  }
  if (fds.size() != want)
    return fail(Error::protocol("the shim sent " + std::to_string(fds.size()) + " rootfs fds, not " +
                                std::to_string(want)));
  auto it = fds.begin();
  plan.target_fd = std::move(*it++);
  plan.upper_fd = std::move(*it++);
  plan.work_fd = std::move(*it++);
  for (size_t i = 0; i < plan.lower.size(); ++i) plan.lower_fds.push_back(std::move(*it++));
  for (auto& v : plan.volumes) v.source_fd = std::move(*it++);
  return {};
}

int run_init() {
  // Die with the shim. The post-clone child already set this before exec
  // (closing the window before we run); setting it again here keeps the
  // agent correct if it is ever started another way. getppid() reads 0 in
  // a new pid namespace, so the go pipe's EOF is the second check.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // Nothing in the box may read our memory or /proc/1/exe (CVE-2019-5736 class).
  ::prctl(PR_SET_DUMPABLE, 0);
  // Run from a memfd, our comm would read "memfd:cubby-agent".
  ::prctl(PR_SET_NAME, "cubby-agent");

  auto raw = sys::read_all(launch::kAgentConfigFd, 16u << 20);
  ::close(launch::kAgentConfigFd);
  if (!raw) {
    LOG_ERROR("read config: {}", raw.error().message());
    return 125;
  }
  auto cfg = proto::Json::parse(*raw, nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object()) {
    LOG_ERROR("malformed config");
    return 125;
  }
  agent::AgentOptions opts;
  try {
    int cgroup_fds = cfg.value("workload_cgroup_fds", 0);
    if (cgroup_fds < 0 || cgroup_fds > launch::kAgentMaxCgroupFds) {
      LOG_ERROR("bad config: workload_cgroup_fds {}", cgroup_fds);
      return 125;
    }
    for (int i = 0; i < cgroup_fds; ++i) {
      int fd = launch::kAgentWorkloadCgroupFd + i;
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // installed by dup2, which clears it
      opts.workload_cgroup.emplace_back(fd);
    }
    if (cfg.contains("workload_pids_fd")) {
      int fd = cfg["workload_pids_fd"].get<int>();
      int64_t max = cfg.at("pids_max").get<int64_t>();
      if (fd != launch::kAgentWorkloadCgroupFd + cgroup_fds || fd >= launch::kAgentMaxFds || max <= 0) {
        LOG_ERROR("bad config: workload_pids_fd {}, pids_max {}", fd, max);
        return 125;
      }
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      opts.workload_pids_current.reset(fd);
      opts.pids_max = max;
    }
    agent::RootfsPlan plan;
    agent::read_common_config(cfg, opts, plan);
    if (cfg.contains("rootfs")) {
      const auto& r = cfg["rootfs"];
      plan.lower = r.at("lower").get<std::vector<std::string>>();
      plan.upper = r.at("upper").get<std::string>();
      plan.work = r.at("work").get<std::string>();
      plan.target = r.at("target").get<std::string>();
      for (const auto& v : r.value("volumes", proto::Json::array()))
        plan.volumes.push_back({v.at("source").get<std::string>(), v.at("target").get<std::string>(),
                                v.value("read_only", false), UniqueFd()});
      if (r.value("fds", false)) {
        if (auto ok = receive_rootfs_fds(plan); !ok) {
          LOG_ERROR("set up rootfs: {}", ok.error().message());
          return 125;
        }
      }
      if (auto ok = agent::setup_sandbox_root(plan); !ok) {
        LOG_ERROR("set up rootfs: {}", ok.error().message());
        return 125;
      }
      // A joined network namespace is its owner's to configure (and the
      // box's user namespace has no rights over it).
      if (auto ok = plan.joined_net ? Result<void>{} : agent::bring_up_loopback(); !ok) {
        LOG_ERROR("{}", ok.error().message());
        return 125;
      }
    }
  } catch (const std::exception& e) {
    LOG_ERROR("bad config: {}", e.what());
    return 125;
  }
  ::close(launch::kAgentMountFd);
  agent::Server server(std::move(opts), UniqueFd(launch::kAgentListenFd), UniqueFd(launch::kAgentLogFd),
                       UniqueFd(launch::kAgentGoFd));
  return server.run();
}

}  // namespace

int main(int argc, char** argv) {
  log::set_prefix("cubby-agent");
  if (argc >= 2 && std::strcmp(argv[1], "init") == 0) return run_init();
  // /init of a cubby micro-VM (the vm backend's initramfs).
  if (agent::is_vm_init()) agent::run_vm_init();
  if (argc >= 2 && std::strcmp(argv[1], "--version") == 0) {
    static const char v[] = "cubby-agent " CUBBY_VERSION "\n";
    (void)!::write(1, v, sizeof v - 1);
    return 0;
  }
  static const char usage[] = "cubby-agent runs as PID 1 inside a cubby box; it is started by cubby-shim.\n";
  (void)!::write(2, usage, sizeof usage - 1);
  return 2;
}
