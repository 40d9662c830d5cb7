// Memory snapshots of running vm boxes (issue 14): `cubby snapshot`,
// `snapshots`, `rm-snapshot`, `run --from` and `fork`, through the real CLI
// under TCG. The workload is a counter whose value lives only in a shell
// variable (the guest's memory), stepped by a FIFO handshake so every value
// is exact: a copy that booted instead of being restored would start again
// at 1.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

// Each step: an exec writes to /tmp/tick, the loop adds one to i (memory
// only) and hands the new value back through /tmp/done.
const std::vector<std::string> kCounter = {
    "sh", "-c",
    "mkfifo /tmp/tick /tmp/done 2>/dev/null; i=0; while :; do cat /tmp/tick >/dev/null; i=$((i+1)); echo $i > /tmp/done; done"};

class VmSnapshot : public BoxTest {
 protected:
  VmSnapshot() { isolation_ = "vm"; }

  std::string exec(const std::string& box, const std::string& script) {
    auto r = cubby({"exec", box, "sh", "-c", script});
    EXPECT_EQ(r.rc, 0) << box << ": " << script << ": " << r.err;
    return r.out;
  }
  // One step of the box's counter; its new value.
  int tick(const std::string& box) {
    // Whoever comes first makes the FIFOs (the box may not have yet).
    auto out = exec(box, "mkfifo /tmp/tick /tmp/done 2>/dev/null; echo > /tmp/tick; cat /tmp/done");
    return out.empty() ? -1 : std::stoi(out);
  }
  std::string start_of(const std::string& id) {
    return read_file(home_ + "/boxes/" + id + "/vm.start").value_or("(none)");
  }
  std::vector<std::string> snapshot_dirs() {
    std::vector<std::string> out;
    for (const auto& n : list_dir(home_ + "/snapshots")) out.push_back(n);
    return out;
  }
  std::vector<std::string> lines(const std::string& text) {
    std::vector<std::string> out;
    size_t at = 0;
    for (size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) out.push_back(text.substr(at, nl - at));
    return out;
  }
};

// 10 forks of a box whose counter stands at 5: each goes on from 5 (its
// memory is the original's), then each goes its own way; their disks,
// hostnames and RNGs are their own; the original is unaffected.
TEST_F(VmSnapshot, TenForksContinueFromTheSameValueThenDiverge) {
  std::vector<std::string> args = {"-d", "--name", "orig", image_};
  args.insert(args.end(), kCounter.begin(), kCounter.end());
  auto r = cubby(box_args("run", args));
  ASSERT_EQ(r.rc, 0) << r.err;
  for (int i = 1; i <= 5; ++i) ASSERT_EQ(tick("orig"), i);
  exec("orig", "echo original > /root/mark && sync");

  auto f = cubby({"fork", "orig", "10"});
  ASSERT_EQ(f.rc, 0) << f.err;
  auto forks = lines(f.out);
  ASSERT_EQ(forks.size(), 10u) << f.out;
  std::set<std::string> hostnames, randoms;
  for (size_t k = 0; k < forks.size(); ++k) {
    const std::string& id = forks[k];
    EXPECT_EQ(start_of(id), "snapshot\n") << id;
    // k+1 steps from 5: its own memory from here on.
    int v = 0;
    for (size_t s = 0; s <= k; ++s) v = tick(id);
    EXPECT_EQ(v, 5 + static_cast<int>(k) + 1) << "fork " << k;
    EXPECT_EQ(exec(id, "cat /root/mark"), "original\n") << "the fork's disk is not the original's as it was";
    exec(id, "echo fork" + std::to_string(k) + " > /root/mark && sync");
    std::string host = exec(id, "hostname");
    EXPECT_EQ(host, id.substr(0, 12) + "\n");
    hostnames.insert(host);
    randoms.insert(exec(id, "head -c 16 /dev/urandom | od -An -tx1"));
  }
  EXPECT_EQ(hostnames.size(), 10u);
  EXPECT_EQ(randoms.size(), 10u) << "two forks' RNGs gave the same bytes";
  for (size_t k = 0; k < forks.size(); ++k)
    EXPECT_EQ(exec(forks[k], "cat /root/mark"), "fork" + std::to_string(k) + "\n") << "a fork saw another's disk";
  // The original: its own count and disk, its ports and name kept.
  EXPECT_EQ(tick("orig"), 6);
  EXPECT_EQ(exec("orig", "cat /root/mark"), "original\n");
  EXPECT_EQ(exec("orig", "hostname").size(), 13u);
  // fork's snapshot is not kept.
  EXPECT_EQ(cubby({"snapshots", "-q"}).out, "");
  EXPECT_TRUE(snapshot_dirs().empty());
  for (auto& id : forks) EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  EXPECT_EQ(cubby({"rm", "-f", "orig"}).rc, 0);
}

