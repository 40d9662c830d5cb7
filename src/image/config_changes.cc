#include "image/config_changes.h"

namespace cubby::image {

void apply_config_changes(nlohmann::json& c, const ConfigChanges& changes) {
  if (changes.cmd) c["Cmd"] = *changes.cmd;
  if (changes.entrypoint) c["Entrypoint"] = *changes.entrypoint;
  for (const auto& e : changes.env) {  // ENV K=V replaces K
    std::string key = e.substr(0, e.find('='));
    nlohmann::json kept = nlohmann::json::array();
    if (c.contains("Env") && c["Env"].is_array())
      for (const auto& old : c["Env"])
        if (!old.is_string() || old.get<std::string>().rfind(key + "=", 0) != 0) kept.push_back(old);
    kept.push_back(e);
    c["Env"] = kept;
  }
  if (changes.working_dir) c["WorkingDir"] = *changes.working_dir;
  if (changes.user) c["User"] = *changes.user;
}

}  // namespace cubby::image
