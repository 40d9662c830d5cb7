// Layer tarball handling for the image store: decompress a (possibly
// compressed, possibly piped) tar stream to a file while hashing it, and
// unpack a tar safely into a fresh directory. Internal to cubby_image.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "base/error.h"
#include "copy/entry.h"

struct archive;
struct archive_entry;

namespace cubby::image {

struct TarBlob {
  std::string digest_hex;  // sha256 of the uncompressed tar (== diff_id)
  uint64_t size = 0;       // bytes of the uncompressed tar
};

// What one load or import may stage (issue 10: `load -i /dev/zero` staged
// without bound). Every byte of every uncompressed tar stream it reads is
// charged, and what a stream unpacks to is never larger than the stream
// (each entry's data is in it, behind a 512-byte header), so the staging
// area holds at most about twice the limit (import keeps the tar as the
// layer's blob too). Before an entry's data is read, the size it declares
// is checked against what is left, so a header claiming a terabyte fails at
// once. A tar stream's own end-of-archive marker bounds it too: at most
// kMaxTrailingBytes may follow it. Thread-safe.
inline constexpr uint64_t kDefaultStageLimit = 64ull << 30;
inline constexpr uint64_t kMaxTrailingBytes = 1u << 20;
class StageBudget {
 public:
  explicit StageBudget(uint64_t limit = kDefaultStageLimit) : limit_(limit) {}
  uint64_t limit() const { return limit_; }
  // kInvalid naming the limit once more than it was charged.
  Result<void> charge(uint64_t n);
  // kInvalid naming `what` if `declared` more bytes would not fit.
  Result<void> fits(uint64_t declared, const std::string& what) const;

 private:
  Error over(const std::string& what) const;
  uint64_t limit_;
  std::atomic<uint64_t> used_{0};
};

// A tar stream read from fd to EOF (a file or a pipe; plain, gzip, bzip2, xz
// or zstd, detected by magic) and unpacked into dest_dir by the rules below,
// in one pass, hashed on the way, charged to budget (if any); with copy_to
// >= 0 the uncompressed stream is also written there (import keeps it as the
// layer's blob). read_to_end: read (and hash) what follows the end marker
// too, as a diff_id covers it (at most kMaxTrailingBytes); an archive that
// is only unpacked stops at the marker. Empty or corrupt input is kInvalid
// "corrupt archive: ...". On error dest_dir holds a partial tree.
struct StreamOptions {
  bool overlay_whiteouts = false;
  StageBudget* budget = nullptr;
  int copy_to = -1;
  bool read_to_end = true;
};

// Enables libarchive's in-process decompressors (gzip, bzip2, xz, zstd) on a
// reader; never the ones that spawn programs.
void support_decompressors(struct archive* a);

// The metadata of tar entry ae into out (path, kind and target are the
// caller's): mode, owner, times (a time the archive lacks is kTimeOmit;
// atime follows mtime, as tar does), size, and the xattrs an image may set
// (user.* and security.capability; raw names the entry in debug logs).
void tar_entry_meta(struct archive_entry* ae, const std::string& raw, copy::Entry& out);

// The rules: unpack_stream unpacks into dest_dir, which must be an existing,
// empty directory given as a canonical absolute path (no symlinks in it).
// Every entry is checked before it is written: absolute paths, ".."
// components, writes through a symlink created by the archive, and hardlinks
// that leave the layer are kInvalid errors naming the entry. Symlinks
// themselves (absolute or not) are preserved as they are. Permissions,
// numeric ownership and mtimes are restored, and the xattrs an image may set
// (user.*, and security.capability where the process may write it; pax
// SCHILY.xattr.* / LIBARCHIVE.xattr.* records): trusted.* (overlayfs's own),
// security.selinux and system.* from a layer are dropped. Character and block
// devices are skipped (a box must not get device nodes from an image).
// With overlay_whiteouts, OCI whiteouts become overlayfs ones, as the layer is
// an overlay lowerdir of its own: ".wh.NAME" turns into a 0/0 character
// device NAME and ".wh..wh..opq" into the xattr user.overlay.opaque=y on
// its directory (needs CAP_MKNOD / CAP_SYS_ADMIN, i.e. root); otherwise
// whiteout files are unpacked as ordinary files.
// Never changes the process's working directory. On error dest_dir holds a
// partial tree; the caller removes it.
Result<TarBlob> unpack_stream(int fd, const std::string& dest_dir, const StreamOptions& o);

// A layer blob (gzip, zstd, bzip2, xz or plain tar) unpacked into a staging
// area in one pass: decompressed in memory, hashed (the diff_id) while the
// tar is unpacked with overlay whiteouts into <work_dir>/<tag>.layer, then
// checked against expected_diff_hex (when not empty; kInvalid on mismatch).
// No temporary tar is written. Returns the diff_id hex and the canonical
// unpacked directory; on error the caller removes what is left (the staging
// area does).
struct StagedLayer {
  std::string diff_hex;
  std::string dir;
};
// From an fd (a file or a pipe), read to EOF.
Result<StagedLayer> stage_layer_fd(int fd, const std::string& work_dir, const std::string& tag,
                                   const std::string& expected_diff_hex, StageBudget* budget = nullptr);
Result<StagedLayer> stage_layer(const std::string& blob_path, const std::string& work_dir,
                                const std::string& tag, const std::string& expected_diff_hex,
                                StageBudget* budget = nullptr);

}  // namespace cubby::image
