#include "image/registry_config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "image/helper_process.h"

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

std::string docker_config_path() {
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) return std::string(d) + "/config.json";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.docker/config.json";
  return {};
}

std::string str_field(const json& j, const char* k) {
  return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : "";
}

void add_auths(const json& j, std::map<std::string, RegistryAuth>& out) {
  if (!j.contains("auths") || !j["auths"].is_object()) return;
  for (auto it = j["auths"].begin(); it != j["auths"].end(); ++it) {
    std::string key = normalize_registry_key(it.key());
    if (out.count(key) || !it->is_object()) continue;
    RegistryAuth a;
    a.identity_token = str_field(*it, "identitytoken");
    if (!str_field(*it, "auth").empty()) {
      auto dec = base64_decode(str_field(*it, "auth"));
      if (!dec) continue;
      size_t colon = dec->find(':');
      if (colon == std::string::npos) continue;
      a.username = dec->substr(0, colon);
      a.password = dec->substr(colon + 1);
    } else if (!str_field(*it, "username").empty()) {
      a.username = str_field(*it, "username");
      a.password = str_field(*it, "password");
    } else if (a.identity_token.empty()) {
      continue;  // an empty marker (the credentials are in a helper's store)
    }
    out[key] = a;
  }
}

CredentialSource credential_source(const std::string& path, const json& j) {
  CredentialSource s;
  s.path = path;
  add_auths(j, s.auths);
  s.creds_store = str_field(j, "credsStore");
  if (j.contains("credHelpers") && j["credHelpers"].is_object())
    for (auto it = j["credHelpers"].begin(); it != j["credHelpers"].end(); ++it)
      if (it->is_string()) s.cred_helpers[normalize_registry_key(it.key())] = it->get<std::string>();
  return s;
}

// The helper a source names for domain ("" if none): credHelpers, then credsStore.
std::string helper_for(const CredentialSource& s, const std::string& domain) {
  auto it = s.cred_helpers.find(domain);
  return it != s.cred_helpers.end() ? it->second : s.creds_store;
}

bool valid_helper_name(const std::string& n) {
  return !n.empty() && n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") ==
                           std::string::npos;
}

// Runs `docker-credential-NAME VERB` with input; the helper's output.
Result<HelperOutput> run_cred_helper(const std::string& name, const std::string& verb, const std::string& input) {
  std::string prog = "docker-credential-" + name;
  if (!valid_helper_name(name)) return fail(Error::invalid("invalid credential helper name \"" + name + "\""));
  auto path = find_on_path(prog);
  if (!path) return fail(Error::invalid("credential helper " + prog + " not found in $PATH"));
  return run_helper({*path, verb}, input, /*merge_stderr=*/true);
}

std::string first_line(const std::string& s) {
  std::string l = s.substr(0, s.find('\n'));
  while (!l.empty() && (l.back() == '\r' || l.back() == ' ')) l.pop_back();
  return l.empty() ? "no output" : l.substr(0, 300);
}

bool not_found_answer(const std::string& out) {
  return out.find("credentials not found") != std::string::npos;
}

Error helper_failed(const std::string& name, const std::string& verb, const HelperOutput& r) {
  std::string how = r.status.signaled ? "killed by signal " + std::to_string(r.status.signal)
                                      : "exit code " + std::to_string(r.status.code);
  return Error::invalid("credential helper docker-credential-" + name + " " + verb + " failed (" + how +
                        "): " + first_line(r.out));
}

Result<std::optional<RegistryAuth>> helper_get(const std::string& name, const std::string& domain) {
  HelperOutput r = CUBBY_TRY(run_cred_helper(name, "get", helper_server_url(domain) + "\n"));
  if (r.status.signaled || r.status.code != 0) {
    if (not_found_answer(r.out)) return std::optional<RegistryAuth>{};
    return fail(helper_failed(name, "get", r));
  }
  json j = json::parse(r.out, nullptr, false);
  if (!j.is_object() || !j.contains("Secret") || !j["Secret"].is_string())
    return fail(Error::invalid("credential helper docker-credential-" + name + " get answered no {\"Username\",\"Secret\"} JSON"));
  RegistryAuth a;
  a.username = str_field(j, "Username");
  if (a.username == "<token>") {
    a.username.clear();
    a.identity_token = j["Secret"].get<std::string>();
  } else {
    a.password = j["Secret"].get<std::string>();
  }
  if (a.username.empty() && a.password.empty() && a.identity_token.empty()) return std::optional<RegistryAuth>{};
  return std::optional<RegistryAuth>(a);
}

