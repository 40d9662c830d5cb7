// Per-box cgroups. The "Real" tests use the host's cgroups (v1 on the dev
// machine; they need root) and remove everything they create. The "Fake"
// tests run the v2 (and v1 error) paths against a temp dir posing as
// /sys/fs/cgroup, since v2 can't be tried for real on a v1 host.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>

#include "base/fs.h"
#include "base/sys.h"
#include "sandbox/cgroup.h"
#include "sandbox/cgroup_internal.h"

namespace sb = cubby::sandbox;
namespace fs = std::filesystem;

namespace {

std::string unique_box_id(const char* tag) {
  static int n = 0;
  return std::string("test-") + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string read_trim(const std::string& path) {
  auto r = cubby::read_file(path);
  return r ? trim(*r) : "<" + r.error().message() + ">";
}

bool exists(const std::string& p) { return ::access(p.c_str(), F_OK) == 0; }

// Removes a box's directories whatever happened in the test.
struct BoxCleanup {
  std::string id;
  ~BoxCleanup() {
    (void)sb::destroy_box_cgroup(id);
    for (const char* c : sb::detail::kControllers)
      ::rmdir(("/sys/fs/cgroup/" + std::string(c) + "/cubby/" + id).c_str());
    ::rmdir(("/sys/fs/cgroup/cubby/" + id).c_str());
  }
};

// A forked child blocked reading a pipe until killed or released.
struct BlockedChild {
  pid_t pid = -1;
  cubby::UniqueFd release_w;
  BlockedChild() {
    auto p = cubby::sys::make_pipe().value();
    pid = ::fork();
    if (pid == 0) {
      p.second.reset();
      char b;
      (void)::read(p.first.get(), &b, 1);
      ::_exit(0);
    }
    release_w = std::move(p.second);
  }
  BlockedChild(const BlockedChild&) = delete;
  int reap() {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return st;
  }
  ~BlockedChild() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      reap();
    }
  }
};

bool procs_contains(const std::string& dir, pid_t pid) {
  auto pids = sb::detail::read_procs(dir).value();
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

class RealCgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    ::unsetenv("CUBBY_CGROUP_ROOT");
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    if (sb::detect_cgroup_version() == sb::CgroupVersion::kNone) GTEST_SKIP() << "no cgroups";
  }
};

// A fake cgroup root in a temp dir, removed afterwards.
class FakeRoot : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cubby-cgroup-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    ::unsetenv("CUBBY_CGROUP_ROOT");
    (void)cubby::remove_tree(root_);
  }
  void put(const std::string& rel, const std::string& content) {
    fs::create_directories(fs::path(root_ + "/" + rel).parent_path());
    ASSERT_TRUE(cubby::write_file(root_ + "/" + rel, content).has_value());
  }
  std::string root_;
};

}  // namespace

TEST(CgroupLimits, V1Formatting) {
  sb::CgroupLimits l{64ll << 20, 0.5, 20};
  auto w = sb::detail::v1_limit_writes(l).value();
  ASSERT_EQ(w.size(), 5u);
  EXPECT_EQ(w[0].file, "memory.limit_in_bytes");
  EXPECT_EQ(w[0].value, "67108864");
  EXPECT_EQ(w[1].file, "memory.memsw.limit_in_bytes");
  EXPECT_TRUE(w[1].optional);
  EXPECT_EQ(w[2].file, "cpu.cfs_period_us");
  EXPECT_EQ(w[2].value, "100000");
  EXPECT_EQ(w[3].file, "cpu.cfs_quota_us");
  EXPECT_EQ(w[3].value, "50000");
  EXPECT_EQ(w[4].file, "pids.max");
  EXPECT_EQ(w[4].value, "20");
}

TEST(CgroupLimits, V2Formatting) {
  sb::CgroupLimits l{64ll << 20, 1.5, -1};
  auto w = sb::detail::v2_limit_writes(l).value();
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].file, "memory.max");
  EXPECT_EQ(w[0].value, "67108864");
  EXPECT_EQ(w[1].file, "memory.swap.max");
  EXPECT_EQ(w[1].value, "0");
  EXPECT_EQ(w[2].file, "cpu.max");
  EXPECT_EQ(w[2].value, "150000 100000");
  EXPECT_EQ(w[3].file, "pids.max");
  EXPECT_EQ(w[3].value, "max");
  EXPECT_TRUE(sb::detail::v2_limit_writes({}).value().empty());
}

