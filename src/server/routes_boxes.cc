// Boxes: create, list, inspect, start, stop, kill, remove, wait, logs, ports.
#include <cmath>
#include <thread>

#include "base/signals.h"
#include "base/sys.h"
#include "runtime/ports.h"
#include <tuple>

#include "server/routes.h"

namespace cubby::server {

namespace {

CreateOptions create_options(const json& b) {
  check_fields(b, {{"image", Kind::kString, true}, {"name", Kind::kString}, {"cmd", Kind::kStrings},
                   {"entrypoint", Kind::kStrings}, {"env", Kind::kStrings}, {"publish", Kind::kStrings},
                   {"volumes", Kind::kStrings}, {"cwd", Kind::kString}, {"user", Kind::kString},
                   {"hostname", Kind::kString}, {"network", Kind::kString}, {"isolation", Kind::kString},
                   {"userns", Kind::kString}, {"memory", Kind::kInt}, {"cpus", Kind::kNumber}, {"pids", Kind::kInt},
                   {"auto_remove", Kind::kBool}, {"start", Kind::kBool}, {"pull", Kind::kString}});
  CreateOptions o;
  o.image = b["image"].get<std::string>();
  if (o.image.empty()) throw bad_request("field \"image\" must not be empty");
  o.name = string_or(b, "name");
  o.cmd = strings(b, "cmd");
  if (b.contains("entrypoint") && !b["entrypoint"].is_null()) o.entrypoint = strings(b, "entrypoint");
  o.env = strings(b, "env");
  for (const auto& e : o.env)
    if (e.empty() || e[0] == '=' || e.find('=') == std::string::npos)
      throw bad_request("env entries are \"KEY=VALUE\": \"" + e.substr(0, 64) + "\"");
  o.publish = strings(b, "publish");
  o.volumes = strings(b, "volumes");
  o.cwd = string_or(b, "cwd");
  if (!o.cwd.empty() && o.cwd[0] != '/') throw bad_request("field \"cwd\" must be an absolute path");
  o.user = string_or(b, "user");
  o.hostname = string_or(b, "hostname");
  o.network = string_or(b, "network", "default");
  o.isolation = string_or(b, "isolation");
  if (!o.isolation.empty() && o.isolation != "auto" && o.isolation != "vm" && o.isolation != "sandbox")
    throw bad_request("field \"isolation\" must be auto, vm or sandbox");
  o.userns = string_or(b, "userns");
  if (!o.userns.empty() && o.userns != "auto" && o.userns != "host")
    throw bad_request("field \"userns\" must be auto or host");
  if (b.contains("memory") && !b["memory"].is_null()) o.memory = b["memory"].get<int64_t>();
  if (b.contains("cpus") && !b["cpus"].is_null()) {
    double c = b["cpus"].get<double>();
    if (!std::isfinite(c) || c < 0) throw bad_request("field \"cpus\" must be a positive number");
    if (c > 0) o.cpus = c;
  }
  if (b.contains("pids") && !b["pids"].is_null()) {
    int64_t p = b["pids"].get<int64_t>();
    if (p < 0) throw bad_request("field \"pids\" must be 0 (no limit) or more");
    o.pids = p;
  }
  o.auto_remove = b.value("auto_remove", json(false)).is_boolean() && b.value("auto_remove", false);
  auto pull = CreateOptions::parse_pull(string_or(b, "pull", "missing"));
  if (!pull) throw bad_request("field \"pull\" must be missing, never or always");
  o.pull = *pull;
  return o;
}

asio::awaitable<Reply> box_create(Server& srv, Request& req) {
  json b = req.json_body();
  CreateOptions o = create_options(b);
  bool start = !b.contains("start") || b["start"].is_null() || b["start"].get<bool>();
  auto work1 = [&](Runtime& rt) {
    auto box = unwrap(rt.create(o));
    if (start) {
      auto s = rt.start(box.id, false);
      if (!s) {
        if (o.auto_remove) (void)rt.remove(box.id, true);
        throw api_error(s.error());
      }
    }
    auto now = rt.resolve(box.id);
    if (!now) return rt.describe(box, true);  // it ended and removed itself (auto_remove)
    return rt.describe(*now, true);
  };
  json j = co_await srv.blocking(std::move(work1));
  co_return json_reply(http::status::created, j);
}

asio::awaitable<Reply> box_list(Server& srv, Request&) {
  auto work2 = [&](Runtime& rt) {
    json arr = json::array();
    for (auto& b : unwrap(rt.list())) arr.push_back(rt.describe(b, false));
    return arr;
  };
  json j = co_await srv.blocking(std::move(work2));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> box_get(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work3 = [&](Runtime& rt) { return rt.describe(unwrap(rt.resolve(ref)), true); };
  json j = co_await srv.blocking(std::move(work3));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> box_start(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work4 = [&](Runtime& rt) {
    auto b = unwrap(rt.resolve(ref));
    if (b.status == store::BoxStatus::kRunning) throw conflict("box " + b.name + " is already running");
    unwrap(rt.start(b.id, false));
    auto now = rt.resolve(b.id);
    return rt.describe(now ? *now : b, true);
  };
  json j = co_await srv.blocking(std::move(work4));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> box_stop(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto secs = std::chrono::seconds(req.q_int("timeout", 10, 0, 24 * 3600));
  auto work5 = [&](Runtime& rt) {
    auto b = unwrap(rt.resolve(ref));
    unwrap(rt.stop(b.id, secs));
    auto now = rt.resolve(b.id);
    if (!now) {  // auto_remove: gone with its end
      b.status = store::BoxStatus::kExited;
      return rt.describe(b, true);
    }
    return rt.describe(*now, true);
  };
  json j = co_await srv.blocking(std::move(work5));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> box_kill(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto sig = parse_signal(req.q("signal").value_or("KILL"));
  if (!sig) throw bad_request(sig.error().message());
  int n = *sig;
  auto work6 = [&](Runtime& rt) {
    unwrap(rt.kill(ref, n));
    return true;
  };
  co_await srv.blocking(std::move(work6));
  co_return no_content();
}

// Docker's pause/unpause: the box's memory kept, its processes (vm: its
// vCPUs) stopped; the box as GET shows it.
asio::awaitable<Reply> box_set_paused(Server& srv, Request& req, bool paused) {
  std::string ref = req.param("ref");
  auto work = [&](Runtime& rt) {
    unwrap(rt.set_paused(ref, paused));
    return rt.describe(unwrap(rt.resolve(ref)), true);
  };
  json j = co_await srv.blocking(std::move(work));
  co_return json_reply(http::status::ok, j);
}
asio::awaitable<Reply> box_pause(Server& srv, Request& req) { return box_set_paused(srv, req, true); }
asio::awaitable<Reply> box_unpause(Server& srv, Request& req) { return box_set_paused(srv, req, false); }

// Memory snapshots of running vm boxes (runtime/snapshots.cc): the
// snapshot, a box's forks, and boxes restored from a snapshot.
asio::awaitable<Reply> box_snapshot(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  std::string name = req.q("name").value_or("");
  auto work = [&](Runtime& rt) { return Runtime::snapshot_json(unwrap(rt.snapshot(ref, name))); };
  json j = co_await srv.blocking(std::move(work));
  co_return json_reply(http::status::created, j);
}

json boxes_json(Runtime& rt, const std::vector<store::BoxRecord>& boxes) {
  json arr = json::array();
  for (const auto& b : boxes) arr.push_back(rt.describe(b, true));
  return arr;
}

asio::awaitable<Reply> box_fork(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  int n = static_cast<int>(req.q_int("count", 1, 1, 64));
  auto work = [&](Runtime& rt) { return boxes_json(rt, unwrap(rt.fork(ref, n))); };
  json j = co_await srv.blocking(std::move(work));
  co_return json_reply(http::status::created, j);
}

asio::awaitable<Reply> snapshot_list(Server& srv, Request&) {
  auto work = [&](Runtime& rt) {
    json arr = json::array();
    for (const auto& s : unwrap(rt.snapshots())) arr.push_back(Runtime::snapshot_json(s));
    return arr;
  };
  json j = co_await srv.blocking(std::move(work));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> snapshot_remove(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work = [&](Runtime& rt) {
    unwrap(rt.remove_snapshot(ref));
    return true;
  };
  co_await srv.blocking(std::move(work));
  co_return no_content();
}

asio::awaitable<Reply> snapshot_run(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  std::string name = req.q("name").value_or("");
  int n = static_cast<int>(req.q_int("count", 1, 1, 64));
  auto work = [&](Runtime& rt) { return boxes_json(rt, unwrap(rt.run_from_snapshot(ref, n, name))); };
  json j = co_await srv.blocking(std::move(work));
  co_return json_reply(http::status::created, j);
}

asio::awaitable<Reply> box_remove(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  bool force = req.q_bool("force", false);
  auto work7 = [&](Runtime& rt) {
    unwrap(rt.remove(ref, force));
    return true;
  };
  co_await srv.blocking(std::move(work7));
  co_return no_content();
}

asio::awaitable<Reply> box_wait(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work8 = [&](Runtime& rt) { return rt.describe(unwrap(rt.wait(ref)), true); };
  json j = co_await srv.blocking(std::move(work8));
  co_return json_reply(http::status::ok, j);
}

// A Unix time in seconds, with an optional fraction ("1764640000.5"), as
// Docker's API takes logs' since/until; in ns.
std::optional<int64_t> q_unix_time(const Request& req, const char* name) {
  auto v = req.q(name);
  if (!v) return std::nullopt;
  size_t dot = v->find('.');
  std::string whole = v->substr(0, dot), frac = dot == std::string::npos ? "" : v->substr(dot + 1);
  auto digits = [](const std::string& d) { return !d.empty() && d.find_first_not_of("0123456789") == std::string::npos; };
  if (!digits(whole) || whole.size() > 10 || (dot != std::string::npos && (!digits(frac) || frac.size() > 9)))
    throw bad_request(std::string("query parameter ") + name + ": want a Unix time in seconds (e.g. 1764640000.5), got \"" +
                      v->substr(0, 32) + "\"");
  frac.resize(9, '0');
  return std::stoll(whole) * 1'000'000'000 + std::stoll(frac);
}

asio::awaitable<Reply> box_logs(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  bool out = req.q_bool("stdout", true), err = req.q_bool("stderr", true);
  // Docker's logs options: tail (N or "all"), since/until, timestamps.
  LogsOptions o;
  o.follow = req.q_bool("follow", false);
  o.timestamps = req.q_bool("timestamps", false);
  if (auto t = req.q("tail"); t && *t != "all") o.tail = req.q_int("tail", 0, 0, int64_t{1} << 40);
  o.since_ns = q_unix_time(req, "since");
  o.until_ns = q_unix_time(req, "until");
  // Resolved first, so an unknown box is a plain 404.
  auto work9 = [&](Runtime& rt) { return unwrap(rt.resolve(ref)).id; };
  std::string id = co_await srv.blocking(std::move(work9));
  co_return stream_from_worker(srv, "application/x-ndjson", [a = std::make_shared<std::tuple<std::string, LogsOptions, bool, bool>>(id, o, out, err)](Runtime& rt, int fd) {
    auto& [id, o, out, err] = *a;
    o.reader_fd = fd;  // a client that leaves ends a follow at once
    unwrap(rt.logs(id, o, [&](int stream, std::string_view d) {
      if ((stream == 1 && !out) || (stream == 2 && !err)) return true;
      std::string line = dump({{"stream", stream == 1 ? "stdout" : "stderr"}, {"data", base64_encode(d)}}) + "\n";
      return sys::write_all(fd, line.data(), line.size()).has_value();
    }));
  });
}

asio::awaitable<Reply> box_ports(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work10 = [&](Runtime& rt) {
    auto b = unwrap(rt.resolve(ref));
    json arr = json::array();
    for (const auto& p : b.config.value("ports", std::vector<PortMapping>{}))
      arr.push_back({{"host_ip", p.host_ip}, {"host_port", p.host_port}, {"guest_port", p.guest_port}, {"protocol", p.proto}});
    return arr;
  };
  json j = co_await srv.blocking(std::move(work10));
  co_return json_reply(http::status::ok, j);
}

json stats_json(const sandbox::CgroupStats& s) {
  auto v = [](const std::optional<int64_t>& x) { return x ? json(*x) : json(nullptr); };
  return {{"time", now_rfc3339()},         {"cpu_usage_ns", v(s.cpu_usage_ns)}, {"memory_bytes", v(s.memory_bytes)},
          {"memory_limit_bytes", v(s.memory_limit_bytes)}, {"pids", v(s.pids)}, {"pids_limit", v(s.pids_limit)},
          {"io_read_bytes", v(s.io_read_bytes)}, {"io_write_bytes", v(s.io_write_bytes)}};
}

asio::awaitable<Reply> box_stats(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  bool stream = req.q_bool("stream", false);
  auto work11 = [&](Runtime& rt) { return stats_json(unwrap(rt.stats(ref))); };
  json first = co_await srv.blocking(std::move(work11));
  if (!stream) co_return json_reply(http::status::ok, first);
  Reply r = stream_from_worker(srv, "application/x-ndjson", [a = std::make_shared<std::pair<std::string, json>>(ref, first)](Runtime& rt, int fd) {
    auto& [ref, first] = *a;
    json sample = first;
    for (;;) {
      std::string line = dump(sample) + "\n";
      if (!sys::write_all(fd, line.data(), line.size())) return;  // the client left
      // One sample a second is the contract: a period, not an event wait.
      std::this_thread::sleep_for(std::chrono::seconds(1));
      auto s = rt.stats(ref);
      if (!s) return;  // the box ended (or went): the stream ends
      sample = stats_json(*s);
    }
  });
  r.stream->eager = true;
  co_return r;
}

}  // namespace

void add_box_routes(std::vector<Route>& r) {
  r.push_back({http::verb::post, "/v1/boxes", box_create});
  r.push_back({http::verb::get, "/v1/boxes", box_list});
  r.push_back({http::verb::get, "/v1/boxes/{ref}", box_get});
  r.push_back({http::verb::delete_, "/v1/boxes/{ref}", box_remove});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/start", box_start});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/stop", box_stop});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/kill", box_kill});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/pause", box_pause});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/unpause", box_unpause});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/snapshot", box_snapshot});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/fork", box_fork});
  r.push_back({http::verb::get, "/v1/snapshots", snapshot_list});
  r.push_back({http::verb::delete_, "/v1/snapshots/{ref}", snapshot_remove});
  r.push_back({http::verb::post, "/v1/snapshots/{ref}/run", snapshot_run});
  r.push_back({http::verb::post, "/v1/boxes/{ref}/wait", box_wait});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/logs", box_logs});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/ports", box_ports});
  r.push_back({http::verb::get, "/v1/boxes/{ref}/stats", box_stats});
}

}  // namespace cubby::server
