// Bind mounts: `-v SRC:DST[:ro|rw]`, Docker's syntax for host paths.
//
// A value is checked and its host path canonicalised when the box is
// created, so a bad value creates nothing and `inspect` shows the real
// directory. Unlike Docker, a missing SRC is refused rather than created
// (podman's rule): the box runs untrusted code, and a typo should not make
// directories on the host. Named and anonymous volumes are refused too;
// cubby has no volume store.
//
// The sandbox backend's agent makes the mounts (agent/box_init.cc),
// resolving DST inside the box's rootfs, never through the host's tree.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace cubby {

struct Mount {
  std::string source;  // absolute and canonical (realpath at create)
  std::string target;  // absolute, lexically clean, never "/"
  bool read_only = false;
};

inline void to_json(nlohmann::json& j, const Mount& m) {
  j = {{"source", m.source}, {"target", m.target}, {"read_only", m.read_only}};
}
inline void from_json(const nlohmann::json& j, Mount& m) {
  m.source = j.at("source").get<std::string>();
  m.target = j.at("target").get<std::string>();
  m.read_only = j.value("read_only", false);
}

// One -v value. Checks that SRC exists now (the canonical path is kept).
Result<Mount> parse_volume(std::string_view spec);
// Every -v value, refusing two mounts on one target.
Result<std::vector<Mount>> parse_volumes(const std::vector<std::string>& specs);

// "/a/./b//../c" -> "/a/c", as Go's filepath.Clean (and so Docker) does;
// ".." at the root stays at the root.
std::string clean_path(std::string_view absolute);

// "/host/dir:/data:ro", as `docker inspect` shows a bind.
std::string to_string(const Mount& m);

}  // namespace cubby
