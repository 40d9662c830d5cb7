// The vm backend: the box is a QEMU microvm (its own guest kernel), started
// as the shim's child. The guest's /init is cubby-agent (agent/vm_init.cc),
// reached over one virtio-serial port. QEMU gets one end of a socketpair as
// the port's chardev (no socket path, no connect race, nothing left behind);
// the shim serves <box_dir>/agent.sock itself (bound before QEMU starts:
// early bind) and multiplexes every accepted connection onto a channel of
// that single stream, so the runtime and the CLI talk to a vm box exactly
// as to a sandbox.
//
// Root filesystem: a cached read-only ext4 of the image's flattened layers
// plus a per-box writable ext4 (shim/vm_disk.h), both virtio-blk, found in
// the guest by label and joined there by overlayfs. `-v` volumes are
// virtio-fs (shim/virtiofs.h): a virtiofsd per volume, guest RAM a shared
// memfd (vhost-user maps it), modern virtio-mmio (libvhost-user refuses
// legacy devices).
//
// QEMU parses everything the guest sends, so it runs confined: a uid and gid
// of its own with no capabilities and no_new_privs, QEMU's seccomp sandbox,
// and a network namespace of its own (see launch()). It opens nothing by a
// path in the home: its disks, kernel and initramfs arrive as fds.
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/process.h"
#include "base/sys.h"
#include "hypervisor/kvm_probe.h"
#include "proto/mux.h"
#include "proto/transport.h"
#include "proto/vm_snapshot.h"
#include "shim/backend.h"
#include "proto/logfile.h"
#include "shim/box_log.h"
#include "net/names.h"
#include "shim/network.h"
#include "shim/qmp.h"
#include "shim/virtiofs.h"
#include "shim/vm_disk.h"
#include "shim/vm_template.h"

namespace cubby::shim {
namespace {

namespace mux = proto::mux;
namespace vm_snapshot = proto::vm_snapshot;
using proto::Json;

// QEMU's uid and gid: this base plus the shim's pid, so unique among live
// boxes (QEMU never outlives its shim: PDEATHSIG). No host file is owned by
// it and no other process runs as it, so a guest that took QEMU over can
// neither read nor signal nor ptrace another box's QEMU (a shared "nobody"
// could: this kernel has no Yama). The range sits above systemd's container
// uid range (0x00080000-0x6fffffff).
constexpr uid_t kVmmIdBase = 0x70000000;

// Within QEMU's own network namespace, -p mapping i arrives from the
// slirp4netns uplink on this port plus i (unprivileged: QEMU has no
// CAP_NET_BIND_SERVICE) and QEMU's hostfwd takes it on to the guest.
constexpr uint16_t kUplinkPortBase = 10000;

// microvm's virtio-mmio slots (24) less the five the box always may use.
constexpr size_t kMaxVolumes = 16;
// The virtio-fs tag of an OCI bundle's rootfs.
constexpr const char* kRootTag = "cubby-root";

// QEMU's seccomp filter: its default deny list plus no obsolete syscalls, no
// set*id, no fork/exec and no scheduler or priority changes.
constexpr const char* kQemuSandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

// A value inside one of QEMU's "key=value,..." options: commas are doubled.
std::string qemu_opt_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

// Who QEMU runs as. Under KVM it must open /dev/kvm (QEMU 7.2 takes no fd
// for it): through the device's group when that group may read and write
// it (Debian's udev rule: root:kvm 0660); a root-only node leaves QEMU uid 0,
// still without a capability, so with no more than the owner's rights.
std::optional<SpawnSpec::Credentials> vmm_credentials(const std::string& accel) {
  auto id = static_cast<uid_t>(kVmmIdBase + static_cast<uid_t>(::getpid()));
  SpawnSpec::Credentials c{id, id, {}};
  if (accel != "kvm") return c;
  struct stat st;
  if (::stat("/dev/kvm", &st) == 0 && (st.st_mode & 060) == 060 && st.st_gid != 0) {
    c.groups.push_back(st.st_gid);
    return c;
  }
  LOG_WARN("/dev/kvm is not group read-write: QEMU keeps uid 0 (without capabilities)");
  return std::nullopt;
}

// n bytes of the host's CSPRNG, as lowercase hex.
Result<std::string> random_hex(size_t n) {
  std::string bytes(n, '\0');
  for (size_t got = 0; got < n;) {
    ssize_t r = ::getrandom(bytes.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return sys_fail("getrandom");
    got += static_cast<size_t>(r);
  }
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex += kDigits[c >> 4];
    hex += kDigits[c & 15];
  }
  return hex;
}

Result<UniqueFd> open_for_qemu(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  return fd;
}

std::string host_tsc_khz() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("cpu MHz", 0) == 0) {
      auto c = line.find(':');
      if (c == std::string::npos) break;
      double mhz = std::atof(line.c_str() + c + 1);
      if (mhz > 0) return std::to_string(static_cast<long>(mhz * 1000));
    }
  }
  return "";
}

