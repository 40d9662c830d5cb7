// Images: list, pull (progress as ndjson), import, load, remove.
#include <unistd.h>

#include "base/sys.h"
#include "image/archive.h"
#include "image/fetch_client.h"
#include <tuple>

#include "server/routes.h"

namespace cubby::server {

namespace {

json image_json(const image::ImageInfo& i) {
  return {{"ref", i.ref}, {"id", "sha256:" + i.id}, {"digest", i.manifest_digest}, {"created_at", i.created}, {"size", i.size}};
}

asio::awaitable<Reply> image_list(Server& srv, Request&) {
  auto work1 = [&](Runtime& rt) {
    json arr = json::array();
    for (auto& i : unwrap(rt.images().list())) arr.push_back(image_json(i));
    return arr;
  };
  json j = co_await srv.blocking(std::move(work1));
  co_return json_reply(http::status::ok, j);
}

asio::awaitable<Reply> image_pull(Server& srv, Request& req) {
  json b = req.json_body();
  check_fields(b, {{"ref", Kind::kString, true}, {"platform", Kind::kString}});
  std::string ref = b["ref"].get<std::string>(), platform = string_or(b, "platform");
  unwrap(image::normalize_ref(ref));
  std::string rid = req.request_id;
  co_return stream_from_worker(srv, "application/x-ndjson", [a = std::make_shared<std::tuple<std::string, std::string, std::string>>(ref, platform, rid)](Runtime& rt, int out) {
    auto& [ref, platform, rid] = *a;
    auto line = [&](const json& j) {
      std::string s = dump(j) + "\n";
      (void)sys::write_all(out, s.data(), s.size());
    };
    line({{"status", "pulling"}, {"ref", ref}});
    auto info = rt.info();
    // cubby-fetch writes its progress lines into the same stream.
    auto img = image::pull_image(rt.images(), info.value("bin_dir", "."), rt.home(), ref, platform, out);
    if (!img) {
      ApiError e = api_error(img.error());
      line({{"error", {{"code", e.code}, {"message", e.message}, {"request_id", rid}}}});
      return;
    }
    line({{"status", "done"}, {"image", image_json(*img)}});
  });
}

asio::awaitable<Reply> image_import(Server& srv, Request& req) {
  std::string ref = req.q("ref").value_or("");
  if (ref.empty()) throw bad_request("query parameter ref is required");
  unwrap(image::normalize_ref(ref));
  auto work2 = [&](Runtime& rt) { return image_json(unwrap(rt.images().import_tarball(req.body_file.get(), ref))); };
  json j = co_await srv.blocking(std::move(work2));
  co_return json_reply(http::status::created, j);
}

asio::awaitable<Reply> image_load(Server& srv, Request& req) {
  std::string tag = req.q("tag").value_or("");
  if (!tag.empty()) unwrap(image::normalize_ref(tag));
  auto work3 = [&](Runtime& rt) {
    json arr = json::array();
    for (auto& i : unwrap(image::load_archive(rt.images(), req.body_file.get(), tag))) arr.push_back(image_json(i));
    return arr;
  };
  json j = co_await srv.blocking(std::move(work3));
  co_return json_reply(http::status::created, j);
}

asio::awaitable<Reply> image_remove(Server& srv, Request& req) {
  std::string ref = req.param("ref");
  auto work4 = [&](Runtime& rt) {
    auto img = unwrap(rt.images().resolve(ref));
    for (auto& b : unwrap(rt.list()))
      if (b.image_id == img.id) throw conflict("image " + ref + " is used by box " + b.name + "; remove the box first");
    unwrap(rt.images().remove(ref));
    return true;
  };
  co_await srv.blocking(std::move(work4));
  co_return no_content();
}

}  // namespace

void add_image_routes(std::vector<Route>& r) {
  r.push_back({http::verb::get, "/v1/images", image_list});
  r.push_back({http::verb::post, "/v1/images/pull", image_pull});
  r.push_back({http::verb::post, "/v1/images/import", image_import, kUploadLimit, false, true});
  r.push_back({http::verb::post, "/v1/images/load", image_load, kUploadLimit, false, true});
  r.push_back({http::verb::delete_, "/v1/images/{ref}", image_remove});
}

}  // namespace cubby::server
