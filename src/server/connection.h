// One HTTP connection (Unix socket, TCP or TLS): Beast parses; we bound the
// header size, the body size (per route), and the time a client may take
// (idle between requests, per read and write while a request is under way),
// then dispatch to the route and write its reply. Templated over the stream.
#pragma once

#include <utility>  // before Boost: asio 1.74's awaitable.hpp uses std::exchange without it
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "server/server.h"

namespace cubby::server {

namespace beast = boost::beast;

using UnixStream = beast::basic_stream<asio::local::stream_protocol>;
using TcpStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// `token_sha256` empty: no token needed (the Unix socket).
asio::awaitable<void> serve_connection(Server& srv, UnixStream s);
asio::awaitable<void> serve_connection(Server& srv, TcpStream s, std::string token_sha256);
asio::awaitable<void> serve_connection(Server& srv, TlsStream s, std::string token_sha256);

std::string sha256(std::string_view s);

}  // namespace cubby::server
