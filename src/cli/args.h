// Docker-style argument splitting: `cubby run [OPTS] IMAGE [CMD [ARG...]]`.
// Everything after the first positional belongs to the command, even words
// that look like options (`cubby run img sh -c 'ls -la'`), so the split
// happens before CLI11 sees the options.
//
// Also the small parsers for flag values, so that every bad value gets one
// line naming it (CLI11's own conversions print multi-line or numeric-range
// messages).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::cli {

struct SplitArgs {
  std::vector<std::string> options;  // given to CLI11, ending with the first positional
  std::vector<std::string> command;  // passed through untouched
};

// `takes_value` lists the options that consume a value ("-e", "--env", ...).
SplitArgs split_at_command(const std::vector<std::string>& args, const std::set<std::string>& takes_value);

// The largest number of seconds a duration flag accepts (about 68 years).
constexpr int64_t kMaxSeconds = INT32_MAX;

// The whole string as a finite decimal number ("0.5", "2", "1e3"); nothing
// else (no "nan", "inf", hex, trailing junk or surrounding spaces).
std::optional<double> parse_number(const std::string& s);
// The whole string as a decimal integer, optionally signed.
std::optional<int64_t> parse_integer(const std::string& s);
// -e: "KEY=VALUE" or "KEY"; KEY non-empty, without NUL.
Result<void> check_env_var(const std::string& e);
// Makes a message safe to print as one line: control characters (newlines
// included) become spaces, trailing whitespace goes.
std::string one_line(const std::string& msg);

}  // namespace cubby::cli
