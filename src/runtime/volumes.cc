#include "runtime/volumes.h"

#include <climits>
#include <cstdlib>
#include <cstring>
#include <set>

#include "runtime/split.h"

namespace cubby {
namespace {

Error bad(std::string_view spec, const std::string& why) {
  return Error::invalid("invalid volume \"" + std::string(spec) + "\": " + why + " (want SRC:DST[:ro|rw])");
}

}  // namespace

std::string clean_path(std::string_view p) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    std::string_view c = p.substr(i, j - i);
    if (c == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    i = j + 1;
  }
  std::string out;
  for (auto c : parts) out += "/" + std::string(c);
  return out.empty() ? "/" : out;
}

Result<Mount> parse_volume(std::string_view spec) {
  std::vector<std::string_view> parts = split(spec, ':');
  if (spec.empty()) return fail(bad(spec, "the value is empty"));
  if (parts.size() == 1)
    return fail(bad(spec, "anonymous volumes are not supported; give a host path and a box path"));
  if (parts.size() > 3) return fail(bad(spec, "too many ':'"));
  std::string_view src = parts[0], dst = parts[1];
  if (src.empty()) return fail(bad(spec, "the host path is empty"));
  if (src[0] != '/') {
    bool path_like = src.find('/') != std::string_view::npos || src[0] == '.' || src[0] == '~';
    if (!path_like)
      return fail(bad(spec, "named volumes are not supported; the host path must be absolute"));
    return fail(bad(spec, "the host path must be absolute"));
  }
  if (dst.empty() || dst[0] != '/') return fail(bad(spec, "the box path must be absolute"));
  Mount m;
  m.target = clean_path(dst);
  if (m.target == "/") return fail(bad(spec, "cannot mount over the box's root \"/\""));
  if (m.target == "/proc" || m.target.starts_with("/proc/") || m.target == "/sys" || m.target.starts_with("/sys/"))
    return fail(bad(spec, "/proc and /sys belong to the box; mount somewhere else"));
  if (m.target == "/dev") return fail(bad(spec, "/dev belongs to the box (a mount over it hides /dev/null and the terminal); mount a path below it or somewhere else"));
  if (parts.size() == 3) {
    std::string_view opt = parts[2];
    if (opt == "ro") m.read_only = true;
    else if (opt != "rw") return fail(bad(spec, "unknown option \"" + std::string(opt) + "\"; only ro or rw"));
  }
  char real[PATH_MAX];
  std::string src_s(src);
  if (!::realpath(src_s.c_str(), real)) {
    int e = errno;
    if (e == ENOENT)
      return fail(bad(spec, "host path " + src_s + " does not exist (cubby does not create it)"));
    return fail(bad(spec, "host path " + src_s + ": " + std::strerror(e)));
  }
  m.source = real;
  return m;
}

Result<std::vector<Mount>> parse_volumes(const std::vector<std::string>& specs) {
  std::vector<Mount> out;
  std::set<std::string> targets;
  for (const auto& s : specs) {
    auto m = CUBBY_TRY(parse_volume(s));
    if (!targets.insert(m.target).second)
      return fail(bad(s, "another volume is already mounted on " + m.target));
    out.push_back(std::move(m));
  }
  return out;
}

std::string to_string(const Mount& m) {
  return m.source + ":" + m.target + (m.read_only ? ":ro" : ":rw");
}

}  // namespace cubby
