#include "shim/network_dns.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>

#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"
#include "base/raw_fd_passing.h"
#include "net/dns.h"
#include "shim/network.h"

namespace cubby::shim {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kMaxMessage = 4096;     // bigger datagrams are dropped (the box's or an upstream's)
constexpr size_t kMaxPending = 64;       // queries in flight; past it a query gets SERVFAIL at once
constexpr auto kUpstreamWait = 3s;       // per upstream, then the next one, then SERVFAIL

// Which step the socket maker failed at.
enum Step { kJoinUser = 1, kJoinNet, kLoUp, kSocket, kFreebind, kBind, kSend };
const char* step_name(int s) {
  switch (s) {
    case kJoinUser: return "join the user namespace";
    case kJoinNet: return "join the network namespace";
    case kLoUp: return "bring lo up";
    case kSocket: return "make a UDP socket";
    case kFreebind: return "set IP_FREEBIND";
    case kBind: return "bind 127.0.0.53:53";
    case kSend: return "hand the socket back";
  }
  return "?";
}

// --- post-fork: runs in a forked child of the multi-threaded shim. Only raw
// syscalls on values prepared before (no allocation, no lock, no logging).
// A failure is {step, errno} on err_w, then exit 1.
[[noreturn]] void socket_child(int user_fd, int net_fd, const sockaddr_in* addr, const ifreq* lo, int back, int err_w) {
  auto die = [err_w](int step) {
    int rec[2] = {step, errno};
    (void)!::write(err_w, rec, sizeof rec);
    ::_exit(1);
  };
  if (user_fd >= 0 && ::setns(user_fd, CLONE_NEWUSER) != 0) die(kJoinUser);
  if (::setns(net_fd, CLONE_NEWNET) != 0) die(kJoinNet);
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) die(kSocket);
  // The proxy's address is on lo: up it goes (QEMU's namespace has it down;
  // in the box's, the agent would bring it up later).
  ifreq ifr = *lo;
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) die(kLoUp);
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) die(kLoUp);
  // The address need not be there yet to be bound (lo gets 127.0.0.1/8 as it comes up).
  int one = 1;
  if (::setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) != 0) die(kFreebind);
  if (::bind(s, reinterpret_cast<const sockaddr*>(addr), sizeof *addr) != 0) die(kBind);
  if (int e = sys::send_fd_raw(back, s); e != 0) {
    errno = e;
    die(kSend);
  }
  ::_exit(0);
}
// --- end of post-fork code

// The proxy's socket, bound to 127.0.0.53:53 in ns.net. A forked child
// makes it: joining a user namespace needs a single-threaded process (the
// shim has threads), and a socket stays in the namespace it was made in.
Result<UniqueFd> open_proxy_socket(const NetnsFds& ns) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(53);
  ::inet_pton(AF_INET, net::kDnsProxyAddress, &addr.sin_addr);
  ifreq lo{};
  ::strncpy(lo.ifr_name, "lo", IFNAMSIZ - 1);
  int user_fd = ns.user_to_join();
  auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());
  auto [back_r, back_w] = CUBBY_TRY(sys::make_socketpair(SOCK_DGRAM));
  pid_t pid = ::fork();
  if (pid == 0) socket_child(user_fd, ns.net.get(), &addr, &lo, back_w.get(), err_w.get());
  if (pid < 0) return sys_fail("fork to make the DNS proxy's socket");
  err_w.reset();
  back_w.reset();
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0)  // this child only
    if (errno != EINTR) return sys_fail("wait for the DNS proxy's socket maker");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return sys::recv_fd(back_r.get());
  int rec[2] = {0, 0};
  if (::read(err_r.get(), rec, sizeof rec) == static_cast<ssize_t>(sizeof rec))
    return fail(Error::sys(std::string("the DNS proxy's socket: ") + step_name(rec[0]), rec[1]));
  return fail(Error::internal("the maker of the DNS proxy's socket failed without saying why"));
}

std::optional<sockaddr_storage> upstream_address(const std::string& ip) {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(53);
    return ss;
  }
  if (::inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(53);
    return ss;
  }
  return std::nullopt;
}

socklen_t length_of(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

uint16_t random_id() {
  uint16_t id = 0;
  while (::getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) {
  }
  return id;
}

}  // namespace

// One query on its way: the box's bytes, and the socket it went upstream on.
struct DnsProxy::Pending {
  std::vector<uint8_t> query;  // as the box sent it (its ID)
  net::dns::Query parsed;
  net::NameVerdict verdict;
  sockaddr_storage from{};
  socklen_t from_len = 0;
  size_t upstream = 0;  // index into upstreams_ of the server asked now
  uint16_t upstream_id = 0;
  UniqueFd sock;
  Clock::time_point deadline;
  bool done = false;
};

