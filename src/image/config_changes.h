// `import --change` / `commit --change`: Dockerfile instructions applied to
// an image config's "config" object (image_store.h's ConfigChanges).
#pragma once

#include <nlohmann/json.hpp>

#include "image/image_store.h"

namespace cubby::image {

void apply_config_changes(nlohmann::json& config, const ConfigChanges& changes);

}  // namespace cubby::image
