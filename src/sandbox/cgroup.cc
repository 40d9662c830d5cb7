// Version detection, the public factories, and what v1 and v2 share:
// limit formatting, cgroup file I/O, and the kill-and-remove sequence.
#include "sandbox/cgroup.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "sandbox/cgroup_internal.h"

namespace cubby::sandbox {
namespace detail {

std::string cgroup_root() {
  const char* env = std::getenv("CUBBY_CGROUP_ROOT");
  if (env && *env) return env;
  return "/sys/fs/cgroup";
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

static bool is_dir(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

CgroupVersion detect_cgroup_version_at(const std::string& root) {
  if (file_exists(root + "/cgroup.controllers")) return CgroupVersion::kV2;
  for (const char* c : kControllers)
    if (file_exists(root + "/" + c + "/tasks")) return CgroupVersion::kV1;
  return CgroupVersion::kNone;
}

Result<void> validate_box_id(const std::string& box_id) {
  if (box_id.empty() || box_id == "." || box_id == ".." ||
      box_id.find_first_of(std::string_view("/\0", 2)) != std::string::npos)
    return fail(Error::invalid("invalid box id for a cgroup name: '" + box_id + "'"));
  return {};
}

std::vector<std::string> required_controllers(const CgroupLimits& limits) {
  std::vector<std::string> out;
  if (limits.memory_bytes) out.push_back("memory");
  if (limits.cpus || limits.cpu_shares) out.push_back("cpu");
  if (limits.pids_max) out.push_back("pids");
  return out;
}

namespace {

struct CheckedLimits {
  std::optional<std::string> memory;     // bytes
  std::optional<std::string> cpu_quota;  // microseconds per kCpuPeriodUs
  std::optional<std::string> pids;       // number or "max"
  std::optional<uint64_t> shares;        // 2..262144
};

Result<CheckedLimits> check_limits(const CgroupLimits& l) {
  CheckedLimits c;
  if (l.memory_bytes) {
    if (*l.memory_bytes <= 0)
      return fail(Error::invalid("memory limit must be positive, got " + std::to_string(*l.memory_bytes)));
    c.memory = std::to_string(*l.memory_bytes);
  }
  if (l.cpus) {
    double cpus = *l.cpus;
    // The kernel's minimum quota is 1 ms; the upper bound only keeps llround defined.
    if (!std::isfinite(cpus) || cpus < 0.01 || cpus > 1e6)
      return fail(Error::invalid("cpus must be between 0.01 and 1000000, got " + std::to_string(cpus)));
    c.cpu_quota = std::to_string(std::llround(cpus * static_cast<double>(kCpuPeriodUs)));
  }
  if (l.pids_max) {
    // Docker: 0 or -1 means unlimited.
    c.pids = *l.pids_max > 0 ? std::to_string(*l.pids_max) : std::string("max");
  }
  if (l.cpu_shares) {
    if (*l.cpu_shares < 2 || *l.cpu_shares > 262144)
      return fail(Error::invalid("cpu shares must be between 2 and 262144, got " + std::to_string(*l.cpu_shares)));
    c.shares = *l.cpu_shares;
  }
  return c;
}

}  // namespace

Result<std::vector<LimitWrite>> v1_limit_writes(const CgroupLimits& limits) {
  CheckedLimits c = CUBBY_TRY(check_limits(limits));
  std::vector<LimitWrite> w;
  if (c.memory) {
    w.push_back({"memory", "memory.limit_in_bytes", *c.memory, false});
    // memory+swap = memory: no swap. Absent when swap accounting is off.
    w.push_back({"memory", "memory.memsw.limit_in_bytes", *c.memory, true});
  }
  if (c.cpu_quota) {
    w.push_back({"cpu", "cpu.cfs_period_us", std::to_string(kCpuPeriodUs), false});
    w.push_back({"cpu", "cpu.cfs_quota_us", *c.cpu_quota, false});
  }
  if (c.pids) w.push_back({"pids", "pids.max", *c.pids, false});
  if (c.shares) w.push_back({"cpu", "cpu.shares", std::to_string(*c.shares), false});
  return w;
}

Result<std::vector<LimitWrite>> v2_limit_writes(const CgroupLimits& limits) {
  CheckedLimits c = CUBBY_TRY(check_limits(limits));
  std::vector<LimitWrite> w;
  if (c.memory) {
    w.push_back({"memory", "memory.max", *c.memory, false});
    // Absent when the kernel has no swap accounting.
    w.push_back({"memory", "memory.swap.max", "0", true});
  }
  if (c.cpu_quota)
    w.push_back({"cpu", "cpu.max", *c.cpu_quota + " " + std::to_string(kCpuPeriodUs), false});
  if (c.pids) w.push_back({"pids", "pids.max", *c.pids, false});
  // runc's and crun's mapping of shares [2, 262144] onto weight [1, 10000].
  if (c.shares) w.push_back({"cpu", "cpu.weight", std::to_string(1 + ((*c.shares - 2) * 9999) / 262142), false});
  return w;
}

Result<void> write_cgroup_file(const std::string& path, std::string_view value) {
  // No O_CREAT: a cgroup file that isn't there means the controller isn't.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  // One write(): cgroup files take a value per write call.
  ssize_t n;
  do n = ::write(fd.get(), value.data(), value.size());
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_fail("write '" + std::string(value) + "' to " + path);
  if (static_cast<size_t>(n) != value.size())
    return fail(Error::sys("short write of '" + std::string(value) + "' to " + path, EIO));
  return {};
}

Result<void> make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) < 0 && errno != EEXIST) return sys_fail("mkdir " + path);
  return {};
}

std::string leaf_dir(const std::string& box_dir, Leaf leaf) { return box_dir + "/" + leaf_name(leaf); }

Result<std::vector<UniqueFd>> open_for_writing(const std::vector<std::string>& paths) {
  std::vector<UniqueFd> fds;
  for (const auto& p : paths) {
    UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return sys_fail("open " + p);
    fds.push_back(std::move(fd));
  }
  return fds;
}

Result<UniqueFd> open_for_reading(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  return fd;
}

Result<bool> read_oom_kill(const std::string& path) {
  auto text = read_file(path);
  if (!text) {
    int e = text.error().sys_errno();
    if (e == ENOENT || e == ENODEV) return false;
    return fail(text.error());
  }
  constexpr std::string_view kKey = "oom_kill ";
  for (size_t at = 0; at < text->size();) {
    size_t nl = text->find('\n', at);
    std::string_view line(text->data() + at, (nl == std::string::npos ? text->size() : nl) - at);
    if (line.starts_with(kKey)) return std::strtoull(std::string(line.substr(kKey.size())).c_str(), nullptr, 10) > 0;
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return false;
}

Result<std::vector<pid_t>> read_procs(const std::string& dir) {
  std::string path = dir + "/cgroup.procs";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT || errno == ENODEV) return std::vector<pid_t>{};  // already removed
    return sys_fail("open " + path);
  }
  auto text = sys::read_all(fd.get());
  if (!text) {
    if (text.error().sys_errno() == ENODEV) return std::vector<pid_t>{};
    return fail(text.error().wrap("read " + path));
  }
  std::vector<pid_t> pids;
  const char* p = text->c_str();
  while (*p) {
    char* end;
    long v = std::strtol(p, &end, 10);
    if (end == p) break;
    if (v > 0) pids.push_back(static_cast<pid_t>(v));  // 0: not visible in our pid namespace
    p = end;
    while (*p == '\n' || *p == ' ') ++p;
  }
  return pids;
}

