// Interactive sessions (SPEC §3 guarantee 10) driven through a real
// pseudo-terminal owned by the test, as a person's terminal would be.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

// The test's side of a terminal running `cubby ...`.
class Terminal {
 public:
  Terminal(const std::string& home, const std::vector<std::string>& args, unsigned short rows = 30,
           unsigned short cols = 100) {
    master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    EXPECT_TRUE(master_.valid());
    ::grantpt(master_.get());
    ::unlockpt(master_.get());
    char name[128];
    ::ptsname_r(master_.get(), name, sizeof name);
    slave_.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
    winsize w{rows, cols, 0, 0};
    ::ioctl(master_.get(), TIOCSWINSZ, &w);
    ::tcgetattr(slave_.get(), &before_);
    SpawnSpec s;
    s.argv = {cubby_path(), "--home", home};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.fds = {slave_.get(), slave_.get(), slave_.get()};
    s.new_session = true;
    s.controlling_tty = true;
    s.env = std::vector<std::string>{"PATH=/usr/bin:/bin", "TERM=xterm-256color"};
    auto c = spawn(s);
    EXPECT_TRUE(c) << (c ? "" : c.error().message());
    if (c) child_ = std::move(*c);
  }

  void type(const std::string& keys) { ASSERT_EQ(::write(master_.get(), keys.data(), keys.size()), (ssize_t)keys.size()); }

  // Reads until `needle` shows up in the output (backstop: 20 s).
  bool expect(const std::string& needle) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (screen_.find(needle, seen_) == std::string::npos) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{master_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[4096];
      ssize_t n = ::read(master_.get(), buf, sizeof buf);
      if (n <= 0) return false;
      screen_.append(buf, static_cast<size_t>(n));
    }
    seen_ = screen_.find(needle, seen_) + needle.size();
    return true;
  }

  void resize(unsigned short rows, unsigned short cols) {
    winsize w{rows, cols, 0, 0};
    ::ioctl(master_.get(), TIOCSWINSZ, &w);  // the kernel signals the foreground group: our CLI
  }

  int wait() {
    auto st = child_.wait();
    // Drain what is left so `screen()` is complete.
    char buf[4096];
    ::fcntl(master_.get(), F_SETFL, O_NONBLOCK);
    ssize_t n;
    while ((n = ::read(master_.get(), buf, sizeof buf)) > 0) screen_.append(buf, static_cast<size_t>(n));
    return st ? st->shell_code() : -1;
  }

  ChildProcess& cli() { return child_; }
  const std::string& screen() const { return screen_; }
  bool termios_restored() {
    termios now;
    ::tcgetattr(slave_.get(), &now);
    return now.c_lflag == before_.c_lflag && now.c_iflag == before_.c_iflag && now.c_oflag == before_.c_oflag;
  }

 private:
  UniqueFd master_, slave_;
  ChildProcess child_;
  std::string screen_;
  size_t seen_ = 0;
  termios before_{};
};

// No byte of the control protocol may reach the terminal.
void expect_no_protocol_bytes(const std::string& screen) {
  for (const char* marker : {"\x81\xa1t", "\xa4pong", "\xa4ping", "hello\xa1v", "\xa3out"})
    EXPECT_EQ(screen.find(marker), std::string::npos) << "protocol bytes on the terminal";
  EXPECT_EQ(screen.find(std::string("\0\0\0", 3)), std::string::npos) << "frame headers on the terminal";
}

class Terminals : public BoxTest {};

TEST_F(Terminals, ShellRunsCommandsAndExitsWithItsCode) {
  Terminal t(home_, {"shell", "--network", "none"});
  ASSERT_TRUE(t.expect("# ")) << t.screen();
  t.type("echo hel''lo-from-box\r");
  ASSERT_TRUE(t.expect("hello-from-box")) << t.screen();
  t.type("exit 3\r");
  EXPECT_EQ(t.wait(), 3);
  EXPECT_TRUE(t.termios_restored()) << "the terminal was left in raw mode";
  expect_no_protocol_bytes(t.screen());
  auto ls = run_cubby(home_, {"ls", "-a", "-q"});
  EXPECT_EQ(ls.out, "") << "the temporary box outlived its shell";
}