// A named snapshot: listed, restored twice (each from the saved value,
// whatever the original did since), attached to by `run --from`, and gone
// with rm-snapshot; what cannot be snapshotted says so in one line.
TEST_F(VmSnapshot, RunFromRestoresTheSavedStateAndSnapshotsAreListedAndRemoved) {
  std::vector<std::string> args = {"-d", "--name", "orig", image_};
  args.insert(args.end(), kCounter.begin(), kCounter.end());
  ASSERT_EQ(cubby(box_args("run", args)).rc, 0);
  for (int i = 1; i <= 3; ++i) ASSERT_EQ(tick("orig"), i);
  auto s = cubby({"snapshot", "orig", "at-three"});
  ASSERT_EQ(s.rc, 0) << s.err;
  const std::string snap_id = s.out.substr(0, 32);
  EXPECT_EQ(tick("orig"), 4);
  EXPECT_EQ(tick("orig"), 5);

  auto listed = json::parse(cubby({"snapshots", "--format", "json"}).out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["name"], "at-three");
  EXPECT_EQ(listed[0]["id"], snap_id);
  EXPECT_EQ(listed[0]["box_name"], "orig");
  EXPECT_GT(listed[0]["size"].get<int64_t>(), 0);
  EXPECT_EQ(cubby({"snapshot", "orig", "at-three"}).rc, 125) << "a second snapshot of the same name";

  for (const char* name : {"r1", "r2"}) {
    auto r = cubby({"run", "--from", "at-three", "-d", "--name", name});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(tick(name), 4) << name << " did not go on from the snapshot's 3";
  }
  EXPECT_EQ(tick("r1"), 5);
  EXPECT_EQ(tick("orig"), 6);
  ASSERT_EQ(cubby({"rm", "-f", "r1", "r2"}).rc, 0);

  // Attached (and by id prefix): `run --from` streams the restored
  // process's output and ends with the box, with its status.
  std::string talker = run_detached({"sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.2; done"});
  auto t = cubby({"snapshot", talker, "talker"});
  ASSERT_EQ(t.rc, 0) << t.err;
  auto [out_r, out_w] = sys::make_pipe().value();
  ChildProcess attached = spawn_cubby(home_, {"run", "--from", t.out.substr(0, 8), "--name", "r3"}, out_w.get());
  out_w.reset();
  std::string first;
  for (char c; first.find('\n') == std::string::npos && ::read(out_r.get(), &c, 1) == 1;) first += c;
  EXPECT_EQ(first.rfind("line ", 0), 0u) << first;
  ASSERT_EQ(cubby({"stop", "-t", "5", "r3"}).rc, 0);
  EXPECT_EQ(attached.wait().value().code, 143) << "the attached run --from did not report the SIGTERM";
  ASSERT_EQ(cubby({"rm", "-f", "r3", talker}).rc, 0);
  ASSERT_EQ(cubby({"rm-snapshot", "talker"}).rc, 0);

  // What cannot be: sandbox boxes, a paused box, a missing snapshot, bad names.
  std::string sandbox = [&] {
    auto r = run_cubby(home_, {"run", "-d", "--isolation", "sandbox", "--network", "none", image_, "sleep", "100000"});
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out.substr(0, 32);
  }();
  for (const auto& bad : std::vector<std::vector<std::string>>{{"snapshot", sandbox},
                                                             {"snapshot", "orig", "../x"},
                                                             {"snapshot", "no-such-box"},
                                                             {"run", "--from", "no-such-snapshot", "-d"},
                                                             {"rm-snapshot", "no-such-snapshot"},
                                                             {"fork", "orig", "0"}}) {
    auto r = cubby(bad);
    EXPECT_EQ(r.rc, 125) << bad[0] << " " << bad[1];
    EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  }
  ASSERT_EQ(cubby({"pause", "orig"}).rc, 0);
  auto paused = cubby({"snapshot", "orig"});
  EXPECT_EQ(paused.rc, 125);
  EXPECT_NE(paused.err.find("paused"), std::string::npos) << paused.err;
  ASSERT_EQ(cubby({"unpause", "orig"}).rc, 0);
  EXPECT_EQ(tick("orig"), 7);

  ASSERT_EQ(cubby({"rm-snapshot", "at-three"}).rc, 0);
  EXPECT_EQ(cubby({"snapshots", "-q"}).out, "");
  EXPECT_TRUE(snapshot_dirs().empty()) << "rm-snapshot left its files";
  EXPECT_EQ(cubby({"run", "--from", "at-three", "-d"}).rc, 125);
  EXPECT_EQ(cubby({"rm", "-f", "orig", sandbox}).rc, 0);
}

