// --network bridge (root, sandbox backend): a veth pair into the home's
// bridge with NAT. Boxes reach out (a test host of our own in a network
// namespace), not the host itself; each has its own address; -p works by
// DNAT; and what a box adds to the host (its veth, its nftables table, the
// bridge and the home's table when it was the last box) goes with it, also
// when its shim is killed with SIGKILL (the reconciler sweeps).
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <tuple>
#include <cstring>

#include <nlohmann/json.hpp>

#include "base/process.h"
#include "base/sys.h"
#include "harness.h"
#include "net/bridge.h"
#include "test_hosts.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

bool link_exists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

// Whether nftables has the table `FAMILY NAME` (nft list exits non-zero if not).
bool table_exists(const std::string& name, const std::string& family = "ip") {
  SpawnSpec s;
  s.argv = {"/usr/sbin/nft", "list", "table", family, name};
  s.fds = {-1, -1, -1};
  auto c = spawn(s);
  if (!c) return false;
  auto st = c->wait();
  return st && !st->signaled && st->code == 0;
}

class Bridge : public BoxTest {
 protected:
  void SetUp() override {
    if (auto ok = net::bridge_available(); !ok) GTEST_SKIP() << ok.error().message();
    BoxTest::SetUp();
    names_ = net::home_names(home_);
  }
  // Nothing of this home's network is left on the host.
  void expect_no_network_left(const std::string& id) {
    EXPECT_FALSE(link_exists(net::box_veth(id))) << "the box's veth outlived it";
    EXPECT_FALSE(table_exists(net::box_table(id))) << "the box's nftables table outlived it";
    EXPECT_FALSE(table_exists(net::box_table(id), "bridge")) << "the box's anti-spoofing table outlived it";
    EXPECT_FALSE(link_exists(names_.bridge)) << "the idle bridge was left";
    EXPECT_FALSE(table_exists(names_.table)) << "the idle bridge's NAT table was left";
  }
  net::HomeNames names_;
};

