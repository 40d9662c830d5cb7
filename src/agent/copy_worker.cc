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
bool serve(proto::Conn& conn, int root, const Json& m) {
  const std::string t = m.value("t", "");
  if (t == msg::kCpStat) return conn.send(stat_reply(root, m.value("path", std::string("/")))).has_value();
  if (t == msg::kCpGet) {
    std::string path = m.value("path", std::string("/"));
    copy::FrameSink sink(conn);
    auto r = copy::read_tree(root, box_rel(path), kInBox, m.value("follow", false), sink);
    if (!r) (void)conn.send(error_msg(r.error().kind() == ErrorKind::kNotFound ? r.error() : r.error().wrap(path)));
    return r.has_value();
  }
  if (t == msg::kCpPut) {
    std::string dir = m.value("dir", std::string("/"));
    UniqueFd d = open_resolved(root, box_rel(dir), O_PATH | O_DIRECTORY, kInBox);
    if (!d) {
      Error e = errno == ENOENT ? Error::not_found("no such directory: " + dir)
                : errno == ENOTDIR ? Error::invalid(dir + ": not a directory") : Error::sys(dir);
      (void)conn.send(error_msg(e));
      return false;
    }
    copy::WriterOptions o;
    o.root = root;
    o.base = box_rel(dir);
    o.resolve = kInBox;
    o.allow_symlinks = true;
    o.owner = m.value("keep_owner", false) ? copy::Owner::kEntry : copy::Owner::kRoot;
    copy::TreeWriter w(std::move(o));
    auto r = copy::receive_frames(conn, w);
    (void)conn.send(r ? Json{{"t", msg::kOk}} : error_msg(r.error()));
    return r.has_value();
  }
  (void)conn.send({{"t", msg::kError}, {"msg", "unknown copy request: " + t}});
  return false;
}

}  // namespace

void run_copy_worker(UniqueFd session, proto::FrameDecoder dec, std::string unsent, const Json& first) {
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
  Json m = first;
  while (serve(conn, root.get(), m)) {
    auto f = conn.recv();
    if (!f) break;
    m = std::move(f->msg);
  }
  ::_exit(0);
}

}  // namespace cubby::agent
