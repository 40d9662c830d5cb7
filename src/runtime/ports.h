// Published ports: `-p [IP:][HOST:]GUEST[/tcp|udp]`, Docker's syntax.
//
// A mapping is parsed and its host port fixed when the box is created (an
// empty HOST takes a free port from the kernel then), so `inspect` and
// `cubby port` can say where a port is before the box ever starts. The shim
// turns mappings into forwarding rules of the box's user-mode network:
// slirp4netns' add_hostfwd, into the box's network namespace (sandbox) or
// into QEMU's, where QEMU's hostfwd takes it on to the guest (vm). Either
// way the host side is a socket of slirp4netns in the host's network
// namespace, which dies with the shim (guarantee 3: ports are freed when
// the box ends).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace cubby {

struct PortMapping {
  std::string host_ip = "0.0.0.0";  // Docker's default: every host address
  uint16_t host_port = 0;           // 0 until a free port is picked
  uint16_t guest_port = 0;
  std::string proto = "tcp";        // tcp | udp
};

inline void to_json(nlohmann::json& j, const PortMapping& p) {
  j = {{"host_ip", p.host_ip}, {"host_port", p.host_port}, {"guest_port", p.guest_port}, {"proto", p.proto}};
}
inline void from_json(const nlohmann::json& j, PortMapping& p) {
  p.host_ip = j.value("host_ip", std::string("0.0.0.0"));
  p.host_port = j.at("host_port").get<uint16_t>();
  p.guest_port = j.at("guest_port").get<uint16_t>();
  p.proto = j.value("proto", std::string("tcp"));
}

// One -p value; a range ("8000-8001:80-81") gives one mapping per port.
Result<std::vector<PortMapping>> parse_publish(std::string_view spec);

// "0.0.0.0:8080->80/tcp", as `docker ps` shows it.
std::string to_string(const PortMapping& p);

// Gives every mapping with host_port 0 a port that is free now, and
// refuses two mappings of one host address, port and protocol.
Result<void> assign_host_ports(std::vector<PortMapping>& ports);

// Whether the host port can be bound now: one clear error when another
// process holds it, instead of a helper's failure deep in the start.
Result<void> check_host_port_free(const PortMapping& p);

}  // namespace cubby
