// The allocation-free core of sys::send_fd, for code that runs after fork in
// a multi-threaded process (post-fork children may make raw syscalls only:
// send_fd's error path allocates). Its own header so that callers of the
// raw form alone see it.
#pragma once

namespace cubby::sys {

// Sends fd over the unix socket sock (SCM_RIGHTS, one data byte): 0, or
// the errno. Retries EINTR; only stack memory and raw syscalls.
int send_fd_raw(int sock, int fd) noexcept;

}  // namespace cubby::sys
