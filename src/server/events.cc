#include "server/events.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

namespace cubby::server {

namespace {

struct BoxSeen {
  std::string name;
  store::BoxStatus status;
  std::optional<int> exit_code;
};

}  // namespace

EventHub::EventHub(Runtime::Options opts) : opts_(std::move(opts)), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

EventHub::~EventHub() {
  uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
  if (thread_.joinable()) thread_.join();
}

StreamReply EventHub::subscribe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) throw internal_error("pipe: " + std::string(strerror(errno)));
  UniqueFd read_end(p[0]);
  ::fcntl(p[1], F_SETFL, O_NONBLOCK);
  auto outcome = std::make_shared<Outcome>();
  {
    std::unique_lock lk(mu_);
    subs_.emplace_back(UniqueFd(p[1]), outcome);
    // Started at the first subscriber: a server nobody watches does no work.
    if (!started_) {
      started_ = true;
      thread_ = std::thread([this] { run(); });
    }
    ready_cv_.wait(lk, [&] { return ready_; });
    if (failed_) {
      subs_.clear();
      throw *failed_;
    }
  }
  return StreamReply{std::move(read_end), outcome, /*eager=*/true};
}

void EventHub::publish(const json& ev) {
  std::string line = dump(ev) + "\n";
  std::lock_guard lk(mu_);
  std::erase_if(subs_, [&](auto& s) {
    ssize_t n = ::write(s.first.get(), line.data(), line.size());
    if (n == static_cast<ssize_t>(line.size())) return false;
    // Gone (EPIPE) or a full pipe (a client that stopped reading): cut.
    s.second->set({http::status::too_many_requests, "too_many_requests", "the events client fell behind"});
    return true;
  });
}

void EventHub::run() {
  ::prctl(PR_SET_NAME, "cubby-events");
  auto rt = Runtime::open(opts_);
  if (!rt) {
    std::lock_guard lk(mu_);
    failed_ = api_error(rt.error());
    ready_ = true;  // the waiting subscribers get the error
    ready_cv_.notify_all();
    return;
  }
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  // Every write to the store lands in cubby.db-wal (WAL mode) or cubby.db;
  // the image store replaces index.json by rename.
  ::inotify_add_watch(in.get(), rt->home().c_str(), IN_MODIFY | IN_CREATE | IN_MOVED_TO);
  ::inotify_add_watch(in.get(), (rt->home() + "/images").c_str(), IN_MOVED_TO | IN_CLOSE_WRITE);
  std::map<std::string, BoxSeen> boxes;
  std::map<std::string, std::string> images;  // id -> ref
  bool first = true;
  for (;;) {
    if (auto list = rt->list()) {
      std::map<std::string, BoxSeen> now;
      for (auto& b : *list) now[b.id] = {b.name, b.status, b.exit_code};
      if (!first) {
        auto ev = [&](const std::string& id, const BoxSeen& b, const char* action) {
          json e = {{"time", now_rfc3339()}, {"type", "box"}, {"action", action}, {"id", id}, {"name", b.name}};
          if (std::string(action) == "exited") e["exit_code"] = b.exit_code ? json(*b.exit_code) : json(nullptr);
          publish(e);
        };
        for (auto& [id, b] : now) {
          auto it = boxes.find(id);
          bool was_running = it != boxes.end() && it->second.status == store::BoxStatus::kRunning;
          if (it == boxes.end()) ev(id, b, "created");
          if (b.status == store::BoxStatus::kRunning && !was_running) ev(id, b, "started");
          if (was_running && b.status != store::BoxStatus::kRunning && b.status != store::BoxStatus::kCreated)
            ev(id, b, "exited");
        }
        for (auto& [id, b] : boxes)
          if (!now.count(id)) {
            if (b.status == store::BoxStatus::kRunning) ev(id, b, "exited");
            ev(id, b, "removed");
          }
      }
      boxes = std::move(now);
    }
    if (auto imgs = rt->images().list()) {
      std::map<std::string, std::string> now;
      for (auto& i : *imgs) now[i.id + " " + i.ref] = i.ref;
      if (!first) {
        for (auto& [k, ref] : now)
          if (!images.count(k))
            publish({{"time", now_rfc3339()}, {"type", "image"}, {"action", "pulled"}, {"id", "sha256:" + k.substr(0, k.find(' '))}, {"name", ref}});
        for (auto& [k, ref] : images)
          if (!now.count(k))
            publish({{"time", now_rfc3339()}, {"type", "image"}, {"action", "removed"}, {"id", "sha256:" + k.substr(0, k.find(' '))}, {"name", ref}});
      }
      images = std::move(now);
    }
    if (first) {
      std::lock_guard lk(mu_);
      ready_ = true;
      ready_cv_.notify_all();
    }
    first = false;
    pollfd p[2] = {{in.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
    if (p[1].revents) return;
    char buf[4096];
    while (::read(in.get(), buf, sizeof buf) > 0) {
    }
  }
}

}  // namespace cubby::server
