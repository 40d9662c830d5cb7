#include "image/tree_writer.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace cubby::image {
namespace {

// rel resolved beneath dir; a symlink anywhere on the way (or a ".." that
// would leave dir) fails with ELOOP/EXDEV instead of being followed.
int open_beneath(int dir, const std::string& rel, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd;
  do fd = ::syscall(SYS_openat2, dir, rel.empty() ? "." : rel.c_str(), &how, sizeof how);
  while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return static_cast<int>(fd);
}

// A failed write of an entry: resource and I/O trouble is the host's
// (kSystem); anything else (a symlink in the way, a missing hardlink target,
// a non-empty directory to replace) is the archive's fault.
Error entry_error(const std::string& rel, const std::string& what, int e) {
  std::string where = "unpack \"" + (rel.empty() ? std::string(".") : rel) + "\": " + what;
  switch (e) {
    case ENOSPC: case EDQUOT: case EIO: case EROFS: case ENOMEM: case EMFILE: case ENFILE:
      return Error::sys(where, e);
    case ELOOP: case EXDEV:
      return Error::invalid(where + ": a symlink is in the way");
    default:
      return Error::invalid(where + ": " + std::strerror(e));
  }
}

// atime and mtime of e; a time the archive does not carry is left alone
// (atime follows mtime, as tar does).
void entry_times(struct archive_entry* e, struct timespec t[2]) {
  t[1] = archive_entry_mtime_is_set(e) ? timespec{archive_entry_mtime(e), archive_entry_mtime_nsec(e)}
                                       : timespec{0, UTIME_OMIT};
  t[0] = archive_entry_atime_is_set(e) ? timespec{archive_entry_atime(e), archive_entry_atime_nsec(e)} : t[1];
}

std::vector<std::pair<std::string, std::string>> entry_xattrs(struct archive_entry* e) {
  std::vector<std::pair<std::string, std::string>> out;
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  archive_entry_xattr_reset(e);
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
    if (name) out.emplace_back(name, std::string(static_cast<const char*>(value), size));
  return out;
}

// Ownership is restored by numeric ids, as root only (as libarchive does:
// anyone else gets the files as their own).
bool restoring_owner() {
  static const bool root = ::geteuid() == 0;
  return root;
}

}  // namespace

Result<TreeWriter> TreeWriter::open(const std::string& root) {
  UniqueFd fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return sys_fail("open " + root);
  return TreeWriter(std::move(fd));
}

void TreeWriter::forget_cached(const std::string& rel) {
  if (cached_parent_ == rel || cached_parent_.starts_with(rel + "/")) {
    cached_fd_.reset();
    cached_parent_.clear();
  }
}

Result<UniqueFd> TreeWriter::open_dir(const std::string& rel) {
  UniqueFd fd(open_beneath(root_.get(), rel, O_RDONLY | O_DIRECTORY));
  if (fd || errno != ENOENT) {
    if (!fd) return fail(entry_error(rel, "open directory", errno));
    return fd;
  }
  // Create what is missing, one component at a time, each opened beneath
  // the previous one.
  UniqueFd at(::fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
  if (!at) return sys_fail("dup layer root fd");
  for (size_t start = 0; start < rel.size();) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string comp = rel.substr(start, end - start);
    start = end + 1;
    if (::mkdirat(at.get(), comp.c_str(), 0755) < 0 && errno != EEXIST)
      return fail(entry_error(rel, "create directory " + comp, errno));
    UniqueFd next(open_beneath(at.get(), comp, O_RDONLY | O_DIRECTORY));
    if (!next) return fail(entry_error(rel, "open directory " + comp, errno));
    at = std::move(next);
  }
  return at;
}

Result<int> TreeWriter::parent_of(const std::string& rel, std::string& name) {
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos) {
    name = rel;
    return root_.get();
  }
  std::string parent = rel.substr(0, slash);
  name = rel.substr(slash + 1);
  if (cached_fd_ && cached_parent_ == parent) return cached_fd_.get();
  UniqueFd fd(open_beneath(root_.get(), parent, O_PATH | O_DIRECTORY));
  if (!fd && errno == ENOENT) fd = CUBBY_TRY(open_dir(parent));  // tar may omit parents
  if (!fd) return fail(entry_error(rel, "open parent directory", errno));
  cached_fd_ = std::move(fd);
  cached_parent_ = parent;
  return cached_fd_.get();
}

