#include "oci/console.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>

#include "base/sys.h"

namespace cubby::oci {

Result<UniqueFd> send_console(const std::string& socket_path, std::optional<std::pair<int, int>> size) {
  UniqueFd master(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master) return sys_fail("open a pseudo-terminal");
  if (::grantpt(master.get()) < 0 || ::unlockpt(master.get()) < 0) return sys_fail("unlock the pseudo-terminal");
  char name[128];
  if (::ptsname_r(master.get(), name, sizeof name) != 0) return sys_fail("name the pseudo-terminal");
  UniqueFd slave(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave) return sys_fail(std::string("open ") + name);
  // Raw from the start: the caller may type before `start` (docker run -it
  // does), and a cooked host terminal would echo those bytes and read its
  // control characters itself; the box's own terminal is the one that
  // interprets them.
  termios t;
  if (::tcgetattr(slave.get(), &t) == 0) {
    ::cfmakeraw(&t);
    (void)::tcsetattr(slave.get(), TCSANOW, &t);
  }
  if (size && size->first > 0 && size->second > 0) {
    winsize w{};
    w.ws_row = static_cast<unsigned short>(size->first);
    w.ws_col = static_cast<unsigned short>(size->second);
    (void)::ioctl(slave.get(), TIOCSWINSZ, &w);
  }

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path) return fail(Error::invalid("--console-socket path is too long"));
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) return sys_fail("socket");
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
    return sys_fail("connect to --console-socket " + socket_path);
  // go-runc's ReceiveMaster takes the first fd of the message; the payload
  // (a name, for runc) is not read.
  CUBBY_TRYV(sys::send_fd(sock.get(), master.get()));
  return slave;
}

bool take_terminal(int slave) {
  if (::setsid() < 0) return false;
  if (::ioctl(slave, TIOCSCTTY, 0) < 0) return false;
  for (int i = 0; i < 3; ++i)
    if (::dup2(slave, i) < 0) return false;
  return true;
}

}  // namespace cubby::oci
