// What of a decoded config.json cubby's sandbox boxes can honour today, as
// the libcubby CreateOptions of the container's box. The rest is refused
// here with one error naming the field (see README "cubby-runc").
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "oci/spec.h"
#include "runtime/runtime.h"

namespace cubby::oci {

struct BoxOptions {
  CreateOptions create;
  // Where cubby is stricter than the config asked (no_new_privileges,
  // the default seccomp filter, more masked paths): said in the --log as
  // warnings, never silent.
  std::vector<std::string> warnings;
};

Result<BoxOptions> box_options(const Spec& spec);
// An `exec --process` process.json as an exec in the box, with the same
// checks as the container's own process.
// `container_rlimits` are the container's (config.json's): an exec under
// the box's agent inherits them, so a process.json may repeat them (as
// containerd's do) but cannot ask for others yet.
Result<ExecRequest> exec_request(const Process& p, const std::vector<Rlimit>& container_rlimits);

}  // namespace cubby::oci
