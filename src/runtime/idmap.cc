#include "runtime/idmap.h"

#include <cerrno>
#include <charconv>

#include "base/fs.h"

namespace cubby {
namespace {

// The default pool: above the ids useradd hands out to people (uids from
// 1000, subordinate ids from 100000), below the vm backend's QEMU ids.
constexpr IdSpan kDefaultPool{0x10000000, 0x60000000};

bool overlaps(uint64_t a, uint64_t an, uint64_t b, uint64_t bn) { return a < b + bn && b < a + an; }

bool overlaps_any(uint64_t start, uint64_t count, const std::vector<IdSpan>& spans) {
  for (const auto& s : spans)
    if (overlaps(start, count, s.start, s.count)) return true;
  return false;
}

std::optional<uint64_t> number(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

Result<SubIdEntries> read_subid(const std::string& path) {
  auto text = read_file(path, 1u << 20);
  if (!text) {
    if (text.error().sys_errno() == ENOENT) return SubIdEntries{};
    return std::unexpected(text.error());
  }
  return parse_subid(*text, "cubby");
}

// The start of the k-th whole box range cut from `spans`, in order.
std::optional<uint64_t> nth_range(const std::vector<IdSpan>& spans, uint64_t k) {
  for (const auto& s : spans) {
    uint64_t n = s.count / kIdsPerBox;
    if (k < n) return s.start + k * kIdsPerBox;
    k -= n;
  }
  return std::nullopt;
}

}  // namespace

SubIdEntries parse_subid(std::string_view text, std::string_view name) {
  SubIdEntries out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    size_t a = line.find(':');
    size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos || line.empty() || line[0] == '#') continue;
    auto start = number(line.substr(a + 1, b - a - 1));
    auto count = number(line.substr(b + 1));
    // Ids are 32 bits and (uid_t)-1 is never an id.
    if (!start || !count || *count == 0 || *start + *count > 0xffffffffull) continue;
    (line.substr(0, a) == name ? out.mine : out.others).push_back({*start, *count});
  }
  return out;
}

Result<IdPool> load_id_pool(const std::string& subuid, const std::string& subgid) {
  auto u = CUBBY_TRY(read_subid(subuid));
  auto g = CUBBY_TRY(read_subid(subgid));
  IdPool pool;
  pool.reserved_uids = std::move(u.others);
  pool.reserved_gids = std::move(g.others);
  if (u.mine.empty() != g.mine.empty())
    return fail(Error::invalid("user namespaces: " + (u.mine.empty() ? subuid : subgid) +
                               " has no \"cubby\" entry but " + (u.mine.empty() ? subgid : subuid) +
                               " has one: give both (or neither, for the default pool)"));
  if (u.mine.empty()) {
    pool.uids = pool.gids = {kDefaultPool};
    pool.source = "the default pool (268435456-1879048191)";
  } else {
    pool.uids = std::move(u.mine);
    pool.gids = std::move(g.mine);
    pool.source = "the \"cubby\" entries of " + subuid + " and " + subgid;
  }
  return pool;
}

Result<IdRange> pick_id_range(const IdPool& pool, const std::vector<IdRange>& taken) {
  for (uint64_t k = 0;; ++k) {
    auto uid = nth_range(pool.uids, k);
    auto gid = nth_range(pool.gids, k);
    if (!uid || !gid) break;
    if (overlaps_any(*uid, kIdsPerBox, pool.reserved_uids) || overlaps_any(*gid, kIdsPerBox, pool.reserved_gids))
      continue;
    bool free = true;
    for (const auto& t : taken)
      if (overlaps(*uid, kIdsPerBox, t.uid, t.count) || overlaps(*gid, kIdsPerBox, t.gid, t.count)) {
        free = false;
        break;
      }
    if (free) return IdRange{static_cast<uint32_t>(*uid), static_cast<uint32_t>(*gid), kIdsPerBox};
  }
  return fail(Error::conflict("user namespaces: no free range of " + std::to_string(kIdsPerBox) + " ids left in " +
                              pool.source + " (" + std::to_string(taken.size()) +
                              " boxes hold one; remove some, or use --userns host)"));
}

}  // namespace cubby
