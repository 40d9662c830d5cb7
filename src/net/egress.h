// A box's egress policy: which destinations it may reach, enforced outside
// the box by nftables (never by anything the box runs), the same rules on
// every network that has one:
//  - --network bridge: the host's forward/input hooks (net/bridge.cc);
//  - --network default: the network namespace whose packets slirp4netns
//    carries out (the box's own for the sandbox, QEMU's for a vm box), on
//    its output hook and on tap0's egress hook (shim/network.cc). A box
//    holds no CAP_NET_ADMIN there, so it cannot change them; the egress
//    hook also sees frames a box writes to a packet socket, which skip the
//    IP stack's hooks.
//
// The rules: the most specific destination wins (a longer prefix, then
// one with a port over one without); on a tie the box's own rules beat
// the defaults and deny beats allow. What no rule matches passes (the
// internet). The defaults refuse the host itself (its loopback and its
// own addresses), link-local addresses (169.254.169.254, cloud metadata)
// and the network's host alias (host.cubby.internal) unless a box's rule
// at least as specific allows them, so --allow-net 0.0.0.0/0 does not
// open the host but --allow-net 169.254.169.254:80 does open that port;
// --deny-net 0.0.0.0/0 --allow-net CIDR[:PORT] is an allow-list.
//
// Domain rules (--allow-net api.example.com[:PORT], *.example.com for its
// subdomains; --deny-net NAME) are enforced through the box's DNS path
// (--network default only): the shim's DNS proxy (shim/network_dns.h)
// answers a name only where judge_name says so, and the A records of an
// allowed name's answer become elements of the ruleset's sets (names_any,
// names_port), for as long as their TTL says. Those sets are tried after
// every deny rule more specific than /0 (the box's and the defaults'), so a
// name that resolves to the host or to metadata (DNS rebinding) stays
// refused, and before a deny of 0.0.0.0/0, which they are the exceptions of.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"

namespace cubby::net {

inline constexpr const char* kNftPath = "/usr/sbin/nft";

// Runs a tool (nft -f -, ip -batch -) as s says, with `input` on its stdin
// and its stderr, trimmed to a line, as the error. s.fds[0..2] are set here
// (stdin, /dev/null, the error pipe); fds past them are the caller's.
Result<void> run_tool(SpawnSpec s, const std::string& input);

// Where the box's DNS proxy listens in the namespace it serves (its own
// loopback, so no packet of the box's DNS leaves it), and where the ruleset
// sends every DNS packet (port 53) the box's side sends, whatever server it
// names, once the box has domain rules.
inline constexpr const char* kDnsProxyAddress = "127.0.0.53";

// An --allow-net / --deny-net rule: an IPv4 address or CIDR, or a domain
// name, and a port (0: every port) that applies to TCP and UDP alike.
struct EgressRule {
  std::string cidr;  // normalized: a.b.c.d/n, or "host.cubby.internal" until resolved; "" for a name
  uint16_t port = 0;
  std::string name;  // a domain rule: "api.example.com" or "*.example.com" (lowercase, no trailing dot)
};
// Parses "CIDR|ADDRESS|host.cubby.internal|NAME|*.NAME[:PORT]"; one clear
// error otherwise. A denied name takes no port (it does not resolve at all).
Result<EgressRule> parse_egress_rule(const std::string& text);
std::string to_string(const EgressRule& r);  // back to "a.b.c.d/n[:port]" or "name[:port]"

struct EgressPolicy {
  std::vector<EgressRule> allow, deny;
};
// A box's --allow-net / --deny-net as stored in its spec (normalized text).
Result<EgressPolicy> parse_egress_policy(const std::vector<std::string>& allow, const std::vector<std::string>& deny);
// Whether any rule is a domain rule (then the box gets the DNS proxy).
bool has_name_rules(const EgressPolicy& p);

// How the DNS proxy treats a name the box asks for. The most specific name
// rule wins: an exact name over a wildcard, a longer wildcard over a
// shorter one, deny over allow on a tie. A name no rule matches is answered
// unless the box denies 0.0.0.0/0 (then only allowed names answer).
struct NameVerdict {
  bool answer = false;
  // The ports an answer's addresses are opened for (0: every port), from
  // the winning allow rules; empty when the name matched no rule (its
  // addresses are judged by the CIDR rules alone).
  std::vector<uint16_t> ports;
};
NameVerdict judge_name(const EgressPolicy& box, const std::string& name);

// One rule with its verdict, in the order they are tried (first match wins).
struct EgressDecision {
  EgressRule rule;
  bool allow = false;
  bool from_default = false;
};
// Orders the box's rules and the network's defaults as described above.
// host.cubby.internal in the box's rules becomes host_alias/32. Domain
// rules are not in it (they are the sets, see user_network_ruleset).
std::vector<EgressDecision> order_egress(const EgressPolicy& box, const EgressPolicy& defaults,
                                         const std::string& host_alias);

// The IPv4 nameservers of the host's /etc/resolv.conf: where a vm box's
// DNS goes (QEMU's slirp forwards the guest's queries to them), and the DNS
// proxy's upstreams when the box has no --dns.
std::vector<std::string> host_nameservers();

// The host's own IPv4 addresses (every interface but loopback), as /32s.
std::vector<EgressRule> host_addresses();

// nftables match text for a decision's destination ("ip daddr X [meta
// l4proto { tcp, udp } th dport P] ").
std::string nft_match(const EgressRule& r);

// The nftables ruleset of --network default's policy, for the network
// namespace whose device `tap` leads to slirp4netns: an inet table with an
// output chain (refusals are resets and ICMP errors, so a box learns at
// once) and a netdev table on tap's egress hook (drops: the backstop for
// raw frames). host_alias is slirp's address of the host (10.0.2.2).
// With domain rules, it also has the sets the DNS proxy fills (see
// kNamesAnySet) and a nat chain sending every DNS packet to the proxy.
std::string user_network_ruleset(const EgressPolicy& box, const std::string& tap, const std::string& host_alias);
// Whether the box's rules allow some port of host_alias (then slirp4netns
// must not refuse the host's loopback itself: the ruleset narrows it).
bool allows_host_alias(const EgressPolicy& box);

// The sets of table inet cubby that an allowed name's addresses go into:
// ipv4_addr (every port) and ipv4_addr . inet_service (one port).
inline constexpr const char* kNamesAnySet = "names_any";
inline constexpr const char* kNamesPortSet = "names_port";
// The nft commands that put `ip` (host order) into the set for `port` (0:
// every port) for `seconds`, or refresh its timeout when it is there.
std::string name_element_commands(uint32_t ip, uint16_t port, uint32_t seconds);

}  // namespace cubby::net
