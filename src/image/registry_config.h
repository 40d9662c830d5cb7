// Registry configuration: one file, <CUBBY_HOME>/config.json, in Docker's
// formats (the client's config.json plus the registry keys of the daemon's
// daemon.json), with one cubby key for per-registry mirrors:
//
//   { "auths": { "HOST[:PORT]": { "auth": base64(user:pass) } },      config.json
//     "credsStore": "NAME",                 docker-credential-NAME for every registry
//     "credHelpers": { "HOST[:PORT]": "NAME" },   ... or for one registry
//     "registry-mirrors": ["https://mirror.example"],  daemon.json: for docker.io
//     "insecure-registries": ["HOST[:PORT]", "10.0.0.0/8"],  daemon.json
//     "mirrors": { "REGISTRY": ["[http[s]://]HOST[:PORT][/PREFIX]", ...] } }
//
// Mirrors are tried in order before the registry itself (for docker.io:
// "mirrors" first, then "registry-mirrors"); a mirror that fails in any way
// (unreachable, 404, 5xx, bad content) is skipped. A PREFIX maps
// REGISTRY/REPO to MIRROR/PREFIX/REPO (registries.conf style).
//
// Credentials for a registry, as the Docker CLI finds them, in cubby's file
// first, then in Docker's ($DOCKER_CONFIG/config.json or ~/.docker/config.json):
// credHelpers[registry], else credsStore, else auths. Helpers are run only
// when a registry asks for authentication. `cubby login` writes cubby's file
// (mode 0600) or, when it names a helper, the helper's store.
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
  // An OAuth2 refresh token (Docker's "identitytoken"; a helper's "<token>"
  // user), exchanged at the token server instead of the password.
  std::string identity_token;
};

// A mirror location: "http://h:5000/prefix" -> {"http", "h:5000", "prefix"}.
struct MirrorLocation {
  std::string scheme;  // "http", "https", or "" (https; plain HTTP where allowed)
  std::string host;    // HOST[:PORT]
  std::string prefix;  // repository prefix, no slashes at either end; may be empty
  std::string str() const;
};
Result<MirrorLocation> parse_mirror(const std::string& s);

// Where credentials come from: one config file.
struct CredentialSource {
  std::string path;
  std::map<std::string, RegistryAuth> auths;  // by registry domain ("docker.io", "host:port")
  std::string creds_store;                     // helper name, may be empty
  std::map<std::string, std::string> cred_helpers;
};

struct RegistryConfig {
  std::vector<CredentialSource> sources;  // cubby's file, then Docker's
  std::vector<std::string> insecure;      // domains and CIDRs
  std::map<std::string, std::vector<MirrorLocation>> mirrors;  // by registry domain

  // Missing files are an empty configuration; a malformed cubby file is
  // kInvalid (a malformed Docker file is ignored: it is not ours).
  static Result<RegistryConfig> load(const std::string& home);
  // The credentials for a registry domain (running a credential helper if the
  // configuration names one); nullopt: anonymous. A helper that cannot be run
  // or fails is an error; "credentials not found" from it is nullopt.
  Result<std::optional<RegistryAuth>> credentials_for(const std::string& domain) const;
  // Stored credentials only (no helpers): for tests and `login` checks.
  std::optional<RegistryAuth> auth_for(const std::string& domain) const;
  // Plain HTTP (and unverified TLS for listed registries) allowed: loopback
  // (localhost, 127.0.0.0/8, ::1) or listed as insecure.
  bool plain_http_allowed(const std::string& domain) const;
  // Listed by name, or an IP literal in a listed CIDR. (Docker also checks
  // the addresses a name resolves to: the registry client does that with
  // address_listed_insecure, keeping name resolution out of the static cubby.)
  bool listed_insecure(const std::string& domain) const;
  bool address_listed_insecure(const std::string& ip) const;
  bool has_insecure_cidrs() const;
  const std::vector<MirrorLocation>& mirrors_for(const std::string& domain) const;
};

// localhost, 127.0.0.0/8 or ::1 (with or without a port).
bool is_loopback_registry(const std::string& domain);
// "https://index.docker.io/v1/" -> "docker.io", "http://h:5000/v2/" -> "h:5000".
std::string normalize_registry_key(const std::string& key);
// The server URL Docker's credential helpers are keyed by.
std::string helper_server_url(const std::string& domain);
std::string config_path(const std::string& home);
// config.json's "image-stage-limit": the most one `load` or `import` may
// stage (see StageBudget), in bytes or as a size ("20g", "512m"); nullopt
// when absent. A malformed value is kInvalid naming the key.
Result<std::optional<uint64_t>> configured_stage_limit(const std::string& home);
// The extra CA PEM text for a registry (certs.d + $CUBBY_REGISTRY_CA).
std::string extra_ca_pem(const std::string& home, const std::string& domain);

Result<void> save_login(const std::string& home, const std::string& domain, const RegistryAuth& auth);
// False if there was nothing to remove.
Result<bool> remove_login(const std::string& home, const std::string& domain);

std::string base64_encode(const std::string& s);
Result<std::string> base64_decode(const std::string& s);

}  // namespace cubby::image
