// cubby-agent as /init of a micro-VM (the vm backend's initramfs).
//
// PID 1 (this file) prepares the guest: mounts proc, sys and devtmpfs,
// loads the virtio modules with finit_module (no kmod in the guest), opens
// the virtio-serial port named "cubby" once, reads its config from the
// control channel, mounts the image disk (ext4 labelled cubby-image,
// read-only) under an overlay whose upper is the box's disk (cubby-rw), mounts
// the -v volumes' virtio-fs tags, and forks the ordinary agent Server into it (a
// child subreaper, in its own mount namespace, switch_root'ed). The Server
// listens on an abstract Unix socket; PID 1 is the guest half of the
// multiplexer: a frame on an unknown channel opens a new local session, a
// {"t":"close"} frame ends one. When the Server exits, PID 1 forwards what is
// left, sends {"t":"exit","code":N} on the control channel, notes the code
// in the kernel log (dmesg, not the console: the box's logs show only what
// the kernel and the workload say) and powers off, quietly.
#include "agent/vm_init.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <dirent.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <linux/random.h>
#include <time.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <functional>
#include <iterator>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "agent/box_init.h"
#include "agent/config.h"
#include "agent/server.h"
#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "proto/mux.h"
#include "proto/vm_snapshot.h"

namespace cubby::agent {
namespace {

using proto::Json;
namespace mux = proto::mux;
namespace vm_snapshot = proto::vm_snapshot;

constexpr char kSessionSocket[] = "cubby-agent-sessions";  // abstract

[[noreturn]] void power_off(int code) {
  char line[64];
  int n = std::snprintf(line, sizeof line, "<7>cubby-init: exit %d\n", code);  // KERN_DEBUG: below `quiet`
  if (int kmsg = ::open("/dev/kmsg", O_WRONLY | O_CLOEXEC); kmsg >= 0) {
    (void)!::write(kmsg, line, static_cast<size_t>(n));
    ::close(kmsg);
  }
  ::sync();
  // The kernel's own "reboot: Power down" is an emergency-level line that
  // `quiet` keeps; the workload is over, so the console goes silent first.
  if (int printk = ::open("/proc/sys/kernel/printk", O_WRONLY | O_CLOEXEC); printk >= 0) {
    (void)!::write(printk, "0", 1);
    ::close(printk);
  }
  ::reboot(RB_POWER_OFF);
  for (;;) ::pause();
}

// Kernel uevents (NETLINK_KOBJECT_UEVENT), opened before the modules load so
// no device event can be missed. Devices that appear asynchronously (the
// virtio-serial port, disks, eth0) are waited for by re-checking sysfs after
// each event: no polling loop, and the deadline is only a backstop.
UniqueFd g_uevents;

void open_uevents() {
  g_uevents.reset(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT));
  sockaddr_nl a{};
  a.nl_family = AF_NETLINK;
  a.nl_groups = 1;  // kernel broadcasts
  if (g_uevents && ::bind(g_uevents.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) g_uevents.reset();
}

template <typename F>
auto wait_for_device(F probe, std::chrono::milliseconds backstop) -> decltype(probe()) {
  auto deadline = std::chrono::steady_clock::now() + backstop;
  for (;;) {
    if (auto found = probe(); !found.empty()) return found;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !g_uevents) return {};
    pollfd p{g_uevents.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;  // re-probe once more, then give up
    char buf[8192];
    while (::recv(g_uevents.get(), buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
  }
}

void load_modules(const char* list = "/modules.order") {
  std::ifstream order(list);
  std::string m;
  while (std::getline(order, m)) {
    if (m.empty()) continue;
    std::string p = "/lib/modules/" + m;
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::syscall(SYS_finit_module, fd, "", 0) < 0) {
      if (errno != EEXIST) LOG_WARN("load module {}: {}", m, std::strerror(errno));
    }
    if (fd >= 0) ::close(fd);
  }
}

// /sys/class/virtio-ports/vportNpM/name == "cubby" -> /dev/vportNpM. The
// port appears asynchronously after virtio_console probes, so poll briefly.
std::string probe_port() {
  if (DIR* d = ::opendir("/sys/class/virtio-ports")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(std::string("/sys/class/virtio-ports/") + e->d_name + "/name");
      std::string name;
      if (std::getline(f, name) && name == mux::kPortName) {
        std::string dev = std::string("/dev/") + e->d_name;
        ::closedir(d);
        return dev;
      }
    }
    ::closedir(d);
  }
  return "";
}

std::string find_port() { return wait_for_device(probe_port, std::chrono::seconds(10)); }

// The virtio disk whose ext4 label is `label` (the shim labels them; the
// order of virtio-mmio devices is not something to rely on), or "".
std::string probe_disk(const std::string& label) {
  if (DIR* d = ::opendir("/sys/block")) {
    while (dirent* e = ::readdir(d)) {
      if (std::strncmp(e->d_name, "vd", 2) != 0) continue;
      std::string dev = std::string("/dev/") + e->d_name;
      int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      char name[17] = {};
      bool ok = ::pread(fd, name, 16, 1024 + 120) == 16;  // ext4 s_volume_name
      ::close(fd);
      if (ok && label == name) {
        ::closedir(d);
        return dev;
      }
    }
    ::closedir(d);
  }
  return "";
}

std::string find_disk(const std::string& label, std::chrono::milliseconds backstop) {
  return wait_for_device([&] { return probe_disk(label); }, backstop);
}

// --network default: QEMU user networking (slirp) on eth0, with slirp's
// fixed addresses: guest 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3.
bool configure_eth0() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) return false;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
  bool found = !wait_for_device(
                     [&]() -> std::string { return ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) == 0 ? "eth0" : ""; },
                     std::chrono::seconds(2))
                     .empty();
  if (!found) return false;
  auto set_addr = [&](unsigned long req, const char* ip) {
    ifreq r{};
    std::strncpy(r.ifr_name, "eth0", IFNAMSIZ - 1);
    auto* a = reinterpret_cast<sockaddr_in*>(&r.ifr_addr);
    a->sin_family = AF_INET;
    ::inet_pton(AF_INET, ip, &a->sin_addr);
    return ::ioctl(s.get(), req, &r) == 0;
  };
  if (!set_addr(SIOCSIFADDR, "10.0.2.15") || !set_addr(SIOCSIFNETMASK, "255.255.255.0")) return false;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) < 0) return false;
  rtentry rt{};
  auto* dst = reinterpret_cast<sockaddr_in*>(&rt.rt_dst);
  auto* gw = reinterpret_cast<sockaddr_in*>(&rt.rt_gateway);
  auto* mask = reinterpret_cast<sockaddr_in*>(&rt.rt_genmask);
  dst->sin_family = gw->sin_family = mask->sin_family = AF_INET;
  ::inet_pton(AF_INET, "10.0.2.2", &gw->sin_addr);
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  return ::ioctl(s.get(), SIOCADDRT, &rt) == 0;
}

