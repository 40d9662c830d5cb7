#include "server/routes.h"

#include <fcntl.h>
#include <unistd.h>

namespace cubby::server {

namespace {

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (j > i) out.push_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

const std::vector<Route>& table() {
  static const std::vector<Route> routes = [] {
    std::vector<Route> r;
    add_system_routes(r);
    add_box_routes(r);
    add_exec_routes(r);
    add_file_routes(r);
    add_image_routes(r);
    return r;
  }();
  return routes;
}

}  // namespace

const Route* match_route(http::verb method, const std::string& path, std::map<std::string, std::string>& params,
                         std::string* allowed) {
  auto segs = split_path(path);
  for (const auto& r : table()) {
    auto pat = split_path(r.pattern);
    if (pat.size() != segs.size()) continue;
    std::map<std::string, std::string> got;
    bool ok = true;
    for (size_t i = 0; i < pat.size() && ok; ++i) {
      std::string seg = pct_decode(segs[i], false);
      if (pat[i].front() == '{') got[pat[i].substr(1, pat[i].size() - 2)] = seg;
      else ok = pat[i] == seg;
    }
    if (!ok) continue;
    if (r.method != method) {
      if (allowed) *allowed += (allowed->empty() ? "" : ", ") + std::string(http::to_string(r.method));
      continue;
    }
    params = std::move(got);
    return &r;
  }
  return nullptr;
}

Reply stream_from_worker(Server& srv, std::string content_type,
                         UniqueFn<void(Runtime&, int write_fd)> f) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) throw internal_error("pipe: " + std::string(strerror(errno)));
  UniqueFd r(p[0]);
  auto w = std::make_shared<UniqueFd>(p[1]);
  auto outcome = std::make_shared<Outcome>();
  bool ok = srv.detach([f = std::move(f), w, outcome](Result<Runtime*> rt) mutable {
    try {
      if (!rt) throw api_error(rt.error());
      f(**rt, w->get());
    } catch (const ApiError& e) {
      outcome->set(e);
    } catch (const std::exception& e) {
      outcome->set(internal_error(e.what()));
    }
    w->reset();  // EOF for the reader, after the outcome is set
  });
  if (!ok) throw too_many("the server is busy (every worker is taken)");
  Reply rep;
  rep.content_type = std::move(content_type);
  rep.stream = StreamReply{std::move(r), outcome};
  return rep;
}

Result<UniqueFd> spool_file(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (fd) return fd;
  std::string tmpl = dir + "/.spool-XXXXXX";  // no O_TMPFILE on this filesystem
  fd = UniqueFd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd) return sys_fail("creating a spool file in " + dir);
  ::unlink(tmpl.c_str());
  return fd;
}

std::string box_path(const Request& req, const char* name) {
  auto p = req.q(name);
  if (!p || p->empty()) throw bad_request(std::string("query parameter ") + name + " is required");
  if ((*p)[0] != '/') throw bad_request(std::string(name) + " must be an absolute path in the box: \"" + p->substr(0, 128) + "\"");
  if (p->find('\0') != std::string::npos) throw bad_request(std::string(name) + " must not contain NUL");
  for (const auto& s : split_path(*p))
    if (s == "..") throw bad_request(std::string(name) + " must not contain \"..\": \"" + p->substr(0, 128) + "\"");
  return *p;
}

}  // namespace cubby::server
