// exec: the blocking call (POST /boxes/{ref}/exec) and the two-step form
// (POST /boxes/{ref}/execs, then the attach WebSocket; ws_attach.h).
#include <chrono>

#include "base/signals.h"
#include "server/exec_session.h"
#include "server/routes.h"

namespace cubby::server {

namespace {

constexpr size_t kDefaultMaxOutput = 16 << 20;
constexpr int64_t kMaxTimeoutMs = int64_t{365} * 24 * 3600 * 1000;

void check_env(const std::vector<std::string>& env) {
  for (const auto& e : env)
    if (e.empty() || e[0] == '=' || e.find('=') == std::string::npos)
      throw bad_request("env entries are \"KEY=VALUE\": \"" + e.substr(0, 64) + "\"");
}

// The fields both exec forms share, into an ExecRequest.
ExecRequest exec_request(const json& b) {
  ExecRequest r;
  r.argv = strings(b, "cmd");
  if (r.argv.empty()) throw bad_request("field \"cmd\" must name a command");
  r.env = strings(b, "env");
  check_env(r.env);
  r.cwd = string_or(b, "cwd");
  if (!r.cwd.empty() && r.cwd[0] != '/') throw bad_request("field \"cwd\" must be an absolute path");
  r.user = string_or(b, "user");
  if (b.contains("timeout_ms") && !b["timeout_ms"].is_null()) {
    int64_t t = b["timeout_ms"].get<int64_t>();
    if (t < 0 || t > kMaxTimeoutMs) throw bad_request("field \"timeout_ms\" must be from 0 to " + std::to_string(kMaxTimeoutMs));
    if (t > 0) r.timeout = std::chrono::milliseconds(t);
  }
  return r;
}

std::string status_of(const ExecResult& r) {
  return r.timed_out ? "timed_out" : r.signal ? "signaled" : "exited";
}

asio::awaitable<Reply> exec_blocking(Server& srv, Request& req) {
  json b = req.json_body();
  check_fields(b, {{"cmd", Kind::kStrings, true}, {"env", Kind::kStrings}, {"cwd", Kind::kString},
                   {"user", Kind::kString}, {"stdin", Kind::kString}, {"timeout_ms", Kind::kInt},
                   {"max_output_bytes", Kind::kInt}, {"encoding", Kind::kString}});
  ExecRequest r = exec_request(b);
  std::string encoding = string_or(b, "encoding", "utf-8");
  if (encoding != "utf-8" && encoding != "base64") throw bad_request("field \"encoding\" must be \"utf-8\" or \"base64\"");
  size_t max_out = kDefaultMaxOutput;
  if (b.contains("max_output_bytes") && !b["max_output_bytes"].is_null()) {
    int64_t m = b["max_output_bytes"].get<int64_t>();
    if (m < 0 || m > (int64_t{1} << 30)) throw bad_request("field \"max_output_bytes\" must be from 0 to 1073741824");
    max_out = static_cast<size_t>(m);
  }
  std::string in;
  if (b.contains("stdin") && !b["stdin"].is_null()) {
    in = b["stdin"].get<std::string>();
    if (encoding == "base64") {
      auto d = base64_decode(in);
      if (!d) throw bad_request("field \"stdin\" is not valid base64");
      in = std::move(*d);
    }
    r.interactive = true;
  }
  std::string ref = req.param("ref");
  auto t0 = std::chrono::steady_clock::now();
  auto work1 = [&](Runtime& rt) { return unwrap(rt.exec_capture(ref, r, in, max_out)); };
  auto c = co_await srv.blocking(std::move(work1));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  auto enc = [&](const std::string& s) { return encoding == "base64" ? base64_encode(s) : s; };
  json j = {{"exec_id", c.result.exec_id},
            {"exit_code", c.result.code},
            {"status", status_of(c.result)},
            {"signal", c.result.signal ? json(c.result.signal) : json(nullptr)},
            {"stdout", enc(c.out)},
            {"stderr", enc(c.err)},
            {"stdout_truncated", c.out_truncated},
            {"stderr_truncated", c.err_truncated},
            {"duration_ms", ms},
            {"error", c.result.error.empty() ? json(nullptr) : json(c.result.error)}};
  co_return json_reply(http::status::ok, j);
}

// The box's id for {ref}, checking it runs.
asio::awaitable<std::string> running_box(Server& srv, const std::string& ref) {
  auto work2 = [&](Runtime& rt) {
    auto b = unwrap(rt.resolve(ref));
    if (b.status != store::BoxStatus::kRunning) throw conflict("box " + b.name + " is not running");
    return b.id;
  };
  co_return co_await srv.blocking(std::move(work2));
}

asio::awaitable<std::string> box_id(Server& srv, const std::string& ref) {
  auto work3 = [&](Runtime& rt) { return unwrap(rt.resolve(ref)).id; };
  co_return co_await srv.blocking(std::move(work3));
}

asio::awaitable<Reply> exec_create(Server& srv, Request& req) {
  json b = req.json_body();
  check_fields(b, {{"cmd", Kind::kStrings, true}, {"env", Kind::kStrings}, {"cwd", Kind::kString},
                   {"user", Kind::kString}, {"tty", Kind::kBool}, {"stdin", Kind::kBool}, {"timeout_ms", Kind::kInt},
                   {"width", Kind::kInt}, {"height", Kind::kInt}});
  ExecRequest r = exec_request(b);
  r.tty = b.value("tty", json(false)).is_boolean() && b.value("tty", false);
  r.interactive = b.value("stdin", json(false)).is_boolean() && b.value("stdin", false);
  if (r.tty) {
    auto dim = [&](const char* k, int dflt) {
      if (!b.contains(k) || b[k].is_null()) return dflt;
      int64_t v = b[k].get<int64_t>();
      if (v < 1 || v > 65535) throw bad_request(std::string("field \"") + k + "\" must be from 1 to 65535");
      return static_cast<int>(v);
    };
    r.tty_size = std::pair<int, int>{dim("height", 24), dim("width", 80)};
  }
  std::string id = co_await running_box(srv, req.param("ref"));
  auto s = srv.execs().create(id, std::move(r));
  co_return json_reply(http::status::created, {{"id", s->id}});
}

asio::awaitable<Reply> exec_get(Server& srv, Request& req) {
  std::string ref = req.param("ref"), eid = req.param("id");
  std::string id = co_await box_id(srv, ref);
  if (auto s = srv.execs().find(id, eid)) co_return json_reply(http::status::ok, s->status_json());
  // A blocking exec's id (the agent's number): its status is kept by the
  // agent, so it survives a restart of the server.
  if (!eid.empty() && eid.size() < 20 && eid.find_first_not_of("0123456789") == std::string::npos) {
    uint64_t n = std::stoull(eid);
    auto work4 = [&](Runtime& rt) {
      auto r = rt.exec_status(id, n);
      json out = {{"id", eid}, {"running", false}, {"exit_code", nullptr}, {"status", nullptr},
                  {"signal", nullptr}, {"duration_ms", nullptr}, {"started", true}};
      if (!r && r.error().kind() == ErrorKind::kConflict) {
        out["running"] = true;
        return out;
      }
      auto res = unwrap(std::move(r));
      out["exit_code"] = res.code;
      out["status"] = status_of(res);
      if (res.signal) out["signal"] = res.signal;
      return out;
    };
    json j = co_await srv.blocking(std::move(work4));
    co_return json_reply(http::status::ok, j);
  }
  throw not_found("no exec " + eid.substr(0, 64) + " in box " + ref.substr(0, 64));
}

asio::awaitable<std::shared_ptr<ExecSession>> session_of(Server& srv, Request& req) {
  std::string id = co_await box_id(srv, req.param("ref"));
  auto s = srv.execs().find(id, req.param("id"));
  if (!s) throw not_found("no exec " + req.param("id").substr(0, 64) + " in box " + req.param("ref").substr(0, 64));
  co_return s;
}

asio::awaitable<Reply> exec_kill(Server& srv, Request& req) {
  auto sig = parse_signal(req.q("signal").value_or("KILL"));
  if (!sig) throw bad_request(sig.error().message());
  auto s = co_await session_of(srv, req);
  if (!s->control({ControlRecord::kSignal, *sig, 0})) throw conflict("exec " + s->id + " is not running");
  co_return no_content();
}

asio::awaitable<Reply> exec_resize(Server& srv, Request& req) {
  json b = req.json_body();
  check_fields(b, {{"width", Kind::kInt, true}, {"height", Kind::kInt, true}});
  int64_t w = b["width"].get<int64_t>(), h = b["height"].get<int64_t>();
  if (w < 1 || w > 65535 || h < 1 || h > 65535) throw bad_request("width and height must be from 1 to 65535");
  auto s = co_await session_of(srv, req);
  if (!s->req.tty) throw conflict("exec " + s->id + " has no terminal");
  if (!s->control({ControlRecord::kResize, static_cast<int32_t>(h), static_cast<int32_t>(w)}))
    throw conflict("exec " + s->id + " is not running");
  co_return no_content();
}

asio::awaitable<Reply> exec_attach(Server& srv, Request& req) {
  auto s = co_await session_of(srv, req);
  Reply r;
  r.attach = s;
  r.offsets[0] = static_cast<uint64_t>(req.q_int("stdout_offset", 0, 0, INT64_MAX));
  r.offsets[1] = static_cast<uint64_t>(req.q_int("stderr_offset", 0, 0, INT64_MAX));
  co_return r;
}

}  // namespace

void add_exec_routes(std::vector<Route>& r) {
  r.push_back({http::verb::post, "/v1/boxes/{ref}/exec", exec_blocking, size_t{64} << 20});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/execs", exec_create});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/execs/{id}", exec_get});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/execs/{id}/kill", exec_kill});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/execs/{id}/resize", exec_resize});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/execs/{id}/attach", exec_attach, kJsonLimit, true});
}

}  // namespace cubby::server
