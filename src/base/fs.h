// Small file helpers. Writes that must survive a crash use write_file_atomic
// (temp file + fsync + rename).
#pragma once

#include <filesystem>
#include <string>

#include "base/error.h"

namespace cubby {

Result<std::string> read_file(const std::string& path, size_t limit = 64u << 20);
Result<void> write_file(const std::string& path, std::string_view data, int mode = 0644);
Result<void> write_file_atomic(const std::string& path, std::string_view data, int mode = 0644);
Result<void> mkdir_p(const std::string& path, int mode = 0755);
// Removes a tree; missing is fine. Never follows symlinks out of the tree.
Result<void> remove_tree(const std::string& path);

// RFC 3339 UTC timestamp with seconds precision, e.g. 2026-11-23T01:02:03Z.
std::string now_rfc3339();

}  // namespace cubby
