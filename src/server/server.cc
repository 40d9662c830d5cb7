#include "server/server.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <csignal>
#include <fstream>
#include <future>
#include <set>
#include <sstream>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "server/connection.h"
#include "server/events.h"
#include "server/exec_session.h"

namespace cubby::server {

// The server is a child subreaper (PR_SET_CHILD_SUBREAPER): a shim that
// Runtime::start launches (through an intermediate that exits at once) is
// reparented to us, and when it ends it must be reaped here or it stays a
// zombie. But the library waits by pid for its own children (the
// intermediate, cubby-fetch, ...), and reaping one of those would steal its
// status (SPEC guarantee 4). So the reaper never calls waitpid(-1): it
// reaps only processes that were *reparented* to us, and tells them apart
// by where the kernel lists them. A process's parent is a thread: the
// kernel reparents orphans to the first live thread of the subreaper, the
// main thread, which is the network thread and never forks (every Runtime
// call runs on a worker thread). So /proc/self/task/<main tid>/children
// holds exactly the adopted processes; each gets a pidfd, and when it
// becomes readable, waitid(P_PIDFD) reaps that one process.
// When can a process be adopted? Only when one of our descendants exits:
// after a worker task (the intermediate exited inside it), or when an
// adopted process ends (its own orphans come to us). Both rescan, so
// nothing needs a timer or a signal handler.
class Reaper {
 public:
  explicit Reaper(asio::io_context& io) : io_(io) {}
  void rescan() {
    std::ifstream f("/proc/self/task/" + std::to_string(::getpid()) + "/children");
    pid_t pid;
    while (f >> pid) {
      if (watched_.count(pid)) continue;
      int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
      if (fd < 0) continue;
      watched_.insert(pid);
      auto d = std::make_shared<asio::posix::stream_descriptor>(io_, fd);
      d->async_wait(asio::posix::stream_descriptor::wait_read, [this, d, pid](boost::system::error_code) {
        siginfo_t si{};
        ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(d->native_handle()), &si, WEXITED | WNOHANG);
        watched_.erase(pid);
        rescan();
      });
    }
  }

 private:
  asio::io_context& io_;
  std::set<pid_t> watched_;
};

Server::Server(Options o)
    : opts_(std::move(o)),
      pool_({opts_.home, opts_.bin_dir}, opts_.max_workers, 4096),
      execs_(std::make_unique<ExecRegistry>(io_)),
      events_(std::make_unique<EventHub>(Runtime::Options{opts_.home, opts_.bin_dir})),
      reaper_(std::make_unique<Reaper>(io_)),
      idle_timer_(io_) {}

Server::~Server() = default;

bool Server::detach(WorkerPool::Task f) {
  return pool_.submit([this, f = std::move(f)](Result<Runtime*> rt) mutable {
    f(std::move(rt));
    asio::post(io_, [this] { children_may_have_changed(); });
  });
}

void Server::children_may_have_changed() { reaper_->rescan(); }

void Server::busy_begin() {
  ++busy_;
  idle_timer_.cancel();
}

void Server::busy_end() {
  if (--busy_ == 0) arm_idle_timer();
}

void Server::arm_idle_timer() {
  if (opts_.idle_exit <= 0 || busy_ > 0) return;
  idle_timer_.expires_after(std::chrono::seconds(opts_.idle_exit));
  idle_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || busy_ > 0) return;
    LOG_INFO("serve: idle for {} s; exiting", opts_.idle_exit);
    idle_exited_ = true;
    io_.stop();
  });
}

namespace {

// Binds the Unix socket, replacing a stale one (nothing accepts on it) but
// never a live server's.
Result<asio::local::stream_protocol::acceptor> bind_unix(asio::io_context& io, const std::string& path) {
  asio::local::stream_protocol::endpoint ep(path);
  {
    asio::local::stream_protocol::socket probe(io);
    boost::system::error_code ec;
    probe.connect(ep, ec);
    if (!ec) return fail(Error::conflict("a server is already listening on " + path));
    if (ec != asio::error::connection_refused && ec != asio::error::not_found && ec.value() != ENOENT)
      return fail(Error::sys("connect " + path, ec.value()));
  }
  ::unlink(path.c_str());
  asio::local::stream_protocol::acceptor a(io);
  boost::system::error_code ec;
  a.open(ep.protocol(), ec);
  // Bound under a umask that gives 0660 at once: no moment where others can connect.
  mode_t old = ::umask(0117);
  if (!ec) a.bind(ep, ec);
  ::umask(old);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(Error::sys("listen on " + path, ec.value()));
  ::chmod(path.c_str(), 0660);
  return a;
}

template <class Acceptor, class Make>
asio::awaitable<void> accept_loop(Acceptor& a, Make make) {
  for (;;) {
    boost::system::error_code ec;
    auto sock = co_await a.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // EMFILE and the like: back off briefly rather than spin.
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(50));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    make(std::move(sock));
  }
}

Result<std::string> read_token(const std::string& path) {
  auto t = read_file(path, 4096);
  if (!t) return fail(t.error().wrap("--token-file"));
  std::string s = *t;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.size() < 16) return fail(Error::invalid("--token-file: the token must be at least 16 characters"));
  return s;
}

}  // namespace

