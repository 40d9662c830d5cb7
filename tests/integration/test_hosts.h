// Peers for network tests. Network tests send traffic only to loopback or to
// hosts they make themselves: a TestHost is a fresh network namespace joined
// to ours by a veth pair, so a box's "outbound" connection to it leaves the
// box's network helper through the host's routing table as any remote one
// would, and reaches nothing outside this machine.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"

namespace cubby::test {

class TestHost {
 public:
  // A /30 in 198.18.0.0/15 (RFC 2544's benchmarking range, routed nowhere)
  // picked from our pid and a counter; ours is .1, the host's .2.
  TestHost();
  ~TestHost();  // deletes the veth pair; the namespace goes with its last fd
  TestHost(const TestHost&) = delete;
  TestHost& operator=(const TestHost&) = delete;

  bool ok() const { return ok_; }
  const std::string& address() const { return peer_ip_; }
  // Our end of the pair: one of this host's own addresses.
  const std::string& host_side_address() const { return host_ip_; }
  // A TCP socket of the test host's, listening on address() (or on `ip`,
  // one of its also_at() addresses; a kernel-chosen port).
  UniqueFd listen_tcp(const std::string& ip = "");
  // Gives the test host `ip` too (a /32 on its interface) and routes it
  // there from ours, e.g. to stand in for 169.254.169.254, the cloud metadata
  // service. The route goes with the veth pair.
  bool also_at(const std::string& ip);
  int netns() const { return netns_.get(); }

 private:
  UniqueFd netns_;
  std::vector<UniqueFd> address_locks_;  // released after the destructor removed the routes
  std::string host_if_, peer_ip_, host_ip_;
  bool ok_ = false;
};

// A DNS server on a test host's address, port 53: Debian's dnsmasq (a real
// resolver, not ours), answering `records` (name -> IPv4 address: the name
// and its subdomains, dnsmasq's --address, with a TTL of 7200 s) and REFUSED
// for every other name (it has no upstream). It logs every query it gets,
// so a test can tell which names ever reached it.
class DnsServer {
 public:
  DnsServer(TestHost& host, const std::vector<std::pair<std::string, std::string>>& records);
  ~DnsServer();  // stops the daemon and removes its files
  DnsServer(const DnsServer&) = delete;
  DnsServer& operator=(const DnsServer&) = delete;

  bool ok() const { return pid_ > 0; }
  // Its query log so far ("query[A] allowed.test from 198.18.0.1" lines).
  std::string queries() const;

 private:
  std::string dir_;
  pid_t pid_ = -1;
};

// A TCP socket listening on 127.0.0.1 (a kernel-chosen port).
UniqueFd listen_loopback_tcp();
// A TCP socket listening on every host address (a kernel-chosen port).
UniqueFd listen_any_tcp();

// Answers every connection on a listening socket with an HTTP/1.0 200 whose
// body is `body`, on a thread of its own, until destroyed.
class HttpResponder {
 public:
  HttpResponder(UniqueFd listener, std::string body);
  ~HttpResponder();
  HttpResponder(const HttpResponder&) = delete;
  HttpResponder& operator=(const HttpResponder&) = delete;

  int port() const { return port_; }
  int served() const { return served_.load(); }  // connections answered so far

 private:
  void loop();
  UniqueFd listener_, stop_r_, stop_w_;
  std::string body_;
  int port_ = 0;
  std::atomic<int> served_{0};
  std::thread th_;
};

}  // namespace cubby::test
