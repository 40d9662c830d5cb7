#include "runtime/box_filter.h"

#include <algorithm>

#include "image/image_store.h"

namespace cubby {

Result<BoxFilter> BoxFilter::parse(const std::vector<std::string>& items) {
  BoxFilter f;
  for (const auto& item : items) {
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      return fail(Error::invalid("bad filter \"" + item + "\" (want KEY=VALUE)"));
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "ancestor") key = "image";
    if (key == "status") {
      if (!store::parse_status(value))
        return fail(Error::invalid("bad status filter \"" + value + "\" (want created, running, stopped, exited or removing)"));
    } else if (key == "name") {
      try {
        f.names_.emplace_back(value, std::regex::extended | std::regex::nosubs);
      } catch (const std::regex_error&) {
        return fail(Error::invalid("bad name filter \"" + value + "\" (not a regular expression)"));
      }
    } else if (key == "label") {
      if (value.empty() || value[0] == '=') return fail(Error::invalid("bad label filter \"" + value + "\" (want KEY or KEY=VALUE)"));
    } else if (key != "id" && key != "image") {
      return fail(Error::invalid("unknown filter \"" + key + "\" (want status, name, id, label or image)"));
    }
    f.by_key_[key].push_back(value);
  }
  return f;
}

namespace {

// "busybox", "busybox:latest", "docker.io/library/busybox:latest" or an id
// prefix, against the box's normalised reference and image id.
bool image_matches(const std::string& want, const store::BoxRecord& b) {
  if (want == b.image) return true;
  std::string hex = want.rfind("sha256:", 0) == 0 ? want.substr(7) : want;
  if (!hex.empty() && hex.find_first_not_of("0123456789abcdef") == std::string::npos &&
      b.image_id.compare(0, hex.size(), hex) == 0)
    return true;
  auto n = image::normalize_ref(want);
  if (!n) return false;
  if (*n == b.image) return true;
  // A name without a tag or digest: any tag of that repository.
  auto w = image::parse_ref(want), have = image::parse_ref(b.image);
  bool untagged = want.find('@') == std::string::npos &&
                  want.substr(want.find_last_of('/') == std::string::npos ? 0 : want.find_last_of('/')).find(':') == std::string::npos;
  return untagged && w && have && w->name() == have->name();
}

}  // namespace

bool BoxFilter::matches(const store::BoxRecord& b) const {
  for (const auto& [key, values] : by_key_) {
    bool any = false;
    if (key == "label") {
      // Docker's exception: every label filter must hold (MatchKVList).
      auto labels = b.config.value("labels", std::map<std::string, std::string>{});
      any = std::all_of(values.begin(), values.end(), [&](const std::string& v) {
        size_t eq = v.find('=');
        auto it = labels.find(v.substr(0, eq));
        return it != labels.end() && (eq == std::string::npos || it->second == v.substr(eq + 1));
      });
    } else if (key == "name") {
      any = std::any_of(names_.begin(), names_.end(), [&](const std::regex& r) { return std::regex_search(b.name, r); });
    } else {
      for (const auto& v : values) {
        if (key == "status") {
          auto s = *store::parse_status(v);
          any = b.status == s || (s == store::BoxStatus::kExited && b.status == store::BoxStatus::kStopped);
        } else if (key == "id") {
          any = b.id.compare(0, v.size(), v) == 0;
        } else if (key == "image") {
          any = image_matches(v, b);
        }
        if (any) break;
      }
    }
    if (!any) return false;
  }
  return true;
}

}  // namespace cubby
