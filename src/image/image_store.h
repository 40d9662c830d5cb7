// The image store: OCI image-layout (blobs addressed by sha256 + index.json)
// under <CUBBY_HOME>/images, plus each layer unpacked once under
// <CUBBY_HOME>/images/layers/<diff-id hex>/ and shared by every box that uses it.
// The registry work (pull, load, save) extends this store; it does not
// replace it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::image {

// The parts of an OCI image config cubby honours.
struct ImageConfig {
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "K=V"
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "80/tcp", recorded from the config
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

// A normalised reference split into its parts (see normalize_ref).
struct RefParts {
  std::string domain;  // "docker.io", "127.0.0.1:5000"
  std::string path;    // "library/busybox"
  std::string tag;     // "latest" (empty if only a digest was given)
  std::string digest;  // "sha256:<hex>" or empty
  std::string name() const { return domain + "/" + path; }
};
Result<RefParts> parse_ref(const std::string& ref);

// A private work area of the store (tmp/<kind>-XXXXXX.d, guarded by an flock
// on the matching .lock file; see image_store.cc). Pull and load stage blobs
// and unpacked layers here and hand them to ImageStore::commit. Removed with
// its content on destruction.
class StagingArea {
 public:
  StagingArea() = default;
  StagingArea(StagingArea&& o) noexcept;
  StagingArea& operator=(StagingArea&&) = delete;
  ~StagingArea();
  const std::string& dir() const { return dir_; }

 private:
  friend class ImageStore;
  std::string dir_, lock_path_;
  UniqueFd lock_fd_;
};

// For a process about to die of a signal (cubby-fetch when its caller is
// gone): removes the work areas it still holds. A writer still running may
// recreate a file in between; the next commit's sweep takes what is left.
void remove_live_staging_areas();

// What a pull or load stages for ImageStore::commit. Every blob the manifest
// names (config, layers) and every layer its config names must be either
// staged here or already in the store; digests of staged files must already
// be verified by the caller.
struct StagedImage {
  std::string ref;                             // normalised reference to tag
  std::string manifest_media_type;             // OCI or Docker schema 2 manifest
  std::string manifest_bytes;                  // exactly as received/written
  std::map<std::string, std::string> blobs;    // hex digest -> staged file
  std::map<std::string, std::string> layers;   // diff_id hex -> staged unpacked dir (canonical)
};

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
  // Untags; removes blobs, and unpacked layers neither another image nor a
  // box uses (see set_layers_in_use). By id, an image tagged with several
  // references is kConflict (as docker rmi without -f): remove it by reference.
  Result<void> remove(const std::string& ref_or_id);

  // What uses layers besides the images in index.json: the runtime answers
  // with every box record's config.layers (any state: a stopped box mounts
  // them again at start). Entries are layer directories as layer_dirs()
  // gives them; their last component (the diff-id hex) is what counts, so a
  // home spelled another way still matches. Garbage collection (remove,
  // import, commit, collect_garbage) calls it with the store locked
  // exclusively, so a box recorded under with_read_lock after layer_dirs()
  // is always seen. Unset, or failing, no layer is removed (blobs still
  // are): only a store that knows the boxes may delete what they mount.
  using LayersInUse = std::function<Result<std::vector<std::string>>()>;
  void set_layers_in_use(LayersInUse f) { layers_in_use_ = std::move(f); }
  // Garbage collection on its own, e.g. once the last box of an untagged
  // image is removed.
  Result<void> collect_garbage();

  // Unpacked layer directories, lowest first (overlay lowerdirs are given
  // highest first: the caller reverses).
  Result<std::vector<std::string>> layer_dirs(const ImageInfo& img);

  // ---- for pull, load and save (see image_store.cc for the protocol) ----
  Result<StagingArea> stage(const std::string& kind);
  // The most one load or import may stage (StageBudget): the home's
  // config.json "image-stage-limit", else kDefaultStageLimit. The home is
  // the directory above the store's root.
  Result<uint64_t> stage_limit() const;
  // Whether a blob / unpacked layer is in the store now (a hint: commit
  // re-checks under the lock).
  bool has_blob(const std::string& hex) const;
  bool has_layer(const std::string& diff_hex) const;
  // Makes a staged image visible atomically: moves staged blobs and layers
  // into place (keeping existing ones: same digest, same content), tags ref
  // (retagging an existing ref) and garbage-collects. Missing content is
  // kConflict (for example removed by a concurrent rmi: retry).
  Result<ImageInfo> commit(StagingArea& area, const StagedImage& img);
  // Runs f with the store locked shared: blobs stay put while it reads them.
  Result<void> with_read_lock(const std::function<Result<void>()>& f);
  std::string blob_path(const std::string& hex) const { return root_ + "/blobs/sha256/" + hex; }
  // The raw manifest and config of an image (call under with_read_lock or
  // accept a racing rmi).
  Result<std::string> read_blob(const std::string& hex, size_t limit = 64u << 20) const;

  const std::string& root() const { return root_; }

 private:
  explicit ImageStore(std::string root) : root_(std::move(root)) {}
  std::string root_;
  LayersInUse layers_in_use_;
};

}  // namespace cubby::image
