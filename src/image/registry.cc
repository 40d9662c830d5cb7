// Registry HTTP API v2 client. One Registry object per pull; each thread
// reuses its own curl easy handle (and so its connections).
//
// Flow: ping /v2/ (choosing https, or http where allowed, and learning the
// auth challenge) -> manifest (tag or digest; an index is resolved to the
// platform) -> config blob -> layer blobs in parallel into a staging area,
// each verified (size, sha256) while it streams, then decompressed (diff_id
// checked) and unpacked -> ImageStore::commit.
#include "image/registry.h"

#include <curl/curl.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "image/digest.h"
#include "image/media_types.h"
#include "image/unpack.h"

namespace cubby::image {
namespace {

// PullOptions::progress_fd's line. Skipped unless the fd can take it now
// (poll: a pipe with room for a line under PIPE_BUF takes it whole).
void progress_line(int fd, uint64_t current, uint64_t total) {
  if (fd < 0) return;
  std::string line = "{\"status\":\"downloading\",\"current\":" + std::to_string(current) +
                     ",\"total\":" + std::to_string(total) + "}\n";
  pollfd pf{fd, POLLOUT, 0};
  if (::poll(&pf, 1, 0) == 1 && (pf.revents & POLLOUT)) (void)!::write(fd, line.data(), line.size());
}

using json = nlohmann::json;

constexpr uint64_t kMaxLayerBytes = 64ull << 30;


std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string short_hex(const std::string& hex) { return hex.substr(0, 12); }

// ---- HTTP over libcurl ----

struct Response {
  long status = 0;
  std::map<std::string, std::string> headers;  // lowercase names, last response only
  std::string body;                            // when no file sink
  bool too_big = false;
};

struct Sink {
  Response* resp;
  size_t limit;            // bytes
  int fd = -1;             // file sink when >= 0
  Sha256* hash = nullptr;  // hashes what goes to fd
  uint64_t written = 0;
  int write_errno = 0;
  std::atomic<uint64_t>* progress = nullptr;
  int tee_fd = -1;          // also copied here (a pipe to the unpacker) while it reads
  bool tee_broken = false;  // the reader went away: the rest goes to fd only
};

size_t on_body(char* p, size_t sz, size_t n, void* ud) {
  auto* s = static_cast<Sink*>(ud);
  size_t len = sz * n;
  // Error bodies go to memory, whatever the sink.
  bool to_file = s->fd >= 0 && s->resp->status >= 200 && s->resp->status < 300;
  if (s->written + len > s->limit) {
    s->resp->too_big = true;
    return 0;  // aborts the transfer
  }
  s->written += len;
  if (to_file) {
    s->hash->update(p, len);
    if (auto w = sys::write_all(s->fd, p, len); !w) {
      s->write_errno = w.error().sys_errno();
      return 0;
    }
    if (s->progress) s->progress->fetch_add(len, std::memory_order_relaxed);
    if (s->tee_fd >= 0 && !s->tee_broken && !sys::write_all(s->tee_fd, p, len)) s->tee_broken = true;
  } else {
    s->resp->body.append(p, len);
  }
  return len;
}

size_t on_header(char* p, size_t sz, size_t n, void* ud) {
  auto* s = static_cast<Sink*>(ud);
  std::string line(p, sz * n);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.starts_with("HTTP/")) {  // a new response (after a redirect or 100)
    s->resp->headers.clear();
    s->resp->body.clear();
    s->written = 0;
    size_t sp = line.find(' ');
    s->resp->status = sp == std::string::npos ? 0 : std::atol(line.c_str() + sp + 1);
    return sz * n;
  }
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string v = line.substr(colon + 1);
    size_t b = v.find_first_not_of(" \t");
    s->resp->headers[lower(line.substr(0, colon))] = b == std::string::npos ? "" : v.substr(b);
  }
  return sz * n;
}

curl_socket_t open_cloexec_socket(void*, curlsocktype, struct curl_sockaddr* a) {
  return ::socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

struct EasyHandle {
  CURL* h = curl_easy_init();
  ~EasyHandle() { curl_easy_cleanup(h); }
};

CURL* thread_handle() {
  thread_local EasyHandle e;
  curl_easy_reset(e.h);
  return e.h;
}

struct TlsMode {
  bool verify = true;
  std::string ca_pem;  // system bundle + extras; empty: curl's default
};

struct Request {
  std::string url;
  std::vector<std::string> headers;
  std::string userpwd;    // basic auth for the token server
  std::string post_form;  // when set: POST this application/x-www-form-urlencoded body
};

Result<Response> http_request(const Request& req, const TlsMode& tls, Sink& sink) {
  CURL* h = thread_handle();
  if (!h) return fail(Error::internal("curl_easy_init failed"));
  Response& resp = *sink.resp;
  resp = Response{};
  char errbuf[CURL_ERROR_SIZE] = {};
  struct curl_slist* hl = nullptr;
  for (const auto& x : req.headers) hl = curl_slist_append(hl, x.c_str());
  curl_easy_setopt(h, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);  // stalled for 60 s: give up
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "cubby/" CUBBY_VERSION);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &sink);
  curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_cloexec_socket);
  if (!req.post_form.empty()) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(req.post_form.size()));
    curl_easy_setopt(h, CURLOPT_COPYPOSTFIELDS, req.post_form.c_str());
  }
  if (!req.userpwd.empty()) {
    curl_easy_setopt(h, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(h, CURLOPT_USERPWD, req.userpwd.c_str());
  }
  if (!tls.verify) {
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
  } else if (!tls.ca_pem.empty()) {
    struct curl_blob blob{const_cast<char*>(tls.ca_pem.data()), tls.ca_pem.size(), CURL_BLOB_COPY};
    curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
  }
  CURLcode rc = curl_easy_perform(h);
  curl_slist_free_all(hl);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  if (code) resp.status = code;
  if (rc == CURLE_WRITE_ERROR && resp.too_big) return resp;  // caller reports
  if (rc == CURLE_WRITE_ERROR && sink.write_errno) return sys_fail("write download", sink.write_errno);
  if (rc != CURLE_OK) {
    std::string why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    Error e(ErrorKind::kProtocol, "GET " + req.url + ": " + why);
    return fail(rc == CURLE_PEER_FAILED_VERIFICATION
                    ? Error(ErrorKind::kProtocol, e.message() +
                                                      " (for a private CA put it in CUBBY_HOME/certs.d/HOST:PORT/ca.crt or set CUBBY_REGISTRY_CA)")
                    : e);
  }
  return resp;
}

