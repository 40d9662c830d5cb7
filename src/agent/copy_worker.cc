#include "agent/copy_worker.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "base/sys.h"
#include "copy/tree.h"
#include "proto/messages.h"

namespace cubby::agent {

using proto::Json;
namespace msg = proto::msg;

namespace {

// Box paths are relative to the box's "/" whatever they start with (as in
// docker cp); symlinks and ".." never lead out of it.
constexpr uint64_t kInBox = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;

std::string box_rel(const std::string& path) {
  size_t i = path.find_first_not_of('/');
  return i == std::string::npos ? std::string() : path.substr(i);
}

Json error_msg(const Error& e) {
  Json m = {{"t", msg::kError}, {"msg", e.message()}};
  if (e.kind() == ErrorKind::kNotFound || e.sys_errno() == ENOENT) m["missing"] = true;
  return m;
}

Json stat_reply(int root, const std::string& path) {
  UniqueFd fd = open_resolved(root, box_rel(path), O_PATH, kInBox);
  struct stat st;
  if (!fd || ::fstat(fd.get(), &st) < 0) {
    if (errno == ENOENT) return error_msg(Error::not_found(path + ": no such file or directory"));
    return error_msg(Error::sys(path));
  }
  const char* kind = S_ISDIR(st.st_mode) ? "d" : S_ISREG(st.st_mode) ? "f" : "o";
  return {{"t", msg::kCpStat}, {"kind", kind}};
}

// One request; false: the session is over (the peer went away, or a put
// failed half-way and what the client still sends must not be read as
// requests).
bool serve(proto::Conn& conn, int root, const msg::Request& r) {
  if (auto* st = std::get_if<msg::CpStat>(&r)) return conn.send(stat_reply(root, st->path)).has_value();
  if (auto* g = std::get_if<msg::CpGet>(&r)) {
    copy::FrameSink sink(conn);
    auto res = copy::read_tree(root, box_rel(g->path), kInBox, g->follow, sink);
    if (!res)
      (void)conn.send(error_msg(res.error().kind() == ErrorKind::kNotFound ? res.error() : res.error().wrap(g->path)));
    return res.has_value();
  }
  if (auto* p = std::get_if<msg::CpPut>(&r)) {
    UniqueFd d = open_resolved(root, box_rel(p->dir), O_PATH | O_DIRECTORY, kInBox);
    if (!d) {
      Error e = errno == ENOENT ? Error::not_found("no such directory: " + p->dir)
                : errno == ENOTDIR ? Error::invalid(p->dir + ": not a directory") : Error::sys(p->dir);
      (void)conn.send(error_msg(e));
      return false;
    }
    // The destination as the box's paths lead there (its symlinks followed,
    // inside the box); below it no symlink at all, the stream's own least
    // of all: a tar's `link -> /etc` then `link/passwd` must not write
    // outside the directory it was copied into.
    copy::WriterOptions o;
    o.root = d.get();
    o.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    o.shown_base = p->dir;
    o.owner = p->keep_owner ? copy::Owner::kEntry : copy::Owner::kRoot;
    copy::TreeWriter w(std::move(o));
    copy::StreamCheck checked(w);
    auto res = copy::receive_frames(conn, checked);
    (void)conn.send(res ? Json{{"t", msg::kOk}} : error_msg(res.error()));
    return res.has_value();
  }
  auto* u = std::get_if<msg::Unknown>(&r);
  (void)conn.send(error_msg(Error::protocol("unknown copy request" + (u ? ": " + u->type : std::string()))));
  return false;
}

}  // namespace

void run_copy_worker(UniqueFd session, proto::FrameDecoder dec, std::string unsent, const msg::Request& first) {
  // Keep only stdio and the session: the agent's other sessions, exec pipes,
  // epoll and signalfd must not be held open (or touched) by the worker.
  int fd = session.release();
  if (fd > 3) ::close_range(3, static_cast<unsigned>(fd - 1), 0);
  ::close_range(static_cast<unsigned>(fd + 1), ~0u, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  ::prctl(PR_SET_NAME, "cubby-agent-cp");
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  if (!unsent.empty() && !sys::write_all(fd, unsent.data(), unsent.size())) ::_exit(0);
  proto::Conn conn(UniqueFd(fd), std::move(dec));
  UniqueFd root(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) {
    (void)conn.send(error_msg(Error::sys("open the box's root")));
    ::_exit(1);
  }
  msg::Request r = first;
  while (serve(conn, root.get(), r)) {
    auto f = conn.recv();
    if (!f) break;
    auto next = msg::decode_request(f->msg);
    if (!next) {
      (void)conn.send(error_msg(next.error()));  // a malformed request ends the session
      break;
    }
    r = std::move(*next);
  }
  ::_exit(0);
}

}  // namespace cubby::agent
