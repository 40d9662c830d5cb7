// Error handling for cubby.
//
// Syscall wrappers return Result<T> = std::expected<T, Error>, with errno
// captured at the call site. Layers add human context (paths, box ids) with
// Error::wrap() as the error travels up, so the CLI can print one clear line
// such as "start box 3f2a: mount overlay on /x: Permission denied".
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <utility>

namespace cubby {

// What kind of failure this is; the CLI maps kinds to exit codes.
enum class ErrorKind {
  kSystem,        // a syscall failed (errno is set)
  kInvalid,       // bad input from the user (flag, reference, archive)
  kNotFound,      // unknown box or image
  kConflict,      // state forbids it (rm of a running box, name in use)
  kProtocol,      // the peer spoke nonsense or hung up
  kTimeout,       // a backstop timer expired
  kInternal,
};

class Error {
 public:
  Error(ErrorKind kind, std::string msg, int err = 0)
      : kind_(kind), msg_(std::move(msg)), errno_(err) {}

  // An error for a failed syscall; call right after the failure.
  static Error sys(std::string what, int err = errno) {
    return Error(ErrorKind::kSystem, std::move(what), err);
  }
  static Error invalid(std::string m) { return Error(ErrorKind::kInvalid, std::move(m)); }
  static Error not_found(std::string m) { return Error(ErrorKind::kNotFound, std::move(m)); }
  static Error conflict(std::string m) { return Error(ErrorKind::kConflict, std::move(m)); }
  static Error protocol(std::string m) { return Error(ErrorKind::kProtocol, std::move(m)); }
  static Error timeout(std::string m) { return Error(ErrorKind::kTimeout, std::move(m)); }
  static Error internal(std::string m) { return Error(ErrorKind::kInternal, std::move(m)); }

  ErrorKind kind() const { return kind_; }
  int sys_errno() const { return errno_; }

  // Prefixes context: Error("open x").wrap("load image") -> "load image: open x".
  Error wrap(const std::string& context) const& {
    Error e = *this;
    e.msg_ = context + ": " + msg_;
    return e;
  }

  std::string message() const {
    if (errno_ != 0) return msg_ + ": " + std::strerror(errno_);
    return msg_;
  }

 private:
  ErrorKind kind_;
  std::string msg_;
  int errno_;
};

template <typename T>
using Result = std::expected<T, Error>;

inline std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(std::move(e)); }
inline std::unexpected<Error> sys_fail(std::string what, int err = errno) {
  return std::unexpected<Error>(Error::sys(std::move(what), err));
}

}  // namespace cubby

// Propagates an error from an expression returning Result<T>; yields the value.
#define CUBBY_TRY(expr)                                              \
  ({                                                                 \
    auto _r = (expr);                                                \
    if (!_r) return std::unexpected<::cubby::Error>(std::move(_r.error())); \
    std::move(*_r);                                                  \
  })
// Same for Result<void>.
#define CUBBY_TRYV(expr)                                             \
  do {                                                               \
    auto _r = (expr);                                                \
    if (!_r) return std::unexpected<::cubby::Error>(std::move(_r.error())); \
  } while (0)