// An exec session open across the snapshot goes on whole in the original;
// in the copy it ends (its client was the original's), and the copy serves
// new sessions.
TEST_F(VmSnapshot, AnOpenSessionGoesOnInTheOriginalAndEndsInTheCopy) {
  std::string box = run_detached();
  auto [in_r, in_w] = sys::make_pipe().value();
  auto [out_r, out_w] = sys::make_pipe().value();
  ChildProcess cat = spawn_cubby(home_, {"exec", "-i", box, "cat"}, out_w.get(), -1, in_r.get());
  out_w.reset();
  in_r.reset();
  auto line = [&](const std::string& text) {
    std::string l = text + "\n";
    EXPECT_TRUE(sys::write_all(in_w.get(), l.data(), l.size()));
    std::string got;
    char c;
    while (got.size() < l.size() && ::read(out_r.get(), &c, 1) == 1) got += c;
    return got;
  };
  EXPECT_EQ(line("before"), "before\n");
  auto f = cubby({"fork", box, "1"});
  ASSERT_EQ(f.rc, 0) << f.err;
  const std::string copy = f.out.substr(0, 32);
  EXPECT_EQ(line("after"), "after\n");
  // The copy's cat had no client: its session ended and took the process.
  // (Its SIGHUP is asynchronous to this exec: a bounded wait in the guest.)
  EXPECT_EQ(exec(copy, "for i in $(seq 100); do pgrep -x cat >/dev/null || { echo gone; exit; }; sleep 0.1; done; echo alive"),
            "gone\n");
  EXPECT_EQ(exec(copy, "echo hello"), "hello\n");
  EXPECT_EQ(line("third"), "third\n");
  in_w.reset();
  EXPECT_EQ(cat.wait().value().code, 0);
  EXPECT_EQ(cubby({"rm", "-f", box, copy}).rc, 0);
}

