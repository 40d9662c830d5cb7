#include "shim/network.h"

#include <unistd.h>

#include "base/sys.h"

namespace cubby::shim {

Network::~Network() {
  exit_w_.reset();        // slirp4netns --exit-fd: exits on EOF
  (void)helper_.signal(SIGTERM);
  (void)helper_.wait();   // scoped: this child only
}

std::string user_network_helper() {
  for (const char* p : {"/usr/bin/slirp4netns", "/usr/local/bin/slirp4netns"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

Result<std::unique_ptr<Network>> start_user_network(pid_t box_pid) {
  std::string helper = user_network_helper();
  if (helper.empty()) return fail(Error::invalid("slirp4netns is not installed (apt-get install slirp4netns)"));
  auto [ready_r, ready_w] = CUBBY_TRY(sys::make_pipe());
  auto [exit_r, exit_w] = CUBBY_TRY(sys::make_pipe());
  SpawnSpec s;
  // fds 3 and 4 in the helper: ready and exit pipes.
  s.argv = {helper, "--configure", "--mtu=65520", "--disable-host-loopback", "--ready-fd=3", "--exit-fd=4",
            std::to_string(box_pid), "tap0"};
  s.fds = {-1, -1, 2, ready_w.get(), exit_r.get()};
  s.die_with_parent = true;
  auto child = CUBBY_TRY(spawn(s));
  ready_w.reset();
  exit_r.reset();
  // slirp4netns writes "1" once tap0 is configured; EOF means it failed.
  auto ready = CUBBY_TRY(sys::wait_readable(ready_r.get(), std::chrono::seconds(30)));
  char b = 0;
  if (!ready || ::read(ready_r.get(), &b, 1) != 1)
    return fail(Error::internal("slirp4netns did not become ready"));
  return std::make_unique<Network>(std::move(child), std::move(exit_w));
}

}  // namespace cubby::shim