// -v volumes: each is a virtio-fs tag the shim's virtiofsd serves, mounted
// here (in PID 1's namespace) and bound onto its box path by the Server's
// rootfs set-up like a sandbox volume (resolved inside the rootfs, :ro
// remounted read-only; virtiofsd's source is read-only on the host too).
bool mount_volumes_from(const Json& cfg, RootfsPlan& plan) {
  const auto& vols = cfg.value("volumes", Json::array());
  if (vols.empty()) return true;
  load_modules("/modules.fs");  // fuse, virtiofs: only boxes with volumes load them
  ::mkdir("/volumes", 0755);
  for (size_t i = 0; i < vols.size(); ++i) {
    const std::string tag = vols[i].at("tag").get<std::string>();
    const bool ro = vols[i].value("read_only", false);
    const std::string at = "/volumes/" + std::to_string(i);
    ::mkdir(at.c_str(), 0755);
    if (::mount(tag.c_str(), at.c_str(), "virtiofs", (ro ? MS_RDONLY : 0) | MS_NODEV, nullptr) < 0) {
      LOG_ERROR("mount virtio-fs {} for volume {}: {}", tag, vols[i].at("target").get<std::string>(),
                std::strerror(errno));
      return false;
    }
    plan.volumes.push_back({at, vols[i].at("target").get<std::string>(), ro, UniqueFd()});
  }
  return true;
}

