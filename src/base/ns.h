// Joining existing namespaces by path (cubby-runc's linux.namespaces[].path:
// a CRI pod's containers share its network, ipc and uts namespaces).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby {

// CLONE_NEW* of an OCI namespace type ("network", "ipc", "uts", "pid",
// "mount", "cgroup", "user"), or 0.
int ns_clone_flag(const std::string& type);

// Whether fd and path are one file (a namespace: one nsfs inode).
bool same_file(int fd, const std::string& path);

// The namespaces named by `paths` (type -> nsfs path), opened and checked
// to be namespaces of that type (NS_GET_NSTYPE), never one of the calling
// process's own (sharing the host's is not what a path asks for; and a
// /proc/PID/ns/X of a process on the host would silently be the host's).
// enter() moves the calling thread into them; leave() moves it back to the
// namespaces it had. Only network, ipc and uts: they are per-thread, so a
// multi-threaded process may do this in one thread.
class JoinedNamespaces {
 public:
  static Result<JoinedNamespaces> open(const std::map<std::string, std::string>& paths);
  int clone_flags() const { return flags_; }  // the CLONE_NEW* the namespaces replace
  bool empty() const { return joins_.empty(); }
  Result<void> enter();
  Result<void> leave();

 private:
  struct Join {
    std::string type, path;
    int flag = 0;
    UniqueFd target, own;
  };
  std::vector<Join> joins_;
  int flags_ = 0;
};

// Moves the calling thread into pid's network, ipc and uts namespaces.
Result<void> enter_namespaces_of(pid_t pid);

}  // namespace cubby