// kill -9 during a snapshot: of QEMU (the snapshot fails in one line, the
// box ended, nothing half-made stays), and of the CLI that asked (the shim
// finishes; the partial directory of the dead CLI is swept by the next
// snapshot, which succeeds); and of the shim of a box being restored.
TEST_F(VmSnapshot, KilledDuringASnapshotLeavesNothingAndTheNextOneWorks) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC));
  ASSERT_TRUE(mkdir_p(home_ + "/snapshots"));
  ASSERT_GE(::inotify_add_watch(in.get(), (home_ + "/snapshots").c_str(), IN_CREATE), 0);
  alignas(inotify_event) char buf[4096];

  std::string victim = run_detached();
  pid_t shim = shim_pid(victim);
  std::vector<pid_t> qemu;
  for (pid_t p : children_of(shim))
    if (read_file("/proc/" + std::to_string(p) + "/comm").value_or("").rfind("qemu", 0) == 0) qemu.push_back(p);
  ASSERT_EQ(qemu.size(), 1u);
  auto [err_r, err_w] = sys::make_pipe().value();
  ChildProcess snap = spawn_cubby(home_, {"snapshot", victim}, -1, err_w.get());
  err_w.reset();
  ASSERT_GT(::read(in.get(), buf, sizeof buf), 0);  // its partial directory: the snapshot is under way
  ASSERT_EQ(::kill(qemu[0], SIGKILL), 0);
  auto st = snap.wait();
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 125);
  auto err = sys::read_all(err_r.get()).value_or("");
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_EQ(cubby({"snapshots", "-q"}).out, "");
  EXPECT_TRUE(snapshot_dirs().empty()) << "the failed snapshot left files";
  EXPECT_EQ(cubby({"wait", victim}).rc, 0);
  EXPECT_EQ(cubby({"rm", "-f", victim}).rc, 0);

  std::string box = run_detached();
  ChildProcess cli = spawn_cubby(home_, {"snapshot", box, "lost"});
  ASSERT_GT(::read(in.get(), buf, sizeof buf), 0);
  ASSERT_EQ(::kill(cli.pid(), SIGKILL), 0);
  (void)cli.wait();
  auto s = cubby({"snapshot", box, "kept"});
  ASSERT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(snapshot_dirs(), std::vector<std::string>{s.out.substr(0, 32)}) << "a dead CLI's partial snapshot stayed";
  // kill -9 of the shim of a box being restored: the run fails in one
  // line, the half-made box is removed, and the next restore works. The
  // window is made certain: the snapshot's stream is put behind a FIFO that
  // this test feeds, so QEMU is mid-restore when the shim dies.
  const std::string state = home_ + "/snapshots/" + s.out.substr(0, 32) + "/state";
  ASSERT_EQ(::rename(state.c_str(), (state + ".real").c_str()), 0);
  ASSERT_EQ(::mkfifo(state.c_str(), 0600), 0);
  UniqueFd fifo(::open(state.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
  ASSERT_TRUE(fifo);
  auto real = read_file(state + ".real").value();
  auto [rerr_r, rerr_w] = sys::make_pipe().value();
  ChildProcess restore = spawn_cubby(home_, {"run", "--from", "kept", "-d", "--name", "doomed"}, -1, rerr_w.get());
  rerr_w.reset();
  // 1 MiB of the stream taken by QEMU (a pipe holds 64 KiB): the restore is under way.
  for (size_t sent = 0; sent < (1u << 20);) {
    pollfd p[2] = {{fifo.get(), POLLOUT, 0}, {restore.pidfd(), POLLIN, 0}};
    ASSERT_GT(::poll(p, 2, 120000), 0) << "QEMU never read the stream";  // backstop
    ASSERT_FALSE(p[1].revents) << "the restore ended before QEMU read its stream: "
                               << sys::read_all(rerr_r.get()).value_or("");
    ssize_t n = ::write(fifo.get(), real.data() + sent, (1u << 20) - sent);
    if (n > 0) sent += static_cast<size_t>(n);
  }
  pid_t doomed_shim = shim_pid("doomed");
  ASSERT_GT(doomed_shim, 0);
  ASSERT_EQ(::kill(doomed_shim, SIGKILL), 0);
  auto rst = restore.wait();
  ASSERT_TRUE(rst);
  auto rerr = sys::read_all(rerr_r.get()).value_or("");
  EXPECT_EQ(rst->code, 125) << rerr;
  EXPECT_EQ(std::count(rerr.begin(), rerr.end(), '\n'), 1) << rerr;
  EXPECT_NE(cubby({"inspect", "doomed"}).rc, 0) << "the half-made copy was kept";
  fifo.reset();
  ASSERT_EQ(::rename((state + ".real").c_str(), state.c_str()), 0);
  auto r = cubby({"run", "--from", "kept", "-d"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(exec(r.out.substr(0, 32), "echo alive"), "alive\n");
  EXPECT_EQ(cubby({"rm", "-f", box, r.out.substr(0, 32)}).rc, 0);
  EXPECT_EQ(cubby({"rm-snapshot", "kept"}).rc, 0);
}

}  // namespace
}  // namespace cubby::test