sockaddr_un session_addr(socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, kSessionSocket, sizeof kSessionSocket - 1);
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + sizeof kSessionSocket - 1);
  return a;
}

void write_port(int fd, const std::string& bytes) {
  if (bytes.empty()) return;
  if (auto r = sys::write_all(fd, bytes.data(), bytes.size()); !r) LOG_WARN("write port: {}", r.error().message());
}

// What makes this guest a box of its own, applied before anything reads a
// disk's label or runs workload code. A VM restored from a template (issue
// 14) wakes with its siblings' memory: the same kernel RNG state, clock and
// cached disk blocks. So: the host's seed is mixed into the RNG and the CRNG
// reseeded from it; a restored guest's clock is set to the host's time; and
// every virtio disk's buffer cache is dropped, so its superblock and label
// are read from this box's own disk, not remembered from the template's.
// (On a cold boot this drops nothing the kernel needs, and the seed only
// adds to its entropy.)
// The host's seed into the RNG, and the host's time (a restore's clock
// stood still since its snapshot).
void seed_and_set_clock(const Json& cfg) {
  if (auto seed = cfg.find("seed"); seed != cfg.end() && seed->is_string() && seed->get<std::string>().size() == 64) {
    struct {
      int entropy_count;
      int buf_size;
      unsigned char buf[32];
    } e{};
    const std::string hex = seed->get<std::string>();
    bool ok = true;
    for (size_t i = 0; i < 32 && ok; ++i) {
      unsigned v = 0;
      ok = std::sscanf(hex.c_str() + 2 * i, "%2x", &v) == 1;
      e.buf[i] = static_cast<unsigned char>(v);
    }
    e.entropy_count = 256;
    e.buf_size = 32;
    int fd = ::open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (ok && fd >= 0) {
      if (::ioctl(fd, RNDADDENTROPY, &e) < 0) LOG_WARN("seed the RNG: {}", std::strerror(errno));
      if (::ioctl(fd, RNDRESEEDCRNG) < 0) LOG_WARN("reseed the CRNG: {}", std::strerror(errno));
    }
    if (fd >= 0) ::close(fd);
  }
  if (auto now = cfg.find("now_ns"); now != cfg.end() && now->is_number_unsigned()) {
    uint64_t ns = now->get<uint64_t>();
    timespec ts{static_cast<time_t>(ns / 1000000000u), static_cast<long>(ns % 1000000000u)};
    if (::clock_settime(CLOCK_REALTIME, &ts) < 0) LOG_WARN("set the clock: {}", std::strerror(errno));
  }
}

