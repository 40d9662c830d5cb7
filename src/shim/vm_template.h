// vm templates (issue 14): a vm box starts as a restore of a VM that booted
// once and stopped at its agent's rendezvous (kernel up, modules loaded, the
// serial port open, nothing box-specific read: shim/vm_backend.cc), instead
// of booting a kernel.
//
// A template is QEMU's migration stream of that VM (device state and the
// guest's RAM: QEMU 7.2 cannot map a read-only file as private guest memory,
// so the RAM travels in the stream and each restored box's memory is its
// own), kept under <home>/vm/templates/<image disk>-<key hash>/ with the key
// it was built for. The key is everything the stream depends on: the image
// disk, the guest kernel and initramfs (so the agent build), QEMU, the
// accelerator, memory, vCPUs, the kernel command line and the device set.
// A template whose key differs is not used (and rebuilt); one that fails to
// restore is removed and the box boots cold; templates go with their image
// disk (collect_unused_image_disks). Who builds it holds an flock on
// <dir>.lock: a concurrent start does not wait for it and boots cold.
#pragma once

#include <optional>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::shim {

class VmTemplate {
 public:
  // The template of `key` for an image disk (its path under <home>/vm/disks).
  VmTemplate(const std::string& home, const std::string& image_disk, std::string key);

  // The stream, if a template of this exact key is there.
  std::optional<UniqueFd> open_for_restore() const;
  // Takes the build lock without waiting; then the fd QEMU writes the stream
  // to (a partial file until commit()). nullopt: someone else is building.
  Result<std::optional<UniqueFd>> begin_build();
  // The stream is complete: it becomes the template (with its key).
  Result<void> commit();
  // Gives up a build (the partial file goes) or, after a failed restore,
  // the template itself.
  void discard();

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_, key_;
  UniqueFd lock_;
};

// The identity of a file for a template key: device, inode, size, mtime.
std::string file_identity(const std::string& path);
// Removes the templates of an image disk that is going away.
void remove_templates_of(const std::string& home, const std::string& image_disk);

}  // namespace cubby::shim