bool transient(const Error& e) {
  // Transport trouble (connection reset, truncated body, timeout).
  return e.kind() == ErrorKind::kProtocol;
}

// The registry's own explanation from an error body, if any.
std::string registry_message(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
    const json& e = j["errors"][0];
    std::string code = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "";
    std::string msg = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
    if (!code.empty() || !msg.empty()) return lower(code) + (msg.empty() ? "" : (code.empty() ? "" : ": ") + msg);
  }
  return {};
}

std::string status_text(long s) {
  switch (s) {
    case 400: return "400 Bad Request";
    case 401: return "401 Unauthorized";
    case 403: return "403 Forbidden";
    case 404: return "404 Not Found";
    case 429: return "429 Too Many Requests";
    case 500: return "500 Internal Server Error";
    case 502: return "502 Bad Gateway";
    case 503: return "503 Service Unavailable";
    default: return std::to_string(s);
  }
}

// WWW-Authenticate: Bearer realm="...",service="...",scope="..."
struct Challenge {
  std::string scheme;  // "bearer", "basic" or ""
  std::map<std::string, std::string> params;
};

Challenge parse_challenge(const std::string& h) {
  Challenge c;
  size_t sp = h.find(' ');
  c.scheme = lower(h.substr(0, sp));
  if (sp == std::string::npos) return c;
  size_t i = sp + 1;
  while (i < h.size()) {
    while (i < h.size() && (h[i] == ' ' || h[i] == ',')) ++i;
    size_t eq = h.find('=', i);
    if (eq == std::string::npos) break;
    std::string key = lower(h.substr(i, eq - i));
    i = eq + 1;
    std::string val;
    if (i < h.size() && h[i] == '"') {
      ++i;
      while (i < h.size() && h[i] != '"') {
        if (h[i] == '\\' && i + 1 < h.size()) ++i;
        val += h[i++];
      }
      ++i;
    } else {
      size_t end = h.find(',', i);
      val = h.substr(i, end == std::string::npos ? std::string::npos : end - i);
      i = end == std::string::npos ? h.size() : end;
    }
    c.params[key] = val;
  }
  return c;
}

std::string url_escape(const std::string& s) {
  std::string out;
  static const char* hex = "0123456789ABCDEF";
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// ---- the registry ----

// Whether a registry's name resolves to an address in an insecure CIDR.
bool resolves_to_insecure(const RegistryConfig& cfg, const std::string& domain) {
  if (!cfg.has_insecure_cidrs()) return false;
  std::string host = domain.starts_with("[") ? domain.substr(1, domain.find(']') - 1) : domain.substr(0, domain.find(':'));
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return false;
  bool found = false;
  for (addrinfo* a = res; a && !found; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {};
    const void* src = a->ai_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                                              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) && ::inet_ntop(a->ai_family, src, buf, sizeof buf))
      found = cfg.address_listed_insecure(buf);
  }
  ::freeaddrinfo(res);
  return found;
}

// One place to fetch a repository from: the registry itself or a mirror.
struct EndpointSpec {
  std::string domain;  // for credentials, TLS trust and the insecure list: the registry or mirror host
  std::string repo;    // repository path there (a mirror's prefix included)
  std::string scheme;  // "http"/"https" when the configuration says so; "": https, then http where allowed
  std::string label;   // "mirror URL" in messages; empty for the registry itself
};

class Registry {
 public:
  Registry(EndpointSpec spec, const RegistryConfig& cfg, const std::string& home,
           std::optional<RegistryAuth> auth = std::nullopt)
      : spec_(std::move(spec)), domain_(spec_.domain), repo_(spec_.repo), cfg_(cfg) {
    host_ = domain_ == "docker.io" ? "registry-1.docker.io" : domain_;
    if (auth) {
      auth_ = auth;
      creds_loaded_ = true;
    }
    bool insecure = cfg.listed_insecure(domain_) || resolves_to_insecure(cfg, domain_);
    plain_ok_ = spec_.scheme == "http" || insecure || cfg.plain_http_allowed(domain_);
    tls_.verify = !insecure;
    std::string extra = extra_ca_pem(home, domain_);
    if (!extra.empty()) {
      std::string sys = read_file("/etc/ssl/certs/ca-certificates.crt", 16u << 20).value_or("");
      tls_.ca_pem = sys + "\n" + extra;
    }
  }

