// Lifecycle guarantees 1-9 of SPEC §3 on the sandbox backend, through the
// real CLI. Each test names the guarantee it proves; each fails when the
// guarantee is broken (see docs/TESTING.md for the two-sided checks done).
#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "proto/transport.h"
#include "runtime/ownership.h"
#include "runtime/runtime.h"
#include "store/store.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class Lifecycle : public BoxTest {
 protected:
  json ls(bool all = true) {
    std::vector<std::string> a = {"ls", "--format", "json"};
    if (all) a.push_back("-a");
    auto r = cubby(a);
    EXPECT_EQ(r.rc, 0) << r.err;
    return json::parse(r.out);
  }
};

// --- exit codes and output (guarantee 9 for the main process) ---------------

TEST_F(Lifecycle, ForegroundRunStreamsOutputAndReturnsTheCode) {
  auto r = cubby({"run", "--rm", "--network", "none", image_, "sh", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(r.rc, 7);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(ls().size(), 0u) << "--rm left the box";
}

TEST_F(Lifecycle, CommandThatExitsZeroAtOnceIsSuccess) {
  // Guarantee 8: a workload that is done before anyone looks is not a boot failure.
  EXPECT_EQ(cubby({"run", "--rm", "--network", "none", image_, "true"}).rc, 0);
  auto r = cubby({"run", "-d", "--network", "none", image_, "true"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  auto w = cubby({"wait", id});
  EXPECT_EQ(w.out, "0\n");
  EXPECT_EQ(status(id), "exited");
}

TEST_F(Lifecycle, InitFailureIsReportedAtOnceWithItsCause) {
  auto t0 = std::chrono::steady_clock::now();
  auto r = cubby({"run", "-d", "--network", "none", image_, "/no/such/binary"});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.rc, 127);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("/no/such/binary"), std::string::npos) << r.err;
  EXPECT_LT(took, 5s) << "the failure must come from the event, not a timeout";
  auto fg = cubby({"run", "--rm", "--network", "none", image_, "no-such-command"});
  EXPECT_EQ(fg.rc, 127);
  EXPECT_NE(fg.err.find("executable file not found"), std::string::npos) << fg.err;
}

TEST_F(Lifecycle, AgentDeathIsSeenEvenWhileItsSocketStaysOpen) {
  // Guarantee 8 by the agent's pidfd alone: the (fake) agent hands its
  // listening socket to us before it fails, so the shim's connection never
  // closes; only the pidfd can tell the shim that the box died.
  char bins[] = "/tmp/cubby-bins-XXXXXX";
  ASSERT_NE(::mkdtemp(bins), nullptr);
  std::string b(bins);
  ASSERT_EQ(::symlink((bin_dir() + "/cubby-shim").c_str(), (b + "/cubby-shim").c_str()), 0);
  ASSERT_EQ(::symlink((bin_dir() + "/fake_agent").c_str(), (b + "/cubby-agent").c_str()), 0);
  const char* path = "/tmp/cubby-fake-agent.sock";
  ::unlink(path);
  UniqueFd holder(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strcpy(a.sun_path, path);
  ASSERT_EQ(::bind(holder.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  auto rt = Runtime::open({home_, b});
  ASSERT_TRUE(rt);
  CreateOptions o;
  o.image = image_;
  o.network = "none";
  o.cmd = {"true"};
  auto box = rt->create(o);
  ASSERT_TRUE(box);
  auto fut = std::async(std::launch::async, [&] { return rt->start(box->id); });
  bool in_time = fut.wait_for(5s) == std::future_status::ready;
  EXPECT_TRUE(in_time) << "the agent's death was not seen while its socket stayed open";
  if (!in_time) {
    // Backstop: drop the held socket so the shim sees EOF and start returns.
    char c;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{&c, 1};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctrl;
    m.msg_controllen = sizeof ctrl;
    if (::recvmsg(holder.get(), &m, MSG_CMSG_CLOEXEC) > 0) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
      ::close(fd);
    }
  }
  auto st = fut.get();
  ASSERT_TRUE(st) << st.error().message();
  EXPECT_TRUE(st->ended);
  EXPECT_EQ(st->code, 3);
  EXPECT_NE(st->error.find("fake agent failed on purpose"), std::string::npos) << st->error;
  holder.reset();
  ::unlink(path);
  ::unlink((b + "/cubby-shim").c_str());
  ::unlink((b + "/cubby-agent").c_str());
  ::rmdir(bins);
}

// Guarantee 7: the agent's socket is bound before the agent runs, so a
// connect made as soon as it exists (inotify) is queued, never refused,
// and served once the agent is up.
TEST_F(Lifecycle, ConnectDuringBootIsQueuedNotRefused) {
  for (int round = 0; round < 5; ++round) {
    auto created = cubby({"create", "--network", "none", image_, "sleep", "1000000"});
    ASSERT_EQ(created.rc, 0) << created.err;
    std::string id = created.out.substr(0, 32);
    std::string dir = home_ + "/boxes/" + id;
    UniqueFd in(::inotify_init1(IN_CLOEXEC));
    ASSERT_GE(::inotify_add_watch(in.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO), 0);
    auto starter = spawn_cubby(home_, {"start", id});
    bool seen = false;
    alignas(inotify_event) char buf[4096];
    while (!seen) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      ASSERT_GT(n, 0);
      for (ssize_t off = 0; off < n;) {
        auto* e = reinterpret_cast<inotify_event*>(buf + off);
        if (e->len && std::string(e->name) == "agent.sock") seen = true;
        off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      }
    }
    // Straight at the socket, before `start` has even returned.
    proto::UnixTransport t(dir, "agent.sock");
    auto conn = proto::connect_and_hello(t);
    EXPECT_TRUE(conn) << "connect during boot failed: " << conn.error().message();
    EXPECT_EQ(starter.wait().value().code, 0);
    EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  }
}

TEST_F(Lifecycle, ExecExitCodesAreTrue) {
  std::string id = run_detached();
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "exit 7"}).rc, 7);
  EXPECT_EQ(cubby({"exec", id, "false"}).rc, 1);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "kill -9 $$"}).rc, 137);
  auto missing = cubby({"exec", id, "no-such-binary"});
  EXPECT_EQ(missing.rc, 127);
  EXPECT_EQ(missing.err_lines().size(), 1u) << missing.err;
  auto out = cubby({"exec", id, "sh", "-c", "echo hi; echo oops >&2"});
  EXPECT_EQ(out.out, "hi\n");
  EXPECT_EQ(out.err, "oops\n");
}

