#include "oci/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/log.h"
#include "base/ns.h"
#include "base/sys.h"
#include "base/unique_fd.h"

namespace cubby::oci {
namespace {

void report(int fd, const std::string& line) {
  std::string l = line;
  for (auto& c : l)
    if (c == '\n') c = ' ';
  l += "\n";
  (void)sys::write_all(fd, l.data(), l.size());
}

}  // namespace

int run_relay(const StateDir& dir, const std::string& id, const Spec& spec, const BoxOptions& bo, int report_fd) {
  // Library warnings would land in the container's stderr.
  log::set_level(log::Level::kError);
  // rlimits are inherited: cubby-shim, cubby-agent and the workload are this
  // process's descendants, so the limits set here are the workload's. They
  // also bound the shim and agent (documented in the README).
  for (const auto& r : spec.process.rlimits) {
    struct rlimit rl{r.soft, r.hard};
    if (::setrlimit(r.resource, &rl) < 0) {
      report(report_fd, "error " + Error::sys("config.json: process.rlimits: set " + r.type + " to " +
                                              std::to_string(r.soft) + ":" + std::to_string(r.hard))
                                       .message());
      return 1;
    }
  }
  // Inherited the same way. This host's root lacks CAP_SYS_RESOURCE, so a
  // value below the current one fails (EACCES): said, never skipped.
  if (spec.process.oom_score_adj) {
    std::string v = std::to_string(*spec.process.oom_score_adj);
    UniqueFd f(::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC));
    if (!f || !sys::write_all(f.get(), v.data(), v.size())) {
      report(report_fd, "error " + Error::sys("config.json: process.oomScoreAdj: set oom_score_adj to " + v).message());
      return 1;
    }
  }
  auto rt = Runtime::open({.home = dir.home(), .bin_dir = ""});
  if (!rt) {
    report(report_fd, "error " + rt.error().message());
    return 1;
  }
  CreateOptions o = bo.create;
  o.name = id;
  auto box = rt->create(o);
  if (!box) {
    report(report_fd, "error " + box.error().message());
    return 1;
  }
  UniqueFd fifo(::open(dir.start_fifo(id).c_str(), O_RDWR | O_CLOEXEC));
  if (!fifo) {
    report(report_fd, "error " + Error::sys("open " + dir.start_fifo(id)).message());
    (void)rt->remove(box->id, true);
    return 1;
  }
  auto started = rt->start(box->id, /*hold=*/true, /*tether=*/true);
  if (!started) {
    report(report_fd, "error " + started.error().message());
    (void)rt->remove(box->id, true);
    return 1;
  }
  // As runc's init is, the pid-file process is in the container's network,
  // ipc and uts namespaces: containerd's CRI gives a pod's containers the
  // sandbox's as /proc/<this pid>/ns/*. Its pid and mount namespaces stay
  // the host's (the box's PID 1 is the agent; the relay reaches agent.sock
  // by its host path), so a container asking to join those is refused
  // (box_options.cc) and a path to the host's own is refused by the shim.
  // Rootless, setns needs rights the relay lacks: those paths stay the
  // host's and joining them is refused the same way.
  if (::geteuid() == 0 && o.isolation == "sandbox") {
    auto entered = [&]() -> Result<void> { return enter_namespaces_of(CUBBY_TRY(rt->init_pid(box->id))); }();
    if (!entered) {
      report(report_fd, "error enter the container's namespaces: " + entered.error().message());
      (void)rt->remove(box->id, true);
      return 1;
    }
  }
  report(report_fd, "ok " + box->id);
  ::close(report_fd);
  // The fifo is open for writing too (O_RDWR), so it never reads as hung
  // up: the only event is `start`'s byte. No timer: a created container
  // waits for start, kill or delete for as long as its caller likes.
  char b;
  for (;;) {
    ssize_t n = ::read(fifo.get(), &b, 1);
    if (n == 1) break;
    if (n < 0 && errno == EINTR) continue;
    return 1;
  }
  StdioFds io;
  io.in = 0;
  io.out = 1;
  io.err = 2;
  io.tty = spec.process.terminal;  // fds 0-2 are then the console's slave (console.h)
  io.detach_keys = false;
  auto res = rt->attach_and_wait(box->id, io);
  if (!res) {
    std::string msg = "cubby-runc: " + res.error().message() + "\n";
    (void)!::write(2, msg.data(), msg.size());
    return 125;
  }
  return res->code;
}

}  // namespace cubby::oci
