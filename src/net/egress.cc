#include "net/egress.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <optional>

#include "base/fs.h"
#include "base/sys.h"
#include "net/dns.h"
#include "net/names.h"

namespace cubby::net {
namespace {

// The mark of packets the output hook passed (see user_network_ruleset).
constexpr const char* kEgressPassMark = "0x0c0bb2";

std::string dotted(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  return ::inet_ntop(AF_INET, &a, buf, sizeof buf);
}

int prefix_of(const EgressRule& r) {
  auto slash = r.cidr.find('/');
  return slash == std::string::npos ? 32 : std::stoi(r.cidr.substr(slash + 1));
}

}  // namespace

std::vector<std::string> host_nameservers() {
  std::string in = read_file("/etc/resolv.conf", 64 * 1024).value_or("");
  std::vector<std::string> out;
  for (size_t at = 0; at < in.size();) {
    size_t nl = in.find('\n', at);
    std::string line = in.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? in.size() : nl + 1;
    if (line.rfind("nameserver", 0) != 0) continue;
    size_t b = line.find_first_not_of(" \t", 10);
    if (b == std::string::npos) continue;
    std::string a = line.substr(b, line.find_first_of(" \t", b) - b);
    in_addr x{};
    if (::inet_pton(AF_INET, a.c_str(), &x) == 1) out.push_back(a);
  }
  return out;
}

namespace {

// A domain rule's name: dot-separated labels of [a-z0-9-_] (1-63 bytes, no
// '-' at either end, 253 in all), optionally "*." first; lowercased, a
// trailing dot dropped.
std::optional<std::string> domain_pattern(std::string n) {
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!n.empty() && n.back() == '.') n.pop_back();
  std::string body = n.rfind("*.", 0) == 0 ? n.substr(2) : n;
  if (body.empty() || body.size() > 253 || body.front() == '.' || body.back() == '.') return std::nullopt;
  size_t label = 0;
  char prev = '.';
  for (char c : body) {
    if (c == '.') {
      if (label == 0 || prev == '-') return std::nullopt;  // no empty label, none ending in '-'
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (c == '-' && prev != '.')) {
      if (++label > 63) return std::nullopt;
    } else {
      return std::nullopt;
    }
    prev = c;
  }
  if (prev == '-') return std::nullopt;
  // The last label is a top-level domain, never all digits (1.2.3 is a
  // mistyped address, not a name).
  std::string last = body.substr(body.rfind('.') == std::string::npos ? 0 : body.rfind('.') + 1);
  if (last.find_first_not_of("0123456789") == std::string::npos) return std::nullopt;
  return n;
}

// How specific a name rule is: an exact name beats every wildcard, a
// longer wildcard a shorter one.
size_t name_specificity(const std::string& pattern) {
  return pattern.rfind("*.", 0) == 0 ? pattern.size() : 1000 + pattern.size();
}

}  // namespace

Result<void> run_tool(SpawnSpec s, const std::string& input) {
  auto [in_r, in_w] = CUBBY_TRY(sys::make_pipe());
  auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());
  if (s.fds.size() < 3) s.fds.resize(3, -1);
  s.fds[0] = in_r.get();
  s.fds[1] = -1;
  s.fds[2] = err_w.get();
  auto child = CUBBY_TRY(spawn(s));
  in_r.reset();
  err_w.reset();
  // Small inputs (a few rules): the pipe holds them, no deadlock with stderr.
  auto w = sys::write_all(in_w.get(), input.data(), input.size());
  in_w.reset();
  std::string err = sys::read_all(err_r.get(), 64 * 1024).value_or("");
  auto st = CUBBY_TRY(child.wait());
  if (!w) return std::unexpected(w.error().wrap("feed " + s.argv[0]));
  if (st.signaled || st.code != 0) {
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    if (auto nl = err.find('\n'); nl != std::string::npos) err = err.substr(0, nl);
    return fail(Error::internal(s.argv[0].substr(s.argv[0].rfind('/') + 1) + ": " +
                                (err.empty() ? "exit " + std::to_string(st.shell_code()) : err)));
  }
  return {};
}