TEST_F(Lifecycle, ThirtyTwoConcurrentExecsEachGetTheirOwnResult) {
  std::string id = run_detached();
  std::vector<std::thread> threads;
  std::vector<CmdResult> results(32);
  for (int i = 0; i < 32; ++i)
    threads.emplace_back([&, i] {
      results[i] = run_cubby(home_, {"exec", id, "sh", "-c", "echo n=$0; exit $0", std::to_string(i)});
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(results[i].rc, i) << results[i].err;
    EXPECT_EQ(results[i].out, "n=" + std::to_string(i) + "\n");
  }
}

// --- guarantee 9: PID 1 reaps orphans without stealing statuses -----------

TEST_F(Lifecycle, HundredOrphansLeaveNoZombiesAndStatusesStayTrue) {
  std::string id = run_detached();
  // 100 orphans: each blocks on a fifo, its parent shell is gone, so the
  // agent (PID 1) inherits it.
  auto mk = cubby({"exec", id, "sh", "-c",
                   "mkfifo /tmp/gate; i=0; while [ $i -lt 100 ]; do (cat /tmp/gate >/dev/null &); i=$((i+1)); done"});
  ASSERT_EQ(mk.rc, 0) << mk.err;
  auto count = cubby({"exec", id, "sh", "-c", "ps -o ppid,comm | grep -c '^ *1 cat'"});
  EXPECT_EQ(count.out, "100\n") << "the orphans were not adopted by PID 1";
  // Open and close the gate: every orphan exits at once. Then wait (inside
  // the box, bounded by --timeout) until no `cat` is left, zombie or not.
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "exec 3>/tmp/gate; exec 3>&-"}).rc, 0);
  auto drained = cubby({"exec", "--timeout", "20", id, "sh", "-c", "while pgrep cat >/dev/null; do :; done"});
  EXPECT_EQ(drained.rc, 0) << "orphans remained as zombies (the agent did not reap them)";
  auto z = cubby({"exec", id, "sh", "-c", "ps -o stat | grep -c Z"});
  EXPECT_EQ(z.out, "0\n");
  // Reaping orphans never steals an exec's status; and it reads twice.
  auto rt = Runtime::open({home_, bin_dir()});
  ASSERT_TRUE(rt) << rt.error().message();
  ExecRequest req;
  req.argv = {"sh", "-c", "exit 5"};
  auto r = rt->exec(id, req, StdioFds{-1, -1, -1, false});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->code, 5);
  for (int i = 0; i < 2; ++i) {
    auto again = rt->exec_status(id, r->exec_id);
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(again->code, 5);
  }
}

