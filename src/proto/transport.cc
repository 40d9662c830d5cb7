#include "proto/transport.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "proto/messages.h"

namespace cubby::proto {

namespace {
Result<sockaddr_un> addr_via_dirfd(int dirfd, const std::string& name) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::string p = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  if (p.size() >= sizeof a.sun_path) return fail(Error::invalid("socket name too long: " + name));
  std::memcpy(a.sun_path, p.c_str(), p.size() + 1);
  return a;
}
}  // namespace

Result<UniqueFd> UnixTransport::connect() {
  UniqueFd dir(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return sys_fail("open " + dir_);
  auto a = CUBBY_TRY(addr_via_dirfd(dir.get(), name_));
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_fail("socket");
  for (;;) {
    if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    if (errno != EINTR) return sys_fail("connect " + dir_ + "/" + name_);
  }
}

Result<UniqueFd> listen_unix(const std::string& dir, const std::string& name, int backlog) {
  UniqueFd d(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!d) return sys_fail("open " + dir);
  // Bind under a temporary name, listen, then rename into place: the path
  // must never exist without a listening socket behind it, or a client that
  // connects the moment it appears (between bind and listen) is refused.
  std::string tmp = name + ".tmp." + std::to_string(::getpid());
  ::unlinkat(d.get(), tmp.c_str(), 0);
  auto a = CUBBY_TRY(addr_via_dirfd(d.get(), tmp));
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return sys_fail("socket");
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0)
    return sys_fail("bind " + dir + "/" + tmp);
  // Connecting takes write permission: the owner's alone (bind gave it
  // 0777 less the umask), whatever the directory's mode.
  if (::fchmodat(d.get(), tmp.c_str(), 0600, 0) < 0 || ::listen(s.get(), backlog) < 0 || ::renameat(d.get(), tmp.c_str(), d.get(), name.c_str()) < 0) {
    int e = errno;
    ::unlinkat(d.get(), tmp.c_str(), 0);
    return sys_fail("listen on " + dir + "/" + name, e);
  }
  return s;
}

namespace {
Result<Conn> hello(Transport& t, const Json* first) {
  Conn c(CUBBY_TRY(t.connect()));
  std::string out;
  encode_into(out, {{"t", msg::kHello}, {"v", kVersion}, {"min", kMinVersion}});
  if (first) encode_into(out, *first);
  CUBBY_TRYV(c.send_encoded(out));
  auto f = CUBBY_TRY(c.recv());
  if (msg::type_of(f.msg) == msg::kError)
    return fail(Error::protocol("agent refused: " + msg::error_text(f.msg, "?")));
  if (msg::type_of(f.msg) != msg::kHello) return fail(Error::protocol("expected hello from agent"));
  CUBBY_TRYV(msg::decode<msg::Hello>(f.msg));
  return c;
}
}  // namespace

Result<Conn> connect_and_hello(Transport& t) { return hello(t, nullptr); }
Result<Conn> connect_and_hello(Transport& t, const Json& first) { return hello(t, &first); }

}  // namespace cubby::proto