// Until QEMU's MIGRATION event says completed (or failed: an error).
Result<void> await_migration(Qmp& qmp) {
  auto status = [](const Json& d) {
    auto it = d.find("status");
    return it != d.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto ev = CUBBY_TRY(qmp.await_event("MIGRATION", [&](const Json& d) {
    auto st = status(d);
    return st == "completed" || st == "failed" || st == "cancelled";
  }, std::chrono::seconds(120)));
  if (status(ev) != "completed") return fail(Error(ErrorKind::kSystem, "QEMU's migration " + status(ev)));
  return {};
}

// `cont` once a migration is over. QEMU sends MIGRATION "completed" just
// before its migration thread leaves the finish-migrate run state, and no
// event when it does: until then `cont` says "Migration is not finalized
// yet", so that one answer is asked again (each try a round trip with QEMU,
// a bounded number of them).
Result<void> resume_after_migration(Qmp& qmp) {
  for (int tries = 0;; ++tries) {
    auto r = qmp.execute("cont");
    if (r) return {};
    if (tries >= 100000 || r.error().message().find("not finalized") == std::string::npos) return std::unexpected(r.error());
  }
}

// CUBBY_VM_TEMPLATES=0 turns templates off (every vm box boots cold).
bool templates_enabled() {
  const char* e = std::getenv("CUBBY_VM_TEMPLATES");
  return !e || std::string(e) != "0";
}

// The host half of the session multiplexer (a thread of the shim).
class HostMux {
 public:
  // What a session whose first frame is kVmPause asks for (run on the mux's
  // thread: the guest's other sessions wait the few ms the vCPUs take).
  using PauseHandler = std::function<Result<void>(bool paused)>;
  // Set when this VM becomes a template: run when the guest's init reports
  // its rendezvous (true), before it gets its config (which waits until
  // then), or with false if no rendezvous came within kRendezvousBackstop
  // (an initramfs older than the shim, a boot that stalled): the box then
  // gets its config and runs, without a template.
  using RendezvousHandler = std::function<void(bool reached)>;
  static constexpr std::chrono::seconds kRendezvousBackstop{60};
  // What a session whose first frame is vm_snapshot::kRequest asks for, run
  // (on the mux's thread) once the guest has quiesced: saves the VM to dir.
  using SnapshotHandler = std::function<Result<void>(const std::string& dir)>;
  // A guest that does not quiesce by then (an initramfs older than the shim,
  // a guest that hangs) is not saved; the box runs on.
  static constexpr std::chrono::seconds kQuiesceBackstop{30};

  HostMux(UniqueFd listen, UniqueFd vm, UniqueFd log, PauseHandler on_pause, SnapshotHandler on_snapshot,
          RendezvousHandler on_rendezvous = {})
      : listen_(std::move(listen)), vm_(std::move(vm)), log_(std::move(log)), on_pause_(std::move(on_pause)),
        on_snapshot_(std::move(on_snapshot)), on_rendezvous_(std::move(on_rendezvous)),
        holding_(static_cast<bool>(on_rendezvous_)) {
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    ::fcntl(listen_.get(), F_SETFL, O_NONBLOCK);
    ::fcntl(vm_.get(), F_SETFL, O_NONBLOCK);
  }
  ~HostMux() { join(); }

  void start() { th_ = std::thread([this] { loop(); }); }
  // Queues a control message for the guest's init.
  void control(const Json& m) {
    {
      std::lock_guard<std::mutex> g(mu_);
      pending_ += proto::encode(m, mux::kControlChannel);
    }
    uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  // Waits for the thread; it ends when the VM's end of the stream closes
  // (QEMU exited), or at once with abandon.
  void join(bool abandon = false) {
    if (abandon) {
      abandon_ = true;
      uint64_t one = 1;
      (void)!::write(wake_.get(), &one, sizeof one);
    }
    if (th_.joinable()) th_.join();
  }
  int exit_code() const { return exit_code_.load(); }

 private:
  struct Snapshot {
    uint32_t channel;  // the client that asked
    std::string dir;
    std::chrono::steady_clock::time_point backstop;
  };
  struct Client {
    UniqueFd fd;
    mux::RawSplitter split;
    std::string out;
    bool closing = false;
    bool first = true;       // no frame of it read yet (a kVmPause may come)
    bool answered = false;   // a kVmPause the shim answered: the guest never saw the channel
    uint64_t in_flight = 0;  // our frames on this channel the guest has not acked
    mux::AckCounter acks;    // its frames we delivered to the client
  };

  // Writes what the socket takes; returns how many bytes that was.
  size_t write_some(int fd, std::string& buf) {
    size_t done = 0;
    while (!buf.empty()) {
      ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_NOSIGNAL);
      if (n > 0) {
        buf.erase(0, static_cast<size_t>(n));
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      buf.clear();  // peer gone
      break;
    }
    return done;
  }

  void from_vm(mux::RawFrame& f) {
    if (f.channel == mux::kControlChannel) {
      // The guest is untrusted too: a malformed control frame is dropped.
      auto m = mux::decode(f.bytes);
      if (!m) return;
      std::string_view t = proto::msg::type_of(*m);
      if (t == proto::msg::kLog) {
        if (auto l = proto::msg::decode<proto::msg::Log>(*m))
          (void)sys::write_all(log_.get(), l->data.data(), l->data.size());
      } else if (t == proto::msg::kExit) {
        if (auto e = proto::msg::decode<proto::msg::GuestExit>(*m)) exit_code_ = e->code;
      } else if (t == proto::msg::kRendezvous && holding_) {
        on_rendezvous_(true);  // the guest waits on its config meanwhile
        release_hold();
      } else if (t == vm_snapshot::kQuiesced && snapshot_) {
        finish_snapshot(true);
      }
      return;
    }
    auto it = clients_.find(f.channel);
    if (it == clients_.end()) return;  // the client already hung up
    if (mux::is_close(f.bytes)) {
      it->second.closing = true;
      return;
    }
    if (uint64_t n = mux::ack_bytes(f.bytes)) {
      it->second.in_flight -= std::min(n, it->second.in_flight);
      return;
    }
    mux::set_channel(f.bytes, 0);
    it->second.out += f.bytes;
  }

  // A session that opens with kVmPause is the runtime's `pause`/`unpause`:
  // answered here, then closed; the guest never hears of it. Whether it was one.
  bool answer_pause(const std::string& frame, Client& c) {
    if (frame.size() > proto::kHeaderSize + 64) return false;
    auto m = mux::decode(frame);
    if (!m || proto::msg::type_of(*m) != proto::msg::kVmPause) return false;
    auto p = m->find("paused");
    Result<void> r = p == m->end() || !p->is_boolean() ? fail(Error::invalid("vm_pause: \"paused\" must be a boolean"))
                                                        : on_pause_(p->get<bool>());
    c.out += r ? proto::encode({{"t", proto::msg::kOk}})
               : proto::encode({{"t", proto::msg::kError}, {"msg", r.error().message()}});
    c.closing = c.answered = true;
    return true;
  }

  // A session that opens with vm_snapshot::kRequest is the runtime's
  // `snapshot`: the guest is asked to quiesce (proto/vm_snapshot.h), and
  // nothing more goes to it until the VM is saved. Whether it was one.
  bool begin_snapshot(const std::string& frame, uint32_t channel, Client& c) {
    if (frame.size() > proto::kHeaderSize + proto::msg::kMaxPath + 64) return false;
    auto m = mux::decode(frame);
    if (!m || proto::msg::type_of(*m) != vm_snapshot::kRequest) return false;
    c.answered = true;
    auto dir = m->find("dir");
    auto refuse = [&](const std::string& why) {
      c.out += proto::encode({{"t", proto::msg::kError}, {"msg", why}});
      c.closing = true;
    };
    if (dir == m->end() || !dir->is_string() || dir->get<std::string>().empty() || dir->get<std::string>()[0] != '/')
      refuse("vm_snapshot: \"dir\" must be an absolute path");
    else if (holding_)
      refuse("the VM is still starting");
    else if (snapshot_)
      snapshot_queue_.push_back(Snapshot{channel, dir->get<std::string>(), {}});  // after this one
    else
      quiesce(Snapshot{channel, dir->get<std::string>(), {}});
    return true;
  }

  void quiesce(Snapshot s) {
    vm_out_ += proto::encode({{"t", vm_snapshot::kQuiesce}}, mux::kControlChannel);
    vm_out_limit_ = vm_out_.size();  // the quiesce frame is the last the guest gets
    s.backstop = std::chrono::steady_clock::now() + kQuiesceBackstop;
    snapshot_ = std::move(s);
  }

  // The guest quiesced (or the backstop passed): the VM is saved, the
  // client hears how it went, and the guest runs on.
  void finish_snapshot(bool quiesced) {
    Result<void> r = quiesced ? on_snapshot_(snapshot_->dir)
                              : fail(Error::internal("the guest did not quiesce within " +
                                                     std::to_string(kQuiesceBackstop.count()) + " s: no snapshot taken"));
    // Before anything held since the quiesce: the guest reads nothing else
    // until it hears this.
    vm_out_.insert(0, proto::encode({{"t", vm_snapshot::kResume}}, mux::kControlChannel));
    vm_out_limit_ = std::string::npos;
    if (auto it = clients_.find(snapshot_->channel); it != clients_.end()) {
      it->second.out += r ? proto::encode({{"t", proto::msg::kOk}})
                          : proto::encode({{"t", proto::msg::kError}, {"msg", r.error().message()}});
      it->second.closing = true;
    }
    snapshot_.reset();
    if (!snapshot_queue_.empty()) {
      Snapshot next = std::move(snapshot_queue_.front());
      snapshot_queue_.pop_front();
      quiesce(std::move(next));
    }
  }

  // Writes to the VM what may go: up to the quiesce frame while a snapshot
  // is being taken.
  void write_vm() {
    if (vm_out_limit_ == std::string::npos) {
      write_some(vm_.get(), vm_out_);
      return;
    }
    std::string head = vm_out_.substr(0, vm_out_limit_);
    size_t n = write_some(vm_.get(), head);
    vm_out_.erase(0, n);
    vm_out_limit_ -= n;
  }

  void release_hold() {
    holding_ = false;
    std::lock_guard<std::mutex> g(mu_);
    vm_out_ += pending_;
    pending_.clear();
  }

  void loop() {
    bool vm_open = true;
    const auto hold_until = std::chrono::steady_clock::now() + kRendezvousBackstop;
    while (vm_open && !abandon_) {
      std::vector<pollfd> p = {{listen_.get(), POLLIN, 0},
                               {vm_.get(), static_cast<short>(POLLIN | (vm_out_.empty() || vm_out_limit_ == 0 ? 0 : POLLOUT)), 0},
                               {wake_.get(), POLLIN, 0}};
      std::vector<uint32_t> chans;
      for (auto& [ch, c] : clients_) {
        // Out of credit: leave the client's bytes in its socket (its
        // writer blocks) until the guest acks; a hangup still shows.
        short in = c.in_flight < mux::kWindow && !c.answered ? POLLIN : 0;
        p.push_back({c.fd.get(), static_cast<short>(in | (c.out.empty() ? 0 : POLLOUT)), 0});
        chans.push_back(ch);
      }
      int timeout = -1;
      if (snapshot_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(snapshot_->backstop - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          finish_snapshot(false);
          continue;
        }
        timeout = static_cast<int>(left.count());
      }
      if (holding_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(hold_until - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          LOG_WARN("the guest sent no rendezvous within {} s: no template from this boot", kRendezvousBackstop.count());
          on_rendezvous_(false);
          release_hold();
          continue;
        }
        timeout = static_cast<int>(left.count());
      }
      if (::poll(p.data(), p.size(), timeout) < 0) continue;
      if (p[2].revents) {
        uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
        std::lock_guard<std::mutex> g(mu_);
        if (!holding_) {
          vm_out_ += pending_;
          pending_.clear();
        }
      }
      if (p[0].revents) {
        for (;;) {
          int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (fd < 0) break;
          Client c;
          c.fd.reset(fd);
          clients_.emplace(next_channel_++, std::move(c));
        }
      }
      if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[65536];
        for (;;) {
          ssize_t n = ::read(vm_.get(), buf, sizeof buf);
          if (n > 0) {
            vm_in_.feed(buf, static_cast<size_t>(n));
            for (;;) {
              auto f = vm_in_.next();
              if (!f || !*f) break;
              from_vm(**f);
            }
            continue;
          }
          if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
          vm_open = false;  // QEMU is gone
          break;
        }
      }
      for (size_t i = 3; i < p.size(); ++i) {
        auto it = clients_.find(chans[i - 3]);
        if (it == clients_.end()) continue;
        Client& c = it->second;
        bool gone = false;
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          char buf[65536];
          ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
          if (n > 0) {
            c.split.feed(buf, static_cast<size_t>(n));
            for (;;) {
              auto f = c.split.next();
              if (!f) {
                gone = true;
                break;
              }
              if (!*f) break;
              if (c.first) {
                c.first = false;
                if (answer_pause((*f)->bytes, c) || begin_snapshot((*f)->bytes, it->first, c)) break;
              }
              if (mux::acts_on_mux((*f)->bytes)) {
                // The mux's own frames are the shim's and the guest init's,
                // never a client's: relayed, a client's close would end its
                // session in the guest behind the agent's back and its ack
                // would buy the guest credit the client never gave (the
                // shim then buffers without bound). Answered as the agent
                // answers a type it does not know; the session goes on.
                c.out += proto::encode({{"t", proto::msg::kError},
                                        {"msg", "unknown message type: " +
                                                    std::string(proto::msg::type_of(*mux::decode((*f)->bytes)))}});
                continue;
              }
              mux::set_channel((*f)->bytes, it->first);
              c.in_flight += (*f)->bytes.size();
              vm_out_ += (*f)->bytes;
            }
          } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            gone = true;
          }
        }
        if (gone) {
          if (!c.answered) vm_out_ += proto::encode({{"t", mux::kClose}}, it->first);
          clients_.erase(it);
          continue;
        }
      }
      // Writes, after everything read this round was queued.
      for (auto it = clients_.begin(); it != clients_.end();) {
        size_t n = write_some(it->second.fd.get(), it->second.out);
        vm_out_ += it->second.acks.add(it->first, n);
        if (it->second.closing && it->second.out.empty())
          it = clients_.erase(it);
        else
          ++it;
      }
      // Nothing reaches a VM that is to become a template before its
      // rendezvous: the bytes would be in the snapshot's RAM, and every box
      // restored from it would read a session frame it was never sent.
      if (vm_open && !holding_) write_vm();
    }
    // The VM is gone: hand clients what they are owed, then hang up.
    for (auto& [ch, c] : clients_) {
      ::fcntl(c.fd.get(), F_SETFL, 0);
      timeval tv{2, 0};
      ::setsockopt(c.fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      write_some(c.fd.get(), c.out);
    }
    clients_.clear();
    listen_.reset();  // connects now fail fast
  }



  UniqueFd listen_, vm_, log_, wake_;
  PauseHandler on_pause_;
  SnapshotHandler on_snapshot_;
  RendezvousHandler on_rendezvous_;
  std::optional<Snapshot> snapshot_;             // being taken
  std::deque<Snapshot> snapshot_queue_;          // asked for meanwhile
  size_t vm_out_limit_ = std::string::npos;      // what of vm_out_ may go meanwhile
  bool holding_;  // control frames wait for the rendezvous (mux thread only, once started)
  std::thread th_;
  std::mutex mu_;
  std::string pending_;
  std::atomic<bool> abandon_{false};
  std::atomic<int> exit_code_{-1};
  std::map<uint32_t, Client> clients_;
  uint32_t next_channel_ = 1;
  std::string vm_out_;
  mux::RawSplitter vm_in_;
};

