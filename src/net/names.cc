#include "net/names.h"

#include <arpa/inet.h>

#include <cctype>

#include "net/bridge.h"

namespace cubby::net {
namespace {

bool is_address(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// A hostname as /etc/hosts takes it: dot-separated labels of [A-Za-z0-9-].
bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 253 || n.front() == '.' || n.back() == '.') return false;
  size_t label = 0;
  for (char c : n) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

Result<std::string> parse_add_host(const std::string& text) {
  auto colon = text.find(':');  // the name has none; an IPv6 address after it may
  std::string name = text.substr(0, colon), ip = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (colon == std::string::npos || !valid_name(name) || !is_address(ip))
    return fail(Error::invalid("invalid --add-host \"" + text.substr(0, 80) + "\": want NAME:IP (an IPv4 or IPv6 address)"));
  return ip + "\t" + name;
}

Result<std::string> parse_dns_server(const std::string& text) {
  if (!is_address(text)) return fail(Error::invalid("invalid --dns \"" + text.substr(0, 80) + "\": want an IP address"));
  return text;
}

std::string resolv_conf_for(const std::vector<std::string>& dns, bool bridge) {
  if (dns.empty()) return bridge ? box_resolv_conf() : "";
  std::string out;
  for (const auto& d : dns) out += "nameserver " + d + "\n";
  return out;
}

}  // namespace cubby::net
