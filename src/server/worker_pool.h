// The server's blocking work runs here, never on the network thread: every
// Runtime call may block (SQLite's busy wait, a box's agent, a long exec or
// `wait`). Runtime is not thread-safe (one SQLite connection), so each
// worker thread opens a Runtime of its own, once, and keeps it.
//
// The pool grows on demand up to `max_threads` (a stalled box or a slow
// client holds one worker, never the others); idle workers are kept for
// reuse (each holds a Runtime, ~100 KiB). Past the cap, work waits in a bounded
// queue; past that, submit() refuses (the server answers 429).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <type_traits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/runtime.h"

namespace cubby::server {

// A move-only callable. Not std::move_only_function: GCC 12's copies an
// object it stores in place bitwise when it is moved, so a captured short
// std::string (whose pointer points into itself) is freed from the wrong
// address ("free(): invalid pointer"); seen here with every capture list.
template <class Sig>
class UniqueFn;
template <class R, class... A>
class UniqueFn<R(A...)> {
  struct Base {
    virtual ~Base() = default;
    virtual R call(A... a) = 0;
  };
  template <class F>
  struct Impl : Base {
    F f;
    explicit Impl(F&& x) : f(std::move(x)) {}
    R call(A... a) override { return f(std::forward<A>(a)...); }
  };
  std::unique_ptr<Base> p_;

 public:
  UniqueFn() = default;
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, UniqueFn>>>
  UniqueFn(F f) : p_(std::make_unique<Impl<F>>(std::move(f))) {}
  R operator()(A... a) { return p_->call(std::forward<A>(a)...); }
  explicit operator bool() const { return p_ != nullptr; }
};

class WorkerPool {
 public:
  // The task gets this worker's Runtime, or the error that opening it gave.
  using Task = UniqueFn<void(Result<Runtime*>)>;

  WorkerPool(Runtime::Options opts, size_t max_threads, size_t max_queued);
  ~WorkerPool();  // waits for running tasks (the server ends them first)
  WorkerPool(const WorkerPool&) = delete;

  // False when both the threads and the queue are full.
  bool submit(Task t);
  // Tasks running or queued right now.
  size_t busy() const;

 private:
  void run();

  Runtime::Options opts_;
  size_t max_threads_, max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0, starting_ = 0, running_ = 0;
  bool stopping_ = false;
};

}  // namespace cubby::server
