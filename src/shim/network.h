// --network default: user-mode networking with slirp4netns attached to a
// network namespace, giving it a tap0 with outbound NAT (10.0.2.100 in
// 10.0.2.0/24, DNS at 10.0.2.3). The namespace is the box's own (sandbox
// backend) or QEMU's (vm backend: QEMU's slirp connects out from there).
// Either way the host's loopback is refused (--disable-host-loopback): a box
// reaches the host's 127.0.0.1 services no more than any remote peer would.
// The helper parses what the box sends, so it runs confined: its own empty
// root (--enable-sandbox: a new mount namespace, pivot_root, every capability
// dropped but CAP_NET_BIND_SERVICE) and a seccomp filter (--enable-seccomp).
// It stays uid 0 to join the namespace and open its tap, and drops the rest
// before it reads a packet. It dies with the shim (PDEATHSIG, and its exit
// fd). Published ports (-p) are added through its API socket, so the host
// side of each is a socket of the helper: it goes when the helper does.
#pragma once

#include <memory>
#include <vector>

#include "base/error.h"
#include "base/process.h"
#include "runtime/ports.h"

namespace cubby::shim {

class Network {
 public:
  explicit Network(ChildProcess helper, UniqueFd exit_w) : helper_(std::move(helper)), exit_w_(std::move(exit_w)) {}
  ~Network();

 private:
  ChildProcess helper_;
  UniqueFd exit_w_;
};

// Which helper --network default would use here ("" when none is installed).
std::string user_network_helper();
// Attaches to the network namespace of netns_pid and publishes ports there
// (guest_port is the port in that namespace). The API socket is
// <box_dir>/slirp.sock.
Result<std::unique_ptr<Network>> start_user_network(pid_t netns_pid, const std::string& box_dir,
                                                    const std::vector<PortMapping>& ports);

}  // namespace cubby::shim