class VmInstance : public BoxInstance {
 public:
  int pidfd() const override { return qemu_.pidfd(); }
  int diag_fd() const override { return diag_.get(); }

  Result<ExitStatus> reap() override {
    auto st = qemu_.wait();
    reaped_ = true;
    if (mux_) mux_->join();  // drains the guest's last frames (its exit code)
    if (!st) return st;
    int code = mux_ ? mux_->exit_code() : -1;
    if (code >= 0) return ExitStatus{code, 0, false};
    if (st->signaled && killed_) return *st;  // our SIGKILL (kill, stop's grace over): Docker's 137
    // QEMU failed or aborted on its own (e.g. SIGABRT on a KVM it cannot
    // drive): a cubby error, never passed off as the workload's status.
    hint_ = "the VM ended before its agent reported an exit code (qemu " +
            (st->signaled ? "was killed by signal " + std::to_string(st->signal) : "exited with status " + std::to_string(st->code)) +
            "; a guest kernel that cannot boot ends this way)";
    LOG_WARN("{}", hint_);
    return ExitStatus{125, 0, false};
  }

  std::string failure_hint() const override { return hint_; }
  Network* network() override { return net_.get(); }

  Result<UniqueFd> console_log() override { return std::move(console_); }
  void note_in_log(const std::string& line) override {
    if (log_) log_->note(logfile::kConsole, line);
  }

