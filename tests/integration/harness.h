// Integration-test harness: runs the real cubby CLI against a fresh home per
// test, and after every test checks that nothing leaked: no cubby process
// (shim, agent, CLI) beyond those alive at the start, no zombies, no mounts
// under the home, no cgroups, no fds in this process, no box directories.
//
// The test process is a child subreaper (as init is on a normal host), so
// detached shims are adopted by it and reaped here, by pid, when they end.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "base/process.h"
#include "base/unique_fd.h"

namespace cubby::test {

struct CmdResult {
  int rc = -1;
  std::string out, err;
  // stderr lines, for "one clear line" checks.
  std::vector<std::string> err_lines() const;
};

std::string bin_dir();
std::string cubby_path();

// Runs `cubby --home HOME ARGS...`, feeding `input` on stdin (nothing: /dev/null).
CmdResult run_cubby(const std::string& home, const std::vector<std::string>& args,
                    const std::optional<std::string>& input = std::nullopt);
// Starts it without waiting; its stdin/stdout/stderr are the given fds (-1: /dev/null).
ChildProcess spawn_cubby(const std::string& home, const std::vector<std::string>& args, int out_fd = -1,
                         int err_fd = -1, int in_fd = -1);

// Processes whose argv[0] is one of cubby's binaries.
std::set<pid_t> cubby_processes();
// Every pid whose cmdline mentions `needle`.
std::vector<pid_t> processes_mentioning(const std::string& needle);
// Children of pid (from /proc/PID/task/*/children).
std::vector<pid_t> children_of(pid_t pid);
// Whether `ancestor` is pid's parent, or its parent's, and so on.
bool descends_from(pid_t pid, pid_t ancestor);
// Reaps zombies adopted by this (subreaper) process; returns how many.
int reap_adopted();

class BoxTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  CmdResult cubby(const std::vector<std::string>& args, const std::optional<std::string>& input = std::nullopt) {
    return run_cubby(home_, args, input);
  }
  // `VERB --isolation <backend> --network none ARGS...` (VERB: run or create).
  std::vector<std::string> box_args(const std::string& verb, const std::vector<std::string>& args) const;
  // `run -d` on this test's backend and return the id (asserting success).
  std::string run_detached(const std::vector<std::string>& extra = {"sleep", "1000000"});
  // The shim pid recorded for a box (via inspect).
  pid_t shim_pid(const std::string& box);
  std::string status(const std::string& box);

  bool vm() const { return isolation_ == "vm"; }

  std::string home_;
  std::string image_ = "busybox";
  // The backend this test's boxes use; a fixture sets it in its constructor.
  // "vm" boxes boot under TCG (CUBBY_VM_ACCEL=tcg, ~2.5 s a boot, as these
  // hosts have no KVM); the test is skipped where QEMU or the guest assets
  // are missing.
  std::string isolation_ = "sandbox";

 private:
  // Every box directory created in this home during the test (inotify), so
  // leak checks cover exactly this test's boxes, even removed ones, and are
  // not confused by other cubby users on the machine.
  std::set<std::string> boxes_seen();
  UniqueFd box_watch_;
  int fds_before_ = 0;
};

// A BoxTest run once per backend: GetParam() is "sandbox" or "vm" (see
// isolation_ for how vm boxes run and when they are skipped).
class BackendTest : public BoxTest, public ::testing::WithParamInterface<std::string> {
 protected:
  BackendTest() { isolation_ = GetParam(); }
  const std::string& isolation() const { return isolation_; }
};

// The cgroup directories a box id has (should be none once it is gone).
std::vector<std::string> cgroups_of(const std::string& id);
// cubby processes descended from this process.
std::set<pid_t> descendant_cubby_processes();
int count_fds();
// A process's resident set (VmRSS in /proc/PID/status), in KiB; -1 if gone.
long rss_kib(pid_t pid);

}  // namespace cubby::test
