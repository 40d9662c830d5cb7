#include "base/signals.h"

#include <signal.h>

#include <cctype>
#include <charconv>
#include <cstring>

namespace cubby {

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

}  // namespace cubby
