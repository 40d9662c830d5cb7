#include "server/connection.h"

#include <limits>

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/beast/websocket.hpp>

#include "base/log.h"
#include "server/ws_attach.h"
#include "server/routes.h"

namespace cubby::server {

namespace {

using namespace std::chrono_literals;
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr auto kIdleTimeout = 120s;  // no request on a kept-alive connection
constexpr auto kIoTimeout = 30s;     // no progress on a read or write under way

std::string new_request_id() {
  static uint64_t prefix = [] {
    uint64_t v = 0;
    (void)!::getrandom(&v, sizeof v, 0);
    return v;
  }();
  static uint64_t counter = 0;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%llu", static_cast<unsigned>(prefix), static_cast<unsigned long long>(++counter));
  return buf;
}

void parse_target(std::string_view target, Request& req) {
  auto q = target.find('?');
  req.raw_path = std::string(target.substr(0, q));
  req.path = pct_decode(req.raw_path, false);
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view kv = rest.substr(0, amp);
    auto eq = kv.find('=');
    std::string k = pct_decode(kv.substr(0, eq), true);
    std::string v = eq == std::string_view::npos ? "" : pct_decode(kv.substr(eq + 1), true);
    if (!k.empty()) req.query[k] = v;
    if (amp == std::string_view::npos) break;
    rest = rest.substr(amp + 1);
  }
}

bool token_ok(const http::request_header<>& h, const std::string& token_sha) {
  auto it = h.find(http::field::authorization);
  if (it == h.end()) return false;
  std::string_view v(it->value().data(), it->value().size());
  if (v.substr(0, 7) != "Bearer ") return false;
  // Hashes of equal length, compared in constant time: neither the token's
  // bytes nor its length leak through timing.
  std::string got = sha256(v.substr(7));
  return CRYPTO_memcmp(got.data(), token_sha.data(), got.size()) == 0;
}

template <class Stream>
auto& lowest(Stream& s) {
  return beast::get_lowest_layer(s);
}

// Counts the connection for --idle-exit while it lives.
struct BusyGuard {
  Server& s;
  explicit BusyGuard(Server& srv) : s(srv) { s.busy_begin(); }
  ~BusyGuard() { s.busy_end(); }
};

template <class Stream>
asio::awaitable<bool> write_error(Stream& s, const ApiError& e, const std::string& rid, unsigned version, bool keep) {
  http::response<http::string_body> res{e.status, version};
  res.set(http::field::content_type, "application/json");
  res.set("X-Request-Id", rid);
  if (e.status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
  res.body() = envelope(e, rid);
  res.keep_alive(keep);
  res.prepare_payload();
  lowest(s).expires_after(kIoTimeout);
  beast::error_code ec;
  co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && keep;
}

// Writes a streamed reply: see StreamReply.
template <class Stream>
asio::awaitable<bool> write_stream(Stream& s, Reply& rep, const std::string& rid, unsigned version, bool keep) {
  asio::posix::stream_descriptor pipe(co_await asio::this_coro::executor, rep.stream->fd.release());
  std::vector<char> buf(64 * 1024);
  beast::error_code ec;
  size_t n = 0;
  if (!rep.stream->eager) {
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (auto e = rep.stream->outcome->get()) co_return co_await write_error(s, *e, rid, version, keep);
    }
  }
  http::response<http::empty_body> res{rep.status, version};
  res.set(http::field::content_type, rep.content_type);
  res.set("X-Request-Id", rid);
  res.keep_alive(keep);
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  lowest(s).expires_after(kIoTimeout);
  co_await http::async_write_header(s, sr, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  if (rep.stream->eager) {
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) n = 0;
  }
  while (n > 0) {
    lowest(s).expires_after(kIoTimeout);
    co_await asio::async_write(s, http::make_chunk(asio::buffer(buf.data(), n)), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;  // the client left: closing the pipe ends the producer (EPIPE)
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) n = 0;
  }
  if (rep.stream->outcome->get()) co_return false;  // cut: no last chunk
  lowest(s).expires_after(kIoTimeout);
  co_await asio::async_write(s, http::make_chunk_last(), asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && keep;
}

template <class Stream>
asio::awaitable<Reply> dispatch(Server& srv, const Route* route, Request& req) {
  try {
    co_return co_await route->handler(srv, req);
  } catch (const ApiError& e) {
    throw;
  } catch (const nlohmann::json::exception& e) {
    throw bad_request(std::string("bad JSON value: ") + e.what());
  } catch (const std::exception& e) {
    throw internal_error(e.what());
  }
}

template <class Stream>
asio::awaitable<void> serve(Server& srv, Stream& s, const std::string& token_sha) {
  BusyGuard guard(srv);
  beast::flat_buffer buf;
  for (;;) {
    http::request_parser<http::string_body> p;
    p.header_limit(kHeaderLimit);
    // No limit while the header is read: beast refuses a Content-Length over
    // the limit as soon as it sees the header, before the route (and so its
    // own limit) is known. The route's limit is applied below. (Not
    // boost::none: Beast 1.74 compares the length with the optional, and
    // every length is "greater" than none.)
    p.body_limit(std::numeric_limits<std::uint64_t>::max());
    lowest(s).expires_after(kIdleTimeout);
    beast::error_code ec;
    co_await http::async_read_header(s, buf, p, asio::redirect_error(asio::use_awaitable, ec));
    std::string rid = new_request_id();
    if (ec) {
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) co_return;
      if (ec == beast::error::timeout) {
        // A client that sent part of a request and stalled gets a 408; an
        // idle keep-alive connection is just closed.
        if (buf.size() > 0 || p.got_some()) {
          ApiError err1{http::status::request_timeout, "timeout", "the request took too long to arrive"};
          co_await write_error(s, err1, rid, 11, false);
        }
        co_return;
      }
      ApiError err2 = ec == http::error::header_limit || ec == http::error::body_limit
                          ? ApiError{http::status::payload_too_large, "too_large", ec == http::error::body_limit ? "the body is too large for this route" : "the request headers are too large"}
                          : bad_request("malformed HTTP request: " + ec.message());
      co_await write_error(s, err2, rid, 11, false);
      co_return;
    }
    auto& h = p.get();
    unsigned version = h.version();
    bool keep = h.keep_alive();
    Request req;
    req.method = h.method();
    req.request_id = rid;
    const Route* route = nullptr;
    std::optional<ApiError> err;
    try {
      parse_target(std::string_view(h.target().data(), h.target().size()), req);
      if (!token_sha.empty() && !token_ok(h, token_sha)) throw ApiError{http::status::unauthorized, "unauthorized", "a valid bearer token is required"};
      std::string allowed;
      route = match_route(req.method, req.raw_path, req.params, &allowed);
      if (!route) {
        if (!allowed.empty()) throw not_found("no route " + std::string(h.method_string()) + " " + req.path.substr(0, 256) + " (allowed: " + allowed + ")");
        throw not_found("no route " + std::string(h.method_string()) + " " + req.path.substr(0, 256));
      }
    } catch (const ApiError& e) {
      err = e;
    }
    bool has_body = p.content_length().value_or(0) > 0 || p.chunked();
    if (err) {
      // The body (if any) is not read: the connection cannot be reused.
      if (!co_await write_error(s, *err, rid, version, keep && !has_body)) co_return;
      continue;
    }
    if (p.content_length() && *p.content_length() > route->body_limit) {
      ApiError err4{http::status::payload_too_large, "too_large", "the body is larger than " + std::to_string(route->body_limit) + " bytes"};
      co_await write_error(s, err4, rid, version, false);
      co_return;
    }
    p.body_limit(route->body_limit);
    if (has_body && beast::iequals(h[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      lowest(s).expires_after(kIoTimeout);
      co_await http::async_write(s, cont, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    // Read in pieces, each with its own deadline: a slow but moving upload
    // is fine, a stalled one is a 408.
    while (!p.is_done()) {
      lowest(s).expires_after(kIoTimeout);
      co_await http::async_read_some(s, buf, p, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == beast::error::timeout) {
        ApiError err5{http::status::request_timeout, "timeout", "the request body took too long to arrive"};
        co_await write_error(s, err5, rid, version, false);
        co_return;
      }
      if (ec == http::error::body_limit) {
        ApiError err6{http::status::payload_too_large, "too_large", "the body is larger than " + std::to_string(route->body_limit) + " bytes"};
        co_await write_error(s, err6, rid, version, false);
        co_return;
      }
      if (ec) {
        ApiError err7 = bad_request("malformed HTTP body: " + ec.message());
        co_await write_error(s, err7, rid, version, false);
        co_return;
      }
    }
    lowest(s).expires_never();
    req.body = std::move(p.get().body());
    if (route->websocket && !beast::websocket::is_upgrade(p.get())) {
      ApiError err8 = bad_request("this route is a WebSocket (send Upgrade: websocket)");
      if (!co_await write_error(s, err8, rid, version, keep)) co_return;
      continue;
    }
    Reply rep;
    std::optional<ApiError> failed;
    try {
      srv.busy_begin();
      struct End { Server& s; ~End() { s.busy_end(); } } end{srv};
      rep = co_await dispatch<Stream>(srv, route, req);
    } catch (const ApiError& e) {
      failed = e;
    }
    if (failed) {
      if (!co_await write_error(s, *failed, rid, version, keep)) co_return;
      continue;
    }
    if (rep.attach) {
      auto upgrade = p.release();
      co_await attach_websocket(srv, s, std::move(upgrade), rep, rid);
      co_return;
    }
    if (rep.stream) {
      if (!co_await write_stream(s, rep, rid, version, keep)) co_return;
      continue;
    }
    http::response<http::string_body> res{rep.status, version};
    if (!rep.content_type.empty()) res.set(http::field::content_type, rep.content_type);
    res.set("X-Request-Id", rid);
    res.keep_alive(keep);
    res.body() = std::move(rep.body);
    res.prepare_payload();
    lowest(s).expires_after(kIoTimeout);
    co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec || !keep) co_return;
  }
}

template <class Stream>
void shutdown_stream(Stream& s) {
  beast::error_code ec;
  lowest(s).socket().shutdown(asio::socket_base::shutdown_both, ec);
}

}  // namespace

std::string sha256(std::string_view s) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

asio::awaitable<void> serve_connection(Server& srv, UnixStream s) {
  const std::string no_token;
  co_await serve(srv, s, no_token);
  shutdown_stream(s);
}

asio::awaitable<void> serve_connection(Server& srv, TcpStream s, std::string token_sha256) {
  co_await serve(srv, s, token_sha256);
  shutdown_stream(s);
}

asio::awaitable<void> serve_connection(Server& srv, TlsStream s, std::string token_sha256) {
  BusyGuard guard(srv);
  beast::error_code ec;
  lowest(s).expires_after(kIoTimeout);
  co_await s.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  co_await serve(srv, s, token_sha256);
  lowest(s).expires_after(std::chrono::seconds(5));
  co_await s.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace cubby::server
