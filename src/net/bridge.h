// --network bridge (root): the kernel path. Each box gets a veth pair: its
// eth0 in the box's network namespace, the host end in a bridge of the box's
// home, with outbound NAT (nftables masquerade) and Docker-like addressing
// (the bridge is .1 of a /24, boxes .2-.254).
//
// What is made, and who removes it (a crashed shim leaves nothing for long):
//  - the address: a lease file <home>/net/lease-N the shim holds an flock on
//    for its whole life. The kernel drops the lock when the shim dies, however
//    it dies, so a crash frees the address by itself.
//  - the veth pair: deleted with the box's network namespace (a veth goes
//    with either end), which the kernel frees once the box's last process and
//    the shim's fds are gone; the shim also deletes its host end on teardown.
//  - the box's nftables table (cubby_b_<id>: its -p DNAT rules): deleted by
//    the shim on teardown, and by the reconciler for a dead shim (sweep_box).
//  - the bridge and the home's table (NAT and the default egress policy):
//    made by the first box of the home, deleted by whoever ends the last
//    one (shim or reconciler), under the home's network lock.
//
// Default egress policy (enforced on the host, outside the box): a box
// reaches the internet through NAT but not the host itself (no input from
// the bridge but replies; that covers the host's loopback and its own
// private addresses) nor link-local addresses such as the cloud metadata
// service 169.254.169.254. A box's --allow-net / --deny-net compete with
// those defaults as net/egress.h says (the most specific rule wins).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "net/egress.h"
#include "runtime/ports.h"

namespace cubby::net {

// Whether --network bridge can work here (root, `ip` and `nft` installed);
// the reason when not.
Result<void> bridge_available();

// The names of a home's network objects (stable for a home path).
struct HomeNames {
  std::string bridge;  // "cbr" + 8 hex digits of the home path's hash
  std::string table;   // nftables table "cubby_" + the same digits
};
HomeNames home_names(const std::string& home);
std::string box_veth(const std::string& box_id);   // host end: "cbv" + 12 id digits
std::string box_table(const std::string& box_id);  // nftables table: "cubby_b_" + 12 id digits

// A box's place on its home's bridge; tearing it down is detach().
class BridgeAttachment {
 public:
  BridgeAttachment() = default;
  BridgeAttachment(BridgeAttachment&& o) noexcept { *this = std::move(o); }
  BridgeAttachment& operator=(BridgeAttachment&& o) noexcept {
    if (this != &o) {
      detach();
      home_ = std::move(o.home_);
      box_id_ = std::exchange(o.box_id_, std::string());  // a moved-from one owns nothing
      address_ = std::move(o.address_);
      gateway_ = std::move(o.gateway_);
      lease_ = std::move(o.lease_);
      has_table_ = o.has_table_;
    }
    return *this;
  }
  ~BridgeAttachment() { detach(); }

  const std::string& address() const { return address_; }  // the box's, dotted
  const std::string& gateway() const { return gateway_; }  // the bridge's
  // Deletes the box's table and host veth, frees the address, and the
  // bridge with the home's table when this was its last box.
  void detach();

 private:
  friend Result<BridgeAttachment> attach_bridge(const std::string&, const std::string&, int,
                                                const std::vector<PortMapping>&, const EgressPolicy&);
  std::string home_, box_id_, address_, gateway_;
  UniqueFd lease_;
  bool has_table_ = false;  // cubby_b_<id> exists (the box publishes ports)
};

// Attaches the box whose network namespace is netns_fd to its home's bridge
// (made if needed), configures its eth0 and default route, publishes ports
// by DNAT to its address, and applies its egress policy: deny rules reject
// (anywhere), allow rules open what the default policy refuses (the host's
// own addresses, link-local), by a packet mark the home's table honours.
Result<BridgeAttachment> attach_bridge(const std::string& home, const std::string& box_id, int netns_fd,
                                       const std::vector<PortMapping>& ports, const EgressPolicy& egress = {});

// The host's /etc/resolv.conf without its loopback nameservers (a local
// stub resolver is the host's, which a box may not reach): what a bridge
// box uses. "" when nothing is left.
std::string box_resolv_conf();

// For a box whose shim died: what its BridgeAttachment::detach would have
// done. Quiet and harmless when the box never had a bridge network.
void sweep_box(const std::string& home, const std::string& box_id);

}  // namespace cubby::net