  bool is_mirror() const { return !spec_.label.empty(); }
  const std::string& label() const { return spec_.label; }

  // ping() once; every caller gets its result.
  Result<void> ready() {
    std::lock_guard<std::mutex> l(ping_mu_);
    if (!pinged_) pinged_ = ping();
    return *pinged_;
  }

  // Picks the scheme and learns the auth challenge.
  Result<void> ping() {
    // A loopback registry is asked in plain HTTP first: the traffic never
    // leaves the host, and a TLS attempt at a plain server costs a CA-bundle
    // load (~30 ms here). Only a registry's answer (200, 401) counts: a
    // TLS-only server answers 400 to plain HTTP and is then spoken to in https.
    if (spec_.scheme.empty() && is_loopback_registry(domain_)) {
      Response r0;
      Sink s0{&r0, 1u << 20};
      if (http_request({"http://" + host_ + "/v2/", {}, "", ""}, tls_, s0) && (r0.status == 200 || r0.status == 401)) {
        base_ = "http://" + host_;
        return learn(r0);
      }
    }
    Response r;
    Sink s{&r, 1u << 20};
    Result<Response> got = fail(Error::internal("no scheme tried"));
    if (spec_.scheme != "http") {
      got = http_request({"https://" + host_ + "/v2/", {}, "", ""}, tls_, s);
      base_ = "https://" + host_;
    }
    bool verify_failed = !got && got.error().message().find("certificate") != std::string::npos;
    if (!got && spec_.scheme.empty() && !plain_ok_ && !verify_failed && speaks_plain_http())
      return fail(Error::invalid("registry " + domain_ + " answers only plain HTTP, which cubby uses for loopback "
                                 "registries and those in \"insecure-registries\" of CUBBY_HOME/config.json"));
    if (!got && plain_ok_ && spec_.scheme != "https" && !verify_failed) {
      Response r2;
      Sink s2{&r2, 1u << 20};
      auto got2 = http_request({"http://" + host_ + "/v2/", {}, "", ""}, tls_, s2);
      if (got2 || spec_.scheme == "http") {
        got = std::move(got2);
        r = std::move(r2);
        base_ = "http://" + host_;
      }
    }
    if (!got) return fail(Error(ErrorKind::kProtocol, "cannot reach " + what() + ": " + got.error().message()));
    return learn(r);
  }

  // The auth challenge from a GET /v2/ answer, or why it is no registry.
  Result<void> learn(Response& r) {
    if (r.status == 401) {
      challenge_ = parse_challenge(r.headers["www-authenticate"]);
    } else if (r.status >= 500 || (is_mirror() && r.status != 200)) {
      return fail(Error(ErrorKind::kProtocol, what() + " answered " + status_text(r.status) + " to GET /v2/"));
    }
    return {};
  }

  // GET base/v2/<repo>/<path>, authenticating as challenged.
  Result<Response> get(const std::string& path, const std::vector<std::string>& extra_headers, Sink& sink) {
    std::string url = base_ + "/v2/" + repo_ + "/" + path;
    for (int attempt = 0;; ++attempt) {
      std::vector<std::string> hs = extra_headers;
      if (auto a = authorization(); !a.empty()) hs.push_back("Authorization: " + a);
      Response resp = CUBBY_TRY(http_request({url, hs, "", ""}, tls_, sink));
      if (resp.status != 401 || attempt > 0) return resp;
      Challenge c = parse_challenge(resp.headers["www-authenticate"]);
      if (c.scheme.empty()) return resp;
      {
        std::lock_guard<std::mutex> l(mu_);
        challenge_ = c;
        token_.clear();
      }
      if (auto t = authenticate(); !t) return fail(t.error());
      if (authorization().empty()) return resp;
    }
  }

