// Image archives: `cubby load` (docker-archive as written by `docker save` or
// skopeo, and OCI archives), `cubby save` (OCI archive) and the JSON of
// `cubby image inspect`.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/error.h"
#include "image/image_store.h"

namespace cubby::image {

// Reads an archive (plain or compressed tar) from fd and stores its images.
// Every blob is checked against its digest and every layer against its
// diff_id; unsafe entries (.., escapes through symlinks) and corrupt input
// are kInvalid, and nothing is stored on failure. `tag` names the image when
// the archive holds exactly one (required if it carries no usable name).
Result<std::vector<ImageInfo>> load_archive(ImageStore& store, int fd, const std::string& tag = "");

// Writes img as an OCI archive (oci-layout, index.json with the reference in
// org.opencontainers.image.ref.name and io.containerd.image.name, blobs).
Result<void> save_archive(ImageStore& store, const ImageInfo& img, int fd);

// Docker-style inspect object (Id, RepoTags, RepoDigests, Created,
// Architecture, Os, Config, RootFS, Size, plus the manifest digest).
Result<nlohmann::json> inspect_json(ImageStore& store, const ImageInfo& img);

}  // namespace cubby::image
