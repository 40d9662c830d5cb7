#include "net/bridge.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sched.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"

namespace cubby::net {
namespace {

constexpr const char* kIp = "/sbin/ip";
constexpr const char* kNft = kNftPath;
// Subnets are /24s in 10.200.0.0/13 (2048 of them), first choice by the
// home's hash, the next free one on a clash with any host address.
constexpr uint32_t kPoolBase = (10u << 24) | (200u << 16);
constexpr uint32_t kPoolSubnets = 2048;
// The packet mark of traffic a box's --allow-net lets past the default policy.
constexpr const char* kAllowMark = "0x0c0bb1";

uint32_t fnv1a(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

std::string dotted(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  return ::inet_ntop(AF_INET, &a, buf, sizeof buf);
}

Result<void> nft(const std::string& script) {
  SpawnSpec s;
  s.argv = {kNft, "-f", "-"};
  return run_tool(std::move(s), script);
}
Result<void> ip_batch(const std::string& script, int extra_fd = -1) {
  SpawnSpec s;
  s.argv = {kIp, "-batch", "-"};
  if (extra_fd >= 0) s.fds = {0, 1, 2, extra_fd};  // fds 0 and 2 are run_tool's
  return run_tool(std::move(s), script);
}

bool link_exists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

// The first IPv4 address of interface `name` (host order), 0 if none.
uint32_t address_of(const std::string& name) {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return 0;
  uint32_t out = 0;
  for (ifaddrs* i = all; i && !out; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && name == i->ifa_name)
      out = ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
  ::freeifaddrs(all);
  return out;
}

// Whether any host interface has an address in the /24 `subnet`.
bool subnet_in_use(uint32_t subnet) {
  ifaddrs* all = nullptr;
  if (::getifaddrs(&all) != 0) return true;
  bool used = false;
  for (ifaddrs* i = all; i && !used; i = i->ifa_next)
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET)
      used = (ntohl(reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr) & 0xffffff00u) == subnet;
  ::freeifaddrs(all);
  return used;
}

// An flock'd file, held until the returned fd closes.
Result<UniqueFd> lock_file(const std::string& path, int op) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return sys_fail("open " + path);
  while (::flock(fd.get(), op) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return UniqueFd();
    return sys_fail("lock " + path);
  }
  return fd;
}

std::string net_dir(const std::string& home) { return home + "/net"; }
std::string lease_path(const std::string& home, int n) { return net_dir(home) + "/lease-" + std::to_string(n); }

// The home's bridge and table: made if missing. Under the home's lock; the
// machine-wide lock keeps two homes from picking one subnet.
Result<uint32_t> ensure_bridge(const std::string& home) {
  HomeNames n = home_names(home);
  if (link_exists(n.bridge)) {
    if (uint32_t a = address_of(n.bridge)) return a & 0xffffff00u;
  }
  CUBBY_TRYV(mkdir_p("/run/cubby", 0700));
  auto machine = CUBBY_TRY(lock_file("/run/cubby/net.lock", LOCK_EX));
  if (link_exists(n.bridge)) CUBBY_TRYV(ip_batch("link del " + n.bridge + "\n"));  // half made: again
  uint32_t first = fnv1a(home) % kPoolSubnets, subnet = 0;
  for (uint32_t k = 0; k < kPoolSubnets && !subnet; ++k) {
    uint32_t cand = kPoolBase + ((first + k) % kPoolSubnets) * 256;
    if (!subnet_in_use(cand)) subnet = cand;
  }
  if (!subnet) return fail(Error::internal("no free /24 left in 10.200.0.0/13 for the bridge"));
  std::string gw = dotted(subnet + 1), cidr = dotted(subnet) + "/24";
  CUBBY_TRYV(ip_batch("link add " + n.bridge + " type bridge\naddr add " + gw + "/24 dev " + n.bridge + "\nlink set " +
                      n.bridge + " up\n"));
  // Outbound NAT needs forwarding (as Docker turns it on); route_localnet
  // lets -p on 127.0.0.1 be DNATed to a box (then masqueraded, below).
  CUBBY_TRYV(write_file("/proc/sys/net/ipv4/ip_forward", "1\n", 0644));
  CUBBY_TRYV(write_file("/proc/sys/net/ipv4/conf/" + n.bridge + "/route_localnet", "1\n", 0644));
  const std::string& br = n.bridge;
  std::string t = "table ip " + n.table + " {}\ndelete table ip " + n.table + "\ntable ip " + n.table + " {\n";
  t += "  chain postrouting { type nat hook postrouting priority srcnat; policy accept;\n";
  t += "    ip saddr " + cidr + " oifname != \"" + br + "\" masquerade\n";
  t += "    ip saddr 127.0.0.0/8 oifname \"" + br + "\" masquerade\n  }\n";
  // The default egress policy: nothing of the host's own (its loopback, its
  // private addresses) but replies, no link-local (cloud metadata) anywhere.
  // Rejected, not dropped: the box learns at once (a reset), never hangs.
  // What a box's --allow-net marked (its own table, an earlier priority) passes.
  std::string unmarked = "meta mark != " + std::string(kAllowMark) + " ";
  t += "  chain input { type filter hook input priority filter; policy accept;\n";
  t += "    iifname \"" + br + "\" ct state established,related accept\n";
  t += "    iifname \"" + br + "\" " + unmarked + "meta l4proto tcp reject with tcp reset\n";
  t += "    iifname \"" + br + "\" " + unmarked + "reject\n  }\n";
  t += "  chain forward { type filter hook forward priority filter; policy accept;\n";
  t += "    iifname \"" + br + "\" ip daddr 169.254.0.0/16 " + unmarked + "meta l4proto tcp reject with tcp reset\n";
  t += "    iifname \"" + br + "\" ip daddr 169.254.0.0/16 " + unmarked + "reject\n  }\n}\n";
  if (auto r = nft(t); !r) {
    (void)ip_batch("link del " + n.bridge + "\n");
    return std::unexpected(r.error().wrap("set up the NAT of " + n.bridge));
  }
  return subnet;
}

// The bridge and the home's table go when no lease is held any more.
// Under the home's lock.
void remove_bridge_if_idle(const std::string& home) {
  for (const auto& f : list_dir(net_dir(home))) {
    if (f.rfind("lease-", 0) != 0) continue;
    auto held = lock_file(net_dir(home) + "/" + f, LOCK_EX | LOCK_NB);
    if (!held || !*held) return;  // a live box holds it
  }
  HomeNames n = home_names(home);
  if (auto r = nft("table ip " + n.table + " {}\ndelete table ip " + n.table + "\n"); !r)
    LOG_WARN("remove the table {}: {}", n.table, r.error().message());
  if (link_exists(n.bridge)) {
    if (auto r = ip_batch("link del " + n.bridge + "\n"); !r) LOG_WARN("remove {}: {}", n.bridge, r.error().message());
  }
}

// Deletes what a box added to the host: its table (if it has one: -p) and
// its veth's host end.
void remove_box_objects(const std::string& box_id, bool has_table = true) {
  std::string t = box_table(box_id);
  if (!has_table) {
  } else if (auto r = nft("table ip " + t + " {}\ndelete table ip " + t + "\ntable bridge " + t + " {}\ndelete table bridge " + t + "\n"); !r) {
    LOG_WARN("remove the table {}: {}", t, r.error().message());
  }
  if (std::string v = box_veth(box_id); link_exists(v)) (void)ip_batch("link del " + v + "\n");
}

// eth0 (address, up) and the default route, from a thread that joined the
// box's network namespace (a namespace is per thread; as root the shim may
// join it without joining the box's user namespace).
Result<void> configure_box_side(int netns_fd, uint32_t addr, uint32_t gw) {
  Result<void> out;
  std::thread t([&] {
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      out = sys_fail("join the box's network namespace");
      return;
    }
    UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));  // a socket of that namespace
    if (!s) {
      out = sys_fail("socket");
      return;
    }
    auto sin = [](uint32_t a) {
      sockaddr_in x{};
      x.sin_family = AF_INET;
      x.sin_addr.s_addr = htonl(a);
      return x;
    };
    ifreq ifr{};
    ::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    auto set = [&](unsigned long req, const char* what) -> bool {
      if (::ioctl(s.get(), req, &ifr) == 0) return true;
      out = sys_fail(std::string("eth0: ") + what);
      return false;
    };
    sockaddr_in a = sin(addr), m = sin(0xffffff00u);
    std::memcpy(&ifr.ifr_addr, &a, sizeof a);
    if (!set(SIOCSIFADDR, "set the address")) return;
    std::memcpy(&ifr.ifr_netmask, &m, sizeof m);
    if (!set(SIOCSIFNETMASK, "set the netmask")) return;
    if (!set(SIOCGIFFLAGS, "read the flags")) return;
    ifr.ifr_flags |= IFF_UP;
    if (!set(SIOCSIFFLAGS, "bring it up")) return;
    rtentry rt{};
    sockaddr_in any = sin(0), via = sin(gw);
    std::memcpy(&rt.rt_dst, &any, sizeof any);
    std::memcpy(&rt.rt_genmask, &any, sizeof any);
    std::memcpy(&rt.rt_gateway, &via, sizeof via);
    rt.rt_flags = RTF_UP | RTF_GATEWAY;
    if (::ioctl(s.get(), SIOCADDRT, &rt) != 0) out = sys_fail("add the default route");
  });
  t.join();
  return out;
}

}  // namespace

