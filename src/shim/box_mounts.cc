#include "shim/box_mounts.h"

#include <sys/socket.h>
#include <unistd.h>

#include <memory>

#include "base/process.h"
#include "base/sys.h"
#include "shim/box_mounts_child.h"

namespace cubby::shim {

Result<void> send_box_mounts(int box_pidfd, int userns_fd, const BoxMountPlan& plan, int sock) {
  // Everything the child touches is built here, before the fork.
  std::vector<const char*> paths;
  std::vector<MountOpen> kinds;
  auto add = [&](const std::vector<std::string>& v, MountOpen k) {
    for (const auto& s : v) {
      paths.push_back(s.c_str());
      kinds.push_back(k);
    }
  };
  add(plan.dirs, MountOpen::kDir);
  add(plan.layers, userns_fd >= 0 ? MountOpen::kIdmapped : MountOpen::kDir);
  add(plan.sources, MountOpen::kAny);
  std::vector<int> fds(paths.size(), -1);
  const size_t cmsg_size = CMSG_SPACE(kMountFdsPerMessage * sizeof(int));
  auto cmsg = std::make_unique<cmsghdr[]>(cmsg_size / sizeof(cmsghdr) + 1);
  auto [err_r, err_w] = CUBBY_TRY(sys::make_pipe());
  MountChildPlan p{box_pidfd,    userns_fd,    sock,        err_w.get(),
                   paths.data(), kinds.data(), paths.size(), fds.data(),
                   reinterpret_cast<char*>(cmsg.get()), cmsg_size};
  int pidfd = -1;
  pid_t pid = clone_mount_child(p, &pidfd);
  if (pid < 0) return sys_fail("clone the rootfs opener");
  ChildProcess child(pid, UniqueFd(pidfd));
  err_w.reset();
  MountChildError e{};
  ssize_t n;
  do n = ::read(err_r.get(), &e, sizeof e);
  while (n < 0 && errno == EINTR);
  auto st = CUBBY_TRY(child.wait());
  if (n == static_cast<ssize_t>(sizeof e)) {
    static const char* const kWhat[] = {"join the box's mount namespace", "open", "clone the layer",
                                        "idmap the layer", "send the rootfs fds to the agent"};
    std::string what = e.stage >= 0 && e.stage < 5 ? kWhat[e.stage] : "?";
    if (e.index >= 0 && static_cast<size_t>(e.index) < paths.size()) what += std::string(" ") + paths[e.index];
    if (e.stage == 3 && (e.err == EINVAL || e.err == ENOSYS))
      what += " (idmapped mounts need Linux >= 5.12 and a filesystem that supports them; or use --userns host)";
    return fail(Error::sys(what, e.err));
  }
  if (st.signaled || st.code != 0)
    return fail(Error::internal("the rootfs opener ended with status " + std::to_string(st.shell_code())));
  return {};
}

}  // namespace cubby::shim
