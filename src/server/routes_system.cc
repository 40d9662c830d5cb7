// info, version, the OpenAPI document, events.
#include "server/events.h"
#include "server/routes.h"

namespace cubby::server {

extern const char* const kOpenApiJson;  // docs/openapi.json, embedded by CMake

namespace {

asio::awaitable<Reply> get_openapi(Server&, Request&) {
  Reply r;
  r.body = kOpenApiJson;
  co_return r;
}

asio::awaitable<Reply> get_version(Server&, Request&) { co_return json_reply(http::status::ok, {{"version", CUBBY_VERSION}}); }

asio::awaitable<Reply> get_info(Server& srv, Request&) {
  auto work1 = [&](Runtime& rt) { return rt.info(); };
  json j = co_await srv.blocking(std::move(work1));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> get_events(Server& srv, Request&) {
  Reply r;
  r.content_type = "application/x-ndjson";
  auto work2 = [&](Runtime&) { return srv.events().subscribe(); };  // waits for the hub's first picture
  r.stream = co_await srv.blocking(std::move(work2));
  co_return r;
}

}  // namespace

void add_system_routes(std::vector<Route>& r) {
  r.push_back({http::verb::get, "/v1/openapi.json", get_openapi});
  r.push_back({http::verb::get, "/v1/version", get_version});
  r.push_back({http::verb::get, "/v1/info", get_info});
  r.push_back({http::verb::get, "/v1/events", get_events});
}

}  // namespace cubby::server