TEST_F(Terminals, CtrlDEndsTheShellWithZero) {
  Terminal t(home_, {"shell", "--network", "none"});
  ASSERT_TRUE(t.expect("# ")) << t.screen();
  t.type("\x04");
  EXPECT_EQ(t.wait(), 0);
  EXPECT_TRUE(t.termios_restored());
  EXPECT_EQ(run_cubby(home_, {"ls", "-a", "-q"}).out, "");
}

TEST_F(Terminals, TerminalIsRestoredWhenTheCliIsSignalled) {
  Terminal t(home_, {"shell", "--network", "none"});
  ASSERT_TRUE(t.expect("# ")) << t.screen();
  ASSERT_TRUE(t.cli().signal(SIGTERM));
  EXPECT_EQ(t.wait(), 128 + SIGTERM);
  EXPECT_TRUE(t.termios_restored()) << "raw mode survived a SIGTERM";
  EXPECT_EQ(run_cubby(home_, {"ls", "-a", "-q"}).out, "") << "the temporary box outlived its terminal";
}

TEST_F(Terminals, InitialSizeAndResizeReachTheBox) {
  Terminal t(home_, {"shell", "--network", "none"}, 30, 100);
  ASSERT_TRUE(t.expect("# ")) << t.screen();
  t.type("stty size; echo TERM=$TERM\r");
  EXPECT_TRUE(t.expect("30 100")) << t.screen();
  EXPECT_TRUE(t.expect("TERM=xterm-256color")) << t.screen();
  t.resize(40, 120);
  // The resize travels CLI (SIGWINCH) -> agent (TIOCSWINSZ) -> shell.
  t.type("stty size\r");
  EXPECT_TRUE(t.expect("40 120")) << t.screen();
  t.type("exit\r");
  EXPECT_EQ(t.wait(), 0);
}

TEST_F(Terminals, TwentySessionsLeaveTheAgentAsTheyFoundIt) {
  std::string id = run_detached();
  pid_t shim = shim_pid(id);
  auto agent_kids = children_of(shim);
  ASSERT_EQ(agent_kids.size(), 1u);
  pid_t agent = agent_kids[0];
  auto fds_of = [](pid_t p) {
    int n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(p) + "/fd")) ++n;
    return n;
  };
  auto threads_of = [](pid_t p) {
    auto st = read_file("/proc/" + std::to_string(p) + "/status").value_or("");
    auto at = st.find("Threads:");
    return std::stoi(st.substr(at + 8));
  };
  int agent_fds = -1, shim_fds = -1, agent_threads = -1, shim_threads = -1;
  for (int i = 0; i < 20; ++i) {
    Terminal t(home_, {"exec", "-it", id, "sh"});
    ASSERT_TRUE(t.expect("# ")) << i << ": " << t.screen();
    t.type("exit\r");
    ASSERT_EQ(t.wait(), 0) << t.screen();
    expect_no_protocol_bytes(t.screen());
    // The agent closes the session when it sends the exit; a ping on a
    // fresh session proves it processed everything before we count.
    ASSERT_EQ(run_cubby(home_, {"exec", id, "true"}).rc, 0);
    if (i == 0) {
      agent_fds = fds_of(agent), shim_fds = fds_of(shim);
      agent_threads = threads_of(agent), shim_threads = threads_of(shim);
    }
  }
  // The last session's teardown can still be in flight when we count (the
  // agent closes a finished exec's pty and socket after its exit frame is
  // out: 2 in 10 runs saw up to 4 more); a leak per session would show as
  // 19 or more.
  EXPECT_LE(fds_of(agent), agent_fds + 4) << "was " << agent_fds << " after the first session";
  EXPECT_LE(fds_of(shim), shim_fds + 4) << "was " << shim_fds << " after the first session";
  EXPECT_EQ(threads_of(agent), agent_threads);
  EXPECT_EQ(threads_of(shim), shim_threads);
  auto z = run_cubby(home_, {"exec", id, "sh", "-c", "ps -o stat | grep -c Z"});
  EXPECT_EQ(z.out, "0\n");
}

