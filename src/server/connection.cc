#include "server/connection.h"

#include <fcntl.h>
#include <unistd.h>

#include <limits>

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/websocket.hpp>

#include "base/log.h"
#include "base/sys.h"
#include "server/ws_attach.h"
#include "server/routes.h"

namespace cubby::server {

namespace {

using namespace std::chrono_literals;
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr auto kIdleTimeout = 120s;  // no request on a kept-alive connection
// (Options::io_timeout: no progress on a read or write under way.)

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

// A read with a deadline that leaves the connection open when it passes,
// so the client can still be told (408). Beast's own stream timeout closes
// the socket on expiry, which would make a 408 impossible to send; here a
// timer cancels the read instead. One network thread: the timer's handler
// and this coroutine never run at once, and `state` outlives both.
// `read(token)` starts the read with the completion token it is given.
template <class Stream, class Read>
asio::awaitable<beast::error_code> read_by(Stream& s, std::chrono::steady_clock::duration limit, Read read) {
  struct State {
    bool done = false, expired = false;
  };
  auto state = std::make_shared<State>();
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(limit);
  timer.async_wait([state, &s](beast::error_code e) {
    if (e || state->done) return;
    state->expired = true;
    beast::error_code ignored;
    lowest(s).socket().cancel(ignored);
  });
  lowest(s).expires_never();
  beast::error_code ec;
  co_await read(asio::redirect_error(asio::use_awaitable, ec));
  state->done = true;
  timer.cancel();
  if (state->expired) ec = beast::error::timeout;
  co_return ec;
}

// Counts the connection for --idle-exit while it lives.
struct BusyGuard {
  Server& s;
  explicit BusyGuard(Server& srv) : s(srv) { s.busy_begin(); }
  ~BusyGuard() { s.busy_end(); }
};

template <class Stream>
asio::awaitable<bool> write_error(Stream& s, std::chrono::seconds io, const ApiError& e, const std::string& rid, unsigned version, bool keep) {
  http::response<http::string_body> res{e.status, version};
  res.set(http::field::content_type, "application/json");
  res.set("X-Request-Id", rid);
  if (e.status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
  res.body() = envelope(e, rid);
  res.keep_alive(keep);
  res.prepare_payload();
  lowest(s).expires_after(io);
  beast::error_code ec;
  co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec && keep;
}

// Writes a streamed reply: see StreamReply.
template <class Stream>
asio::awaitable<bool> write_stream(Stream& s, std::chrono::seconds io, Reply& rep, const std::string& rid, unsigned version, bool keep) {
  asio::posix::stream_descriptor pipe(co_await asio::this_coro::executor, rep.stream->fd.release());
  std::vector<char> buf(64 * 1024);
  beast::error_code ec;
  size_t n = 0;
  if (!rep.stream->eager) {
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (auto e = rep.stream->outcome->get()) co_return co_await write_error(s, io, *e, rid, version, keep);
    }
  }
  http::response<http::empty_body> res{rep.status, version};
  res.set(http::field::content_type, rep.content_type);
  res.set("X-Request-Id", rid);
  res.keep_alive(keep);
  res.chunked(true);
  http::response_serializer<http::empty_body> sr{res};
  lowest(s).expires_after(io);
  co_await http::async_write_header(s, sr, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return false;
  if (rep.stream->eager) {
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) n = 0;
  }
  while (n > 0) {
    lowest(s).expires_after(io);
    co_await asio::async_write(s, http::make_chunk(asio::buffer(buf.data(), n)), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return false;  // the client left: closing the pipe ends the producer (EPIPE)
    n = co_await pipe.async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) n = 0;
  }
  if (rep.stream->outcome->get()) co_return false;  // cut: no last chunk
  lowest(s).expires_after(io);
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

// Reads an upload's body into Request::body_file as it arrives, in pieces,
// so the server's memory does not grow with it; each piece has its own
// deadline (a slow but moving upload is fine, a stalled one is a 408).
// The parser changes to a buffer body first (Beast allows that between the
// header and the first body byte).
template <class Stream>
asio::awaitable<std::optional<ApiError>> spool_body(Stream& s, std::chrono::seconds io, beast::flat_buffer& buf,
                                                    http::request_parser<http::string_body>& header,
                                                    const Route& route, const std::string& dir, Request& req) {
  auto fd = spool_file(dir);
  if (!fd) co_return api_error(fd.error());
  req.body_file = std::move(*fd);
  http::request_parser<http::buffer_body> p{std::move(header)};
  p.body_limit(route.body_limit);
  std::vector<char> chunk(256 * 1024);
  while (!p.is_done()) {
    p.get().body().data = chunk.data();
    p.get().body().size = chunk.size();
    beast::error_code ec = co_await read_by(s, io, [&](auto token) { return http::async_read_some(s, buf, p, token); });
    if (ec == http::error::need_buffer) ec = {};
    if (ec == beast::error::timeout)
      co_return ApiError{http::status::request_timeout, "timeout", "the request body took too long to arrive"};
    if (ec == http::error::body_limit)
      co_return ApiError{http::status::payload_too_large, "too_large",
                         "the body is larger than " + std::to_string(route.body_limit) + " bytes"};
    if (ec) co_return bad_request("malformed HTTP body: " + ec.message());
    size_t n = chunk.size() - p.get().body().size;
    if (n == 0) continue;
    if (auto w = sys::write_all(req.body_file.get(), chunk.data(), n); !w)
      co_return internal_error("spooling the upload: " + w.error().message());
    req.body_size += n;
  }
  if (::lseek(req.body_file.get(), 0, SEEK_SET) < 0) co_return internal_error("spooling the upload: lseek");
  co_return std::nullopt;
}

template <class Stream>
asio::awaitable<void> serve(Server& srv, Stream& s, const std::string& token_sha) {
  BusyGuard guard(srv);
  const std::chrono::seconds io(srv.options().io_timeout);
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
    beast::error_code ec = co_await read_by(s, kIdleTimeout, [&](auto token) { return http::async_read_header(s, buf, p, token); });
    std::string rid = new_request_id();
    if (ec) {
      if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset) co_return;
      if (ec == beast::error::timeout) {
        // A client that sent part of a request and stalled gets a 408; an
        // idle keep-alive connection is just closed.
        if (buf.size() > 0 || p.got_some()) {
          ApiError err1{http::status::request_timeout, "timeout", "the request took too long to arrive"};
          co_await write_error(s, io, err1, rid, 11, false);
        }
        co_return;
      }
      ApiError err2 = ec == http::error::header_limit || ec == http::error::body_limit
                          ? ApiError{http::status::payload_too_large, "too_large", ec == http::error::body_limit ? "the body is too large for this route" : "the request headers are too large"}
                          : bad_request("malformed HTTP request: " + ec.message());
      co_await write_error(s, io, err2, rid, 11, false);
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
      if (!co_await write_error(s, io, *err, rid, version, keep && !has_body)) co_return;
      continue;
    }
    if (p.content_length() && *p.content_length() > route->body_limit) {
      ApiError err4{http::status::payload_too_large, "too_large", "the body is larger than " + std::to_string(route->body_limit) + " bytes"};
      co_await write_error(s, io, err4, rid, version, false);
      co_return;
    }
    p.body_limit(route->body_limit);
    if (has_body && beast::iequals(h[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, version};
      lowest(s).expires_after(io);
      co_await http::async_write(s, cont, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
    }
    if (route->spool) {
      if (auto e = co_await spool_body(s, io, buf, p, *route, srv.options().home, req)) {
        co_await write_error(s, io, *e, rid, version, false);
        co_return;
      }
    }
    // Read in pieces, each with its own deadline: a slow but moving upload
    // is fine, a stalled one is a 408.
    while (!route->spool && !p.is_done()) {
      ec = co_await read_by(s, io, [&](auto token) { return http::async_read_some(s, buf, p, token); });
      if (ec == beast::error::timeout) {
        ApiError err5{http::status::request_timeout, "timeout", "the request body took too long to arrive"};
        co_await write_error(s, io, err5, rid, version, false);
        co_return;
      }
      if (ec == http::error::body_limit) {
        ApiError err6{http::status::payload_too_large, "too_large", "the body is larger than " + std::to_string(route->body_limit) + " bytes"};
        co_await write_error(s, io, err6, rid, version, false);
        co_return;
      }
      if (ec) {
        ApiError err7 = bad_request("malformed HTTP body: " + ec.message());
        co_await write_error(s, io, err7, rid, version, false);
        co_return;
      }
    }
    lowest(s).expires_never();
    if (!route->spool) req.body = std::move(p.get().body());
    if (route->websocket && !beast::websocket::is_upgrade(p.get())) {
      ApiError err8 = bad_request("this route is a WebSocket (send Upgrade: websocket)");
      if (!co_await write_error(s, io, err8, rid, version, keep)) co_return;
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
      if (!co_await write_error(s, io, *failed, rid, version, keep)) co_return;
      continue;
    }
    if (rep.attach) {
      auto upgrade = p.release();
      co_await attach_websocket(srv, s, std::move(upgrade), rep, rid);
      co_return;
    }
    if (rep.stream) {
      if (!co_await write_stream(s, io, rep, rid, version, keep)) co_return;
      continue;
    }
    http::response<http::string_body> res{rep.status, version};
    if (!rep.content_type.empty()) res.set(http::field::content_type, rep.content_type);
    res.set("X-Request-Id", rid);
    res.keep_alive(keep);
    res.body() = std::move(rep.body);
    res.prepare_payload();
    lowest(s).expires_after(io);
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
  lowest(s).expires_after(std::chrono::seconds(srv.options().io_timeout));
  co_await s.async_handshake(asio::ssl::stream_base::server, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  co_await serve(srv, s, token_sha256);
  lowest(s).expires_after(std::chrono::seconds(5));
  co_await s.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace cubby::server
