// Per-session flow control on the vm backend's single multiplexed stream.
// A client that stops reading must stall only its own session (no
// head-of-line blocking of the others), and the shim must not buffer the
// stalled session's output without bound: credits per channel let the
// guest send at most a window ahead of what the host has delivered.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

class FlowControl : public BackendTest {};

TEST_P(FlowControl, UnreadOutputStallsOnlyItsSessionAndStaysBounded) {
  auto run = cubby({"run", "-d", "--network", "none", "--isolation", isolation(), image_, "sleep", "1000000"});
  ASSERT_EQ(run.rc, 0) << run.err;
  std::string id = run.out.substr(0, 32);
  pid_t shim = nlohmann::json::parse(cubby({"inspect", id}).out)["pid"].get<pid_t>();
  long before = rss_kib(shim);

  // Session A: 32 MB of output into a pipe nobody reads yet.
  auto pipe = sys::make_pipe();
  ASSERT_TRUE(pipe);
  auto& [r, w] = *pipe;
  auto a = spawn_cubby(home_, {"exec", id, "head", "-c", "32000000", "/dev/zero"}, w.get());
  w.reset();
  // Session B runs a real workload meanwhile (long enough under TCG for A's
  // producer to push tens of MB if nothing held it back) and must finish.
  auto b = cubby({"exec", id, "sh", "-c", "head -c 24000000 /dev/zero | wc -c"});
  EXPECT_EQ(b.rc, 0) << b.err;
  EXPECT_EQ(b.out, "24000000\n");
  long grown = rss_kib(shim) - before;
  EXPECT_LT(grown, 12 * 1024) << "the shim buffered " << grown << " KiB for a session nobody reads";

  // Now read A: every byte arrives, and A ends with the command's code.
  uint64_t total = 0;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(r.get(), buf, sizeof buf);
    if (n <= 0) break;
    total += static_cast<uint64_t>(n);
  }
  EXPECT_EQ(total, 32000000u);
  auto st = a.wait();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->shell_code(), 0);
}

INSTANTIATE_TEST_SUITE_P(Vm, FlowControl, ::testing::Values("vm"), [](const auto& info) { return info.param; });

}  // namespace
}  // namespace cubby::test