Result<void> bridge_available() {
  if (::geteuid() != 0) return fail(Error::invalid("--network bridge needs root (rootless boxes use --network default)"));
  if (::access(kIp, X_OK) != 0) return fail(Error::invalid("--network bridge needs ip (apt-get install iproute2)"));
  if (::access(kNft, X_OK) != 0) return fail(Error::invalid("--network bridge needs nft (apt-get install nftables)"));
  return {};
}

HomeNames home_names(const std::string& home) {
  char hex[9];
  std::snprintf(hex, sizeof hex, "%08x", fnv1a(home));
  return {std::string("cbr") + hex, std::string("cubby_") + hex};
}

std::string box_veth(const std::string& box_id) { return "cbv" + box_id.substr(0, 12); }
std::string box_table(const std::string& box_id) { return "cubby_b_" + box_id.substr(0, 12); }

Result<BridgeAttachment> attach_bridge(const std::string& home, const std::string& box_id, int netns_fd,
                                       const std::vector<PortMapping>& ports, const EgressPolicy& egress) {
  CUBBY_TRYV(bridge_available());
  CUBBY_TRYV(mkdir_p(net_dir(home), 0700));
  // Declared before the lock: on an error below, the lock is released first
  // and out's destructor (detach) takes it again to undo what was made.
  BridgeAttachment out;
  auto home_lock = CUBBY_TRY(lock_file(net_dir(home) + "/lock", LOCK_EX));
  uint32_t subnet = CUBBY_TRY(ensure_bridge(home));
  int n = 2;
  for (; n <= 254; ++n) {
    auto l = CUBBY_TRY(lock_file(lease_path(home, n), LOCK_EX | LOCK_NB));
    if (l) {
      out.lease_ = std::move(l);
      break;
    }
  }
  if (!out.lease_) return fail(Error::conflict("every address of the home's bridge is taken (253 boxes)"));
  out.home_ = home;
  out.box_id_ = box_id;  // from here on, detach() undoes what was made
  uint32_t addr = subnet + static_cast<uint32_t>(n), gw = subnet + 1;
  out.address_ = dotted(addr);
  out.gateway_ = dotted(gw);
  std::string veth = box_veth(box_id), br = home_names(home).bridge;
  if (link_exists(veth)) (void)ip_batch("link del " + veth + "\n");  // a crashed predecessor's
  CUBBY_TRYV(ip_batch("link add " + veth + " type veth peer name eth0 netns /proc/self/fd/3\nlink set " + veth +
                          " master " + br + " up\n",
                      netns_fd));
  CUBBY_TRYV(configure_box_side(netns_fd, addr, gw));
  if (ports.empty() && egress.allow.empty() && egress.deny.empty())
    return out;  // no table: one nft run fewer on each start and end
  std::string t = box_table(box_id);
  std::string rules = "table ip " + t + " {}\ndelete table ip " + t + "\ntable ip " + t + " {\n";
  rules += "  chain prerouting { type nat hook prerouting priority dstnat; policy accept;\n";
  std::string dnat;
  for (const auto& p : ports) {
    std::string match = "fib daddr type local ";
    if (p.host_ip != "0.0.0.0" && !p.host_ip.empty()) match += "ip daddr " + p.host_ip + " ";
    dnat += "    " + match + p.proto + " dport " + std::to_string(p.host_port) + " dnat to " + out.address_ + ":" +
            std::to_string(p.guest_port) + "\n";
  }
  rules += dnat + "  }\n  chain output { type nat hook output priority -100; policy accept;\n" + dnat + "  }\n";
  // Before the home's filter chains (priority filter), in net/egress.h's
  // order: a deny rejects for good; an allow marks, and the home's default
  // refusals pass marked packets. The defaults are in the order too, so a
  // broad allow does not open what they refuse: link-local everywhere, and
  // at the input hook (traffic to the host itself) each host address, which
  // only an allow of that one address (/32) opens.
  EgressPolicy defaults;
  defaults.deny.push_back({"169.254.0.0/16", 0});
  for (const auto& a : host_addresses()) defaults.deny.push_back(a);
  // By source address: at these (IP) hooks a box's packets come in on the
  // bridge, not on its veth port.
  const std::string from = "ip saddr " + out.address_ + " ";
  // Replies (to -p clients, whom the masquerade may show as the gateway)
  // belong to connections judged at their first packet.
  // Marked, as the home's refusals of link-local want to see it.
  std::string input = "    ct state established,related meta mark set " + std::string(kAllowMark) + " accept\n",
              forward = input;
  for (const auto& d : order_egress(egress, defaults, out.gateway_)) {
    std::string m = "    " + from + nft_match(d.rule);
    std::string verdict = d.allow ? m + "meta mark set " + kAllowMark + " accept\n"
                                  : m + "meta l4proto tcp reject with tcp reset\n" + m + "reject\n";
    // An allow wider than one address never opens the host (an address it
    // gains later included): the home's input chain refuses what is unmarked.
    if (!d.allow || d.rule.cidr.ends_with("/32")) input += verdict;
    forward += verdict;
  }
  rules += "  chain input { type filter hook input priority filter - 10; policy accept;\n" + input + "  }\n";
  rules += "  chain forward { type filter hook forward priority filter - 10; policy accept;\n" + forward + "  }\n}\n";
  // Its rules follow its address: the bridge (which sees the port) drops
  // what its veth sends from any other, so a box cannot borrow another's.
  rules += "table bridge " + t + " {}\ndelete table bridge " + t + "\ntable bridge " + t + " {\n";
  rules += "  chain prerouting { type filter hook prerouting priority filter; policy accept;\n";
  rules += "    iifname \"" + veth + "\" ether type ip ip saddr != " + out.address_ + " drop\n  }\n}\n";
  out.has_table_ = true;
  CUBBY_TRYV(nft(rules));
  return out;
}

