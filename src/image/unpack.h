// Layer tarball handling for the image store: decompress a (possibly
// compressed, possibly piped) tar stream to a file while hashing it, and
// unpack a tar safely into a fresh directory. Internal to cubby_image.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"

namespace cubby::image {

struct TarBlob {
  std::string digest_hex;  // sha256 of the uncompressed tar (== diff_id)
  uint64_t size = 0;       // bytes of the uncompressed tar
};

// Reads fd to EOF (file or pipe; plain, gzip, bzip2, xz or zstd, detected by
// magic), writes the uncompressed bytes to out_path (created, fsync'd) and
// hashes them. Corrupt or empty input is kInvalid "corrupt archive: ...".
// On error out_path may exist; the caller owns cleanup.
Result<TarBlob> decompress_to_file(int fd, const std::string& out_path);

// Unpacks the plain tar at tar_path into dest_dir, which must be an existing,
// empty directory given as a canonical absolute path (no symlinks in it).
// Every entry is checked before it is written: absolute paths, ".."
// components, writes through a symlink created by the archive, and hardlinks
// that leave the layer are kInvalid errors naming the entry. Symlinks
// themselves (absolute or not) are preserved as they are. Permissions,
// numeric ownership, mtimes and xattrs are restored; character and block
// devices are skipped (a box must not get device nodes from an image).
// Whiteout files (.wh.*) are unpacked as ordinary files for now.
// Never changes the process's working directory. On error dest_dir holds a
// partial tree; the caller removes it.
Result<void> unpack_tar(const std::string& tar_path, const std::string& dest_dir);

}  // namespace cubby::image
