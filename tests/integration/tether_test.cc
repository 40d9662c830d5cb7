// Throwaway boxes (`shell`, an attached `run --rm`) are tethered to their
// client (issue 10): a client killed with SIGKILL (what subprocess.run's
// timeout does) takes its box along: the shim sees the tether hang up, stops
// the box and, as for any --rm box, removes it. Boxes that are not
// throwaway (`run` without --rm, `run -d`) outlive their client, as in
// Docker. The tether (the shim's fd 3) reaches no process but the shim, and
// the box's end status travels over it, so `run --rm` reports the real code
// even when the record is gone before the client reads it (rm -f: 137).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Tether : public BackendTest {
 protected:
  // A client whose stdout we read and whose stdin we hold open.
  struct Client {
    ChildProcess cli;
    UniqueFd in, out;
    std::string got;
  };
  Client spawn_client(const std::vector<std::string>& args) {
    auto [in_r, in_w] = sys::make_pipe().value();
    auto [out_r, out_w] = sys::make_pipe().value();
    SpawnSpec s;
    s.argv = {cubby_path(), "--home", home_};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.fds = {in_r.get(), out_w.get(), 2};
    auto c = spawn(s);
    EXPECT_TRUE(c) << (c ? "" : c.error().message());
    return Client{c ? std::move(*c) : ChildProcess(), std::move(in_w), std::move(out_r), {}};
  }
  // Reads the client's stdout until `text` (the workload says it runs).
  bool read_until(Client& c, const std::string& text) {
    char buf[256];
    while (c.got.find(text) == std::string::npos) {
      if (!sys::wait_readable(c.out.get(), 60s).value_or(false)) return false;  // backstop
      ssize_t n = ::read(c.out.get(), buf, sizeof buf);
      if (n <= 0) return false;
      c.got.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  std::string only_box_id() {
    auto j = json::parse(cubby({"ls", "-a", "--format", "json"}).out);
    EXPECT_EQ(j.size(), 1u);
    return j.empty() ? "" : j[0]["id"].get<std::string>();
  }
  // No process but `owner` holds the socket that is owner's fd `fd`.
  void expect_only_holder(pid_t owner, int fd) {
    std::string tether = std::filesystem::read_symlink("/proc/" + std::to_string(owner) + "/fd/" + std::to_string(fd));
    ASSERT_EQ(tether.rfind("socket:", 0), 0u) << "the shim's fd " << fd << " is " << tether;
    for (const auto& p : std::filesystem::directory_iterator("/proc")) {
      std::string name = p.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos || std::stoi(name) == owner) continue;
      std::error_code ec;
      for (const auto& f : std::filesystem::directory_iterator(p.path() / "fd", ec)) {
        std::error_code ec2;
        std::string comm = read_file(p.path().string() + "/comm").value_or("?");
        if (!comm.empty() && comm.back() == '\n') comm.pop_back();
        EXPECT_NE(std::filesystem::read_symlink(f.path(), ec2).string(), tether)
            << "process " << name << " (" << comm << ") holds the tether";
      }
    }
  }
  // The box is gone: no record, no directory, no process.
  void expect_gone(const std::string& id) {
    reap_adopted();
    EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "the throwaway box outlived its client";
    EXPECT_FALSE(std::filesystem::exists(home_ + "/boxes/" + id)) << "its directory outlived it";
    EXPECT_TRUE(processes_mentioning(id).empty()) << "a process still carries the box id";
    for (pid_t p : processes_mentioning(home_))
      if (auto fd = sys::pidfd_open(p)) (void)sys::wait_readable(fd->get(), 5s);
    EXPECT_TRUE(processes_mentioning(home_).empty()) << "a process (QEMU?) outlived the box";
  }
  // Kills the client of a running throwaway box and waits, by the shim's
  // pidfd, for the box to be gone.
  void kill_client_and_expect_box_gone(Client& c) {
    std::string id = only_box_id();
    pid_t shim = shim_pid(id);
    ASSERT_GT(shim, 0);
    auto shim_fd = sys::pidfd_open(shim).value();
    // A detached exec too: the tether reaches neither the box nor its execs.
    ASSERT_EQ(cubby({"exec", "-d", id, "sleep", "1000000"}).rc, 0);
    expect_only_holder(shim, 3);
    ASSERT_TRUE(c.cli.signal(SIGKILL));
    (void)c.cli.wait();
    // The shim's exit is the event (backstop: well past the stop grace).
    EXPECT_TRUE(sys::wait_readable(shim_fd.get(), 60s).value()) << "the box outlived its killed client";
    expect_gone(id);
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, Tether, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

TEST_P(Tether, KilledRunRmClientTakesItsBoxAlong) {
  auto c = spawn_client(box_args("run", {"--rm", image_, "sh", "-c", "echo ready; exec sleep 1000000"}));
  ASSERT_TRUE(read_until(c, "ready")) << c.got;
  kill_client_and_expect_box_gone(c);
}

TEST_P(Tether, KilledShellClientTakesItsBoxAlong) {
  auto c = spawn_client({"shell", "--isolation", isolation(), "--network", "none", image_});
  // The shell then waits on a command that never reads its stdin, so it is
  // not the end of stdin (the client's death) that ends the box.
  const std::string say = "echo shell-$((40+2)); sleep 1000000\n";
  ASSERT_EQ(::write(c.in.get(), say.data(), say.size()), static_cast<ssize_t>(say.size()));
  ASSERT_TRUE(read_until(c, "shell-42")) << c.got;
  kill_client_and_expect_box_gone(c);
}

// Docker semantics: only throwaway boxes are tied to their client.
TEST_P(Tether, BoxesThatAreNotThrowawayOutliveTheirClient) {
  auto c = spawn_client(box_args("run", {"--name", "kept", image_, "sh", "-c", "echo ready; exec sleep 1000000"}));
  ASSERT_TRUE(read_until(c, "ready")) << c.got;
  pid_t shim = shim_pid("kept");
  auto shim_fd = sys::pidfd_open(shim).value();
  ASSERT_TRUE(c.cli.signal(SIGKILL));
  (void)c.cli.wait();
  // Nothing is to happen: a tethered box would be stopping within milliseconds.
  EXPECT_FALSE(sys::wait_readable(shim_fd.get(), 2s).value()) << "a box run without --rm died with its client";
  EXPECT_EQ(status("kept"), "running");
  EXPECT_EQ(cubby({"exec", "kept", "true"}).rc, 0);
  ASSERT_EQ(cubby({"rm", "-f", "kept"}).rc, 0);
}

// The status travels to the attached client before --rm removes the record:
// the box killed whole (rm -f, or its PID 1 killed) is 137, a stop 143, an
// exit its own code; never "ended without an exit status" (125).
TEST_P(Tether, RunRmReportsTheRealStatusOfAKilledBox) {
  struct Case {
    const char* how;
    int code;
  };
  for (const Case& k : {Case{"rm -f", 137}, Case{"stop", 143}, Case{"exit", 7}}) {
    SCOPED_TRACE(k.how);
    std::string script = std::string(k.how) == "exit" ? "echo ready; read x; exit 7" : "echo ready; exec sleep 1000000";
    auto c = spawn_client(box_args("run", {"--rm", image_, "sh", "-c", script}));
    ASSERT_TRUE(read_until(c, "ready")) << c.got;
    std::string id = only_box_id();
    if (std::string(k.how) == "rm -f") ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
    if (std::string(k.how) == "stop") ASSERT_EQ(cubby({"stop", id}).rc, 0);
    if (std::string(k.how) == "exit") ASSERT_EQ(::write(c.in.get(), "\n", 1), 1);
    auto st = c.cli.wait();
    ASSERT_TRUE(st);
    EXPECT_EQ(st->shell_code(), k.code);
    expect_gone(id);
  }
}

}  // namespace
}  // namespace cubby::test