void apply_identity(const Json& cfg) {
  seed_and_set_clock(cfg);
  if (DIR* d = ::opendir("/sys/block")) {
    while (dirent* de = ::readdir(d)) {
      if (std::strncmp(de->d_name, "vd", 2) != 0) continue;
      int fd = ::open(("/dev/" + std::string(de->d_name)).c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      if (::ioctl(fd, BLKFLSBUF, 0) < 0) LOG_WARN("drop /dev/{}'s cache: {}", de->d_name, std::strerror(errno));
      ::close(fd);
    }
    ::closedir(d);
  }
}

// A copy restored from a running box's snapshot (proto/vm_snapshot.h) is a
// box of its own: a fresh RNG state and the host's clock, its own hostname
// (the kernel's and, through the agent server's root, /etc/hostname and
// /etc/hosts as box_init wrote them), and a fresh /etc/machine-id where the
// image has one. `root` is the server's view of the box's filesystem
// (/proc/<server>/root: pid 1 lives outside the box's mount namespace).
void apply_restored_identity(const Json& m, const std::string& root) {
  seed_and_set_clock(m);
  auto h = m.find("hostname");
  if (h == m.end() || !h->is_string() || h->get<std::string>().empty()) return;
  const std::string name = h->get<std::string>();
  char old[HOST_NAME_MAX + 1] = {};
  (void)::gethostname(old, sizeof old - 1);
  if (::sethostname(name.c_str(), name.size()) < 0) LOG_WARN("sethostname: {}", std::strerror(errno));
  // The box's files are the workload's: resolved inside its root (a
  // symlink cannot lead pid 1 to the guest's own files), regular files only
  // (a FIFO would hold pid 1), never more than a few KiB read.
  UniqueFd root_fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd) return;
  auto rewrite = [&](const char* path, const std::function<std::string(const std::string&)>& edit) {
    UniqueFd fd = open_resolved(root_fd.get(), path, O_RDWR | O_NONBLOCK | O_NOFOLLOW,
                                RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 65536) return;
    std::string text(static_cast<size_t>(st.st_size), '\0');
    if (::pread(fd.get(), text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) return;
    std::string out = edit(text);
    if (out == text) return;
    if (::ftruncate(fd.get(), 0) < 0 || ::pwrite(fd.get(), out.data(), out.size(), 0) != static_cast<ssize_t>(out.size()))
      LOG_WARN("rewrite {}: {}", path, std::strerror(errno));
  };
  rewrite("etc/hostname", [&](const std::string& t) { return t == std::string(old) + "\n" ? name + "\n" : t; });
  rewrite("etc/hosts", [&](const std::string& t) {
    const std::string from = "127.0.1.1\t" + std::string(old) + "\n";
    std::string out = t;
    if (auto at = out.find(from); at != std::string::npos) out.replace(at, from.size(), "127.0.1.1\t" + name + "\n");
    return out;
  });
  rewrite("etc/machine-id", [&](const std::string& t) {
    if (t.empty()) return t;  // systemd's "uninitialised": left to it
    std::string id(16, '\0');
    if (::getrandom(id.data(), id.size(), 0) != static_cast<ssize_t>(id.size())) return t;
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : id) hex += {kHex[c >> 4], kHex[c & 15]};
    return hex + "\n";
  });
}

struct Local {
  UniqueFd fd;
  mux::RawSplitter split;
  std::string out;  // frames for the local session, not yet taken
  bool closing = false;
  uint64_t in_flight = 0;  // our frames on this channel the host has not acked
  mux::AckCounter acks;    // host frames we delivered to the session
};

// Non-blocking write of as much of buf as the socket takes; false: peer
// gone. `written` gets how many bytes went.
bool write_some(int fd, std::string& buf, size_t& written) {
  written = 0;
  while (!buf.empty()) {
    ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
    if (n > 0) {
      buf.erase(0, static_cast<size_t>(n));
      written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    buf.clear();
    return false;
  }
  return true;
}

}  // namespace

bool is_vm_init() {
  if (::getpid() != 1) return false;
  // In a sandbox the agent is PID 1 too, but it is started as "cubby-agent
  // init" with /proc already mounted by nobody: tell them apart by /proc.
  return ::access("/proc/self", F_OK) != 0;
}

