// Memory pressure in a sandbox box (issue 10 item 8): the OOM killer must
// pick the workload, never the agent (PID 1, which reports the box's status),
// inspect must say that it struck; /tmp is on disk unless --tmpfs asks for RAM.
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

class SandboxMemory : public BoxTest {
 protected:
  // -v of the mem_hog helper: `/hog MIB` allocates and touches MIB MiB.
  std::vector<std::string> hog_volume() const { return {"-v", bin_dir() + "/mem_hog:/hog:ro"}; }
  json inspect(const std::string& box) { return json::parse(cubby({"inspect", box}).out); }
  // `run -d --memory 32m -v HOG:/hog:ro busybox CMD...`; returns the id.
  std::string run_hog_box(const std::vector<std::string>& cmd) {
    std::vector<std::string> args = {"-d", "--memory", "32m"};
    for (const auto& a : hog_volume()) args.push_back(a);
    args.push_back(image_);
    args.insert(args.end(), cmd.begin(), cmd.end());
    auto r = cubby(box_args("run", args));
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out.substr(0, 32);
  }
};

// The repro: 100 MB written into the box's filesystem (page cache, which the
// kernel reclaims) is fine under --memory 32m; a process that touches 100 MiB
// is OOM-killed, and the box ends with its status, 137, not 125.
TEST_F(SandboxMemory, OomKillsTheWorkloadAndTheBoxReportsIt) {
  std::vector<std::string> args = {"run", "--rm", "--network", "none", "--memory", "32m"};
  for (const auto& a : hog_volume()) args.push_back(a);
  for (const char* a : {"busybox", "sh", "-c", "dd if=/dev/zero of=/f bs=1M count=100 && /hog 100"}) args.push_back(a);
  auto rm = cubby(args);
  EXPECT_EQ(rm.rc, 137) << rm.err;
  EXPECT_NE(rm.err.find("100+0 records out"), std::string::npos) << "the write outside /tmp failed: " << rm.err;
  EXPECT_EQ(rm.out.find("touched"), std::string::npos) << rm.out;

  std::string id = run_hog_box({"/hog", "100"});
  EXPECT_EQ(cubby({"wait", id}).out, "137\n");
  auto j = inspect(id);
  EXPECT_EQ(j["status"], "exited");
  EXPECT_EQ(j["exit_code"], 137);
  EXPECT_EQ(j["oom_killed"], true) << j.dump();
  EXPECT_EQ(j["error"], nullptr) << j.dump();

  // A box that stays within its limit is not OOM-killed, and a restart
  // starts with a clean slate.
  std::string fine = run_hog_box({"/hog", "4"});
  EXPECT_EQ(cubby({"wait", fine}).out, "0\n");
  EXPECT_EQ(inspect(fine)["oom_killed"], false);
}

// Memory a workload holds outside any process (a tmpfs file: /dev/shm is
// 64 MiB, as in Docker, above this box's 32 MiB) left the agent as the
// biggest process, and the OOM killer took it: the box ended 137 with no
// status and `run --rm` said 125. Now the writer is the one killed.
TEST_F(SandboxMemory, TmpfsFillKillsTheWriterNotTheAgent) {
  auto rm = cubby({"run", "--rm", "--network", "none", "--memory", "32m", image_, "dd", "if=/dev/zero",
                   "of=/dev/shm/f", "bs=1M", "count=100"});
  EXPECT_EQ(rm.rc, 137) << rm.err;
  EXPECT_EQ(rm.err.find("ended without an exit status"), std::string::npos) << rm.err;
}

// An exec that runs out of memory is killed; the agent, and so the box,
// lives on and serves the next exec; inspect tells of the kill at the end.
TEST_F(SandboxMemory, AgentOutlivesAnOomKilledExec) {
  std::string id = run_hog_box({"sleep", "1000000"});
  auto hog = cubby({"exec", id, "/hog", "100"});
  EXPECT_EQ(hog.rc, 137) << hog.out << hog.err;
  auto shm = cubby({"exec", id, "dd", "if=/dev/zero", "of=/dev/shm/f", "bs=1M", "count=100"});
  EXPECT_EQ(shm.rc, 137) << shm.err;
  EXPECT_EQ(status(id), "running") << "the agent was OOM-killed";
  auto freed = cubby({"exec", id, "rm", "/dev/shm/f"});
  EXPECT_EQ(freed.rc, 0) << freed.err;
  auto after = cubby({"exec", id, "echo", "alive"});
  EXPECT_EQ(after.rc, 0) << after.err;
  EXPECT_EQ(after.out, "alive\n");
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(inspect(id)["oom_killed"], false) << "only an ended run reports";
  auto stop = cubby({"stop", "-t", "0", id});
  ASSERT_EQ(stop.rc, 0) << stop.err;
  EXPECT_EQ(inspect(id)["oom_killed"], true);
  // The next run starts with no OOM kill on record.
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  EXPECT_EQ(inspect(id)["oom_killed"], false);
}

// /tmp is part of the box's filesystem, as in Docker (issue 13 item 3): its
// files are on disk, in the box's upper layer, so 100 MB fit under --memory
// 32m (page cache the kernel reclaims, as for any file). What bounds them is
// the box's disk: on the sandbox the free space of the filesystem holding
// the home (no per-box quota, as Docker's overlay2 without one). A RAM /tmp
// is `--tmpfs /tmp` (then bounded by its size=, ENOSPC past it).
TEST_F(SandboxMemory, TmpIsOnDiskAndATmpfsOnlyWhenAskedFor) {
  auto fill = cubby({"run", "--rm", "--network", "none", "--memory", "32m", image_, "sh", "-c",
                     "grep ' /tmp ' /proc/mounts; dd if=/dev/zero of=/tmp/f bs=1M count=100 && echo filled"});
  EXPECT_EQ(fill.rc, 0) << fill.err;
  EXPECT_EQ(fill.out, "filled\n") << "/tmp is a mount of its own: " << fill.out;

  auto tmpfs = cubby({"run", "--rm", "--network", "none", "--tmpfs", "/tmp:size=8m", image_, "sh", "-c",
                      "grep ' /tmp ' /proc/mounts; dd if=/dev/zero of=/tmp/f bs=1M count=100"});
  EXPECT_EQ(tmpfs.rc, 1) << tmpfs.err;
  EXPECT_NE(tmpfs.out.find("tmpfs /tmp tmpfs rw,nosuid,nodev,noexec,relatime,size=8192k"), std::string::npos) << tmpfs.out;
  EXPECT_NE(tmpfs.err.find("No space left on device"), std::string::npos) << tmpfs.err;
}

}  // namespace
}  // namespace cubby::test
