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
