// How the host reaches a box's agent. The runtime only sees Transport; the
// sandbox backend connects to a Unix socket the shim bound before the agent
// started (connects queue in the backlog: early bind), and the vm backend
// will reach the same socket path, served by the shim's multiplexer over
// virtio-serial or vsock.
#pragma once

#include <string>

#include "base/error.h"
#include "base/unique_fd.h"
#include "proto/frame.h"

namespace cubby::proto {

class Transport {
 public:
  virtual ~Transport() = default;
  // Opens a new session stream to the agent.
  virtual Result<UniqueFd> connect() = 0;
};

// A Unix stream socket at <dir>/<name>. The path is reached through an
// O_PATH fd of the directory (/proc/self/fd/N/name), so long CUBBY_HOME
// paths never hit the 108-byte sun_path limit.
class UnixTransport : public Transport {
 public:
  UnixTransport(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {}
  Result<UniqueFd> connect() override;

 private:
  std::string dir_, name_;
};

// Binds and listens on <dir>/<name> (replacing a stale socket file).
Result<UniqueFd> listen_unix(const std::string& dir, const std::string& name, int backlog = 128);

// Client side of the handshake: sends hello, expects hello back.
Result<Conn> connect_and_hello(Transport& t);
// The same with a first request pipelined behind the hello, in the same
// write: the agent handles a session's frames in order, so the request
// costs no extra round trip. An agent that refuses the hello closes the
// session without reading further, so `first` is never acted on then.
Result<Conn> connect_and_hello(Transport& t, const Json& first);

}  // namespace cubby::proto
