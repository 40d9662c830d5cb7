#include "cli/args.h"

#include <charconv>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>
#include <ctime>
#include <utility>

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

Result<std::vector<std::string>> parse_env_file(const std::string& text, const std::string& path) {
  std::vector<std::string> out;
  size_t at = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;  // a UTF-8 byte order mark, as Docker drops it
  for (int n = 1; at < text.size(); ++n) {
    size_t nl = text.find('\n', at);
    std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? text.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t first = line.find_first_not_of(" \t\v\f");
    if (first == std::string::npos || line[first] == '#') continue;
    line.erase(0, first);
    std::string key = line.substr(0, line.find('='));
    if (key.find_first_of(" \t\v\f") != std::string::npos)
      return fail(Error::invalid(path + ":" + std::to_string(n) + ": variable \"" + one_line(key) + "\" contains whitespace"));
    if (line.find('\0') != std::string::npos)
      return fail(Error::invalid(path + ":" + std::to_string(n) + ": a NUL byte"));
    out.push_back(line);
  }
  return out;
}

Result<void> apply_change(const std::string& instruction, image::ConfigChanges& into) {
  size_t start = instruction.find_first_not_of(" \t");
  if (start == std::string::npos) return fail(Error::invalid("--change: empty instruction"));
  size_t end = instruction.find_first_of(" \t", start);
  std::string word = instruction.substr(start, end == std::string::npos ? std::string::npos : end - start);
  for (auto& ch : word) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  size_t arg = end == std::string::npos ? end : instruction.find_first_not_of(" \t", end);
  std::string rest = arg == std::string::npos ? "" : instruction.substr(arg);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.pop_back();
  auto bad = [&](const std::string& why) { return fail(Error::invalid("--change \"" + one_line(instruction) + "\": " + why)); };
  // CMD/ENTRYPOINT: the exec form (a JSON array of strings) or the shell form.
  auto command = [&]() -> Result<std::vector<std::string>> {
    if (!rest.empty() && rest[0] == '[') {
      auto j = nlohmann::json::parse(rest, nullptr, false);
      if (j.is_discarded() || !j.is_array()) return bad("not a JSON array");
      std::vector<std::string> argv;
      for (const auto& a : j) {
        if (!a.is_string()) return bad("the array must hold strings");
        argv.push_back(a.get<std::string>());
      }
      return argv;
    }
    if (rest.empty()) return bad("needs a command");
    return std::vector<std::string>{"/bin/sh", "-c", rest};
  };
  if (word == "CMD") {
    into.cmd = CUBBY_TRY(command());
  } else if (word == "ENTRYPOINT") {
    into.entrypoint = CUBBY_TRY(command());
  } else if (word == "ENV") {
    if (rest.empty()) return bad("needs KEY=VALUE");
    if (rest.find('=') == std::string::npos || rest.find_first_of(" \t") < rest.find('=')) {
      // The legacy form: ENV KEY VALUE (the rest of the line).
      size_t sp = rest.find_first_of(" \t");
      if (sp == std::string::npos) return bad("needs KEY=VALUE");
      into.env.push_back(rest.substr(0, sp) + "=" + rest.substr(rest.find_first_not_of(" \t", sp)));
    } else {
      // KEY=VALUE pairs, separated by spaces; a value may be double-quoted.
      for (size_t at = 0; at < rest.size();) {
        size_t eq = rest.find('=', at);
        if (eq == std::string::npos) return bad("needs KEY=VALUE");
        std::string key = rest.substr(at, eq - at), value;
        if (key.empty() || key.find_first_of(" \t\"") != std::string::npos) return bad("a bad variable name");
        size_t v = eq + 1;
        if (v < rest.size() && rest[v] == '"') {
          size_t close = rest.find('"', v + 1);
          if (close == std::string::npos) return bad("an unclosed quote");
          value = rest.substr(v + 1, close - v - 1);
          at = close + 1;
        } else {
          size_t sp = rest.find_first_of(" \t", v);
          value = rest.substr(v, sp == std::string::npos ? std::string::npos : sp - v);
          at = sp == std::string::npos ? rest.size() : sp;
        }
        into.env.push_back(key + "=" + value);
        while (at < rest.size() && (rest[at] == ' ' || rest[at] == '\t')) ++at;
      }
    }
  } else if (word == "WORKDIR") {
    if (rest.empty() || rest[0] != '/') return bad("the working directory must be absolute");
    into.working_dir = rest;
  } else if (word == "USER") {
    if (rest.empty() || rest.find_first_of(" \t") != std::string::npos) return bad("needs one user (name|uid[:group|gid])");
    into.user = rest;
  } else {
    return bad("unsupported instruction " + word + " (want CMD, ENTRYPOINT, ENV, WORKDIR or USER)");
  }
  return {};
}

