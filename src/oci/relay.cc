#include "oci/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/log.h"
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
  io.tty = spec.process.terminal;
  auto res = rt->attach_and_wait(box->id, io);
  if (!res) {
    std::string msg = "cubby-runc: " + res.error().message() + "\n";
    (void)!::write(2, msg.data(), msg.size());
    return 125;
  }
  return res->code;
}

}  // namespace cubby::oci
