#include "cli/format.h"

#include <time.h>

#include <algorithm>
#include "cli/args.h"

#include <signal.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace cubby {

Result<int64_t> parse_size(const std::string& s) {
  if (s.empty()) return fail(Error::invalid("invalid size \"\": expected a number with an optional unit (b, k, m, g)"));
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0) return fail(Error::invalid("invalid size \"" + s + "\": expected a number with an optional unit (b, k, m, g)"));
  int64_t n = 0;
  auto r = std::from_chars(s.data(), s.data() + i, n);
  if (r.ec != std::errc()) return fail(Error::invalid("invalid size \"" + s + "\": too large"));
  std::string unit = s.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int shift;
  if (unit.empty() || unit == "b") shift = 0;
  else if (unit == "k" || unit == "kb" || unit == "kib") shift = 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") shift = 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") shift = 30;
  else return fail(Error::invalid("invalid size \"" + s + "\": unknown unit \"" + unit + "\" (want b, k, m or g)"));
  if (n > (INT64_MAX >> shift)) return fail(Error::invalid("invalid size \"" + s + "\": too large"));
  return n << shift;
}

std::string human_duration(int64_t seconds) {
  auto n = [](int64_t v, const char* unit) { return std::to_string(v) + " " + unit + (v == 1 ? "" : "s"); };
  if (seconds < 1) return "Less than a second";
  if (seconds == 1) return "1 second";
  if (seconds < 60) return n(seconds, "second");
  int64_t minutes = seconds / 60;
  if (minutes == 1) return "About a minute";
  if (minutes < 60) return n(minutes, "minute");
  int64_t hours = minutes / 60;
  if (hours == 1) return "About an hour";
  if (hours < 48) return n(hours, "hour");
  if (hours < 24 * 7 * 2) return n(hours / 24, "day");
  if (hours < 24 * 30 * 2) return n(hours / 24 / 7, "week");
  if (hours < 24 * 365 * 2) return n(hours / 24 / 30, "month");
  return n(hours / 24 / 365, "year");
}

std::string time_ago(const std::string& rfc3339, int64_t now_sec) {
  auto t = cli::parse_log_time(rfc3339, 0);
  if (rfc3339.empty() || !t) return "";
  return human_duration(std::max<int64_t>(0, now_sec - *t / 1'000'000'000)) + " ago";
}

std::string familiar_ref(const std::string& ref) {
  for (const char* p : {"docker.io/library/", "docker.io/"})
    if (ref.rfind(p, 0) == 0) return ref.substr(std::strlen(p));
  return ref;
}

namespace {

// Rows of cells, each column padded to its widest cell plus three spaces
// (Docker's tabwriter); the last column is not padded.
void print_columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  auto cells = [](const std::string& s) {  // display width: UTF-8 continuation bytes take none
    return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  for (auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], cells(r[i]));
    }
  std::string out;
  for (auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      out += r[i];
      if (i + 1 < r.size()) out.append(width[i] - cells(r[i]) + 3, ' ');
    }
    out += '\n';
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

std::string shell_words(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == std::string::npos;
    s += plain ? a : "'" + a + "'";
  }
  for (auto& c : s)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return s;
}

// Cut to n characters (not bytes), the last one an ellipsis, as Docker cuts COMMAND.
std::string cut(const std::string& s, size_t n) {
  std::vector<size_t> starts;  // where each character begins
  for (size_t i = 0; i < s.size(); ++i)
    if ((s[i] & 0xC0) != 0x80) starts.push_back(i);
  if (starts.size() <= n) return s;
  return s.substr(0, starts[n - 1]) + "\u2026";
}

}  // namespace

void print_box_table(const std::vector<store::BoxRecord>& boxes, bool no_trunc, const std::set<std::string>& paused) {
  const int64_t now = ::time(nullptr);
  std::vector<std::vector<std::string>> rows = {{"BOX ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"}};
  for (auto& b : boxes) {
    std::string status;
    switch (b.status) {
      case store::BoxStatus::kCreated: status = "Created"; break;
      case store::BoxStatus::kRunning: {
        std::string up = time_ago(b.started_at, now);
        status = up.empty() ? "Up" : "Up " + up.substr(0, up.size() - 4);
        if (paused.count(b.id)) status += " (Paused)";
        break;
      }
      case store::BoxStatus::kStopped:
      case store::BoxStatus::kExited:
        status = b.status == store::BoxStatus::kStopped ? "Stopped" : "Exited";
        if (b.exit_code) status += " (" + std::to_string(*b.exit_code) + ")";
        if (auto ago = time_ago(b.finished_at, now); !ago.empty()) status += " " + ago;
        break;
      case store::BoxStatus::kRemoving: status = "Removing"; break;
    }
    std::string command = "\"" + shell_words(b.config.value("argv", std::vector<std::string>{})) + "\"";
    if (!no_trunc) command = "\"" + cut(command.substr(1, command.size() - 2), 20) + "\"";
    rows.push_back({no_trunc ? b.id : b.id.substr(0, 12), familiar_ref(b.image), command,
                    time_ago(b.created_at, now), status, b.name});
  }
  print_columns(rows);
}

void print_image_table(const std::vector<image::ImageInfo>& images) {
  std::printf("%-40s  %-12s  %-20s  %10s\n", "REFERENCE", "IMAGE ID", "CREATED", "SIZE");
  for (auto& i : images)
    std::printf("%-40s  %-12s  %-20s  %10.1fMB\n", i.ref.c_str(), i.id.substr(0, 12).c_str(), i.created.c_str(),
                static_cast<double>(i.size) / 1e6);
}

void print_snapshot_table(const std::vector<store::SnapshotRecord>& snaps, bool no_trunc) {
  const int64_t now = ::time(nullptr);
  std::vector<std::vector<std::string>> rows = {{"SNAPSHOT ID", "NAME", "BOX", "IMAGE", "CREATED", "SIZE"}};
  for (auto& s : snaps) {
    char size[32];
    std::snprintf(size, sizeof size, "%.1fMB", static_cast<double>(s.size) / 1e6);
    rows.push_back({no_trunc ? s.id : s.id.substr(0, 12), s.name, s.box_name, familiar_ref(s.image),
                    time_ago(s.created_at, now), size});
  }
  print_columns(rows);
}

}  // namespace cubby