  Result<void> allow_start() override {
    if (!restored_) mux_->control({{"t", "go"}});  // a restored workload runs already
    return {};
  }
  Result<void> request_stop(int sig) override {
    // A paused box takes its stop: the guest runs again to hear it (its
    // workload gets the grace a running one gets).
    if (paused_)
      if (auto r = set_paused(false); !r) LOG_WARN("resume the VM for its stop: {}", r.error().message());
    mux_->control({{"t", "signal"}, {"sig", sig}});
    return {};
  }

  // `cubby pause`/`unpause` (the mux's kVmPause): the vCPUs stop; memory,
  // devices and every session stay as they are (QEMU buffers the guest's
  // serial port meanwhile). The marker file is there before the stop and
  // goes only after the vCPUs run again, so the runtime refuses an exec
  // rather than let it wait on a stopped guest.
  Result<void> set_paused(bool paused) {
    std::lock_guard<std::mutex> g(pause_mu_);
    if (paused == paused_) return fail(Error::conflict(paused ? "the VM is already paused" : "the VM is not paused"));
    if (!qmp_greeted_) {
      CUBBY_TRYV(qmp_.handshake(std::chrono::seconds(10)));
      qmp_greeted_ = true;
    }
    const std::string marker = box_dir_ + "/" + launch::kVmPausedFile;
    if (paused) {
      CUBBY_TRYV(write_file_atomic(marker, ""));
      if (auto r = qmp_.execute("stop"); !r) {
        ::unlink(marker.c_str());
        return std::unexpected(r.error());
      }
    } else {
      CUBBY_TRY(qmp_.execute("cont"));
      ::unlink(marker.c_str());
    }
    paused_ = paused;
    return {};
  }
  Result<void> kill() override {
    killed_ = true;
    return qemu_.signal(SIGKILL);
  }

  void cleanup() override {
    if (!reaped_ && qemu_.valid()) {
      (void)qemu_.signal(SIGKILL);
      (void)qemu_.wait();
      reaped_ = true;
    }
    if (mux_) {
      mux_->join(true);
      mux_.reset();
    }
    // After QEMU: each virtiofsd has seen its connection close and is
    // exiting; the handles reap (or kill) them.
    volumes_.clear();
    if (log_) log_->finish();
    net_.reset();
    ::unlink((box_dir_ + "/" + kAgentSocket).c_str());
    ::unlink((box_dir_ + "/" + launch::kVmPausedFile).c_str());
  }
  ~VmInstance() override { cleanup(); }

