// cubby-runc's state directory (--root, default /run/cubby-runc):
//   <root>/<id>/state.json  the container: its box, bundle, relay pid (see
//                           relay.h), creation time, whether it was started
//   <root>/<id>/start.fifo  `start` writes one byte here; the relay waits on it
//   <root>/.cubby/          the cubby home holding the containers' boxes
// Ids are cubby box names ([a-zA-Z0-9][a-zA-Z0-9_.-]*, up to 128), so an id
// can never name a path outside <root> nor the home.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "oci/spec.h"

namespace cubby::oci {

struct ContainerState {
  std::string id;
  std::string box;     // the cubby box id
  std::string bundle;
  pid_t pid = 0;       // the relay (the container's init as the caller sees it)
  uint64_t pid_start = 0;  // its start time: a reused pid is never taken for it
  std::string created;
  bool started = false;
  nlohmann::json annotations = nlohmann::json::object();
  Hooks hooks;  // config.json's, kept for start (startContainer, poststart) and delete (poststop)
};

class StateDir {
 public:
  explicit StateDir(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }
  std::string home() const { return root_ + "/.cubby"; }
  std::string dir(const std::string& id) const { return root_ + "/" + id; }
  std::string start_fifo(const std::string& id) const { return dir(id) + "/start.fifo"; }

  // Makes <root>/<id> (refusing an id in use) and its start fifo.
  Result<void> reserve(const std::string& id);
  Result<void> save(const ContainerState& s);
  Result<ContainerState> load(const std::string& id) const;
  Result<void> remove(const std::string& id);
  std::vector<std::string> ids() const;

 private:
  std::string root_;
};

Result<void> check_id(const std::string& id);

// The OCI status of a container: "created", "running" or "stopped".
std::string status_of(const ContainerState& s);
// Whether the recorded relay is alive (same pid and start time, not a zombie).
bool relay_alive(const ContainerState& s);

}  // namespace cubby::oci
