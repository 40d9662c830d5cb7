#include "server/worker_pool.h"

#include <sys/prctl.h>

#include <chrono>

namespace cubby::server {

WorkerPool::WorkerPool(Runtime::Options opts, size_t max_threads, size_t max_queued)
    : opts_(std::move(opts)), max_threads_(max_threads), max_queued_(max_queued) {}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

bool WorkerPool::submit(Task t) {
  std::unique_lock lk(mu_);
  // The threads that will take a queued task: the idle ones and the ones
  // starting. A woken thread stays counted as idle until it takes its task,
  // so the queued tasks are set against them: with only idle_ == 0 as the
  // test, two quick submits to one idle thread left the second queued
  // behind the first, which may be an exec that runs for hours.
  if (queue_.size() >= idle_ + starting_) {
    if (threads_.size() < max_threads_) {
      ++starting_;
      threads_.emplace_back([this] { run(); });
    } else if (queue_.size() >= max_queued_) {
      return false;
    }
  }
  queue_.push_back(std::move(t));
  lk.unlock();
  cv_.notify_one();
  return true;
}

size_t WorkerPool::busy() const {
  std::lock_guard lk(mu_);
  return running_ + queue_.size();
}

void WorkerPool::run() {
  ::prctl(PR_SET_NAME, "cubby-worker");
  // Opened at the first task, on this thread, and used only here.
  std::optional<Result<Runtime>> rt;
  std::unique_lock lk(mu_);
  --starting_;
  for (;;) {
    ++idle_;
    cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stopping, nothing left
    Task t = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lk.unlock();
    if (!rt) rt.emplace(Runtime::open(opts_));
    if (*rt) t(&**rt);
    else t(std::unexpected((*rt).error()));
    lk.lock();
    --running_;
  }
}

}  // namespace cubby::server
