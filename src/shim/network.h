// --network default for the sandbox backend: user-mode networking with
// slirp4netns (or pasta where slirp4netns is missing) attached to the box's
// network namespace, giving a tap0 with outbound NAT (10.0.2.0/24, DNS at
// 10.0.2.3). The helper dies with the shim (PDEATHSIG, and its exit fd).
// Published ports (-p) are added through slirp4netns' API socket, so the
// host side of each is a socket of the helper: it goes when the helper does.
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
// The API socket is <box_dir>/slirp.sock.
Result<std::unique_ptr<Network>> start_user_network(pid_t box_pid, const std::string& box_dir,
                                                    const std::vector<PortMapping>& ports);

}  // namespace cubby::shim
