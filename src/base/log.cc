#include "base/log.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace cubby::log {
namespace {
Level parse_env() {
  const char* v = std::getenv("CUBBY_LOG");
  if (!v) return Level::kWarn;
  if (!std::strcmp(v, "error")) return Level::kError;
  if (!std::strcmp(v, "info")) return Level::kInfo;
  if (!std::strcmp(v, "debug")) return Level::kDebug;
  return Level::kWarn;
}
Level g_level = parse_env();
std::string g_prefix = "cubby";
}  // namespace

Level level() { return g_level; }
void set_level(Level l) { g_level = l; }
void set_prefix(std::string_view p) { g_prefix = p; }

void write(Level l, std::string_view msg) {
  static const char* names[] = {"error", "warn", "info", "debug"};
  std::string line = g_prefix + " " + names[static_cast<int>(l)] + ": ";
  line.append(msg);
  line.push_back('\n');
  (void)!::write(2, line.data(), line.size());  // one write: lines never interleave
}

}  // namespace cubby::log