int Server::run() {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Writes to a pipe whose reader left (a client that went away) fail with
  // EPIPE instead of killing the server. Children get SIG_DFL back
  // (spawn_child resets dispositions; the shim ignores SIGPIPE itself).
  ::signal(SIGPIPE, SIG_IGN);

  // Open a Runtime once on a worker: a bad home fails here, not at the first request.
  {
    std::promise<Result<std::string>> p;
    auto fut = p.get_future();
    pool_.submit([&p](Result<Runtime*> rt) {
      if (!rt) p.set_value(std::unexpected(rt.error()));
      else p.set_value((*rt)->home());
    });
    auto home = fut.get();
    if (!home) {
      LOG_ERROR("serve: {}", home.error().message());
      return 1;
    }
    opts_.home = *home;
  }
  reaper_->rescan();
  std::string sock_path = opts_.socket_path.empty() ? opts_.home + "/cubby.sock" : opts_.socket_path;
  auto unix_acc = bind_unix(io_, sock_path);
  if (!unix_acc && unix_acc.error().kind() == ErrorKind::kConflict) {
    // Another server answers there: its readiness is ours, so concurrent
    // auto-starts (the SDK's) all see a server and none fails.
    std::fprintf(stderr, "cubby serve: %s; leaving it to serve\n", unix_acc.error().message().c_str());
    std::printf("cubby serve: listening on unix:%s\n", sock_path.c_str());
    std::fflush(stdout);
    return 0;
  }
  if (!unix_acc) {
    LOG_ERROR("serve: {}", unix_acc.error().message());
    return 1;
  }
  asio::co_spawn(io_, accept_loop(*unix_acc, [this](asio::local::stream_protocol::socket s) {
    asio::co_spawn(io_, serve_connection(*this, UnixStream(std::move(s))), asio::detached);
  }), asio::detached);

  std::optional<asio::ip::tcp::acceptor> tcp_acc;
  std::optional<asio::ssl::context> tls;
  if (!opts_.listen.empty()) {
    if (opts_.token_file.empty()) {
      LOG_ERROR("serve: --listen needs --token-file (TCP requests must carry a bearer token)");
      return 1;
    }
    auto token = read_token(opts_.token_file);
    if (!token) {
      LOG_ERROR("serve: {}", token.error().message());
      return 1;
    }
    std::string token_sha = sha256(*token);
    auto colon = opts_.listen.rfind(':');
    if (colon == std::string::npos) {
      LOG_ERROR("serve: --listen wants ADDR:PORT, got \"{}\"", opts_.listen);
      return 1;
    }
    std::string host = opts_.listen.substr(0, colon), port = opts_.listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(host.empty() ? "127.0.0.1" : host, ec);
    char* end = nullptr;
    long pn = std::strtol(port.c_str(), &end, 10);
    if (ec || port.empty() || *end || pn < 0 || pn > 65535) {
      LOG_ERROR("serve: --listen wants ADDR:PORT with a numeric address, got \"{}\"", opts_.listen);
      return 1;
    }
    tcp_acc.emplace(io_);
    asio::ip::tcp::endpoint ep(addr, static_cast<uint16_t>(pn));
    tcp_acc->open(ep.protocol(), ec);
    if (!ec) tcp_acc->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) tcp_acc->bind(ep, ec);
    if (!ec) tcp_acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      LOG_ERROR("serve: listen on {}: {}", opts_.listen, ec.message());
      return 1;
    }
    if (!opts_.tls_cert.empty() || !opts_.tls_key.empty()) {
      if (opts_.tls_cert.empty() || opts_.tls_key.empty()) {
        LOG_ERROR("serve: --tls-cert and --tls-key go together");
        return 1;
      }
      tls.emplace(asio::ssl::context::tls_server);
      tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
      tls->use_certificate_chain_file(opts_.tls_cert, ec);
      if (!ec) tls->use_private_key_file(opts_.tls_key, asio::ssl::context::pem, ec);
      if (ec) {
        LOG_ERROR("serve: TLS certificate or key: {}", ec.message());
        return 1;
      }
    }
    // The port actually bound (":0" picks one), for scripts and tests.
    LOG_INFO("serve: listening on {}:{}{}", tcp_acc->local_endpoint().address().to_string(),
             tcp_acc->local_endpoint().port(), tls ? " (TLS)" : "");
    std::fprintf(stderr, "cubby serve: listening on %s:%u%s\n", tcp_acc->local_endpoint().address().to_string().c_str(),
                 tcp_acc->local_endpoint().port(), tls ? " (TLS)" : "");
    asio::co_spawn(io_, accept_loop(*tcp_acc, [this, token_sha, &tls](asio::ip::tcp::socket s) {
      s.set_option(asio::ip::tcp::no_delay(true));
      if (tls)
        asio::co_spawn(io_, serve_connection(*this, TlsStream(TcpStream(std::move(s)), *tls), token_sha), asio::detached);
      else
        asio::co_spawn(io_, serve_connection(*this, TcpStream(std::move(s)), token_sha), asio::detached);
    }), asio::detached);
  }

  asio::signal_set stop(io_, SIGTERM, SIGINT);
  stop.async_wait([this](boost::system::error_code ec, int) {
    if (!ec) io_.stop();
  });
  std::fprintf(stderr, "cubby serve: listening on %s\n", sock_path.c_str());
  // The readiness line (api.md "Readiness"): the one thing ever written to
  // stdout, for a parent waiting on a pipe (EOF before it = failure).
  if (tcp_acc)
    std::printf("cubby serve: listening on tcp:%s:%u\n", tcp_acc->local_endpoint().address().to_string().c_str(),
                tcp_acc->local_endpoint().port());
  else
    std::printf("cubby serve: listening on unix:%s\n", sock_path.c_str());
  std::fflush(stdout);
  arm_idle_timer();
  io_.run();
  // Only our own socket goes; boxes live on in their shims.
  boost::system::error_code ec;
  unix_acc->close(ec);
  ::unlink(sock_path.c_str());
  // Blocked workers (a long exec, a wait) would hold the exit: the process
  // ends here, as after kill -9 it would; nothing is lost.
  std::fflush(nullptr);
  ::_exit(0);
}

}  // namespace cubby::server