TEST(CgroupLimits, RejectsNonsense) {
  EXPECT_EQ(sb::detail::v1_limit_writes({0, {}, {}}).error().kind(), cubby::ErrorKind::kInvalid);
  EXPECT_EQ(sb::detail::v2_limit_writes({{}, 0.001, {}}).error().kind(), cubby::ErrorKind::kInvalid);
  EXPECT_EQ(sb::detail::v2_limit_writes({{}, -1.0, {}}).error().kind(), cubby::ErrorKind::kInvalid);
  EXPECT_FALSE(sb::detail::validate_box_id("../x").has_value());
  EXPECT_FALSE(sb::detail::validate_box_id("..").has_value());
  EXPECT_FALSE(sb::detail::validate_box_id("").has_value());
  EXPECT_TRUE(sb::detail::validate_box_id("3f2a9c").has_value());
}

TEST_F(RealCgroup, HostIsV1) {
  // The dev machine: v1 controllers, a cgroup2 at /sys/fs/cgroup/unified holding only hugetlb.
  if (!exists("/sys/fs/cgroup/memory/tasks")) GTEST_SKIP() << "not the v1 dev host";
  EXPECT_EQ(sb::detect_cgroup_version(), sb::CgroupVersion::kV1);
  EXPECT_STREQ(sb::to_string(sb::detect_cgroup_version()), "v1");
}

TEST_F(RealCgroup, CreateAppliesLimitsAndDestroyKillsAndRemoves) {
  BoxCleanup cleanup{unique_box_id("limits")};
  const std::string& id = cleanup.id;
  auto cg = sb::Cgroup::create(id, {64ll << 20, 0.5, 20});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  auto paths = (*cg)->paths();
  ASSERT_FALSE(paths.empty());

  // The limits are the workload leaf's; the agent leaf has none.
  if (sb::detect_cgroup_version() == sb::CgroupVersion::kV1) {
    std::string m = "/sys/fs/cgroup/memory/cubby/" + id;
    std::string c = "/sys/fs/cgroup/cpu/cubby/" + id;
    std::string p = "/sys/fs/cgroup/pids/cubby/" + id;
    std::vector<std::string> want = {m, c, p};
    // Freezer (for pause), cpuacct and blkio (for stats) cgroups too where
    // those hierarchies are mounted apart from cpu.
    for (const char* ctrl : {"freezer", "cpuacct", "blkio"}) {
      std::string h = std::string("/sys/fs/cgroup/") + ctrl;
      char real[PATH_MAX], cpu_real[PATH_MAX];
      if (exists(h + "/cgroup.procs") && ::realpath(h.c_str(), real) &&
          !(::realpath("/sys/fs/cgroup/cpu", cpu_real) && std::string(real) == cpu_real))
        want.push_back(h + "/cubby/" + id);
    }
    EXPECT_EQ(paths, want);
    EXPECT_EQ(read_trim(m + "/workload/memory.limit_in_bytes"), "67108864");
    if (exists(m + "/workload/memory.memsw.limit_in_bytes")) {
      EXPECT_EQ(read_trim(m + "/workload/memory.memsw.limit_in_bytes"), "67108864");
    }
    EXPECT_EQ(read_trim(c + "/workload/cpu.cfs_period_us"), "100000");
    EXPECT_EQ(read_trim(c + "/workload/cpu.cfs_quota_us"), "50000");
    EXPECT_EQ(read_trim(p + "/workload/pids.max"), "20");
    EXPECT_EQ(read_trim(m + "/agent/memory.limit_in_bytes"), read_trim(m + "/memory.limit_in_bytes"));
    EXPECT_EQ(read_trim(m + "/memory.limit_in_bytes"), read_trim("/sys/fs/cgroup/memory/cubby/memory.limit_in_bytes"));
    EXPECT_EQ(read_trim(c + "/agent/cpu.cfs_quota_us"), "-1");
    EXPECT_EQ(read_trim(p + "/agent/pids.max"), "max");
    EXPECT_EQ(read_trim(p + "/pids.max"), "max");
  } else {
    std::string d = "/sys/fs/cgroup/cubby/" + id;
    EXPECT_EQ(read_trim(d + "/workload/memory.max"), "67108864");
    EXPECT_EQ(read_trim(d + "/workload/cpu.max"), "50000 100000");
    EXPECT_EQ(read_trim(d + "/workload/pids.max"), "20");
    EXPECT_EQ(read_trim(d + "/agent/memory.max"), "max");
    EXPECT_EQ(read_trim(d + "/agent/pids.max"), "max");
  }

  BlockedChild child;
  ASSERT_TRUE((*cg)->add_process(child.pid, sb::Leaf::kAgent).has_value());
  for (const auto& d : paths) {
    EXPECT_TRUE(procs_contains(d + "/agent", child.pid)) << d;
    EXPECT_FALSE(procs_contains(d + "/workload", child.pid)) << d;
  }

  auto r = (*cg)->destroy();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  int st = child.reap();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  for (const auto& d : paths) EXPECT_FALSE(exists(d)) << d;

  EXPECT_TRUE((*cg)->destroy().has_value());  // idempotent
  auto again = sb::Cgroup::open_existing(id);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, nullptr);
}

