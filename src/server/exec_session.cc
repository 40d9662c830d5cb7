#include "server/exec_session.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>

#include "server/server.h"

namespace cubby::server {

using namespace std::chrono_literals;

void OutputRing::append(std::string_view d) {
  data_.append(d);
  if (data_.size() > kRingBytes) {
    size_t drop = data_.size() - kRingBytes;
    data_.erase(0, drop);
    start_ += drop;
  }
}

std::string_view OutputRing::from(uint64_t off, size_t max) const {
  if (off < start_) off = start_;
  if (off >= end()) return {};
  return std::string_view(data_).substr(static_cast<size_t>(off - start_), max);
}

ExecSession::ExecSession(asio::io_context& io, std::string id_, std::string box, ExecRequest r)
    : id(std::move(id_)), box_id(std::move(box)), req(std::move(r)), io_(io), changed_(io) {
  changed_.expires_at(asio::steady_timer::time_point::max());
}

asio::awaitable<void> ExecSession::wait_change() {
  // The timer never expires: notify() cancels every pending wait at once,
  // and a new wait needs no re-arming (re-arming would cancel the others).
  boost::system::error_code ec;
  co_await changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

namespace {
struct Pipe {
  UniqueFd r, w;
};
Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) throw internal_error("pipe: " + std::string(strerror(errno)));
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}
}  // namespace

void ExecSession::start(Server& srv) {
  if (state != State::kCreated) return;
  Pipe in, o, e, ctl = make_pipe();
  if (req.interactive) in = make_pipe();
  o = make_pipe();
  e = make_pipe();
  // The worker's ends, closed when Runtime::exec returns: EOF on ours.
  struct WorkerFds {
    UniqueFd in, out, err, control;
  };
  auto wf = std::make_shared<WorkerFds>(WorkerFds{std::move(in.r), std::move(o.w), std::move(e.w), std::move(ctl.r)});
  auto self = shared_from_this();
  Server* s = &srv;
  bool ok = srv.detach([self, wf, s](Result<Runtime*> rt) {
    auto r = [&]() -> Result<ExecResult> {
      if (!rt) return std::unexpected(rt.error());
      StdioFds io{wf->in ? wf->in.get() : -1, wf->out.get(), wf->err.get()};
      io.control = wf->control.get();
      io.detach_keys = false;
      return (*rt)->exec(self->box_id, self->req, io);
    }();
    *wf = WorkerFds{};
    asio::post(s->io(), [self, s, r = std::move(r)]() mutable {
      if (r) self->result = std::move(*r);
      else self->error = api_error(r.error());
      self->state = State::kEnded;
      self->ended_at = std::chrono::steady_clock::now();
      self->notify();
      s->busy_end();
    });
  });
  if (!ok) throw too_many("the server is busy (every worker is taken)");
  srv.busy_begin();
  state = State::kRunning;
  started_at = std::chrono::steady_clock::now();
  if (req.interactive) stdin_ = std::make_unique<asio::posix::stream_descriptor>(io_, in.w.release());
  ::fcntl(ctl.w.get(), F_SETFL, O_NONBLOCK);
  control_ = std::move(ctl.w);
  asio::co_spawn(io_, pump(0, std::make_shared<asio::posix::stream_descriptor>(io_, o.r.release())), asio::detached);
  asio::co_spawn(io_, pump(1, std::make_shared<asio::posix::stream_descriptor>(io_, e.r.release())), asio::detached);
}

asio::awaitable<void> ExecSession::pump(int i, std::shared_ptr<asio::posix::stream_descriptor> fd) {
  auto self = shared_from_this();
  std::vector<char> buf(64 * 1024);
  for (;;) {
    // Backpressure onto the process while an attached client is a full ring behind.
    while (attached && out[i].end() - client_sent[i] >= kRingBytes) co_await wait_change();
    boost::system::error_code ec;
    size_t n = co_await fd->async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec || n == 0) break;
    out[i].append(std::string_view(buf.data(), n));
    notify();
  }
  eof[i] = true;
  notify();
}

asio::awaitable<bool> ExecSession::write_stdin(std::string_view d) {
  if (!stdin_) co_return false;
  auto keep = stdin_.get();
  boost::system::error_code ec;
  co_await asio::async_write(*keep, asio::buffer(d.data(), d.size()), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    close_stdin();
    co_return false;
  }
  co_return true;
}

void ExecSession::close_stdin() {
  if (!stdin_) return;
  boost::system::error_code ec;
  stdin_->close(ec);
  stdin_.reset();
}

bool ExecSession::control(ControlRecord r) {
  if (state != State::kRunning || !control_) return false;
  return ::write(control_.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r);
}

json ExecSession::status_json() const {
  json j = {{"id", id}, {"running", state == State::kRunning || (state == State::kEnded && !finished())},
            {"exit_code", nullptr}, {"status", nullptr}, {"signal", nullptr}, {"duration_ms", nullptr},
            {"started", state != State::kCreated}};
  if (state == State::kEnded) {
    j["running"] = false;
    j["duration_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(ended_at - started_at).count();
    if (result) {
      j["exit_code"] = result->code;
      j["status"] = result->timed_out ? "timed_out" : result->signal ? "signaled" : "exited";
      if (result->signal) j["signal"] = result->signal;
      if (!result->error.empty()) j["error"] = result->error;
    } else if (error) {
      j["error"] = error->message;
    }
  }
  return j;
}

std::string ExecSession::k8s_status() const {
  if (result && result->code == 0) return dump({{"metadata", json::object()}, {"status", "Success"}});
  if (result)
    return dump({{"metadata", json::object()},
                 {"status", "Failure"},
                 {"reason", "NonZeroExitCode"},
                 {"message", "command terminated with non-zero exit code"},
                 {"details", {{"causes", json::array({{{"reason", "ExitCode"}, {"message", std::to_string(result->code)}}})}}}});
  return dump({{"metadata", json::object()},
               {"status", "Failure"},
               {"reason", "InternalError"},
               {"message", error ? error->message : "the exec ended without a status"}});
}

std::shared_ptr<ExecSession> ExecRegistry::create(std::string box_id, ExecRequest req) {
  collect();
  if (sessions_.size() >= 4096) throw too_many("too many exec sessions");
  uint64_t v[2] = {0, 0};
  (void)!::getrandom(v, sizeof v, 0);
  char id[33];
  std::snprintf(id, sizeof id, "%016llx%016llx", static_cast<unsigned long long>(v[0]), static_cast<unsigned long long>(v[1]));
  auto s = std::make_shared<ExecSession>(io_, id, std::move(box_id), std::move(req));
  sessions_[id] = s;
  return s;
}

std::shared_ptr<ExecSession> ExecRegistry::find(const std::string& box_id, const std::string& id) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second->box_id != box_id) return nullptr;
  return it->second;
}

size_t ExecRegistry::running() const {
  size_t n = 0;
  for (auto& [id, s] : sessions_) n += s->state == ExecSession::State::kRunning;
  return n;
}

void ExecRegistry::collect() {
  // Ended and unattached for 10 minutes; never-attached ones after an hour.
  auto now = std::chrono::steady_clock::now();
  std::erase_if(sessions_, [&](auto& kv) {
    auto& s = *kv.second;
    if (s.attached) return false;
    if (s.state == ExecSession::State::kEnded) return now - s.ended_at > 10min;
    return false;
  });
}

}  // namespace cubby::server
