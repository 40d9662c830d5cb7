#include "base/sys.h"

#include "base/raw_fd_passing.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace cubby::sys {

Result<UniqueFd> pidfd_open(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return sys_fail("pidfd_open " + std::to_string(pid));
  return UniqueFd(fd);  // pidfds are always close-on-exec
}

Result<void> pidfd_send_signal(int pidfd, int sig, siginfo_t* info) {
  if (::syscall(SYS_pidfd_send_signal, pidfd, sig, info, 0) < 0)
    return sys_fail("pidfd_send_signal");
  return {};
}

Result<int> wait_any_readable(std::span<const int> fds, std::chrono::milliseconds timeout) {
  std::vector<pollfd> pfds;
  for (int fd : fds) pfds.push_back({fd, POLLIN, 0});
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int ms = -1;
    if (timeout.count() >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      ms = left.count() < 0 ? 0 : static_cast<int>(left.count());
    }
    int n = ::poll(pfds.data(), pfds.size(), ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("poll");
    }
    if (n == 0) return -1;
    for (size_t i = 0; i < pfds.size(); ++i)
      if (pfds[i].revents != 0) return static_cast<int>(i);
  }
}

Result<bool> wait_readable(int fd, std::chrono::milliseconds timeout) {
  int one[1] = {fd};
  auto r = wait_any_readable(one, timeout);
  if (!r) return std::unexpected(r.error());
  return *r == 0;
}

Result<std::pair<UniqueFd, UniqueFd>> make_pipe(int extra_flags) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | extra_flags) < 0) return sys_fail("pipe2");
  return std::pair{UniqueFd(p[0]), UniqueFd(p[1])};
}

pid_t clone_with_pidfd(unsigned long extra_flags, int* pidfd) {
  clone_args args{};
  args.flags = extra_flags | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<uint64_t>(pidfd);
  args.exit_signal = SIGCHLD;
  return static_cast<pid_t>(::syscall(SYS_clone3, &args, sizeof args));
}

Result<std::pair<UniqueFd, UniqueFd>> make_socketpair(int type) {
  int p[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, p) < 0) return sys_fail("socketpair");
  return std::pair{UniqueFd(p[0]), UniqueFd(p[1])};
}

Result<void> write_all(int fd, const void* data, size_t len) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("write");
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return {};
}

Result<std::string> read_all(int fd, size_t limit) {
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("read");
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) return fail(Error::invalid("input larger than limit"));
  }
}

Result<void> send_fd(int sock, int fd) {
  if (int e = send_fd_raw(sock, fd); e != 0) {
    errno = e;
    return sys_fail("sendmsg(SCM_RIGHTS)");
  }
  return {};
}

int send_fd_raw(int sock, int fd) noexcept {
  const char byte = 'F';
  return send_fd_raw(sock, fd, &byte, 1);
}

int send_fd_raw(int sock, int fd, const void* data, size_t len) noexcept {
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  for (;;) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n >= 0) return static_cast<size_t>(n) == len ? 0 : EMSGSIZE;
    if (errno != EINTR) return errno;
  }
}

Result<UniqueFd> recv_fd(int sock) {
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_fail("recvmsg(SCM_RIGHTS)");
  if (n == 0) return fail(Error::protocol("peer closed before sending an fd"));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      return UniqueFd(fd);
    }
  }
  return fail(Error::protocol("message carried no fd"));
}

Result<std::vector<UniqueFd>> recv_fds(int sock, size_t max) {
  char byte;
  iovec iov{&byte, 1};
  std::vector<cmsghdr> ctrl(CMSG_SPACE(max * sizeof(int)) / sizeof(cmsghdr) + 1);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl.data();
  msg.msg_controllen = ctrl.size() * sizeof(cmsghdr);
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return sys_fail("recvmsg(SCM_RIGHTS)");
  std::vector<UniqueFd> out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out.emplace_back(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return fail(Error::protocol("more fds in one message than " + std::to_string(max)));
  if (n > 0 && out.empty()) return fail(Error::protocol("message carried no fd"));
  return out;
}

}  // namespace cubby::sys
