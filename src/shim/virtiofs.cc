#include "shim/virtiofs.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "proto/transport.h"

namespace cubby::shim {
namespace {

// A detached copy of the mount tree at `source` (never attached anywhere,
// gone with its last fd), read-only all the way down for `ro`.
Result<UniqueFd> clone_source(const Mount& m) {
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, m.source.c_str(),
                                           OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_NO_AUTOMOUNT)));
  if (!tree) return sys_fail("volume source " + m.source);
  struct stat st;
  if (::fstat(tree.get(), &st) < 0) return sys_fail("stat volume source " + m.source);
  if (!S_ISDIR(st.st_mode))
    return fail(Error::invalid("volume source " + m.source +
                               " is not a directory (the vm backend shares directories through virtio-fs)"));
  if (m.read_only) {
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
      return sys_fail("make volume source " + m.source + " read-only");
  }
  return tree;
}

}  // namespace

std::string virtiofsd_path() {
  const char* e = std::getenv("CUBBY_VIRTIOFSD");
  return e && *e ? e : "/usr/lib/qemu/virtiofsd";
}

Result<VirtiofsVolume> start_virtiofs(const std::string& box_dir, const Mount& m, const std::string& tag, int log_fd) {
  const std::string daemon = virtiofsd_path();
  if (::access(daemon.c_str(), X_OK) != 0)
    return fail(Error::invalid("-v on the vm backend needs virtiofsd (" + daemon +
                               ", from qemu-system-common): " + std::strerror(errno)));
  if (::geteuid() != 0)
    // virtiofsd must chroot and switch its fsuid to each guest caller's; a
    // user namespace of one id gives it neither for any guest uid but 0.
    return fail(Error::invalid("-v on the vm backend needs root (virtiofsd runs as root)"));
  {
    auto tree = CUBBY_TRY(clone_source(m));
    const std::string sock = "virtiofs-" + tag + ".sock";
    auto listen = CUBBY_TRY(proto::listen_unix(box_dir, sock, 1));
    // Queued in the backlog; virtiofsd accepts it. The path goes at once.
    auto conn = proto::UnixTransport(box_dir, sock).connect();
    ::unlink((box_dir + "/" + sock).c_str());
    if (!conn) return std::unexpected(conn.error().wrap("virtiofsd socket for " + m.source));
    VirtiofsVolume v;
    v.tag = tag;
    v.qemu_end = std::move(*conn);
    SpawnSpec s;
    // fd 3: the listening socket; fd 4: the source tree. "/." makes
    // virtiofsd's lstat of the source follow the /proc magic link.
    s.argv = {daemon, "--fd=3", "-o", "source=/proc/self/fd/4/.", "-o", "sandbox=chroot", "-o", "cache=auto",
              "-o", "log_level=warn", "--rlimit-nofile=0",
              // No device nodes: the guest's root is the host's root in SRC
              // (virtiofsd 7.2 maps no ids), and a node it made there would
              // open a host device for whoever may read it.
              "-o", "modcaps=-mknod"};
    s.fds = {-1, log_fd, log_fd, listen.get(), tree.get()};
    s.die_with_parent = true;
    s.new_session = true;
    s.no_new_privs = true;
    v.daemon = CUBBY_TRY(spawn(s));
    return v;
  }
}

}  // namespace cubby::shim
