#include "test_hosts.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/process.h"
#include "base/sys.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

std::atomic<unsigned> g_hosts{0};

bool run_ip(const std::vector<std::string>& args) {
  SpawnSpec s;
  s.argv = {"/sbin/ip"};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  auto child = spawn(s);
  if (!child) {
    ADD_FAILURE() << child.error().message();
    return false;
  }
  auto st = child->wait();
  return st && !st->signaled && st->code == 0;
}

std::string dotted(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  return ::inet_ntop(AF_INET, &a, buf, sizeof buf);
}

UniqueFd listen_on(const std::string& ip) {
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (!s || ::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s.get(), 8) != 0) {
    ADD_FAILURE() << "listen on " << ip << ": " << std::strerror(errno);
    return UniqueFd();
  }
  return s;
}

}  // namespace

TestHost::TestHost() {
  unsigned k = g_hosts++;
  uint32_t subnet = (198u << 24 | 18u << 16) + ((static_cast<uint32_t>(::getpid()) % 8192) * 4 + k % 4) * 4;
  host_ip_ = dotted(subnet + 1);
  peer_ip_ = dotted(subnet + 2);
  std::string tag = std::to_string(::getpid()) + "-" + std::to_string(k % 100);
  host_if_ = "cbh" + tag;
  std::string peer_if = "cbn" + tag;
  // The namespace is made by a thread of ours (a network namespace is
  // per thread), so `ip` forked from that thread runs inside it; the peer
  // end goes to our process's (the main thread's) namespace.
  bool inside = false;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) return;
    netns_.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
    inside = run_ip({"link", "add", peer_if, "type", "veth", "peer", "name", host_if_, "netns",
                     std::to_string(::getpid())}) &&
             run_ip({"addr", "add", peer_ip_ + "/30", "dev", peer_if}) && run_ip({"link", "set", peer_if, "up"});
  });
  t.join();
  ok_ = netns_ && inside && run_ip({"addr", "add", host_ip_ + "/30", "dev", host_if_}) &&
        run_ip({"link", "set", host_if_, "up"});
}

TestHost::~TestHost() {
  if (::access(("/sys/class/net/" + host_if_).c_str(), F_OK) == 0) (void)run_ip({"link", "del", host_if_});
}

UniqueFd TestHost::listen_tcp(const std::string& ip) {
  UniqueFd fd;
  std::thread t([&] {
    if (::setns(netns_.get(), CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "setns: " << std::strerror(errno);
      return;
    }
    fd = listen_on(ip.empty() ? peer_ip_ : ip);
  });
  t.join();
  return fd;
}

bool TestHost::also_at(const std::string& ip) {
  // The host has one route to an address: tests run side by side (ctest -j)
  // take turns at it, each holding the lock while its route exists.
  UniqueFd lock(::open(("/run/cubby-test-route-" + ip + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  while (lock && ::flock(lock.get(), LOCK_EX) != 0 && errno == EINTR) {
  }
  address_locks_.push_back(std::move(lock));
  bool inside = false;
  std::thread t([&] {  // `ip` forked from a thread inside the namespace runs there
    if (::setns(netns_.get(), CLONE_NEWNET) != 0) return;
    inside = run_ip({"addr", "add", ip + "/32", "dev", "cbn" + host_if_.substr(3)});
  });
  t.join();
  return inside && run_ip({"route", "add", ip + "/32", "via", peer_ip_, "dev", host_if_});
}

DnsServer::DnsServer(TestHost& host, const std::vector<std::pair<std::string, std::string>>& records) {
  char tmpl[] = "/tmp/cubby-test-dns.XXXXXX";
  if (!::mkdtemp(tmpl)) {
    ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    return;
  }
  dir_ = tmpl;
  SpawnSpec s;
  s.argv = {"/usr/sbin/dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
            "--listen-address=" + host.address(), "--port=53", "--user=root", "--local-ttl=7200",
            "--pid-file=" + dir_ + "/pid", "--log-facility=" + dir_ + "/log", "--log-queries"};
  for (const auto& [name, ip] : records) s.argv.push_back("--address=/" + name + "/" + ip);
  s.join_netns = host.netns();
  // Without --keep-in-foreground dnsmasq forks, and its first process exits
  // (0) only once the daemon is listening: that exit is the readiness event.
  auto child = spawn(s);
  if (!child) {
    ADD_FAILURE() << child.error().message();
    return;
  }
  auto st = child->wait();
  if (!st || st->signaled || st->code != 0) {
    ADD_FAILURE() << "dnsmasq did not start: " << read_file(dir_ + "/log").value_or("");
    return;
  }
  pid_ = std::atoi(read_file(dir_ + "/pid").value_or("-1").c_str());
}

DnsServer::~DnsServer() {
  if (pid_ > 0) {
    if (auto fd = sys::pidfd_open(pid_)) {
      (void)sys::pidfd_send_signal(fd->get(), SIGTERM);
      (void)sys::wait_readable(fd->get(), 10s);  // backstop
      int status;
      (void)::waitpid(pid_, &status, WNOHANG);  // adopted by the harness (a subreaper), else init reaps it
    }
  }
  if (!dir_.empty()) std::filesystem::remove_all(dir_);
}

std::string DnsServer::queries() const { return read_file(dir_ + "/log").value_or(""); }

UniqueFd listen_loopback_tcp() { return listen_on("127.0.0.1"); }
UniqueFd listen_any_tcp() { return listen_on("0.0.0.0"); }

HttpResponder::HttpResponder(UniqueFd listener, std::string body)
    : listener_(std::move(listener)), body_(std::move(body)) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  if (listener_ && ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port_ = ntohs(a.sin_port);
  auto [r, w] = sys::make_pipe().value();
  stop_r_ = std::move(r);
  stop_w_ = std::move(w);
  th_ = std::thread([this] { loop(); });
}

HttpResponder::~HttpResponder() {
  stop_w_.reset();  // EOF wakes the loop
  th_.join();
}

void HttpResponder::loop() {
  for (;;) {
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) continue;
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos) {
      auto ready = sys::wait_readable(c.get(), 30s);  // backstop for a client that sends nothing
      if (!ready || !*ready) break;
      ssize_t n = ::read(c.get(), buf, sizeof buf);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string resp = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body_.size()) + "\r\n\r\n" + body_;
    for (size_t at = 0; at < resp.size();) {  // MSG_NOSIGNAL: a client gone early is no SIGPIPE
      ssize_t n = ::send(c.get(), resp.data() + at, resp.size() - at, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      at += static_cast<size_t>(n);
    }
    ++served_;
  }
}

}  // namespace cubby::test
