// The host ids a sandbox box runs as (`--userns auto`, the default as root).
//
// A box's user namespace maps its ids 0..65535 onto a range of host ids of
// its own, far from every real user, so what the box reaches on the host
// filesystem (a volume, a planted file, a kernel bug) it reaches as an
// unprivileged stranger, never as host root: podman's `--userns=auto` and
// Docker's userns-remap. The identity map (box root = host root) is kept
// only behind `--userns host`; rootless boxes always map root to the caller.
//
// Ranges come from a pool: the `cubby` entries of /etc/subuid and
// /etc/subgid when both have one (the admin's choice, as podman's
// `containers` entries), else 0x10000000..0x6fffffff minus every range
// /etc/subuid or /etc/subgid gives anyone else (the vm backend's QEMU ids
// start at 0x70000000). A box keeps its range from create to rm: its upper
// dir's files are owned by it, so it must never change across stop/start.
// Choosing one is part of inserting the box's record (store::Store's write
// transaction), so concurrent creates never pick the same range.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace cubby {

inline constexpr uint32_t kIdsPerBox = 65536;

// Box ids 0..count-1 are host uids uid..uid+count-1 and gids gid..gid+count-1.
struct IdRange {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t count = 0;
  bool operator==(const IdRange&) const = default;
};

inline void to_json(nlohmann::json& j, const IdRange& r) {
  j = {{"uid", r.uid}, {"gid", r.gid}, {"count", r.count}};
}
inline void from_json(const nlohmann::json& j, IdRange& r) {
  r.uid = j.at("uid").get<uint32_t>();
  r.gid = j.at("gid").get<uint32_t>();
  r.count = j.at("count").get<uint32_t>();
}

// [start, start+count) of host ids.
struct IdSpan {
  uint64_t start = 0;
  uint64_t count = 0;
};

struct IdPool {
  std::vector<IdSpan> uids, gids;              // where box ranges are cut from
  std::vector<IdSpan> reserved_uids, reserved_gids;  // never handed out (others' subordinate ids)
  std::string source;                          // where the pool came from, for messages
};

// One /etc/subuid-style file: the spans of `name`, and everyone else's.
struct SubIdEntries {
  std::vector<IdSpan> mine, others;
};
SubIdEntries parse_subid(std::string_view text, std::string_view name);

// The pool from these files (missing files are empty): the `cubby` entries
// of both, else the default span minus everyone's entries. An entry in only
// one of the files is an error (uids without gids cannot make a range).
Result<IdPool> load_id_pool(const std::string& subuid = "/etc/subuid", const std::string& subgid = "/etc/subgid");

// The lowest kIdsPerBox-sized range of `pool` whose uids and gids overlap
// none of `taken` (the ranges other boxes hold) nor the reserved spans.
// kConflict when the pool is used up.
Result<IdRange> pick_id_range(const IdPool& pool, const std::vector<IdRange>& taken);

}  // namespace cubby
