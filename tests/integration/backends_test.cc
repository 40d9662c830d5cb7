// The core lifecycle cases, parametrised over both backends (Sandbox2 runs
// its suites over both monitors the same way). The vm cases boot under TCG
// here (CUBBY_VM_ACCEL=tcg, ~2-3 s a boot), so this is a focused subset of
// lifecycle_test.cc, not all of it.
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Backends : public BoxTest, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "vm") {
      if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0) GTEST_SKIP() << "qemu-system-x86_64 is not installed";
      if (::access((bin_dir() + "/../assets/initramfs.cpio.gz").c_str(), R_OK) != 0)
        GTEST_SKIP() << "vm assets not built";
      ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
    }
    BoxTest::SetUp();
  }
  void TearDown() override {
    if (home_.empty()) return;
    BoxTest::TearDown();
    for (pid_t p : processes_mentioning(home_))
      if (auto fd = sys::pidfd_open(p)) (void)sys::wait_readable(fd->get(), 5s);
    EXPECT_TRUE(processes_mentioning(home_).empty()) << "a process (QEMU?) outlived its box";
    ::unsetenv("CUBBY_VM_ACCEL");
  }
  std::string start_box(const std::vector<std::string>& cmd = {"sleep", "1000000"}) {
    std::vector<std::string> a = {"run", "-d", "--isolation", GetParam(), "--network", "none", image_};
    a.insert(a.end(), cmd.begin(), cmd.end());
    auto r = cubby(a);
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out.substr(0, 32);
  }
};

TEST_P(Backends, ExecExitCodesAndConcurrentExecs) {
  std::string id = start_box();
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "exit 7"}).rc, 7);
  EXPECT_EQ(cubby({"exec", id, "false"}).rc, 1);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "kill -9 $$"}).rc, 137);
  EXPECT_EQ(cubby({"exec", id, "no-such-binary"}).rc, 127);
  std::vector<std::thread> threads;
  std::vector<CmdResult> results(8);
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] { results[i] = run_cubby(home_, {"exec", id, "sh", "-c", "echo n=$0; exit $0", std::to_string(i)}); });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(results[i].rc, i) << results[i].err;
    EXPECT_EQ(results[i].out, "n=" + std::to_string(i) + "\n");
  }
}

TEST_P(Backends, OrphansAreReapedAndStatusesStayTrue) {
  std::string id = start_box();
  ASSERT_EQ(cubby({"exec", id, "sh", "-c",
                   "mkfifo /tmp/gate; i=0; while [ $i -lt 50 ]; do (cat /tmp/gate >/dev/null &); i=$((i+1)); done"}).rc, 0);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "exec 3>/tmp/gate; exec 3>&-"}).rc, 0);
  EXPECT_EQ(cubby({"exec", "--timeout", "30", id, "sh", "-c", "while pgrep cat >/dev/null; do :; done"}).rc, 0);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "ps -o stat | grep -c Z"}).out, "0\n");
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "exit 5"}).rc, 5);
}

TEST_P(Backends, StopSendsSigtermAndRecordsIt) {
  std::string id = start_box();
  EXPECT_EQ(cubby({"stop", id}).rc, 0);
  auto j = json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["status"], "stopped");
  EXPECT_EQ(j["exit_code"], 143);
  EXPECT_EQ(j["isolation"], GetParam());
}

TEST_P(Backends, RmForceLeavesNothing) {
  std::string id = start_box();
  EXPECT_NE(cubby({"rm", id}).rc, 0) << "rm must refuse a running box";
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  reap_adopted();
  EXPECT_TRUE(processes_mentioning(id).empty());
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
}

INSTANTIATE_TEST_SUITE_P(BothBackends, Backends, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace cubby::test
