#include "server/api.h"

#include <openssl/evp.h>

#include <charconv>
#include <chrono>
#include <ctime>

namespace cubby::server {

ApiError bad_request(std::string msg) { return {http::status::bad_request, "bad_request", std::move(msg)}; }
ApiError not_found(std::string msg) { return {http::status::not_found, "not_found", std::move(msg)}; }
ApiError conflict(std::string msg) { return {http::status::conflict, "conflict", std::move(msg)}; }
ApiError too_many(std::string msg) { return {http::status::too_many_requests, "too_many_requests", std::move(msg)}; }
ApiError internal_error(std::string msg) { return {http::status::internal_server_error, "internal", std::move(msg)}; }

ApiError api_error(const Error& e) {
  switch (e.kind()) {
    case ErrorKind::kInvalid: return bad_request(e.message());
    case ErrorKind::kNotFound: return not_found(e.message());
    case ErrorKind::kConflict: return conflict(e.message());
    case ErrorKind::kTimeout: return {http::status::request_timeout, "timeout", e.message()};
    default: return internal_error(e.message());
  }
}

std::optional<std::string> Request::q(const std::string& name) const {
  auto it = query.find(name);
  if (it == query.end()) return std::nullopt;
  return it->second;
}

bool Request::q_bool(const std::string& name, bool dflt) const {
  auto v = q(name);
  if (!v) return dflt;
  if (*v == "true" || *v == "1") return true;
  if (*v == "false" || *v == "0") return false;
  throw bad_request("query parameter " + name + ": want true or false, got \"" + v->substr(0, 32) + "\"");
}

int64_t Request::q_int(const std::string& name, int64_t dflt, int64_t lo, int64_t hi) const {
  auto v = q(name);
  if (!v) return dflt;
  int64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size() || n < lo || n > hi)
    throw bad_request("query parameter " + name + ": want a whole number from " + std::to_string(lo) + " to " +
                      std::to_string(hi) + ", got \"" + v->substr(0, 32) + "\"");
  return n;
}

json Request::json_body() const {
  if (body.empty()) throw bad_request("the request needs a JSON object body");
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw bad_request("the body is not valid JSON");
  if (!j.is_object()) throw bad_request("the body must be a JSON object");
  return j;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string pct_decode(std::string_view s, bool plus_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      int a = i + 2 < s.size() ? hexval(s[i + 1]) : -1, b = i + 2 < s.size() ? hexval(s[i + 2]) : -1;
      if (a < 0 || b < 0) throw bad_request("bad percent-encoding in the request target");
      out.push_back(static_cast<char>(a * 16 + b));
      i += 2;
    } else if (plus_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}


std::string now_rfc3339() {
  auto t = std::chrono::system_clock::now();
  std::time_t s = std::chrono::system_clock::to_time_t(t);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
  char buf[64];
  std::tm tm{};
  gmtime_r(&s, &tm);
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Reply json_reply(http::status s, const json& j) {
  Reply r;
  r.status = s;
  r.body = dump(j);
  return r;
}

Reply no_content() {
  Reply r;
  r.status = http::status::no_content;
  r.content_type.clear();
  return r;
}

std::string envelope(const ApiError& e, const std::string& request_id) {
  return dump({{"code", e.code}, {"message", e.message}, {"request_id", request_id}});
}

namespace {
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kString: return "a string";
    case Kind::kInt: return "an integer";
    case Kind::kNumber: return "a number";
    case Kind::kBool: return "true or false";
    case Kind::kStrings: return "an array of strings";
    case Kind::kObject: return "an object";
  }
  return "?";
}
bool is_kind(const json& v, Kind k) {
  switch (k) {
    case Kind::kString: return v.is_string();
    case Kind::kInt: return v.is_number_integer();
    case Kind::kNumber: return v.is_number();
    case Kind::kBool: return v.is_boolean();
    case Kind::kObject: return v.is_object();
    case Kind::kStrings:
      return v.is_array() && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_string(); });
  }
  return false;
}
}  // namespace

void check_fields(const json& body, std::initializer_list<Field> fields) {
  for (auto it = body.begin(); it != body.end(); ++it) {
    auto f = std::find_if(fields.begin(), fields.end(), [&](const Field& x) { return it.key() == x.name; });
    if (f == fields.end()) throw bad_request("unknown field \"" + it.key().substr(0, 64) + "\"");
    // null stands for "not given" (as the SDK sends optional fields).
    if (!it.value().is_null() && !is_kind(it.value(), f->kind))
      throw bad_request("field \"" + it.key() + "\" must be " + kind_name(f->kind));
  }
  for (const auto& f : fields)
    if (f.required && (!body.contains(f.name) || body[f.name].is_null()))
      throw bad_request("missing field \"" + std::string(f.name) + "\"");
}

std::vector<std::string> strings(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return {};
  return it->get<std::vector<std::string>>();
}

std::string string_or(const json& body, const char* name, std::string dflt) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return dflt;
  return it->get<std::string>();
}

std::string base64_encode(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  std::string out(3 * in.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = in.size() >= 1 && in.back() == '=' ? (in.size() >= 2 && in[in.size() - 2] == '=' ? 2 : 1) : 0;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

}  // namespace cubby::server
