#include "runtime/ownership.h"

#include "base/process.h"
#include "base/sys.h"

namespace cubby {

bool is_shim_of(pid_t pid, uint64_t start_time, const std::string& box_id) {
  if (pid <= 0) return false;
  auto st = process_stat(pid);  // start time and state from one read
  if (!st || st->start_time != start_time) return false;
  if (st->state == 'Z' || st->state == 'X') return false;
  auto argv = process_argv(pid);
  if (!argv || argv->size() != 2) return false;
  const std::string& a0 = (*argv)[0];
  auto slash = a0.rfind('/');
  std::string base = slash == std::string::npos ? a0 : a0.substr(slash + 1);
  return base == kShimName && (*argv)[1] == box_id;
}

Result<UniqueFd> open_shim(pid_t pid, uint64_t start_time, const std::string& box_id) {
  auto fd = sys::pidfd_open(pid);
  if (!fd) return fail(Error::not_found("shim of box " + box_id + " is not running"));
  if (!is_shim_of(pid, start_time, box_id))
    return fail(Error::not_found("shim of box " + box_id + " is not running"));
  return std::move(*fd);
}

}  // namespace cubby