  // Fetches the token (bearer) or arms Basic credentials.
  Result<void> authenticate() {
    std::lock_guard<std::mutex> l(mu_);
    if (challenge_.scheme != "basic" && challenge_.scheme != "bearer") return {};
    if (!creds_loaded_) {  // only now: a credential helper runs only for registries that ask
      auth_ = CUBBY_TRY(cfg_.credentials_for(domain_));
      creds_loaded_ = true;
    }
    if (challenge_.scheme == "basic") {
      if (!auth_) return fail(Error::invalid(denied("authentication required (run cubby login " + domain_ + ")")));
      if (auth_->username.empty())
        return fail(Error::invalid("registry " + domain_ + " wants Basic authentication, but its stored credentials "
                                   "are an identity token (run cubby login " + domain_ + ")"));
      basic_ = true;
      return {};
    }
    if (!token_.empty()) return {};
    std::string realm = challenge_.params["realm"];
    if (realm.empty()) return fail(Error(ErrorKind::kProtocol, "registry " + domain_ + ": bearer challenge without a realm"));
    std::string service = challenge_.params["service"];
    std::string scope = repo_.empty() ? "" : "repository:" + repo_ + ":pull";
    Request req;
    if (auth_ && !auth_->identity_token.empty()) {
      // OAuth2 refresh-token grant (what Docker does with an identity token).
      req.url = realm;
      req.post_form = "grant_type=refresh_token&client_id=cubby&refresh_token=" + url_escape(auth_->identity_token) +
                      (service.empty() ? "" : "&service=" + url_escape(service)) +
                      (scope.empty() ? "" : "&scope=" + url_escape(scope));
    } else {
      req.url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
      if (!service.empty()) req.url += "service=" + url_escape(service) + "&";
      if (!scope.empty()) req.url += "scope=" + url_escape(scope);
      if (auth_) req.userpwd = auth_->username + ":" + auth_->password;
    }
    Response r;
    Sink s{&r, 1u << 20};
    CUBBY_TRYV(http_request(req, tls_, s));
    if (r.status == 401 || r.status == 403 || (r.status == 400 && !req.post_form.empty()))
      return fail(Error::invalid(auth_ ? "unauthorized: incorrect username or password for " + domain_
                                       : denied("the token server refused anonymous access (run cubby login " + domain_ + ")")));
    if (r.status != 200)
      return fail(Error(ErrorKind::kProtocol, "token server " + realm + " answered " + status_text(r.status)));
    json j = json::parse(r.body, nullptr, false);
    std::string tok;
    if (j.is_object() && j.contains("token") && j["token"].is_string()) tok = j["token"].get<std::string>();
    else if (j.is_object() && j.contains("access_token") && j["access_token"].is_string())
      tok = j["access_token"].get<std::string>();
    if (tok.empty()) return fail(Error(ErrorKind::kProtocol, "token server " + realm + " sent no token"));
    token_ = tok;
    return {};
  }

  std::string denied(const std::string& why) const { return "pull access denied for " + domain_ + "/" + repo_ + ": " + why; }

  // One line for a non-2xx answer.
  Error http_error(const std::string& what, const Response& r) const {
    std::string msg = registry_message(r.body);
    if (r.status == 401)
      return Error::invalid(auth_ ? "unauthorized: incorrect username or password for " + domain_
                                  : denied("authentication required (run cubby login " + domain_ + ")"));
    if (r.status == 404) return Error::not_found(what + ": not found" + (msg.empty() ? "" : " (" + msg + ")"));
    return Error(ErrorKind::kProtocol, what + ": " + this->what() + " answered " + status_text(r.status) +
                                           (msg.empty() ? "" : " (" + msg + ")"));
  }

  const Challenge& challenge() const { return challenge_; }
  Result<Response> raw_get(const Request& r, Sink& s) { return http_request(r, tls_, s); }
  const std::string& base() const { return base_; }

 private:
  std::string what() const { return is_mirror() ? spec_.label : "registry " + domain_; }

  // Whether host_ answers GET /v2/ over plain HTTP (sending no credentials).
  bool speaks_plain_http() {
    Response r;
    Sink s{&r, 1u << 20};
    auto got = http_request({"http://" + host_ + "/v2/", {}, "", ""}, tls_, s);
    return got && r.status > 0;
  }

  std::string authorization() {
    std::lock_guard<std::mutex> l(mu_);
    if (!token_.empty()) return "Bearer " + token_;
    if (basic_ && auth_) return "Basic " + base64_encode(auth_->username + ":" + auth_->password);
    return {};
  }

  EndpointSpec spec_;
  std::string domain_, repo_, host_, base_;
  const RegistryConfig& cfg_;
  bool plain_ok_ = false;
  TlsMode tls_;
  std::mutex ping_mu_;
  std::optional<Result<void>> pinged_;
  std::mutex mu_;
  bool creds_loaded_ = false;
  std::optional<RegistryAuth> auth_;
  Challenge challenge_;
  std::string token_;
  bool basic_ = false;
};

// The places a repository is fetched from, in order: its mirrors, then the
// registry itself.
std::vector<std::unique_ptr<Registry>> endpoints_for(const RefParts& rp, const RegistryConfig& cfg,
                                                     const std::string& home) {
  std::vector<std::unique_ptr<Registry>> eps;
  for (const auto& m : cfg.mirrors_for(rp.domain))
    eps.push_back(std::make_unique<Registry>(
        EndpointSpec{normalize_registry_key(m.host), m.prefix.empty() ? rp.path : m.prefix + "/" + rp.path, m.scheme,
                     "mirror " + m.str()},
        cfg, home));
  eps.push_back(std::make_unique<Registry>(EndpointSpec{rp.domain, rp.path, "", ""}, cfg, home));
  return eps;
}

Platform host_platform() { return {"linux", kHostArch, ""}; }

bool platform_matches(const json& p, const Platform& want) {
  if (!p.is_object()) return false;
  auto f = [&](const char* k) { return p.contains(k) && p[k].is_string() ? p[k].get<std::string>() : ""; };
  if (f("os") != want.os || f("architecture") != want.arch) return false;
  std::string v = f("variant");
  if (want.variant.empty()) return want.arch != "arm" || v.empty() || v == "v7";
  if (want.arch == "arm64" && want.variant == "v8" && v.empty()) return true;
  return v == want.variant;
}

std::string media_type_of(const Response& r, const json& j) {
  std::string ct = r.headers.count("content-type") ? r.headers.at("content-type") : "";
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  if (j.is_object() && j.contains("mediaType") && j["mediaType"].is_string()) return j["mediaType"].get<std::string>();
  if (ct == kOciManifest || ct == kOciIndex || ct == kDockerManifest || ct == kDockerList) return ct;
  if (j.is_object() && j.contains("manifests")) return kOciIndex;
  if (j.is_object() && j.contains("config") && j.contains("layers")) return kOciManifest;
  return ct;
}

