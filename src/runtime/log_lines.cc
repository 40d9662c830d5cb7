#include "runtime/log_lines.h"

#include <ctime>

#include "base/sys.h"
#include "proto/logfile.h"

namespace cubby {

std::string format_log_time(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1'000'000'000);
  struct tm tm;
  ::gmtime_r(&secs, &tm);
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%09lldZ", static_cast<long long>(ns % 1'000'000'000));
  return buf;
}

LogLines::LogLines(const LogsOptions& o, Sink sink) : o_(o), sink_(std::move(sink)), buffering_(o.tail.has_value()) {}

bool LogLines::wanted(int64_t t) const {
  if (o_.since_ns && t < *o_.since_ns) return false;
  if (o_.until_ns && t >= *o_.until_ns) return false;
  return true;
}

void LogLines::emit(int stream, std::string_view bytes) {
  if (!stopped_ && !sink_(stream == logfile::kStdout ? 1 : 2, bytes)) stopped_ = true;
}

void LogLines::record(int stream, int64_t time_ns, std::string_view data) {
  if (data.empty() || stream < 1 || stream > 3 || (stream == logfile::kConsole && !o_.console)) return;
  Stream& s = streams_[stream];
  if (!buffering_ && !o_.timestamps) {
    // Every line that begins in this record has its time, so only the
    // first piece (the end of a line begun earlier) may be decided apart:
    // the record goes out whole or in two pieces, never split per line
    // (`logs -f` must keep up with a writer that rotates files under it).
    const bool now = wanted(time_ns);
    size_t first_end = s.mid_line ? data.find('\n') : 0;
    if (first_end == std::string_view::npos) first_end = data.size();
    else if (s.mid_line) ++first_end;
    std::string_view head = data.substr(0, first_end), rest = data.substr(first_end);
    if (s.mid_line && s.keep && !head.empty()) emit(stream, head);
    if (!rest.empty()) {
      s.keep = now;
      if (now) emit(stream, rest);
    }
    s.mid_line = data.back() != '\n';
    return;
  }
  // What this record gives out now, in one write (a record may hold
  // thousands of lines: a write each would leave `logs -f` behind a fast
  // writer, and rotation would take files it had not read yet).
  std::string out;
  while (!data.empty()) {
    size_t nl = data.find('\n');
    std::string_view seg = data.substr(0, nl == std::string_view::npos ? data.size() : nl + 1);
    data.remove_prefix(seg.size());
    const bool line_start = !s.mid_line;
    if (line_start) {  // a new line: it takes this record's time
      s.keep = wanted(time_ns);
      if (s.keep && buffering_) {
        held_.push_back({stream, {}});
        s.line = first_held_ + held_.size() - 1;
        while (held_.size() > static_cast<size_t>(*o_.tail)) {
          held_.pop_front();
          ++first_held_;
        }
      }
    }
    s.mid_line = seg.back() != '\n';
    if (!s.keep) continue;
    std::string* into = &out;
    if (buffering_) {
      if (s.line < first_held_) continue;  // the line fell out of the last N
      into = &held_[s.line - first_held_].text;
    }
    if (line_start && o_.timestamps && time_ns > 0) into->append(format_log_time(time_ns) + " ");
    into->append(seg);
  }
  if (!out.empty()) emit(stream, out);
}

void LogLines::end_of_history() {
  if (!buffering_) return;
  // Consecutive lines of one stream go out in one write.
  std::string run;
  int run_stream = 0;
  for (auto& l : held_) {
    if (l.stream != run_stream && !run.empty()) {
      emit(run_stream, run);
      run.clear();
    }
    run_stream = l.stream;
    run.append(l.text);
  }
  if (!run.empty()) emit(run_stream, run);
  held_.clear();
  buffering_ = false;
  // A line still open goes on unbuffered (its start was printed, or not).
  for (auto& s : streams_)
    if (s.mid_line && s.keep && s.line < first_held_) s.keep = false;
}

}  // namespace cubby