TEST_F(RealCgroup, DestroyKillsForkedDescendants) {
  // Reparent orphans to this process so the grandchild can be reaped here.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
  BoxCleanup cleanup{unique_box_id("tree")};
  auto cg = sb::Cgroup::create(cleanup.id, {});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();

  // The child waits for "go" (sent once it is in the cgroup), forks a
  // grandchild, reports its pid, and both block.
  auto go = cubby::sys::make_pipe().value();
  auto report = cubby::sys::make_pipe().value();
  pid_t child = ::fork();
  if (child == 0) {
    char b;
    if (::read(go.first.get(), &b, 1) != 1) ::_exit(1);
    pid_t gc = ::fork();
    if (gc == 0) {
      report.second.reset();
      (void)::read(go.first.get(), &b, 1);  // blocks: the parent keeps go's write end
      ::_exit(0);
    }
    (void)::write(report.second.get(), &gc, sizeof gc);
    report.second.reset();
    (void)::read(go.first.get(), &b, 1);
    ::_exit(0);
  }
  report.second.reset();
  ASSERT_TRUE((*cg)->add_process(child, sb::Leaf::kWorkload).has_value());
  ASSERT_EQ(::write(go.second.get(), "g", 1), 1);
  pid_t grandchild = -1;
  ASSERT_EQ(::read(report.first.get(), &grandchild, sizeof grandchild), (ssize_t)sizeof grandchild);
  for (const auto& d : (*cg)->paths()) EXPECT_TRUE(procs_contains(d + "/workload", grandchild)) << d;

  auto r = sb::destroy_box_cgroup(cleanup.id);  // the recovery path: open_existing + destroy
  ASSERT_TRUE(r.has_value()) << r.error().message();
  for (pid_t p : {child, grandchild}) {
    int st = 0;
    ASSERT_EQ(::waitpid(p, &st, 0), p);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << p << " status " << st;
  }
  for (const auto& d : (*cg)->paths()) EXPECT_FALSE(exists(d)) << d;
  ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

TEST_F(RealCgroup, DestroyRemovesNestedCgroups) {
  BoxCleanup cleanup{unique_box_id("nested")};
  auto cg = sb::Cgroup::create(cleanup.id, {});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  std::string sub = (*cg)->paths().front() + "/inner";
  ASSERT_EQ(::mkdir(sub.c_str(), 0755), 0);
  BlockedChild child;
  ASSERT_TRUE(cubby::write_file(sub + "/cgroup.procs", std::to_string(child.pid)).has_value());
  auto r = (*cg)->destroy();
  ASSERT_TRUE(r.has_value()) << r.error().message();
  int st = child.reap();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  for (const auto& d : (*cg)->paths()) EXPECT_FALSE(exists(d)) << d;
}

// Both leaves and anything below them: everything is killed, leaves go
// before their parent (v2 and v1 refuse to remove a cgroup with children).
TEST_F(RealCgroup, DestroyKillsBothLeaves) {
  BoxCleanup cleanup{unique_box_id("leaves")};
  auto cg = sb::Cgroup::create(cleanup.id, {32ll << 20, {}, 10});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  BlockedChild agent, workload;
  ASSERT_TRUE((*cg)->add_process(agent.pid, sb::Leaf::kAgent).has_value());
  ASSERT_TRUE((*cg)->add_process(workload.pid, sb::Leaf::kWorkload).has_value());
  auto r = sb::destroy_box_cgroup(cleanup.id);  // recovery: open_existing finds the leaves
  ASSERT_TRUE(r.has_value()) << r.error().message();
  for (BlockedChild* c : {&agent, &workload}) {
    int st = c->reap();
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  }
  for (const auto& d : (*cg)->paths()) EXPECT_FALSE(exists(d)) << d;
}

// A box of an older cubby had no leaves: its processes sat in the box
// directory itself. Recovery still kills them and removes it.
TEST_F(RealCgroup, DestroyHandlesTheFlatLayoutOfOlderBoxes) {
  BoxCleanup cleanup{unique_box_id("flat")};
  std::vector<std::string> dirs;
  BlockedChild child;
  const bool v1 = sb::detect_cgroup_version() == sb::CgroupVersion::kV1;
  for (const char* c : sb::detail::kControllers) {
    std::string parent = v1 ? "/sys/fs/cgroup/" + std::string(c) + "/cubby" : "/sys/fs/cgroup/cubby";
    if (!exists(parent) || (!v1 && !dirs.empty())) continue;
    std::string d = parent + "/" + cleanup.id;
    ASSERT_EQ(::mkdir(d.c_str(), 0755), 0) << d;
    ASSERT_TRUE(cubby::write_file(d + "/cgroup.procs", std::to_string(child.pid)).has_value()) << d;
    dirs.push_back(d);
  }
  ASSERT_FALSE(dirs.empty());
  auto r = sb::destroy_box_cgroup(cleanup.id);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  int st = child.reap();
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  for (const auto& d : dirs) EXPECT_FALSE(exists(d)) << d;
}

// What the agent's children do (agent/exec_child.cc): write "0" to each fd
// of open_self_join(kWorkload), and so land in the workload leaf of every
// hierarchy, out of the agent's.
TEST_F(RealCgroup, ProcessJoinsTheWorkloadLeafItself) {
  BoxCleanup cleanup{unique_box_id("join")};
  auto cg = sb::Cgroup::create(cleanup.id, {});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  auto join = (*cg)->open_self_join(sb::Leaf::kWorkload);
  ASSERT_TRUE(join.has_value()) << join.error().message();
  ASSERT_EQ(join->size(), (*cg)->paths().size());
  for (const auto& fd : *join) EXPECT_TRUE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC);
  auto joined = cubby::sys::make_pipe().value();
  auto release = cubby::sys::make_pipe().value();
  pid_t pid = ::fork();
  if (pid == 0) {
    release.second.reset();  // or the read below never sees EOF
    char ok = 'y';
    for (const auto& fd : *join)
      if (::write(fd.get(), "0", 1) != 1) ok = 'n';
    (void)::write(joined.second.get(), &ok, 1);
    char b;
    (void)::read(release.first.get(), &b, 1);
    ::_exit(0);
  }
  joined.second.reset();
  release.first.reset();
  char ok = 0;
  ASSERT_EQ(::read(joined.first.get(), &ok, 1), 1);
  EXPECT_EQ(ok, 'y');
  for (const auto& d : (*cg)->paths()) {
    EXPECT_TRUE(procs_contains(d + "/workload", pid)) << d;
    EXPECT_FALSE(procs_contains(d + "/agent", pid)) << d;
  }
  release.second.reset();
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  ASSERT_TRUE((*cg)->destroy().has_value());
}