std::vector<std::string> dns_upstreams(const std::vector<std::string>& dns) {
  return dns.empty() ? net::host_nameservers() : dns;
}

Result<std::unique_ptr<DnsProxy>> DnsProxy::start(const NetnsFds& ns, net::EgressPolicy policy,
                                                  std::vector<std::string> upstreams) {
  std::unique_ptr<DnsProxy> p(new DnsProxy());
  for (const auto& u : upstreams)
    if (auto a = upstream_address(u)) p->upstreams_.push_back(*a);
  if (p->upstreams_.empty())
    return fail(Error::invalid("domain rules need a DNS server to forward to: give --dns (the host's resolv.conf "
                               "names no IPv4 nameserver)"));
  p->policy_ = std::move(policy);
  p->sock_ = CUBBY_TRY(open_proxy_socket(ns));
  p->stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!p->stop_) return sys_fail("eventfd");
  p->ns_net_.reset(::fcntl(ns.net.get(), F_DUPFD_CLOEXEC, 3));
  if (!p->ns_net_) return sys_fail("dup the network namespace");
  p->join_user_ = ns.user_to_join() >= 0;
  if (p->join_user_) {
    p->ns_user_.reset(::fcntl(ns.user.get(), F_DUPFD_CLOEXEC, 3));
    if (!p->ns_user_) return sys_fail("dup the user namespace");
  }
  p->thread_ = std::thread([raw = p.get()] { raw->run(); });
  return p;
}

DnsProxy::~DnsProxy() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }
}

void DnsProxy::run() {
  std::vector<pollfd> fds;
  for (;;) {
    std::erase_if(pending_, [](const auto& p) { return p->done; });
    fds.assign({{stop_.get(), POLLIN, 0}, {sock_.get(), POLLIN, 0}});
    auto now = Clock::now();
    auto next = now + 1h;
    for (const auto& p : pending_) {
      fds.push_back({p->sock.get(), POLLIN, 0});
      next = std::min(next, p->deadline);
    }
    int wait_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count()) + 1;
    int n = ::poll(fds.data(), fds.size(), std::max(wait_ms, 0));
    if (n < 0 && errno != EINTR) {
      LOG_ERROR("dns proxy: poll: {}", ::strerror(errno));
      return;
    }
    if (fds[0].revents) return;
    // Replies and timeouts first: they free slots for new queries.
    now = Clock::now();
    for (size_t i = 0; i < pending_.size(); ++i) {
      auto& p = *pending_[i];
      if (fds[2 + i].revents) on_reply(p);
      if (!p.done && now >= p.deadline) {
        ++p.upstream;
        if (!forward(p)) {
          reply(net::dns::reply_with_rcode(p.query, p.parsed, net::dns::kRcodeServfail), p.from, p.from_len);
          p.done = true;
        }
      }
    }
    if (fds[1].revents & POLLIN) {
      // A few per round, so a flood from the box cannot starve the replies.
      for (int k = 0; k < 16; ++k) {
        uint8_t buf[kMaxMessage];
        sockaddr_storage from{};
        socklen_t from_len = sizeof from;
        ssize_t got = ::recvfrom(sock_.get(), buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC,
                                 reinterpret_cast<sockaddr*>(&from), &from_len);
        if (got < 0) break;
        if (static_cast<size_t>(got) > sizeof buf) continue;  // oversized: not a query of ours to answer
        on_query(buf, static_cast<size_t>(got), from, from_len);
      }
    }
  }
}

void DnsProxy::on_query(const uint8_t* data, size_t n, const sockaddr_storage& from, socklen_t from_len) {
  std::span<const uint8_t> msg(data, n);
  auto q = net::dns::parse_query(msg);
  if (!q) return;  // not a query we can judge: no answer (a reply would help only a broken client)
  auto verdict = net::judge_name(policy_, q->question.name);
  if (!verdict.answer) {
    note_refused(q->question.name);
    reply(net::dns::reply_with_rcode(msg, *q, net::dns::kRcodeRefused), from, from_len);
    return;
  }
  if (pending_.size() >= kMaxPending) {
    reply(net::dns::reply_with_rcode(msg, *q, net::dns::kRcodeServfail), from, from_len);
    return;
  }
  auto p = std::make_unique<Pending>();
  p->query.assign(data, data + n);
  p->parsed = std::move(*q);
  p->verdict = std::move(verdict);
  p->from = from;
  p->from_len = from_len;
  if (!forward(*p)) {
    reply(net::dns::reply_with_rcode(msg, p->parsed, net::dns::kRcodeServfail), from, from_len);
    return;
  }
  pending_.push_back(std::move(p));
}

