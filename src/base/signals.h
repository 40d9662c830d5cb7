// Signal names as users give them (CLI flags, REST query parameters).
#pragma once

#include <string>

#include "base/error.h"

namespace cubby {

// "KILL", "SIGKILL", "kill", "9".
Result<int> parse_signal(const std::string& s);

}  // namespace cubby
