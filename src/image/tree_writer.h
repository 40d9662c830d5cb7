// Writes the entries of a tar stream into a directory, confined by the
// kernel: every parent is resolved from a descriptor of the root with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and the last component is
// created with *at() calls that never follow it. Internal to cubby_image
// (used by unpack.cc).
//
// Why not libarchive's archive_write_disk: its SECURE_SYMLINKS check walks
// every component of the absolute destination path with lstat/open from
// user space for every entry (about nine opens per entry of a layer staged
// six directories deep), which was most of the CPU time of a pull of a
// busybox layer; and a user-space walk is only as safe as nothing racing
// it. Here one openat2 (usually cached: tar entries come grouped by
// directory) does the check in the kernel.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <sys/types.h>

#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::image {

class TreeWriter {
 public:
  // root: an existing directory (not a symlink).
  static Result<TreeWriter> open(const std::string& root);

  // Paths below are clean and relative ("a/b/c", "" for the root itself),
  // as unpack.cc's clean_entry_path makes them. An existing object at the
  // path is replaced, except that a directory stays a directory.

  // A regular file, empty, mode 0600 until finish_file(); write its data
  // with pwrite, then call finish_file.
  Result<UniqueFd> create_file(const std::string& rel);
  // Size (sparse tails), ownership, mode, xattrs, times from e.
  Result<void> finish_file(int fd, const std::string& rel, struct archive_entry* e);
  // A directory, symlink or FIFO with e's metadata (a directory's mode and
  // times are applied by finish(), so that a read-only directory can still
  // be filled).
  Result<void> create_other(const std::string& rel, struct archive_entry* e);
  // A hard link at rel to the existing object at target.
  Result<void> link(const std::string& rel, const std::string& target);
  // The directory at rel (created, with its parents, where missing).
  Result<UniqueFd> open_dir(const std::string& rel);
  // Applies the deferred directory metadata, deepest first.
  Result<void> finish();

 private:
  explicit TreeWriter(UniqueFd root) : root_(std::move(root)) {}
  struct DirMeta {
    mode_t mode;
    uid_t uid;
    gid_t gid;
    struct timespec times[2];
    std::vector<std::pair<std::string, std::string>> xattrs;
  };
  // An O_PATH descriptor of rel's parent directory (created where missing)
  // and rel's last component.
  Result<int> parent_of(const std::string& rel, std::string& name);
  // Removes what is at parent/name unless both it and the new object are
  // directories; returns whether a directory was kept.
  Result<bool> clear(int parent, const std::string& name, const std::string& rel, bool new_is_dir);
  Result<void> apply_owner_mode_xattrs(int fd, const std::string& rel, uid_t uid, gid_t gid, mode_t mode,
                                       const std::vector<std::pair<std::string, std::string>>& xattrs);
  void forget_cached(const std::string& rel);

  UniqueFd root_;
  std::string cached_parent_;  // the relative path cached_fd_ was opened for
  UniqueFd cached_fd_;
  std::map<std::string, DirMeta> dirs_;
};

}  // namespace cubby::image
