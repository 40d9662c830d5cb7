#include "cli/args.h"

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

}  // namespace cubby::cli