struct Fetched {
  std::string bytes, media_type, digest_hex;
};

// GET a manifest by tag or digest; verified against the digest when given.
Result<Fetched> fetch_manifest(Registry& reg, const std::string& reference, const std::string& shown) {
  Response r;
  Sink s{&r, kMaxManifestBytes};
  std::string accept = std::string("Accept: ") + kOciManifest + ", " + kOciIndex + ", " + kDockerManifest + ", " + kDockerList;
  Response got = CUBBY_TRY(reg.get("manifests/" + reference, {accept}, s));
  if (got.too_big)
    return fail(Error::invalid("manifest for " + shown + " is larger than " + std::to_string(kMaxManifestBytes >> 20) + " MiB: refused"));
  if (got.status != 200) return fail(reg.http_error("manifest for " + shown, got));
  Fetched f;
  f.bytes = std::move(got.body);
  f.digest_hex = sha256_hex(f.bytes);
  if (reference.starts_with("sha256:") && reference.substr(7) != f.digest_hex)
    return fail(Error::invalid("manifest for " + shown + " does not match its digest " + reference + " (got sha256:" + f.digest_hex + ")"));
  json j = json::parse(f.bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Error::invalid("manifest for " + shown + " is not JSON"));
  f.media_type = media_type_of(got, j);
  if (j.contains("schemaVersion") && j["schemaVersion"] == 1)
    return fail(Error::invalid("manifest for " + shown + " is Docker schema 1, which is not supported"));
  return f;
}

struct Desc {
  std::string media_type, hex;
  uint64_t size = 0;
};

Result<Desc> descriptor(const json& d, const std::string& what) {
  if (!d.is_object() || !d.contains("digest") || !d["digest"].is_string() || !d.contains("size") ||
      !d["size"].is_number_unsigned())
    return fail(Error::invalid("malformed " + what + " descriptor"));
  Desc out;
  std::string dg = d["digest"].get<std::string>();
  if (!dg.starts_with("sha256:") || !is_sha256_hex(dg.substr(7)))
    return fail(Error::invalid(what + " has an unsupported digest \"" + dg + "\""));
  out.hex = dg.substr(7);
  out.size = d["size"].get<uint64_t>();
  out.media_type = d.contains("mediaType") && d["mediaType"].is_string() ? d["mediaType"].get<std::string>() : "";
  return out;
}


// The image manifest for reference at one endpoint: an index is resolved to
// the platform.
Result<Fetched> resolve_manifest(Registry& reg, const std::string& reference, const std::string& nref,
                                 const Platform& want) {
  CUBBY_TRYV(reg.ready());
  Fetched m = CUBBY_TRY(fetch_manifest(reg, reference, nref));
  if (m.media_type == kOciIndex || m.media_type == kDockerList) {
    json idx = json::parse(m.bytes);
    if (!idx.contains("manifests") || !idx["manifests"].is_array())
      return fail(Error::invalid("image index for " + nref + " has no manifests"));
    const json* pick = nullptr;
    std::string avail;
    for (const auto& d : idx["manifests"]) {
      if (d.contains("platform")) {
        const json& p = d["platform"];
        std::string s = p.value("os", "?") + "/" + p.value("architecture", "?") +
                        (p.contains("variant") ? "/" + p.value("variant", "") : "");
        if (s != "unknown/unknown") avail += (avail.empty() ? "" : ", ") + s;
      }
      if (!pick && platform_matches(d.value("platform", json()), want)) pick = &d;
    }
    if (!pick)
      return fail(Error::not_found("no matching manifest for " + want.str() + " in the index of " + nref +
                                   " (available: " + (avail.empty() ? "none" : avail) + ")"));
    Desc d = CUBBY_TRY(descriptor(*pick, "manifest"));
    if (d.size > kMaxManifestBytes)
      return fail(Error::invalid("manifest for " + nref + " is larger than " + std::to_string(kMaxManifestBytes >> 20) + " MiB: refused"));
    m = CUBBY_TRY(fetch_manifest(reg, "sha256:" + d.hex, nref + " (" + want.str() + ")"));
    if (m.bytes.size() != d.size) return fail(Error::invalid("manifest for " + nref + " does not match the size in its index"));
  }
  return m;
}


