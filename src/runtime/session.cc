#include "runtime/session.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/sys.h"
#include "proto/messages.h"

namespace cubby {

namespace msg = proto::msg;
using proto::Json;

namespace {
// Blocks SIGINT/SIGTERM/SIGHUP for the session and reads them from a
// signalfd; restores the mask on destruction.
class SignalRelay {
 public:
  explicit SignalRelay(bool on) {
    if (!on) return;
    sigemptyset(&set_);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set_, s);
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
}  // namespace

Result<ExecResult> stream_session(proto::Conn& conn, const StdioFds& io, const char* signal_type) {
  SignalRelay relay(io.forward_signals);
  bool in_open = io.in >= 0;
  char buf[65536];
  for (;;) {
    pollfd p[3] = {{conn.fd(), POLLIN, 0}, {in_open ? io.in : -1, POLLIN, 0}, {relay.fd(), POLLIN, 0}};
    int n = ::poll(p, 3, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("poll");
    }
    if (p[2].revents) {
      signalfd_siginfo si;
      while (::read(relay.fd(), &si, sizeof si) == sizeof si)
        CUBBY_TRYV(conn.send({{"t", signal_type}, {"sig", static_cast<int>(si.ssi_signo)}}));
    }
    if (p[1].revents) {
      ssize_t r = ::read(io.in, buf, sizeof buf);
      if (r > 0) {
        CUBBY_TRYV(conn.send({{"t", msg::kIn}, {"d", Json::binary(std::vector<uint8_t>(buf, buf + r))}}));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        CUBBY_TRYV(conn.send({{"t", msg::kInEof}}));
        in_open = false;
      }
    }
    if (!p[0].revents) continue;
    auto f = conn.recv();
    if (!f) return fail(f.error().wrap("lost the connection to the box"));
    std::optional<proto::Frame> frame = std::move(*f);
    while (frame) {
      const Json& m = frame->msg;
      const std::string t = m["t"].get<std::string>();
      if (t == msg::kOut) {
        int fd = m.value("s", 1) == 2 ? io.err : io.out;
        if (fd >= 0 && m.contains("d") && m["d"].is_binary()) {
          auto& d = m["d"].get_binary();
          (void)sys::write_all(fd, d.data(), d.size());
        }
      } else if (t == msg::kExit) {
        ExecResult r;
        r.exec_id = m.value("id", uint64_t{0});
        r.code = m.value("code", 0);
        r.timed_out = m.value("timed_out", false);
        r.error = m.value("error", std::string());
        return r;
      } else if (t == msg::kError) {
        return fail(Error::protocol("agent: " + m.value("msg", std::string("?"))));
      }
      auto next = conn.try_next();
      if (!next) return std::unexpected(next.error());
      frame = std::move(*next);
    }
  }
}

}  // namespace cubby
