// Internals shared by cgroup.cc, cgroup_v1.cc and cgroup_v2.cc. Not part of
// the public interface; unit tests include it to exercise the pieces that
// can't be tried for real on every host (v2 on a v1 machine) against a fake
// root directory.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "sandbox/cgroup.h"

namespace cubby::sandbox::detail {

using Clock = std::chrono::steady_clock;

// Name of the directory under each hierarchy that holds the boxes' cgroups.
inline constexpr const char* kParentName = "cubby";
// The v1 controllers a box gets a cgroup in, and the only ones v2 enables.
inline constexpr const char* kControllers[] = {"memory", "cpu", "pids"};
// CFS period used for --cpus, in microseconds.
inline constexpr int64_t kCpuPeriodUs = 100000;
// Backstop for destroy(): how long killed processes get to disappear.
inline constexpr std::chrono::seconds kDestroyBackstop{10};

// $CUBBY_CGROUP_ROOT if set and non-empty, else /sys/fs/cgroup.
std::string cgroup_root();
// v2 when root/cgroup.controllers exists (only a cgroup2 mount has it at its
// top); v1 when root/<memory|cpu|pids>/tasks exists ("tasks" is v1-only);
// kNone otherwise.
CgroupVersion detect_cgroup_version_at(const std::string& root);

// Box ids become directory names: non-empty, no '/', not "." or "..", no NUL.
Result<void> validate_box_id(const std::string& box_id);

// One file write that applies a limit.
struct LimitWrite {
  std::string controller;  // v1 hierarchy / v2 controller, e.g. "memory"
  std::string file;        // e.g. "memory.limit_in_bytes"
  std::string value;
  bool optional = false;   // skipped when the file doesn't exist (swap accounting off)
};
// The writes that apply limits, in order. Invalid limits (memory <= 0,
// cpus below 0.01 or not finite) are kInvalid errors.
Result<std::vector<LimitWrite>> v1_limit_writes(const CgroupLimits& limits);
Result<std::vector<LimitWrite>> v2_limit_writes(const CgroupLimits& limits);

// Controllers (of kControllers) that the limits need.
std::vector<std::string> required_controllers(const CgroupLimits& limits);

// Writes value to an existing cgroup file (never creates it). The error
// names the file and the value.
Result<void> write_cgroup_file(const std::string& path, std::string_view value);
bool file_exists(const std::string& path);
// mkdir; EEXIST is fine (a leftover of the same box is reused, as runc does).
Result<void> make_dir(const std::string& path);
// leaf's directory under a box directory.
std::string leaf_dir(const std::string& box_dir, Leaf leaf);
// Opens each path write-only (O_CLOEXEC): Cgroup::open_self_join.
Result<std::vector<UniqueFd>> open_for_writing(const std::vector<std::string>& paths);
Result<UniqueFd> open_for_reading(const std::string& path);
// The "oom_kill N" line of a memory.oom_control (v1) or memory.events (v2)
// file: N > 0. A missing file or line is false (no memory controller, or a
// kernel that does not count OOM kills).
Result<bool> read_oom_kill(const std::string& path);
// Pids listed in dir/cgroup.procs; a missing dir yields none.
Result<std::vector<pid_t>> read_procs(const std::string& dir);
// dir and every cgroup below it, deepest first (rmdir order). Missing: none.
std::vector<std::string> subtree_post_order(const std::string& dir);

// One kill round over the subtrees of dirs: lists their processes, pins each
// with a pidfd, re-checks membership (so a recycled pid is never signalled),
// SIGKILLs them and waits until every pidfd is readable (the process has
// exited), up to deadline. Returns how many processes were signalled.
Result<size_t> kill_round(const std::vector<std::string>& dirs, Clock::time_point deadline);

// The whole destroy sequence shared by v1 and v2: kill rounds and rmdir
// (deepest first) until every dir is gone. On EBUSY it runs another kill
// round; if that finds nobody, wait_empty(dir, deadline) waits for the kernel
// to finish tearing down (v2: cgroup.events "populated 0").
using WaitEmptyFn = Result<void> (*)(const std::string& dir, Clock::time_point deadline);
Result<void> destroy_dirs(const std::vector<std::string>& dirs, WaitEmptyFn wait_empty);

// Version-specific factories with an explicit root (tests point it at a temp dir).
Result<std::unique_ptr<Cgroup>> create_v1(const std::string& root, const std::string& box_id,
                                          const CgroupLimits& limits);
Result<std::unique_ptr<Cgroup>> open_v1(const std::string& root, const std::string& box_id);
Result<std::unique_ptr<Cgroup>> create_v2(const std::string& root, const std::string& box_id,
                                          const CgroupLimits& limits);
Result<std::unique_ptr<Cgroup>> open_v2(const std::string& root, const std::string& box_id);

}  // namespace cubby::sandbox::detail