Result<EgressRule> parse_egress_rule(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return fail(Error::invalid("invalid network rule \"" + text.substr(0, 80) + "\": " + why));
  };
  std::string addr = text;
  EgressRule r;
  if (auto colon = text.rfind(':'); colon != std::string::npos) {
    std::string port = text.substr(colon + 1);
    addr = text.substr(0, colon);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
      return bad("the port must be 1 to 65535");
    r.port = static_cast<uint16_t>(std::stoi(port));
  }
  int prefix = 32;
  if (auto slash = addr.find('/'); slash != std::string::npos) {
    std::string p = addr.substr(slash + 1);
    addr = addr.substr(0, slash);
    if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos || std::stoi(p) > 32)
      return bad("the prefix length must be 0 to 32");
    prefix = std::stoi(p);
  }
  if (addr == kHostName) {  // the network's address of the host: known at attach
    if (prefix != 32) return bad(std::string(kHostName) + " is one address");
    r.cidr = addr;
    return r;
  }
  in_addr a{};
  if (::inet_pton(AF_INET, addr.c_str(), &a) != 1) {
    auto name = domain_pattern(addr);
    if (!name) return bad("want an IPv4 address, CIDR or domain name (*.NAME for its subdomains), then optionally :PORT");
    if (text.find('/') != std::string::npos) return bad("a domain name takes no prefix length");
    r.name = *name;
    return r;
  }
  uint32_t mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  r.cidr = dotted(ntohl(a.s_addr) & mask) + "/" + std::to_string(prefix);
  return r;
}

std::string to_string(const EgressRule& r) {
  return (r.name.empty() ? r.cidr : r.name) + (r.port ? ":" + std::to_string(r.port) : "");
}

Result<EgressPolicy> parse_egress_policy(const std::vector<std::string>& allow, const std::vector<std::string>& deny) {
  EgressPolicy p;
  for (const auto& r : allow) p.allow.push_back(CUBBY_TRY(parse_egress_rule(r)));
  for (const auto& r : deny) {
    auto rule = CUBBY_TRY(parse_egress_rule(r));
    // A denied name is never answered, so there are no addresses of it to
    // refuse one port of; a port here would promise what is not enforced.
    if (!rule.name.empty() && rule.port)
      return fail(Error::invalid("invalid network rule \"" + r.substr(0, 80) +
                                 "\": --deny-net takes a domain name without a port (the name does not resolve at all)"));
    p.deny.push_back(std::move(rule));
  }
  return p;
}

bool has_name_rules(const EgressPolicy& p) {
  auto named = [](const EgressRule& r) { return !r.name.empty(); };
  return std::any_of(p.allow.begin(), p.allow.end(), named) || std::any_of(p.deny.begin(), p.deny.end(), named);
}

NameVerdict judge_name(const EgressPolicy& box, const std::string& name) {
  size_t best = 0;
  bool denied = false;
  std::vector<uint16_t> ports;
  auto consider = [&](const EgressRule& r, bool allow) {
    if (r.name.empty() || !dns::name_matches(r.name, name)) return;
    size_t s = name_specificity(r.name);
    if (s < best) return;
    if (s > best) {
      best = s;
      denied = false;
      ports.clear();
    }
    if (allow) {
      if (std::find(ports.begin(), ports.end(), r.port) == ports.end()) ports.push_back(r.port);
    } else {
      denied = true;
    }
  };
  for (const auto& r : box.deny) consider(r, false);
  for (const auto& r : box.allow) consider(r, true);
  if (best == 0) {
    bool deny_all = std::any_of(box.deny.begin(), box.deny.end(),
                                [](const EgressRule& r) { return r.cidr == "0.0.0.0/0" && r.port == 0; });
    return {!deny_all, {}};
  }
  if (denied) return {false, {}};
  // Every port already: the per-port elements would add nothing.
  if (std::find(ports.begin(), ports.end(), 0) != ports.end()) ports = {0};
  return {true, ports};
}

std::string name_element_commands(uint32_t ip, uint16_t port, uint32_t seconds) {
  std::string key = dotted(ip) + (port ? " . " + std::to_string(port) : "");
  std::string set = std::string("inet cubby ") + (port ? kNamesPortSet : kNamesAnySet);
  std::string t = " timeout " + std::to_string(seconds) + "s";
  // add (a no-op when it is there), delete, add: one transaction that
  // leaves the element with the new timeout either way.
  return "add element " + set + " { " + key + t + " }\ndelete element " + set + " { " + key + " }\nadd element " +
         set + " { " + key + t + " }\n";
}

std::vector<EgressDecision> order_egress(const EgressPolicy& box, const EgressPolicy& defaults,
                                         const std::string& host_alias) {
  std::vector<EgressDecision> out;
  auto add = [&](const std::vector<EgressRule>& rules, bool allow, bool from_default) {
    for (EgressRule r : rules) {
      if (!r.name.empty()) continue;  // the DNS proxy's sets stand for these
      if (r.cidr == kHostName) r.cidr = host_alias + "/32";
      out.push_back({std::move(r), allow, from_default});
    }
  };
  add(box.deny, false, false);
  add(box.allow, true, false);
  add(defaults.deny, false, true);
  add(defaults.allow, true, true);
  // Stable: among equals, the order above (deny before allow).
  std::stable_sort(out.begin(), out.end(), [](const EgressDecision& a, const EgressDecision& b) {
    int pa = prefix_of(a.rule), pb = prefix_of(b.rule);
    if (pa != pb) return pa > pb;
    if (a.from_default != b.from_default) return !a.from_default;
    if ((a.rule.port != 0) != (b.rule.port != 0)) return a.rule.port != 0;
    return false;
  });
  return out;
}