// An allocation past --memory in the workload leaf: the OOM killer kills the
// allocating process there, the agent leaf's process lives on, and
// oom_killed() says so (false before).
TEST_F(RealCgroup, OomKillInTheWorkloadIsReportedAndSparesTheAgent) {
  BoxCleanup cleanup{unique_box_id("oom")};
  auto cg = sb::Cgroup::create(cleanup.id, {16ll << 20, {}, {}});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  BlockedChild agent;
  ASSERT_TRUE((*cg)->add_process(agent.pid, sb::Leaf::kAgent).has_value());
  EXPECT_EQ((*cg)->oom_killed().value(), false);
  auto join = (*cg)->open_self_join(sb::Leaf::kWorkload).value();
  pid_t hog = ::fork();
  if (hog == 0) {
    for (const auto& fd : join)
      if (::write(fd.get(), "0", 1) != 1) ::_exit(2);
    const size_t size = 64u << 20;
    char* p = static_cast<char*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) ::_exit(3);
    for (size_t i = 0; i < size; i += 4096) p[i] = 1;
    ::_exit(0);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(hog, &st, 0), hog);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "status " << st;
  EXPECT_EQ((*cg)->oom_killed().value(), true);
  EXPECT_EQ(::kill(agent.pid, 0), 0) << "the agent leaf's process was killed";
  int ast = 0;
  EXPECT_EQ(::waitpid(agent.pid, &ast, WNOHANG), 0);
  ASSERT_TRUE((*cg)->destroy().has_value());
}

