// CLI helpers: flag value parsing and table output.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/signals.h"
#include "image/image_store.h"
#include "store/store.h"

namespace cubby {

// "512m", "1g", "100k", "1048576" (bytes). Docker's units (binary).
Result<int64_t> parse_size(const std::string& s);

// Docker's units.HumanDuration: "Less than a second", "5 seconds", "About a
// minute", "3 hours", "2 days", "3 weeks", "4 months", "2 years".
std::string human_duration(int64_t seconds);
// "2 minutes ago" for an RFC 3339 time (as the store keeps them), "" if unreadable.
std::string time_ago(const std::string& rfc3339, int64_t now_sec);
// Docker's familiar form of a normalised reference: "docker.io/library/x:t" -> "x:t".
std::string familiar_ref(const std::string& ref);

// `ls`'s table as `docker ps` lays it out: columns as wide as their widest
// cell, ids cut to 12 and commands to 20 characters unless no_trunc.
// `paused`: ids of running boxes whose workload is frozen ("Up 5 minutes (Paused)").
void print_box_table(const std::vector<store::BoxRecord>& boxes, bool no_trunc = false,
                     const std::set<std::string>& paused = {});
void print_image_table(const std::vector<image::ImageInfo>& images);
// `snapshots`: the same layout; SIZE is what the snapshot's files take on
// disk (its memory stream and box disk, sparse; the image disk is a link).
void print_snapshot_table(const std::vector<store::SnapshotRecord>& snaps, bool no_trunc = false);

}  // namespace cubby
