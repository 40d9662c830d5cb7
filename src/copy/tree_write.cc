#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "copy/tree.h"

namespace cubby::copy {

namespace {

std::pair<std::string, std::string> split_last(const std::string& rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

std::string join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return a + "/" + b;
}

// Read once: geteuid/getegid are real syscalls, and kRestore asks per entry.
uid_t euid() {
  static const uid_t id = ::geteuid();
  return id;
}
gid_t egid() {
  static const gid_t id = ::getegid();
  return id;
}

// A hidden name next to `name` that no other writer picks: ".NAME.cubby-"
// and 8 random hex digits, NAME cut so the whole fits NAME_MAX.
std::string temp_name_for(const std::string& name) {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<uint32_t>(::getpid()) ^ static_cast<uint32_t>(::time(nullptr));
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", r);
  return "." + name.substr(0, 200) + ".cubby-" + hex;
}

}  // namespace

TreeWriter::~TreeWriter() { drop_temp(); }

void TreeWriter::drop_temp() {
  if (file_ && !temp_name_.empty()) (void)::unlinkat(file_parent_, temp_name_.c_str(), 0);
  temp_name_.clear();
}

std::string TreeWriter::shown(const std::string& rel) const {
  if (o_.shown_base.empty()) return "/" + join(o_.base, rel);
  if (rel.empty()) return o_.shown_base;
  return o_.shown_base.back() == '/' ? o_.shown_base + rel : o_.shown_base + "/" + rel;
}

Error TreeWriter::refused(const std::string& rel, int err) const {
  if (err == ELOOP) return Error::invalid("refusing to write through a symlink: " + shown(rel));
  if (err == EXDEV) return Error::invalid("refusing a path that leaves the destination: " + shown(rel));
  if (err == ENOTDIR) return Error::invalid(shown(rel) + ": not a directory");
  return Error::sys("open " + shown(rel), err);
}

Result<UniqueFd> TreeWriter::resolve_dir(const std::string& rel, bool create, int flags) {
  UniqueFd fd = open_resolved(o_.root, join(o_.base, rel), flags | O_DIRECTORY, o_.resolve);
  if (fd) return fd;
  if (errno != ENOENT || !create) return fail(refused(rel, errno));
  // Made one component at a time, each opened again under the resolve rules
  // from root, so a new directory is always where those rules put it.
  UniqueFd at = open_resolved(o_.root, o_.base, O_PATH | O_DIRECTORY, o_.resolve);
  if (!at) return fail(refused(rel, errno));
  std::string done;
  for (const auto& name : split_path(rel)) {
    done = join(done, name);
    if (::mkdirat(at.get(), name.c_str(), 0755) < 0 && errno != EEXIST) return sys_fail("create " + shown(done));
    UniqueFd next = open_resolved(o_.root, join(o_.base, done), (done == rel ? flags : O_PATH) | O_DIRECTORY, o_.resolve);
    if (!next) return fail(refused(rel, errno));
    at = std::move(next);
  }
  return at;
}

Result<UniqueFd> TreeWriter::open_dir(const std::string& rel) { return resolve_dir(rel, /*create=*/true, O_RDONLY); }

Result<int> TreeWriter::parent_of(const std::string& rel, std::string& name) {
  auto [dir, last] = split_last(rel);
  name = std::move(last);
  if (dir.empty() && o_.base.empty()) return o_.root;
  if (cached_fd_ && cached_rel_ == dir) return cached_fd_.get();
  cached_fd_ = CUBBY_TRY(resolve_dir(dir, /*create=*/true));
  cached_rel_ = std::move(dir);
  return cached_fd_.get();
}

void TreeWriter::forget_cached(const std::string& rel) {
  if (cached_rel_ == rel || cached_rel_.starts_with(rel + "/")) {
    cached_fd_.reset();
    cached_rel_.clear();
  }
}

Result<void> TreeWriter::make_way(int parent, const std::string& name, const std::string& rel) {
  struct stat st;
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return {};
    return sys_fail("stat " + shown(rel));
  }
  if (S_ISDIR(st.st_mode)) {
    if (!o_.replace_all) return fail(Error::invalid("cannot overwrite directory " + shown(rel) + " with a non-directory"));
    if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) < 0) {
      if (errno == ENOTEMPTY || errno == EEXIST)
        return fail(Error::invalid("cannot replace non-empty directory " + shown(rel) + " with a non-directory"));
      return sys_fail("replace directory " + shown(rel));
    }
    dirs_.erase(rel);
    forget_cached(rel);
    return {};
  }
  // Replaced, never opened: an existing symlink is removed, not written through.
  if (::unlinkat(parent, name.c_str(), 0) < 0) return sys_fail("replace " + shown(rel));
  return {};
}

