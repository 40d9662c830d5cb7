// Resolves "-u USER" inside the box (after pivot_root, so /etc/passwd and
// /etc/group are the image's): name or uid, optionally ":group" or ":gid".
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::agent {

struct UserSpec {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
  std::string home = "/";
  std::string name;
};

Result<UserSpec> resolve_user(const std::string& spec);

}  // namespace cubby::agent
