#include "agent/volumes.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace cubby::agent {

UniqueFd open_in_root(int root, const std::string& rel, int flags) {
  return open_resolved(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

Result<UniqueFd> make_mount_point(int root, const std::string& target, bool dir) {
  auto parts = split_path(target);
  if (parts.empty()) return fail(Error::invalid("cannot mount over the box's root"));
  UniqueFd at(::fcntl(root, F_DUPFD_CLOEXEC, 0));
  if (!at) return sys_fail("dup rootfs fd");
  std::string rel;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& name = parts[i];
    bool last = i + 1 == parts.size();
    bool want_dir = !last || dir;
    rel += (rel.empty() ? "" : "/") + name;
    int kind = O_PATH | (want_dir ? O_DIRECTORY : 0);
    UniqueFd next = open_in_root(root, rel, kind);
    if (!next) {
      if (errno != ENOENT) return sys_fail("box path " + target + ": resolve /" + rel);
      // Created under the fd of the resolved parent, so the new entry is
      // inside the box whatever symlinks led there.
      if (want_dir) {
        if (::mkdirat(at.get(), name.c_str(), 0755) < 0 && errno != EEXIST)
          return sys_fail("box path " + target + ": create directory /" + rel);
      } else {
        UniqueFd f(::openat(at.get(), name.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644));
        if (!f && errno != EEXIST) return sys_fail("box path " + target + ": create file /" + rel);
      }
      next = open_in_root(root, rel, kind);
      // Still missing: a symlink in the image points at nothing.
      if (!next) return fail(Error::invalid("box path " + target + ": /" + rel + " is a dangling symlink in the image"));
    }
    at = std::move(next);
  }
  return at;
}

namespace {

// Source-mount flags that a user namespace cannot clear, as MS_* flags.
unsigned long locked_flags(int fd) {
  struct statvfs sv;
  if (::fstatvfs(fd, &sv) < 0) return 0;
  unsigned long f = 0;
  if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

Result<void> mount_one(int root, const VolumePlan& v) {
  // The shim's fd, when it opened SRC for us: the box's root may not be
  // allowed to walk the host path.
  const std::string src = v.source_fd ? fd_path(v.source_fd.get()) : v.source;
  struct stat st;
  if (::stat(src.c_str(), &st) < 0) return sys_fail("volume source " + v.source);
  bool dir = S_ISDIR(st.st_mode);
  auto point = CUBBY_TRY(make_mount_point(root, v.target, dir));
  // The box's /proc and /sys are already mounted; a symlink in the image
  // must not steer a volume over them (masking entries the box relies on).
  struct statfs sf;
  if (::fstatfs(point.get(), &sf) < 0) return sys_fail("statfs box path " + v.target);
  if (sf.f_type == PROC_SUPER_MAGIC || sf.f_type == SYSFS_MAGIC)
    return fail(Error::invalid("box path " + v.target + " resolves into /proc or /sys"));
  if (::mount(src.c_str(), fd_path(point.get()).c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
    return sys_fail("bind " + v.source + " on box path " + v.target);
  if (!v.read_only) return {};
  // The fd names the covered inode; a fresh walk reaches the new mount's root.
  UniqueFd top = open_in_root(root, v.target.substr(1), O_PATH);
  if (!top) return sys_fail("reopen box path " + v.target);
  unsigned long keep = locked_flags(top.get());
  if (::mount(nullptr, fd_path(top.get()).c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, nullptr) < 0)
    return sys_fail("make box path " + v.target + " read-only");
  // A remount changes one mount; mounts below SRC on the host came along
  // with MS_REC and must be read-only too.
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (::syscall(SYS_mount_setattr, top.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0 &&
      errno != ENOSYS)
    return sys_fail("make the mounts under box path " + v.target + " read-only");
  return {};
}

}  // namespace

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Result<void> mount_volumes(const std::string& root, const std::vector<VolumePlan>& volumes) {
  if (volumes.empty()) return {};
  UniqueFd r(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!r) return sys_fail("open rootfs " + root);
  for (const auto& v : volumes) CUBBY_TRYV(mount_one(r.get(), v));
  return {};
}

}  // namespace cubby::agent
