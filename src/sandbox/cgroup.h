// Per-box cgroups, behind one interface for cgroup v1 (this machine: hybrid,
// v1 controllers, cgroup2 holding only hugetlb) and v2 (unified).
// The shim creates the cgroup before the box's first process runs and
// destroys it when the box ends; recovery destroys leftovers of dead shims.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

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
};

class Cgroup {
 public:
  virtual ~Cgroup() = default;

  // Creates the box's cgroup under a "cubby" parent and applies the limits.
  // A limit the host cannot apply is an error naming the controller, never
  // silently ignored.
  static Result<std::unique_ptr<Cgroup>> create(const std::string& box_id, const CgroupLimits& limits);
  // Opens what exists of a box's cgroup (for cleanup); nullptr if nothing.
  // Both honour $CUBBY_CGROUP_ROOT (default /sys/fs/cgroup), for tests.
  static Result<std::unique_ptr<Cgroup>> open_existing(const std::string& box_id);

  virtual Result<void> add_process(pid_t pid) = 0;
  // SIGKILLs whatever is still inside, waits for those processes to be gone
  // (pidfds, no sleeping loops), then removes the directories. Idempotent.
  virtual Result<void> destroy() = 0;
  // The directories that make up this cgroup (one per v1 controller).
  virtual std::vector<std::string> paths() const = 0;
};

// Recovery: destroys whatever exists of a box's cgroup (open_existing +
// destroy). Nothing there is success.
Result<void> destroy_box_cgroup(const std::string& box_id);

}  // namespace cubby::sandbox
