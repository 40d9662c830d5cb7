// --add-host and --dns: what a box's /etc/hosts and /etc/resolv.conf get.
// Checked at create (one clear error each), turned into file lines by the
// shim, written by the agent (both backends).
#pragma once

#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::net {

// The host's name in a box (as Docker's host.docker.internal): the bridge's
// gateway, which the box reaches only where --allow-net lets it.
inline constexpr const char* kHostName = "host.cubby.internal";

// "NAME:IP" (IPv4 or IPv6; the name as for --hostname) -> "IP\tNAME".
Result<std::string> parse_add_host(const std::string& text);
// An IPv4 or IPv6 address, as given.
Result<std::string> parse_dns_server(const std::string& text);
// The box's resolv.conf: the --dns servers; else, for --network bridge, the
// host's own servers but loopback ones; "" to keep the network's default.
std::string resolv_conf_for(const std::vector<std::string>& dns, bool bridge);

}  // namespace cubby::net
