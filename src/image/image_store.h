// The image store: OCI image-layout (blobs addressed by sha256 + index.json)
// under <CUBBY_HOME>/images, plus each layer unpacked once under
// <CUBBY_HOME>/images/layers/<diff-id hex>/ and shared by every box that uses it.
// The registry work (pull, load, save) extends this store; it does not
// replace it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::image {

// The parts of an OCI image config cubby honours.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "K=V"
  std::string working_dir;
  std::string user;
};

struct ImageInfo {
  std::string ref;              // normalised, e.g. "localhost/busybox:latest"
  std::string id;               // hex sha256 of the config blob (no "sha256:")
  std::string manifest_digest;  // "sha256:<hex>"
  std::string created;          // RFC 3339
  uint64_t size = 0;            // bytes of layer blobs
  ImageConfig config;
  std::vector<std::string> diff_ids;  // "sha256:<hex>", lowest layer first
};

// Checks and normalises an image reference the way Docker does:
// "busybox" -> "docker.io/library/busybox:latest", "localhost/x" -> "localhost/x:latest",
// "x@sha256:<64 hex>" kept. Bad references (uppercase repo, empty parts,
// bad digest, spaces, ...) are kInvalid errors naming the reference.
Result<std::string> normalize_ref(const std::string& ref);

class ImageStore {
 public:
  // Opens (creating if needed) the store rooted at `root`.
  static Result<ImageStore> open(const std::string& root);

  // `docker import`: makes a one-layer image from a rootfs tarball read from
  // fd (a file or a pipe such as stdin; plain, gzip, bzip2, zstd or xz). The
  // layer is verified safe to unpack before anything becomes visible:
  // entries with "..", absolute paths, writes through symlinks or hardlinks
  // leaving the layer are rejected (kInvalid naming the entry), and nothing
  // is left in the store on failure. The layer blob is stored uncompressed
  // (digest == diff_id). Config: Cmd ["/bin/sh"], Env [PATH=...]. An
  // existing ref is retagged and the old image garbage-collected.
  // Concurrency and on-disk protocol: see image_store.cc.
  Result<ImageInfo> import_tarball(int fd, const std::string& ref);

  Result<std::vector<ImageInfo>> list();
  // By reference (normalised), by full id ("sha256:" optional) or by a
  // unique id prefix (>= 4 hex chars). A reference wins over an id prefix
  // that is also a valid name. Unknown: kNotFound "no such image: X";
  // prefix of several ids: kInvalid "ambiguous ...".
  Result<ImageInfo> resolve(const std::string& ref_or_id);
  // Untags; removes blobs and unpacked layers no other image references.
  // By id, an image tagged with several references is kConflict (as docker
  // rmi without -f): remove it by reference. Does not know about boxes: the
  // caller must not remove an image whose layers a box still mounts.
  Result<void> remove(const std::string& ref_or_id);

  // Unpacked layer directories, lowest first (overlay lowerdirs are given
  // highest first: the caller reverses).
  Result<std::vector<std::string>> layer_dirs(const ImageInfo& img);

  const std::string& root() const { return root_; }

 private:
  explicit ImageStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
};

}  // namespace cubby::image
