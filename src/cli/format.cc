#include "cli/format.h"

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

Result<int> parse_signal(const std::string& s) {
  int n = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), n);
  if (r.ec == std::errc() && r.ptr == s.data() + s.size()) {
    if (n > 0 && n < NSIG) return n;
    return fail(Error::invalid("invalid signal \"" + s + "\" (want 1-" + std::to_string(NSIG - 1) + ")"));
  }
  std::string name = s;
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int i = 1; i < NSIG; ++i) {
    const char* abbrev = sigabbrev_np(i);
    if (abbrev && name == abbrev) return i;
  }
  return fail(Error::invalid("invalid signal \"" + s + "\" (want a name such as TERM, KILL or SIGINT, or a number)"));
}

void print_box_table(const std::vector<store::BoxRecord>& boxes) {
  std::printf("%-12s  %-20s  %-28s  %-12s  %-20s\n", "BOX ID", "NAME", "IMAGE", "STATUS", "CREATED");
  for (auto& b : boxes) {
    std::string status = store::to_string(b.status);
    if (b.status != store::BoxStatus::kRunning && b.status != store::BoxStatus::kCreated && b.exit_code)
      status += " (" + std::to_string(*b.exit_code) + ")";
    std::printf("%-12s  %-20s  %-28s  %-12s  %-20s\n", b.id.substr(0, 12).c_str(), b.name.c_str(), b.image.c_str(),
                status.c_str(), b.created_at.c_str());
  }
}

void print_image_table(const std::vector<image::ImageInfo>& images) {
  std::printf("%-40s  %-12s  %-20s  %10s\n", "REFERENCE", "IMAGE ID", "CREATED", "SIZE");
  for (auto& i : images)
    std::printf("%-40s  %-12s  %-20s  %10.1fMB\n", i.ref.c_str(), i.id.substr(0, 12).c_str(), i.created.c_str(),
                static_cast<double>(i.size) / 1e6);
}

}  // namespace cubby