Result<void> check_string_list(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key)) return {};
  bool ok = j[key].is_array();
  if (ok)
    for (const auto& v : j[key]) ok = ok && v.is_string();
  if (!ok) return fail(Error::invalid("malformed registry configuration " + path + ": \"" + key + "\" must be a list of strings"));
  return {};
}

Result<std::vector<MirrorLocation>> parse_mirrors(const json& list, const std::string& path) {
  std::vector<MirrorLocation> out;
  for (const auto& v : list) {
    auto m = parse_mirror(v.get<std::string>());
    if (!m) return fail(m.error().wrap("registry configuration " + path));
    out.push_back(*m);
  }
  return out;
}

// An IP literal (without brackets) into bytes: 4 or 16 of them; empty if not an IP.
std::vector<unsigned char> ip_bytes(const std::string& s) {
  unsigned char b[16];
  if (::inet_pton(AF_INET, s.c_str(), b) == 1) return {b, b + 4};
  if (::inet_pton(AF_INET6, s.c_str(), b) == 1) return {b, b + 16};
  return {};
}

bool in_cidr(const std::vector<unsigned char>& ip, const std::string& cidr) {
  size_t slash = cidr.find('/');
  auto net = ip_bytes(cidr.substr(0, slash));
  if (net.empty() || net.size() != ip.size()) return false;
  char* end = nullptr;
  long bits = std::strtol(cidr.c_str() + slash + 1, &end, 10);
  if (*end || bits < 0 || bits > static_cast<long>(8 * ip.size())) return false;
  for (size_t i = 0; i < ip.size(); ++i) {
    long b = std::clamp<long>(bits - 8 * static_cast<long>(i), 0, 8);
    unsigned char mask = static_cast<unsigned char>(0xff00 >> b);
    if ((ip[i] & mask) != (net[i] & mask)) return false;
  }
  return true;
}

// "h:5000" -> "h", "[::1]:5000" -> "::1".
std::string host_of(const std::string& domain) {
  if (domain.starts_with("[")) return domain.substr(1, domain.find(']') - 1);
  if (std::count(domain.begin(), domain.end(), ':') > 1) return domain;  // bare IPv6
  return domain.substr(0, domain.find(':'));
}

bool is_loopback(const std::string& domain) {
  std::string host = host_of(domain);
  if (host == "localhost" || host == "::1") return true;
  auto ip = ip_bytes(host);
  return ip.size() == 4 && ip[0] == 127;
}

}  // namespace

bool is_loopback_registry(const std::string& domain) { return is_loopback(domain); }

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

Result<std::optional<uint64_t>> configured_stage_limit(const std::string& home) {
  auto text = read_file(config_path(home), 1 << 20);
  if (!text) return std::optional<uint64_t>{};
  auto j = nlohmann::json::parse(*text, nullptr, false);
  auto it = j.is_object() ? j.find("image-stage-limit") : j.end();
  if (it == j.end()) return std::optional<uint64_t>{};
  auto bad = [&] {
    return fail(Error::invalid(config_path(home) + " \"image-stage-limit\" must be a size in bytes or like \"20g\", not " +
                               it->dump()));
  };
  if (it->is_number_unsigned() && it->get<uint64_t>() > 0) return std::optional<uint64_t>{it->get<uint64_t>()};
  if (!it->is_string()) return bad();
  const std::string& v = it->get_ref<const std::string&>();
  const size_t digits = std::min(v.find_first_not_of("0123456789"), v.size());
  if (digits == 0 || digits > 15) return bad();
  std::string unit = v.substr(digits);
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int shift = unit.empty() || unit == "b" ? 0 : unit == "k" ? 10 : unit == "m" ? 20 : unit == "g" ? 30 : unit == "t" ? 40 : -1;
  if (shift < 0) return bad();
  uint64_t n = std::stoull(v.substr(0, digits));
  if (n == 0) return bad();
  return std::optional<uint64_t>{n << shift};
}

