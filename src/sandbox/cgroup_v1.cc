// cgroup v1: one directory per controller hierarchy,
// <root>/<memory|cpu|pids>/cubby/<box_id>, each with the agent and workload
// leaves (cgroup.h).
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
  // The box directory in controller ctrl's hierarchy.
  void add_dir(const std::string& ctrl, std::string d) {
    if (ctrl == "memory") memory_dir_ = d;
    if (ctrl == "pids") pids_dir_ = d;
    dirs_.push_back(std::move(d));
  }

  Result<void> add_process(pid_t pid, Leaf leaf) override {
    for (const auto& d : dirs_) {
      auto r = write_cgroup_file(leaf_dir(d, leaf) + "/cgroup.procs", std::to_string(pid));
      if (!r) return fail(r.error().wrap("add process " + std::to_string(pid) + " to cgroup"));
    }
    return {};
  }

  Result<std::vector<UniqueFd>> open_self_join(Leaf leaf) override {
    std::vector<std::string> files;
    for (const auto& d : dirs_) files.push_back(leaf_dir(d, leaf) + "/tasks");
    return open_for_writing(files);
  }

  Result<UniqueFd> open_pids_current(Leaf leaf) override {
    if (pids_dir_.empty()) return UniqueFd();
    return open_for_reading(leaf_dir(pids_dir_, leaf) + "/pids.current");
  }

  Result<bool> oom_killed() override {
    if (memory_dir_.empty()) return false;
    return read_oom_kill(leaf_dir(memory_dir_, Leaf::kWorkload) + "/memory.oom_control");
  }

  Result<void> destroy() override { return destroy_dirs(dirs_, &v1_wait_empty); }

  std::vector<std::string> paths() const override { return dirs_; }

 private:
  std::vector<std::string> dirs_;
  std::string memory_dir_, pids_dir_;
};

std::string box_dir(const std::string& root, const std::string& ctrl, const std::string& box_id) {
  return root + "/" + ctrl + "/" + kParentName + "/" + box_id;
}

// Limits go on the workload leaf only: the agent leaf must never be the one
// that runs out.
Result<void> apply_limits(const std::string& root, const std::string& box_id,
                          const std::vector<LimitWrite>& writes) {
  for (const auto& w : writes) {
    std::string dir = leaf_dir(box_dir(root, w.controller, box_id), Leaf::kWorkload);
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
    std::string dir = box_dir(root, ctrl, box_id);
    auto r = make_dir(hier + "/" + kParentName);
    if (r) r = make_dir(dir);
    if (r) {
      cg->add_dir(ctrl, dir);
      r = make_dir(leaf_dir(dir, Leaf::kAgent));
    }
    if (r) r = make_dir(leaf_dir(dir, Leaf::kWorkload));
    if (!r) return rollback(r.error());
  }
  if (cg->paths().empty())
    return fail(Error(ErrorKind::kSystem, "no cgroup v1 memory, cpu or pids hierarchy under " + root));
  if (auto r = apply_limits(root, box_id, writes); !r) return rollback(r.error());
  return std::unique_ptr<Cgroup>(std::move(cg));
}

Result<std::unique_ptr<Cgroup>> open_v1(const std::string& root, const std::string& box_id) {
  CUBBY_TRYV(validate_box_id(box_id));
  auto cg = std::make_unique<CgroupV1>();
  for (const char* ctrl : kControllers) {
    std::string dir = box_dir(root, ctrl, box_id);
    if (file_exists(dir)) cg->add_dir(ctrl, dir);
  }
  if (cg->paths().empty()) return std::unique_ptr<Cgroup>();
  return std::unique_ptr<Cgroup>(std::move(cg));
}

}  // namespace cubby::sandbox::detail
