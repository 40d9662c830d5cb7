#include "image/helper_process.h"

#include <unistd.h>

#include <cstdlib>

#include "base/sys.h"

namespace cubby::image {

Result<HelperOutput> run_helper(const std::vector<std::string>& argv, const std::string& input,
                                bool merge_stderr, int extra_fd) {
  auto [out_r, out_w] = CUBBY_TRY(sys::make_pipe());
  UniqueFd in_r, in_w;
  if (!input.empty()) {
    auto p = CUBBY_TRY(sys::make_pipe());
    in_r = std::move(p.first);
    in_w = std::move(p.second);
  }
  SpawnSpec s;
  s.argv = argv;
  s.fds = {input.empty() ? -1 : in_r.get(), out_w.get(), merge_stderr ? out_w.get() : 2};
  if (extra_fd >= 0) s.fds.push_back(extra_fd);
  s.die_with_parent = true;  // a helper never outlives the call that waits for it
  auto child = spawn(s);
  if (!child) return fail(child.error().wrap("run " + argv[0]));
  out_w.reset();
  in_r.reset();
  if (!input.empty()) {
    (void)sys::write_all(in_w.get(), input.data(), input.size());  // EPIPE: it exited; its status tells
    in_w.reset();
  }
  auto out = sys::read_all(out_r.get(), 1u << 20);
  HelperOutput r;
  r.status = CUBBY_TRY(child->wait());
  if (!out) return fail(out.error().wrap("read from " + argv[0]));
  r.out = std::move(*out);
  return r;
}

std::optional<std::string> find_on_path(const std::string& name) {
  const char* env = std::getenv("PATH");
  std::string path = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  for (;;) {
    size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir.assign(1, '.');  // not = ".": GCC 12's false -Wrestrict (bug 105329)
    std::string full = dir + "/" + name;
    if (::access(full.c_str(), X_OK) == 0) return full;
    if (colon == std::string::npos) return std::nullopt;
    start = colon + 1;
  }
}

}  // namespace cubby::image
