#include "image/registry_config.h"

#include <dirent.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "base/fs.h"

namespace cubby::image {
namespace {

using json = nlohmann::json;

Result<json> read_config_file(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return json::object();
  std::string text = CUBBY_TRY(read_file(path, 4u << 20));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Error::invalid("malformed registry configuration " + path));
  return j;
}

void add_auths(const json& j, std::map<std::string, RegistryAuth>& out) {
  if (!j.contains("auths") || !j["auths"].is_object()) return;
  for (auto it = j["auths"].begin(); it != j["auths"].end(); ++it) {
    std::string key = normalize_registry_key(it.key());
    if (out.count(key) || !it->is_object()) continue;
    RegistryAuth a;
    if (it->contains("auth") && (*it)["auth"].is_string()) {
      auto dec = base64_decode((*it)["auth"].get<std::string>());
      if (!dec) continue;
      size_t colon = dec->find(':');
      if (colon == std::string::npos) continue;
      a.username = dec->substr(0, colon);
      a.password = dec->substr(colon + 1);
    } else if (it->contains("username") && (*it)["username"].is_string() && it->contains("password") &&
               (*it)["password"].is_string()) {
      a.username = (*it)["username"].get<std::string>();
      a.password = (*it)["password"].get<std::string>();
    } else {
      continue;
    }
    out[key] = a;
  }
}

bool is_loopback(const std::string& domain) {
  std::string host = domain;
  if (host.starts_with("[")) {
    host = host.substr(1, host.find(']') - 1);
    return host == "::1";
  }
  host = host.substr(0, host.find(':'));
  if (host == "localhost") return true;
  if (!host.starts_with("127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') ++dots;
    else if (c < '0' || c > '9') return false;
  }
  return dots == 3;
}

}  // namespace

std::string base64_encode(const std::string& s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> base64_decode(const std::string& in) {
  std::string s;
  for (char c : in)
    if (c != '\n' && c != '\r' && c != ' ') s += c;
  if (s.size() % 4 != 0) return fail(Error::invalid("bad base64"));
  std::string out(s.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return fail(Error::invalid("bad base64"));
  size_t len = static_cast<size_t>(n);
  if (!s.empty() && s.back() == '=') --len;
  if (s.size() > 1 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

std::string normalize_registry_key(const std::string& key) {
  std::string k = key;
  if (k.starts_with("https://")) k = k.substr(8);
  else if (k.starts_with("http://")) k = k.substr(7);
  k = k.substr(0, k.find('/'));
  if (k == "index.docker.io" || k == "registry-1.docker.io" || k == "registry.hub.docker.com") k = "docker.io";
  return k;
}

std::string config_path(const std::string& home) { return home + "/config.json"; }

Result<RegistryConfig> RegistryConfig::load(const std::string& home) {
  RegistryConfig c;
  json j = CUBBY_TRY(read_config_file(config_path(home)));
  add_auths(j, c.auths);
  auto strings = [&](const char* key, std::vector<std::string>& out) {
    if (j.contains(key) && j[key].is_array())
      for (const auto& v : j[key])
        if (v.is_string()) out.push_back(v.get<std::string>());
  };
  strings("insecure-registries", c.insecure);
  for (auto& i : c.insecure) i = normalize_registry_key(i);
  strings("registry-mirrors", c.mirrors);
  std::string docker;
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) docker = std::string(d) + "/config.json";
  else if (const char* h = std::getenv("HOME"); h && *h) docker = std::string(h) + "/.docker/config.json";
  if (!docker.empty()) {
    auto dj = read_config_file(docker);
    if (dj) add_auths(*dj, c.auths);  // a broken Docker file does not stop us
  }
  return c;
}

std::optional<RegistryAuth> RegistryConfig::auth_for(const std::string& domain) const {
  auto it = auths.find(domain);
  if (it == auths.end()) return std::nullopt;
  return it->second;
}

bool RegistryConfig::listed_insecure(const std::string& domain) const {
  return std::find(insecure.begin(), insecure.end(), domain) != insecure.end();
}

bool RegistryConfig::plain_http_allowed(const std::string& domain) const {
  return is_loopback(domain) || listed_insecure(domain);
}

std::string extra_ca_pem(const std::string& home, const std::string& domain) {
  std::string pem;
  std::string dir = home + "/certs.d/" + domain;
  if (DIR* d = ::opendir(dir.c_str())) {
    std::vector<std::string> names;
    while (dirent* de = ::readdir(d)) {
      std::string n = de->d_name;
      if (n.size() > 4 && n.ends_with(".crt")) names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names)
      if (auto t = read_file(dir + "/" + n, 1u << 20)) pem += *t + "\n";
  }
  if (const char* ca = std::getenv("CUBBY_REGISTRY_CA"); ca && *ca)
    if (auto t = read_file(ca, 1u << 20)) pem += *t + "\n";
  return pem;
}

Result<void> save_login(const std::string& home, const std::string& domain, const RegistryAuth& auth) {
  json j = CUBBY_TRY(read_config_file(config_path(home)));
  if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
  // Drop other spellings of the same registry.
  for (auto it = j["auths"].begin(); it != j["auths"].end();) {
    if (normalize_registry_key(it.key()) == domain) it = j["auths"].erase(it);
    else ++it;
  }
  std::string key = domain == "docker.io" ? "https://index.docker.io/v1/" : domain;
  j["auths"][key] = {{"auth", base64_encode(auth.username + ":" + auth.password)}};
  CUBBY_TRYV(mkdir_p(home, 0700));
  return write_file_atomic(config_path(home), j.dump(2) + "\n", 0600);
}

Result<bool> remove_login(const std::string& home, const std::string& domain) {
  json j = CUBBY_TRY(read_config_file(config_path(home)));
  if (!j.contains("auths") || !j["auths"].is_object()) return false;
  bool removed = false;
  for (auto it = j["auths"].begin(); it != j["auths"].end();) {
    if (normalize_registry_key(it.key()) == domain) {
      it = j["auths"].erase(it);
      removed = true;
    } else {
      ++it;
    }
  }
  if (removed) CUBBY_TRYV(write_file_atomic(config_path(home), j.dump(2) + "\n", 0600));
  return removed;
}

}  // namespace cubby::image