// --- guarantee 1: ownership ---------------------------------------------------

TEST(Ownership, ExactArgvAndStartTimeMatchOnly) {
  char dir[] = "/tmp/cubby-own-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string fake = std::string(dir) + "/cubby-shim";
  ASSERT_EQ(::symlink((bin_dir() + "/stand_in").c_str(), fake.c_str()), 0);
  auto [in_r, in_w] = sys::make_pipe().value();
  SpawnSpec s;
  s.argv = {fake, "box-10"};
  s.fds = {in_r.get(), -1, -1};
  auto child = spawn(s);
  ASSERT_TRUE(child) << child.error().message();
  uint64_t start = process_start_time(child->pid()).value();
  EXPECT_TRUE(is_shim_of(child->pid(), start, "box-10"));
  EXPECT_FALSE(is_shim_of(child->pid(), start, "box-1")) << "box-1 must never match box-10";
  EXPECT_FALSE(is_shim_of(child->pid(), start + 1, "box-10")) << "a different start time means a reused pid";
  EXPECT_FALSE(is_shim_of(child->pid(), start, "box-100"));
  in_w.reset();  // the stand-in exits on EOF
  ASSERT_TRUE(child->wait());
  EXPECT_FALSE(is_shim_of(child->pid(), start, "box-10")) << "a dead process is not a shim";
  ::unlink(fake.c_str());
  ::rmdir(dir);
}

TEST_F(Lifecycle, ShimArgvIsExactlyPathAndBoxId) {
  std::string id = run_detached();
  pid_t pid = shim_pid(id);
  ASSERT_GT(pid, 0);
  auto argv = process_argv(pid).value();
  ASSERT_EQ(argv.size(), 2u);
  EXPECT_EQ(argv[0], bin_dir() + "/cubby-shim");
  EXPECT_EQ(argv[1], id);
  // The config (which may hold secrets) is not in its environment either.
  auto env = read_file("/proc/" + std::to_string(pid) + "/environ").value_or("");
  EXPECT_EQ(env.find("SECRET_TOKEN"), std::string::npos);
}

TEST_F(Lifecycle, SecretsNeverReachTheShimsArgvOrEnvironment) {
  auto r = cubby({"run", "-d", "--network", "none", "-e", "SECRET_TOKEN=hunter2", image_, "sleep", "1000000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  pid_t pid = shim_pid(id);
  ASSERT_GT(pid, 0);
  auto cmd = read_file("/proc/" + std::to_string(pid) + "/cmdline").value_or("");
  auto env = read_file("/proc/" + std::to_string(pid) + "/environ").value_or("");
  EXPECT_EQ(cmd.find("hunter2"), std::string::npos);
  EXPECT_EQ(env.find("hunter2"), std::string::npos);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "test \"$SECRET_TOKEN\" = hunter2"}).rc, 0);
}

// --- guarantee 2: recovery never orphans -------------------------------------

