#include "shim/network.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/log.h"
#include "base/ns.h"
#include "base/sys.h"
#include "net/egress.h"
#include "shim/network_tap.h"
#include "proto/transport.h"

namespace cubby::shim {

Network::~Network() {
  stop_helper();
  ::unlink((box_dir_ + "/" + kSlirpApiSocket).c_str());
}

void Network::stop_helper() {
  exit_w_.reset();  // slirp4netns --exit-fd: exits on EOF
  if (!helper_.valid()) return;
  (void)helper_.signal(SIGTERM);
  (void)helper_.wait();  // scoped: this child only
}

std::string Network::reap() {
  exit_w_.reset();
  if (!helper_.valid()) return "was gone";
  auto st = helper_.wait();
  if (!st) return "could not be reaped (" + st.error().message() + ")";
  if (st->signaled) return std::string("was killed by signal ") + std::to_string(st->signal) + " (" + ::strsignal(st->signal) + ")";
  return "exited with code " + std::to_string(st->code);
}

Result<void> Network::restart() {
  stop_helper();  // in case it still runs: never two helpers on one namespace
  return spawn_helper();
}

int NetnsFds::user_to_join() const { return same_file(user.get(), "/proc/self/ns/user") ? -1 : user.get(); }

Result<NetnsFds> open_netns_of(pid_t pid) {
  std::string base = "/proc/" + std::to_string(pid) + "/ns/";
  NetnsFds ns;
  ns.net.reset(::open((base + "net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.net) return sys_fail("open " + base + "net");
  ns.user.reset(::open((base + "user").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns.user) return sys_fail("open " + base + "user");
  return ns;
}

std::string user_network_helper() {
  for (const char* p : {"/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

namespace {

// Loads an nftables ruleset into the namespaces ns (nft joins them: as the
// owner of the box's user namespace, the caller has CAP_NET_ADMIN there).
Result<void> load_ruleset(const NetnsFds& ns, const std::string& ruleset) {
  SpawnSpec s;
  s.argv = {net::kNftPath, "-f", "-"};
  s.join_userns = ns.user_to_join();
  s.join_netns = ns.net.get();
  s.keep_net_admin = true;
  auto r = net::run_tool(std::move(s), ruleset);
  if (!r) return std::unexpected(r.error().wrap("load the egress policy"));
  return {};
}

// One request per connection: slirp4netns reads it, answers, and closes.
Result<void> add_hostfwd(const std::string& box_dir, const PortMapping& p) {
  proto::UnixTransport api(box_dir, kSlirpApiSocket);
  auto fd = CUBBY_TRY(api.connect());
  nlohmann::json req = {{"execute", "add_hostfwd"},
                        {"arguments",
                         {{"proto", p.proto}, {"host_addr", p.host_ip}, {"host_port", p.host_port},
                          {"guest_port", p.guest_port}}}};
  std::string text = req.dump();
  CUBBY_TRYV(sys::write_all(fd.get(), text.data(), text.size()));
  std::string reply;
  char buf[4096];
  for (;;) {
    if (!CUBBY_TRY(sys::wait_readable(fd.get(), std::chrono::seconds(30))))
      return fail(Error::timeout("publish " + to_string(p) + ": slirp4netns did not answer"));
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_fail("read the slirp4netns API reply");
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
    // slirp4netns parses box traffic: its answer is read like a peer's, bounded and checked.
    if (reply.size() > 65536) return fail(Error::internal("publish " + to_string(p) + ": oversized slirp4netns reply"));
  }
  auto j = nlohmann::json::parse(reply, nullptr, false);
  if (j.is_object() && j.contains("return")) return {};
  std::string why = reply;
  if (auto e = j.is_object() ? j.find("error") : j.end(); e != j.end() && e->is_object()) {
    if (auto d = e->find("desc"); d != e->end() && d->is_string()) why = d->get<std::string>();
  }
  return fail(Error::internal("publish " + to_string(p) + ": " + (why.empty() ? "no answer from slirp4netns" : why)));
}

}  // namespace

Result<void> Network::spawn_helper() {
  CUBBY_TRYV(start_helper());
  return await_ready();
}

Result<void> Network::start_helper() {
  std::string helper = user_network_helper();
  if (helper.empty()) return fail(Error::invalid("slirp4netns is not installed (apt-get install slirp4netns)"));
  // A socket a dead helper left behind would make the new one's bind fail.
  ::unlink((box_dir_ + "/" + kSlirpApiSocket).c_str());
  auto [ready_r, ready_w] = CUBBY_TRY(sys::make_pipe());
  auto [exit_r, exit_w] = CUBBY_TRY(sys::make_pipe());
  SpawnSpec s;
  // fds 3 and 4 in the helper: ready and exit pipes; 5 and 6 the namespaces
  // it joins (--netns-type=path: by our fds, never by a pid that may be gone).
  // The API socket is bound before --enable-sandbox pivots into an empty
  // root, so its relative path is resolved here, in box_dir, once.
  // tap0 is ours and persistent (shim/network_tap.h), so the helper's exit
  // does not wait for the kernel to unregister it. Made once: a helper
  // started again attaches to it as it is, address and routes included
  // (--configure again would fail on the route that exists).
  // The egress policy needs the tap (its egress hook is tap0's) and is in
  // place before the helper carries a packet.
  bool configure = true;
  if (!tap_) {
    auto t = make_persistent_tap(ns_, "tap0");
    if (!t) return std::unexpected(t.error().wrap("make tap0"));
    tap_ = true;
    CUBBY_TRYV(load_ruleset(ns_, policy_.ruleset));
    if (policy_.dns_proxy) {
      auto proxy = DnsProxy::start(ns_, policy_.rules, policy_.upstreams);
      if (!proxy) return std::unexpected(proxy.error().wrap("start the box's DNS proxy"));
      dns_ = std::move(*proxy);
    }
  } else {
    configure = false;
  }
  s.argv = {helper, "--mtu=65520", "--enable-sandbox", "--enable-seccomp",
            "--ready-fd=3", "--exit-fd=4", std::string("--api-socket=") + kSlirpApiSocket, "--netns-type=path",
            "--userns-path=/proc/self/fd/6", "/proc/self/fd/5", "tap0"};
  if (configure) s.argv.insert(s.argv.begin() + 1, "--configure");
  if (!policy_.host_loopback) s.argv.insert(s.argv.begin() + 1, "--disable-host-loopback");
  s.cwd = box_dir_;  // a relative API socket path never hits sun_path's 108 bytes
  s.umask = 077;     // the API socket (it adds port forwards) is the owner's alone
  s.fds = {-1, -1, 2, ready_w.get(), exit_r.get(), ns_.net.get(), ns_.user.get()};
  s.die_with_parent = true;
  helper_ = CUBBY_TRY(spawn(s));
  exit_w_ = std::move(exit_w);
  ready_r_ = std::move(ready_r);
  return {};
}

Result<void> Network::await_ready() {
  if (!ready_r_) return {};  // already ready
  // slirp4netns writes "1" once tap0 is configured; EOF means it failed.
  auto ready = CUBBY_TRY(sys::wait_readable(ready_r_.get(), std::chrono::seconds(30)));
  char b = 0;
  if (!ready || ::read(ready_r_.get(), &b, 1) != 1) return fail(Error::internal("slirp4netns did not become ready"));
  ready_r_.reset();
  for (const auto& p : ports_) CUBBY_TRYV(add_hostfwd(box_dir_, p));
  return {};
}

Result<std::unique_ptr<Network>> start_user_network(NetnsFds ns, const std::string& box_dir,
                                                    const std::vector<PortMapping>& ports, UserNetworkPolicy policy,
                                                    bool defer_ready) {
  std::unique_ptr<Network> net(new Network(std::move(ns), box_dir, ports, std::move(policy)));
  CUBBY_TRYV(net->start_helper());
  if (!defer_ready) CUBBY_TRYV(net->await_ready());
  return net;
}

Result<UserNetworkPolicy> user_network_policy(const std::vector<std::string>& allow,
                                              const std::vector<std::string>& deny,
                                              const std::vector<std::string>& dns) {
  auto box = CUBBY_TRY(net::parse_egress_policy(allow, deny));
  if (::access(net::kNftPath, X_OK) != 0)
    return fail(Error::invalid("--network default enforces the box's egress policy with nft, which is not installed "
                               "(apt-get install nftables), or use --network none"));
  UserNetworkPolicy p{net::user_network_ruleset(box, "tap0", kSlirpHostAlias), net::allows_host_alias(box)};
  if (net::has_name_rules(box)) {
    p.dns_proxy = true;
    p.upstreams = dns_upstreams(dns);
    p.rules = std::move(box);
  }
  return p;
}

}  // namespace cubby::shim
