// The box log's writer: a thread of the shim that takes log records
// (proto/logfile.h) from pipes and appends them to <box_dir>/box.log,
// rotating it as Docker's json-file driver does (max-size, max-file).
//
// Why pipes into the shim rather than the agent writing the file: the
// sandbox's agent is PID 1 of the box, inside its mount namespace and, as
// root, a stranger's uid on the host; rotating means renaming and creating
// files in the box directory, which the agent must never be able to reach (a
// directory fd would let a compromised agent walk up out of it, as its own
// user, or anywhere with --userns host). The agent writes its records to a
// pipe instead, so a full pipe slows the workload's output, as a slow disk
// did. The vm backend's writers (the guest's log frames, the console) feed
// pipes of their own, so one writer per pipe keeps records whole.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::shim {

struct LogLimits {
  int64_t max_size;  // bytes per file, >= logfile::kMinMaxSize
  int max_files;     // box.log plus max_files - 1 rotated ones
};

class BoxLog {
 public:
  // Opens (appending to) <box_dir>/box.log. Inputs are added before start().
  static Result<std::unique_ptr<BoxLog>> open(const std::string& box_dir, LogLimits limits);
  ~BoxLog();
  // A new pipe whose records go into the log: the write end, for one writer.
  Result<UniqueFd> add_input();
  void start();
  // Writes what the inputs hold now, then stops the thread (all writers must
  // be done: the box has ended). Idempotent.
  void finish();
  // A record from another thread of the shim (its notes), between the
  // writer thread's records.
  void note(int stream, std::string_view data);

 private:
  struct Input;
  BoxLog() = default;
  void loop();
  void drain(Input& in, bool until_eof);
  void append(int stream, std::string_view data);
  void rotate();

  UniqueFd dir_, file_, stop_;
  LogLimits limits_{};
  int64_t size_ = 0;
  std::vector<std::unique_ptr<Input>> inputs_;
  std::mutex mu_;  // the file, its size and rotation: the writer thread and note()
  std::thread th_;
};

}  // namespace cubby::shim
