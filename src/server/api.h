// What every route handler uses: the request as parsed, the reply it gives,
// the error envelope and the strict JSON body checks (docs/openapi.json).
// Handlers throw ApiError; the connection turns it into the envelope
// {"code","message","request_id"} with the status the code maps to.
#pragma once

#include <utility>  // before Boost: asio 1.74's awaitable.hpp uses std::exchange without it
#include <boost/beast/http.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "base/unique_fd.h"

namespace cubby::server {

namespace http = boost::beast::http;
using nlohmann::json;

struct ApiError {
  http::status status;
  std::string code, message;
};

ApiError bad_request(std::string msg);
ApiError not_found(std::string msg);
ApiError conflict(std::string msg);
ApiError too_many(std::string msg);
ApiError internal_error(std::string msg);
// The fixed mapping of Runtime's ErrorKind (api.md).
ApiError api_error(const Error& e);

template <typename T>
T unwrap(Result<T> r) {
  if (!r) throw api_error(r.error());
  return std::move(*r);
}
inline void unwrap(Result<void> r) {
  if (!r) throw api_error(r.error());
}

struct Request {
  http::verb method;
  std::string path;      // without the query, percent-decoded (for messages)
  std::string raw_path;  // as sent (routes match on its segments)
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> params;  // {ref}, {id} of the route
  std::string body;
  // An upload route's body instead (Route::spool): an unlinked file at
  // offset 0, body_size bytes.
  UniqueFd body_file;
  uint64_t body_size = 0;
  std::string request_id;

  const std::string& param(const std::string& name) const { return params.at(name); }
  std::optional<std::string> q(const std::string& name) const;
  bool q_bool(const std::string& name, bool dflt) const;
  int64_t q_int(const std::string& name, int64_t dflt, int64_t lo, int64_t hi) const;
  // The body as a JSON object (400 when it is not one).
  json json_body() const;
};

// The outcome of blocking work behind a streamed reply: set by the worker
// before it closes its end of the pipe, read on the network thread after EOF.
struct Outcome {
  std::mutex mu;
  std::optional<ApiError> error;
  void set(ApiError e) {
    std::lock_guard lk(mu);
    if (!error) error = std::move(e);
  }
  std::optional<ApiError> get() {
    std::lock_guard lk(mu);
    return error;
  }
};

// A reply streamed from a pipe (chunked) until EOF. If the producer fails
// before the first byte, the client gets the error envelope instead; after
// it, the connection is cut without the last chunk, so the client sees a
// truncated stream, never a complete-looking one.
struct StreamReply {
  UniqueFd fd;
  std::shared_ptr<Outcome> outcome;
  // Send the headers at once, not at the first byte (streams that may stay
  // quiet for long: events, logs --follow, stats).
  bool eager = false;
};

class ExecSession;

struct Reply {
  http::status status = http::status::ok;
  std::string content_type = "application/json";
  std::string body;
  std::optional<StreamReply> stream;
  // A WebSocket upgrade onto this exec (the attach route).
  std::shared_ptr<ExecSession> attach;
  uint64_t offsets[2] = {0, 0};
};

Reply json_reply(http::status s, const json& j);
Reply no_content();

// The envelope's body.
std::string envelope(const ApiError& e, const std::string& request_id);

// Strict checks of a JSON request body: unknown fields and wrong types are a
// 400 naming the field.
enum class Kind { kString, kInt, kNumber, kBool, kStrings, kObject };
struct Field {
  const char* name;
  Kind kind;
  bool required = false;
};
void check_fields(const json& body, std::initializer_list<Field> fields);
std::vector<std::string> strings(const json& body, const char* name);
std::string string_or(const json& body, const char* name, std::string dflt = "");

std::string base64_encode(std::string_view in);
std::optional<std::string> base64_decode(std::string_view in);
// JSON text with invalid UTF-8 in strings replaced by U+FFFD (the "utf-8"
// output encoding), as one line.
std::string dump(const json& j);
// The current UTC time, RFC 3339 with milliseconds.
std::string now_rfc3339();
// %XX decoding (and "+" as a space in query strings); 400 on a bad escape.
std::string pct_decode(std::string_view s, bool plus_space);

}  // namespace cubby::server
