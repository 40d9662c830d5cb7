// `cubby serve`: the REST + WebSocket API over the same Runtime the CLI
// uses (docs/openapi.json is the contract; docs/ARCHITECTURE.md the design).
//
// Threads: one network thread runs the io_context (accepts, HTTP parsing by
// Beast, WebSocket frames, timers, pipe relays); it never calls Runtime and
// never forks. Every Runtime call runs on the WorkerPool. Streams cross from
// a worker to the network thread through pipes (the Runtime's fd-based API)
// read with asio::posix::stream_descriptor.
//
// State: none that a crash can lose. Boxes live in their shims and the
// store; the server keeps only two-step exec sessions (their output buffers
// for re-attach), which die with it as a CLI's exec dies with the CLI.
#pragma once

#include <utility>  // before Boost: asio 1.74's awaitable.hpp uses std::exchange without it
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <utility>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "runtime/runtime.h"
#include "server/api.h"
#include "server/worker_pool.h"

namespace cubby::server {

namespace asio = boost::asio;

struct Options {
  std::string home, bin_dir;  // as for Runtime::open
  std::string socket_path;    // empty: HOME/cubby.sock
  std::string listen;         // ADDR:PORT for TCP (needs a token)
  std::string token_file;
  std::string tls_cert, tls_key;
  int idle_exit = 0;  // seconds; 0: never
  // Seconds a read or write under way may make no progress (a stalled
  // request gets a 408, a stalled reader is cut).
  int io_timeout = 30;
  size_t max_workers = 512;
};

class ExecRegistry;
class EventHub;
class Reaper;

class Server {
 public:
  explicit Server(Options o);
  ~Server();
  // Binds, serves until SIGTERM/SIGINT or the idle exit; returns the exit code.
  int run();

  asio::io_context& io() { return io_; }
  const Options& options() const { return opts_; }
  ExecRegistry& execs() { return *execs_; }
  EventHub& events() { return *events_; }

  // Runs f(Runtime&) on a worker and resumes with its value on the network
  // thread. An ApiError (or a Result error via unwrap) thrown by f is
  // rethrown here; a full pool is a 429.
  // Pass a named lambda that captures by reference ([&]: the awaiting
  // coroutine's frame outlives the call). GCC 12 relocates a closure made
  // in a coroutine bitwise, so a captured std::string ends up pointing into
  // the frame (seen under valgrind: "Invalid free" of a frame address).
  template <class F>
  auto blocking(F&& f) -> asio::awaitable<std::invoke_result_t<std::decay_t<F>&, Runtime&>>;
  // Starts f on a worker without waiting (streams: f writes to a pipe).
  // False when the pool is full.
  bool detach(WorkerPool::Task f);

  // Open connections and running requests, for --idle-exit.
  void busy_begin();
  void busy_end();
  // Called after every worker task: shims it started are now ours to reap.
  void children_may_have_changed();

 private:
  void arm_idle_timer();

  Options opts_;
  asio::io_context io_;
  WorkerPool pool_;
  std::unique_ptr<ExecRegistry> execs_;
  std::unique_ptr<EventHub> events_;
  std::unique_ptr<Reaper> reaper_;
  asio::steady_timer idle_timer_;
  size_t busy_ = 0;
  bool idle_exited_ = false;
};

// The initiation of Server::blocking: submits f and completes the
// awaitable on the network thread with f's value or exception. It holds
// only a raw pointer: asio 1.74's use_awaitable passes the initiation by
// value into a coroutine, and GCC 12 copies it there bitwise, which breaks
// anything with an inner pointer (a captured short std::string).
template <class F, class R>
struct BlockingInit {
  Server* srv;
  F* f;  // owned; taken by operator()
  template <class Handler>
  void operator()(Handler handler) {
    auto h = std::make_shared<Handler>(std::move(handler));
    Server* s = srv;
    std::shared_ptr<F> fn(f);
    bool ok = s->detach([s, fn, h](Result<Runtime*> rt) mutable {
      std::exception_ptr ep;
      R v{};
      try {
        if (!rt) throw api_error(rt.error());
        v = (*fn)(**rt);
      } catch (...) {
        ep = std::current_exception();
      }
      asio::post(s->io(), [h, ep, v = std::move(v)]() mutable { (*h)(ep, std::move(v)); });
    });
    if (!ok)
      asio::post(s->io(), [h]() mutable {
        (*h)(std::make_exception_ptr(too_many("the server is busy (every worker is taken)")), R{});
      });
  }
};

template <class F>
auto Server::blocking(F&& f) -> asio::awaitable<std::invoke_result_t<std::decay_t<F>&, Runtime&>> {
  using R = std::invoke_result_t<std::decay_t<F>&, Runtime&>;
  static_assert(std::is_default_constructible_v<R>, "the error path completes with R{}");
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::exception_ptr, R)>(
      BlockingInit<std::decay_t<F>, R>{this, new std::decay_t<F>(std::forward<F>(f))}, asio::use_awaitable);
}

}  // namespace cubby::server
