// GET /v1/events: changes to this home's boxes and images, whoever made
// them (the CLI included). The store is the truth, so the hub watches it:
// inotify on the home (cubby.db and its WAL) and on the image index; on a
// change it lists boxes and images again (on a thread of its own, with its
// own Runtime) and turns the difference into events. Nothing is polled.
// Each subscriber is a non-blocking pipe; one that falls 64 KiB behind (a
// stalled client) is dropped, never waited for.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/runtime.h"
#include "server/api.h"

namespace cubby::server {

class EventHub {
 public:
  explicit EventHub(Runtime::Options opts);
  ~EventHub();
  // A new subscriber. Blocks (call it on a worker) until the hub has its
  // first picture of the home, so every change made after this returns is
  // an event the subscriber sees.
  StreamReply subscribe();

 private:
  void run();
  void publish(const json& ev);

  Runtime::Options opts_;
  UniqueFd stop_;  // eventfd
  std::mutex mu_;
  std::vector<std::pair<UniqueFd, std::shared_ptr<Outcome>>> subs_;
  std::thread thread_;
  bool started_ = false;
  bool ready_ = false;  // the first picture is taken (or the hub failed)
  std::optional<ApiError> failed_;  // it could not open the home: every subscriber gets this
  std::condition_variable ready_cv_;
};

}  // namespace cubby::server
