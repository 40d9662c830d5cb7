#include "runtime/session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "base/sys.h"
#include "proto/messages.h"

namespace cubby {

namespace msg = proto::msg;
using proto::Json;

namespace {

constexpr char kCtrlP = 0x10, kCtrlQ = 0x11;
// Frames for the agent wait here while its socket is full, and stdin is not
// read while more than this waits: the agent stops reading a session whose
// process does not read its stdin (backpressure), and a blocking send would
// then stop us reading the process's output, which may be what it waits on.
constexpr size_t kMaxPendingSend = 256 * 1024;

// Sends what the socket takes now; false if the agent is gone.
bool send_some(int fd, std::string& pending) {
  while (!pending.empty()) {
    ssize_t n = ::send(fd, pending.data(), pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      pending.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
  return true;
}

// Blocks SIGINT/SIGTERM/SIGHUP (and SIGWINCH for terminals) for the session
// and reads them from a signalfd; restores the mask on destruction.
class SignalRelay {
 public:
  SignalRelay(bool on, bool winch) {
    if (!on && !winch) return;
    sigemptyset(&set_);
    if (on)
      for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, s);
    if (winch) sigaddset(&set_, SIGWINCH);
    ::pthread_sigmask(SIG_BLOCK, &set_, &old_);
    fd_.reset(::signalfd(-1, &set_, SFD_CLOEXEC | SFD_NONBLOCK));
    active_ = true;
  }
  ~SignalRelay() {
    if (active_) ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  int fd() const { return fd_.get(); }

 private:
  sigset_t set_, old_;
  UniqueFd fd_;
  bool active_ = false;
};

// Puts a terminal into raw mode and puts it back however the session ends
// (return, error, or a signal that ends the session through the loop).
class RawMode {
 public:
  explicit RawMode(int fd) : fd_(fd) {
    if (fd < 0 || ::tcgetattr(fd, &saved_) < 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(fd, TCSANOW, &raw) == 0) active_ = true;
  }
  ~RawMode() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

}  // namespace

std::optional<std::pair<int, int>> terminal_size(int fd) {
  winsize w{};
  if (fd < 0 || ::ioctl(fd, TIOCGWINSZ, &w) < 0 || w.ws_row == 0) return std::nullopt;
  return std::pair<int, int>{w.ws_row, w.ws_col};
}

Result<ExecResult> stream_session(proto::Conn& conn, const StdioFds& io, const char* signal_type) {
  bool is_tty = io.tty && io.in >= 0 && ::isatty(io.in);
  SignalRelay relay(io.forward_signals, io.tty);
  RawMode raw(is_tty ? io.in : -1);
  bool in_open = io.in >= 0;
  bool detach_keys = io.tty && io.detach_keys;
  bool held_ctrl_p = false;  // a Ctrl-P that may start the detach sequence
  char buf[65536];
  std::string pending;  // encoded frames for the agent (kMaxPendingSend)
  auto queue = [&](const Json& m) { proto::encode_into(pending, m); };
  // Frames that came in with the hello reply (the request was pipelined
  // behind the hello) are already buffered, where poll cannot see them.
  std::optional<proto::Frame> frame = CUBBY_TRY(conn.try_next());
  if (io.in < 0 && io.stdin_data) {
    // Whole frames of at most 64 KiB, as the terminal path sends; queued,
    // so output is read while a large stdin is still being written.
    for (size_t off = 0; off < io.stdin_data->size(); off += sizeof buf) {
      auto part = io.stdin_data->substr(off, sizeof buf);
      queue({{"t", msg::kIn}, {"d", Json::binary(std::vector<uint8_t>(part.begin(), part.end()))}});
    }
    queue({{"t", msg::kInEof}});
  }
  bool control_open = io.control >= 0;
  for (;;) {
    if (!frame) {
      const bool read_in = in_open && pending.size() < kMaxPendingSend;
      pollfd p[4] = {{conn.fd(), static_cast<short>(POLLIN | (pending.empty() ? 0 : POLLOUT)), 0},
                     {read_in ? io.in : -1, POLLIN, 0},
                     {relay.fd(), POLLIN, 0},
                     {control_open ? io.control : -1, POLLIN, 0}};
      int n = ::poll(p, 4, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return sys_fail("poll");
      }
      if (p[2].revents) {
        signalfd_siginfo si;
        while (::read(relay.fd(), &si, sizeof si) == sizeof si) {
          if (si.ssi_signo == SIGWINCH) {
            if (auto sz = terminal_size(io.in >= 0 ? io.in : io.out))
              queue({{"t", msg::kResize}, {"rows", sz->first}, {"cols", sz->second}});
          } else if (io.tty) {
            // A terminal session's own keys arrive as bytes; a signal from
            // outside (the terminal went away, or kill) ends our side only.
            ExecResult r;
            r.interrupted = true;
            r.code = 128 + static_cast<int>(si.ssi_signo);
            return r;
          } else {
            queue({{"t", signal_type}, {"sig", static_cast<int>(si.ssi_signo)}});
          }
        }
      }
      if (p[3].revents) {
        ControlRecord c;
        ssize_t r = ::read(io.control, &c, sizeof c);
        if (r == sizeof c && c.kind == ControlRecord::kResize)
          queue({{"t", msg::kResize}, {"rows", c.a}, {"cols", c.b}});
        else if (r == sizeof c && c.kind == ControlRecord::kSignal)
          queue({{"t", signal_type}, {"sig", c.a}});
        else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
          control_open = false;
      }
      if (p[1].revents) {
        ssize_t r = ::read(io.in, buf, sizeof buf);
        if (r > 0) {
          std::string data;
          if (held_ctrl_p) data.push_back(kCtrlP);
          data.append(buf, static_cast<size_t>(r));
          held_ctrl_p = false;
          if (detach_keys) {
            auto pos = data.find(std::string{kCtrlP, kCtrlQ});
            if (pos != std::string::npos) {
              if (pos > 0)
                queue({{"t", msg::kIn}, {"d", Json::binary(std::vector<uint8_t>(data.begin(), data.begin() + static_cast<long>(pos)))}});
              CUBBY_TRYV(conn.send_encoded(pending));  // what the user typed before detaching
              ExecResult res;
              res.detached = true;
              return res;
            }
            if (data.back() == kCtrlP) {
              held_ctrl_p = true;
              data.pop_back();
            }
          }
          if (!data.empty()) queue({{"t", msg::kIn}, {"d", Json::binary(std::vector<uint8_t>(data.begin(), data.end()))}});
        } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
          queue({{"t", msg::kInEof}});
          in_open = false;
        }
      }
      if (!pending.empty() && !send_some(conn.fd(), pending)) pending.clear();  // gone: its hangup is read below
      if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto f = conn.recv();
      if (!f) return fail(f.error().wrap("lost the connection to the box"));
      frame = std::move(*f);
    }
    while (frame) {
      const Json& m = frame->msg;
      const std::string_view t = msg::type_of(m);
      if (t == msg::kOut) {
        auto o = CUBBY_TRY(msg::decode<msg::Out>(m));
        if (io.sink) {
          io.sink(o.stream == 2 ? 2 : 1, std::string_view(reinterpret_cast<const char*>(o.data.data()), o.data.size()));
        } else {
          int fd = o.stream == 2 ? io.err : io.out;
          if (fd >= 0) (void)sys::write_all(fd, o.data.data(), o.data.size());
        }
      } else if (t == msg::kExit) {
        auto e = CUBBY_TRY(msg::decode<msg::Exit>(m));
        ExecResult r;
        r.exec_id = e.id;
        r.code = e.code;
        r.signal = e.signal;
        r.timed_out = e.timed_out;
        r.error = std::move(e.error);
        return r;
      } else if (t == msg::kError) {
        return fail(Error::protocol("agent: " + msg::error_text(m, "?")));
      }
      auto next = conn.try_next();
      if (!next) return std::unexpected(next.error());
      frame = std::move(*next);
    }
  }
}

}  // namespace cubby