Result<bool> TreeWriter::set_owner(int fd, int parent, const std::string& name, const Entry& e) {
  auto chown = [&](uid_t uid, gid_t gid) {
    return fd >= 0 ? ::fchown(fd, uid, gid) : ::fchownat(parent, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW);
  };
  switch (o_.owner) {
    case Owner::kCaller:
      return true;
    case Owner::kRoot:
      if (chown(0, 0) < 0) return sys_fail("chown " + shown(e.path));
      return true;
    case Owner::kEntry:
      if (chown(e.uid, e.gid) < 0) return sys_fail("chown " + shown(e.path));
      return true;
    case Owner::kRestore:
      if (euid() != 0) return e.uid == euid() && e.gid == egid();
      if (chown(e.uid, e.gid) == 0) return true;
      LOG_DEBUG("tree writer: {}: chown {}:{}: {}", shown(e.path), e.uid, e.gid, std::strerror(errno));
      return false;
  }
  return false;
}

Result<void> TreeWriter::set_meta(int fd, const Entry& e) {
  // Owner first: chown clears setuid/setgid bits (and security.capability),
  // the mode and xattrs then set them.
  bool owned = CUBBY_TRY(set_owner(fd, -1, "", e));
  mode_t mode = e.mode & (o_.strip_setid || !owned ? 01777 : 07777);
  if (::fchmod(fd, mode) < 0) return sys_fail("chmod " + shown(e.path));
  for (const auto& [n, v] : e.xattrs) {
    if (::fsetxattr(fd, n.c_str(), v.data(), v.size(), 0) == 0) continue;
    if (errno != EPERM && errno != EACCES && errno != ENOTSUP && errno != EINVAL)
      return sys_fail("set xattr " + n + " of " + shown(e.path));
    LOG_DEBUG("tree writer: {}: xattr {} not kept: {}", shown(e.path), n, std::strerror(errno));
  }
  timespec ts[2] = {{e.atime_sec, static_cast<long>(e.atime_nsec)}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
  if (::futimens(fd, ts) < 0) return sys_fail("set times of " + shown(e.path));
  return {};
}

Result<void> TreeWriter::entry(const Entry& e) {
  if (owed_ > 0) return fail(Error::protocol("entry " + e.path + " before the previous file's data"));
  if (e.path.empty()) {
    // The root of a stream written into an existing directory ("." of a tar).
    if (e.kind != Kind::kDir)
      return fail(Error::invalid("cannot replace the destination directory " + shown("") + " with a non-directory"));
    if (o_.root_meta) dirs_[""] = e;
    return {};
  }
  std::string name;
  int p = CUBBY_TRY(parent_of(e.path, name));
  // Created first, the way made only when something is there: one syscall
  // for the common case of a fresh tree.
  auto create = [&](auto&& make, const char* what) -> Result<void> {
    for (bool retried = false;; retried = true) {
      if (make()) return {};
      if (errno != EEXIST || retried) return sys_fail(std::string(what) + " " + shown(e.path));
      CUBBY_TRYV(make_way(p, name, e.path));
    }
  };
  timespec ts[2] = {{e.atime_sec, static_cast<long>(e.atime_nsec)}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
  switch (e.kind) {
    case Kind::kDir: {
      // 0700 until finish(): a read-only directory must still take its entries.
      if (::mkdirat(p, name.c_str(), 0700) < 0) {
        if (errno != EEXIST) return sys_fail("create " + shown(e.path));
        struct stat st;
        if (::fstatat(p, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("stat " + shown(e.path));
        if (S_ISDIR(st.st_mode)) {
          // merged
        } else if (o_.replace_all) {
          if (::unlinkat(p, name.c_str(), 0) < 0) return sys_fail("replace " + shown(e.path));
          if (::mkdirat(p, name.c_str(), 0700) < 0) return sys_fail("create " + shown(e.path));
        } else if (S_ISLNK(st.st_mode)) {
          return fail(Error::invalid("refusing to write through a symlink: " + shown(e.path)));
        } else {
          return fail(Error::invalid("cannot overwrite non-directory " + shown(e.path) + " with a directory"));
        }
      }
      dirs_[e.path] = e;
      return {};
    }
    case Kind::kFile: {
      file_ = CUBBY_TRY(open_file(p, name, e.path));
      file_parent_ = p;
      file_name_ = name;
      file_meta_ = e;
      owed_ = stream_bytes(e);
      end_ = 0;
      extents_ = ExtentCursor(file_meta_.extents);
      if (owed_ == 0) return complete_file();
      return {};
    }
    case Kind::kSymlink:
    case Kind::kFifo: {
      bool link = e.kind == Kind::kSymlink;
      CUBBY_TRYV(create(
          [&] {
            return (link ? ::symlinkat(e.target.c_str(), p, name.c_str())
                         : ::mknodat(p, name.c_str(), S_IFIFO | 0600, 0)) == 0;
          },
          link ? "create symlink" : "create fifo"));
      (void)CUBBY_TRY(set_owner(-1, p, name, e));
      // The fifo was just made here, so following it is safe; symlinks have
      // no mode of their own.
      if (!link && ::fchmodat(p, name.c_str(), e.mode & 0777, 0) < 0) return sys_fail("chmod " + shown(e.path));
      if (::utimensat(p, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("set times of " + shown(e.path));
      return {};
    }
    case Kind::kHardlink: {
      if (e.target == e.path) return {};
      auto [tdir, tname] = split_last(e.target);
      if (tname.empty()) return fail(Error::invalid("hardlink " + shown(e.path) + " to the destination itself"));
      // Links mostly point into the directory they are in (bin/* -> bin/busybox).
      UniqueFd opened;
      int tp = -1;
      if (tdir.empty() && o_.base.empty()) tp = o_.root;
      else if (cached_fd_ && cached_rel_ == tdir) tp = cached_fd_.get();
      else {
        opened = CUBBY_TRY(resolve_dir(tdir, /*create=*/false));
        tp = opened.get();
      }
      // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
      auto r = create([&] { return ::linkat(tp, tname.c_str(), p, name.c_str(), 0) == 0; }, "link");
      if (!r) return fail(r.error().kind() == ErrorKind::kSystem
                              ? Error::sys("link " + shown(e.path) + " to " + shown(e.target), r.error().sys_errno())
                              : r.error());
      return {};
    }
  }
  return fail(Error::protocol("unknown entry kind"));
}

Result<UniqueFd> TreeWriter::open_file(int p, const std::string& name, const std::string& rel) {
  temp_name_.clear();
  if (!o_.atomic_files) {
    for (bool retried = false;; retried = true) {
      UniqueFd f(::openat(p, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (f) return f;
      if (errno != EEXIST || retried) return sys_fail("create " + shown(rel));
      CUBBY_TRYV(make_way(p, name, rel));
    }
  }
  // What is in the way stays until the rename; only a directory there is
  // refused (or, with replace_all, removed when empty) now, before the data.
  struct stat st;
  if (::fstatat(p, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISDIR(st.st_mode)) CUBBY_TRYV(make_way(p, name, rel));
  } else if (errno != ENOENT) {
    return sys_fail("stat " + shown(rel));
  }
  if (tmpfile_works_) {
    UniqueFd f(::openat(p, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
    if (f) return f;
    // EOPNOTSUPP: this filesystem has none (overlayfs before Linux 6.6, as
    // in the vm's guest kernel); EISDIR: the kernel has none.
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) return sys_fail("create " + shown(rel));
    tmpfile_works_ = false;
  }
  for (int tries = 0;; ++tries) {
    std::string tmp = temp_name_for(name);
    UniqueFd f(::openat(p, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (f) {
      temp_name_ = std::move(tmp);
      return f;
    }
    if (errno != EEXIST || tries == 16) return sys_fail("create a temporary file for " + shown(rel));
  }
}

Result<void> TreeWriter::publish(int fd) {
  int p = file_parent_;
  const std::string& rel = file_meta_.path;
  if (temp_name_.empty()) {
    // An O_TMPFILE gets its name by linkat: AT_EMPTY_PATH (needs
    // CAP_DAC_READ_SEARCH before Linux 6.10), else its /proc/self/fd link.
    // Where the name is free that link is the whole publish; where a file
    // is in the way the temporary is linked under a hidden name first and
    // renamed over it (a kill between the two leaves that name behind).
    auto link_as = [&](const std::string& to) {
      if (::linkat(fd, "", p, to.c_str(), AT_EMPTY_PATH) == 0) return true;
      if (errno != ENOENT) return false;
      std::string self = "/proc/self/fd/" + std::to_string(fd);
      return ::linkat(AT_FDCWD, self.c_str(), p, to.c_str(), AT_SYMLINK_FOLLOW) == 0;
    };
    if (link_as(file_name_)) return {};
    if (errno != EEXIST) return sys_fail("create " + shown(rel));
    for (int tries = 0;; ++tries) {
      std::string tmp = temp_name_for(file_name_);
      if (link_as(tmp)) {
        temp_name_ = std::move(tmp);
        break;
      }
      if (errno != EEXIST || tries == 16) return sys_fail("create " + shown(rel));
    }
  }
  // Over a file, symlink or fifo: replaced in one step, never written through.
  if (::renameat(p, temp_name_.c_str(), p, file_name_.c_str()) < 0) {
    int err = errno;
    (void)::unlinkat(p, temp_name_.c_str(), 0);
    temp_name_.clear();
    if (err == EISDIR) return fail(Error::invalid("cannot overwrite directory " + shown(rel) + " with a non-directory"));
    return fail(Error::sys("create " + shown(rel), err));
  }
  temp_name_.clear();
  return {};
}

Result<void> TreeWriter::complete_file() {
  owed_ = 0;
  // A sparse file's last hole is not written by any block.
  if (end_ < file_meta_.size && ::ftruncate(file_.get(), static_cast<off_t>(file_meta_.size)) < 0)
    return sys_fail("truncate " + shown(file_meta_.path));
  CUBBY_TRYV(set_meta(file_.get(), file_meta_));
  if (o_.atomic_files) CUBBY_TRYV(publish(file_.get()));
  // Start writing it back now, while the rest of the tree arrives.
  if (o_.sync_files) (void)::sync_file_range(file_.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
  file_.reset();
  return {};
}

Result<void> TreeWriter::write_at(uint64_t offset, const char* d, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t w = ::pwrite(file_.get(), d + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return sys_fail("write " + shown(file_meta_.path));
    done += static_cast<size_t>(w);
  }
  end_ = std::max(end_, offset + n);
  return {};
}

Result<void> TreeWriter::data(const char* d, size_t n) {
  if (!file_ || n > owed_) return fail(Error::protocol("more data than the file's size"));
  owed_ -= n;
  if (!file_meta_.sparse) {
    CUBBY_TRYV(write_at(end_, d, n));
  } else {
    // The stream's bytes fill the extents in order (from_wire checked them).
    CUBBY_TRYV(extents_.feed(d, n, [&](uint64_t at, const char* p, size_t k) { return write_at(at, p, k); }));
  }
  if (owed_ > 0) return {};
  return complete_file();
}

Result<void> TreeWriter::data_at(uint64_t offset, const char* d, size_t n) {
  if (!file_) return fail(Error::protocol("data outside a file"));
  // A hostile archive's blocks must not overlap, go backwards or grow the
  // file beyond its declared size.
  if (offset < end_ || offset > file_meta_.size || n > file_meta_.size - offset)
    return fail(Error::invalid(shown(file_meta_.path) + ": a data block out of order or beyond the file's size"));
  return write_at(offset, d, n);
}

Result<void> TreeWriter::end_file() {
  if (!file_) return {};
  return complete_file();
}

Result<void> TreeWriter::finish() {
  if (owed_ > 0) return fail(Error::protocol("the stream ended inside " + shown(file_meta_.path)));
  // Deepest first (a descendant sorts after its ancestor): setting a
  // directory's mode (say 0555) must not stop its subdirectories from being
  // fixed, and its mtime is final only now.
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    const Entry& m = it->second;
    UniqueFd fd = open_resolved(o_.root, join(o_.base, m.path), O_RDONLY | O_DIRECTORY | O_NOFOLLOW, o_.resolve);
    if (!fd) return fail(refused(m.path, errno));
    CUBBY_TRYV(set_meta(fd.get(), m));
  }
  dirs_.clear();
  return {};
}

}  // namespace cubby::copy