static void collect_post_order(const std::string& dir, std::vector<std::string>& out, int depth) {
  if (depth > 64) return;  // cgroup nesting is bounded far below this in practice
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);  // opendir: O_CLOEXEC
  if (!ec) {
    for (const auto& e : it) {
      std::error_code ec2;
      if (e.symlink_status(ec2).type() == std::filesystem::file_type::directory)
        collect_post_order(e.path().string(), out, depth + 1);
    }
  }
  if (is_dir(dir)) out.push_back(dir);
}

std::vector<std::string> subtree_post_order(const std::string& dir) {
  std::vector<std::string> out;
  collect_post_order(dir, out, 0);
  return out;
}

namespace {

Result<std::set<pid_t>> list_all(const std::vector<std::string>& dirs) {
  std::set<pid_t> pids;
  for (const auto& d : dirs) {
    auto v = CUBBY_TRY(read_procs(d));
    pids.insert(v.begin(), v.end());
  }
  return pids;
}

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1000000 ? 1000000 : static_cast<int>(left);
}

// Waits until every pidfd is readable (its process has exited).
Result<void> wait_all_exited(std::vector<UniqueFd>& fds, Clock::time_point deadline) {
  std::vector<pollfd> pfds;
  for (auto& fd : fds) pfds.push_back({fd.get(), POLLIN, 0});
  while (!pfds.empty()) {
    int n = ::poll(pfds.data(), pfds.size(), ms_left(deadline));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("poll pidfds");
    }
    if (n == 0)
      return fail(Error::timeout(std::to_string(pfds.size()) +
                                 " killed process(es) still running after the backstop"));
    std::erase_if(pfds, [](const pollfd& p) { return p.revents != 0; });
  }
  return {};
}

}  // namespace