TEST_F(Lifecycle, LiveShimSurvivesManyRuntimeStarts) {
  std::string id = run_detached();
  pid_t pid = shim_pid(id);
  ASSERT_GT(pid, 0);
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(cubby({"ls"}).rc, 0);
    EXPECT_EQ(cubby({"inspect", id}).rc, 0);
    EXPECT_EQ(cubby({"exec", id, "true"}).rc, 0);
  }
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(shim_pid(id), pid) << "the box was handed to another shim";
  EXPECT_EQ(process_argv(pid).value().at(1), id) << "the original shim is gone";
}

TEST_F(Lifecycle, KilledShimIsSeenEndedAndLeavesNoProcess) {
  std::string id = run_detached();
  pid_t shim = shim_pid(id);
  ASSERT_GT(shim, 0);
  auto kids = children_of(shim);
  ASSERT_EQ(kids.size(), 1u) << "expected the agent as the shim's only child";
  auto agent = sys::pidfd_open(kids[0]);
  ASSERT_TRUE(agent);
  auto shim_fd = sys::pidfd_open(shim).value();
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  // The agent dies with its shim (PDEATHSIG); bounded wait on its pidfd.
  EXPECT_TRUE(sys::wait_readable(agent->get(), 10s).value()) << "the agent outlived its shim";
  EXPECT_TRUE(sys::wait_readable(shim_fd.get(), 10s).value());
  reap_adopted();
  auto j = ls();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_NE(j[0]["status"], "running");
  EXPECT_EQ(j[0]["pid"], nullptr);
  EXPECT_TRUE(processes_mentioning(id).empty());
}

// --- guarantee 3: rm / stop semantics ------------------------------------------

TEST_F(Lifecycle, RmRefusesARunningBoxAndRmForceLeavesNothing) {
  std::string id = run_detached();
  auto r = cubby({"rm", id});
  EXPECT_NE(r.rc, 0);
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("running"), std::string::npos);
  EXPECT_EQ(status(id), "running");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s) << "rm -f must not wait out a grace period";
  reap_adopted();
  EXPECT_TRUE(processes_mentioning(id).empty()) << "a process still carries the box id";
  EXPECT_EQ(ls().size(), 0u);
}

TEST_F(Lifecycle, RmForceStopsTheRecordedShimItself) {
  // The box's shim is a stand-in outside any cgroup: only rm -f's own stop
  // (SIGTERM to the recorded shim, then waiting for it) can end it.
  auto rt = Runtime::open({home_, bin_dir()});
  ASSERT_TRUE(rt);
  CreateOptions o;
  o.image = image_;
  o.network = "none";
  o.cmd = {"sleep", "1000000"};
  auto b = rt->create(o);
  ASSERT_TRUE(b) << b.error().message();
  char dir[] = "/tmp/cubby-own-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  std::string fake = std::string(dir) + "/cubby-shim";
  ASSERT_EQ(::symlink((bin_dir() + "/stand_in").c_str(), fake.c_str()), 0);
  auto [in_r, in_w] = sys::make_pipe().value();
  SpawnSpec s;
  s.argv = {fake, b->id};
  s.fds = {in_r.get(), -1, -1};
  auto child = spawn(s);
  ASSERT_TRUE(child);
  auto db = store::Store::open(home_);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->mark_running(b->id, child->pid(), process_start_time(child->pid()).value()).value());
  auto pfd = sys::pidfd_open(child->pid()).value();
  ASSERT_TRUE(rt->remove(b->id, true));
  EXPECT_TRUE(sys::wait_readable(pfd.get(), 0ms).value()) << "rm -f returned while the box's shim still ran";
  in_w.reset();
  (void)child->wait();
  ::unlink(fake.c_str());
  ::rmdir(dir);
}

TEST_F(Lifecycle, StopEscalatesToKillAfterTheGrace) {
  std::string id = run_detached({"sh", "-c", "trap '' TERM; while :; do sleep 1; done"});
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(cubby({"stop", "-t", "1", id}).rc, 0);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 6s);
  auto j = json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["status"], "stopped");
  EXPECT_EQ(j["exit_code"], 137);
}

