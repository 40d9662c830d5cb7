// Small file helpers. Writes that must survive a crash use write_file_atomic
// (temp file + fsync + rename).
//
// Modes default to private (0600 files, 0700 directories): most of what
// cubby creates is in its home, whose boxes and layers hold setuid files
// and whose store holds secrets (-e values). A file meant for others (one a
// box's non-root users read, say) passes its mode.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby {

Result<std::string> read_file(const std::string& path, size_t limit = 64u << 20);
// A new file gets `mode` (narrowed by the umask); an existing one keeps its own.
Result<void> write_file(const std::string& path, std::string_view data, int mode = 0600);
Result<void> write_file_atomic(const std::string& path, std::string_view data, int mode = 0600);
// mkdir -p where every directory it makes gets exactly `mode` (not narrowed
// by the umask: a box's upper dir is its /, whose mode the box sees);
// directories already there are left alone. Races with other creators are
// fine.
Result<void> mkdir_p(const std::string& path, int mode = 0700);
// Drops path's group and other permission bits if it has any (missing is
// fine): what an older cubby (or an admin) made 0755 or 0644 is closed on
// the next open, not left exposed. By path, without opening it: closing an
// fd of a database would drop the POSIX locks SQLite holds on it.
Result<void> make_private(const std::string& path);
// mkdir_p(path, 0700), then make_private(path).
Result<void> make_private_dir(const std::string& path);
// Removes a tree; missing is fine. Never follows symlinks out of the tree.
Result<void> remove_tree(const std::string& path);
// The names in a directory, without "." and ".."; empty if it cannot be read.
std::vector<std::string> list_dir(const std::string& dir);

// The components of a "/"-separated path, empty ones left out.
std::vector<std::string> split_path(const std::string& p);

// openat2(at, path, flags | O_CLOEXEC) with the RESOLVE_* flags `resolve`
// ("" means "."), retried on EINTR and on EAGAIN (a concurrent rename made
// the kernel give up on ".." safety; the man page asks for a retry). On
// failure the fd is invalid and errno is set.
UniqueFd open_resolved(int at, const std::string& path, int flags, uint64_t resolve);

// RFC 3339 UTC timestamp with seconds precision, e.g. 2026-11-23T01:02:03Z.
std::string now_rfc3339();

}  // namespace cubby
