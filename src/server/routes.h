// The route table: one entry per operation of docs/openapi.json, filled by
// one file per family of verbs (routes_boxes.cc, routes_exec.cc,
// routes_files.cc, routes_images.cc, routes_system.cc).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "server/api.h"
#include "server/server.h"

namespace cubby::server {

using Handler = asio::awaitable<Reply> (*)(Server&, Request&);

// Body limits: JSON bodies are small; uploads (files, trees, images) large.
inline constexpr size_t kJsonLimit = 1 << 20;
// Uploads are spooled to an unlinked file in the home as they arrive (disk,
// not memory); the bound is a sanity limit, not a memory one.
inline constexpr size_t kUploadLimit = size_t{64} << 30;

struct Route {
  http::verb method;
  std::string pattern;  // "/v1/boxes/{ref}/exec"
  Handler handler;
  size_t body_limit = kJsonLimit;
  bool websocket = false;  // an upgrade (the attach route)
  bool spool = false;      // an upload: the body goes to Request::body_file
};

void add_box_routes(std::vector<Route>& r);
void add_exec_routes(std::vector<Route>& r);
void add_file_routes(std::vector<Route>& r);
void add_image_routes(std::vector<Route>& r);
void add_system_routes(std::vector<Route>& r);

// The route for method and raw (still percent-encoded) path, with its
// {params} filled, decoded (so a {ref} may hold an encoded "/"); nullptr if none.
// `path_known` tells a wrong method on a known path apart (still a 404 here:
// api.md has no 405, but the message says which methods exist).
const Route* match_route(http::verb method, const std::string& path, std::map<std::string, std::string>& params,
                         std::string* allowed);

// Blocking work behind a streamed reply: f(Runtime&, write_fd) runs on a
// worker, writing the body to write_fd; its error (before any byte) becomes
// the envelope. Throws 429 when the pool is full.
Reply stream_from_worker(Server& srv, std::string content_type,
                         UniqueFn<void(Runtime&, int write_fd)> f);

// An unlinked file in `dir` (the server's home: disk, not memory) to hold
// an upload or a download while it passes through.
Result<UniqueFd> spool_file(const std::string& dir);

// A box-side path from the query: absolute, no "..", no NUL (400 otherwise).
std::string box_path(const Request& req, const char* name = "path");

}  // namespace cubby::server