TEST_F(Terminals, KilledCliLeavesTheShellReattachable) {
  auto r = run_cubby(home_, {"run", "-dit", "--name", "keep", "--network", "none", image_, "sh"});
  ASSERT_EQ(r.rc, 0) << r.err;
  {
    Terminal t(home_, {"attach", "keep"});
    t.type("echo first-$((40+2))\r");
    ASSERT_TRUE(t.expect("first-42")) << t.screen();
    ASSERT_TRUE(t.cli().signal(SIGKILL));
    t.wait();
  }
  EXPECT_EQ(status("keep"), "running") << "a dropped client must not end the shell";
  Terminal again(home_, {"attach", "keep"});
  again.type("echo second-$((40+3))\r");
  ASSERT_TRUE(again.expect("second-43")) << again.screen();
  // Docker's detach keys leave it running...
  again.type("\x10\x11");
  EXPECT_EQ(again.wait(), 0);
  EXPECT_TRUE(again.termios_restored());
  EXPECT_EQ(status("keep"), "running");
  // ...and `exit 5` ends it with 5.
  Terminal last(home_, {"attach", "keep"});
  last.type("exit 5\r");
  EXPECT_EQ(last.wait(), 5);
  EXPECT_EQ(status("keep"), "exited");
  auto j = nlohmann::json::parse(run_cubby(home_, {"inspect", "keep"}).out);
  EXPECT_EQ(j["exit_code"], 5);
}

// A killed `cubby shell` takes its throwaway box along, and soon: the shim
// hangs the shell up (SIGHUP; an interactive shell ignores SIGTERM, so a
// plain stop would wait out its grace period).
TEST_F(Terminals, KilledShellClientTakesItsBoxAlongAtOnce) {
  Terminal t(home_, {"shell", "--network", "none"});
  t.type("echo ready-$((40+2))\r");
  ASSERT_TRUE(t.expect("ready-42")) << t.screen();
  auto ls = nlohmann::json::parse(run_cubby(home_, {"ls", "--format", "json"}).out);
  ASSERT_EQ(ls.size(), 1u);
  std::string id = ls[0]["id"];
  auto shim = sys::pidfd_open(ls[0]["pid"].get<pid_t>()).value();
  ASSERT_TRUE(t.cli().signal(SIGKILL));
  t.wait();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(sys::wait_readable(shim.get(), 60s).value()) << "the shell's box outlived its killed client";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "the shell was not hung up (it waited out the grace)";
  reap_adopted();
  EXPECT_EQ(run_cubby(home_, {"ls", "-a", "-q"}).out, "") << "the temporary box outlived its killed client";
}

// Detaching (Ctrl-P Ctrl-Q) from an attached `run --rm -it` unties the box
// from its client: it runs on after the client exits, and --rm still
// removes it when it ends.
TEST_F(Terminals, DetachedRunRmBoxOutlivesItsClient) {
  Terminal t(home_, {"run", "--rm", "-it", "--name", "detached", "--network", "none", image_, "sh"});
  t.type("echo attached-$((40+3))\r");
  ASSERT_TRUE(t.expect("attached-43")) << t.screen();
  auto shim = sys::pidfd_open(shim_pid("detached")).value();
  t.type("\x10\x11");
  EXPECT_EQ(t.wait(), 0);
  // Nothing is to happen: a still tethered box would be stopping within milliseconds.
  EXPECT_FALSE(sys::wait_readable(shim.get(), 2s).value()) << "the detached box died with its client";
  EXPECT_EQ(status("detached"), "running");
  ASSERT_EQ(run_cubby(home_, {"stop", "-t", "0", "detached"}).rc, 0);
  EXPECT_TRUE(sys::wait_readable(shim.get(), 20s).value());
  reap_adopted();
  EXPECT_EQ(run_cubby(home_, {"ls", "-a", "-q"}).out, "") << "--rm did not remove the detached box";
}

TEST_F(Terminals, DroppedExecTerminalIsHungUp) {
  std::string id = run_detached();
  Terminal t(home_, {"exec", "-it", id, "sh", "-c", "echo $$ > /tmp/shell.pid; exec sh"});
  ASSERT_TRUE(t.expect("# ")) << t.screen();
  auto pid = run_cubby(home_, {"exec", id, "cat", "/tmp/shell.pid"}).out;
  ASSERT_FALSE(pid.empty());
  ASSERT_TRUE(t.cli().signal(SIGKILL));
  t.wait();
  // The agent hangs up the session's terminal: the shell gets SIGHUP and
  // exits, so nothing waits forever on a terminal nobody holds. (Inside the
  // box, bounded by --timeout.)
  pid.pop_back();
  auto gone = run_cubby(home_, {"exec", "--timeout", "10", id, "sh", "-c", "while kill -0 " + pid + " 2>/dev/null; do :; done"});
  EXPECT_EQ(gone.rc, 0) << "the exec's shell survived its dropped terminal";
}

}  // namespace
}  // namespace cubby::test
