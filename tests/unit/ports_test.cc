// -p parsing: Docker's [IP:][HOST:]GUEST[/proto] forms, ranges, and the
// refusals (each a single message naming the value).
#include <gtest/gtest.h>

#include "runtime/ports.h"

namespace cubby {
namespace {

TEST(ParsePublish, DockerForms) {
  auto one = parse_publish("8080:80");
  ASSERT_TRUE(one);
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(to_string((*one)[0]), "0.0.0.0:8080->80/tcp");

  auto ip = parse_publish("127.0.0.1:8080:80/udp");
  ASSERT_TRUE(ip);
  EXPECT_EQ(to_string((*ip)[0]), "127.0.0.1:8080->80/udp");

  auto guest_only = parse_publish("80");
  ASSERT_TRUE(guest_only);
  EXPECT_EQ((*guest_only)[0].host_port, 0);  // picked at create
  auto empty_host = parse_publish("127.0.0.1::80");
  ASSERT_TRUE(empty_host);
  EXPECT_EQ((*empty_host)[0].host_ip, "127.0.0.1");
  EXPECT_EQ((*empty_host)[0].host_port, 0);

  auto range = parse_publish("8000-8002:9000-9002");
  ASSERT_TRUE(range);
  ASSERT_EQ(range->size(), 3u);
  EXPECT_EQ(to_string((*range)[2]), "0.0.0.0:8002->9002/tcp");
}

TEST(ParsePublish, Refusals) {
  for (const char* bad : {"", "x", "0", "65536", "80/sctp", "1:2:3:4", "[::1]:80:80", "1.2.3:80:80", "90-80:80",
                          "8000-8002:80-81", "8080:", ":80x", "-1:80"}) {
    auto r = parse_publish(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find(std::string("\"") + bad + "\""), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().message().find('\n'), std::string::npos);
  }
}

TEST(AssignHostPorts, PicksFreePortsAndRefusesDuplicates) {
  auto a = parse_publish("127.0.0.1::80");
  auto b = parse_publish("127.0.0.1::81/udp");
  ASSERT_TRUE(a && b);
  std::vector<PortMapping> ports = {(*a)[0], (*b)[0]};
  ASSERT_TRUE(assign_host_ports(ports));
  EXPECT_NE(ports[0].host_port, 0);
  EXPECT_NE(ports[1].host_port, 0);
  EXPECT_TRUE(check_host_port_free(ports[0]));

  auto dup = parse_publish("127.0.0.1:18999:80");
  auto dup2 = parse_publish("127.0.0.1:18999:81");
  std::vector<PortMapping> twice = {(*dup)[0], (*dup2)[0]};
  auto r = assign_host_ports(twice);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("published twice"), std::string::npos);
}

}  // namespace
}  // namespace cubby
