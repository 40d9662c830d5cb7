// The box's DNS proxy: what makes --allow-net NAME / --deny-net NAME hold
// (net/egress.h) on --network default, for both backends.
//
// It is a thread of the shim, outside the box: the box can neither kill nor
// reconfigure it. Its socket is a UDP socket on 127.0.0.53:53 of the network
// namespace the box's traffic leaves through (the box's own for the sandbox,
// QEMU's for a vm box), made there by a short-lived child that joins that
// namespace and hands the socket back; the ruleset's nat chain sends every
// DNS packet of that namespace to it, whichever server the packet names.
// Nothing in the box can take the address (the socket holds it, without
// SO_REUSEADDR/SO_REUSEPORT) or move the rule (no CAP_NET_ADMIN there).
//
// For each query (one question, checked: net/dns.h):
//  - a name the policy does not answer gets REFUSED (RCODE 5, "refuses for
//    policy reasons", RFC 1035): the honest answer, which a stub resolver
//    does not cache as "this name does not exist" (NXDOMAIN would be a lie
//    about the world that caches, and search-list resolvers would go on to
//    try other suffixes as if the name were merely absent);
//  - an answered name is forwarded to the upstream servers (--dns, else the
//    host's resolv.conf nameservers) from the shim's own network namespace,
//    each query on a fresh connected socket with a fresh random ID, and the
//    reply must come from that server, carry that ID and echo the question;
//  - for a name an allow rule matched, the reply's A records (along the
//    CNAME chain from the name asked) go into the ruleset's sets before the
//    box sees the answer, with the record's TTL (capped at kMaxTtl) plus
//    kTtlSlack as the element's timeout, and the TTLs the box sees are
//    capped at kMaxTtl, so an answer the box caches is never longer-lived
//    than the elements that let it connect.
// Only UDP is served: a TCP query (after a truncated answer) is reset.
//
// The proxy dies with the shim; its socket with it, and the sets with the
// namespace. A shim crash leaves nothing of it behind.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "net/egress.h"

namespace cubby::shim {

struct NetnsFds;

class DnsProxy {
 public:
  static constexpr uint32_t kMaxTtl = 3600;   // seconds a box may cache an answer
  static constexpr uint32_t kTtlSlack = 30;   // an element outlives the box's cached answer by this

  // Opens the proxy's socket in ns and starts serving. upstreams: IPv4 or
  // IPv6 addresses (port 53); none is an error (nowhere to forward to).
  static Result<std::unique_ptr<DnsProxy>> start(const NetnsFds& ns, net::EgressPolicy policy,
                                                 std::vector<std::string> upstreams);
  ~DnsProxy();  // stops the thread and closes every socket

  DnsProxy(const DnsProxy&) = delete;
  DnsProxy& operator=(const DnsProxy&) = delete;

 private:
  DnsProxy() = default;
  struct Pending;
  void run();
  void on_query(const uint8_t* data, size_t n, const sockaddr_storage& from, socklen_t from_len);
  void on_reply(Pending& p);
  bool forward(Pending& p);  // to p.upstream; false when no upstream is left
  bool open_elements(const std::vector<uint16_t>& ports, const std::vector<std::pair<uint32_t, uint32_t>>& addresses);
  void reply(const std::vector<uint8_t>& msg, const sockaddr_storage& to, socklen_t to_len);
  void note_refused(const std::string& name);

  UniqueFd sock_;           // 127.0.0.53:53 in the box's namespace
  UniqueFd stop_;           // eventfd: the destructor's word to stop
  UniqueFd ns_net_, ns_user_;  // where nft adds the elements (dups of the Network's)
  bool join_user_ = false;
  net::EgressPolicy policy_;
  std::vector<sockaddr_storage> upstreams_;
  std::vector<std::unique_ptr<Pending>> pending_;
  // (address, port) -> when its element times out, so a name asked again
  // and again costs no nft run while its element has long to live.
  std::map<std::pair<uint32_t, uint16_t>, std::chrono::steady_clock::time_point> elements_;
  uint64_t refused_ = 0;
  std::thread thread_;
};

// The upstream servers of a box: its --dns servers, else the host's
// resolv.conf IPv4 nameservers.
std::vector<std::string> dns_upstreams(const std::vector<std::string>& dns);

}  // namespace cubby::shim
