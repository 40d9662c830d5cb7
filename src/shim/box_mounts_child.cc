// See box_mounts_child.h: everything below clone3() in the child branch is
// async-signal-safe.
#include "shim/box_mounts_child.h"

#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "base/sys.h"

namespace cubby::shim {
namespace {

[[noreturn]] void child_fail(const MountChildPlan& p, int stage, int index) {
  MountChildError e{stage, errno, index};
  (void)!::write(p.err_fd, &e, sizeof e);
  ::_exit(125);
}

int open_one(const MountChildPlan& p, size_t i) {
  const char* path = p.paths[i];
  const int idx = static_cast<int>(i);
  switch (p.kinds[i]) {
    case MountOpen::kDir: {
      int fd = ::open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) child_fail(p, 1, idx);
      return fd;
    }
    case MountOpen::kAny: {
      int fd = ::open(path, O_PATH | O_CLOEXEC);
      if (fd < 0) child_fail(p, 1, idx);
      return fd;
    }
    case MountOpen::kIdmapped: {
      int fd = static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (fd < 0) child_fail(p, 2, idx);
      mount_attr attr{};
      attr.attr_set = MOUNT_ATTR_IDMAP;
      attr.userns_fd = static_cast<uint64_t>(p.userns_fd);
      if (::syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0) child_fail(p, 3, idx);
      return fd;
    }
  }
  errno = EINVAL;
  child_fail(p, 1, idx);
}

void send_batch(const MountChildPlan& p, const int* fds, size_t n) {
  char byte = 'M';
  iovec iov{&byte, 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = p.cmsg;
  msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(n * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds, n * sizeof(int));
  while (::sendmsg(p.sock, &msg, MSG_NOSIGNAL) < 0)
    if (errno != EINTR) child_fail(p, 4, -1);
}

[[noreturn]] void child_main(const MountChildPlan& p) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // A pidfd selects the namespaces to join; we keep our user namespace (and
  // so host privileges), and our root and cwd become the box's (the host's
  // /, as copied when the box was cloned).
  if (::setns(p.box_pidfd, CLONE_NEWNS) < 0) child_fail(p, 0, -1);
  for (size_t i = 0; i < p.count; ++i) p.fds[i] = open_one(p, i);
  for (size_t i = 0; i < p.count; i += kMountFdsPerMessage)
    send_batch(p, p.fds + i, p.count - i < kMountFdsPerMessage ? p.count - i : kMountFdsPerMessage);
  ::_exit(0);
}

}  // namespace

pid_t clone_mount_child(const MountChildPlan& plan, int* pidfd) {
  pid_t pid = sys::clone_with_pidfd(0, pidfd);
  if (pid == 0) child_main(plan);
  return pid;
}

}  // namespace cubby::shim
