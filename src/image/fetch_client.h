// The cubby side of registry access. cubby is linked statically and libcurl
// (with its Kerberos/LDAP dependencies) cannot be, so registry work runs in
// the dynamically linked helper `cubby-fetch` next to the cubby binaries:
// these functions spawn it and turn its one-line JSON answer into a Result.
// Progress (on a TTY) goes straight to our stderr.
#pragma once

#include <string>

#include "base/error.h"
#include "image/image_store.h"

namespace cubby::image {

// What cubby-fetch answers for a pull: the stored reference, image id
// ("sha256:HEX") and manifest digest.
struct PulledImage {
  std::string ref, id, digest;
};
// Pulls into store_root (home: CUBBY_HOME, for config.json and certs.d).
// progress_fd (>= 0) gets PullOptions::progress_fd's JSON lines.
Result<PulledImage> fetch_image(const std::string& store_root, const std::string& bin_dir, const std::string& home,
                                const std::string& ref, const std::string& platform = "", int progress_fd = -1);
// fetch_image, then the image as the store has it.
Result<ImageInfo> pull_image(ImageStore& store, const std::string& bin_dir, const std::string& home,
                             const std::string& ref, const std::string& platform = "", int progress_fd = -1);
// Checks the credentials with the registry (the caller then saves them).
Result<void> login_check(const std::string& bin_dir, const std::string& home, const std::string& domain,
                         const std::string& username, const std::string& password);

// Registry domain of `cubby login SERVER` ("docker.io" when empty).
Result<std::string> login_domain(const std::string& server);

}  // namespace cubby::image