Result<size_t> kill_round(const std::vector<std::string>& dirs, Clock::time_point deadline) {
  std::vector<std::string> all;
  for (const auto& d : dirs) {
    auto sub = subtree_post_order(d);
    all.insert(all.end(), sub.begin(), sub.end());
  }
  std::set<pid_t> first = CUBBY_TRY(list_all(all));
  if (first.empty()) return size_t{0};

  const pid_t self = ::getpid();
  std::vector<std::pair<pid_t, UniqueFd>> pinned;
  for (pid_t pid : first) {
    if (pid == self) return fail(Error::conflict("cgroup to destroy contains the calling process"));
    auto fd = sys::pidfd_open(pid);
    if (!fd) {
      if (fd.error().sys_errno() == ESRCH) continue;  // exited meanwhile
      return fail(fd.error());
    }
    pinned.emplace_back(pid, std::move(*fd));
  }
  // A pid listed before the pidfd was opened may have been recycled by an
  // unrelated process. Listed again now, it is the pinned process (or the
  // pinned one is dead and the signal is a no-op), so it is safe to kill.
  std::set<pid_t> second = CUBBY_TRY(list_all(all));
  std::vector<UniqueFd> killed;
  for (auto& [pid, fd] : pinned) {
    if (!second.contains(pid)) continue;
    auto r = sys::pidfd_send_signal(fd.get(), SIGKILL);
    if (!r && r.error().sys_errno() != ESRCH)
      return fail(r.error().wrap("kill " + std::to_string(pid)));
    killed.push_back(std::move(fd));
  }
  CUBBY_TRYV(wait_all_exited(killed, deadline));
  return killed.size();
}

Result<void> destroy_dirs(const std::vector<std::string>& dirs, WaitEmptyFn wait_empty) {
  const auto deadline = Clock::now() + kDestroyBackstop;
  for (;;) {
    size_t killed = CUBBY_TRY(kill_round(dirs, deadline));
    std::string busy;
    for (const auto& top : dirs) {
      for (const auto& d : subtree_post_order(top)) {
        if (::rmdir(d.c_str()) == 0 || errno == ENOENT) continue;
        if (errno != EBUSY) return sys_fail("rmdir " + d);
        busy = d;
        break;
      }
      if (!busy.empty()) break;
    }
    if (busy.empty()) return {};
    if (Clock::now() >= deadline) return sys_fail("rmdir " + busy + " (backstop expired)", EBUSY);
    LOG_DEBUG("rmdir {}: busy, retrying", busy);
    // Processes joined since the listing: kill them first. Otherwise the
    // kernel is still tearing down exited tasks; wait for it.
    if (killed == 0) CUBBY_TRYV(wait_empty(busy, deadline));
  }
}

}  // namespace detail