TEST_F(Lifecycle, StopDeliversSigtermToTheWorkload) {
  std::string id = run_detached({"sleep", "1000000"});
  EXPECT_EQ(cubby({"stop", id}).rc, 0);
  auto j = json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["status"], "stopped");
  EXPECT_EQ(j["exit_code"], 143);
}

TEST_F(Lifecycle, FilesSurviveStopAndStart) {
  std::string id = run_detached();
  ASSERT_EQ(cubby({"exec", id, "sh", "-c", "echo kept > /root/note"}).rc, 0);
  ASSERT_EQ(cubby({"stop", "-t", "0", id}).rc, 0);
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(cubby({"exec", id, "cat", "/root/note"}).out, "kept\n");
}

TEST_F(Lifecycle, FiftyCyclesLeaveNothingBehind) {
  // The harness's TearDown checks processes, zombies, mounts, cgroups, fds
  // and box directories against the state before the test.
  for (int i = 0; i < 50; ++i) {
    std::string id = run_detached();
    ASSERT_EQ(cubby({"ls"}).rc, 0);
    ASSERT_EQ(cubby({"exec", id, "true"}).rc, 0);
    ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
  }
  EXPECT_EQ(ls().size(), 0u);
}

// --- guarantee 4: scoped reaping --------------------------------------------

TEST_F(Lifecycle, FailedStartsLeaveNoZombiesAndStealNoStatus) {
  // A child of the embedding program, which the library must not reap.
  SpawnSpec s;
  s.argv = {"/bin/sh", "-c", "exit 42"};
  auto mine = spawn(s);
  ASSERT_TRUE(mine);
  auto rt = Runtime::open({home_, bin_dir()});
  ASSERT_TRUE(rt);
  for (int i = 0; i < 10; ++i) {
    CreateOptions o;
    o.image = image_;
    o.network = "none";
    o.cmd = {"/no/such/thing"};
    auto b = rt->create(o);
    ASSERT_TRUE(b) << b.error().message();
    auto st = rt->start(b->id);
    ASSERT_TRUE(st);
    EXPECT_TRUE(st->ended);
    EXPECT_EQ(st->code, 127);
    ASSERT_TRUE(rt->remove(b->id, true));
  }
  auto status = mine->wait();
  ASSERT_TRUE(status) << "the library reaped a child it does not own";
  EXPECT_EQ(status->code, 42);
}

// --- guarantee 5: event-driven exit detection -----------------------------------

TEST_F(Lifecycle, BoxExitIsSeenWithinMilliseconds) {
  std::string id = run_detached();
  auto rt = Runtime::open({home_, bin_dir()});
  ASSERT_TRUE(rt);
  std::chrono::steady_clock::time_point killed, seen;
  std::thread waiter([&] {
    auto rt2 = Runtime::open({home_, bin_dir()});
    auto r = rt2->wait(id);
    seen = std::chrono::steady_clock::now();
    EXPECT_TRUE(r);
  });
  // Give the waiter its pidfd first: wait() returns only after the box ends,
  // and the box ends only when we kill it below.
  ASSERT_EQ(cubby({"exec", id, "true"}).rc, 0);
  killed = std::chrono::steady_clock::now();
  ASSERT_TRUE(rt->kill(id, SIGKILL));
  waiter.join();
  EXPECT_LT(seen - killed, 300ms) << "exit detection is not event-driven";
  EXPECT_EQ(status(id), "exited");
}

// --- guarantee 6: fd hygiene ------------------------------------------------------

