// Docker-style argument splitting: `cubby run [OPTS] IMAGE [CMD [ARG...]]`.
// Everything after the first positional belongs to the command, even words
// that look like options (`cubby run img sh -c 'ls -la'`), so the split
// happens before CLI11 sees the options.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace cubby::cli {

struct SplitArgs {
  std::vector<std::string> options;  // given to CLI11, ending with the first positional
  std::vector<std::string> command;  // passed through untouched
};

// `takes_value` lists the options that consume a value ("-e", "--env", ...).
SplitArgs split_at_command(const std::vector<std::string>& args, const std::set<std::string>& takes_value);

}  // namespace cubby::cli