TEST_F(RealCgroup, LeftoverIsReusedAndLimitsRaised) {
  BoxCleanup cleanup{unique_box_id("reuse")};
  auto first = sb::Cgroup::create(cleanup.id, {32ll << 20, {}, 10});
  ASSERT_TRUE(first.has_value()) << first.error().message();
  // v1: memory.limit_in_bytes can't exceed the old memsw limit; create must
  // raise memsw first.
  auto second = sb::Cgroup::create(cleanup.id, {128ll << 20, {}, 30});
  ASSERT_TRUE(second.has_value()) << second.error().message();
  EXPECT_EQ((*first)->paths(), (*second)->paths());
  if (sb::detect_cgroup_version() == sb::CgroupVersion::kV1) {
    EXPECT_EQ(read_trim("/sys/fs/cgroup/memory/cubby/" + cleanup.id + "/workload/memory.limit_in_bytes"), "134217728");
    EXPECT_EQ(read_trim("/sys/fs/cgroup/pids/cubby/" + cleanup.id + "/workload/pids.max"), "30");
  }
  ASSERT_TRUE((*second)->destroy().has_value());
}

TEST_F(RealCgroup, OpenExistingOfUnknownBoxIsNull) {
  auto cg = sb::Cgroup::open_existing(unique_box_id("unknown"));
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  EXPECT_EQ(*cg, nullptr);
  EXPECT_TRUE(sb::destroy_box_cgroup(unique_box_id("unknown")).has_value());
}

TEST_F(RealCgroup, BadLimitIsAnErrorAndLeavesNothing) {
  BoxCleanup cleanup{unique_box_id("bad")};
  auto cg = sb::Cgroup::create(cleanup.id, {{}, 0.001, {}});
  ASSERT_FALSE(cg.has_value());
  EXPECT_EQ(cg.error().kind(), cubby::ErrorKind::kInvalid);
  auto open = sb::Cgroup::open_existing(cleanup.id);
  ASSERT_TRUE(open.has_value());
  EXPECT_EQ(*open, nullptr);
}

TEST_F(FakeRoot, DetectsVersions) {
  EXPECT_EQ(sb::detail::detect_cgroup_version_at(root_), sb::CgroupVersion::kNone);
  put("pids/tasks", "");
  EXPECT_EQ(sb::detail::detect_cgroup_version_at(root_), sb::CgroupVersion::kV1);
  put("cgroup.controllers", "cpu memory pids\n");
  EXPECT_EQ(sb::detail::detect_cgroup_version_at(root_), sb::CgroupVersion::kV2);
}

