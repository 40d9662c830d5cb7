// normalize_ref: the Docker reference grammar (distribution/reference).
//
//   reference  := name [ ":" tag ] [ "@" digest ]
//   name       := [ domain "/" ] path-component { "/" path-component }
//   domain     := host [ ":" port ]    (first component with '.' or ':', or "localhost")
//   path-comp  := [a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }
//   tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//   digest     := "sha256:" [0-9a-f]{64}
#include <regex>
#include <string>
#include <vector>

#include "image/digest.h"
#include "image/image_store.h"

namespace cubby::image {
namespace {

const std::regex& path_component_re() {
  static const std::regex re("^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$");
  return re;
}
const std::regex& host_re() {
  // DNS-ish labels separated by '.', or a bracketed IPv6 literal; optional port.
  static const std::regex re(
      "^(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
      "(?:\\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
      "|\\[[0-9A-Fa-f:]+\\])(?::[0-9]+)?$");
  return re;
}
const std::regex& tag_re() {
  static const std::regex re("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$");
  return re;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

}  // namespace

Result<std::string> normalize_ref(const std::string& ref) {
  auto bad = [&](const std::string& why) -> Result<std::string> {
    return fail(Error::invalid("invalid reference \"" + ref + "\": " + why));
  };
  if (ref.empty()) return bad("empty reference");
  for (unsigned char c : ref)
    if (c <= 0x20 || c >= 0x7f) return bad("contains whitespace or a non-printable character");

  std::string rest = ref, tag, digest;
  if (size_t at = rest.find('@'); at != std::string::npos) {
    digest = rest.substr(at + 1);
    rest.resize(at);
    if (digest.rfind("sha256:", 0) != 0 || !is_sha256_hex(digest.substr(7)))
      return bad("digest must be sha256:<64 lowercase hex>");
  }
  size_t slash = rest.rfind('/');
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    tag = rest.substr(colon + 1);
    rest.resize(colon);
    if (!std::regex_match(tag, tag_re())) return bad("bad tag \"" + tag + "\"");
  }
  if (rest.empty()) return bad("empty repository name");

  std::vector<std::string> comps = split(rest, '/');
  std::string domain;
  if (comps.size() > 1 && (comps[0].find_first_of(".:") != std::string::npos ||
                           comps[0] == "localhost")) {
    domain = comps[0];
    comps.erase(comps.begin());
    if (!std::regex_match(domain, host_re())) return bad("bad registry host \"" + domain + "\"");
    if (domain == "index.docker.io") domain = "docker.io";
  } else {
    domain = "docker.io";
  }
  for (const auto& c : comps) {
    if (c.empty()) return bad("empty path component");
    if (!std::regex_match(c, path_component_re())) {
      for (char ch : c)
        if (ch >= 'A' && ch <= 'Z') return bad("repository name must be lowercase");
      return bad("bad path component \"" + c + "\"");
    }
  }
  if (domain == "docker.io" && comps.size() == 1) comps.insert(comps.begin(), "library");

  std::string path;
  for (const auto& c : comps) path += (path.empty() ? "" : "/") + c;
  if (is_sha256_hex(path.substr(path.rfind('/') + 1)) && comps.size() == 2 && comps[0] == "library")
    return bad("repository name cannot be a 64-character hex string (an image id)");
  std::string name = domain + "/" + path;
  if (name.size() > 255) return bad("repository name longer than 255 characters");

  std::string out = name;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  if (tag.empty() && digest.empty()) out += ":latest";
  return out;
}

Result<RefParts> parse_ref(const std::string& ref) {
  std::string n = CUBBY_TRY(normalize_ref(ref));
  RefParts r;
  if (size_t at = n.find('@'); at != std::string::npos) {
    r.digest = n.substr(at + 1);
    n.resize(at);
  }
  size_t slash = n.find('/');
  r.domain = n.substr(0, slash);
  std::string rest = n.substr(slash + 1);
  size_t colon = rest.rfind(':');
  if (colon != std::string::npos) {
    r.tag = rest.substr(colon + 1);
    rest.resize(colon);
  }
  r.path = rest;
  return r;
}

}  // namespace cubby::image