using namespace detail;

CgroupVersion detect_cgroup_version() { return detect_cgroup_version_at(cgroup_root()); }

const char* leaf_name(Leaf leaf) { return leaf == Leaf::kAgent ? "agent" : "workload"; }

const char* to_string(CgroupVersion v) {
  switch (v) {
    case CgroupVersion::kV1: return "v1";
    case CgroupVersion::kV2: return "v2";
    case CgroupVersion::kNone: break;
  }
  return "none";
}

Result<std::unique_ptr<Cgroup>> Cgroup::create(const std::string& box_id, const CgroupLimits& limits) {
  std::string root = cgroup_root();
  Result<std::unique_ptr<Cgroup>> r;
  switch (detect_cgroup_version_at(root)) {
    case CgroupVersion::kV1: r = create_v1(root, box_id, limits); break;
    case CgroupVersion::kV2: r = create_v2(root, box_id, limits); break;
    case CgroupVersion::kNone:
      r = fail(Error(ErrorKind::kSystem, "no cgroup v1 or v2 hierarchy found under " + root));
      break;
  }
  if (!r) return fail(r.error().wrap("create cgroup for box " + box_id));
  return r;
}

Result<std::unique_ptr<Cgroup>> Cgroup::open_existing(const std::string& box_id) {
  std::string root = cgroup_root();
  switch (detect_cgroup_version_at(root)) {
    case CgroupVersion::kV1: return open_v1(root, box_id);
    case CgroupVersion::kV2: return open_v2(root, box_id);
    case CgroupVersion::kNone: break;
  }
  return std::unique_ptr<Cgroup>();
}

Result<void> destroy_box_cgroup(const std::string& box_id) {
  auto cg = CUBBY_TRY(Cgroup::open_existing(box_id));
  if (!cg) return {};
  auto r = cg->destroy();
  if (!r) return fail(r.error().wrap("destroy cgroup of box " + box_id));
  return {};
}

namespace {

std::optional<std::string> read_small(const std::string& path) {
  auto t = read_file(path, 1 << 16);
  if (!t) return std::nullopt;
  return *t;
}

std::optional<int64_t> read_int(const std::string& path) {
  auto t = read_small(path);
  if (!t) return std::nullopt;
  std::string v = *t;
  while (!v.empty() && (v.back() == '\n' || v.back() == ' ')) v.pop_back();
  if (v == "max") return std::nullopt;
  char* end = nullptr;
  errno = 0;
  long long n = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno) return std::nullopt;
  // v1's "no limit" is PAGE_COUNTER_MAX rounded to pages (~2^63).
  if (n >= (int64_t{1} << 62)) return std::nullopt;
  return n;
}

// "key value" lines (cpu.stat); the value of key.
std::optional<int64_t> keyed(const std::string& text, const std::string& key) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string line = text.substr(pos, eol - pos);
    if (line.rfind(key + " ", 0) == 0) return std::strtoll(line.c_str() + key.size() + 1, nullptr, 10);
    pos = eol + 1;
  }
  return std::nullopt;
}

}  // namespace

