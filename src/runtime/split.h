// Splitting a flag value on its separators (-p and -v are both ':'-joined).
#pragma once

#include <string_view>
#include <vector>

namespace cubby {

// "a::b" -> {"a", "", "b"}; "" -> {""}. The views point into `s`.
inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    size_t at = s.find(sep, start);
    parts.push_back(s.substr(start, at == std::string_view::npos ? at : at - start));
    if (at == std::string_view::npos) return parts;
    start = at + 1;
  }
}

}  // namespace cubby
