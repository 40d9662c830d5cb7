#include "base/ns.h"

#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

namespace cubby {
bool same_file(int fd, const std::string& path) {
  struct stat a, b;
  return ::fstat(fd, &a) == 0 && ::stat(path.c_str(), &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

namespace {

// The /proc/thread-self/ns name of a type.
const char* proc_name(int flag) {
  switch (flag) {
    case CLONE_NEWNET: return "net";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWUTS: return "uts";
    default: return nullptr;
  }
}

}  // namespace

int ns_clone_flag(const std::string& type) {
  if (type == "network") return CLONE_NEWNET;
  if (type == "ipc") return CLONE_NEWIPC;
  if (type == "uts") return CLONE_NEWUTS;
  if (type == "pid") return CLONE_NEWPID;
  if (type == "mount") return CLONE_NEWNS;
  if (type == "cgroup") return CLONE_NEWCGROUP;
  if (type == "user") return CLONE_NEWUSER;
  return 0;
}

Result<JoinedNamespaces> JoinedNamespaces::open(const std::map<std::string, std::string>& paths) {
  JoinedNamespaces out;
  for (const auto& [type, path] : paths) {
    Join j;
    j.type = type;
    j.path = path;
    j.flag = ns_clone_flag(type);
    const char* own = proc_name(j.flag);
    if (!own) return fail(Error::invalid("joining a " + type + " namespace is not supported (only network, ipc and uts)"));
    j.target.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!j.target) return sys_fail("open the " + type + " namespace " + path);
    int t = ::ioctl(j.target.get(), NS_GET_NSTYPE);
    if (t < 0) return fail(Error::invalid(path + " is not a namespace (want /proc/PID/ns/" + own + " or a bind mount of one)"));
    if (t != j.flag) return fail(Error::invalid(path + " is not a namespace of type " + type));
    std::string self = std::string("/proc/thread-self/ns/") + own;
    if (same_file(j.target.get(), self))
      return fail(Error::invalid(path + " is the host's own " + type + " namespace: sharing the host's is not supported"));
    j.own.reset(::open(self.c_str(), O_RDONLY | O_CLOEXEC));
    if (!j.own) return sys_fail("open " + self);
    out.flags_ |= j.flag;
    out.joins_.push_back(std::move(j));
  }
  return out;
}

Result<void> JoinedNamespaces::enter() {
  for (const auto& j : joins_)
    if (::setns(j.target.get(), j.flag) < 0) return sys_fail("join the " + j.type + " namespace " + j.path);
  return {};
}

Result<void> JoinedNamespaces::leave() {
  for (const auto& j : joins_)
    if (::setns(j.own.get(), j.flag) < 0) return sys_fail("leave the " + j.type + " namespace " + j.path);
  return {};
}

Result<void> enter_namespaces_of(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid) + "/ns/";
  for (int flag : {CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS}) {
    std::string path = base + proc_name(flag);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return sys_fail("open " + path);
    if (::setns(fd.get(), flag) < 0) return sys_fail("join " + path);
  }
  return {};
}

}  // namespace cubby
