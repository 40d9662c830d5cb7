#include "proto/box_fs.h"

#include <sys/mount.h>

#include <algorithm>
#include <map>
#include <set>

namespace cubby {
namespace {

struct Flag {
  unsigned long set, clear;
};
// The words that are mount flags, not tmpfs data (mount(8)'s meanings).
const std::map<std::string, Flag> kFlags = {
    {"ro", {MS_RDONLY, 0}},           {"rw", {0, MS_RDONLY}},          {"nosuid", {MS_NOSUID, 0}},
    {"suid", {0, MS_NOSUID}},         {"nodev", {MS_NODEV, 0}},        {"dev", {0, MS_NODEV}},
    {"noexec", {MS_NOEXEC, 0}},       {"exec", {0, MS_NOEXEC}},        {"noatime", {MS_NOATIME, 0}},
    {"atime", {0, MS_NOATIME}},       {"relatime", {MS_RELATIME, 0}},  {"norelatime", {0, MS_RELATIME}},
    {"strictatime", {MS_STRICTATIME, 0}}, {"nostrictatime", {0, MS_STRICTATIME}},
    {"nodiratime", {MS_NODIRATIME, 0}}};

bool digits(const std::string& s, size_t from, size_t to) {
  if (from >= to) return false;
  return std::all_of(s.begin() + static_cast<long>(from), s.begin() + static_cast<long>(to),
                     [](char c) { return c >= '0' && c <= '9'; });
}

// N, Nk, Nm, Ng (either case) or N% : tmpfs's own size syntax.
bool size_value(const std::string& v) {
  if (v.empty()) return false;
  size_t end = v.size();
  if (std::string("kKmMgG%").find(v.back()) != std::string::npos) --end;
  return digits(v, 0, end);
}

bool clean_absolute(const std::string& p) {
  if (p.empty() || p[0] != '/' || p.find('\0') != std::string::npos) return false;
  if (p.size() > 1 && p.back() == '/') return false;
  size_t i = 1;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string part = p.substr(i, j - i);
    if (p.size() > 1 && (part.empty() || part == "." || part == "..")) return false;
    i = j + 1;
  }
  return true;
}

}  // namespace

void to_json(nlohmann::json& j, const TmpfsMount& m) { j = {{"destination", m.destination}, {"options", m.options}}; }
void from_json(const nlohmann::json& j, TmpfsMount& m) {
  m.destination = j.at("destination").get<std::string>();
  m.options = j.value("options", std::vector<std::string>{});
}
void to_json(nlohmann::json& j, const BoxFs& f) {
  j = {{"read_only", f.read_only}, {"tmpfs", f.tmpfs}, {"masked_paths", f.masked_paths},
       {"readonly_paths", f.readonly_paths}, {"sysctls", f.sysctls}};
  if (f.shm_size) j["shm_size"] = *f.shm_size;
}
void from_json(const nlohmann::json& j, BoxFs& f) {
  f.read_only = j.value("read_only", false);
  f.tmpfs = j.value("tmpfs", std::vector<TmpfsMount>{});
  f.masked_paths = j.value("masked_paths", std::vector<std::string>{});
  f.readonly_paths = j.value("readonly_paths", std::vector<std::string>{});
  if (j.contains("shm_size")) f.shm_size = j["shm_size"].get<int64_t>();
  f.sysctls = j.value("sysctls", std::map<std::string, std::string>{});
}

Result<MountArgs> tmpfs_mount_args(const std::vector<std::string>& options) {
  MountArgs a;
  std::set<std::string> keys;
  for (const auto& o : options) {
    if (auto it = kFlags.find(o); it != kFlags.end()) {
      a.flags = (a.flags & ~it->second.clear) | it->second.set;
      continue;
    }
    size_t eq = o.find('=');
    std::string key = o.substr(0, eq), value = eq == std::string::npos ? "" : o.substr(eq + 1);
    bool ok = false;
    if (key == "mode" && eq != std::string::npos) {
      ok = digits(value, 0, value.size()) && value.find_first_not_of("01234567") == std::string::npos && value.size() <= 4;
    } else if ((key == "size" || key == "nr_inodes") && eq != std::string::npos) {
      ok = size_value(value);
    } else if ((key == "uid" || key == "gid") && eq != std::string::npos) {
      ok = digits(value, 0, value.size()) && value.size() <= 10;
    } else {
      return fail(Error::invalid("tmpfs option \"" + o + "\" is not supported (known: ro, rw, nosuid, nodev, noexec, "
                                 "their negations, the atime words, mode=, size=, nr_inodes=, uid=, gid=)"));
    }
    if (!ok) return fail(Error::invalid("tmpfs option \"" + o + "\" has a malformed value"));
    if (!keys.insert(key).second) return fail(Error::invalid("tmpfs option " + key + "= given twice"));
    a.data += (a.data.empty() ? "" : ",") + o;
  }
  return a;
}

Result<void> check_box_fs(const BoxFs& f) {
  std::set<std::string> seen;
  for (const auto& t : f.tmpfs) {
    if (!clean_absolute(t.destination) || t.destination == "/")
      return fail(Error::invalid("tmpfs destination \"" + t.destination + "\" must be a clean absolute path other than /"));
    if (!seen.insert(t.destination).second)
      return fail(Error::invalid("two tmpfs mounts on " + t.destination));
    if (auto a = tmpfs_mount_args(t.options); !a) return fail(a.error().wrap("tmpfs on " + t.destination));
  }
  for (const auto* list : {&f.masked_paths, &f.readonly_paths})
    for (const auto& p : *list)
      if (!clean_absolute(p) || p == "/")
        return fail(Error::invalid("masked or read-only path \"" + p + "\" must be a clean absolute path other than /"));
  if (f.shm_size && *f.shm_size <= 0) return fail(Error::invalid("the /dev/shm size must be positive"));
  for (const auto& [k, v] : f.sysctls) {
    bool word = !k.empty() && k.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") == std::string::npos &&
                k.find("..") == std::string::npos && k.front() != '.' && k.back() != '.';
    if (!word) return fail(Error::invalid("sysctl \"" + k + "\" is not a sysctl name"));
    bool namespaced = k.rfind("net.", 0) == 0 || k.rfind("kernel.shm", 0) == 0 || k.rfind("kernel.msg", 0) == 0 ||
                      k == "kernel.sem" || k.rfind("fs.mqueue.", 0) == 0;
    if (!namespaced)
      return fail(Error::invalid("sysctl " + k + " is not kept per namespace: setting it in a box would change the host"));
    if (v.find_first_of(std::string("\n\0", 2)) != std::string::npos || v.size() > 4096)
      return fail(Error::invalid("sysctl " + k + ": malformed value"));
  }
  return {};
}

}  // namespace cubby
