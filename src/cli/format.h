// CLI helpers: flag value parsing and table output.
#pragma once

#include <string>
#include <vector>

#include "base/error.h"
#include "base/signals.h"
#include "image/image_store.h"
#include "store/store.h"

namespace cubby {

// "512m", "1g", "100k", "1048576" (bytes). Docker's units (binary).
Result<int64_t> parse_size(const std::string& s);

void print_box_table(const std::vector<store::BoxRecord>& boxes);
void print_image_table(const std::vector<image::ImageInfo>& images);

}  // namespace cubby
