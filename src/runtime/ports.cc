#include "runtime/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <set>
#include <tuple>

#include "base/unique_fd.h"
#include "runtime/split.h"

namespace cubby {
namespace {

Error bad(std::string_view spec, const std::string& why) {
  return Error::invalid("invalid port mapping \"" + std::string(spec) + "\": " + why +
                        " (want [IP:][HOST_PORT:]GUEST_PORT[/tcp|udp])");
}

// "80" or "8000-8010" → [first, last]; an empty text is "no port given".
Result<std::pair<int, int>> parse_range(std::string_view spec, std::string_view text, bool allow_empty) {
  if (text.empty()) {
    if (allow_empty) return std::pair{0, 0};
    return fail(bad(spec, "the guest port is missing"));
  }
  auto one = [&](std::string_view t) -> Result<int> {
    int v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size() || v < 1 || v > 65535)
      return fail(bad(spec, "\"" + std::string(t) + "\" is not a port number from 1 to 65535"));
    return v;
  };
  auto dash = text.find('-');
  int a = CUBBY_TRY(one(text.substr(0, dash)));
  int b = dash == std::string_view::npos ? a : CUBBY_TRY(one(text.substr(dash + 1)));
  if (b < a) return fail(bad(spec, "the range " + std::string(text) + " runs backwards"));
  return std::pair{a, b};
}

sockaddr_in address_of(const PortMapping& p) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(p.host_port);
  ::inet_pton(AF_INET, p.host_ip.c_str(), &a.sin_addr);
  return a;
}

}  // namespace

Result<std::vector<PortMapping>> parse_publish(std::string_view spec) {
  std::string_view rest = spec;
  std::string proto = "tcp";
  if (auto slash = rest.rfind('/'); slash != std::string_view::npos) {
    proto = std::string(rest.substr(slash + 1));
    rest = rest.substr(0, slash);
    if (proto != "tcp" && proto != "udp") return fail(bad(spec, "the protocol must be tcp or udp, not \"" + proto + "\""));
  }
  if (rest.starts_with('[')) return fail(bad(spec, "IPv6 host addresses are not supported"));
  // Split on ':' from the right: GUEST, HOST:GUEST or IP:HOST:GUEST.
  std::vector<std::string_view> parts = split(rest, ':');
  if (parts.size() > 3) return fail(bad(spec, "too many ':'"));
  std::string ip = "0.0.0.0";
  if (parts.size() == 3) {
    ip = std::string(parts[0]);
    in_addr a;
    if (::inet_pton(AF_INET, ip.c_str(), &a) != 1) return fail(bad(spec, "\"" + ip + "\" is not an IPv4 address"));
  }
  auto guest = CUBBY_TRY(parse_range(spec, parts.back(), false));
  auto host = CUBBY_TRY(parse_range(spec, parts.size() >= 2 ? parts[parts.size() - 2] : "", true));
  int count = guest.second - guest.first + 1;
  if (host.first != 0 && host.second - host.first + 1 != count)
    return fail(bad(spec, "the host and guest ranges differ in length"));
  std::vector<PortMapping> out;
  for (int i = 0; i < count; ++i) {
    PortMapping m;
    m.host_ip = ip;
    m.host_port = static_cast<uint16_t>(host.first == 0 ? 0 : host.first + i);
    m.guest_port = static_cast<uint16_t>(guest.first + i);
    m.proto = proto;
    out.push_back(m);
  }
  return out;
}

std::string to_string(const PortMapping& p) {
  return p.host_ip + ":" + std::to_string(p.host_port) + "->" + std::to_string(p.guest_port) + "/" + p.proto;
}

Result<void> check_host_port_free(const PortMapping& p) {
  UniqueFd s(::socket(AF_INET, (p.proto == "udp" ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
  if (!s) return sys_fail("socket");
  // A TCP port whose last connections linger in TIME_WAIT is free to listen
  // on (the helpers set SO_REUSEADDR too); only a listener holds it. Not for
  // UDP, where SO_REUSEADDR would let two sockets share the port.
  int one = 1;
  if (p.proto == "tcp") (void)::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = address_of(p);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    if (e == EADDRINUSE)
      return fail(Error::conflict("cannot publish " + to_string(p) + ": host port " + std::to_string(p.host_port) +
                                  " is already in use"));
    return fail(Error::sys("cannot publish " + to_string(p) + ": bind " + p.host_ip, e));
  }
  return {};
}

Result<void> assign_host_ports(std::vector<PortMapping>& ports) {
  std::set<std::tuple<std::string, uint16_t, std::string>> seen;
  for (auto& p : ports) {
    if (p.host_port == 0) {
      // The kernel picks a free port; the helper binds it again at start.
      UniqueFd s(::socket(AF_INET, (p.proto == "udp" ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
      if (!s) return sys_fail("socket");
      sockaddr_in a = address_of(p);
      socklen_t len = sizeof a;
      if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
        return sys_fail("pick a free host port on " + p.host_ip);
      p.host_port = ntohs(a.sin_port);
    }
    if (!seen.insert({p.host_ip, p.host_port, p.proto}).second)
      return fail(Error::invalid("host port " + std::to_string(p.host_port) + "/" + p.proto +
                                 " is published twice"));
  }
  return {};
}

}  // namespace cubby
