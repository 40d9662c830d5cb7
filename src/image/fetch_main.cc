// cubby-fetch: the registry helper cubby runs (see fetch_client.h). It is a
// separate, dynamically linked binary because libcurl cannot be linked into
// the static cubby binary. Answers with exactly one JSON line on stdout:
// {"ref":..,"id":..,"digest":..} or {"error":"...","kind":"..."}.
//
//   cubby-fetch pull --home HOME --store STORE [--platform P] [--progress-fd 3] REF
//   cubby-fetch login --home HOME --username USER DOMAIN   (password on stdin)
#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "image/registry.h"
#include "store/store.h"

using namespace cubby;
using json = nlohmann::json;

namespace {

const char* kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::kSystem: return "system";
    case ErrorKind::kInvalid: return "invalid";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kProtocol: return "protocol";
    case ErrorKind::kTimeout: return "timeout";
    default: return "internal";
  }
}

int answer_error(const Error& e) {
  std::cout << json{{"error", e.message()}, {"kind", kind_name(e.kind())}}.dump() << std::endl;
  return 1;
}

// cubby-fetch dies with its caller (a killed `cubby pull` must not leave a
// fetcher committing an image nobody waits for) and takes its staged work
// with it. The runtime spawns it with PR_SET_PDEATHSIG(SIGKILL); it turns
// that into SIGTERM and handles SIGTERM/SIGINT/SIGHUP on a thread of its own
// (blocked everywhere else before any thread exists), which removes the
// work areas this process holds and exits.
void die_with_caller() {
  static sigset_t stop;
  sigemptyset(&stop);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop, s);
  ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the caller was alive at exec, or SIGKILL already came
  std::thread([] {
    int sig = 0;
    while (::sigwait(&stop, &sig) != 0) {
    }
    image::remove_live_staging_areas();
    ::_exit(128 + sig);
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  log::set_prefix("cubby-fetch");
  ::signal(SIGPIPE, SIG_IGN);
  die_with_caller();
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) return answer_error(Error::internal("curl_global_init failed"));
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return answer_error(Error::invalid("usage: cubby-fetch pull|login ..."));
  std::string verb = args[0], home, store_root, platform, username, progress_fd;
  std::vector<std::string> pos;
  for (size_t i = 1; i < args.size(); ++i) {
    auto val = [&](std::string& into) {
      if (i + 1 >= args.size()) return false;
      into = args[++i];
      return true;
    };
    bool ok = true;
    if (args[i] == "--home") ok = val(home);
    else if (args[i] == "--store") ok = val(store_root);
    else if (args[i] == "--platform") ok = val(platform);
    else if (args[i] == "--username") ok = val(username);
    else if (args[i] == "--progress-fd") ok = val(progress_fd);
    else pos.push_back(args[i]);
    if (!ok) return answer_error(Error::invalid(args[i] + " needs a value"));
  }
  if (pos.size() != 1 || home.empty()) return answer_error(Error::invalid("bad arguments to cubby-fetch"));
  if (verb == "pull") {
    auto store = image::ImageStore::open(store_root.empty() ? home + "/images" : store_root);
    if (!store) return answer_error(store.error());
    // The commit collects what a retagged image leaves: not the layers boxes use.
    store->set_layers_in_use([home] { return store::Store::layers_in_use(home); });
    image::PullOptions o;
    o.home = home;
    o.platform = platform;
    o.progress = ::isatty(2) == 1;
    if (!progress_fd.empty()) {
      o.progress_fd = progress_fd == "3" ? 3 : -1;  // the one fd the caller passes (helper_process.h)
      if (o.progress_fd < 0 || ::fcntl(o.progress_fd, F_GETFD) < 0)
        return answer_error(Error::invalid("--progress-fd: want 3, an fd the caller passed"));
    }
    auto img = image::pull(*store, pos[0], o);
    if (!img) return answer_error(img.error());
    std::cout << json{{"ref", img->ref}, {"id", "sha256:" + img->id}, {"digest", img->manifest_digest}}.dump()
              << std::endl;
    return 0;
  }
  if (verb == "login") {
    std::string password;
    std::getline(std::cin, password);
    auto r = image::check_login(home, pos[0], {username, password});
    if (!r) return answer_error(r.error());
    std::cout << "{}" << std::endl;
    return 0;
  }
  return answer_error(Error::invalid("unknown cubby-fetch command \"" + verb + "\""));
}