Result<bool> TreeWriter::clear(int parent, const std::string& name, const std::string& rel, bool new_is_dir) {
  struct stat st;
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return false;
    return fail(entry_error(rel, "stat", errno));
  }
  if (S_ISDIR(st.st_mode)) {
    if (new_is_dir) return true;
    if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) < 0) return fail(entry_error(rel, "replace directory", errno));
    dirs_.erase(rel);
    forget_cached(rel);
  } else if (::unlinkat(parent, name.c_str(), 0) < 0) {
    return fail(entry_error(rel, "replace", errno));
  }
  return false;
}

Result<void> TreeWriter::apply_owner_mode_xattrs(int fd, const std::string& rel, uid_t uid, gid_t gid, mode_t mode,
                                                 const std::vector<std::pair<std::string, std::string>>& xattrs) {
  bool owned = uid == ::geteuid() && gid == ::getegid();  // what an unprivileged writer gets
  if (restoring_owner()) {
    owned = ::fchown(fd, uid, gid) == 0;
    if (!owned) LOG_DEBUG("image unpack: {}: chown {}:{}: {}", rel, uid, gid, std::strerror(errno));
  }
  // Set-id bits only on files that got the archive's owner.
  if (!owned) mode &= ~static_cast<mode_t>(S_ISUID | S_ISGID);
  if (::fchmod(fd, mode & 07777) < 0) return fail(entry_error(rel, "chmod", errno));
  // After chown, which clears security.capability.
  for (const auto& [n, v] : xattrs) {
    if (::fsetxattr(fd, n.c_str(), v.data(), v.size(), 0) == 0) continue;
    if (errno != EPERM && errno != EACCES && errno != ENOTSUP && errno != EINVAL)
      return fail(entry_error(rel, "set xattr " + n, errno));
    LOG_DEBUG("image unpack: {}: xattr {} not kept: {}", rel, n, std::strerror(errno));
  }
  return {};
}

Result<UniqueFd> TreeWriter::create_file(const std::string& rel) {
  std::string name;
  int parent = CUBBY_TRY(parent_of(rel, name));
  for (bool retried = false;; retried = true) {
    UniqueFd fd(::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd) return fd;
    if (errno != EEXIST || retried) return fail(entry_error(rel, "create", errno));
    CUBBY_TRYV(clear(parent, name, rel, false));
  }
}

Result<void> TreeWriter::finish_file(int fd, const std::string& rel, struct archive_entry* e) {
  struct stat st;
  if (::fstat(fd, &st) < 0) return fail(entry_error(rel, "stat", errno));
  // A sparse file's last hole is not written by any block.
  if (archive_entry_size_is_set(e) && st.st_size < archive_entry_size(e) && ::ftruncate(fd, archive_entry_size(e)) < 0)
    return fail(entry_error(rel, "truncate", errno));
  CUBBY_TRYV(apply_owner_mode_xattrs(fd, rel, archive_entry_uid(e), archive_entry_gid(e), static_cast<mode_t>(archive_entry_mode(e) & 07777), entry_xattrs(e)));
  struct timespec t[2];
  entry_times(e, t);
  if (::futimens(fd, t) < 0) return fail(entry_error(rel, "set times", errno));
  // Start writing it back now, while the rest of the layer arrives: the
  // store's one syncfs before the commit then finds little left to do.
  (void)::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  return {};
}

