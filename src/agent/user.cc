#include "agent/user.h"

#include <charconv>
#include <sstream>

#include "base/fs.h"

namespace cubby::agent {
namespace {

std::vector<std::vector<std::string>> read_db(const char* path) {
  std::vector<std::vector<std::string>> rows;
  auto text = read_file(path, 8u << 20);
  if (!text) return rows;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f;
    size_t s = 0;
    for (;;) {
      size_t e = line.find(':', s);
      f.push_back(line.substr(s, e == std::string::npos ? std::string::npos : e - s));
      if (e == std::string::npos) break;
      s = e + 1;
    }
    rows.push_back(std::move(f));
  }
  return rows;
}

bool parse_id(const std::string& s, unsigned& out) {
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  // 4294967295 is (uid_t)-1, which setresuid/setresgid read as "leave as
  // is": as an id it would keep the caller's root. It is no one's id.
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && out != static_cast<unsigned>(-1);
}

}  // namespace

Result<UserSpec> resolve_user(const std::string& spec) {
  UserSpec u;
  std::string user = spec, group;
  if (auto c = spec.find(':'); c != std::string::npos) {
    user = spec.substr(0, c);
    group = spec.substr(c + 1);
  }
  // assign(1, c), not = "0": GCC 12 warns (-Wrestrict, a false positive, GCC bug 105329) on the latter.
  if (user.empty()) user.assign(1, '0');
  auto passwd = read_db("/etc/passwd");
  bool found = false;
  unsigned id;
  bool numeric = parse_id(user, id);
  for (auto& f : passwd) {
    if (f.size() < 7) continue;
    unsigned puid;
    if (!parse_id(f[2], puid)) continue;
    if ((numeric && puid == id) || (!numeric && f[0] == user)) {
      u.uid = puid;
      unsigned pgid = 0;
      parse_id(f[3], pgid);
      u.gid = pgid;
      u.home = f[5].empty() ? "/" : f[5];
      u.name = f[0];
      found = true;
      break;
    }
  }
  if (!found) {
    if (!numeric) return fail(Error::invalid("unable to find user " + user + ": no matching entries in passwd file"));
    u.uid = id;
    u.gid = id == 0 ? 0 : id;
  }
  auto groups = read_db("/etc/group");
  if (!group.empty()) {
    bool gnum = parse_id(group, id);
    bool gfound = false;
    for (auto& f : groups) {
      unsigned gid;
      if (f.size() < 3 || !parse_id(f[2], gid)) continue;
      if ((gnum && gid == id) || (!gnum && f[0] == group)) {
        u.gid = gid;
        gfound = true;
        break;
      }
    }
    if (!gfound) {
      if (!gnum) return fail(Error::invalid("unable to find group " + group + ": no matching entries in group file"));
      u.gid = id;
    }
  }
  // Supplementary groups: every group that lists the user by name.
  if (!u.name.empty()) {
    for (auto& f : groups) {
      if (f.size() < 4) continue;
      unsigned gid;
      if (!parse_id(f[2], gid)) continue;
      std::istringstream members(f[3]);
      std::string m;
      while (std::getline(members, m, ','))
        if (m == u.name && gid != u.gid) u.groups.push_back(gid);
    }
  }
  return u;
}

}  // namespace cubby::agent
