// --network default: user-mode networking with slirp4netns attached to a
// network namespace, giving it a tap0 with outbound NAT (10.0.2.100 in
// 10.0.2.0/24, DNS at 10.0.2.3). The namespace is the box's own (sandbox
// backend) or QEMU's (vm backend: QEMU's slirp connects out from there).
// Either way the host's loopback is refused (--disable-host-loopback): a box
// reaches the host's 127.0.0.1 services no more than any remote peer would.
// The box's egress policy (net/egress.h) is an nftables ruleset loaded into
// that namespace once tap0 exists and before the workload starts; it lives
// and dies with the namespace, so nothing of it is left on the host. Only
// a box whose rules allow host.cubby.internal (slirp's 10.0.2.2) gets a
// helper that maps it to the host's loopback, and the ruleset narrows it to
// the ports allowed.
// The helper parses what the box sends, so it runs confined: its own empty
// root (--enable-sandbox: a new mount namespace, pivot_root, every capability
// dropped but CAP_NET_BIND_SERVICE) and a seccomp filter (--enable-seccomp).
// It stays uid 0 to join the namespace and open its tap, and drops the rest
// before it reads a packet. It dies with the shim (PDEATHSIG, and its exit
// fd). Published ports (-p) are added through its API socket, so the host
// side of each is a socket of the helper: it goes when the helper does.
//
// The helper joins the namespace through fds the shim opened while the
// namespace's first process was alive (NetnsFds), never by that process's
// pid: a box whose agent fails its set-up and exits at once still gets a
// helper attached, so the agent's own error is what the start reports (the
// first cause), not the helper's failure to find a namespace that went with
// it. The same fds let the shim start the helper again, into the same
// namespace, when it dies while the box runs (Network::restart).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"
#include "net/egress.h"
#include "runtime/ports.h"
#include "shim/network_dns.h"

namespace cubby::shim {

// slirp4netns's address of the host (host.cubby.internal): its
// --disable-host-loopback refuses it.
inline constexpr const char* kSlirpHostAlias = "10.0.2.2";

// The API socket's name in the box directory.
inline constexpr const char* kSlirpApiSocket = "slirp.sock";

// A network namespace and the user namespace that owns it, held open.
struct NetnsFds {
  UniqueFd net, user;
  // The user namespace a process must join to act in net, or -1 when it is
  // the caller's own (joining that fails with EINVAL: as root, the vm
  // backend's QEMU namespace is owned by ours).
  int user_to_join() const;
};
// Opens the namespaces of pid, which must be alive (and not yet reaped).
Result<NetnsFds> open_netns_of(pid_t pid);

// What --network default enforces (net/egress.h): the ruleset for the
// namespace, and whether slirp4netns maps 10.0.2.2 to the host's loopback.
// With domain rules, the box's DNS proxy (shim/network_dns.h) too.
struct UserNetworkPolicy {
  std::string ruleset;
  bool host_loopback = false;
  bool dns_proxy = false;
  net::EgressPolicy rules;             // the box's, for the proxy's judgement
  std::vector<std::string> upstreams;  // where the proxy forwards
};

class Network {
 public:
  // Stops the helper and removes its API socket (it runs in an empty root
  // of its own, so it cannot remove the socket itself).
  ~Network();

  // Readable when the helper exits.
  int pidfd() const { return helper_.pidfd(); }
  // After pidfd() became readable: reaps the helper (so it never lingers as
  // a zombie) and says how it ended ("was killed by signal 9").
  std::string reap();
  // Starts the helper again into the same namespace: it attaches to the
  // same tap0 (persistent, still configured) and the ports are published
  // again. Connections the box had are lost.
  Result<void> restart();
  // With start_user_network(..., defer_ready): waits until the helper is
  // ready and publishes the ports. A no-op once done.
  Result<void> await_ready();

 private:
  friend Result<std::unique_ptr<Network>> start_user_network(NetnsFds ns, const std::string& box_dir,
                                                             const std::vector<PortMapping>& ports,
                                                             UserNetworkPolicy policy, bool defer_ready);
  Network(NetnsFds ns, std::string box_dir, std::vector<PortMapping> ports, UserNetworkPolicy policy)
      : ns_(std::move(ns)), box_dir_(std::move(box_dir)), ports_(std::move(ports)), policy_(std::move(policy)) {}
  Result<void> spawn_helper();  // start_helper + await_ready
  Result<void> start_helper();
  void stop_helper();

  NetnsFds ns_;
  std::string box_dir_;
  std::vector<PortMapping> ports_;
  UserNetworkPolicy policy_;
  ChildProcess helper_;
  UniqueFd exit_w_;
  UniqueFd ready_r_;  // until the helper said it is ready
  bool tap_ = false;  // tap0 is made, persistent and configured (by the first helper)
  // Started with the ruleset, once; a restarted helper keeps it (it is
  // the shim's, not the helper's).
  std::unique_ptr<DnsProxy> dns_;
};

// Which helper --network default would use here ("" when none is installed).
std::string user_network_helper();
// Attaches to the network namespace ns and publishes ports there
// (guest_port is the port in that namespace). The API socket is
// <box_dir>/slirp.sock. With defer_ready it returns once the helper is
// started, and Network::await_ready() finishes the job: the helper's
// start-up (~3-4 ms) then overlaps the agent's own, and only the
// workload's start waits for it.
Result<std::unique_ptr<Network>> start_user_network(NetnsFds ns, const std::string& box_dir,
                                                    const std::vector<PortMapping>& ports, UserNetworkPolicy policy,
                                                    bool defer_ready);
// The policy of a box with these --allow-net / --deny-net rules (checked
// at create) in a namespace whose way out is slirp4netns's tap0; dns is the
// box's --dns (the DNS proxy's upstreams, if it has domain rules).
Result<UserNetworkPolicy> user_network_policy(const std::vector<std::string>& allow,
                                              const std::vector<std::string>& deny,
                                              const std::vector<std::string>& dns);

}  // namespace cubby::shim
