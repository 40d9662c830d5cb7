// Published ports (-p), on both backends: the host side is a socket of the
// box's user-mode network helper (QEMU's hostfwd for vm, slirp4netns'
// add_hostfwd for sandbox), so it reaches the box while the box runs and is
// free again once the box is gone.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "base/sys.h"
#include "harness.h"

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

class Ports : public BackendTest {
 protected:
  void SetUp() override {
    if (GetParam() == "sandbox" && ::access("/usr/bin/slirp4netns", X_OK) != 0)
      GTEST_SKIP() << "slirp4netns is not installed";
    BackendTest::SetUp();
  }
};

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

INSTANTIATE_TEST_SUITE_P(BothBackends, Ports, ::testing::Values("sandbox", "vm"),
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
