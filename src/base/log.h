// Leveled logger. The level is checked before any formatting happens, so a
// disabled debug line costs one comparison. Level from CUBBY_LOG
// (error|warn|info|debug); default warn. Output goes to stderr.
#pragma once

#define FMT_HEADER_ONLY 1
#include <fmt/format.h>
#include <string_view>

namespace cubby::log {

enum class Level { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

Level level();
void set_level(Level l);
void set_prefix(std::string_view prefix);  // e.g. "cubby-shim[box]"
void write(Level l, std::string_view msg);

template <typename... Args>
void at(Level l, fmt::format_string<Args...> fmt, Args&&... args) {
  if (static_cast<int>(l) > static_cast<int>(level())) return;
  write(l, fmt::format(fmt, std::forward<Args>(args)...));
}

}  // namespace cubby::log

#define LOG_ERROR(...) ::cubby::log::at(::cubby::log::Level::kError, __VA_ARGS__)
#define LOG_WARN(...) ::cubby::log::at(::cubby::log::Level::kWarn, __VA_ARGS__)
#define LOG_INFO(...) ::cubby::log::at(::cubby::log::Level::kInfo, __VA_ARGS__)
#define LOG_DEBUG(...) ::cubby::log::at(::cubby::log::Level::kDebug, __VA_ARGS__)
