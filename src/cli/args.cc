#include "cli/args.h"

#include <charconv>
#include <cmath>

namespace cubby::cli {

SplitArgs split_at_command(const std::vector<std::string>& args, const std::set<std::string>& takes_value) {
  SplitArgs out;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.size() < 2 || a[0] != '-') break;  // the first positional
    out.options.push_back(a);
    if (a.find('=') != std::string::npos) continue;  // --opt=value
    if (takes_value.count(a)) {
      if (i + 1 < args.size()) out.options.push_back(args[++i]);
      continue;
    }
    // -eK=V (a short option with its value attached) needs nothing more;
    // -it (bundled flags) neither.
  }
  if (i < args.size()) out.options.push_back(args[i++]);
  for (; i < args.size(); ++i) out.command.push_back(args[i]);
  return out;
}

std::optional<double> parse_number(const std::string& s) {
  if (s.empty()) return std::nullopt;
  // from_chars would accept "inf" and "nan": allow plain decimals only.
  if (s.find_first_not_of("0123456789.eE+-") != std::string::npos) return std::nullopt;
  const char* b = s.data();
  if (*b == '+') ++b;  // from_chars does not take a leading '+'
  double v = 0;
  auto r = std::from_chars(b, s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_integer(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const char* b = s.data();
  if (*b == '+') ++b;
  int64_t v = 0;
  auto r = std::from_chars(b, s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || b == s.data() + s.size()) return std::nullopt;
  return v;
}

Result<void> check_env_var(const std::string& e) {
  std::string key = e.substr(0, e.find('='));
  if (key.empty()) return fail(Error::invalid("--env: invalid variable \"" + e + "\" (want KEY=VALUE or KEY)"));
  for (unsigned char c : key)
    if (c < 0x20 || c == 0x7f)
      return fail(Error::invalid("--env: invalid variable \"" + one_line(e) + "\": the name contains a control character"));
  return {};
}

std::string one_line(const std::string& msg) {
  std::string out;
  out.reserve(msg.size());
  for (char c : msg) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace cubby::cli