TEST_F(Lifecycle, ProcessesSeeOnlyTheirOwnFds) {
  // The caller holds fd 1000 open (and not close-on-exec) when it runs cubby.
  auto r = [&] {
    SpawnSpec s;
    auto [out_r, out_w] = sys::make_pipe().value();
    s.argv = {"/bin/bash", "-c",
              "exec 1000</dev/null; exec \"$0\" --home \"$1\" run --rm --network none busybox ls /proc/self/fd",
              cubby_path(), home_};
    s.fds = {-1, out_w.get(), 2};
    auto c = spawn(s).value();
    out_w.reset();
    std::string out = sys::read_all(out_r.get()).value();
    (void)c.wait();
    return out;
  }();
  EXPECT_EQ(r, "0\n1\n2\n3\n") << "ls sees fds other than 0-2 (3 is its own directory fd)";
  // The detached box, too, is started by a caller holding fd 1000.
  std::string id = [&] {
    SpawnSpec s;
    auto [out_r, out_w] = sys::make_pipe().value();
    s.argv = {"/bin/bash", "-c",
              "exec 1000</dev/null; exec \"$0\" --home \"$1\" run -d --network none busybox sleep 1000000",
              cubby_path(), home_};
    s.fds = {-1, out_w.get(), 2};
    auto c = spawn(s).value();
    out_w.reset();
    std::string out = sys::read_all(out_r.get()).value();
    (void)c.wait();
    return out.substr(0, 32);
  }();
  EXPECT_EQ(cubby({"exec", id, "ls", "/proc/self/fd"}).out, "0\n1\n2\n3\n");
  pid_t shim = shim_pid(id);
  std::set<std::string> shim_fds;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(shim) + "/fd"))
    shim_fds.insert(e.path().filename());
  EXPECT_FALSE(shim_fds.count("1000"));
  EXPECT_LE(shim_fds.size(), 12u) << "the shim holds more fds than it opened";
}

// --- concurrency and crash safety of the store --------------------------------

TEST_F(Lifecycle, TwentyConcurrentRunsAreAllKept) {
  std::vector<std::thread> threads;
  std::vector<CmdResult> results(20);
  for (int i = 0; i < 20; ++i)
    threads.emplace_back([&, i] {
      results[i] = run_cubby(home_, {"run", "-d", "--network", "none", image_, "sleep", "1000000"});
    });
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (auto& r : results) {
    EXPECT_EQ(r.rc, 0) << r.err;
    ids.insert(r.out.substr(0, 32));
  }
  EXPECT_EQ(ids.size(), 20u);
  auto j = ls(false);
  EXPECT_EQ(j.size(), 20u);
  for (auto& b : j) {
    EXPECT_EQ(b["status"], "running");
    EXPECT_TRUE(ids.count(b["id"].get<std::string>()));
  }
}

TEST_F(Lifecycle, KilledCliMidRunConverges) {
  // Kill `run -d` at two points found by inotify (no timing guesses): when
  // the box directory appears, and when the shim's log is created.
  for (const char* point : {"box dir", "shim.log"}) {
    UniqueFd in(::inotify_init1(IN_CLOEXEC));
    std::string boxes = home_ + "/boxes";
    ::inotify_add_watch(in.get(), boxes.c_str(), IN_CREATE);
    auto cli = spawn_cubby(home_, {"run", "-d", "--network", "none", image_, "sleep", "1000000"});
    char buf[4096];
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    ASSERT_GT(n, 0);
    auto* ev = reinterpret_cast<inotify_event*>(buf);
    std::string dir = boxes + "/" + ev->name;
    if (std::string(point) == "shim.log") {
      ::inotify_add_watch(in.get(), dir.c_str(), IN_CREATE);
      bool found = std::filesystem::exists(dir + "/shim.log");
      while (!found) {
        n = ::read(in.get(), buf, sizeof buf);
        for (ssize_t off = 0; off < n;) {
          auto* e = reinterpret_cast<inotify_event*>(buf + off);
          if (e->len && std::string(e->name) == "shim.log") found = true;
          off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
        }
      }
    }
    ASSERT_TRUE(cli.signal(SIGKILL));
    (void)cli.wait();
    // The store converges: the box is listed in a consistent state, and it
    // can be removed without leaving anything (TearDown checks).
    auto j = ls();
    for (auto& b : j) {
      std::string st = b["status"];
      EXPECT_TRUE(st == "created" || st == "running" || st == "exited") << st;
      if (st == "running") {
        EXPECT_TRUE(b["pid"].is_number());
      }
      ASSERT_EQ(cubby({"rm", "-f", b["id"]}).rc, 0);
    }
    reap_adopted();
  }
}

