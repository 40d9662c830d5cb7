// The allocation-free core of sys::send_fd, for code that runs after fork in
// a multi-threaded process (post-fork children may make raw syscalls only:
// send_fd's error path allocates). Its own header so that callers of the
// raw form alone see it.
#pragma once

#include <cstddef>

namespace cubby::sys {

// Sends fd over the unix socket sock (SCM_RIGHTS, one data byte): 0, or
// the errno. Retries EINTR; only stack memory and raw syscalls.
int send_fd_raw(int sock, int fd) noexcept;
// The same with `len` bytes of `data` as the message the fd rides with (a
// QMP getfd command, shim/qmp.cc); all of them or an error (EMSGSIZE when
// the socket took only part).
int send_fd_raw(int sock, int fd, const void* data, size_t len) noexcept;

}  // namespace cubby::sys
