#include "image/fetch_client.h"

#include <nlohmann/json.hpp>
#include <regex>

#include "image/helper_process.h"
#include "image/registry_config.h"

namespace cubby::image {
namespace {

using json = nlohmann::json;

ErrorKind kind_from(const std::string& k) {
  if (k == "invalid") return ErrorKind::kInvalid;
  if (k == "not_found") return ErrorKind::kNotFound;
  if (k == "conflict") return ErrorKind::kConflict;
  if (k == "protocol") return ErrorKind::kProtocol;
  if (k == "timeout") return ErrorKind::kTimeout;
  if (k == "system") return ErrorKind::kSystem;
  return ErrorKind::kInternal;
}

Result<json> run_fetch(const std::string& bin_dir, const std::vector<std::string>& args, const std::string& input,
                       int extra_fd = -1) {
  std::string helper = bin_dir + "/cubby-fetch";
  std::vector<std::string> argv = {helper};
  argv.insert(argv.end(), args.begin(), args.end());
  HelperOutput r = CUBBY_TRY(run_helper(argv, input, /*merge_stderr=*/false, extra_fd));
  const ExitStatus& st = r.status;
  json j = json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    if (st.signaled) return fail(Error::internal(helper + " was killed by signal " + std::to_string(st.signal)));
    return fail(Error::internal(helper + " failed (exit code " + std::to_string(st.code) + ")"));
  }
  if (j.contains("error") && j["error"].is_string())
    return fail(Error(kind_from(j.value("kind", "")), j["error"].get<std::string>()));
  if (st.signaled || st.code != 0) return fail(Error::internal(helper + " failed"));
  return j;
}

}  // namespace

Result<PulledImage> fetch_image(const std::string& store_root, const std::string& bin_dir, const std::string& home,
                                const std::string& ref, const std::string& platform, int progress_fd) {
  std::vector<std::string> args = {"pull", "--home", home, "--store", store_root};
  if (!platform.empty()) args.insert(args.end(), {"--platform", platform});
  if (progress_fd >= 0) args.insert(args.end(), {"--progress-fd", "3"});
  args.push_back(ref);
  json j = CUBBY_TRY(run_fetch(bin_dir, args, "", progress_fd));
  auto field = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : ""; };
  PulledImage out{field("ref"), field("id"), field("digest")};
  if (out.ref.empty() || out.id.empty() || out.digest.empty())
    return fail(Error::internal(bin_dir + "/cubby-fetch answered without ref, id or digest"));
  return out;
}

Result<ImageInfo> pull_image(ImageStore& store, const std::string& bin_dir, const std::string& home,
                             const std::string& ref, const std::string& platform, int progress_fd) {
  PulledImage pulled = CUBBY_TRY(fetch_image(store.root(), bin_dir, home, ref, platform, progress_fd));
  return store.resolve(pulled.ref);
}

Result<void> login_check(const std::string& bin_dir, const std::string& home, const std::string& domain,
                         const std::string& username, const std::string& password) {
  CUBBY_TRYV(run_fetch(bin_dir, {"login", "--home", home, "--username", username, domain}, password + "\n"));
  return {};
}

Result<std::string> login_domain(const std::string& server) {
  if (server.empty()) return std::string("docker.io");
  std::string d = normalize_registry_key(server);
  static const std::regex host_re(
      "^(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])(?:\\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
      "|\\[[0-9A-Fa-f:]+\\])(?::[0-9]+)?$");
  if (d.empty() || !std::regex_match(d, host_re)) return fail(Error::invalid("invalid registry \"" + server + "\""));
  return d;
}

}  // namespace cubby::image