std::string helper_server_url(const std::string& domain) {
  return domain == "docker.io" ? "https://index.docker.io/v1/" : domain;
}

std::string MirrorLocation::str() const {
  return (scheme.empty() ? "" : scheme + "://") + host + (prefix.empty() ? "" : "/" + prefix);
}

Result<MirrorLocation> parse_mirror(const std::string& s) {
  MirrorLocation m;
  std::string rest = s;
  auto bad = [&](const std::string& why) -> Result<MirrorLocation> {
    return fail(Error::invalid("invalid mirror \"" + s + "\": " + why));
  };
  if (size_t p = rest.find("://"); p != std::string::npos) {
    m.scheme = rest.substr(0, p);
    if (m.scheme != "http" && m.scheme != "https") return bad("the scheme must be http or https");
    rest = rest.substr(p + 3);
  }
  size_t slash = rest.find('/');
  m.host = rest.substr(0, slash);
  std::string prefix = slash == std::string::npos ? "" : rest.substr(slash + 1);
  while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
  if (prefix == "v2" || prefix.starts_with("v2/")) prefix = prefix.size() > 2 ? prefix.substr(3) : "";
  m.prefix = prefix;
  static const char kHostChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:[]";
  if (m.host.empty() || m.host.find_first_not_of(kHostChars) != std::string::npos) return bad("bad host");
  static const char kPathChars[] = "abcdefghijklmnopqrstuvwxyz0123456789-._/";
  bool bad_prefix = m.prefix.find_first_not_of(kPathChars) != std::string::npos;
  for (size_t i = 0; !m.prefix.empty() && i <= m.prefix.size();) {
    size_t j = std::min(m.prefix.find('/', i), m.prefix.size());
    std::string comp = m.prefix.substr(i, j - i);
    bad_prefix = bad_prefix || comp.empty() || comp == "." || comp == "..";
    i = j + 1;
  }
  if (bad_prefix)
    return bad("bad repository prefix \"" + m.prefix + "\"");
  return m;
}

Result<RegistryConfig> RegistryConfig::load(const std::string& home) {
  RegistryConfig c;
  std::string path = config_path(home);
  json j = CUBBY_TRY(read_config_file(path));
  CUBBY_TRYV(check_string_list(j, "insecure-registries", path));
  CUBBY_TRYV(check_string_list(j, "registry-mirrors", path));
  for (const char* k : {"credsStore"})
    if (j.contains(k) && !j[k].is_string())
      return fail(Error::invalid("malformed registry configuration " + path + ": \"" + k + "\" must be a string"));
  for (const char* k : {"credHelpers", "mirrors"})
    if (j.contains(k) && !j[k].is_object())
      return fail(Error::invalid("malformed registry configuration " + path + ": \"" + k + "\" must be an object"));
  c.sources.push_back(credential_source(path, j));
  if (j.contains("insecure-registries"))
    for (const auto& v : j["insecure-registries"]) {
      std::string i = v.get<std::string>();
      c.insecure.push_back(i.find('/') != std::string::npos && !ip_bytes(i.substr(0, i.find('/'))).empty()
                               ? i
                               : normalize_registry_key(i));
    }
  if (j.contains("mirrors"))
    for (auto it = j["mirrors"].begin(); it != j["mirrors"].end(); ++it) {
      if (!it->is_array() || std::any_of(it->begin(), it->end(), [](const json& v) { return !v.is_string(); }))
        return fail(Error::invalid("malformed registry configuration " + path + ": \"mirrors\" maps a registry to a list of URLs"));
      auto& into = c.mirrors[normalize_registry_key(it.key())];
      for (auto& m : CUBBY_TRY(parse_mirrors(*it, path))) into.push_back(m);
    }
  if (j.contains("registry-mirrors"))
    for (auto& m : CUBBY_TRY(parse_mirrors(j["registry-mirrors"], path))) c.mirrors["docker.io"].push_back(m);
  if (std::string docker = docker_config_path(); !docker.empty())
    if (auto dj = read_config_file(docker))  // a broken Docker file does not stop us
      c.sources.push_back(credential_source(docker, *dj));
  return c;
}

