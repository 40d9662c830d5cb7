// The C API over cubby::Runtime (see include/cubby/cubby.h).
#include "cubby/cubby.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "base/sys.h"
#include "runtime/runtime.h"

struct cubby_runtime {
  cubby::Runtime rt;
};

namespace {
char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}
int set_err(char** err, const cubby::Error& e) {
  if (err) *err = dup_string(e.message());
  return -1;
}
std::vector<std::string> to_vec(const char* const* argv) {
  std::vector<std::string> v;
  for (; argv && *argv; ++argv) v.emplace_back(*argv);
  return v;
}
// Reads a pipe to EOF on its own thread so a chatty process cannot block.
struct Drain {
  std::string data;
  std::thread t;
  explicit Drain(int fd) : t([this, fd] {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) data.append(buf, static_cast<size_t>(n));
  }) {}
};
}  // namespace

extern "C" {

int cubby_open(const char* home, const char* bin_dir, cubby_runtime** out, char** err) {
  auto rt = cubby::Runtime::open({home ? home : "", bin_dir ? bin_dir : ""});
  if (!rt) return set_err(err, rt.error());
  *out = new cubby_runtime{std::move(*rt)};
  return 0;
}

void cubby_close(cubby_runtime* rt) { delete rt; }

int cubby_run_detached(cubby_runtime* rt, const char* image, const char* const* argv, char** id_out, char** err) {
  cubby::CreateOptions o;
  o.image = image ? image : "";
  o.cmd = to_vec(argv);
  auto b = rt->rt.create(o);
  if (!b) return set_err(err, b.error());
  auto s = rt->rt.start(b->id);
  if (!s) return set_err(err, s.error());
  if (id_out) *id_out = dup_string(b->id);
  return 0;
}

int cubby_exec(cubby_runtime* rt, const char* box, const char* const* argv, int* exit_code, char** out,
               char** errout, char** err) {
  auto o = cubby::sys::make_pipe();
  auto e = cubby::sys::make_pipe();
  if (!o || !e) return set_err(err, !o ? o.error() : e.error());
  cubby::ExecRequest req;
  req.argv = to_vec(argv);
  cubby::StdioFds io{-1, o->second.get(), e->second.get(), false};
  Drain dout(o->first.get()), derr(e->first.get());
  auto r = rt->rt.exec(box ? box : "", req, io);
  o->second.reset();
  e->second.reset();
  dout.t.join();
  derr.t.join();
  if (!r) return set_err(err, r.error());
  if (exit_code) *exit_code = r->code;
  if (out) *out = dup_string(dout.data);
  if (errout) *errout = dup_string(r->error.empty() ? derr.data : derr.data + r->error + "\n");
  return 0;
}

int cubby_stop(cubby_runtime* rt, const char* box, int timeout_seconds, char** err) {
  auto r = rt->rt.stop(box ? box : "", std::chrono::seconds(timeout_seconds));
  return r ? 0 : set_err(err, r.error());
}

int cubby_pause(cubby_runtime* rt, const char* box, int paused, char** err) {
  auto r = rt->rt.set_paused(box ? box : "", paused != 0);
  return r ? 0 : set_err(err, r.error());
}

int cubby_remove(cubby_runtime* rt, const char* box, int force, char** err) {
  auto r = rt->rt.remove(box ? box : "", force != 0);
  return r ? 0 : set_err(err, r.error());
}

int cubby_list_json(cubby_runtime* rt, char** json_out, char** err) {
  auto boxes = rt->rt.list();
  if (!boxes) return set_err(err, boxes.error());
  nlohmann::json arr = nlohmann::json::array();
  for (auto& b : *boxes) arr.push_back(rt->rt.describe(b, false));
  *json_out = dup_string(arr.dump());
  return 0;
}

void cubby_free(void* p) { std::free(p); }

}  // extern "C"
