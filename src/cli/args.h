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
#include "image/image_store.h"

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
// A Go duration as Docker takes it ("10m", "1h30m", "1.5s", "300ms"; units
// ns us ms s m h), in nanoseconds; not negative.
std::optional<int64_t> parse_duration_ns(const std::string& s);
// `logs --since/--until`, as Docker reads them: a duration before `now_ns`
// ("10m"), a Unix time ("1764640000" or "1764640000.5"), or an RFC 3339
// time ("2026-12-02T01:43:27Z", "...27.5+01:00"; without a zone it is local
// time, as is a bare date "2026-12-02"). In ns since the epoch.
Result<int64_t> parse_log_time(const std::string& s, int64_t now_ns);
// --env-file, as Docker reads it: one KEY=VALUE (or KEY, taken from our
// environment) a line, leading whitespace dropped, blank lines and lines
// starting with # skipped, the value kept exactly (no quotes are removed).
// `path` names the file in messages.
Result<std::vector<std::string>> parse_env_file(const std::string& text, const std::string& path);
// One `import --change` instruction, as Docker takes them: CMD, ENTRYPOINT
// (a JSON array, or a shell form run by /bin/sh -c), ENV (K=V..., or "K V"),
// WORKDIR (absolute), USER. Others are refused by name.
Result<void> apply_change(const std::string& instruction, image::ConfigChanges& into);
// Makes a message safe to print as one line: control characters (newlines
// included) become spaces, trailing whitespace goes.
std::string one_line(const std::string& msg);

}  // namespace cubby::cli
