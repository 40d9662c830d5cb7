// Thin wrappers over syscalls that glibc 2.36 lacks or wraps awkwardly
// (pidfd_open, pidfd_send_signal, clone3, close_range), plus poll helpers.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::sys {

Result<UniqueFd> pidfd_open(pid_t pid);
// clone3 with CLONE_PIDFD | extra_flags and SIGCHLD as exit signal: like
// fork(), 0 in the child and the pid in the parent (*pidfd set), -1 with
// errno. One raw syscall, so fine to use where the child must stay
// async-signal-safe.
pid_t clone_with_pidfd(unsigned long extra_flags, int* pidfd);
Result<void> pidfd_send_signal(int pidfd, int sig, siginfo_t* info = nullptr);

// Waits until fd is readable (or hung up). nullopt timeout waits forever.
// Returns false on timeout. The timeout is a backstop, not the mechanism.
Result<bool> wait_readable(int fd, std::chrono::milliseconds timeout);
// Waits on several fds; returns the index of the first ready one, or -1 on timeout.
Result<int> wait_any_readable(std::span<const int> fds, std::chrono::milliseconds timeout);

inline constexpr std::chrono::milliseconds kForever{-1};

// Creates a pipe / socketpair with CLOEXEC set on both ends.
Result<std::pair<UniqueFd, UniqueFd>> make_pipe(int extra_flags = 0);
Result<std::pair<UniqueFd, UniqueFd>> make_socketpair(int type);

// Write all bytes, retrying on EINTR and short writes (blocking fds only).
Result<void> write_all(int fd, const void* data, size_t len);
// Read until EOF (blocking fds only).
Result<std::string> read_all(int fd, size_t limit = 64u << 20);

// Sends/receives one fd over a unix socket (SCM_RIGHTS), with one data byte.
Result<void> send_fd(int sock, int fd);
Result<UniqueFd> recv_fd(int sock);
// Receives one message's fds (up to `max`, made CLOEXEC); empty at EOF.
Result<std::vector<UniqueFd>> recv_fds(int sock, size_t max);

}  // namespace cubby::sys