// Downloads a blob into path, verifying size and digest; retried on
// transport errors (a truncated download restarts).
// Downloads a blob into path, verifying size and digest; retried on
// transport errors (a truncated download restarts). With a tee, the first
// attempt's bytes are also written to it (the unpacker's pipe); a failed
// attempt closes it, so it is still open afterwards only if it carried
// exactly the verified blob. No fsync: ImageStore::commit syncs the staging
// area's filesystem once before anything becomes visible.
Result<void> fetch_blob_from(Registry& reg, const Desc& d, const std::string& path, std::atomic<uint64_t>* progress,
                             UniqueFd* tee = nullptr) {
  std::string what = "blob sha256:" + short_hex(d.hex);
  UniqueFd none;
  UniqueFd& t = tee ? *tee : none;
  for (int attempt = 1;; ++attempt) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd) return sys_fail("create " + path);
    Response r;
    Sha256 hash;
    Sink s{&r, static_cast<size_t>(d.size), fd.get(), &hash, 0, 0, progress, t.get()};
    auto got = reg.get("blobs/sha256:" + d.hex, {}, s);
    auto undo_progress = [&] {
      if (progress && got && got->status == 200) progress->fetch_sub(s.written);
    };
    bool ok = got && !got->too_big && got->status == 200 && s.written == d.size;
    if (!ok || s.tee_broken) t.reset();
    if (!got) {
      if (transient(got.error()) && attempt < 3) continue;
      return fail(got.error().wrap("download " + what));
    }
    if (got->too_big)
      return fail(Error::invalid(what + " is larger than its manifest says (" + std::to_string(d.size) + " bytes)"));
    if (got->status != 200) return fail(reg.http_error(what, *got));
    if (s.written != d.size) {
      undo_progress();
      if (attempt < 3) continue;
      return fail(Error::invalid(what + " is truncated: got " + std::to_string(s.written) + " of " +
                                 std::to_string(d.size) + " bytes"));
    }
    std::string got_hex = hash.hex_final();
    if (got_hex != d.hex) {
      t.reset();
      return fail(Error::invalid(what + " does not match its digest: want sha256:" + d.hex + ", got sha256:" + got_hex));
    }
    // Start writing it back now, so the commit's sync finds little left to do.
    (void)::sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
    return {};
  }
}

// The endpoints of one pull: the one that served the manifest first, then the
// others in order (a mirror may lack a blob or serve a bad one).
struct Endpoints {
  std::vector<std::unique_ptr<Registry>> all;
  size_t primary = 0;
};

Result<void> fetch_blob(Endpoints& eps, const Desc& d, const std::string& path, std::atomic<uint64_t>* progress,
                        UniqueFd* tee = nullptr) {
  auto r = fetch_blob_from(*eps.all[eps.primary], d, path, progress, tee);
  if (r || r.error().kind() == ErrorKind::kSystem) return r;
  for (size_t i = 0; i < eps.all.size(); ++i) {
    if (i == eps.primary || !eps.all[i]->ready()) continue;
    LOG_DEBUG("pull: {}; trying {}", r.error().message(), eps.all[i]->is_mirror() ? eps.all[i]->label() : "the registry");
    if (fetch_blob_from(*eps.all[i], d, path, progress)) return {};
  }
  return r;
}

// Which layer a blob is to be unpacked as: its diff_id hex, or nullopt when
// it needs no unpacking (the layer is already in the store, or another task
// of this pull unpacks it). Known once the image config has arrived.
using UnpackDecision = std::function<Result<std::optional<std::string>>()>;

// Downloads a layer blob and unpacks it at the same time: the bytes go to the
// blob file and through a pipe to an unpacking thread, so the unpack overlaps
// the download instead of following it. The unpacker first waits for the
// decision (the config is fetched alongside the layers; meanwhile the pipe
// holds back the download). If the first download attempt fails (retried, or
// served by another endpoint), that unpack is thrown away and the verified
// file is unpacked afterwards. Returns the staged layer, or an empty one when
// the decision was not to unpack.
Result<StagedLayer> fetch_and_unpack(Endpoints& eps, const Desc& d, const std::string& blob_path,
                                     const std::string& work_dir, const UnpackDecision& decide,
                                     std::atomic<uint64_t>* progress) {
  std::string tag = "layer-" + d.hex;
  auto [rd, wr] = CUBBY_TRY(sys::make_pipe());
  (void)::fcntl(wr.get(), F_SETPIPE_SZ, 1 << 20);  // fewer wake-ups; the default may stay
  std::optional<Result<StagedLayer>> streamed;
  Result<std::optional<std::string>> decision = std::nullopt;
  std::thread unpacker([&, rd = std::move(rd)]() mutable {
    decision = decide();
    if (decision && *decision) streamed = stage_layer_fd(rd.get(), work_dir, tag, **decision);
    rd.reset();  // a writer blocked on a full pipe gets EPIPE and carries on without us
  });
  auto got = fetch_blob(eps, d, blob_path, progress, &wr);
  bool complete = wr.valid();
  wr.reset();
  unpacker.join();
  CUBBY_TRYV(got);
  CUBBY_TRYV(decision);
  if (!*decision) return StagedLayer{};
  Result<StagedLayer> u = fail(Error::internal("no unpack"));
  if (complete && streamed) {
    u = std::move(*streamed);
  } else {
    CUBBY_TRYV(remove_tree(work_dir + "/" + tag + ".layer"));
    u = stage_layer(blob_path, work_dir, tag, **decision);
  }
  if (!u) return fail(u.error().wrap("layer sha256:" + short_hex(d.hex)));
  return u;
}

