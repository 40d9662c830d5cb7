#include "agent/box_init.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace cubby::agent {
namespace {

Result<void> do_mount(const char* src, const std::string& dst, const char* type, unsigned long flags,
                      const std::string& data = "") {
  if (::mount(src, dst.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) < 0)
    return sys_fail(std::string("mount ") + (type ? type : src ? src : "") + " on " + dst);
  return {};
}

void ensure_dir(const std::string& p, mode_t mode = 0755) { ::mkdir(p.c_str(), mode); }

void ensure_file(const std::string& p) {
  int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) ::close(fd);
}

Result<void> setup_dev(const std::string& root, const BoxFs& fs) {
  std::string dev = root + "/dev";
  ensure_dir(dev);
  CUBBY_TRYV(do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k"));
  // A user namespace cannot mknod, so the standard nodes are bind mounts of
  // the host's (as rootless Docker and bubblewrap do).
  for (const char* n : {"null", "zero", "full", "random", "urandom", "tty"}) {
    std::string p = dev + "/" + n;
    ensure_file(p);
    CUBBY_TRYV(do_mount((std::string("/dev/") + n).c_str(), p, nullptr, MS_BIND));
  }
  ensure_dir(dev + "/pts");
  if (!do_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                "newinstance,ptmxmode=0666,mode=0620,gid=5"))
    CUBBY_TRYV(do_mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"));
  ::symlink("pts/ptmx", (dev + "/ptmx").c_str());
  ensure_dir(dev + "/shm", 01777);
  const std::string shm_size = fs.shm_size ? std::to_string(*fs.shm_size) : "65536k";
  CUBBY_TRYV(do_mount("shm", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=" + shm_size));
  ensure_dir(dev + "/mqueue");
  (void)do_mount("mqueue", dev + "/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC);
  ::symlink("/proc/self/fd", (dev + "/fd").c_str());
  ::symlink("/proc/self/fd/0", (dev + "/stdin").c_str());
  ::symlink("/proc/self/fd/1", (dev + "/stdout").c_str());
  ::symlink("/proc/self/fd/2", (dev + "/stderr").c_str());
  return {};
}

// Docker's masked and read-only /proc paths.
void harden_proc(const std::string& root) {
  for (const char* p : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                        "/proc/latency_stats"}) {
    std::string path = root + p;
    if (::access(path.c_str(), F_OK) == 0) ::mount("/dev/null", path.c_str(), nullptr, MS_BIND, nullptr);
  }
  for (const char* p : {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"}) {
    std::string path = root + p;
    if (::mount(path.c_str(), path.c_str(), nullptr, MS_BIND | MS_REC, nullptr) == 0)
      ::mount(nullptr, path.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, nullptr);
  }
}

// Resolved inside the box's root (agent/volumes.h): an image's symlink
// cannot point a mask or a tmpfs at anything outside it. A path missing in
// the box is nothing to mask (runc skips it too): unset, no error.
Result<UniqueFd> existing_in_root(int root, const std::string& path) {
  UniqueFd fd = open_in_root(root, path.substr(1), O_PATH);
  if (fd || errno == ENOENT || errno == ENOTDIR) return fd;
  return sys_fail("box path " + path);
}

Result<void> set_read_only(int fd, bool recursive, const std::string& what) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  if (::syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0)
    return sys_fail("make " + what + " read-only");
  return {};
}

// The config's masked and read-only paths (BoxFs), after /proc and /sys.
Result<void> mask_paths(int root, const BoxFs& fs) {
  for (const auto& p : fs.masked_paths) {
    auto fd = CUBBY_TRY(existing_in_root(root, p));
    if (!fd) continue;
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) return sys_fail("stat box path " + p);
    // A directory is covered by an empty read-only tmpfs, a file by
    // /dev/null: either reads as nothing (runc's way).
    if (S_ISDIR(st.st_mode))
      CUBBY_TRYV(do_mount("tmpfs", fd_path(fd.get()), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=555"));
    else
      CUBBY_TRYV(do_mount("/dev/null", fd_path(fd.get()), nullptr, MS_BIND));
  }
  for (const auto& p : fs.readonly_paths) {
    auto fd = CUBBY_TRY(existing_in_root(root, p));
    if (!fd) continue;
    CUBBY_TRYV(do_mount(fd_path(fd.get()).c_str(), fd_path(fd.get()), nullptr, MS_BIND | MS_REC));
    // The fd names the covered inode; a fresh walk reaches the new bind.
    auto top = CUBBY_TRY(existing_in_root(root, p));
    if (!top) return fail(Error::invalid("box path " + p + " vanished while it was made read-only"));
    CUBBY_TRYV(set_read_only(top.get(), /*recursive=*/true, "box path " + p));
  }
  return {};
}

// The config's tmpfs mounts (BoxFs), options checked by the runtime.
Result<void> mount_tmpfs(int root, const BoxFs& fs) {
  for (const auto& t : fs.tmpfs) {
    auto args = CUBBY_TRY(tmpfs_mount_args(t.options));
    auto point = CUBBY_TRY(make_mount_point(root, t.destination, /*dir=*/true));
    struct statfs sf;
    if (::fstatfs(point.get(), &sf) < 0) return sys_fail("statfs box path " + t.destination);
    if (sf.f_type == PROC_SUPER_MAGIC || sf.f_type == SYSFS_MAGIC)
      return fail(Error::invalid("tmpfs on " + t.destination + ": it resolves into /proc or /sys"));
    CUBBY_TRYV(do_mount("tmpfs", fd_path(point.get()), "tmpfs", args.flags, args.data));
  }
  return {};
}

// The new mount API with one fd per layer ("lowerdir+", Linux >= 6.8): the
// layers are the shim's idmapped clones, which only overlayfs's own
// parameters can name (they are attached nowhere), and the target is the
// shim's fd, since the box's root may not walk the path. Returns the
// overlay's root.
Result<UniqueFd> mount_overlay_fds(const RootfsPlan& p) {
  UniqueFd fs(static_cast<int>(::syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC)));
  if (!fs) return sys_fail("fsopen overlay");
  // overlayfs says why it refuses something in the context's log.
  auto why = [&](const std::string& what) {
    int e = errno;
    std::string msg = what;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fs.get(), buf, sizeof buf)) > 0) msg += ": " + std::string(buf, static_cast<size_t>(n));
    return fail(Error::sys(msg, e));
  };
  auto set = [&](const char* key, const std::string& value, const std::string& what) -> Result<void> {
    if (::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) < 0)
      return why("overlay " + std::string(key) + " " + what);
    return {};
  };
  for (size_t i = 0; i < p.lower_fds.size(); ++i)
    CUBBY_TRYV(set("lowerdir+", fd_path(p.lower_fds[i].get()), i < p.lower.size() ? p.lower[i] : "?"));
  CUBBY_TRYV(set("upperdir", fd_path(p.upper_fd.get()), p.upper));
  CUBBY_TRYV(set("workdir", fd_path(p.work_fd.get()), p.work));
  // userxattr: we mount inside a user namespace, so overlayfs keeps its
  // metadata (opaque dirs from the image layers included) in user.overlay.*.
  if (::syscall(SYS_fsconfig, fs.get(), FSCONFIG_SET_FLAG, "userxattr", nullptr, 0) < 0)
    return why("overlay userxattr");
  if (::syscall(SYS_fsconfig, fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
    return why("mount overlay on " + p.target);
  UniqueFd mnt(static_cast<int>(::syscall(SYS_fsmount, fs.get(), FSMOUNT_CLOEXEC, 0)));
  if (!mnt) return sys_fail("fsmount overlay");
  if (::syscall(SYS_move_mount, mnt.get(), "", p.target_fd.get(), "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
    return sys_fail("attach the overlay on " + p.target);
  return mnt;
}

std::string overlay_options(const RootfsPlan& p) {
  std::string lower;
  for (auto& l : p.lower) {
    if (!lower.empty()) lower += ':';
    lower += l;
  }
  // userxattr: we mount inside a user namespace, so overlayfs keeps its
  // metadata (opaque dirs from the image layers included) in user.overlay.*.
  return "lowerdir=" + lower + ",upperdir=" + p.upper + ",workdir=" + p.work + ",userxattr";
}

// The legacy mount(2) by paths (rootless, and the vm guest's older kernel).
// Returns the overlay's root.
Result<UniqueFd> mount_overlay_paths(const RootfsPlan& p) {
  ensure_dir(p.target);
  std::string opts = overlay_options(p);
  if (opts.size() >= 4000) return fail(Error::invalid("too many image layers for one overlay mount"));
  CUBBY_TRYV(do_mount("overlay", p.target, "overlay", 0, opts));
  UniqueFd root(::open(p.target.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return sys_fail("open " + p.target);
  return root;
}

}  // namespace

Result<void> setup_sandbox_root(const RootfsPlan& p) {
  // Nothing we mount may propagate back to the host.
  CUBBY_TRYV(do_mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE));
  UniqueFd root = CUBBY_TRY(p.target_fd ? mount_overlay_fds(p) : mount_overlay_paths(p));
  // Everything below is reached from the overlay's root, never by walking
  // the host path (which the box's root may not be allowed to).
  const std::string r = fd_path(root.get());
  ensure_dir(r + "/proc", 0555);
  CUBBY_TRYV(do_mount("proc", r + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  // Through the box's own proc, before harden_proc makes /proc/sys read-only.
  for (const auto& [k, v] : p.fs.sysctls) {
    std::string path = r + "/proc/sys/" + k;
    std::replace(path.begin() + static_cast<long>(r.size()) + 10, path.end(), '.', '/');
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!f || ::write(f.get(), v.data(), v.size()) != static_cast<ssize_t>(v.size())) return sys_fail("set sysctl " + k);
  }
  harden_proc(r);
  CUBBY_TRYV(setup_dev(r, p.fs));
  ensure_dir(r + "/sys", 0555);
  if (!do_mount("sysfs", r + "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)) {
    CUBBY_TRYV(do_mount("/sys", r + "/sys", nullptr, MS_BIND | MS_REC));
    (void)do_mount(nullptr, r + "/sys", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC);
  }
  CUBBY_TRYV(mask_paths(root.get(), p.fs));
  // /tmp is part of the box's filesystem, as in Docker: written to the
  // box's upper layer (disk, not RAM), kept across stop/start, in `export`
  // and `commit`. Only `--tmpfs /tmp` (mounted below) makes it a tmpfs. An
  // image without one gets it, world-writable and sticky (mkdir's mode goes
  // through the umask, hence the chmod), as most programs expect one.
  if (::mkdir((r + "/tmp").c_str(), 0700) == 0) (void)::chmod((r + "/tmp").c_str(), 01777);
  ensure_dir(r + "/etc");
  if (!p.hostname.empty()) {
    if (::sethostname(p.hostname.c_str(), p.hostname.size()) < 0) return sys_fail("sethostname");
    (void)write_file(r + "/etc/hostname", p.hostname + "\n", 0644);
    std::string hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
    hosts += "127.0.1.1\t" + p.hostname + "\n";
    for (const auto& h : p.extra_hosts) hosts += h + "\n";
    (void)write_file(r + "/etc/hosts", hosts, 0644);
  }
  if (!p.resolv_conf.empty()) (void)write_file(r + "/etc/resolv.conf", p.resolv_conf, 0644);
  else if (p.network_default) (void)write_file(r + "/etc/resolv.conf", "nameserver 10.0.2.3\n", 0644);
  CUBBY_TRYV(mount_tmpfs(root.get(), p.fs));
  // Last, so a volume on /tmp or /etc/hosts is what the box sees.
  CUBBY_TRYV(mount_volumes(r, p.volumes));
  // Only the root mount: /dev, /proc, /tmp, tmpfs mounts and volumes keep
  // their own flags (Docker's --read-only).
  if (p.fs.read_only) CUBBY_TRYV(set_read_only(root.get(), /*recursive=*/false, "the rootfs"));

  // pivot_root(".", ".") stacks the old root under the new one; detaching
  // it leaves only the box's tree (the runc trick, no temp directory needed).
  if (::chdir(r.c_str()) < 0) return sys_fail("chdir " + r);
  if (p.switch_root) {
    if (::mount(".", "/", nullptr, MS_MOVE, nullptr) < 0) return sys_fail("move new root onto /");
    if (::chroot(".") < 0) return sys_fail("chroot");
    if (::chdir("/") < 0) return sys_fail("chdir /");
    return {};
  }
  if (::syscall(SYS_pivot_root, ".", ".") < 0) return sys_fail("pivot_root");
  if (::umount2(".", MNT_DETACH) < 0) return sys_fail("detach old root");
  if (::chdir("/") < 0) return sys_fail("chdir /");
  return {};
}

Result<void> bring_up_loopback() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_fail("socket");
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) < 0) return sys_fail("get lo flags");
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0) return sys_fail("bring up lo");
  return {};
}

}  // namespace cubby::agent
