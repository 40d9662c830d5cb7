// --network default on both backends: outbound traffic works, the host's
// loopback is refused, the helpers that parse the box's traffic run confined,
// and published ports (-p) work. The host side of a published port is a
// socket of the box's slirp4netns (added through its API; for vm it forwards
// into QEMU's network namespace, and QEMU's hostfwd on to the guest), so it
// reaches the box while the box runs and is free again once the box is gone.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

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
