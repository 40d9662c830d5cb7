// Runtime::stats and Runtime::processes: what `stats`, `top` and the
// server's stats route read of a running box, all from the host side
// (cgroup files and /proc), so asking never disturbs the box.
#include <sstream>

#include "base/fs.h"
#include "runtime/runtime.h"

namespace cubby {

using store::BoxStatus;
namespace {

// The pids in a leaf of the box's cgroup (the first hierarchy that has it:
// every v1 hierarchy holds the same processes).
std::vector<pid_t> leaf_pids(const sandbox::Cgroup& cg, sandbox::Leaf leaf) {
  std::vector<pid_t> pids;
  for (const auto& dir : cg.paths()) {
    auto procs = read_file(dir + "/" + sandbox::leaf_name(leaf) + "/cgroup.procs", 1u << 20);
    if (!procs) continue;
    std::istringstream in(*procs);
    for (long pid; in >> pid;) pids.push_back(static_cast<pid_t>(pid));
    return pids;
  }
  return pids;
}

// Bytes received and sent on every interface but lo of the network
// namespace `pid` is in (/proc/PID/net/dev is that namespace's view); a
// box with only lo (--network none) has carried 0 bytes.
void read_net_dev(pid_t pid, Runtime::BoxStats& st) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/net/dev", 1u << 20);
  if (!text) return;
  std::istringstream in(*text);
  std::string line;
  int64_t rx = 0, tx = 0;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;  // the two header lines
    std::string name = line.substr(0, colon);
    name.erase(0, name.find_first_not_of(' '));
    if (name == "lo") continue;
    // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
    std::istringstream f(line.substr(colon + 1));
    int64_t v[9] = {};
    for (auto& x : v) f >> x;
    if (!f) continue;
    rx += v[0];
    tx += v[8];
  }
  st.net_rx_bytes = rx;
  st.net_tx_bytes = tx;
}

}  // namespace

Result<Runtime::BoxStats> Runtime::stats(const std::string& ref) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  auto cg = CUBBY_TRY(sandbox::Cgroup::open_existing(b.id));
  BoxStats st;
  if (!cg) return st;  // no cgroups here (vm, rootless): nothing to report
  static_cast<sandbox::CgroupStats&>(st) = sandbox::read_stats(*cg);
  // The agent is the box's PID 1 and lives as long as the box: its
  // namespace is the box's.
  auto agent = leaf_pids(*cg, sandbox::Leaf::kAgent);
  if (!agent.empty()) read_net_dev(agent.front(), st);
  return st;
}

Result<std::vector<pid_t>> Runtime::processes(const std::string& ref) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  auto cg = CUBBY_TRY(sandbox::Cgroup::open_existing(b.id));
  if (!cg || cg->paths().empty()) {
    if (b.isolation == "vm")
      return fail(Error::conflict("box " + b.name + " is a vm box: its processes are the guest's, not the host's "
                                  "(use `cubby exec " + b.name + " ps`)"));
    return fail(Error::conflict("box " + b.name + " has no cgroup on this host (rootless): its processes cannot be listed"));
  }
  return leaf_pids(*cg, sandbox::Leaf::kWorkload);
}

Result<pid_t> Runtime::init_pid(const std::string& ref) {
  auto b = CUBBY_TRY(resolve(ref));
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  if (b.isolation != "sandbox") return fail(Error::conflict("box " + b.name + " is a vm box: its PID 1 is the guest's"));
  auto cg = CUBBY_TRY(sandbox::Cgroup::open_existing(b.id));
  if (!cg || cg->paths().empty())
    return fail(Error::conflict("box " + b.name + " has no cgroup on this host (rootless): its PID 1 cannot be found"));
  // The agent leaf also holds the agent's children until they move to the
  // workload leaf: PID 1 is the one whose innermost pid is 1.
  for (pid_t pid : leaf_pids(*cg, sandbox::Leaf::kAgent)) {
    auto status = read_file("/proc/" + std::to_string(pid) + "/status", 1u << 16);
    if (!status) continue;
    auto at = status->find("\nNSpid:");
    if (at == std::string::npos) continue;
    std::string line = status->substr(at + 8, status->find('\n', at + 1) - at - 8);
    if (auto last = line.find_last_of(" \t"); last != std::string::npos && line.substr(last + 1) == "1") return pid;
  }
  return fail(Error::not_found("box " + b.name + ": its PID 1 is not in its cgroup"));
}

}  // namespace cubby