// --- the rest of the CLI contract -----------------------------------------------

TEST_F(Lifecycle, LsAndInspectFollowTheContract) {
  auto r = cubby({"run", "-d", "--name", "web", "--network", "none", image_, "sleep", "1000000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  auto j = ls();
  ASSERT_EQ(j.size(), 1u);
  for (const char* k : {"id", "name", "image", "status", "exit_code", "isolation", "created_at", "pid"})
    EXPECT_TRUE(j[0].contains(k)) << k;
  EXPECT_EQ(j[0]["name"], "web");
  EXPECT_EQ(j[0]["isolation"], "sandbox");
  EXPECT_EQ(j[0]["exit_code"], nullptr);
  EXPECT_TRUE(j[0]["pid"].is_number());
  auto in = json::parse(cubby({"inspect", "web"}).out);
  for (auto& [k, v] : j[0].items()) EXPECT_EQ(in[k], v) << k;
  EXPECT_EQ(cubby({"exec", std::string(j[0]["id"]).substr(0, 6), "true"}).rc, 0) << "id prefix";
  EXPECT_EQ(cubby({"rm", "-f", "web"}).rc, 0);
}

TEST_F(Lifecycle, LogsKeepStdoutAndStderrApart) {
  auto r = cubby({"run", "-d", "--network", "none", image_, "sh", "-c", "echo to-out; echo to-err >&2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  EXPECT_EQ(cubby({"wait", id}).out, "0\n");
  auto l = cubby({"logs", id});
  EXPECT_EQ(l.out, "to-out\n");
  EXPECT_EQ(l.err, "to-err\n");
  // -f follows: it prints "a", waits while the box waits on a fifo, then
  // prints "b" and ends with the box.
  std::string id2 = run_detached({"sh", "-c", "mkfifo /tmp/go; echo a; cat /tmp/go; echo b"});
  auto [out_r, out_w] = sys::make_pipe().value();
  auto follower = spawn_cubby(home_, {"logs", "-f", id2}, out_w.get(), 2);
  out_w.reset();
  std::string got;
  char buf[256];
  while (got.find("a\n") == std::string::npos) {
    ssize_t n = ::read(out_r.get(), buf, sizeof buf);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  // Detached: the box ends as soon as the fifo opens, which may be before
  // a foreground exec could read its own exit.
  ASSERT_EQ(cubby({"exec", "-d", id2, "sh", "-c", ": > /tmp/go"}).rc, 0);
  got += sys::read_all(out_r.get()).value();
  EXPECT_EQ(got, "a\nb\n");
  EXPECT_EQ(follower.wait().value().code, 0);
}

TEST_F(Lifecycle, ResourceLimitsLandInCgroups) {
  auto r = cubby({"run", "-d", "--network", "none", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "40",
                  image_, "sleep", "1000000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  EXPECT_EQ(read_file("/sys/fs/cgroup/memory/cubby/" + id + "/memory.limit_in_bytes").value_or(""), "67108864\n");
  EXPECT_EQ(read_file("/sys/fs/cgroup/cpu/cubby/" + id + "/cpu.cfs_quota_us").value_or(""), "50000\n");
  EXPECT_EQ(read_file("/sys/fs/cgroup/pids/cubby/" + id + "/pids.max").value_or(""), "40\n");
  // The pids limit holds inside the box: 60 sleepers cannot all start.
  auto fork = cubby({"exec", id, "sh", "-c", "i=0; while [ $i -lt 60 ]; do sleep 100 & i=$((i+1)); done; echo done"});
  EXPECT_NE(fork.err.find("fork"), std::string::npos) << fork.err;
}

TEST_F(Lifecycle, NamespacesSeccompAndCapabilities) {
  std::string id = run_detached();
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "ls /sys/class/net"}).out, "lo\n") << "--network none: only lo";
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "ps -o pid,comm | sed -n 2p | tr -s ' '"}).out, " 1 cubby-agent\n");
  EXPECT_NE(cubby({"exec", id, "unshare", "-m", "true"}).rc, 0) << "seccomp must block unshare";
  EXPECT_NE(cubby({"exec", id, "mount", "-t", "tmpfs", "t", "/mnt"}).rc, 0);
  EXPECT_EQ(cubby({"exec", id, "sh", "-c", "grep CapEff /proc/self/status"}).out, "CapEff:\t00000000a80425fb\n");
  EXPECT_EQ(cubby({"exec", "-u", "1000", id, "sh", "-c", "id -u; grep CapEff /proc/self/status"}).out,
            "1000\nCapEff:\t0000000000000000\n");
  EXPECT_EQ(cubby({"exec", "-w", "/tmp", "-e", "A=b", id, "sh", "-c", "pwd; echo $A"}).out, "/tmp\nb\n");
}

TEST_F(Lifecycle, ProtocolHandshakeHeartbeatAndVersioning) {
  std::string id = run_detached();
  proto::UnixTransport t(home_ + "/boxes/" + id, "agent.sock");
  auto conn = proto::connect_and_hello(t);
  ASSERT_TRUE(conn) << conn.error().message();
  ASSERT_TRUE(conn->send({{"t", "ping"}}));
  EXPECT_EQ(conn->recv().value().msg["t"], "pong");
  ASSERT_TRUE(conn->send({{"t", "bogus"}}));
  EXPECT_EQ(conn->recv().value().msg["t"], "error") << "unknown messages get an error, not a hang-up";
  ASSERT_TRUE(conn->send({{"t", "ping"}}));
  EXPECT_EQ(conn->recv().value().msg["t"], "pong");
  // A peer that only speaks a future version is refused with a clear error.
  proto::Conn future(t.connect().value());
  ASSERT_TRUE(future.send({{"t", "hello"}, {"v", 99}, {"min", 99}}));
  auto f = future.recv();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->msg["t"], "error");
  EXPECT_NE(f->msg["msg"].get<std::string>().find("unsupported protocol"), std::string::npos);
  // Garbage instead of a frame ends only that session; the box keeps serving.
  proto::Conn junk(t.connect().value());
  const char bad[] = "\xff\xff\xff\xff\0\0\0\0";
  ASSERT_EQ(::write(junk.fd(), bad, 8), 8);
  EXPECT_FALSE(junk.recv()) << "the agent must drop a session that sends an oversized frame";
  EXPECT_EQ(cubby({"exec", id, "true"}).rc, 0);
}

