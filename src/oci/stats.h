// `events --stats`: a container's cgroup figures in runc's JSON shape
// (libcontainer's types.Stats, what containerd and `docker stats` decode),
// read from its box's workload leaf (sandbox/cgroup.h): the container's
// processes, not the box's agent.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace cubby::oci {

// {"type":"stats","id":ID,"data":{"cpu":...,"memory":...,"pids":...}}
Result<nlohmann::json> stats_event(const std::string& id, const std::string& box);

}  // namespace cubby::oci