bool DnsProxy::forward(Pending& p) {
  for (; p.upstream < upstreams_.size(); ++p.upstream) {
    const auto& to = upstreams_[p.upstream];
    UniqueFd s(::socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!s || ::connect(s.get(), reinterpret_cast<const sockaddr*>(&to), length_of(to)) != 0) continue;
    std::vector<uint8_t> out = p.query;
    p.upstream_id = random_id();
    net::dns::set_id(out, p.upstream_id);
    if (::send(s.get(), out.data(), out.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(out.size())) continue;
    p.sock = std::move(s);
    p.deadline = Clock::now() + kUpstreamWait;
    return true;
  }
  return false;
}

void DnsProxy::on_reply(Pending& p) {
  uint8_t buf[kMaxMessage];
  for (;;) {
    ssize_t got = ::recv(p.sock.get(), buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
    if (got < 0) return;  // EAGAIN, or an ICMP error: the deadline moves on to the next server
    if (static_cast<size_t>(got) > sizeof buf) continue;
    std::span<uint8_t> msg(buf, static_cast<size_t>(got));
    net::dns::ParseError why;
    auto r = net::dns::parse_response(msg, p.parsed.question, &why);
    if (!r || r->id != p.upstream_id) continue;  // not the answer to this query (a late or forged one)
    std::vector<std::pair<uint32_t, uint32_t>> addresses;
    for (const auto& a : r->addresses) addresses.emplace_back(a.ip, a.ttl);
    // Capped first: a reply whose capped form reads differently (a name
    // pointing into a TTL) opens nothing and reaches the box as SERVFAIL.
    bool capped = net::dns::cap_ttls(msg, p.parsed.question, *r, kMaxTtl);
    if (!capped || (!p.verdict.ports.empty() && r->rcode == 0 && !addresses.empty() &&
                    !open_elements(p.verdict.ports, addresses))) {
      reply(net::dns::reply_with_rcode(p.query, p.parsed, net::dns::kRcodeServfail), p.from, p.from_len);
    } else {
      net::dns::set_id(msg, p.parsed.id);
      reply(std::vector<uint8_t>(msg.begin(), msg.end()), p.from, p.from_len);
    }
    p.done = true;
    return;
  }
}

bool DnsProxy::open_elements(const std::vector<uint16_t>& ports,
                             const std::vector<std::pair<uint32_t, uint32_t>>& addresses) {
  auto now = Clock::now();
  std::string commands;
  std::vector<std::pair<std::pair<uint32_t, uint16_t>, Clock::time_point>> added;
  for (const auto& [ip, ttl] : addresses) {
    uint32_t seconds = std::min(ttl, kMaxTtl) + kTtlSlack;
    auto until = now + std::chrono::seconds(seconds);
    for (uint16_t port : ports) {
      auto key = std::make_pair(ip, port);
      // Still good for longer than this answer needs: nothing to do.
      if (auto it = elements_.find(key); it != elements_.end() && it->second >= until - 5s) continue;
      commands += net::name_element_commands(ip, port, seconds);
      added.push_back({key, until});
    }
  }
  if (commands.empty()) return true;
  SpawnSpec s;
  s.argv = {net::kNftPath, "-f", "-"};
  s.join_userns = join_user_ ? ns_user_.get() : -1;
  s.join_netns = ns_net_.get();
  s.keep_net_admin = true;
  if (auto r = net::run_tool(std::move(s), commands); !r) {
    LOG_ERROR("dns proxy: could not open the answer's addresses: {}", r.error().message());
    return false;
  }
  for (const auto& [key, until] : added) elements_[key] = until;
  // Entries long expired go, so the map is bounded by what is live.
  std::erase_if(elements_, [&](const auto& e) { return e.second < now; });
  return true;
}

void DnsProxy::reply(const std::vector<uint8_t>& msg, const sockaddr_storage& to, socklen_t to_len) {
  (void)::sendto(sock_.get(), msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                 reinterpret_cast<const sockaddr*>(&to), to_len);
}

void DnsProxy::note_refused(const std::string& name) {
  // The box decides how often this happens: the first few, then one in 1000.
  if (++refused_ <= 10 || refused_ % 1000 == 0)
    LOG_INFO("dns proxy: refused {} (not allowed by the box's rules; {} refused so far)", name.substr(0, 253), refused_);
}

}  // namespace cubby::shim
