// Per-box cgroups, behind one interface for cgroup v1 (this machine: hybrid,
// v1 controllers, cgroup2 holding only hugetlb) and v2 (unified).
// The shim creates the cgroup before the box's first process runs and
// destroys it when the box ends; recovery destroys leftovers of dead shims.
//
// A box's cgroup is an inner node with two leaves, in every hierarchy:
//   <box>/agent      the box's PID 1 (cubby-agent): no limits;
//   <box>/workload   the main process and every exec: --memory, --cpus, --pids-limit.
// So when the workload exhausts its memory, the OOM killer chooses among the
// workload's processes and never kills the agent that reports their status
// (the agent's sealed memfd copy of its binary counts as its memory, which
// made it the biggest process; and no host here may lower oom_score_adj).
// Two leaves rather than agent-in-the-parent because v2 allows processes
// only in leaves; v1 gets the same shape so both versions behave alike.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::sandbox {

enum class CgroupVersion { kNone, kV1, kV2 };

// v2 when /sys/fs/cgroup is a cgroup2 mount; v1 when it holds per-controller
// v1 hierarchies (a hybrid cgroup2 mount at /sys/fs/cgroup/unified is ignored).
CgroupVersion detect_cgroup_version();
const char* to_string(CgroupVersion v);

struct CgroupLimits {
  std::optional<int64_t> memory_bytes;  // --memory
  std::optional<double> cpus;           // --cpus (quota over a 100 ms period)
  std::optional<int64_t> pids_max;      // --pids-limit
  // --cpu-shares: v1 cpu.shares (2..262144, 1024 is the default weight);
  // v2 cpu.weight, converted as runc and crun do.
  std::optional<uint64_t> cpu_shares;
};

// The two leaves of a box's cgroup (see the top of this file).
enum class Leaf { kAgent, kWorkload };
// The leaf's directory name: "agent" or "workload".
const char* leaf_name(Leaf leaf);

class Cgroup {
 public:
  virtual ~Cgroup() = default;

  // Creates the box's cgroup under a "cubby" parent with both leaves, and
  // applies the limits to the workload leaf. A limit the host cannot apply
  // is an error naming the controller, never silently ignored.
  static Result<std::unique_ptr<Cgroup>> create(const std::string& box_id, const CgroupLimits& limits);
  // Opens what exists of a box's cgroup (for cleanup), leaves or not (boxes
  // of older versions had none); nullptr if nothing.
  // Both honour $CUBBY_CGROUP_ROOT (default /sys/fs/cgroup), for tests.
  static Result<std::unique_ptr<Cgroup>> open_existing(const std::string& box_id);

  // Puts process pid (all its threads) into the leaf, in every hierarchy.
  virtual Result<void> add_process(pid_t pid, Leaf leaf) = 0;
  // Write-only, close-on-exec fds through which a process moves itself into
  // the leaf: it writes "0" to each (one per v1 hierarchy). Opened by a
  // privileged caller and handed to a less privileged one (the kernel checks
  // the opener's credentials). v1: the leaf's `tasks`, which moves only the
  // writing thread, so the writer must be single-threaded (a freshly cloned
  // child is); unlike `cgroup.procs` it skips the kernel's global
  // threadgroup lock, whose write side waits for an RCU grace period (5-30
  // ms per exec on this host, against 0.1 ms). v2: `cgroup.procs`
  // (`cgroup.threads` cannot leave a threaded domain).
  virtual Result<std::vector<UniqueFd>> open_self_join(Leaf leaf) = 0;
  // A read-only fd of the leaf's pids.current (invalid without a pids
  // controller). The kernel holds fork and clone to pids.max but not a
  // process moving in (open_self_join), which can take the count past it;
  // whoever moves processes in reads this to keep to the limit.
  virtual Result<UniqueFd> open_pids_current(Leaf leaf) = 0;
  // Whether the kernel's OOM killer killed a process of the workload leaf
  // (its memory cgroup's oom_kill count: v1 memory.oom_control, kernel >=
  // 4.13; v2 memory.events). False without a memory controller.
  virtual Result<bool> oom_killed() = 0;
  // Freezes or thaws the leaf's processes (`pause`/`resume`): v1's freezer
  // hierarchy (the box gets a freezer cgroup where one is mounted), v2's
  // cgroup.freeze. Returns once the kernel says the leaf is frozen (v2:
  // cgroup.events, by POLLPRI; v1 has no notification, see cgroup_v1.cc).
  // Without a freezer: an error saying so.
  virtual Result<void> freeze(Leaf leaf, bool frozen) = 0;
  virtual Result<bool> frozen(Leaf leaf) = 0;
  // Applies new limits to the workload leaf of a live box (`update`): only
  // the limits that are set are written.
  virtual Result<void> set_limits(const CgroupLimits& limits) = 0;
  // SIGKILLs whatever is still inside (leaves, the parent, any cgroup
  // below), waits for those processes to be gone (pidfds, no sleeping
  // loops), then removes the directories, deepest first. Idempotent.
  virtual Result<void> destroy() = 0;
  // The box's directories, parents of the leaves (one per v1 controller).
  virtual std::vector<std::string> paths() const = 0;
};

// What a box's workload leaf has used (GET /v1/boxes/{ref}/stats); a value
// the host's controllers do not report is unset.
struct CgroupStats {
  std::optional<int64_t> cpu_usage_ns, memory_bytes, memory_limit_bytes, pids, pids_limit;
  std::optional<int64_t> io_read_bytes, io_write_bytes;
};
// Reads the workload leaf under each of cg.paths() (v1: memory, cpu(acct),
// pids, blkio where mounted alongside; v2: cpu.stat, memory.*, pids.*,
// io.stat). "max" (or v1's huge no-limit value) is no limit: unset.
CgroupStats read_stats(const Cgroup& cg);

// Recovery: destroys whatever exists of a box's cgroup (open_existing +
// destroy). Nothing there is success.
Result<void> destroy_box_cgroup(const std::string& box_id);

}  // namespace cubby::sandbox
