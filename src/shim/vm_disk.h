// The vm backend's disks.
//
// Image disk: the image's layers flattened into one ext4 image with
// `mke2fs -d` (no root, loop devices or FUSE needed), cached per layer list
// under <home>/vm/disks and attached read-only, so every box of an image
// shares it (and the host page cache holds it once). Flattening applies the
// overlay-format whiteouts the unpacker left in each layer (0/0 character
// devices, trusted.overlay.opaque directories), exactly as the sandbox's
// overlayfs would, and hardlinks files from the layers instead of copying
// them. A disk whose layers are gone (the image was removed) is deleted the
// next time a vm box starts.
//
// Box disk: a sparse per-box ext4 (<box_dir>/disk.ext4), the guest overlay's
// upper layer, kept across stop/start and removed with the box.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/process.h"

namespace cubby::shim {

// A program on PATH (plus the sbin dirs), or "".
std::string find_program(const std::string& name);
// Runs a helper tool to completion (stdout/stderr into the shim log).
Result<ExitStatus> run_tool(const std::vector<std::string>& argv);

// Applies layers (lowest first) onto dest, an existing empty directory.
Result<void> flatten_layers(const std::vector<std::string>& layers, const std::string& dest);

Result<std::string> image_disk(const std::string& home, const std::vector<std::string>& layers);
Result<std::string> box_disk(const std::string& box_dir);

// Copies a disk file (a box disk: sparse, mostly holes) to dst, a new file,
// data extents only (SEEK_DATA/SEEK_HOLE, copy_file_range): a 1 GiB box disk
// with 20 MiB written costs 20 MiB. dst appears whole or not at all.
Result<void> copy_disk_sparse(const std::string& src, const std::string& dst);

// Deletes cached image disks whose layers no longer exist; returns how many.
int collect_unused_image_disks(const std::string& home);

}  // namespace cubby::shim