Result<void> TreeWriter::create_other(const std::string& rel, struct archive_entry* e) {
  mode_t type = archive_entry_filetype(e);
  struct timespec t[2];
  entry_times(e, t);
  if (type == AE_IFDIR) {
    if (!rel.empty()) {
      std::string name;
      int parent = CUBBY_TRY(parent_of(rel, name));
      // 0700 until finish(): an archive's read-only directory must still take its entries.
      if (::mkdirat(parent, name.c_str(), 0700) < 0) {
        if (errno != EEXIST) return fail(entry_error(rel, "create directory", errno));
        bool kept = CUBBY_TRY(clear(parent, name, rel, true));
        if (!kept && ::mkdirat(parent, name.c_str(), 0700) < 0) return fail(entry_error(rel, "create directory", errno));
      }
    }
    dirs_[rel] = DirMeta{static_cast<mode_t>(archive_entry_mode(e) & 07777), static_cast<uid_t>(archive_entry_uid(e)),
                         static_cast<gid_t>(archive_entry_gid(e)), {t[0], t[1]}, entry_xattrs(e)};
    return {};
  }
  std::string name;
  int parent = CUBBY_TRY(parent_of(rel, name));
  auto make = [&]() -> int {
    if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(e);
      if (!target) target = archive_entry_symlink_utf8(e);
      if (!target) {
        errno = EINVAL;
        return -1;
      }
      return ::symlinkat(target, parent, name.c_str());
    }
    return ::mknodat(parent, name.c_str(), S_IFIFO | 0600, 0);
  };
  if (type != AE_IFLNK && type != AE_IFIFO) {
    LOG_DEBUG("image unpack: {}: skipping entry of type {:o}", rel, static_cast<unsigned>(type));
    return {};
  }
  for (bool retried = false;; retried = true) {
    if (make() == 0) break;
    if (errno != EEXIST || retried) return fail(entry_error(rel, type == AE_IFLNK ? "create symlink" : "create fifo", errno));
    CUBBY_TRYV(clear(parent, name, rel, false));
  }
  if (restoring_owner() && ::fchownat(parent, name.c_str(), archive_entry_uid(e), archive_entry_gid(e), AT_SYMLINK_NOFOLLOW) < 0)
    LOG_DEBUG("image unpack: {}: chown: {}", rel, std::strerror(errno));
  // The FIFO was just made in this private tree, so following it is safe;
  // symlinks have no mode of their own.
  if (type == AE_IFIFO && ::fchmodat(parent, name.c_str(), archive_entry_mode(e) & 0777, 0) < 0)
    return fail(entry_error(rel, "chmod", errno));
  if (::utimensat(parent, name.c_str(), t, AT_SYMLINK_NOFOLLOW) < 0) return fail(entry_error(rel, "set times", errno));
  return {};
}

Result<void> TreeWriter::link(const std::string& rel, const std::string& target) {
  if (rel == target) return {};
  size_t slash = target.rfind('/');
  UniqueFd target_parent_fd;
  int target_parent = root_.get();
  std::string target_name = target;
  if (slash != std::string::npos) {
    target_parent_fd.reset(open_beneath(root_.get(), target.substr(0, slash), O_PATH | O_DIRECTORY));
    if (!target_parent_fd) return fail(entry_error(rel, "hardlink target \"" + target + "\"", errno));
    target_parent = target_parent_fd.get();
    target_name = target.substr(slash + 1);
  }
  std::string name;
  int parent = CUBBY_TRY(parent_of(rel, name));
  for (bool retried = false;; retried = true) {
    // No AT_SYMLINK_FOLLOW: a link to a symlink is a second name of the symlink.
    if (::linkat(target_parent, target_name.c_str(), parent, name.c_str(), 0) == 0) return {};
    if (errno != EEXIST || retried) return fail(entry_error(rel, "hardlink to \"" + target + "\"", errno));
    CUBBY_TRYV(clear(parent, name, rel, false));
  }
}

Result<void> TreeWriter::finish() {
  // Deepest first: a directory made read-only must not block its children.
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    const auto& [rel, m] = *it;
    UniqueFd fd(open_beneath(root_.get(), rel, O_RDONLY | O_DIRECTORY));
    if (!fd) return fail(entry_error(rel, "open directory", errno));
    CUBBY_TRYV(apply_owner_mode_xattrs(fd.get(), rel, m.uid, m.gid, m.mode, m.xattrs));
    if (::futimens(fd.get(), m.times) < 0) return fail(entry_error(rel, "set times", errno));
  }
  dirs_.clear();
  return {};
}

}  // namespace cubby::image
