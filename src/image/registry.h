// Registry client (HTTP API v2 over libcurl): pull into the image store and
// credential checks for `cubby login`. Linked only into the dynamically
// linked helper cubby-fetch (the static cubby binary cannot carry libcurl's
// Kerberos/LDAP dependencies); cubby runs it through fetch_client.h.
#pragma once

#include <string>

#include "base/error.h"
#include "image/image_store.h"
#include "image/registry_config.h"

namespace cubby::image {

// Largest manifest or index accepted (Docker's limit is 4 MiB as well).
inline constexpr size_t kMaxManifestBytes = 4u << 20;
inline constexpr size_t kMaxConfigBytes = 8u << 20;

struct PullOptions {
  std::string home;      // CUBBY_HOME: config.json and certs.d
  std::string platform;  // "os/arch[/variant]"; empty: this host
  bool progress = false; // progress lines on stderr (a TTY)
  // Machine-readable progress: one JSON line a tick,
  // {"status":"downloading","current":BYTES,"total":BYTES}. A line is
  // skipped when the fd cannot take it at once: a slow reader never stalls
  // the pull. -1: none.
  int progress_fd = -1;
  int parallel = 4;      // concurrent layer downloads
};

// Pulls ref (see normalize_ref) into store: resolves a manifest list / OCI
// index to the platform, verifies every blob's size and digest (and each
// layer's diff_id) before commit, skips blobs and layers already stored.
Result<ImageInfo> pull(ImageStore& store, const std::string& ref, const PullOptions& o);

// Checks credentials against a registry's auth (Basic, or a token server).
Result<void> check_login(const std::string& home, const std::string& domain, const RegistryAuth& auth);

// "linux/arm64/v8" -> parts; empty: the host's.
struct Platform {
  std::string os, arch, variant;
  std::string str() const { return os + "/" + arch + (variant.empty() ? "" : "/" + variant); }
};
Result<Platform> parse_platform(const std::string& s);

}  // namespace cubby::image