TEST_F(FakeRoot, V2CreateEnablesControllersAndWritesLimits) {
  put("cgroup.controllers", "cpuset cpu io memory hugetlb pids\n");
  put("cgroup.subtree_control", "cpu memory pids\n");  // already enabled: left alone
  put("cubby/cgroup.subtree_control", "");
  const std::string id = "box1";
  put("cubby/" + id + "/cgroup.subtree_control", "");  // a leftover dir is reused, like mkdir -p
  put("cubby/" + id + "/agent/cgroup.procs", "");
  for (const char* f : {"cgroup.procs", "memory.max", "memory.swap.max", "cpu.max", "pids.max"})
    put("cubby/" + id + "/workload/" + f, "");
  ::setenv("CUBBY_CGROUP_ROOT", root_.c_str(), 1);
  ASSERT_EQ(sb::detect_cgroup_version(), sb::CgroupVersion::kV2);

  auto cg = sb::Cgroup::create(id, {64ll << 20, 0.5, 20});
  ASSERT_TRUE(cg.has_value()) << cg.error().message();
  std::string d = root_ + "/cubby/" + id;
  EXPECT_EQ((*cg)->paths(), std::vector<std::string>{d});
  EXPECT_EQ(read_trim(root_ + "/cgroup.subtree_control"), "cpu memory pids");
  // Enabled one at a time; the fake file keeps only the last write.
  EXPECT_EQ(read_trim(root_ + "/cubby/cgroup.subtree_control"), "+pids");
  EXPECT_EQ(read_trim(d + "/cgroup.subtree_control"), "+pids");  // the leaves get the controllers
  EXPECT_EQ(read_trim(d + "/workload/memory.max"), "67108864");
  EXPECT_EQ(read_trim(d + "/workload/memory.swap.max"), "0");
  EXPECT_EQ(read_trim(d + "/workload/cpu.max"), "50000 100000");
  EXPECT_EQ(read_trim(d + "/workload/pids.max"), "20");
  ASSERT_TRUE((*cg)->add_process(4242, sb::Leaf::kAgent).has_value());
  EXPECT_EQ(read_trim(d + "/agent/cgroup.procs"), "4242");
  // A process joins the workload leaf by writing "0" to its cgroup.procs.
  auto join = (*cg)->open_self_join(sb::Leaf::kWorkload);
  ASSERT_TRUE(join.has_value()) << join.error().message();
  ASSERT_EQ(join->size(), 1u);
  ASSERT_EQ(::write((*join)[0].get(), "0", 1), 1);
  EXPECT_EQ(read_trim(d + "/workload/cgroup.procs"), "0");
  EXPECT_TRUE(::fcntl((*join)[0].get(), F_GETFD) & FD_CLOEXEC);
  // No memory.events yet: no OOM kill; then what the kernel would write.
  EXPECT_EQ((*cg)->oom_killed().value(), false);
  put("cubby/" + id + "/workload/memory.events", "low 0\nhigh 0\nmax 7\noom 1\noom_kill 0\noom_group_kill 0\n");
  EXPECT_EQ((*cg)->oom_killed().value(), false);
  put("cubby/" + id + "/workload/memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n");
  EXPECT_EQ((*cg)->oom_killed().value(), true);

  auto open = sb::Cgroup::open_existing(id);
  ASSERT_TRUE(open.has_value());
  ASSERT_NE(*open, nullptr);
  EXPECT_EQ((*open)->paths(), std::vector<std::string>{d});
}

TEST_F(FakeRoot, V2MissingControllerOrFileNamesIt) {
  put("cgroup.controllers", "cpu pids\n");
  put("cgroup.subtree_control", "cpu pids\n");
  put("cubby/cgroup.subtree_control", "cpu pids\n");
  auto cg = sb::detail::create_v2(root_, "box2", {64ll << 20, {}, {}});
  ASSERT_FALSE(cg.has_value());
  EXPECT_NE(cg.error().message().find("memory"), std::string::npos) << cg.error().message();

  // Controller listed but the limit file missing (a real v2 dir would have
  // it): the error names the file, and the new leaves are rolled back (the
  // box dir stays only because the fake put a plain file in it).
  put("cubby/box3/cgroup.subtree_control", "pids\n");
  auto cg2 = sb::detail::create_v2(root_, "box3", {{}, {}, 20});
  ASSERT_FALSE(cg2.has_value());
  EXPECT_NE(cg2.error().message().find(root_ + "/cubby/box3/workload/pids.max"), std::string::npos)
      << cg2.error().message();
  EXPECT_FALSE(exists(root_ + "/cubby/box3/workload"));
  EXPECT_FALSE(exists(root_ + "/cubby/box3/agent"));
}

TEST_F(FakeRoot, V1MissingHierarchyNamesTheController) {
  put("pids/tasks", "");
  put("pids/cgroup.procs", "");
  auto cg = sb::detail::create_v1(root_, "box4", {64ll << 20, {}, {}});
  ASSERT_FALSE(cg.has_value());
  EXPECT_NE(cg.error().message().find("memory"), std::string::npos) << cg.error().message();
  EXPECT_FALSE(exists(root_ + "/pids/cubby/box4"));  // rolled back
  auto ok = sb::detail::create_v1(root_, "box5", {});
  ASSERT_TRUE(ok.has_value()) << ok.error().message();
  EXPECT_EQ((*ok)->paths(), std::vector<std::string>{root_ + "/pids/cubby/box5"});
  EXPECT_TRUE(exists(root_ + "/pids/cubby/box5/agent"));
  EXPECT_TRUE(exists(root_ + "/pids/cubby/box5/workload"));
}