// Out through NAT to a "public" host; never to the host itself: not a
// service on all its addresses (reached at the bridge's own address), not
// link-local metadata (a test host standing in for 169.254.169.254, which
// this host does reach).
TEST_F(Bridge, ReachesOutButNotTheHostNorMetadata) {
  TestHost remote_host;
  ASSERT_TRUE(remote_host.ok());
  HttpResponder remote(remote_host.listen_tcp(), "hello-from-a-remote-host");
  HttpResponder host(listen_any_tcp(), "hello-from-the-host");
  TestHost metadata_host;
  ASSERT_TRUE(metadata_host.ok() && metadata_host.also_at("169.254.169.254"));
  HttpResponder metadata(metadata_host.listen_tcp("169.254.169.254"), "hello-from-metadata");
  std::string md_url = "http://169.254.169.254:" + std::to_string(metadata.port()) + "/";
  {  // the stand-in answers the host: what refuses the box below is the policy
    UniqueFd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(metadata.port()));
    ::inet_pton(AF_INET, "169.254.169.254", &a.sin_addr);
    ASSERT_EQ(::connect(c.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << std::strerror(errno);
  }
  std::string out_url = "http://" + remote_host.address() + ":" + std::to_string(remote.port()) + "/";
  // The gateway (the bridge's address) is the host: its own address.
  std::string script = "gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); echo \"gw=$gw\"; "
                       "timeout 30 wget -q -O - " + out_url + "; echo \" out=$?\"; "
                       "timeout 5 wget -q -O - http://$gw:" + std::to_string(host.port()) + "/; echo \" host=$?\"; "
                       "timeout 5 wget -q -O - " + md_url + "; echo \" metadata=$?\"; "
                       "ip -4 addr show eth0 | grep -q 'inet 10\\.2' && echo addr-ok";
  auto r = cubby({"run", "--rm", "--isolation", "sandbox", "--network", "bridge", image_, "sh", "-c", script});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("hello-from-a-remote-host out=0"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("hello-from-the-host"), std::string::npos) << "the box reached the host: " << r.out;
  EXPECT_EQ(r.out.find(" host=0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("addr-ok"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("hello-from-metadata"), std::string::npos) << "the box reached metadata: " << r.out;
  EXPECT_NE(r.out.find(" metadata=1"), std::string::npos) << r.out;
  EXPECT_EQ(host.served(), 0);
  EXPECT_EQ(metadata.served(), 1);  // (the host's own connect above)
  EXPECT_EQ(remote.served(), 1);
  expect_no_network_left("");  // (no box id: only the home's objects matter here)
}

// Two boxes, two addresses; -p 127.0.0.1::PORT reaches the box by DNAT.
TEST_F(Bridge, EachBoxHasItsOwnAddressAndPublishedPortsWork) {
  auto a = cubby({"run", "-d", "--isolation", "sandbox", "--network", "bridge", "-p", "127.0.0.1::8080", image_,
                  "sleep", "1000000"});
  ASSERT_EQ(a.rc, 0) << a.err;
  std::string ida = a.out.substr(0, 32);
  auto b = cubby({"run", "-d", "--isolation", "sandbox", "--network", "bridge", image_, "sleep", "1000000"});
  ASSERT_EQ(b.rc, 0) << b.err;
  std::string idb = b.out.substr(0, 32);
  auto addr = [&](const std::string& id) {
    return cubby({"exec", id, "sh", "-c", "ip -4 addr show eth0 | sed -n 's/.*inet \\([0-9.]*\\).*/\\1/p'"}).out;
  };
  std::string aa = addr(ida), ab = addr(idb);
  EXPECT_FALSE(aa.empty());
  EXPECT_NE(aa, ab) << "two boxes share an address";
  EXPECT_TRUE(link_exists(net::box_veth(ida)));
  EXPECT_TRUE(link_exists(names_.bridge));
  int port = std::stoi(cubby({"port", ida, "8080"}).out.substr(10));
  ASSERT_EQ(cubby({"exec", ida, "sh", "-c", "mkdir -p /www && echo from-the-bridge-box > /www/i && httpd -p 8080 -h /www"}).rc, 0);
  auto get = run_cubby(home_, {"exec", idb, "true"});  // (the other box stays up meanwhile)
  EXPECT_EQ(get.rc, 0);
  // The host's own client, to 127.0.0.1:port: DNAT to the box's address.
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
  std::string req = "GET /i HTTP/1.0\r\n\r\n", reply;
  ASSERT_TRUE(sys::write_all(s.get(), req.data(), req.size()));
  char buf[4096];
  while (sys::wait_readable(s.get(), 30s).value_or(false)) {  // backstop only
    ssize_t n = ::read(s.get(), buf, sizeof buf);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  EXPECT_NE(reply.find("from-the-bridge-box"), std::string::npos) << reply;
  ASSERT_EQ(cubby({"rm", "-f", ida}).rc, 0);
  EXPECT_FALSE(link_exists(net::box_veth(ida)));
  EXPECT_FALSE(table_exists(net::box_table(ida)));
  EXPECT_TRUE(link_exists(names_.bridge)) << "the bridge went while a box still uses it";
  ASSERT_EQ(cubby({"rm", "-f", idb}).rc, 0);
  expect_no_network_left(idb);
}

// A shim killed with SIGKILL cannot tear anything down: its box's veth goes
// with the box's namespace, its address with the shim's lock, and the next
// cubby call's reconciler removes its table and the idle bridge.
TEST_F(Bridge, KilledShimLeavesNoVethRuleOrAddress) {
  auto run = cubby({"run", "-d", "--isolation", "sandbox", "--network", "bridge", "-p", "127.0.0.1::8080", image_,
                    "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  ASSERT_TRUE(link_exists(net::box_veth(id)));
  ASSERT_TRUE(table_exists(net::box_table(id)));
  ASSERT_TRUE(table_exists(names_.table));
  std::string first = cubby({"exec", id, "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'"}).out;
  pid_t shim = shim_pid(id);
  auto fd = sys::pidfd_open(shim).value();
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  ASSERT_TRUE(sys::wait_readable(fd.get(), 10s).value());
  reap_adopted();
  EXPECT_EQ(status(id), "exited");  // reconciled, and swept
  EXPECT_FALSE(table_exists(net::box_table(id))) << "a dead shim's DNAT rules were left";
  EXPECT_FALSE(table_exists(names_.table));
  EXPECT_FALSE(link_exists(names_.bridge));
  // The address is free again: the next box gets the same one.
  auto again = cubby({"run", "--rm", "--isolation", "sandbox", "--network", "bridge", image_, "sh", "-c",
                      "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'"});
  EXPECT_EQ(again.rc, 0) << again.err;
  EXPECT_EQ(again.out, first) << "the dead box's address was not freed";
  // Its veth went with its namespace, or the sweep deleted it.
  expect_no_network_left(id);
  ASSERT_EQ(cubby({"rm", id}).rc, 0);
}

// --deny-net refuses a host the default lets through; --allow-net opens
// what the default refuses (metadata, here its stand-in); both in inspect.
TEST_F(Bridge, AllowAndDenyRulesAreEnforcedOutsideTheBox) {
  TestHost open_host, denied_host, metadata_host;
  ASSERT_TRUE(open_host.ok() && denied_host.ok() && metadata_host.ok());
  ASSERT_TRUE(metadata_host.also_at("169.254.169.254"));
  HttpResponder open(open_host.listen_tcp(), "hello-from-an-open-host");
  HttpResponder denied(denied_host.listen_tcp(), "hello-from-a-denied-host");
  HttpResponder metadata(metadata_host.listen_tcp("169.254.169.254"), "hello-from-metadata");
  auto url = [](const std::string& ip, int port) { return "http://" + ip + ":" + std::to_string(port) + "/"; };
  std::string script = "timeout 30 wget -q -O - " + url(open_host.address(), open.port()) + "; echo \" open=$?\"; " +
                       "timeout 5 wget -q -O - " + url(denied_host.address(), denied.port()) + "; echo \" denied=$?\"; " +
                       "timeout 30 wget -q -O - " + url("169.254.169.254", metadata.port()) + "; echo \" metadata=$?\"";
  auto r = cubby({"run", "--name", "ruled", "--isolation", "sandbox", "--network", "bridge", "--deny-net",
                  denied_host.address(), "--allow-net", "169.254.169.254:" + std::to_string(metadata.port()), image_,
                  "sh", "-c", script});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("hello-from-an-open-host open=0"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("hello-from-a-denied-host"), std::string::npos) << "--deny-net let it through: " << r.out;
  EXPECT_NE(r.out.find(" denied=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hello-from-metadata metadata=0"), std::string::npos) << "--allow-net did not open it: " << r.out;
  EXPECT_EQ(denied.served(), 0);
  auto j = nlohmann::json::parse(cubby({"inspect", "ruled"}).out);
  EXPECT_EQ(j["config"]["deny_net"], nlohmann::json::array({denied_host.address() + "/32"})) << j["config"];
  EXPECT_EQ(j["config"]["allow_net"], nlohmann::json::array({"169.254.169.254/32:" + std::to_string(metadata.port())}));
  ASSERT_EQ(cubby({"rm", "ruled"}).rc, 0);
  expect_no_network_left(j["id"].get<std::string>());
}

// host.cubby.internal names the host (the bridge's gateway) in the box; the
// box reaches it only where --allow-net host.cubby.internal[:PORT] lets it.
TEST_F(Bridge, HostCubbyInternalReachesTheHostOnlyWhereAllowed) {
  HttpResponder host(listen_any_tcp(), "hello-from-the-host");
  std::string port = std::to_string(host.port());
  std::string get = "getent hosts host.cubby.internal || grep host.cubby.internal /etc/hosts; "
                    "timeout 5 wget -q -O - http://host.cubby.internal:" + port + "/; echo \" host=$?\"";
  auto refused = cubby({"run", "--rm", "--isolation", "sandbox", "--network", "bridge", image_, "sh", "-c", get});
  EXPECT_EQ(refused.rc, 0) << refused.err;
  EXPECT_NE(refused.out.find("host.cubby.internal"), std::string::npos) << refused.out;
  EXPECT_EQ(refused.out.find("hello-from-the-host"), std::string::npos) << "reached the host unasked: " << refused.out;
  auto allowed = cubby({"run", "--rm", "--isolation", "sandbox", "--network", "bridge", "--allow-net",
                        "host.cubby.internal:" + port, image_, "sh", "-c", get});
  EXPECT_EQ(allowed.rc, 0) << allowed.err;
  EXPECT_NE(allowed.out.find("hello-from-the-host host=0"), std::string::npos) << allowed.out << allowed.err;
  EXPECT_EQ(host.served(), 1);
  expect_no_network_left("");
}

TEST_F(Bridge, BadRulesAreOneClearErrorEach) {
  for (const auto& [flag, rule, why] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"--allow-net", "example.com", "needs --network default"},  // names need the box's DNS proxy
           {"--deny-net", "10.0.0.0/33", "prefix length"},
           {"--deny-net", "10.0.0.1:0", "port"},
           {"--allow-net", "10.0.0.1:70000", "port"},
           {"--allow-net", "300.1.1.1", "IPv4"}}) {
    auto r = cubby({"create", "--isolation", "sandbox", "--network", "bridge", flag, rule, image_, "true"});
    EXPECT_EQ(r.rc, 125) << rule;
    ASSERT_EQ(r.err_lines().size(), 1u) << rule << ": " << r.err;
    EXPECT_NE(r.err.find(why), std::string::npos) << rule << ": " << r.err;
  }
  auto none = cubby({"create", "--isolation", "sandbox", "--network", "none", "--allow-net", "10.0.0.0/8", image_, "true"});
  EXPECT_EQ(none.rc, 125);
  EXPECT_NE(none.err.find("need a network"), std::string::npos) << none.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "a refused create left a box";
}

TEST_F(Bridge, BadNetworkAndTheVmBackendAreOneClearError) {
  auto bad = cubby({"create", "--isolation", "sandbox", "--network", "bridgex", image_, "true"});
  EXPECT_EQ(bad.rc, 125);
  EXPECT_EQ(bad.err_lines().size(), 1u) << bad.err;
  auto vm = cubby({"run", "--rm", "--isolation", "vm", "--network", "bridge", image_, "true"});
  EXPECT_EQ(vm.rc, 125);
  EXPECT_EQ(vm.err_lines().size(), 1u) << vm.err;
}

}  // namespace
}  // namespace cubby::test