std::vector<EgressRule> host_addresses() {
  std::vector<EgressRule> out;
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return out;
  for (ifaddrs* i = all; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    uint32_t a = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if ((a >> 24) == 127) continue;  // a box's own loopback is its own
    EgressRule r{dotted(a) + "/32", 0};
    if (std::none_of(out.begin(), out.end(), [&](const EgressRule& x) { return x.cidr == r.cidr; })) out.push_back(r);
  }
  ::freeifaddrs(all);
  return out;
}

std::string nft_match(const EgressRule& r) {
  std::string m = "ip daddr " + r.cidr + " ";
  if (r.port) m += "meta l4proto { tcp, udp } th dport " + std::to_string(r.port) + " ";
  return m;
}

bool allows_host_alias(const EgressPolicy& box) {
  return std::any_of(box.allow.begin(), box.allow.end(), [](const EgressRule& r) { return r.cidr == kHostName; });
}

std::string user_network_ruleset(const EgressPolicy& box, const std::string& tap, const std::string& host_alias) {
  EgressPolicy defaults;
  defaults.deny = host_addresses();
  defaults.deny.push_back({host_alias + "/32", 0});   // slirp's alias of the host's loopback
  defaults.deny.push_back({"169.254.0.0/16", 0});     // link-local: cloud metadata
  defaults.allow.push_back({"10.0.2.3/32", 53});      // slirp's DNS (the sandbox's resolver)
  for (const auto& ns : host_nameservers()) defaults.allow.push_back({ns + "/32", 53});  // QEMU's slirp forwards there
  // What the output hook lets through is marked, and the egress hook lets
  // marked packets pass: so the egress hook judges only what skipped the
  // IP stack (a packet socket's frames: no conntrack, no mark; setting a
  // mark needs CAP_NET_ADMIN, which a box lacks), and replies to connections
  // made into the box (-p: slirp connects from the host alias) pass there.
  const std::string mark = "meta mark set " + std::string(kEgressPassMark) + " ";
  std::string output, egress;
  bool names = has_name_rules(box), names_placed = !names;
  // The addresses allowed names resolved to: after every refusal more
  // specific than /0 (see the header), so placed before the first /0 rule.
  auto place_names = [&] {
    if (names_placed) return;
    names_placed = true;
    output += "    ip daddr @" + std::string(kNamesAnySet) + " " + mark + "accept\n";
    output += "    meta l4proto { tcp, udp } ip daddr . th dport @" + std::string(kNamesPortSet) + " " + mark + "accept\n";
  };
  for (const auto& d : order_egress(box, defaults, host_alias)) {
    if (prefix_of(d.rule) == 0) place_names();
    std::string m = "    " + nft_match(d.rule);
    if (d.allow) {
      output += m + mark + "accept\n";
      egress += m + "accept\n";
    } else {
      output += m + "meta l4proto tcp reject with tcp reset\n" + m + "reject\n";
      egress += m + "drop\n";
    }
  }
  // Re-runs replace the tables whole (a restarted helper never doubles them).
  place_names();
  std::string t = "table inet cubby {}\ndelete table inet cubby\ntable inet cubby {\n";
  if (names) {
    // Elements time out on their own (flags timeout); the proxy adds them.
    t += "  set " + std::string(kNamesAnySet) + " { type ipv4_addr; flags timeout; }\n";
    t += "  set " + std::string(kNamesPortSet) + " { type ipv4_addr . inet_service; flags timeout; }\n";
    // Every DNS packet goes to the proxy, whichever server it names (the
    // box's resolv.conf, a server of its own choosing, QEMU's slirp
    // forwarding a guest's query): no name resolves around the policy.
    t += "  chain dns { type nat hook output priority -100; policy accept;\n";
    t += "    meta l4proto { tcp, udp } th dport 53 dnat ip to " + std::string(kDnsProxyAddress) + "\n  }\n";
  }
  t += "  chain output { type filter hook output priority filter; policy accept;\n";
  t += "    oif \"lo\" accept\n    ct state established,related " + mark + "accept\n";
  // A packet the dns chain sent to the proxy still shows the device its
  // first route chose (tap0) in this hook, so it is let through by address.
  if (names)
    t += "    ip daddr " + std::string(kDnsProxyAddress) + " meta l4proto { tcp, udp } th dport 53 accept\n";
  t += output + "    " + mark + "\n  }\n}\n";
  t += "table netdev cubby {}\ndelete table netdev cubby\ntable netdev cubby {\n";
  t += "  chain egress { type filter hook egress device \"" + tap + "\" priority filter; policy accept;\n";
  t += "    meta mark " + std::string(kEgressPassMark) + " accept\n    meta protocol ip6 drop\n" + egress + "  }\n}\n";
  return t;
}

}  // namespace cubby::net