  std::string box_dir_;
  ChildProcess qemu_;
  std::unique_ptr<Network> net_;  // --network default: the uplink of QEMU's namespace
  std::vector<VirtiofsVolume> volumes_;  // -v: their virtiofsd
  UniqueFd diag_;
  bool reaped_ = false;
  bool killed_ = false;  // the SIGKILL that ended QEMU was ours
  std::string hint_;
  // QEMU's migration stream to fd (passed to QEMU under `name`), with the
  // vCPUs stopped first; they stay stopped: the caller resumes the VM
  // (resume_after_migration) whatever this returned.
  Result<void> migrate_stopped_to(int fd, const char* name) {
    if (!qmp_greeted_) {
      CUBBY_TRYV(qmp_.handshake(std::chrono::seconds(10)));
      qmp_greeted_ = true;
    }
    CUBBY_TRY(qmp_.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "events"}, {"state", true}}}}}));
    CUBBY_TRYV(qmp_.pass_fd(name, fd));
    CUBBY_TRY(qmp_.execute("stop"));
    CUBBY_TRY(qmp_.execute("migrate", {{"uri", std::string("fd:") + name}}));
    return await_migration(qmp_);
  }

  // `cubby snapshot` (the mux's vm_snapshot::kRequest, once the guest has
  // quiesced; mux thread): QEMU's migration stream to dir/state with the
  // vCPUs stopped, then, still stopped (QEMU flushed the disks when it
  // stopped), the box disk copied and the image disk linked, so memory and
  // disks are of one instant. The VM runs on whatever happened.
  Result<void> snapshot_to(const std::string& dir) {
    std::lock_guard<std::mutex> g(pause_mu_);
    if (!snapshot_refusal_.empty()) return fail(Error::invalid(snapshot_refusal_));
    if (paused_) return fail(Error::conflict("the VM is paused: unpause it first"));
    UniqueFd state(::open((dir + "/" + vm_snapshot::kStateFile).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!state) return sys_fail("create " + dir + "/" + vm_snapshot::kStateFile);
    auto saved = [&]() -> Result<void> {
      CUBBY_TRYV(migrate_stopped_to(state.get(), "snapshot"));
      CUBBY_TRYV(copy_disk_sparse(rw_disk_, dir + "/" + vm_snapshot::kDiskFile));
      // The image disk never changes once made: a link is a copy.
      if (::link(image_disk_.c_str(), (dir + "/" + vm_snapshot::kImageFile).c_str()) < 0) {
        if (errno != EXDEV) return sys_fail("link " + image_disk_);
        CUBBY_TRYV(copy_disk_sparse(image_disk_, dir + "/" + vm_snapshot::kImageFile));
      }
      return write_file_atomic(dir + "/" + vm_snapshot::kKeyFile, snapshot_key_);
    }();
    if (auto c = resume_after_migration(qmp_); !c) {
      LOG_ERROR("resume the VM after its snapshot: {}", c.error().message());
      (void)qemu_.signal(SIGKILL);
      return std::unexpected(c.error().wrap("resume the VM after its snapshot"));
    }
    return saved;
  }

  // What a snapshot of this VM must be restored into: everything its
  // state depends on (as a template's key, less the image disk, which the
  // snapshot keeps its own link to).
  std::string snapshot_key_;
  std::string snapshot_refusal_;  // why this VM cannot be saved ("" if it can)
  std::string rw_disk_, image_disk_;
  bool restored_ = false;  // from a snapshot: its workload ran before this shim

  // At the guest's rendezvous (mux thread): the VM's migration stream goes
  // to the template's file, then the VM runs on as this box.
  void snapshot_as_template(bool reached) {
    std::lock_guard<std::mutex> g(pause_mu_);
    if (!reached) {
      template_stream_.reset();
      template_->discard();
      note_start("cold");
      return;
    }
    auto r = migrate_stopped_to(template_stream_.get(), "template");
    template_stream_.reset();
    if (auto c = resume_after_migration(qmp_); !c) {
      // A VM that cannot run on would hold its box until the boot backstop.
      LOG_ERROR("resume the VM after its snapshot: {}", c.error().message());
      (void)qemu_.signal(SIGKILL);
    }
    if (r) r = template_->commit();
    if (!r) {
      LOG_WARN("vm template {}: not built: {}", template_->dir(), r.error().message());
      template_->discard();
      note_start("cold");
      return;
    }
    note_start("cold, template built");
  }

  // How this box's VM came up, for people and tests: <box_dir>/vm.start.
  void note_start(const std::string& how) { (void)write_file(box_dir_ + "/vm.start", how + "\n"); }

  Qmp qmp_;  // QEMU's monitor (pause, resume, templates)
  std::optional<VmTemplate> template_;  // the one this VM is building, or was restored from
  UniqueFd template_stream_;            // a build: the file its stream goes to
  std::mutex pause_mu_;
  bool qmp_greeted_ = false;
  std::atomic<bool> paused_{false};
  std::unique_ptr<HostMux> mux_;
  std::unique_ptr<BoxLog> log_;  // finished in cleanup(), after the mux that feeds it
  UniqueFd console_;             // until the shim takes it (console_log)
};

// A restore: QEMU (started with -incoming defer) reads the template's
// stream from its fd stream_fd, then runs the guest from its rendezvous.
Result<void> restore_template(VmInstance& vm, int stream_fd) {
  CUBBY_TRYV(vm.qmp_.handshake(std::chrono::seconds(10)));
  vm.qmp_greeted_ = true;
  CUBBY_TRY(vm.qmp_.execute("migrate-set-capabilities", {{"capabilities", {{{"capability", "events"}, {"state", true}}}}}));
  CUBBY_TRY(vm.qmp_.execute("migrate-incoming", {{"uri", "fd:" + std::to_string(stream_fd)}}));
  CUBBY_TRYV(await_migration(vm.qmp_));
  // The template was taken stopped, so the restore stays stopped too.
  return resume_after_migration(vm.qmp_);
}

class VmBackend : public Backend {
 public:
  Result<std::unique_ptr<BoxInstance>> launch(const ShimConfig& cfg) override { return launch_as(cfg, true); }

