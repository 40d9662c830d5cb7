#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
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

}  // namespace

std::string TreeWriter::shown(const std::string& rel) const { return "/" + join(o_.base, rel); }

Result<UniqueFd> TreeWriter::open_dir(const std::string& rel, bool create) {
  UniqueFd fd = open_resolved(o_.root, join(o_.base, rel), O_PATH | O_DIRECTORY, o_.resolve);
  if (fd) return fd;
  auto refuse = [&](int err) -> Result<UniqueFd> {
    if (err == ELOOP) return fail(Error::invalid("refusing to write through a symlink: " + shown(rel)));
    if (err == EXDEV) return fail(Error::invalid("refusing a path that leaves the destination: " + shown(rel)));
    if (err == ENOTDIR) return fail(Error::invalid(shown(rel) + ": not a directory"));
    return sys_fail("open " + shown(rel), err);
  };
  if (errno != ENOENT || !create) return refuse(errno);
  // Made one component at a time under the fd of the resolved parent, so a
  // new directory is always where the resolve rules put its parent.
  UniqueFd at = open_resolved(o_.root, o_.base, O_PATH | O_DIRECTORY, o_.resolve);
  if (!at) return refuse(errno);
  std::string done;
  for (const auto& name : split_path(rel)) {
    done = join(done, name);
    if (::mkdirat(at.get(), name.c_str(), 0755) < 0 && errno != EEXIST) return sys_fail("create " + shown(done));
    UniqueFd next = open_resolved(o_.root, join(o_.base, done), O_PATH | O_DIRECTORY, o_.resolve);
    if (!next) return refuse(errno);
    at = std::move(next);
  }
  return at;
}

Result<void> TreeWriter::replace_nondir(int parent, const std::string& name, const std::string& rel) {
  struct stat st;
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
    if (errno == ENOENT) return {};
    return sys_fail("stat " + shown(rel));
  }
  if (S_ISDIR(st.st_mode)) return fail(Error::invalid("cannot overwrite directory " + shown(rel) + " with a non-directory"));
  // Replaced, never opened: an existing symlink is removed, not written through.
  if (::unlinkat(parent, name.c_str(), 0) < 0) return sys_fail("replace " + shown(rel));
  return {};
}

Result<void> TreeWriter::set_meta(int fd, const Entry& e, const std::string& rel) {
  // Owner first: chown clears setuid/setgid bits, the mode then sets them.
  if (o_.owner != Owner::kCaller) {
    uid_t uid = o_.owner == Owner::kRoot ? 0 : e.uid;
    gid_t gid = o_.owner == Owner::kRoot ? 0 : e.gid;
    if (::fchown(fd, uid, gid) < 0) return sys_fail("chown " + shown(rel));
  }
  mode_t mode = e.mode & (o_.strip_setid ? 01777 : 07777);
  if (::fchmod(fd, mode) < 0) return sys_fail("chmod " + shown(rel));
  timespec ts[2] = {{0, UTIME_OMIT}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
  if (::futimens(fd, ts) < 0) return sys_fail("set times of " + shown(rel));
  return {};
}

Result<void> TreeWriter::entry(const Entry& e) {
  if (owed_ > 0) return fail(Error::protocol("entry " + e.path + " before the previous file's data"));
  if (e.path.empty()) {
    // The root of a stream written into an existing directory ("." of a tar).
    if (e.kind == Kind::kDir) return {};
    return fail(Error::invalid("cannot replace the destination directory " + shown("") + " with a non-directory"));
  }
  auto [dir, name] = split_last(e.path);
  UniqueFd parent = CUBBY_TRY(open_dir(dir, /*create=*/true));
  int p = parent.get();
  switch (e.kind) {
    case Kind::kDir: {
      if (::mkdirat(p, name.c_str(), 0700) < 0) {
        if (errno != EEXIST) return sys_fail("create " + shown(e.path));
        struct stat st;
        if (::fstatat(p, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("stat " + shown(e.path));
        if (S_ISLNK(st.st_mode)) {
          if (!o_.allow_symlinks) return fail(Error::invalid("refusing to write through a symlink: " + shown(e.path)));
          return {};  // a box's own link to a directory: its contents land where it points, in the box
        }
        if (!S_ISDIR(st.st_mode))
          return fail(Error::invalid("cannot overwrite non-directory " + shown(e.path) + " with a directory"));
      }
      dirs_.push_back({e.path, e});
      return {};
    }
    case Kind::kFile: {
      CUBBY_TRYV(replace_nondir(p, name, e.path));
      UniqueFd f(::openat(p, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!f) return sys_fail("create " + shown(e.path));
      if (e.size == 0) return set_meta(f.get(), e, e.path);
      file_ = std::move(f);
      file_meta_ = e;
      owed_ = e.size;
      return {};
    }
    case Kind::kSymlink: {
      CUBBY_TRYV(replace_nondir(p, name, e.path));
      if (::symlinkat(e.target.c_str(), p, name.c_str()) < 0) return sys_fail("create symlink " + shown(e.path));
      if (o_.owner != Owner::kCaller) {
        uid_t uid = o_.owner == Owner::kRoot ? 0 : e.uid;
        gid_t gid = o_.owner == Owner::kRoot ? 0 : e.gid;
        if (::fchownat(p, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("chown " + shown(e.path));
      }
      timespec ts[2] = {{0, UTIME_OMIT}, {e.mtime_sec, static_cast<long>(e.mtime_nsec)}};
      if (::utimensat(p, name.c_str(), ts, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("set times of " + shown(e.path));
      return {};
    }
    case Kind::kHardlink: {
      auto [tdir, tname] = split_last(e.target);
      if (tname.empty()) return fail(Error::invalid("hardlink " + shown(e.path) + " to the destination itself"));
      UniqueFd tparent = CUBBY_TRY(open_dir(tdir, /*create=*/false));
      CUBBY_TRYV(replace_nondir(p, name, e.path));
      // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
      if (::linkat(tparent.get(), tname.c_str(), p, name.c_str(), 0) < 0)
        return sys_fail("link " + shown(e.path) + " to " + shown(e.target));
      return {};
    }
  }
  return fail(Error::protocol("unknown entry kind"));
}

Result<void> TreeWriter::data(const char* d, size_t n) {
  if (n > owed_) return fail(Error::protocol("more data than the file's size"));
  auto w = sys::write_all(file_.get(), d, n);
  if (!w) return fail(w.error().wrap("write " + shown(file_meta_.path)));
  owed_ -= n;
  if (owed_ > 0) return {};
  auto r = set_meta(file_.get(), file_meta_, file_meta_.path);
  file_.reset();
  return r;
}

Result<void> TreeWriter::finish() {
  if (owed_ > 0) return fail(Error::protocol("the stream ended inside " + shown(file_meta_.path)));
  // Deepest first: setting a directory's mode (say 0555) must not stop its
  // subdirectories from being fixed, and its mtime is final only now.
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    auto [dir, name] = split_last(it->path);
    UniqueFd parent = CUBBY_TRY(open_dir(dir, /*create=*/false));
    UniqueFd fd(::openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return sys_fail("open " + shown(it->path));
    CUBBY_TRYV(set_meta(fd.get(), it->meta, it->path));
  }
  dirs_.clear();
  return {};
}

}  // namespace cubby::copy