CgroupStats read_stats(const Cgroup& cg) {
  CgroupStats st;
  auto set = [](std::optional<int64_t>& into, std::optional<int64_t> v) {
    if (!into && v) into = v;
  };
  std::string cpu_leaf;  // v1's cpu hierarchy, for the fallback below
  for (const auto& dir : cg.paths()) {
    std::string leaf = dir + "/" + leaf_name(Leaf::kWorkload);
    set(st.cpu_usage_ns, read_int(leaf + "/cpuacct.usage"));  // v1
    if (auto t = read_small(leaf + "/cpu.stat"); t && !st.cpu_usage_ns)  // v2
      if (auto us = keyed(*t, "usage_usec")) st.cpu_usage_ns = *us * 1000;
    set(st.memory_bytes, read_int(leaf + "/memory.usage_in_bytes"));
    set(st.memory_bytes, read_int(leaf + "/memory.current"));
    if (!st.memory_limit_bytes) {
      if (detail::file_exists(leaf + "/memory.limit_in_bytes")) set(st.memory_limit_bytes, read_int(leaf + "/memory.limit_in_bytes"));
      else set(st.memory_limit_bytes, read_int(leaf + "/memory.max"));
    }
    set(st.pids, read_int(leaf + "/pids.current"));
    set(st.pids_limit, read_int(leaf + "/pids.max"));
    if (detail::file_exists(leaf + "/cpu.shares")) cpu_leaf = leaf;
    // v1 blkio: "MAJ:MIN Read N" and "MAJ:MIN Write N" per device (and a Total).
    if (auto t = read_small(leaf + "/blkio.throttle.io_service_bytes"); t && !st.io_read_bytes) {
      int64_t r = 0, w = 0;
      for (size_t p = t->find(" Read "); p != std::string::npos; p = t->find(" Read ", p + 1)) r += std::strtoll(t->c_str() + p + 6, nullptr, 10);
      for (size_t p = t->find(" Write "); p != std::string::npos; p = t->find(" Write ", p + 1)) w += std::strtoll(t->c_str() + p + 7, nullptr, 10);
      set(st.io_read_bytes, r);
      set(st.io_write_bytes, w);
    }
    if (auto t = read_small(leaf + "/io.stat")) {  // v2: "MAJ:MIN rbytes=N wbytes=N ..." per device
      int64_t r = 0, w = 0;
      for (size_t p = t->find("rbytes="); p != std::string::npos; p = t->find("rbytes=", p + 1)) r += std::strtoll(t->c_str() + p + 7, nullptr, 10);
      for (size_t p = t->find("wbytes="); p != std::string::npos; p = t->find("wbytes=", p + 1)) w += std::strtoll(t->c_str() + p + 7, nullptr, 10);
      set(st.io_read_bytes, r);
      set(st.io_write_bytes, w);
    }
  }
  // v1 without a cpuacct hierarchy: the CPU time of the leaf's processes
  // and of the children they reaped (exited execs are not counted).
  if (!st.cpu_usage_ns && !cpu_leaf.empty()) {
    if (auto procs = read_small(cpu_leaf + "/cgroup.procs")) {
      int64_t ticks = 0;
      bool any = false;
      for (const char* p = procs->c_str(); *p;) {
        char* end = nullptr;
        long pid = std::strtol(p, &end, 10);
        if (end == p) break;
        p = *end ? end + 1 : end;
        auto stat = read_small("/proc/" + std::to_string(pid) + "/stat");
        if (!stat) continue;
        auto rp = stat->rfind(')');
        if (rp == std::string::npos) continue;
        // Fields after ")": state(3) ... utime(14) stime(15) cutime(16) cstime(17).
        const char* f = stat->c_str() + rp + 2;
        for (int field = 3; field < 14 && *f; ++field) f = std::strchr(f, ' ') ? std::strchr(f, ' ') + 1 : "";
        for (int k = 0; k < 4 && *f; ++k) {
          ticks += std::strtoll(f, &end, 10);
          f = *end ? end + 1 : end;
        }
        any = true;
      }
      if (any) st.cpu_usage_ns = ticks * (1000000000 / ::sysconf(_SC_CLK_TCK));
    }
  }
  return st;
}

}  // namespace cubby::sandbox