 private:
  // may_template false: a cold boot that neither uses nor builds a template
  // (after a template failed to restore).
  Result<std::unique_ptr<BoxInstance>> launch_as(const ShimConfig& cfg, bool may_template) {
    const BoxSpec& spec = cfg.spec;
    // Each volume is a virtio-mmio device too; microvm has 24 slots, 5 taken.
    if (spec.mounts.size() > kMaxVolumes)
      return fail(Error::invalid("--isolation vm takes at most " + std::to_string(kMaxVolumes) + " -v volumes"));
    if (spec.network == "bridge")
      return fail(Error::invalid("--network bridge is not supported on the vm backend yet (use --network default)"));
    std::string accel = CUBBY_TRY(hypervisor::choose_accel(hypervisor::probe(cfg.home), getenv("CUBBY_VM_ACCEL")));
    std::string qemu = find_program("qemu-system-x86_64");
    if (qemu.empty()) return fail(Error::invalid("--isolation vm needs qemu-system-x86_64 (apt-get install qemu-system-x86)"));
    std::string assets = getenv("CUBBY_VM_ASSETS") ? getenv("CUBBY_VM_ASSETS")
                                                   : cfg.agent_path.substr(0, cfg.agent_path.rfind('/')) + "/../assets";
    std::string kernel = assets + "/vmlinuz", initrd = assets + "/initramfs.cpio.gz";
    for (auto& f : {kernel, initrd})
      if (::access(f.c_str(), R_OK) != 0)
        return fail(Error::invalid("vm guest asset " + f + " is missing (build the cubby-vm-assets target)"));
    // An OCI bundle's rootfs (cubby-runc) is shared, not flattened: a disk
    // cached by its path would go stale when the directory changes.
    // A copy of a running box (`run --from`, `fork`): its snapshot's image
    // disk (the very bytes the saved guest has cached) and, the first time,
    // a copy of its box disk.
    const std::string& snap = cfg.restore_dir;
    if (!snap.empty() && (spec.rootfs_dir || !spec.mounts.empty()))
      return fail(Error::invalid("a snapshot of a box with volumes or a bundle rootfs cannot be restored"));
    std::string disk = spec.rootfs_dir ? "" : !snap.empty() ? snap + "/" + vm_snapshot::kImageFile
                                                            : CUBBY_TRY(image_disk(cfg.home, spec.layers));
    if (!snap.empty() && ::access((cfg.box_dir + "/disk.ext4").c_str(), F_OK) != 0)
      CUBBY_TRYV(copy_disk_sparse(snap + "/" + vm_snapshot::kDiskFile, cfg.box_dir + "/disk.ext4"));
    std::string rw = CUBBY_TRY(box_disk(cfg.box_dir));
    // QEMU's fds 4-8 (see s.fds). (No image locking: each disk is this
    // box's QEMU's alone, or read-only; the locks only got in the way of a
    // VM resuming after its template snapshot.) A disk is an fd set (-add-fd: QEMU dups
    // an fd of the set whose access mode matches, never reopens the file;
    // `opaque` names it for people and for leak checks). The writable disk's
    // set also holds a read-only fd, which QEMU asks for as well. Kernel
    // and initramfs go by /proc/self/fd, which needs only the files' own
    // read bits, not every directory above them.
    UniqueFd disk_fd;
    if (!disk.empty()) disk_fd = CUBBY_TRY(open_for_qemu(disk, O_RDONLY));
    auto rw_fd = CUBBY_TRY(open_for_qemu(rw, O_RDWR));
    auto rw_ro_fd = CUBBY_TRY(open_for_qemu(rw, O_RDONLY));
    auto kernel_fd = CUBBY_TRY(open_for_qemu(kernel, O_RDONLY));
    auto initrd_fd = CUBBY_TRY(open_for_qemu(initrd, O_RDONLY));

    auto inst = std::make_unique<VmInstance>();
    inst->box_dir_ = cfg.box_dir;
    ::unlink((cfg.box_dir + "/" + launch::kVmPausedFile).c_str());  // a crashed shim's
    auto listen = CUBBY_TRY(proto::listen_unix(cfg.box_dir, kAgentSocket));  // early bind
    inst->log_ = CUBBY_TRY(BoxLog::open(cfg.box_dir, {spec.log_max_size, spec.log_max_files}));
    auto log = CUBBY_TRY(inst->log_->add_input());  // the guest's log frames, from the mux
    inst->console_ = CUBBY_TRY(inst->log_->add_input());
    inst->log_->start();
    auto [host_end, vm_end] = CUBBY_TRY(sys::make_socketpair(SOCK_STREAM));
    auto [diag_r, diag_w] = CUBBY_TRY(sys::make_pipe());

    long mem_mib = spec.memory ? std::max<long>(static_cast<long>(*spec.memory >> 20), 64) : 256;
    long cpus = spec.cpus ? std::max<long>(1, static_cast<long>(std::ceil(*spec.cpus))) : 1;
    // init_on_free: pages the guest frees are zero, so a template's stream
    // (QEMU skips zero pages) holds what the guest uses: 58 MB rather than
    // 95 MB measured at the rendezvous of a 256 MiB guest.
    std::string append = "console=ttyS0 quiet panic=-1 reboot=t init_on_free=1";
    if (auto khz = host_tsc_khz(); !khz.empty()) append += " tsc_early_khz=" + khz;  // TCG boots hang without it
    append += " cubby.mode=vm";
    SpawnSpec s;
    // TCG's translation buffer (default 1 GiB on 64-bit hosts) fills with
    // boot-time code an idle box never runs again: 32 MiB measured no slower
    // to boot here and keeps ~25 MiB less resident per box.
    std::string accel_opt = accel == "tcg" ? "tcg,tb-size=32" : accel;
    const bool shared_ram = !spec.mounts.empty() || spec.rootfs_dir;
    // What a snapshot's state depends on (see VmInstance::snapshot_key_).
    const std::string snapshot_key = "cubby vm snapshot 1\n" + file_identity(qemu) + "\n" + file_identity(kernel) +
                                     "\n" + file_identity(initrd) + "\n" + accel_opt + "\n" + std::to_string(mem_mib) +
                                     "M " + std::to_string(cpus) + " cpus\n" + append + "\nnetwork " + spec.network + "\n";
    // A template (shim/vm_template.h) for boxes whose devices are all the
    // shim's own: virtio-fs needs guest RAM shared with virtiofsd.
    std::optional<VmTemplate> tmpl;
    UniqueFd stream;  // restore: the template QEMU reads; build: the file it writes
    bool restoring = false;
    if (!snap.empty()) {
      auto key = read_file(snap + "/" + vm_snapshot::kKeyFile, 64 * 1024);
      if (!key || *key != snapshot_key)
        return fail(Error::conflict("the snapshot was taken by another QEMU, guest kernel or agent build (or with "
                                    "other memory, cpus or network): it cannot be restored here"));
      stream = CUBBY_TRY(open_for_qemu(snap + "/" + vm_snapshot::kStateFile, O_RDONLY));
      restoring = true;
    } else if (may_template && !shared_ram && templates_enabled()) {
      std::string key = "cubby vm template 1\n" + file_identity("/proc/self/exe") + "\n" + file_identity(qemu) + "\n" +
                        file_identity(kernel) + "\n" + file_identity(initrd) + "\n" + file_identity(disk) + "\n" +
                        accel_opt + "\n" + std::to_string(mem_mib) + "M " + std::to_string(cpus) + " cpus\n" + append +
                        "\nnetwork " + spec.network + "\n";
      tmpl.emplace(cfg.home, disk, std::move(key));
      if (auto fd = tmpl->open_for_restore()) {
        stream = std::move(*fd);
        restoring = true;
      } else if (auto b = tmpl->begin_build(); !b) {
        LOG_WARN("vm template: {}", b.error().message());
        tmpl.reset();
      } else if (*b) {
        stream = std::move(**b);
      } else {
        tmpl.reset();  // another start is building it: this one boots cold
      }
    }
    // vhost-user (virtiofsd) maps the guest's RAM, so it must be a shared
    // memfd; only boxes with volumes pay for it.
    s.argv = {qemu, "-M", shared_ram ? "microvm,memory-backend=mem" : "microvm", "-accel", accel_opt};
    if (shared_ram)
      s.argv.insert(s.argv.end(), {"-object", "memory-backend-memfd,id=mem,share=on,size=" + std::to_string(mem_mib) + "M",
                                   "-global", "virtio-mmio.force-legacy=false"});
    if (accel == "kvm") s.argv.insert(s.argv.end(), {"-cpu", "host"});
    s.argv.insert(s.argv.end(),
                  {"-m", std::to_string(mem_mib), "-smp", std::to_string(cpus), "-nodefaults", "-no-user-config",
                   "-no-reboot", "-nographic", "-sandbox", kQemuSandbox, "-kernel", "/proc/self/fd/6", "-initrd",
                   "/proc/self/fd/7", "-append", append, "-chardev", "socket,id=c0,fd=3", "-device",
                   "virtio-serial-device", "-device", std::string("virtserialport,chardev=c0,name=") + mux::kPortName,
                   "-serial", "stdio", "-add-fd", "fd=5,set=2,opaque=" + qemu_opt_value(rw), "-add-fd",
                   "fd=8,set=2,opaque=" + qemu_opt_value(rw), "-drive",
                   "id=d1,file=/dev/fdset/2,format=raw,if=none,discard=unmap,file.locking=off", "-device", "virtio-blk-device,drive=d1",
                   // Free page reporting: the guest hands pages it frees back
                   // to QEMU, which discards them, so an idle box's RSS is what
                   // the guest uses rather than everything it ever touched.
                   "-device", "virtio-balloon-device,free-page-reporting=on"});
    if (!disk.empty())
      s.argv.insert(s.argv.end(), {"-add-fd", "fd=4,set=1,opaque=" + qemu_opt_value(disk), "-drive",
                                   "id=d0,file=/dev/fdset/1,format=raw,if=none,readonly=on,file.locking=off", "-device",
                                   "virtio-blk-device,drive=d0"});
    // --network default: QEMU's user networking (slirp) in QEMU's own
    // network namespace. slirp maps the guest's 10.0.2.2 to 127.0.0.1, and
    // there that is the namespace's empty loopback, never the host's (QEMU
    // 7.2 cannot turn the mapping off). The namespace's way out is
    // slirp4netns, attached below exactly as to a sandbox box, with
    // --disable-host-loopback. -p mapping i: slirp4netns forwards the host
    // port to kUplinkPortBase + i in the namespace, QEMU's hostfwd from there
    // to the guest's 10.0.2.15.
    std::vector<PortMapping> uplink;
    if (spec.ports.size() > 65535u - kUplinkPortBase)
      return fail(Error::invalid("--isolation vm publishes at most " + std::to_string(65535u - kUplinkPortBase) +
                                 " ports"));
    if (spec.network == "default") {
      std::string netdev = "user,id=n0";
      for (size_t i = 0; i < spec.ports.size(); ++i) {
        const PortMapping& p = spec.ports[i];
        PortMapping hop = p;
        hop.guest_port = static_cast<uint16_t>(kUplinkPortBase + i);
        uplink.push_back(hop);
        netdev += ",hostfwd=" + p.proto + "::" + std::to_string(hop.guest_port) + "-:" + std::to_string(p.guest_port);
      }
      s.argv.insert(s.argv.end(), {"-netdev", netdev, "-device", "virtio-net-device,netdev=n0"});
    }
    s.fds = {-1,          diag_w.get(),     diag_w.get(),        vm_end.get(), disk_fd.get(),
             rw_fd.get(), kernel_fd.get(), initrd_fd.get(), rw_ro_fd.get()};
    // -v, and a bundle's rootfs (read-only: the overlay's lower, as the
    // sandbox uses it): QEMU's fds 9.. are the vhost-user sockets of their
    // virtiofsd.
    Json guest_volumes = Json::array();
    auto share = [&](const Mount& m, const std::string& tag) -> Result<void> {
      inst->volumes_.push_back(CUBBY_TRY(start_virtiofs(cfg.box_dir, m, tag, STDERR_FILENO)));
      std::string id = "vfs" + std::to_string(inst->volumes_.size() - 1);
      s.argv.insert(s.argv.end(), {"-chardev", "socket,id=" + id + ",fd=" + std::to_string(s.fds.size()), "-device",
                                   "vhost-user-fs-device,chardev=" + id + ",tag=" + tag});
      s.fds.push_back(inst->volumes_.back().qemu_end.get());
      return {};
    };
    if (spec.rootfs_dir) CUBBY_TRYV(share(Mount{spec.layers.at(0), "/", true}, kRootTag));
    for (size_t i = 0; i < spec.mounts.size(); ++i) {
      const std::string tag = "cubby" + std::to_string(i);
      CUBBY_TRYV(share(spec.mounts[i], tag));
      guest_volumes.push_back({{"tag", tag}, {"target", spec.mounts[i].target}, {"read_only", spec.mounts[i].read_only}});
    }
    // QEMU's monitor: one end of a socketpair (see shim/qmp.h).
    auto [qmp_end, qemu_qmp_end] = CUBBY_TRY(sys::make_socketpair(SOCK_STREAM));
    s.argv.insert(s.argv.end(), {"-chardev", "socket,id=qmp,fd=" + std::to_string(s.fds.size()), "-mon",
                                 "chardev=qmp,mode=control"});
    s.fds.push_back(qemu_qmp_end.get());
    inst->qmp_ = Qmp(std::move(qmp_end));
    // The template's stream: QEMU's fd stream_fd, read by migrate-incoming
    // (QEMU waits for it: -incoming defer) or written by migrate.
    // (A build passes the file by QMP getfd: QEMU 7.2's outgoing migrate
    // takes only a named fd.)
    const int stream_fd = restoring ? static_cast<int>(s.fds.size()) : -1;
    if (restoring) {
      s.fds.push_back(stream.get());
      s.argv.insert(s.argv.end(), {"-incoming", "defer"});
    }
    s.die_with_parent = true;
    s.new_session = true;
    s.new_netns = true;  // also with --network none: QEMU never needs the host's network
    if (::geteuid() == 0) {
      s.drop_capabilities = true;
      s.run_as = vmm_credentials(accel);
    } else {
      s.new_userns = true;  // rootless: QEMU already has the caller's uid and no capability
    }
    s.no_new_privs = true;
    inst->qemu_ = CUBBY_TRY(spawn(s));
    vm_end.reset();
    qemu_qmp_end.reset();
    if (restoring) stream.reset();
    if (restoring) {
      // A template that does not restore is removed and the box boots cold:
      // never an error of the box's.
      if (auto r = restore_template(*inst, stream_fd); !r && !snap.empty()) {
        return std::unexpected(r.error().wrap("restore the snapshot"));
      } else if (!r) {
        LOG_WARN("vm template {}: restore failed ({}); booting cold", tmpl->dir(), r.error().message());
        tmpl->discard();
        inst.reset();  // QEMU killed and reaped, the log closed
        return launch_as(cfg, false);
      }
      inst->note_start(snap.empty() ? "template" : "snapshot");
    } else if (!tmpl) {
      inst->note_start("cold");
    }
    for (auto& v : inst->volumes_) v.qemu_end.reset();  // QEMU's alone: its exit closes virtiofsd's connection
    diag_w.reset();
    if (spec.network == "default") {
      // QEMU's namespaces are held from here on, so the helper never fails
      // on a namespace that went with QEMU. Already gone (ENOENT: an
      // unreaped child loses them as it exits, before its pidfd says so):
      // QEMU ended first (an option it refused, a kernel it cannot load),
      // and the shim's start wait reports QEMU's own words, the first cause.
      auto ns = open_netns_of(inst->qemu_.pid());
      if (ns) {
        // The egress policy holds QEMU's own connections (made for the
        // guest's) in QEMU's namespace: the guest never reaches it.
        auto policy = CUBBY_TRY(user_network_policy(spec.allow_net, spec.deny_net, spec.dns));
        auto net = start_user_network(std::move(*ns), cfg.box_dir, uplink, std::move(policy), false);
        if (!net) return std::unexpected(net.error().wrap("set up --network default"));
        inst->net_ = std::move(*net);
      } else if (ns.error().sys_errno() != ENOENT ||
                 !CUBBY_TRY(sys::wait_readable(inst->qemu_.pidfd(), std::chrono::seconds(10)))) {  // backstop
        return std::unexpected(ns.error().wrap("set up --network default"));
      }
    }
    inst->diag_ = std::move(diag_r);
    ::fcntl(inst->diag_.get(), F_SETFL, O_NONBLOCK);

    nlohmann::json agent_cfg = {
        {"main", {{"argv", spec.argv}, {"env", spec.env}, {"cwd", spec.cwd}, {"user", spec.user}, {"tty", spec.tty}}},
        {"hold", cfg.hold},
        {"hostname", spec.hostname},
        {"network", spec.network}};
    // The guest's RNG gets the host's seed before anything in it runs (a
    // restored template's would otherwise repeat its siblings').
    agent_cfg["seed"] = CUBBY_TRY(random_hex(32));
    if (restoring) {  // its clock stood still since the template was taken
      timespec now{};
      ::clock_gettime(CLOCK_REALTIME, &now);
      agent_cfg["now_ns"] = static_cast<uint64_t>(now.tv_sec) * 1000000000u + static_cast<uint64_t>(now.tv_nsec);
    }
    if (auto rc = net::resolv_conf_for(spec.dns, false); !rc.empty()) agent_cfg["resolv_conf"] = rc;
    if (!spec.extra_hosts.empty()) agent_cfg["extra_hosts"] = spec.extra_hosts;
    if (!spec.fs.empty()) agent_cfg["fs"] = spec.fs;
    if (spec.cap_drop) agent_cfg["cap_drop"] = spec.cap_drop;
    if (!spec.seccomp.empty()) agent_cfg["seccomp"] = spec.seccomp;
    if (!guest_volumes.empty()) agent_cfg["volumes"] = guest_volumes;
    if (spec.rootfs_dir) agent_cfg["root_tag"] = kRootTag;
    inst->snapshot_key_ = snapshot_key;
    inst->rw_disk_ = rw;
    inst->image_disk_ = disk;
    inst->restored_ = !snap.empty();
    if (shared_ram) inst->snapshot_refusal_ = "a vm box with volumes (or a bundle rootfs) cannot be snapshotted yet: its "
                                              "memory is shared with virtiofsd";
    VmInstance* vm = inst.get();  // the mux thread ends (cleanup) before the instance does
    HostMux::RendezvousHandler on_rendezvous;
    if (tmpl && !restoring) {
      inst->template_stream_ = std::move(stream);
      on_rendezvous = [vm](bool reached) { vm->snapshot_as_template(reached); };
    }
    inst->template_ = std::move(tmpl);
    inst->mux_ = std::make_unique<HostMux>(std::move(listen), std::move(host_end), std::move(log),
                                           [vm](bool paused) { return vm->set_paused(paused); },
                                           [vm](const std::string& dir) { return vm->snapshot_to(dir); },
                                           std::move(on_rendezvous));
    if (snap.empty()) {
      inst->mux_->control({{"t", "config"}, {"cfg", agent_cfg}});
    } else {
      // The restored guest waits, quiesced, for this before anything else.
      inst->mux_->control({{"t", vm_snapshot::kRestored},
                           {"seed", agent_cfg["seed"]},
                           {"now_ns", agent_cfg["now_ns"]},
                           {"hostname", spec.hostname}});
    }
    inst->mux_->start();
    return std::unique_ptr<BoxInstance>(std::move(inst));
  }
};

}  // namespace

std::unique_ptr<Backend> make_vm_backend() { return std::make_unique<VmBackend>(); }

}  // namespace cubby::shim
