// cgroup v1: one directory per controller hierarchy,
// <root>/<memory|cpu|pids> (and freezer, cpuacct, blkio where mounted)/cubby/<box_id>, each with the agent and workload
// leaves (cgroup.h).
#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>

#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"
#include "base/fs.h"

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

// Not limits: a box gets a freezer cgroup (for pause) and cpuacct and blkio
// cgroups (CPU time and I/O bytes for stats, where cpuacct is not mounted
// with cpu) where those hierarchies are mounted, and none where they are not.
constexpr const char* kFreezer = "freezer";
constexpr const char* kOptional[] = {kFreezer, "cpuacct", "blkio"};

// Whether root/ctrl is a hierarchy the box has a directory in already (a
// co-mounted "cpu,cpuacct" appears under both names).
bool same_hierarchy_as_one_of(const std::string& root, const std::string& ctrl, const std::vector<std::string>& used) {
  char here[PATH_MAX];
  if (!::realpath((root + "/" + ctrl).c_str(), here)) return false;
  for (const auto& u : used) {
    char there[PATH_MAX];
    if (::realpath((root + "/" + u).c_str(), there) && std::string(here) == there) return true;
  }
  return false;
}

class CgroupV1 final : public Cgroup {
 public:
  // The box directory in controller ctrl's hierarchy.
  void add_dir(const std::string& ctrl, std::string d) {
    if (ctrl == "memory") memory_dir_ = d;
    if (ctrl == "pids") pids_dir_ = d;
    if (ctrl == kFreezer) freezer_dir_ = d;
    ctrl_of_.push_back(ctrl);
    dirs_.push_back(std::move(d));
  }

  // v1's freezer.state reads FREEZING until every task has entered the
  // refrigerator, and offers no notification (no cgroup.events in v1): the
  // wait yields the CPU to the tasks being frozen and is bounded by a
  // backstop. Tasks that sleep are frozen at once; this is a few yields.
  Result<void> freeze(Leaf leaf, bool frozen) override {
    if (freezer_dir_.empty()) return fail(Error(ErrorKind::kSystem, "no cgroup v1 freezer hierarchy is mounted (pause needs one)"));
    std::string path = leaf_dir(freezer_dir_, leaf) + "/freezer.state";
    CUBBY_TRYV(write_cgroup_file(path, frozen ? "FROZEN" : "THAWED"));
    auto deadline = Clock::now() + kDestroyBackstop;
    for (;;) {
      auto st = read_file(path);
      if (!st) return fail(st.error());
      if (st->rfind(frozen ? "FROZEN" : "THAWED", 0) == 0) return {};
      if (Clock::now() > deadline) return fail(Error::timeout(path + " still reads " + *st));
      ::sched_yield();
    }
  }

  Result<bool> frozen(Leaf leaf) override {
    if (freezer_dir_.empty()) return false;
    auto st = read_file(leaf_dir(freezer_dir_, leaf) + "/freezer.state");
    if (!st) return fail(st.error());
    return st->rfind("THAWED", 0) != 0;
  }

  Result<void> set_limits(const CgroupLimits& limits) override {
    for (const auto& w : CUBBY_TRY(v1_limit_writes(limits))) {
      auto it = std::find(ctrl_of_.begin(), ctrl_of_.end(), w.controller);
      if (it == ctrl_of_.end())
        return fail(Error(ErrorKind::kSystem, "cannot apply the " + w.controller + " limit: the box has no " + w.controller + " cgroup"));
      std::string path = leaf_dir(dirs_[static_cast<size_t>(it - ctrl_of_.begin())], Leaf::kWorkload) + "/" + w.file;
      if (w.optional && !file_exists(path)) continue;
      if (auto r = write_cgroup_file(path, w.value); !r) return fail(r.error().wrap("apply " + w.controller + " limit"));
    }
    return {};
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

  Result<void> destroy() override {
    // v1 tasks stay frozen with a SIGKILL pending: thaw before killing.
    if (!freezer_dir_.empty())
      for (Leaf l : {Leaf::kWorkload, Leaf::kAgent})
        if (file_exists(leaf_dir(freezer_dir_, l) + "/freezer.state"))
          (void)write_cgroup_file(leaf_dir(freezer_dir_, l) + "/freezer.state", "THAWED");
    return destroy_dirs(dirs_, &v1_wait_empty);
  }

  std::vector<std::string> paths() const override { return dirs_; }
  const std::vector<std::string>& controllers() const { return ctrl_of_; }

 private:
  std::vector<std::string> dirs_, ctrl_of_;
  std::string memory_dir_, pids_dir_, freezer_dir_;
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
  // The box's directory and its two leaves in one hierarchy.
  auto make_box_dirs = [&](const std::string& ctrl) -> Result<void> {
    std::string dir = box_dir(root, ctrl, box_id);
    CUBBY_TRYV(make_dir(root + "/" + ctrl + "/" + kParentName));
    CUBBY_TRYV(make_dir(dir));
    cg->add_dir(ctrl, dir);
    CUBBY_TRYV(make_dir(leaf_dir(dir, Leaf::kAgent)));
    return make_dir(leaf_dir(dir, Leaf::kWorkload));
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
    if (auto r = make_box_dirs(ctrl); !r) return rollback(r.error());
  }
  if (cg->paths().empty())
    return fail(Error(ErrorKind::kSystem, "no cgroup v1 memory, cpu or pids hierarchy under " + root));
  for (const char* ctrl : kOptional)
    if (file_exists(root + "/" + ctrl + "/cgroup.procs") && !same_hierarchy_as_one_of(root, ctrl, cg->controllers()))
      if (auto r = make_box_dirs(ctrl); !r) return rollback(r.error());
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
  if (!cg->paths().empty())
    for (const char* ctrl : kOptional)
      if (file_exists(box_dir(root, ctrl, box_id)) && !same_hierarchy_as_one_of(root, ctrl, cg->controllers()))
        cg->add_dir(ctrl, box_dir(root, ctrl, box_id));
  if (cg->paths().empty()) return std::unique_ptr<Cgroup>();
  return std::unique_ptr<Cgroup>(std::move(cg));
}

}  // namespace cubby::sandbox::detail