TEST_F(Lifecycle, AutoIsolationSaysWhichOnce) {
  ::unlink((home_ + "/.isolation-auto-noted").c_str());
  auto first = cubby({"run", "--rm", "--network", "none", image_, "true"});
  EXPECT_EQ(first.rc, 0);
  EXPECT_NE(first.err.find("--isolation auto chose sandbox"), std::string::npos) << first.err;
  auto second = cubby({"run", "--rm", "--network", "none", image_, "true"});
  EXPECT_EQ(second.err, "");
  auto info = json::parse(cubby({"info", "--format", "json"}).out);
  EXPECT_EQ(info["default_isolation"], "sandbox");
  for (const char* k : {"version", "home", "kvm", "vhost_vsock", "default_isolation", "cgroup_version"})
    EXPECT_TRUE(info.contains(k)) << k;
}

TEST_F(Lifecycle, NetworkDefaultGivesAUserModeUplink) {
  if (::access("/usr/bin/slirp4netns", X_OK) != 0) GTEST_SKIP() << "slirp4netns is not installed";
  auto r = cubby({"run", "--rm", image_, "sh", "-c",
                  "ip -4 addr show tap0 | grep -o 'inet [0-9./]*'; ip route | grep -o '^default via [0-9.]*'; "
                  "cat /etc/resolv.conf"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "inet 10.0.2.100/24\ndefault via 10.0.2.2\nnameserver 10.0.2.3\n");
}

}  // namespace
}  // namespace cubby::test
