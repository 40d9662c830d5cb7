// cgroup v2: one directory, <root>/cubby/<box_id>, with the agent and
// workload leaves (cgroup.h). The controllers the limits need are enabled in
// the subtree_control of <root>, <root>/cubby and the box directory first.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <sstream>

#include "base/fs.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace cubby::sandbox::detail {
namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Waits for cgroup.events to say "populated 0" (kernfs wakes POLLPRI on change).
Result<void> v2_wait_empty(const std::string& dir, Clock::time_point deadline) {
  std::string path = dir + "/cgroup.events";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENODEV) return {};
    return sys_fail("open " + path);
  }
  for (;;) {
    char buf[256];
    ssize_t n = ::pread(fd.get(), buf, sizeof buf - 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENODEV) return {};
      return sys_fail("read " + path);
    }
    buf[n] = '\0';
    if (std::string_view(buf, n).find("populated 0") != std::string_view::npos) return {};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return fail(Error::timeout(dir + " still populated after the backstop"));
    pollfd p{fd.get(), POLLPRI, 0};
    int r = ::poll(&p, 1, left > 1000000 ? 1000000 : static_cast<int>(left));
    if (r < 0 && errno != EINTR) return sys_fail("poll " + path);
  }
}

class CgroupV2 final : public Cgroup {
 public:
  explicit CgroupV2(std::string dir) : dir_(std::move(dir)) {}

  Result<void> add_process(pid_t pid, Leaf leaf) override {
    auto r = write_cgroup_file(leaf_dir(dir_, leaf) + "/cgroup.procs", std::to_string(pid));
    if (!r) return fail(r.error().wrap("add process " + std::to_string(pid) + " to cgroup"));
    return {};
  }

  // cgroup.procs: a thread may only move within its threaded domain. Each
  // write takes the kernel's global threadgroup lock (unless the hierarchy
  // is mounted with favordynmods); clone3's CLONE_INTO_CGROUP would avoid it.
  Result<std::vector<UniqueFd>> open_self_join(Leaf leaf) override {
    return open_for_writing({leaf_dir(dir_, leaf) + "/cgroup.procs"});
  }

  Result<UniqueFd> open_pids_current(Leaf leaf) override {
    std::string p = leaf_dir(dir_, leaf) + "/pids.current";
    if (!file_exists(p)) return UniqueFd();  // no pids controller enabled below us
    return open_for_reading(p);
  }

  Result<bool> oom_killed() override { return read_oom_kill(leaf_dir(dir_, Leaf::kWorkload) + "/memory.events"); }

  Result<void> destroy() override {
    // cgroup.kill (5.14+) kills the whole subtree at once, forks included;
    // the pidfd rounds in destroy_dirs then wait for every process to exit.
    std::string kill = dir_ + "/cgroup.kill";
    if (file_exists(kill)) {
      if (auto r = write_cgroup_file(kill, "1"); !r) LOG_DEBUG("{}", r.error().message());
    }
    return destroy_dirs({dir_}, &v2_wait_empty);
  }

  std::vector<std::string> paths() const override { return {dir_}; }

 private:
  std::string dir_;
};

// Enables each wanted controller not yet in dir/cgroup.subtree_control. A
// failure matters only for a controller some limit needs.
Result<void> enable_controllers(const std::string& dir, const std::vector<std::string>& wanted,
                                const std::vector<std::string>& required) {
  std::string path = dir + "/cgroup.subtree_control";
  auto text = read_file(path);
  if (!text) {
    if (required.empty()) return {};
    return fail(text.error());
  }
  auto enabled = split_words(*text);
  for (const auto& c : wanted) {
    if (contains(enabled, c)) continue;
    auto r = write_cgroup_file(path, "+" + c);
    if (!r) {
      if (contains(required, c))
        return fail(r.error().wrap("cannot apply the " + c + " limit: enable controller " + c));
      LOG_DEBUG("enable {} in {}: {}", c, path, r.error().message());
    }
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Cgroup>> create_v2(const std::string& root, const std::string& box_id,
                                          const CgroupLimits& limits) {
  CUBBY_TRYV(validate_box_id(box_id));
  auto writes = CUBBY_TRY(v2_limit_writes(limits));
  auto required = required_controllers(limits);

  std::string ctl_path = root + "/cgroup.controllers";
  auto ctl = read_file(ctl_path);
  if (!ctl) return fail(ctl.error());
  auto available = split_words(*ctl);
  std::vector<std::string> wanted;
  for (const char* c : kControllers) {
    if (contains(available, c))
      wanted.push_back(c);
    else if (contains(required, c))
      return fail(Error(ErrorKind::kSystem, std::string("cannot apply the ") + c +
                                                " limit: cgroup v2 controller " + c +
                                                " is not listed in " + ctl_path));
  }

  std::string parent = root + "/" + kParentName;
  CUBBY_TRYV(enable_controllers(root, wanted, required));
  CUBBY_TRYV(make_dir(parent));
  CUBBY_TRYV(enable_controllers(parent, wanted, required));
  std::string dir = parent + "/" + box_id;
  CUBBY_TRYV(make_dir(dir));
  auto cg = std::make_unique<CgroupV2>(dir);
  auto rollback = [&](const Error& e) {
    (void)cg->destroy();
    return fail(e);
  };
  // The box directory holds no process (v2's rule for a node that passes
  // controllers down), only the two leaves; the limits go on the workload's.
  if (auto r = enable_controllers(dir, wanted, required); !r) return rollback(r.error());
  for (Leaf leaf : {Leaf::kAgent, Leaf::kWorkload})
    if (auto r = make_dir(leaf_dir(dir, leaf)); !r) return rollback(r.error());

  std::string workload = leaf_dir(dir, Leaf::kWorkload);
  for (const auto& w : writes) {
    std::string path = workload + "/" + w.file;
    if (w.optional && !file_exists(path)) continue;
    if (auto r = write_cgroup_file(path, w.value); !r)
      return rollback(r.error().wrap("apply " + w.controller + " limit"));
  }
  return std::unique_ptr<Cgroup>(std::move(cg));
}

Result<std::unique_ptr<Cgroup>> open_v2(const std::string& root, const std::string& box_id) {
  CUBBY_TRYV(validate_box_id(box_id));
  std::string dir = root + "/" + kParentName + "/" + box_id;
  if (!file_exists(dir)) return std::unique_ptr<Cgroup>();
  return std::unique_ptr<Cgroup>(std::make_unique<CgroupV2>(dir));
}

}  // namespace cubby::sandbox::detail