std::optional<int64_t> parse_duration_ns(const std::string& s) {
  static const std::pair<const char*, double> kUnits[] = {
      {"ns", 1}, {"us", 1e3}, {"\u00b5s", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  if (s.empty()) return std::nullopt;
  double total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t num_end = s.find_first_not_of("0123456789.", i);
    if (num_end == i || num_end == std::string::npos) return std::nullopt;  // a number, then a unit
    auto n = parse_number(s.substr(i, num_end - i));
    if (!n) return std::nullopt;
    size_t unit_end = s.find_first_of("0123456789.", num_end);
    if (unit_end == std::string::npos) unit_end = s.size();
    std::string unit = s.substr(num_end, unit_end - num_end);
    double scale = 0;
    for (auto& [name, v] : kUnits)
      if (unit == name) scale = v;
    if (scale == 0) return std::nullopt;
    total += *n * scale;
    i = unit_end;
  }
  if (total > 9e18) return std::nullopt;
  return static_cast<int64_t>(total);
}

Result<int64_t> parse_log_time(const std::string& s, int64_t now_ns) {
  auto bad = [&] {
    return fail(Error::invalid("invalid time \"" + one_line(s) +
                               "\" (want a duration like 10m or 1h30m, a Unix time, or RFC 3339 like 2026-12-02T01:43:27Z)"));
  };
  if (auto d = parse_duration_ns(s)) return now_ns - *d;
  if (!s.empty() && s.find_first_not_of("0123456789.") == std::string::npos) {
    // Unix seconds, with an optional fraction (kept exact, not via a double).
    size_t dot = s.find('.');
    auto secs = parse_integer(s.substr(0, dot));
    if (!secs || *secs > 9'000'000'000) return bad();
    int64_t frac = 0;
    if (dot != std::string::npos) {
      std::string f = s.substr(dot + 1);
      if (f.empty() || f.size() > 9 || f.find('.') != std::string::npos) return bad();
      f.resize(9, '0');
      frac = *parse_integer(f);
    }
    return *secs * 1'000'000'000 + frac;
  }
  // YYYY-MM-DD[THH:MM[:SS[.fraction]]][Z|+HH:MM|-HH:MM]
  struct tm tm = {};
  int64_t frac = 0;
  const char* p = s.c_str();
  auto digits = [&](int n, int& into) {
    into = 0;
    for (int k = 0; k < n; ++k, ++p) {
      if (*p < '0' || *p > '9') return false;
      into = into * 10 + (*p - '0');
    }
    return true;
  };
  int year, mon, day, hour = 0, min = 0, sec = 0;
  if (!digits(4, year) || *p++ != '-' || !digits(2, mon) || *p++ != '-' || !digits(2, day)) return bad();
  if (*p == 'T' || *p == 't' || *p == ' ') {
    ++p;
    if (!digits(2, hour) || *p++ != ':' || !digits(2, min)) return bad();
    if (*p == ':') {
      ++p;
      if (!digits(2, sec)) return bad();
      if (*p == '.') {
        ++p;
        std::string f;
        while (*p >= '0' && *p <= '9') f += *p++;
        if (f.empty()) return bad();
        f.resize(9, '0');  // beyond ns: dropped
        frac = *parse_integer(f.substr(0, 9));
      }
    }
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return bad();
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  time_t t;
  if (*p == '\0') {
    tm.tm_isdst = -1;
    t = ::mktime(&tm);
  } else {
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
      ++p;
    } else if (*p == '+' || *p == '-') {
      int sign = *p++ == '-' ? -1 : 1, oh, om;
      if (!digits(2, oh) || *p++ != ':' || !digits(2, om) || oh > 23 || om > 59) return bad();
      offset = sign * (oh * 3600 + om * 60);
    } else {
      return bad();
    }
    if (*p != '\0') return bad();
    t = ::timegm(&tm) - offset;
  }
  return int64_t{t} * 1'000'000'000 + frac;
}

std::string one_line(const std::string& msg) {
  std::string out;
  out.reserve(msg.size());
  for (char c : msg) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace cubby::cli