void run_vm_init() {
  ::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  ::mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  ::mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  int con = ::open("/dev/console", O_RDWR | O_CLOEXEC);  // dup2'd to 0-2, which clears CLOEXEC
  if (con >= 0) {
    for (int i = 0; i < 3; ++i) ::dup2(con, i);
    if (con > 2) ::close(con);
  }
  log::set_prefix("cubby-agent[vm]");
  open_uevents();
  load_modules();
  // Report freed guest memory to the host in 32 KiB chunks rather than 2 MiB
  // pageblocks (virtio-balloon free page reporting): a guest's free memory is
  // fragmented, and only reported pages leave the host's RSS. Set after the
  // balloon driver registered, which resets the order.
  if (int fd = ::open("/sys/module/page_reporting/parameters/page_reporting_order", O_WRONLY | O_CLOEXEC); fd >= 0) {
    (void)!::write(fd, "3", 1);
    ::close(fd);
  }
  std::string port = find_port();
  if (port.empty()) {
    LOG_ERROR("virtio-serial port \"{}\" not found", mux::kPortName);
    power_off(125);
  }
  UniqueFd io(::open(port.c_str(), O_RDWR | O_CLOEXEC));
  if (!io) {
    LOG_ERROR("open {}: {}", port, std::strerror(errno));
    power_off(125);
  }

  // Nothing box-specific has been touched yet: the host may snapshot this
  // VM now as a template (issue 14) and restore it for each box of its key.
  write_port(io.get(), proto::encode({{"t", proto::msg::kRendezvous}}, mux::kControlChannel));
  // The config comes first, on the control channel.
  mux::RawSplitter split;
  Json cfg;
  std::vector<mux::RawFrame> early;  // session frames that raced the config
  while (cfg.is_null()) {
    char buf[65536];
    ssize_t n = ::read(io.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) power_off(125);
    split.feed(buf, static_cast<size_t>(n));
    for (;;) {
      auto f = split.next();
      if (!f) power_off(125);
      if (!*f) break;
      if ((*f)->channel != mux::kControlChannel) {
        early.push_back(std::move(**f));
        continue;
      }
      auto m = mux::decode((*f)->bytes);
      if (!m || proto::msg::type_of(*m) != proto::msg::kConfig) continue;
      auto c = proto::msg::decode<proto::msg::Config>(*m);
      if (!c) {
        LOG_ERROR("bad config: {}", c.error().message());
        power_off(125);
      }
      cfg = std::move(c->cfg);
    }
  }

  apply_identity(cfg);
  AgentOptions opts;
  RootfsPlan plan;
  try {
    read_common_config(cfg, opts, plan);
    if (!mount_volumes_from(cfg, plan)) power_off(125);
  } catch (const std::exception& e) {
    LOG_ERROR("bad config: {}", e.what());
    power_off(125);
  }
  if (plan.network_default && !configure_eth0()) LOG_WARN("--network default: could not configure eth0");
  // Root: the image disk read-only under an overlay whose upper layer is
  // the box's own disk (so writes survive stop/start), or a tmpfs if the
  // shim attached none.
  ::mkdir("/lower", 0755);
  ::mkdir("/run", 0755);
  // An OCI bundle's rootfs (cubby-runc) is a virtio-fs tag instead.
  const std::string root_tag = cfg.value("root_tag", std::string());
  if (!root_tag.empty()) {
    load_modules("/modules.fs");
    if (::mount(root_tag.c_str(), "/lower", "virtiofs", MS_RDONLY | MS_NODEV, nullptr) < 0) {
      LOG_ERROR("mount the bundle's rootfs (virtio-fs {}): {}", root_tag, std::strerror(errno));
      power_off(125);
    }
  }
  std::string image = root_tag.empty() ? find_disk("cubby-image", std::chrono::seconds(3)) : "";
  if (root_tag.empty() && (image.empty() || ::mount(image.c_str(), "/lower", "ext4", MS_RDONLY, nullptr) < 0)) {
    LOG_ERROR("mount the image disk ({}): {}", image.empty() ? "no disk labelled cubby-image" : image,
              std::strerror(errno));
    power_off(125);
  }
  std::string rw = find_disk("cubby-rw", std::chrono::milliseconds(0));
  g_uevents.reset();  // every device we wait for is there (or never will be)
  if (rw.empty() || ::mount(rw.c_str(), "/run", "ext4", MS_NOATIME, nullptr) < 0) {
    if (!rw.empty()) LOG_WARN("mount the box disk {}: {}; writes will not persist", rw, std::strerror(errno));
    ::mount("tmpfs", "/run", "tmpfs", 0, "mode=0755");
  }
  ::mkdir("/run/upper", 0755);
  ::mkdir("/run/work", 0755);
  ::mkdir("/newroot", 0755);
  plan.lower = {"/lower"};
  plan.upper = "/run/upper";
  plan.work = "/run/work";
  plan.target = "/newroot";
  plan.switch_root = true;

  socklen_t alen;
  sockaddr_un addr = session_addr(alen);
  UniqueFd listen(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listen || ::bind(listen.get(), reinterpret_cast<sockaddr*>(&addr), alen) < 0 || ::listen(listen.get(), 128) < 0) {
    LOG_ERROR("session socket: {}", std::strerror(errno));
    power_off(125);
  }
  auto logp = sys::make_pipe();
  auto gop = sys::make_pipe();
  if (!logp || !gop) power_off(125);
  auto [log_r, log_w] = std::move(*logp);
  auto [go_r, go_w] = std::move(*gop);

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  UniqueFd sigfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));

  pid_t server = ::fork();
  if (server == 0) {
    ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    io.reset();
    log_r.reset();
    go_w.reset();
    if (::unshare(CLONE_NEWNS) < 0) {
      LOG_ERROR("unshare mount namespace: {}", std::strerror(errno));
      ::_exit(125);
    }
    if (auto ok = setup_sandbox_root(plan); !ok) {
      LOG_ERROR("set up rootfs: {}", ok.error().message());
      ::_exit(125);
    }
    (void)bring_up_loopback();
    Server s(std::move(opts), std::move(listen), std::move(log_w), std::move(go_r));
    ::_exit(s.run());
  }
  if (server < 0) power_off(125);
  listen.reset();
  log_w.reset();
  go_r.reset();

  std::map<uint32_t, Local> locals;
  bool quiesced = false;  // a snapshot is being taken (proto/vm_snapshot.h)
  auto to_local = [&](mux::RawFrame& f) {
    auto it = locals.find(f.channel);
    if (mux::is_close(f.bytes)) {
      if (it != locals.end()) it->second.closing = true;  // once what it is owed is written
      return;
    }
    if (uint64_t n = mux::ack_bytes(f.bytes)) {
      if (it != locals.end()) it->second.in_flight -= std::min(n, it->second.in_flight);
      return;
    }
    if (it == locals.end()) {
      Local l;
      l.fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      socklen_t al;
      sockaddr_un a = session_addr(al);
      if (::connect(l.fd.get(), reinterpret_cast<sockaddr*>(&a), al) < 0) {
        write_port(io.get(), proto::encode({{"t", mux::kClose}}, f.channel));
        return;
      }
      it = locals.emplace(f.channel, std::move(l)).first;
    }
    // Buffered, never a blocking write: the session's own output must keep
    // flowing while its input waits. The host sends at most a window ahead.
    mux::set_channel(f.bytes, 0);
    it->second.out += f.bytes;
  };
  auto from_local = [&](uint32_t ch, Local& l) -> bool {  // false: closed
    char buf[65536];
    ssize_t n = ::read(l.fd.get(), buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
    if (n <= 0) {
      write_port(io.get(), proto::encode({{"t", mux::kClose}}, ch));
      return false;
    }
    l.split.feed(buf, static_cast<size_t>(n));
    std::string out;
    for (;;) {
      auto f = l.split.next();
      if (!f || !*f) break;
      mux::set_channel((*f)->bytes, ch);
      out += (*f)->bytes;
    }
    l.in_flight += out.size();
    write_port(io.get(), out);
    return true;
  };
  auto forward_log = [&]() -> bool {
    char buf[32768];
    ssize_t n = ::read(log_r.get(), buf, sizeof buf);
    if (n <= 0) return false;
    Json m = {{"t", "log"}, {"d", Json::binary(std::vector<uint8_t>(buf, buf + n))}};
    write_port(io.get(), proto::encode(m, mux::kControlChannel));
    return true;
  };
  auto on_control = [&](const mux::RawFrame& f) {
    auto m = mux::decode(f.bytes);
    if (!m) return;
    std::string_view t = proto::msg::type_of(*m);
    if (t == proto::msg::kGo) {
      char b = 'g';
      (void)sys::write_all(go_w.get(), &b, 1);
    } else if (t == proto::msg::kSignal) {
      if (auto s = proto::msg::decode<proto::msg::Signal>(*m)) ::kill(server, s->sig);
    } else if (t == vm_snapshot::kQuiesce) {
      // Everything the host sent before this has been read: our last frame
      // until we hear again (see proto/vm_snapshot.h).
      write_port(io.get(), proto::encode({{"t", vm_snapshot::kQuiesced}}, mux::kControlChannel));
      quiesced = true;
    } else if (t == vm_snapshot::kResume) {
      quiesced = false;
    } else if (t == vm_snapshot::kRestored) {
      // A copy: the sessions' clients were the original's, and its host
      // sent their frames to the original. They end here (their processes
      // see their session close, as when a client goes away).
      apply_restored_identity(*m, "/proc/" + std::to_string(server) + "/root");
      locals.clear();
      quiesced = false;
    }
  };
  for (auto& f : early) to_local(f);
  early.clear();
  size_t written;
  for (auto& [ch, l] : locals) {
    write_some(l.fd.get(), l.out, written);
    write_port(io.get(), l.acks.add(ch, written));
  }

  int code = -1;
  bool host_open = true;
  while (code < 0) {
    // Quiesced: only the port is read, for the frame that ends it; nothing
    // is written (not even an exit: the children wait in the signalfd).
    std::vector<pollfd> pfds = {{host_open ? io.get() : -1, POLLIN, 0},
                                {quiesced ? -1 : sigfd.get(), POLLIN, 0},
                                {log_r && !quiesced ? log_r.get() : -1, POLLIN, 0}};
    std::vector<uint32_t> chans;
    for (auto& [ch, l] : locals) {
      // Out of credit: the session's output waits in its socket (and then
      // in the agent, which stops reading the process) until the host acks.
      short in = l.in_flight < mux::kWindow ? POLLIN : 0;
      pfds.push_back({quiesced ? -1 : l.fd.get(), static_cast<short>(in | (l.out.empty() ? 0 : POLLOUT)), 0});
      chans.push_back(ch);
    }
    if (::poll(pfds.data(), pfds.size(), -1) < 0) continue;
    if (pfds[0].revents) {
      char buf[65536];
      ssize_t n = ::read(io.get(), buf, sizeof buf);
      if (n > 0) {
        split.feed(buf, static_cast<size_t>(n));
        for (;;) {
          auto f = split.next();
          if (!f || !*f) break;
          if ((*f)->channel == mux::kControlChannel)
            on_control(**f);
          else
            to_local(**f);
        }
      }
      // n == 0: the host end is gone. The shim holds it (a socketpair) for
      // the VM's whole life, so this means the shim died and QEMU dies with
      // it; stop watching the port (it would report EOF forever) instead of
      // spinning or napping.
      if (n == 0) host_open = false;
    }
    // (A quiesce read above may have come with other fds ready: they wait.)
    if (quiesced) continue;
    if (pfds[2].revents) {
      if (!forward_log()) log_r.reset();
    }
    for (size_t i = 3; i < pfds.size(); ++i) {
      if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto it = locals.find(chans[i - 3]);
      if (it != locals.end() && !from_local(it->first, it->second)) locals.erase(it);
    }
    for (auto it = locals.begin(); it != locals.end();) {
      bool alive = write_some(it->second.fd.get(), it->second.out, written);
      if (alive) write_port(io.get(), it->second.acks.add(it->first, written));
      if (!alive || (it->second.closing && it->second.out.empty()))
        it = locals.erase(it);
      else
        ++it;
    }
    if (pfds[1].revents) {
      signalfd_siginfo si;
      while (::read(sigfd.get(), &si, sizeof si) == sizeof si) {
      }
      int st;
      pid_t p;
      while ((p = ::waitpid(-1, &st, WNOHANG)) > 0)
        if (p == server) code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
  }
  // The Server has exited: its sockets are closed, so what it wrote is all
  // readable now. Forward it, then the exit.
  while (log_r && forward_log()) {
  }
  for (auto& [ch, l] : locals) {
    while (from_local(ch, l)) {
      pollfd p{l.fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
    }
  }
  write_port(io.get(), proto::encode({{"t", "exit"}, {"code", code}}, mux::kControlChannel));
  power_off(code);
}

}  // namespace cubby::agent
