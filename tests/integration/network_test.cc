// --network default on both backends: outbound traffic works, the host's
// loopback is refused, the helpers that parse the box's traffic run confined,
// and published ports (-p) work. The host side of a published port is a
// socket of the box's slirp4netns (added through its API; for vm it forwards
// into QEMU's network namespace, and QEMU's hostfwd on to the guest), so it
// reaches the box while the box runs and is free again once the box is gone.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "test_hosts.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

// An HTTP/1.0 GET to 127.0.0.1:port; the whole reply, or "" on failure.
std::string http_get(int port, const std::string& path) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  if (!sys::write_all(s.get(), req.data(), req.size())) return "";
  std::string out;
  char buf[4096];
  for (;;) {
    auto ready = sys::wait_readable(s.get(), 30s);  // backstop only
    if (!ready || !*ready) return out;
    ssize_t n = ::read(s.get(), buf, sizeof buf);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// Whether a listener can take 127.0.0.1:port (connections of the box's
// server may linger in TIME_WAIT; those don't hold it).
bool port_is_free(int port) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

// Both backends' --network default runs slirp4netns (vm: as the uplink of
// QEMU's network namespace).
class Ports : public BackendTest {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/slirp4netns", X_OK) != 0) GTEST_SKIP() << "slirp4netns is not installed";
    BackendTest::SetUp();
  }
};

using UserNetwork = Ports;

