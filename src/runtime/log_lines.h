// What `cubby logs` prints of a box log's records: Docker's --tail,
// --since/--until and -t work on lines, and box.log keeps records (one read
// of the workload's output each, stamped by the shim: proto/logfile.h). A
// line takes the time of the record it begins in; its continuation in later
// records follows it in or out. Streams are split into lines separately
// (stdout and stderr interleave mid-line), so a partial stdout line is never
// broken by a stderr one.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace cubby {

struct LogsOptions {
  bool follow = false;
  bool console = true;     // a vm box's console (kernel, init, QEMU) on err_fd
  bool timestamps = false;  // -t: each line prefixed with its time (RFC 3339, ns)
  std::optional<int64_t> tail;  // only the last N lines of what is there (then, following, all new ones)
  std::optional<int64_t> since_ns, until_ns;  // lines from [since, until)
  // The write end of a pipe the lines go to (or -1): a follow ends as soon
  // as its reader closes it, not at the box's next output.
  int reader_fd = -1;
};

// "2026-12-02T01:43:27.123456789Z": Docker's `logs -t` format (UTC, nine digits).
std::string format_log_time(int64_t ns);

class LogLines {
 public:
  // Where lines go: stream 1 stdout, 2 stderr (and a vm's console); false
  // when the reader wants no more.
  using Sink = std::function<bool(int stream, std::string_view data)>;
  LogLines(const LogsOptions& o, Sink sink);
  bool stopped() const { return stopped_; }
  // One record: its stream (logfile::kStdout...), its time (0: unstamped,
  // from an older box.log) and bytes.
  void record(int stream, int64_t time_ns, std::string_view data);
  // What was in the log when `logs` began has been read: --tail's lines go
  // out now, and from here every line goes out as it comes.
  void end_of_history();

 private:
  struct Line {
    int stream;
    std::string text;
  };
  struct Stream {
    bool mid_line = false;  // the last bytes did not end a line
    bool keep = false;      // that line passes --since/--until
    uint64_t line = 0;      // its number, while --tail buffers
  };
  void emit(int stream, std::string_view bytes);
  bool wanted(int64_t t) const;

  LogsOptions o_;
  Sink sink_;
  bool stopped_ = false;
  bool buffering_;  // --tail: the history is held back to its last N lines
  std::deque<Line> held_;
  uint64_t first_held_ = 0;  // the number of held_.front()
  Stream streams_[4];
};

}  // namespace cubby