Result<std::optional<RegistryAuth>> RegistryConfig::credentials_for(const std::string& domain) const {
  for (const auto& s : sources) {
    if (std::string helper = helper_for(s, domain); !helper.empty()) {
      auto got = CUBBY_TRY(helper_get(helper, domain));
      if (got) return got;
      continue;  // with a helper in charge, the file's auths are only markers
    }
    if (auto it = s.auths.find(domain); it != s.auths.end()) return std::optional<RegistryAuth>(it->second);
  }
  return std::optional<RegistryAuth>{};
}

std::optional<RegistryAuth> RegistryConfig::auth_for(const std::string& domain) const {
  for (const auto& s : sources)
    if (auto it = s.auths.find(domain); it != s.auths.end()) return it->second;
  return std::nullopt;
}

bool RegistryConfig::listed_insecure(const std::string& domain) const {
  if (std::find(insecure.begin(), insecure.end(), domain) != insecure.end()) return true;
  std::string host = host_of(domain);
  return !ip_bytes(host).empty() && address_listed_insecure(host);
}

bool RegistryConfig::address_listed_insecure(const std::string& ip) const {
  auto bytes = ip_bytes(ip);
  if (bytes.empty()) return false;
  for (const auto& i : insecure)
    if (i.find('/') != std::string::npos && in_cidr(bytes, i)) return true;
  return false;
}

bool RegistryConfig::has_insecure_cidrs() const {
  return std::any_of(insecure.begin(), insecure.end(), [](const std::string& i) { return i.find('/') != std::string::npos; });
}

bool RegistryConfig::plain_http_allowed(const std::string& domain) const {
  return is_loopback(domain) || listed_insecure(domain);
}

const std::vector<MirrorLocation>& RegistryConfig::mirrors_for(const std::string& domain) const {
  static const std::vector<MirrorLocation> none;
  auto it = mirrors.find(domain);
  return it == mirrors.end() ? none : it->second;
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
  std::string path = config_path(home);
  json j = CUBBY_TRY(read_config_file(path));
  if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
  // Drop other spellings of the same registry.
  for (auto it = j["auths"].begin(); it != j["auths"].end();) {
    if (normalize_registry_key(it.key()) == domain) it = j["auths"].erase(it);
    else ++it;
  }
  std::string key = helper_server_url(domain);
  if (std::string helper = helper_for(credential_source(path, j), domain); !helper.empty()) {
    // As `docker login`: the secret goes to the helper's store, the file keeps an empty marker.
    json req = {{"ServerURL", key}, {"Username", auth.username}, {"Secret", auth.password}};
    HelperOutput r = CUBBY_TRY(run_cred_helper(helper, "store", req.dump()));
    if (r.status.signaled || r.status.code != 0) return fail(helper_failed(helper, "store", r));
    j["auths"][key] = json::object();
  } else {
    j["auths"][key] = {{"auth", base64_encode(auth.username + ":" + auth.password)}};
  }
  CUBBY_TRYV(mkdir_p(home, 0700));
  return write_file_atomic(path, j.dump(2) + "\n", 0600);
}

Result<bool> remove_login(const std::string& home, const std::string& domain) {
  std::string path = config_path(home);
  json j = CUBBY_TRY(read_config_file(path));
  bool removed = false;
  if (std::string helper = helper_for(credential_source(path, j), domain); !helper.empty()) {
    HelperOutput r = CUBBY_TRY(run_cred_helper(helper, "erase", helper_server_url(domain) + "\n"));
    if (r.status.signaled || r.status.code != 0) {
      if (!not_found_answer(r.out)) return fail(helper_failed(helper, "erase", r));
    } else {
      removed = true;
    }
  }
  if (!j.contains("auths") || !j["auths"].is_object()) return removed;
  bool changed = false;
  for (auto it = j["auths"].begin(); it != j["auths"].end();) {
    if (normalize_registry_key(it.key()) == domain) {
      if (!it->empty()) removed = true;
      it = j["auths"].erase(it);
      changed = true;
    } else {
      ++it;
    }
  }
  if (changed) CUBBY_TRYV(write_file_atomic(path, j.dump(2) + "\n", 0600));
  return removed;
}

}  // namespace cubby::image
