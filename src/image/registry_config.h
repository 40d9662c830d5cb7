// Registry configuration, in Docker's config.json format:
//   { "auths": { "HOST[:PORT]": { "auth": base64(user:pass) } },
//     "insecure-registries": ["HOST[:PORT]", ...],      (cubby extension)
//     "registry-mirrors": ["https://mirror.example"] }  (for docker.io)
// read from <CUBBY_HOME>/config.json, with credentials falling back to
// Docker's own file ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
// `cubby login` writes <CUBBY_HOME>/config.json (mode 0600).
//
// TLS trust: the system CAs, plus every *.crt in <CUBBY_HOME>/certs.d/HOST[:PORT]/
// (Docker's certs.d layout) and the PEM file named by $CUBBY_REGISTRY_CA.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"

namespace cubby::image {

struct RegistryAuth {
  std::string username, password;
};

struct RegistryConfig {
  std::map<std::string, RegistryAuth> auths;  // by registry domain ("docker.io", "host:port")
  std::vector<std::string> insecure;          // domains
  std::vector<std::string> mirrors;           // base URLs, for docker.io only

  // Missing files are an empty configuration; malformed ones are kInvalid.
  static Result<RegistryConfig> load(const std::string& home);
  std::optional<RegistryAuth> auth_for(const std::string& domain) const;
  // Plain HTTP (and unverified TLS for listed registries) allowed: loopback
  // (localhost, 127.0.0.0/8, ::1) or listed as insecure.
  bool plain_http_allowed(const std::string& domain) const;
  bool listed_insecure(const std::string& domain) const;
};

// "https://index.docker.io/v1/" -> "docker.io", "http://h:5000/v2/" -> "h:5000".
std::string normalize_registry_key(const std::string& key);
std::string config_path(const std::string& home);
// The extra CA PEM text for a registry (certs.d + $CUBBY_REGISTRY_CA).
std::string extra_ca_pem(const std::string& home, const std::string& domain);

Result<void> save_login(const std::string& home, const std::string& domain, const RegistryAuth& auth);
// False if there was nothing to remove.
Result<bool> remove_login(const std::string& home, const std::string& domain);

std::string base64_encode(const std::string& s);
Result<std::string> base64_decode(const std::string& s);

}  // namespace cubby::image
