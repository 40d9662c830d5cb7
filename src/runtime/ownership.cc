#include "runtime/ownership.h"

#include <dirent.h>

#include <cstdlib>

#include "base/process.h"
#include "base/sys.h"

namespace cubby {
namespace {

// The box id of a process whose argv is exactly [<dir>/cubby-shim, <id>].
std::optional<std::string> shim_argv_box(pid_t pid) {
  auto argv = process_argv(pid);
  if (!argv || argv->size() != 2) return std::nullopt;
  const std::string& a0 = (*argv)[0];
  auto slash = a0.rfind('/');
  std::string base = slash == std::string::npos ? a0 : a0.substr(slash + 1);
  if (base != kShimName) return std::nullopt;
  return (*argv)[1];
}

bool alive(const Result<ProcStat>& st) { return st && st->state != 'Z' && st->state != 'X'; }

}  // namespace

bool is_shim_of(pid_t pid, uint64_t start_time, const std::string& box_id) {
  if (pid <= 0) return false;
  auto st = process_stat(pid);  // start time and state from one read
  if (!st || st->start_time != start_time || !alive(st)) return false;
  auto id = shim_argv_box(pid);
  return id && *id == box_id;
}

std::optional<std::set<std::string>> live_shim_box_ids() {
  DIR* d = ::opendir("/proc");  // glibc opens it O_CLOEXEC
  if (!d) return std::nullopt;
  std::set<std::string> out;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    auto id = shim_argv_box(static_cast<pid_t>(pid));
    if (id && alive(process_stat(static_cast<pid_t>(pid)))) out.insert(*id);
  }
  ::closedir(d);
  return out;
}

Result<UniqueFd> open_shim(pid_t pid, uint64_t start_time, const std::string& box_id) {
  auto fd = sys::pidfd_open(pid);
  if (!fd) return fail(Error::not_found("shim of box " + box_id + " is not running"));
  if (!is_shim_of(pid, start_time, box_id))
    return fail(Error::not_found("shim of box " + box_id + " is not running"));
  return std::move(*fd);
}

}  // namespace cubby
