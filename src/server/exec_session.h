// Two-step exec (POST .../execs, then a WebSocket attach): the process
// starts at the first attach and runs on a worker inside Runtime::exec,
// whose fds are pipes read here on the network thread. Each stream keeps
// its last kRingBytes so a client that drops and re-attaches with the byte
// offsets it has gets the rest. While a client is attached and behind by a
// full ring, reading pauses (the process then blocks on its output, as it
// would on a slow terminal); while none is, the oldest bytes are dropped.
#pragma once

#include <utility>  // before Boost: asio 1.74's awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "runtime/runtime.h"
#include "server/api.h"

namespace cubby::server {

namespace asio = boost::asio;
class Server;

inline constexpr size_t kRingBytes = 1 << 20;

// The last kRingBytes of a stream, addressed by absolute byte offset.
class OutputRing {
 public:
  void append(std::string_view d);
  uint64_t start() const { return start_; }
  uint64_t end() const { return start_ + data_.size(); }
  // Up to max bytes from offset off (off in [start, end]).
  std::string_view from(uint64_t off, size_t max) const;

 private:
  std::string data_;
  uint64_t start_ = 0;
};

class ExecSession : public std::enable_shared_from_this<ExecSession> {
 public:
  ExecSession(asio::io_context& io, std::string id, std::string box_id, ExecRequest req);

  enum class State { kCreated, kRunning, kEnded };

  // Starts the process (first attach); an error is a 429/500 ApiError.
  void start(Server& srv);
  // Wakes every coroutine waiting in wait_change().
  void notify() { changed_.cancel(); }
  asio::awaitable<void> wait_change();
  // Writes stdin (the WebSocket's channel 0); false if stdin is closed.
  asio::awaitable<bool> write_stdin(std::string_view d);
  void close_stdin();
  // Resize / signal records to the session (dropped if it is not running).
  bool control(ControlRecord r);
  // The process ended and both streams are read to the end.
  bool finished() const { return state == State::kEnded && eof[0] && eof[1]; }
  json status_json() const;
  // The k8s metav1.Status of the end (the status channel's payload).
  std::string k8s_status() const;

  const std::string id, box_id;
  const ExecRequest req;
  State state = State::kCreated;
  OutputRing out[2];  // stdout, stderr
  bool eof[2] = {false, false};
  std::optional<ExecResult> result;
  std::optional<ApiError> error;
  std::chrono::steady_clock::time_point started_at, ended_at;
  // The current attachment (a new attach takes over and the old one closes).
  uint64_t attach_gen = 0;
  bool attached = false;
  uint64_t client_sent[2] = {0, 0};

 private:
  asio::awaitable<void> pump(int stream, std::shared_ptr<asio::posix::stream_descriptor> fd);

  asio::io_context& io_;
  asio::steady_timer changed_;
  std::unique_ptr<asio::posix::stream_descriptor> stdin_;
  UniqueFd control_;
};

// Exec sessions by id. Ended ones are kept for a while (their status and
// output for a late re-attach), then dropped.
class ExecRegistry {
 public:
  explicit ExecRegistry(asio::io_context& io) : io_(io) {}
  std::shared_ptr<ExecSession> create(std::string box_id, ExecRequest req);
  // nullptr if unknown (or it belongs to another box).
  std::shared_ptr<ExecSession> find(const std::string& box_id, const std::string& id);
  size_t running() const;

 private:
  void collect();
  asio::io_context& io_;
  std::map<std::string, std::shared_ptr<ExecSession>> sessions_;
};

}  // namespace cubby::server