// The image config blob, fetched and checked against the manifest: its
// diff_ids (one per layer, "sha256:HEX").
Result<std::vector<std::string>> fetch_config(Endpoints& eps, const Desc& cfg_desc, const std::string& cfg_path,
                                              const std::string& nref, size_t layer_count) {
  CUBBY_TRYV(fetch_blob(eps, cfg_desc, cfg_path, nullptr));
  json config = json::parse(CUBBY_TRY(read_file(cfg_path, kMaxConfigBytes)), nullptr, false);
  if (!config.is_object()) return fail(Error::invalid("image config of " + nref + " is not JSON"));
  std::vector<std::string> diff_ids;
  if (config.contains("rootfs") && config["rootfs"].is_object() && config["rootfs"].contains("diff_ids") &&
      config["rootfs"]["diff_ids"].is_array())
    for (const auto& d : config["rootfs"]["diff_ids"])
      if (d.is_string()) diff_ids.push_back(d.get<std::string>());
  if (diff_ids.size() != layer_count)
    return fail(Error::invalid("image " + nref + ": config lists " + std::to_string(diff_ids.size()) +
                               " layers, manifest " + std::to_string(layer_count)));
  for (const auto& d : diff_ids)
    if (!d.starts_with("sha256:") || !is_sha256_hex(d.substr(7)))
      return fail(Error::invalid("image " + nref + ": bad diff_id \"" + d + "\""));
  return diff_ids;
}

std::string human(uint64_t n) {
  char buf[32];
  if (n >= (1u << 20)) std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(n) / 1e3);
  return buf;
}

Result<ImageInfo> pull_once(ImageStore& store, const std::string& nref, const RefParts& rp, const PullOptions& o,
                            const RegistryConfig& cfg) {
  Platform want = o.platform.empty() ? host_platform() : CUBBY_TRY(parse_platform(o.platform));
  Endpoints eps;
  eps.all = endpoints_for(rp, cfg, o.home);
  std::string reference = rp.digest.empty() ? rp.tag : rp.digest;
  std::string mirror_errors;
  Fetched m;
  for (size_t i = 0;; ++i) {
    auto got = resolve_manifest(*eps.all[i], reference, nref, want);
    if (got) {
      m = std::move(*got);
      eps.primary = i;
      break;
    }
    if (!eps.all[i]->is_mirror()) {
      if (mirror_errors.empty()) return fail(got.error());
      return fail(Error(got.error().kind(), got.error().message() + " (mirrors tried first: " + mirror_errors + ")"));
    }
    LOG_DEBUG("pull {}: {}: {}", nref, eps.all[i]->label(), got.error().message());
    mirror_errors += (mirror_errors.empty() ? "" : "; ") + got.error().message();
  }
  if (m.media_type != kOciManifest && m.media_type != kDockerManifest)
    return fail(Error::invalid("unsupported manifest type \"" + m.media_type + "\" for " + nref));
  json manifest = json::parse(m.bytes);
  if (!manifest.contains("config") || !manifest.contains("layers") || !manifest["layers"].is_array())
    return fail(Error::invalid("malformed manifest for " + nref));
  Desc cfg_desc = CUBBY_TRY(descriptor(manifest["config"], "config"));
  if (cfg_desc.size > kMaxConfigBytes) return fail(Error::invalid("image config of " + nref + " is too large"));
  std::vector<Desc> layers;
  for (const auto& l : manifest["layers"]) {
    Desc d = CUBBY_TRY(descriptor(l, "layer"));
    if (d.media_type.find("foreign") != std::string::npos || d.media_type.find("nondistributable") != std::string::npos)
      return fail(Error::invalid("image " + nref + " has a foreign layer (" + d.media_type + "), which cubby does not fetch"));
    if (d.size > kMaxLayerBytes) return fail(Error::invalid("layer sha256:" + short_hex(d.hex) + " is too large"));
    layers.push_back(d);
  }

  StagingArea area = CUBBY_TRY(store.stage("pull"));
  StagedImage staged;
  staged.ref = nref;
  staged.manifest_media_type = m.media_type;
  staged.manifest_bytes = m.bytes;

  // The config is fetched alongside the layers: its diff_ids are needed only
  // to decide which layers to unpack (waited for by each unpacker) and to
  // check them, so no round trip is spent on it before the layers start.
  std::string cfg_path = area.dir() + "/" + cfg_desc.hex;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<std::vector<std::string>>> diff_ids;  // set once the config is in
  std::set<std::string> claimed_layers;                       // diff_ids some task unpacks
  std::thread config_fetcher([&] {
    auto r = fetch_config(eps, cfg_desc, cfg_path, nref, layers.size());
    std::lock_guard<std::mutex> l(mu);
    diff_ids = std::move(r);
    cv.notify_all();
  });
  struct JoinConfig {
    std::thread& t;
    ~JoinConfig() { t.join(); }
  } join_config{config_fetcher};
  auto decide = [&](size_t layer_index) -> UnpackDecision {
    return [&, layer_index]() -> Result<std::optional<std::string>> {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return diff_ids.has_value(); });
      if (!*diff_ids) return fail(diff_ids->error());
      std::string hex = (**diff_ids)[layer_index].substr(7);
      if (store.has_layer(hex) || !claimed_layers.insert(hex).second) return std::nullopt;
      return hex;
    };
  };

  // Layers, in parallel: one task per distinct blob.
  struct Task {
    Desc d;
    size_t layer_index;  // its first place in the manifest (and the config's diff_ids)
    bool download;
    std::string blob_path;
    StagedLayer unpacked;  // dir empty: not unpacked by this pull
  };
  std::vector<Task> tasks;
  std::set<std::string> seen_blobs;
  uint64_t total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!seen_blobs.insert(layers[i].hex).second) continue;
    Task t{layers[i], i, !store.has_blob(layers[i].hex), "", {}};
    t.blob_path = t.download ? area.dir() + "/" + t.d.hex : store.blob_path(t.d.hex);
    if (t.download) total += t.d.size;
    tasks.push_back(std::move(t));
  }
  UniqueFd area_fd(::open(area.dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!area_fd) return sys_fail("open " + area.dir());
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  size_t finished = 0;
  std::optional<Error> first_error;
  auto worker = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= tasks.size()) break;
      {
        std::lock_guard<std::mutex> l(mu);
        if (first_error) break;
      }
      Task& t = tasks[i];
      Result<StagedLayer> r = StagedLayer{};
      if (t.download) {
        r = fetch_and_unpack(eps, t.d, t.blob_path, area.dir(), decide(t.layer_index), &done_bytes);
      } else if (auto hex = decide(t.layer_index)(); !hex) {
        r = fail(hex.error());
      } else if (*hex) {
        r = stage_layer(t.blob_path, area.dir(), "layer-" + t.d.hex, **hex);
        if (!r) r = fail(r.error().wrap("layer sha256:" + short_hex(t.d.hex)));
      }
      // Sync what this task wrote now, while other layers still download:
      // the commit's own syncfs then finds (almost) nothing left to write.
      if (r && (t.download || !r->dir.empty())) (void)::syncfs(area_fd.get());
      std::lock_guard<std::mutex> l(mu);
      if (r) t.unpacked = *r;
      else if (!first_error) first_error = r.error();
      cv.notify_all();
    }
    std::lock_guard<std::mutex> l(mu);
    ++finished;
    cv.notify_all();
  };
  size_t nthreads = std::min<size_t>(std::max(1, o.parallel), std::max<size_t>(1, tasks.size()));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < nthreads; ++i) threads.emplace_back(worker);
  {
    std::unique_lock<std::mutex> l(mu);
    while (finished < nthreads) {
      cv.wait_for(l, std::chrono::milliseconds(200));
      if (o.progress && total > 0) {
        std::string line = "\r" + nref + ": " + human(done_bytes.load()) + " / " + human(total) + "   ";
        (void)!::write(2, line.data(), line.size());
      }
      if (total > 0) progress_line(o.progress_fd, done_bytes.load(), total);
    }
  }
  for (auto& t : threads) t.join();
  if (total > 0) progress_line(o.progress_fd, done_bytes.load(), total);  // the last word: where it ended
  if (o.progress && total > 0) (void)!::write(2, "\n", 1);
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return diff_ids.has_value(); });
    if (!*diff_ids) return fail(diff_ids->error());  // the config's error is the one that explains
  }
  if (first_error) return fail(*first_error);
  staged.blobs[cfg_desc.hex] = cfg_path;
  for (auto& t : tasks) {
    if (t.download) staged.blobs[t.d.hex] = t.blob_path;
    if (!t.unpacked.dir.empty()) staged.layers[t.unpacked.diff_hex] = t.unpacked.dir;
  }
  auto rr = store.commit(area, staged);
  return rr;
}

}  // namespace

