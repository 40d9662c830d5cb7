// The attach WebSocket (subprotocol v5.channel.k8s.io, Kubernetes'
// remotecommand): binary messages whose first byte is the channel.
// Server to client: 1 stdout, 2 stderr, 3 status (then close). Client to
// server: 0 stdin, 4 resize {"Width","Height"}, 255 close (payload: the
// channel to close; 0 = stdin). Output is only ever sent as the payload of
// channel 1/2 messages, so no protocol byte reaches the client's stream.
#pragma once

#include <utility>  // before Boost: asio 1.74's awaitable.hpp uses std::exchange without it
#include <boost/asio/redirect_error.hpp>
#include <boost/beast/websocket.hpp>

#include "server/connection.h"
#include "server/exec_session.h"

namespace cubby::server {

inline constexpr const char* kAttachProtocol = "v5.channel.k8s.io";

// What the attach's reader and writer share.
struct AttachShared {
  bool reader_done = false;
  bool client_gone = false;
  std::optional<beast::websocket::close_reason> bad;
};

// The attach's reader: stdin, resize, close. It ends when the client goes
// or sends garbage (a close with a reason), and wakes the writer. A free
// function, not a lambda: a coroutine lambda's captures live in the
// closure, which co_spawn does not keep alive past the first suspension.
template <class WsStream>
asio::awaitable<void> attach_reader(WsStream& w, std::shared_ptr<ExecSession> sess, std::shared_ptr<AttachShared> sh) {
  namespace ws = beast::websocket;
  beast::flat_buffer b;
  for (;;) {
    beast::error_code rec;
    co_await w.async_read(b, asio::redirect_error(asio::use_awaitable, rec));
    if (rec) {
      sh->client_gone = true;
      break;
    }
    std::string m = beast::buffers_to_string(b.data());
    b.consume(b.size());
    if (m.empty()) continue;
    unsigned char ch = static_cast<unsigned char>(m[0]);
    std::string_view payload = std::string_view(m).substr(1);
    if (ch == 0) {
      if (!payload.empty()) co_await sess->write_stdin(payload);
    } else if (ch == 4) {
      json j = json::parse(payload, nullptr, false);
      if (!j.is_object() || !j.contains("Width") || !j.contains("Height") || !j["Width"].is_number_unsigned() ||
          !j["Height"].is_number_unsigned() || j["Width"].get<uint64_t>() > 65535 || j["Height"].get<uint64_t>() > 65535) {
        sh->bad = ws::close_reason(ws::close_code::bad_payload, "resize: want {\"Width\":W,\"Height\":H}");
        break;
      }
      sess->control({ControlRecord::kResize, static_cast<int32_t>(j["Height"].get<uint64_t>()),
                     static_cast<int32_t>(j["Width"].get<uint64_t>())});
    } else if (ch == 255) {
      if (payload.size() == 1 && payload[0] == 0) sess->close_stdin();
    } else {
      sh->bad = ws::close_reason(ws::close_code::policy_error,
                                 "unknown channel " + std::to_string(ch) + " (client to server: 0, 4, 255)");
      break;
    }
  }
  sh->reader_done = true;
  sess->notify();
}

template <class Stream>
asio::awaitable<void> attach_websocket(Server& srv, Stream& s, http::request<http::string_body> req, Reply& rep,
                                       std::string rid) {
  namespace ws = beast::websocket;
  auto sess = rep.attach;
  auto proto = req[http::field::sec_websocket_protocol];
  if (proto.find(kAttachProtocol) == beast::string_view::npos) {
    http::response<http::string_body> res{http::status::bad_request, req.version()};
    res.set(http::field::content_type, "application/json");
    res.set("X-Request-Id", rid);
    res.body() = envelope(bad_request(std::string("the attach WebSocket needs subprotocol ") + kAttachProtocol), rid);
    res.keep_alive(false);
    res.prepare_payload();
    beast::error_code ec;
    beast::get_lowest_layer(s).expires_after(std::chrono::seconds(30));
    co_await http::async_write(s, res, asio::redirect_error(asio::use_awaitable, ec));
    co_return;
  }
  ws::stream<Stream&> w(s);
  beast::get_lowest_layer(s).expires_never();
  auto t = ws::stream_base::timeout::suggested(beast::role_type::server);
  t.idle_timeout = std::chrono::seconds(60);
  t.keep_alive_pings = true;
  w.set_option(t);
  w.set_option(ws::stream_base::decorator([rid](ws::response_type& res) {
    res.set(http::field::sec_websocket_protocol, kAttachProtocol);
    res.set("X-Request-Id", rid);
  }));
  w.read_message_max(1 << 20);
  w.binary(true);
  beast::error_code ec;
  co_await w.async_accept(req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;

  uint64_t gen = ++sess->attach_gen;
  sess->attached = true;
  uint64_t sent[2];
  for (int i = 0; i < 2; ++i) {
    sent[i] = std::min(std::max(rep.offsets[i], sess->out[i].start()), sess->out[i].end());
    sess->client_sent[i] = sent[i];
  }
  sess->notify();  // a previous attachment sees it was replaced
  if (sess->state == ExecSession::State::kCreated) {
    try {
      sess->start(srv);
    } catch (const ApiError& e) {
      sess->error = e;
    }
  }

  auto sh = std::make_shared<AttachShared>();
  asio::co_spawn(co_await asio::this_coro::executor, attach_reader(w, sess, sh), asio::detached);

  // The writer: the rings from the client's offsets, then the status.
  for (;;) {
    if (sess->attach_gen != gen || sh->reader_done) break;
    bool wrote = false;
    for (int i = 0; i < 2 && !wrote; ++i) {
      sent[i] = std::max(sent[i], sess->out[i].start());
      auto chunk = sess->out[i].from(sent[i], 32 * 1024);
      if (chunk.empty()) continue;
      std::string msg;
      msg.reserve(chunk.size() + 1);
      msg.push_back(static_cast<char>(i + 1));
      msg.append(chunk);
      co_await w.async_write(asio::buffer(msg), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      sent[i] += chunk.size();
      if (sess->attach_gen == gen) sess->client_sent[i] = sent[i];
      sess->notify();  // a pump paused on backpressure may go on
      wrote = true;
    }
    if (ec) break;
    if (wrote) continue;
    if (sess->finished()) {
      std::string st = "\x03" + sess->k8s_status();
      co_await w.async_write(asio::buffer(st), asio::redirect_error(asio::use_awaitable, ec));
      break;
    }
    co_await sess->wait_change();
  }
  if (sess->attach_gen == gen) sess->attached = false;
  sess->notify();
  if (!sh->client_gone) {
    ws::close_reason why = sh->bad ? *sh->bad : ws::close_reason(ws::close_code::normal);
    if (sess->attach_gen != gen && !sh->bad) why = ws::close_reason(ws::close_code::try_again_later, "another client attached");
    co_await w.async_close(why, asio::redirect_error(asio::use_awaitable, ec));
  }
  // The reader still holds w: wait for it before w goes.
  if (!sh->reader_done) beast::get_lowest_layer(s).socket().shutdown(asio::socket_base::shutdown_both, ec);
  while (!sh->reader_done) co_await sess->wait_change();
}

}  // namespace cubby::server
