// cgroup v1: one directory per controller hierarchy,
// <root>/<memory|cpu|pids>/cubby/<box_id>.
#include <sched.h>

#include <algorithm>
#include <cerrno>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace cubby::sandbox::detail {
namespace {

// v1 offers no notification for "the last exited task has left"; this only
// runs when rmdir reported EBUSY and a fresh listing found nobody to kill,
// i.e. inside the kernel's short teardown window, and destroy_dirs bounds
// the retries with its backstop. Yield the CPU so the exiting task can finish.
Result<void> v1_wait_empty(const std::string&, Clock::time_point) {
  ::sched_yield();
  return {};
}

class CgroupV1 final : public Cgroup {
 public:
  CgroupV1() = default;
  explicit CgroupV1(std::vector<std::string> dirs) : dirs_(std::move(dirs)) {}

  void add_dir(std::string d) { dirs_.push_back(std::move(d)); }

  Result<void> add_process(pid_t pid) override {
    for (const auto& d : dirs_) {
      auto r = write_cgroup_file(d + "/cgroup.procs", std::to_string(pid));
      if (!r) return fail(r.error().wrap("add process " + std::to_string(pid) + " to cgroup"));
    }
    return {};
  }

  Result<void> destroy() override { return destroy_dirs(dirs_, &v1_wait_empty); }

  std::vector<std::string> paths() const override { return dirs_; }

 private:
  std::vector<std::string> dirs_;
};

std::string box_dir(const std::string& root, const std::string& ctrl, const std::string& box_id) {
  return root + "/" + ctrl + "/" + kParentName + "/" + box_id;
}

Result<void> apply_limits(const std::string& root, const std::string& box_id,
                          const std::vector<LimitWrite>& writes) {
  for (const auto& w : writes) {
    std::string dir = box_dir(root, w.controller, box_id);
    std::string path = dir + "/" + w.file;
    if (w.optional && !file_exists(path)) continue;
    auto r = write_cgroup_file(path, w.value);
    if (!r && w.file == "memory.limit_in_bytes" && r.error().sys_errno() == EINVAL) {
      // A reused cgroup whose memsw limit is below the new memory limit:
      // the kernel wants memsw >= memory at all times, so raise memsw first.
      std::string memsw = dir + "/memory.memsw.limit_in_bytes";
      if (file_exists(memsw) && write_cgroup_file(memsw, w.value)) r = write_cgroup_file(path, w.value);
    }
    if (!r) return fail(r.error().wrap("apply " + w.controller + " limit"));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Cgroup>> create_v1(const std::string& root, const std::string& box_id,
                                          const CgroupLimits& limits) {
  CUBBY_TRYV(validate_box_id(box_id));
  auto writes = CUBBY_TRY(v1_limit_writes(limits));
  auto required = required_controllers(limits);

  auto cg = std::make_unique<CgroupV1>();
  auto rollback = [&](const Error& e) {
    (void)cg->destroy();
    return fail(e);
  };
  for (const char* ctrl : kControllers) {
    std::string hier = root + "/" + ctrl;
    if (!file_exists(hier + "/cgroup.procs")) {
      if (std::find(required.begin(), required.end(), ctrl) != required.end())
        return rollback(Error(ErrorKind::kSystem, std::string("cannot apply the ") + ctrl +
                                                      " limit: cgroup v1 controller " + ctrl +
                                                      " is not mounted at " + hier));
      continue;
    }
    auto r = make_dir(hier + "/" + kParentName);
    if (r) {
      std::string dir = box_dir(root, ctrl, box_id);
      r = make_dir(dir);
      if (r) cg->add_dir(dir);
    }
    if (!r) return rollback(r.error());
  }
  if (cg->paths().empty())
    return fail(Error(ErrorKind::kSystem, "no cgroup v1 memory, cpu or pids hierarchy under " + root));
  if (auto r = apply_limits(root, box_id, writes); !r) return rollback(r.error());
  return std::unique_ptr<Cgroup>(std::move(cg));
}

Result<std::unique_ptr<Cgroup>> open_v1(const std::string& root, const std::string& box_id) {
  CUBBY_TRYV(validate_box_id(box_id));
  std::vector<std::string> dirs;
  for (const char* ctrl : kControllers) {
    std::string dir = box_dir(root, ctrl, box_id);
    if (file_exists(dir)) dirs.push_back(dir);
  }
  if (dirs.empty()) return std::unique_ptr<Cgroup>();
  return std::unique_ptr<Cgroup>(std::make_unique<CgroupV1>(std::move(dirs)));
}

}  // namespace cubby::sandbox::detail