Result<Platform> parse_platform(const std::string& s) {
  Platform p;
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = s.find('/', start);
    parts.push_back(s.substr(start, slash == std::string::npos ? std::string::npos : slash - start));
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (parts.size() < 2 || parts.size() > 3)
    return fail(Error::invalid("invalid platform \"" + s + "\" (want os/arch[/variant], e.g. linux/arm64)"));
  for (const auto& x : parts)
    if (x.empty() || x.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
      return fail(Error::invalid("invalid platform \"" + s + "\" (want os/arch[/variant], e.g. linux/arm64)"));
  p.os = parts[0];
  p.arch = parts[1] == "x86_64" ? "amd64" : parts[1] == "aarch64" ? "arm64" : parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

Result<ImageInfo> pull(ImageStore& store, const std::string& ref, const PullOptions& o) {
  std::string nref = CUBBY_TRY(normalize_ref(ref));
  RefParts rp = CUBBY_TRY(parse_ref(nref));
  RegistryConfig cfg = CUBBY_TRY(RegistryConfig::load(o.home));
  if (!o.platform.empty()) CUBBY_TRYV(parse_platform(o.platform));
  auto r = pull_once(store, nref, rp, o, cfg);
  // Content removed by a concurrent rmi between our check and our commit.
  if (!r && r.error().kind() == ErrorKind::kConflict) r = pull_once(store, nref, rp, o, cfg);
  return r;
}

Result<void> check_login(const std::string& home, const std::string& domain, const RegistryAuth& auth) {
  RegistryConfig cfg = CUBBY_TRY(RegistryConfig::load(home));
  Registry reg(EndpointSpec{domain, "", "", ""}, cfg, home, auth);
  CUBBY_TRYV(reg.ping());
  const Challenge& c = reg.challenge();
  if (c.scheme == "bearer") return reg.authenticate();
  if (c.scheme == "basic") {
    Response r;
    Sink s{&r, 1u << 20};
    Request req{reg.base() + "/v2/", {"Authorization: Basic " + base64_encode(auth.username + ":" + auth.password)}, "", ""};
    CUBBY_TRYV(reg.raw_get(req, s));
    if (r.status == 200) return {};
    if (r.status == 401) return fail(Error::invalid("unauthorized: incorrect username or password for " + domain));
    return fail(Error(ErrorKind::kProtocol, "registry " + domain + " answered " + status_text(r.status) + " to GET /v2/"));
  }
  return {};  // the registry needs no authentication
}

}  // namespace cubby::image
