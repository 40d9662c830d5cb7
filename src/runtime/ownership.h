// Guarantee 1: deciding whether a pid is a given box's shim.
//
// A pid is that box's shim only if (a) its argv is exactly
// [<dir>/cubby-shim, <box_id>] (element-wise, so "box-1" never matches
// "box-10"), (b) its start time equals the one recorded with the pid (so a
// reused pid never matches), and (c) it is not a zombie. The probe only
// reads /proc; it never signals or waits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby {

inline constexpr const char* kShimName = "cubby-shim";

bool is_shim_of(pid_t pid, uint64_t start_time, const std::string& box_id);

// Opens a pidfd for the box's shim, verified *after* opening (so the pidfd
// cannot refer to a process that replaced the shim). NotFound if the shim
// is not alive.
Result<UniqueFd> open_shim(pid_t pid, uint64_t start_time, const std::string& box_id);

// The box ids named by every live shim on the host, by argv alone (a /proc
// scan, for the rare paths that have no recorded pid: the orphan sweep).
// Nullopt if /proc cannot be read.
std::optional<std::set<std::string>> live_shim_box_ids();

}  // namespace cubby