// Outbound connections work (to a host of our own in a network namespace),
// and the host's loopback is refused: slirp's 10.0.2.2 is the host's
// 127.0.0.1 unless the helper refuses it (QEMU's slirp did not, so a vm box
// reached every loopback-only service of the host).
TEST_P(UserNetwork, ReachesOutButNeverTheHostsLoopback) {
  TestHost remote_host;
  ASSERT_TRUE(remote_host.ok());
  HttpResponder remote(remote_host.listen_tcp(), "hello-from-a-remote-host");
  HttpResponder loopback(listen_loopback_tcp(), "hello-from-the-hosts-loopback");
  std::string out_url = "http://" + remote_host.address() + ":" + std::to_string(remote.port()) + "/";
  std::string lo_url = "http://10.0.2.2:" + std::to_string(loopback.port()) + "/";
  // timeout: a backstop (a refused connect fails at once); not wget -T,
  // which makes busybox 1.35's wget crash on a refused connect.
  auto r = cubby({"run", "--rm", "--isolation", GetParam(), image_, "sh", "-c",
                  "timeout 30 wget -q -O - " + out_url + "; echo \" out=$?\"; timeout 30 wget -q -O - " + lo_url +
                      "; echo \" loopback=$?\""});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("hello-from-a-remote-host out=0"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("hello-from-the-hosts-loopback"), std::string::npos) << "the box reached the host's loopback";
  EXPECT_NE(r.out.find(" loopback=1"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(loopback.served(), 0);
  EXPECT_EQ(remote.served(), 1);
}

std::string status_field(pid_t pid, const std::string& key) {
  std::string st = read_file("/proc/" + std::to_string(pid) + "/status").value_or("");
  auto at = st.find("\n" + key + ":");
  if (at == std::string::npos) return "?";
  at = st.find_first_not_of(" \t", at + key.size() + 2);
  return st.substr(at, st.find('\n', at) - at);
}

std::string ns_of(pid_t pid, const char* ns) {
  char buf[64] = {};
  std::string path = (pid ? "/proc/" + std::to_string(pid) : std::string("/proc/self")) + "/ns/" + ns;
  return ::readlink(path.c_str(), buf, sizeof buf - 1) > 0 ? buf : "?";
}

// A seccomp filter, no_new_privs, and no capability but `caps` (effective
// and bounding set, as /proc shows them).
void expect_confined(const char* what, pid_t pid, const std::string& caps) {
  EXPECT_EQ(status_field(pid, "Seccomp"), "2") << what;
  EXPECT_EQ(status_field(pid, "NoNewPrivs"), "1") << what;
  EXPECT_EQ(status_field(pid, "CapEff"), caps) << what;
  EXPECT_EQ(status_field(pid, "CapBnd"), caps) << what;
}

pid_t child_named(pid_t parent, const std::string& name) {
  for (pid_t c : children_of(parent)) {
    auto argv = process_argv(c);
    if (argv && !argv->empty() && (*argv)[0].substr((*argv)[0].rfind('/') + 1) == name) return c;
  }
  return -1;
}

// slirp4netns and QEMU parse what the box sends; they run confined, and the
// box's network and -p still work.
TEST_P(UserNetwork, HelpersThatParseBoxTrafficRunConfined) {
  auto run = cubby({"run", "-d", "--isolation", GetParam(), "-p", "127.0.0.1::8080", image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  pid_t shim = shim_pid(id);
  pid_t slirp = child_named(shim, "slirp4netns");
  ASSERT_GT(slirp, 0) << "no slirp4netns under the shim";
  // --enable-sandbox: its own mount namespace (an empty root), no capability
  // but CAP_NET_BIND_SERVICE (bit 10, for -p below 1024); --enable-seccomp.
  expect_confined("slirp4netns", slirp, "0000000000000400");
  EXPECT_NE(ns_of(slirp, "mnt"), ns_of(0, "mnt"));
  EXPECT_NE(::access(("/proc/" + std::to_string(slirp) + "/root/usr").c_str(), F_OK), 0)
      << "slirp4netns still sees the host's tree";
  if (GetParam() == "vm") {
    pid_t qemu = child_named(shim, "qemu-system-x86_64");
    ASSERT_GT(qemu, 0) << "no QEMU under the shim";
    expect_confined("qemu", qemu, "0000000000000000");
    std::string uid = std::to_string(0x70000000 + shim);  // its own ids: no other process shares them
    EXPECT_EQ(status_field(qemu, "Uid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
    EXPECT_EQ(status_field(qemu, "Gid"), uid + "\t" + uid + "\t" + uid + "\t" + uid);
    EXPECT_EQ(status_field(qemu, "Groups"), "");
    EXPECT_NE(ns_of(qemu, "net"), ns_of(0, "net")) << "QEMU must not share the host's network namespace";
  }
  auto port = cubby({"port", id, "8080"});
  ASSERT_EQ(port.rc, 0) << port.err;
  int host_port = std::stoi(port.out.substr(10));
  auto serve = cubby({"exec", id, "sh", "-c", "mkdir /www && echo served-confined > /www/i && httpd -p 8080 -h /www"});
  ASSERT_EQ(serve.rc, 0) << serve.err;
  EXPECT_NE(http_get(host_port, "/i").find("served-confined"), std::string::npos);
  ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_P(Ports, PublishedPortReachesTheBoxAndIsFreedWithIt) {
  // An empty host port: a free one is picked at create and shown by `port`.
  auto run = cubby({"run", "-d", "--isolation", GetParam(), "-p", "127.0.0.1::8080", image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  auto port = cubby({"port", id, "8080"});
  ASSERT_EQ(port.rc, 0) << port.err;
  ASSERT_EQ(port.out.rfind("127.0.0.1:", 0), 0u) << port.out;
  int host_port = std::stoi(port.out.substr(10));
  // busybox httpd forks into the background once it listens, so the exec
  // returning is the readiness event.
  auto serve = cubby({"exec", id, "sh", "-c", "mkdir -p /www && echo hello-from-the-box > /www/index.html && httpd -p 8080 -h /www"});
  ASSERT_EQ(serve.rc, 0) << serve.err;
  EXPECT_NE(http_get(host_port, "/index.html").find("hello-from-the-box"), std::string::npos);
  auto all = cubby({"port", id});
  EXPECT_EQ(all.out, "8080/tcp -> 127.0.0.1:" + std::to_string(host_port) + "\n");
  EXPECT_FALSE(port_is_free(host_port)) << "the published port is not held while the box runs";
  ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
  EXPECT_TRUE(port_is_free(host_port)) << "the published port outlived its box";
}

TEST_P(Ports, PortHeldByAnotherProcessIsOneClearError) {
  UniqueFd holder(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(holder.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(holder.get(), 1), 0);
  ASSERT_EQ(::getsockname(holder.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  std::string spec = "127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + ":80";
  auto r = cubby({"run", "--rm", "--isolation", GetParam(), "-p", spec, image_, "true"});
  EXPECT_EQ(r.rc, 125);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("already in use"), std::string::npos) << r.err;
}

// How many lines of the box's shim.log contain `text`.
int lines_with(const std::string& path, const std::string& text) {
  std::string log = read_file(path).value_or("");
  int n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

// Waits, by inotify, until shim.log has `count` lines containing `text`.
bool await_lines(const std::string& path, const std::string& text, int count) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (::inotify_add_watch(in.get(), path.c_str(), IN_MODIFY) < 0) return false;
  while (lines_with(path, text) < count) {
    if (!sys::wait_readable(in.get(), 60s).value_or(false)) return false;  // backstop
    char buf[4096];
    while (::read(in.get(), buf, sizeof buf) > 0) {
    }
  }
  return true;
}

// Neither running nor left as a zombie.
bool gone_for_good(pid_t pid) {
  auto st = process_stat(pid);
  return !st || st->state != 'Z';  // (a reused pid would not be a zombie of ours)
}

// A killed slirp4netns is reaped at once and started again into the box's
// namespace: outbound traffic and the published port work again. Past the
// bound on restarts, the box ends with the reason (125): a box is never
// `running` without its network.
TEST_P(UserNetwork, KilledHelperIsReapedAndStartedAgainThenTheBoxEndsWithTheReason) {
  TestHost remote_host;
  ASSERT_TRUE(remote_host.ok());
  HttpResponder remote(remote_host.listen_tcp(), "hello-from-a-remote-host");
  std::string out_url = "http://" + remote_host.address() + ":" + std::to_string(remote.port()) + "/";
  auto run = cubby({"run", "-d", "--isolation", GetParam(), "-p", "127.0.0.1::8080", image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  int host_port = std::stoi(cubby({"port", id, "8080"}).out.substr(10));
  // busybox httpd forks into the background once it listens.
  ASSERT_EQ(cubby({"exec", id, "sh", "-c", "mkdir -p /www && echo from-the-box > /www/i && httpd -p 8080 -h /www"}).rc, 0);
  auto reachable = [&] {
    auto out = cubby({"exec", id, "timeout", "30", "wget", "-q", "-O", "-", out_url});
    EXPECT_EQ(out.out, "hello-from-a-remote-host") << out.err;
    EXPECT_NE(http_get(host_port, "/i").find("from-the-box"), std::string::npos) << "the published port is lost";
  };
  reachable();
  pid_t shim = shim_pid(id);
  std::string log = home_ + "/boxes/" + id + "/shim.log";
  for (int round = 1; round <= 6; ++round) {
    SCOPED_TRACE("kill " + std::to_string(round));
    pid_t slirp = child_named(shim, "slirp4netns");
    ASSERT_GT(slirp, 0) << "no slirp4netns under the shim";
    auto fd = sys::pidfd_open(slirp).value();
    ASSERT_EQ(::kill(slirp, SIGKILL), 0);
    ASSERT_TRUE(sys::wait_readable(fd.get(), 10s).value());
    if (round == 6) break;
    ASSERT_TRUE(await_lines(log, "network is back", round)) << read_file(log).value_or("");
    EXPECT_TRUE(gone_for_good(slirp)) << "the killed slirp4netns is a zombie";
    pid_t again = child_named(shim, "slirp4netns");
    EXPECT_GT(again, 0);
    EXPECT_NE(again, slirp);
    expect_confined("restarted slirp4netns", again, "0000000000000400");
    if (round == 1) reachable();
  }
  // The sixth death is one too many: the box ends, saying why.
  auto w = cubby({"wait", id});
  EXPECT_EQ(w.rc, 0) << w.err;
  auto j = nlohmann::json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["status"], "exited");
  EXPECT_EQ(j["exit_code"], 125);
  EXPECT_NE(j["error"].get<std::string>().find("slirp4netns was killed by signal 9"), std::string::npos) << j["error"];
  EXPECT_NE(j["error"].get<std::string>().find("after 5 restarts"), std::string::npos) << j["error"];
  // And `cubby logs` says what happened, on stderr.
  auto logs = cubby({"logs", id});
  EXPECT_NE(logs.err.find("cubby: the box's network helper slirp4netns was killed by signal 9"), std::string::npos)
      << logs.err;
  reap_adopted();
  EXPECT_TRUE(port_is_free(host_port)) << "the published port outlived its box";
  ASSERT_EQ(cubby({"rm", id}).rc, 0);
}

// The helper's start-up overlaps the agent's, but the workload starts only
// once the box's network is up: its first instruction finds the route.
TEST_P(UserNetwork, WorkloadStartsWithItsNetwork) {
  for (int i = 0, rounds = GetParam() == "vm" ? 1 : 5; i < rounds; ++i) {  // (a vm boot is seconds)
    auto r = cubby({"run", "--rm", "--isolation", GetParam(), image_, "sh", "-c",
                    "ip route | grep -q '^default' && echo has-route"});
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, "has-route\n") << "the workload started before its network";
  }
}

// --add-host lands in /etc/hosts and --dns in /etc/resolv.conf (over the
// network's own server), on both backends; bad values are one line each.
TEST_P(UserNetwork, AddHostAndDnsReachTheBoxsFiles) {
  auto r = cubby({"run", "--rm", "--isolation", GetParam(), "--add-host", "db.internal:192.0.2.55", "--add-host",
                  "v6.internal:2001:db8::5", "--dns", "192.0.2.53", image_, "sh", "-c",
                  "cat /etc/hosts /etc/resolv.conf"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("192.0.2.55\tdb.internal\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2001:db8::5\tv6.internal\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nameserver 192.0.2.53\n"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("10.0.2.3"), std::string::npos) << "--dns did not replace slirp's server: " << r.out;
  for (const auto& bad : std::vector<std::vector<std::string>>{
           {"--add-host", "nocolon"}, {"--add-host", "bad_name:1.2.3.4"}, {"--add-host", "x:1.2.3"}, {"--dns", "dns.example"}}) {
    auto b = cubby({"create", "--isolation", GetParam(), bad[0], bad[1], image_, "true"});
    EXPECT_EQ(b.rc, 125) << bad[1];
    EXPECT_EQ(b.err_lines().size(), 1u) << bad[1] << ": " << b.err;
  }
}

std::string url(const std::string& ip, int port) { return "http://" + ip + ":" + std::to_string(port) + "/"; }

// "timeout T wget URL; echo ' NAME=$?'": the box's view of one destination
// (a refused connect fails at once; the timeout is a backstop).
std::string fetch(const std::string& name, const std::string& u, int timeout = 30) {
  return "timeout " + std::to_string(timeout) + " wget -q -O - " + u + "; echo \" " + name + "=$?\"; ";
}

// Whether the host's own network namespace has a table named cubby in
// `family` (a box's policy loaded in the wrong namespace would be one).
bool host_has_cubby_table(const std::string& family) {
  SpawnSpec s;
  s.argv = {"/usr/sbin/nft", "list", "table", family, "cubby"};
  s.fds = {-1, -1, -1};
  auto c = spawn(s);
  auto st = c ? c->wait() : Result<ExitStatus>(fail(Error::internal("spawn nft")));
  return st && !st->signaled && st->code == 0;
}

// By default a box on --network default reaches the internet (a test host
// of our own) but not the host itself: a service on all of the host's
// addresses, reached at one of them (slirp4netns would connect to it from
// the host), nor link-local metadata (a test host standing in for
// 169.254.169.254, which the host itself does reach).
TEST_P(UserNetwork, DefaultPolicyRefusesTheHostsAddressesAndMetadata) {
  TestHost remote_host, metadata_host;
  ASSERT_TRUE(remote_host.ok() && metadata_host.ok() && metadata_host.also_at("169.254.169.254"));
  HttpResponder remote(remote_host.listen_tcp(), "hello-from-a-remote-host");
  HttpResponder host(listen_any_tcp(), "hello-from-the-host");
  HttpResponder metadata(metadata_host.listen_tcp("169.254.169.254"), "hello-from-metadata");
  std::string script = fetch("out", url(remote_host.address(), remote.port())) +
                       fetch("host", url(remote_host.host_side_address(), host.port())) +
                       fetch("metadata", url("169.254.169.254", metadata.port()));
  std::vector<std::vector<std::string>> runs = {{}};
  if (GetParam() == "sandbox" && ::geteuid() == 0) runs.push_back({"--userns", "host"});  // a namespace of ours
  for (const auto& extra : runs) {
    std::vector<std::string> args = {"run", "--rm", "--isolation", GetParam()};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {image_, "sh", "-c", script});
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("hello-from-a-remote-host out=0"), std::string::npos) << r.out << r.err;
    EXPECT_EQ(r.out.find("hello-from-the-host"), std::string::npos) << "the box reached the host: " << r.out;
    EXPECT_NE(r.out.find(" host=1"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("hello-from-metadata"), std::string::npos) << "the box reached metadata: " << r.out;
    EXPECT_NE(r.out.find(" metadata=1"), std::string::npos) << r.out;
  }
  EXPECT_EQ(remote.served(), static_cast<int>(runs.size()));
  EXPECT_EQ(host.served(), 0);
  EXPECT_EQ(metadata.served(), 0);
  EXPECT_FALSE(host_has_cubby_table("inet")) << "a box's policy was loaded into the host's namespace";
  EXPECT_FALSE(host_has_cubby_table("netdev"));
}

// --deny-net 0.0.0.0/0 with --allow-net is an allow-list: the most
// specific rule wins, so the allowed test host and the allowed metadata
// port pass, another test host does not; both lists show in inspect.
TEST_P(UserNetwork, AllowListHoldsOutsideTheBox) {
  TestHost open_host, other_host, metadata_host;
  ASSERT_TRUE(open_host.ok() && other_host.ok() && metadata_host.ok() && metadata_host.also_at("169.254.169.254"));
  HttpResponder open(open_host.listen_tcp(), "hello-from-an-allowed-host");
  HttpResponder other(other_host.listen_tcp(), "hello-from-another-host");
  HttpResponder metadata(metadata_host.listen_tcp("169.254.169.254"), "hello-from-metadata");
  std::string md_rule = "169.254.169.254:" + std::to_string(metadata.port());
  std::string script = fetch("open", url(open_host.address(), open.port())) +
                       fetch("other", url(other_host.address(), other.port())) +
                       fetch("metadata", url("169.254.169.254", metadata.port()));
  auto r = cubby({"run", "--name", "listed", "--isolation", GetParam(), "--deny-net", "0.0.0.0/0", "--allow-net",
                  open_host.address(), "--allow-net", md_rule, image_, "sh", "-c", script});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("hello-from-an-allowed-host open=0"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("hello-from-another-host"), std::string::npos) << "--deny-net 0.0.0.0/0 let it through: " << r.out;
  EXPECT_NE(r.out.find(" other=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hello-from-metadata metadata=0"), std::string::npos) << "--allow-net did not open it: " << r.out;
  EXPECT_EQ(other.served(), 0);
  auto j = nlohmann::json::parse(cubby({"inspect", "listed"}).out);
  EXPECT_EQ(j["config"]["deny_net"], nlohmann::json::array({"0.0.0.0/0"})) << j["config"];
  EXPECT_EQ(j["config"]["allow_net"], nlohmann::json::array({open_host.address() + "/32", "169.254.169.254/32:" +
                                                                                            std::to_string(metadata.port())}));
  ASSERT_EQ(cubby({"rm", "listed"}).rc, 0);
}

class UserNetworkSandbox : public BoxTest {};
// Domain rules go through the box's DNS path: the shim's DNS proxy answers
// only allowed names (from an upstream of our own, dnsmasq on a test host),
// and their answers' addresses become what the box may reach, on the port
// the rule names. A denied name never resolves (it never even reaches the
// upstream), its address is refused by IP under the deny-all, and DNS sent
// straight to another server goes to the proxy all the same.
TEST_P(UserNetwork, DomainRulesResolveThroughTheBoxsDnsProxy) {
  TestHost dns_host, allowed_host, denied_host;
  ASSERT_TRUE(dns_host.ok() && allowed_host.ok() && denied_host.ok());
  HttpResponder allowed(allowed_host.listen_tcp(), "hello-from-an-allowed-name");
  HttpResponder other_port(allowed_host.listen_tcp(), "hello-from-another-port");
  HttpResponder denied(denied_host.listen_tcp(), "hello-from-a-denied-name");
  DnsServer upstream(dns_host, {{"allowed.test", allowed_host.address()}, {"denied.test", denied_host.address()}});
  ASSERT_TRUE(upstream.ok());
  auto on = [](int port) { return ":" + std::to_string(port) + "/"; };
  // (nslookup asks for A and AAAA; dnsmasq has no AAAA for these names, so
  // its status is not the verdict: what it prints is.)
  std::string script = "nslookup -type=a allowed.test; " +
                       fetch("allowed", "http://allowed.test" + on(allowed.port())) +
                       fetch("other-port", "http://allowed.test" + on(other_port.port())) +
                       "nslookup -type=a denied.test; " +
                       fetch("denied-name", "http://denied.test" + on(denied.port())) +
                       fetch("denied-ip", url(denied_host.address(), denied.port())) +
                       "echo direct:; nslookup -type=a denied.test " + dns_host.address() + "; true";
  auto r = cubby({"run", "--name", "named", "--isolation", GetParam(), "--dns", dns_host.address(), "--deny-net",
                  "0.0.0.0/0", "--allow-net", "allowed.test:" + std::to_string(allowed.port()), "--deny-net",
                  "denied.test", image_, "sh", "-c", script});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("Address: " + allowed_host.address()), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("hello-from-an-allowed-name allowed=0"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find(" other-port=1"), std::string::npos) << "the rule's port was not kept: " << r.out;
  EXPECT_EQ(r.out.find(denied_host.address() + "\n"), std::string::npos) << "a denied name resolved: " << r.out;
  EXPECT_NE(r.out.find("can't find denied.test: REFUSED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" denied-name=1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" denied-ip=1"), std::string::npos) << "a denied name's address was reachable: " << r.out;
  auto direct = r.out.substr(r.out.find("direct:"));
  EXPECT_NE(direct.find("can't find denied.test: REFUSED"), std::string::npos)
      << "DNS to another server went around the proxy: " << r.out;
  EXPECT_EQ(denied.served(), 0);
  EXPECT_EQ(other_port.served(), 0);
  EXPECT_EQ(allowed.served(), 1);
  std::string asked = upstream.queries();
  EXPECT_NE(asked.find("allowed.test"), std::string::npos) << asked;
  EXPECT_EQ(asked.find("denied.test"), std::string::npos) << "a denied name reached the upstream: " << asked;
  auto j = nlohmann::json::parse(cubby({"inspect", "named"}).out);
  EXPECT_EQ(j["config"]["allow_net"], nlohmann::json::array({"allowed.test:" + std::to_string(allowed.port())}));
  EXPECT_EQ(j["config"]["deny_net"], nlohmann::json::array({"0.0.0.0/0", "denied.test"}));
  ASSERT_EQ(cubby({"rm", "named"}).rc, 0);
  EXPECT_FALSE(host_has_cubby_table("inet")) << "a box's policy was loaded into the host's namespace";
}

// The inode of the UDP socket bound to 127.0.0.53:53 in pid's network
// namespace (its /proc/PID/net/udp), or "" when there is none.
std::string dns_proxy_socket_inode(pid_t pid) {
  std::string udp = read_file("/proc/" + std::to_string(pid) + "/net/udp").value_or("");
  auto at = udp.find(" 3500007F:0035 ");
  if (at == std::string::npos) return "";
  std::string line = udp.substr(at, udp.find('\n', at) - at);
  std::vector<std::string> fields;
  for (size_t b = line.find_first_not_of(' '); b != std::string::npos; b = line.find_first_not_of(' ', b)) {
    size_t e = line.find(' ', b);
    fields.push_back(line.substr(b, e - b));
    b = e;
  }
  return fields.size() > 8 ? fields[8] : "";  // local rem st tx:rx tr:tm retr uid timeout INODE
}

// The processes holding an fd that is socket:[inode].
std::vector<pid_t> holders_of_socket(const std::string& inode) {
  std::vector<pid_t> out;
  std::string want = "socket:[" + inode + "]";
  for (const auto& p : std::filesystem::directory_iterator("/proc")) {
    std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec;
    for (const auto& fd : std::filesystem::directory_iterator(p.path() / "fd", ec)) {
      char buf[64] = {};
      if (::readlink(fd.path().c_str(), buf, sizeof buf - 1) > 0 && want == buf) {
        out.push_back(std::stoi(name));
        break;
      }
    }
  }
  return out;
}

// The proxy's socket is the shim's alone (no helper, nft run or box process
// inherited it), and a shim crash leaves nothing of the DNS path: not the
// socket, not the namespace its table and sets live in.
TEST_F(UserNetworkSandbox, DnsProxyIsTheShimsAloneAndGoesWithACrash) {
  auto run = cubby({"run", "-d", "--isolation", "sandbox", "--dns", "192.0.2.53", "--allow-net", "allowed.test", image_,
                    "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  pid_t shim = shim_pid(id);
  pid_t agent = child_named(shim, "cubby-agent");
  ASSERT_GT(agent, 0);
  std::string inode = dns_proxy_socket_inode(agent);
  ASSERT_NE(inode, "") << "no DNS proxy on 127.0.0.53:53 in the box's namespace";
  EXPECT_EQ(holders_of_socket(inode), std::vector<pid_t>{shim});
  std::string netns = ns_of(agent, "net");
  auto shim_fd = sys::pidfd_open(shim).value();
  auto agent_fd = sys::pidfd_open(agent).value();
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  ASSERT_TRUE(sys::wait_readable(shim_fd.get(), 10s).value());
  ASSERT_TRUE(sys::wait_readable(agent_fd.get(), 10s).value()) << "the box outlived its shim";
  reap_adopted();
  EXPECT_TRUE(holders_of_socket(inode).empty()) << "the DNS proxy's socket outlived its shim";
  for (const auto& p : std::filesystem::directory_iterator("/proc")) {
    std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") == std::string::npos)
      EXPECT_NE(ns_of(std::stoi(name), "net"), netns) << "process " << name << " is still in the box's namespace";
  }
  EXPECT_FALSE(host_has_cubby_table("inet"));
  EXPECT_EQ(status(id), "exited");  // reconciled
  ASSERT_EQ(cubby({"rm", id}).rc, 0);
}

// The egress policy lives in the box's own network namespace (sandbox,
// --network default), so it holds only while the box lacks CAP_NET_ADMIN
// there: its root has none (not in the bounding set, so no exec gets it),
// changing the network fails, and the policy still refuses afterwards.
// cubby has no --cap-add to give it (Docker's default set excludes it, and
// cubby-runc refuses a bounding set beyond that), so the combination of a
// policy and a box that may rewrite it cannot be asked for.
TEST_F(UserNetworkSandbox, BoxCannotUndoItsEgressPolicy) {
  TestHost denied_host;
  ASSERT_TRUE(denied_host.ok());
  HttpResponder denied(denied_host.listen_tcp(), "hello-from-a-denied-host");
  auto r = cubby({"run", "--rm", "--isolation", "sandbox", "--deny-net", denied_host.address(), image_, "sh", "-c",
                  "grep CapBnd /proc/self/status; ip link set tap0 down || echo ' down-refused'; "
                  "ip route del default || echo ' route-refused'; ip link add cbx0 type dummy || echo ' add-refused'; " +
                      fetch("denied", url(denied_host.address(), denied.port()))});
  EXPECT_EQ(r.rc, 0) << r.err;
  auto at = r.out.find("CapBnd:");
  ASSERT_NE(at, std::string::npos) << r.out;
  uint64_t bounding = std::stoull(r.out.substr(at + 7), nullptr, 16);
  EXPECT_EQ(bounding & (1ull << 12), 0u) << "the box holds CAP_NET_ADMIN: " << r.out;
  for (const char* refused : {" down-refused", " route-refused", " add-refused"})
    EXPECT_NE(r.out.find(refused), std::string::npos) << refused << ": " << r.out;
  EXPECT_NE(r.out.find(" denied=1"), std::string::npos) << r.out;
  EXPECT_EQ(denied.served(), 0);
  auto cap_add = cubby({"create", "--cap-add", "NET_ADMIN", image_, "true"});
  EXPECT_EQ(cap_add.rc, 125);
  EXPECT_EQ(cap_add.err_lines().size(), 1u) << cap_add.err;
}

// Bad domain rules are one clear line each, at create.
TEST_F(UserNetworkSandbox, BadDomainRulesAreOneClearErrorEach) {
  std::vector<std::vector<std::string>> bad = {{"--allow-net", "bad_name!.test"}, {"--allow-net", "*.test/8"},
                                               {"--deny-net", "evil.test:80"},   {"--allow-net", "-x.test"},
                                               {"--allow-net", "a..test"}};
  if (::geteuid() == 0) bad.push_back({"--network", "bridge", "--allow-net", "allowed.test"});
  for (const auto& flags : bad) {
    std::vector<std::string> args = {"create"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {image_, "true"});
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 125) << flags.back();
    EXPECT_EQ(r.err_lines().size(), 1u) << flags.back() << ": " << r.err;
  }
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "a refused create left a box";
}


// host.cubby.internal is slirp's 10.0.2.2, the host's loopback: refused
// unless allowed, and then only on the ports allowed (slirp4netns maps the
// whole loopback; the box's ruleset narrows it).
TEST_F(UserNetworkSandbox, HostCubbyInternalReachesTheHostsLoopbackOnlyWhereAllowed) {
  HttpResponder allowed(listen_loopback_tcp(), "hello-from-an-allowed-port");
  HttpResponder other(listen_loopback_tcp(), "hello-from-another-port");
  std::string script = "grep host.cubby.internal /etc/hosts; " +
                       fetch("allowed", "http://host.cubby.internal:" + std::to_string(allowed.port()) + "/") +
                       fetch("other", "http://host.cubby.internal:" + std::to_string(other.port()) + "/");
  auto refused = cubby({"run", "--rm", "--isolation", "sandbox", image_, "sh", "-c", script});
  EXPECT_EQ(refused.rc, 0) << refused.err;
  EXPECT_NE(refused.out.find("10.0.2.2\thost.cubby.internal"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find(" allowed=1"), std::string::npos) << "reached the host unasked: " << refused.out;
  auto r = cubby({"run", "--rm", "--isolation", "sandbox", "--allow-net", "host.cubby.internal:" +
                  std::to_string(allowed.port()), image_, "sh", "-c", script});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("hello-from-an-allowed-port allowed=0"), std::string::npos) << r.out << r.err;
  EXPECT_EQ(r.out.find("hello-from-another-port"), std::string::npos) << "an unallowed port of the host: " << r.out;
  EXPECT_NE(r.out.find(" other=1"), std::string::npos) << r.out;
  EXPECT_EQ(allowed.served(), 1);
  EXPECT_EQ(other.served(), 0);
  auto vm = cubby({"create", "--isolation", "vm", "--allow-net", "host.cubby.internal:80", image_, "true"});
  EXPECT_EQ(vm.rc, 125);
  EXPECT_EQ(vm.err_lines().size(), 1u) << vm.err;
}

// tap0's interface index in the network namespace of pid (0: none).
int tap_index_in_netns_of(pid_t pid) {
  int index = 0;
  std::thread t([&] {  // a network namespace is per thread; this one is ours alone
    UniqueFd ns(::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) return;
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));  // a socket of that namespace
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "tap0", IFNAMSIZ - 1);
    if (s && ::ioctl(s.get(), SIOCGIFINDEX, &ifr) == 0) index = ifr.ifr_ifindex;
  });
  t.join();
  return index;
}

// tap0 is made persistent by the shim, so the helper's exit does not wait
// for the kernel to unregister the device (three RCU grace periods and an
// rcu_barrier, ~25 ms, which the box's end waited for): the device outlives
// its helper, and a helper started again attaches to the same one.
TEST_P(UserNetwork, TapOutlivesItsHelper) {
  auto run = cubby({"run", "-d", "--isolation", GetParam(), image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  pid_t shim = shim_pid(id);
  pid_t netns_pid = child_named(shim, GetParam() == "vm" ? "qemu-system-x86_64" : "cubby-agent");
  ASSERT_GT(netns_pid, 0);
  int before = tap_index_in_netns_of(netns_pid);
  ASSERT_GT(before, 0) << "no tap0 in the box's network namespace";
  pid_t slirp = child_named(shim, "slirp4netns");
  ASSERT_GT(slirp, 0);
  auto fd = sys::pidfd_open(slirp).value();
  ASSERT_EQ(::kill(slirp, SIGKILL), 0);
  ASSERT_TRUE(sys::wait_readable(fd.get(), 10s).value());
  std::string log = home_ + "/boxes/" + id + "/shim.log";
  ASSERT_TRUE(await_lines(log, "network is back", 1)) << read_file(log).value_or("");
  EXPECT_EQ(tap_index_in_netns_of(netns_pid), before) << "tap0 went with its helper";
  ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// slirp4netns' API socket goes with its box: when the box ends, and when
// a dead shim's box is reconciled (the helper dies with its shim).
TEST_P(UserNetwork, ApiSocketGoesWithItsBox) {
  auto ended = cubby({"run", "--name", "ended", "--isolation", GetParam(), image_, "true"});
  ASSERT_EQ(ended.rc, 0) << ended.err;
  std::string dir = home_ + "/boxes/" + nlohmann::json::parse(cubby({"inspect", "ended"}).out)["id"].get<std::string>();
  EXPECT_TRUE(std::filesystem::exists(dir + "/box.log"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/slirp.sock")) << "slirp.sock outlived its box";

  auto run = cubby({"run", "-d", "--isolation", GetParam(), image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  pid_t shim = shim_pid(id);
  pid_t slirp = child_named(shim, "slirp4netns");
  ASSERT_GT(slirp, 0);
  ASSERT_TRUE(std::filesystem::exists(home_ + "/boxes/" + id + "/slirp.sock"));
  auto slirp_fd = sys::pidfd_open(slirp).value();
  auto shim_fd = sys::pidfd_open(shim).value();
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  ASSERT_TRUE(sys::wait_readable(shim_fd.get(), 10s).value());
  ASSERT_TRUE(sys::wait_readable(slirp_fd.get(), 10s).value()) << "slirp4netns outlived its shim";
  reap_adopted();
  EXPECT_EQ(status(id), "exited");  // reconciled
  EXPECT_FALSE(std::filesystem::exists(home_ + "/boxes/" + id + "/slirp.sock")) << "slirp.sock outlived a dead shim";
  EXPECT_FALSE(std::filesystem::exists(home_ + "/boxes/" + id + "/agent.sock"));
  ASSERT_EQ(cubby({"rm", "ended", id}).rc, 0);
}

INSTANTIATE_TEST_SUITE_P(BothBackends, Ports, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(BothBackends, UserNetwork, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

class PublishSpecs : public BoxTest {};

// Bad -p values are refused at create, before any box exists.
TEST_F(PublishSpecs, BadOnesAreOneClearErrorEach) {
  for (const char* spec : {"", "abc", "0", "70000", "1:2:3:4", "8080:80/sctp", "[::1]:80:80", "300.1.1.1:80:80",
                           "90-80:80", "8000-8002:80-81", "8080:"}) {
    auto r = cubby({"create", "-p", spec, image_, "true"});
    EXPECT_EQ(r.rc, 125) << spec;
    EXPECT_EQ(r.err_lines().size(), 1u) << spec << ": " << r.err;
  }
  auto none = cubby({"create", "--network", "none", "-p", "8080:80", image_, "true"});
  EXPECT_EQ(none.rc, 125);
  EXPECT_NE(none.err.find("--network default"), std::string::npos) << none.err;
  auto twice = cubby({"create", "-p", "127.0.0.1:18999:80", "-p", "127.0.0.1:18999:81", image_, "true"});
  EXPECT_EQ(twice.rc, 125);
  EXPECT_NE(twice.err.find("published twice"), std::string::npos) << twice.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "a refused create left a box";
}

}  // namespace
}  // namespace cubby::test