void BridgeAttachment::detach() {
  if (box_id_.empty()) return;
  auto home_lock = lock_file(net_dir(home_) + "/lock", LOCK_EX);
  remove_box_objects(box_id_, has_table_);
  lease_.reset();  // the address is free
  remove_bridge_if_idle(home_);
  box_id_.clear();
}

std::string box_resolv_conf() {
  std::string in = read_file("/etc/resolv.conf", 64 * 1024).value_or(""), out;
  bool servers = false;
  for (size_t at = 0; at < in.size();) {
    size_t nl = in.find('\n', at);
    std::string line = in.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? in.size() : nl + 1;
    if (line.rfind("nameserver", 0) == 0) {
      std::string a = line.substr(line.find_first_not_of(" \t", 10) == std::string::npos ? line.size()
                                                                                        : line.find_first_not_of(" \t", 10));
      if (a.rfind("127.", 0) == 0 || a.rfind("::1", 0) == 0 || a.empty()) continue;
      servers = true;
    } else if (line.rfind("search", 0) != 0 && line.rfind("options", 0) != 0) {
      continue;
    }
    out += line + "\n";
  }
  return servers ? out : "";
}

void sweep_box(const std::string& home, const std::string& box_id) {
  if (::geteuid() != 0 || ::access((net_dir(home) + "/lock").c_str(), F_OK) != 0) return;  // never had one
  auto home_lock = lock_file(net_dir(home) + "/lock", LOCK_EX);
  if (::access(kNft, X_OK) != 0) return;
  remove_box_objects(box_id);
  remove_bridge_if_idle(home);
}

}  // namespace cubby::net
