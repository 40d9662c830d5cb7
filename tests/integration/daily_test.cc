// Daily use (issue 13, the rest of items 2-6), through the real CLI, with
// Docker's behaviour as the reference: the box filesystem flags
// (`--read-only`, `--tmpfs`, `--shm-size`), `stats` and `top`, and /tmp as
// part of the box's filesystem. docs/TESTING.md lists the two-sided checks.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/process.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

class Daily : public BackendTest {};

INSTANTIATE_TEST_SUITE_P(Backends, Daily, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

// The /proc/mounts line of the mount on `path`, from the box's output.
std::string mount_line(const std::string& mounts, const std::string& path) {
  std::istringstream in(mounts);
  for (std::string l; std::getline(in, l);)
    if (l.find(" " + path + " ") != std::string::npos) return l;
  return "";
}

// docker run --read-only --tmpfs /run --tmpfs /scratch:size=1m,mode=700,exec
// --shm-size 8m: the root is read-only, the tmpfs mounts are writable with
// Docker's defaults (noexec,nosuid,nodev) unless an option says otherwise,
// /dev/shm has the size asked for.
TEST_P(Daily, ReadOnlyTmpfsAndShmSizeShapeTheBoxsFilesystem) {
  auto r = cubby(box_args("run", {"--rm", "--read-only", "--tmpfs", "/run", "--tmpfs",
                                  "/scratch:size=1m,mode=700,exec", "--shm-size", "8m", image_, "sh", "-c",
                                  "cat /proc/mounts; touch /root-write 2>&1 && echo root-writable; "
                                  "touch /run/f /scratch/f /dev/shm/f && echo tmpfs-writable; "
                                  "df -k /dev/shm | awk 'NR==2{print \"shm-kb\", $2}'; stat -c %a /scratch"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out.find("root-writable"), std::string::npos) << "--read-only left / writable";
  EXPECT_NE(r.out.find("Read-only file system"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tmpfs-writable"), std::string::npos) << r.out;
  const std::string run = mount_line(r.out, "/run"), scratch = mount_line(r.out, "/scratch");
  EXPECT_NE(run.find("tmpfs"), std::string::npos) << r.out;
  for (const char* o : {"rw", "nosuid", "nodev", "noexec"}) EXPECT_NE(run.find(o), std::string::npos) << o << ": " << run;
  EXPECT_NE(scratch.find("size=1024k"), std::string::npos) << scratch;
  EXPECT_NE(scratch.find("mode=700"), std::string::npos) << scratch;
  EXPECT_EQ(scratch.find("noexec"), std::string::npos) << "exec did not undo Docker's noexec: " << scratch;
  EXPECT_NE(r.out.find("shm-kb 8192\n"), std::string::npos) << "/dev/shm is not 8m: " << r.out;
  EXPECT_NE(r.out.find("\n700\n"), std::string::npos) << r.out;

  // Without the flags: a writable root and Docker's 64 MiB /dev/shm.
  auto plain = cubby(box_args("run", {"--rm", image_, "sh", "-c", "touch /f && df -k /dev/shm | awk 'NR==2{print $2}'"}));
  ASSERT_EQ(plain.rc, 0) << plain.err;
  EXPECT_EQ(plain.out, "65536\n") << plain.out;
}

// Bad values are one line each, exit 125, and leave no box.
TEST_P(Daily, BadFilesystemFlagsAreOneLineAndLeaveNothing) {
  for (std::vector<std::string> bad : {std::vector<std::string>{"--tmpfs", "relative"},
                                       {"--tmpfs", "/"},
                                       {"--tmpfs", "/a/../b"},
                                       {"--tmpfs", "/x:bogus"},
                                       {"--tmpfs", "/x:size=lots"},
                                       {"--tmpfs", "/x:size=1m,,ro"},
                                       {"--tmpfs", "/x", "--tmpfs", "/x"},
                                       {"--shm-size", "0"},
                                       {"--shm-size", "many"}}) {
    std::vector<std::string> args = {"--rm"};
    args.insert(args.end(), bad.begin(), bad.end());
    args.insert(args.end(), {image_, "true"});
    auto r = cubby(box_args("run", args));
    EXPECT_EQ(r.rc, 125) << bad.back() << ": " << r.out << r.err;
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_NE(r.err.find(bad[bad.size() - 2]), std::string::npos) << "the message names its flag: " << r.err;
  }
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << "a refused run left a box";
}

// docker run: /tmp is the container's own directory, not a mount: what a box
// writes there is kept across stop/start and is in `export`, like any file
// of the box; the image's /tmp (busybox's: 1777) is what the box sees.
TEST_P(Daily, TmpIsPartOfTheBoxsFilesystemAndSurvivesStopStart) {
  const std::string id = run_detached();
  auto w = cubby({"exec", id, "sh", "-c", "grep ' /tmp ' /proc/mounts; stat -c %a /tmp; echo kept > /tmp/keep"});
  ASSERT_EQ(w.rc, 0) << w.err;
  EXPECT_EQ(w.out, "1777\n") << "/tmp is a mount of its own, or lost its mode";
  // A plain stop (SIGTERM first): a vm guest that is SIGKILLed loses what
  // its own page cache had not written to the box disk yet.
  ASSERT_EQ(cubby({"stop", id}).rc, 0);
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  auto r = cubby({"exec", id, "cat", "/tmp/keep"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "kept\n") << "/tmp was emptied by stop/start";
  auto tar = cubby({"export", id});
  EXPECT_EQ(tar.rc, 0) << tar.err;
  EXPECT_NE(tar.out.find("tmp/keep"), std::string::npos) << "/tmp/keep is not in export";
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// docker stats --no-stream [--format json] and docker top: the workload's
// CPU, memory (and its limit), network, processes; top lists the box's
// processes by host pid with ps's columns. A vm box has no host cgroup: its
// columns are unset ("--", null), and top says why instead of listing.
TEST_P(Daily, StatsAndTopShowWhatTheBoxUses) {
  const std::string id = run_detached({"sleep", "1000000"});
  ASSERT_EQ(cubby({"exec", "-d", id, "sh", "-c", "while :; do :; done"}).rc, 0);
  auto j = cubby({"stats", "--no-stream", "--format", "json", id});
  ASSERT_EQ(j.rc, 0) << j.err;
  ASSERT_EQ(std::count(j.out.begin(), j.out.end(), '\n'), 1) << "one line a box: " << j.out;
  auto s = json::parse(j.out);
  EXPECT_EQ(s["id"], id);
  for (const char* k : {"name", "cpu_percent", "memory_bytes", "memory_limit_bytes", "memory_percent", "net_rx_bytes",
                        "net_tx_bytes", "block_read_bytes", "block_write_bytes", "pids"})
    EXPECT_TRUE(s.contains(k)) << k;
  if (!vm()) {
    EXPECT_GT(s["cpu_percent"].get<double>(), 5.0) << "a busy loop runs in the box: " << j.out;
    EXPECT_GT(s["memory_bytes"].get<int64_t>(), 0);
    EXPECT_GE(s["pids"].get<int64_t>(), 2) << "sleep and the loop";
    EXPECT_EQ(s["net_rx_bytes"], 0) << "--network none: only lo, which is not counted";
  } else {
    EXPECT_TRUE(s["memory_bytes"].is_null()) << j.out;
  }
  auto t = cubby({"stats", "--no-stream", id});
  ASSERT_EQ(t.rc, 0) << t.err;
  EXPECT_EQ(t.out.rfind("BOX ID", 0), 0u) << t.out;
  for (const char* col : {"NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"})
    EXPECT_NE(t.out.find(col), std::string::npos) << col << ": " << t.out;
  EXPECT_NE(t.out.find("\n" + id.substr(0, 12) + " "), std::string::npos) << t.out;

  auto top = cubby({"top", id});
  if (vm()) {
    EXPECT_EQ(top.rc, 125);
    EXPECT_EQ(top.err_lines().size(), 1u) << top.err;
    EXPECT_NE(top.err.find("vm box"), std::string::npos) << top.err;
  } else {
    ASSERT_EQ(top.rc, 0) << top.err;
    EXPECT_EQ(top.out.rfind("UID ", 0), 0u) << top.out;
    EXPECT_NE(top.out.find("sleep 1000000"), std::string::npos) << top.out;
    EXPECT_EQ(top.out.find("cubby-agent"), std::string::npos) << "the agent is cubby's, not the workload's: " << top.out;
    // The pids are the host's: each one's cmdline here is the box's process.
    auto cols = cubby({"top", id, "-o", "pid=,comm="});
    ASSERT_EQ(cols.rc, 0) << cols.err;
    std::istringstream in(cols.out);
    int sleeps = 0;
    for (long pid; in >> pid;) {
      std::string comm;
      in >> comm;
      auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline").value_or("");
      EXPECT_FALSE(cmdline.empty()) << pid << " is not a host pid";
      if (comm != "sleep") continue;
      ++sleeps;
      EXPECT_EQ(cmdline.rfind(std::string("sleep\0", 6), 0), 0u) << cmdline;
    }
    EXPECT_EQ(sleeps, 1) << cols.out;
  }
  ASSERT_EQ(cubby({"stop", "-t", "0", id}).rc, 0);
  auto stopped = cubby({"stats", "--no-stream", id});
  EXPECT_EQ(stopped.rc, 125);
  EXPECT_EQ(stopped.err_lines().size(), 1u) << stopped.err;
  EXPECT_EQ(cubby({"top", id}).rc, 125);
  EXPECT_EQ(cubby({"stats", "--no-stream", "no-such-box"}).rc, 125);
  EXPECT_EQ(cubby({"stats", "--no-stream", "--format", "yaml", id}).rc, 125);
  EXPECT_EQ(cubby({"stats", "--interval", "0s", id}).rc, 125);
  EXPECT_EQ(cubby({"rm", id}).rc, 0);
}

// A --memory limit is the box's LIMIT and the base of MEM %.
TEST_P(Daily, StatsShowTheMemoryLimit) {
  if (vm()) GTEST_SKIP() << "a vm box's memory is the guest's: no host cgroup to read";
  auto r = cubby(box_args("run", {"-d", "--memory", "64m", image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string id = r.out.substr(0, 32);
  auto s = json::parse(cubby({"stats", "--no-stream", "--format", "json", "--interval", "50ms", id}).out);
  EXPECT_EQ(s["memory_limit_bytes"], int64_t{64} << 20) << s.dump();
  EXPECT_NEAR(s["memory_percent"].get<double>(), 100.0 * s["memory_bytes"].get<double>() / (64 << 20), 0.01);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// `cubby pause` keeps the box's memory on both backends (sandbox: the cgroup
// freezer; vm: the VM's vCPUs stop, QMP): `ls` says "(Paused)", an exec is
// refused with a clear line, pausing twice is a conflict; after unpause the
// workload's counter carries on from where it stood.
TEST_P(Daily, PauseFreezesTheWorkloadAndExecIsRefused) {
  const std::string id = run_detached({"sh", "-c", "n=0; while :; do n=$((n+1)); echo $n > /tmp/n.new; mv /tmp/n.new /tmp/n; done"});
  // (The box's first count may not be written yet: awaited in the box.)
  auto before = cubby({"exec", id, "sh", "-c", "while [ ! -s /tmp/n ]; do :; done; cat /tmp/n"});
  ASSERT_EQ(before.rc, 0) << before.err;
  ASSERT_EQ(cubby({"pause", id}).rc, 0);
  EXPECT_NE(cubby({"ls"}).out.find("(Paused)"), std::string::npos) << cubby({"ls"}).out;
  auto listed = json::parse(cubby({"ls", "--format", "json"}).out);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["paused"], true);
  auto e = cubby({"exec", id, "true"});
  EXPECT_EQ(e.rc, 125);
  EXPECT_NE(e.err.find("is paused: unpause it first"), std::string::npos) << e.err;
  auto again = cubby({"pause", id});
  EXPECT_EQ(again.rc, 125);
  EXPECT_NE(again.err.find("already paused"), std::string::npos) << again.err;
  ASSERT_EQ(cubby({"unpause", id}).rc, 0);
  EXPECT_EQ(cubby({"ls"}).out.find("(Paused)"), std::string::npos);
  EXPECT_EQ(json::parse(cubby({"ls", "--format", "json"}).out)[0]["paused"], false);
  // Running again, and counting on from its own memory (never from 0): of
  // two reads, the second is higher. (A loaded host may run two execs
  // within one step of the counter: the box's own progress is what is
  // awaited, a bounded number of reads.)
  auto a = cubby({"exec", id, "cat", "/tmp/n"});
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_GE(std::stoll(a.out), std::stoll(before.out));
  bool advanced = false;
  for (int i = 0; i < 200 && !advanced; ++i) {
    auto b = cubby({"exec", id, "cat", "/tmp/n"});
    ASSERT_EQ(b.rc, 0) << b.err;
    advanced = std::stoll(b.out) > std::stoll(a.out);
  }
  EXPECT_TRUE(advanced) << "the counter did not carry on after unpause";
  EXPECT_NE(cubby({"unpause", id}).err.find("is not paused"), std::string::npos);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// 100 pause/unpause cycles with an exec session open across them (issue 14):
// in every cycle a line goes to the exec's stdin while the box is paused and
// comes back once it runs again, so no frame is lost, duplicated or
// reordered by a pause; the workload's in-memory counter survives them all.
TEST_P(Daily, HundredPauseCyclesKeepAnExecsStreamWholeAndInOrder) {
  const std::string id = run_detached({"sh", "-c", "n=0; while :; do n=$((n+1)); echo $n > /tmp/n.new; mv /tmp/n.new /tmp/n; done"});
  // (The box's first count may not be written yet: awaited in the box.)
  auto before = cubby({"exec", id, "sh", "-c", "while [ ! -s /tmp/n ]; do :; done; cat /tmp/n"});
  ASSERT_EQ(before.rc, 0) << before.err;
  auto [in_r, in_w] = sys::make_pipe().value();
  auto [out_r, out_w] = sys::make_pipe().value();
  ChildProcess cat = spawn_cubby(home_, {"exec", "-i", id, "cat"}, out_w.get(), -1, in_r.get());
  in_r.reset();
  out_w.reset();
  std::string got;
  auto await_line = [&](const std::string& line) {
    while (got.find(line) == std::string::npos) {
      char buf[256];
      ssize_t n = ::read(out_r.get(), buf, sizeof buf);  // backstop: ctest's timeout
      if (n <= 0) return false;
      got.append(buf, static_cast<size_t>(n));
    }
    return true;
  };
  std::string want;
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(cubby({"pause", id}).rc, 0) << "cycle " << i;
    const std::string line = "line " + std::to_string(i) + "\n";
    ASSERT_TRUE(sys::write_all(in_w.get(), line.data(), line.size()).has_value());
    ASSERT_EQ(cubby({"unpause", id}).rc, 0) << "cycle " << i;
    want += line;
    ASSERT_TRUE(await_line(line)) << "cycle " << i << ": the exec ended; it said: " << got;
  }
  EXPECT_EQ(got, want);
  in_w.reset();  // EOF: cat ends, and with it the exec
  char extra;
  EXPECT_EQ(::read(out_r.get(), &extra, 1), 0) << "output after the last line: " << got;
  auto st = cat.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code, 0);
  auto after = cubby({"exec", id, "cat", "/tmp/n"});
  ASSERT_EQ(after.rc, 0) << after.err;
  EXPECT_GE(std::stoll(after.out), std::stoll(before.out)) << "the counter started over";
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// A paused box still ends when asked (as Docker's and podman's do): `stop`
// resumes it so the workload hears its SIGTERM (exit 143, not the grace's
// SIGKILL), `kill` lands (137), `rm -f` removes it. A vm cannot take any
// other signal while stopped: refused. Without the thaw a sandbox box's kill
// never lands (v1's freezer holds a SIGKILL pending) and these hang.
TEST_P(Daily, APausedBoxEndsOnStopKillAndRmF) {
  const std::string id = run_detached({"sleep", "1000000"});
  ASSERT_EQ(cubby({"pause", id}).rc, 0);
  if (vm()) {
    auto usr1 = cubby({"kill", "-s", "USR1", id});
    EXPECT_EQ(usr1.rc, 125);
    EXPECT_NE(usr1.err.find("is paused"), std::string::npos) << usr1.err;
  }
  ASSERT_EQ(cubby({"stop", "-t", "60", id}).rc, 0);
  auto j = json::parse(cubby({"inspect", id}).out);
  EXPECT_EQ(j["status"], "stopped") << j.dump();
  EXPECT_EQ(j["exit_code"], 143) << "the stop did not reach the paused workload: " << j.dump();

  ASSERT_EQ(cubby({"start", id}).rc, 0);
  ASSERT_EQ(cubby({"pause", id}).rc, 0);
  ASSERT_EQ(cubby({"kill", id}).rc, 0);
  auto w = cubby({"wait", id});
  EXPECT_EQ(w.out, "137\n") << w.err;

  ASSERT_EQ(cubby({"start", id}).rc, 0);
  ASSERT_EQ(cubby({"pause", id}).rc, 0);
  auto rm = cubby({"rm", "-f", id});
  EXPECT_EQ(rm.rc, 0) << rm.err;
  EXPECT_EQ(cubby({"ls", "-aq"}).out, "");
}

// Streaming (not on a terminal: one sample after another, appended) follows
// the boxes named and ends by itself once they have all ended.
TEST_P(Daily, StatsStreamEndsWhenItsBoxesEnd) {
  const std::string id = run_detached({"sleep", "1000000"});
  auto [rd, wr] = sys::make_pipe().value();
  ChildProcess stream = spawn_cubby(home_, {"stats", "--format", "json", "--interval", "100ms", id}, wr.get(), -1);
  wr.reset();
  std::string got;
  char buf[4096];
  while (std::count(got.begin(), got.end(), '\n') < 2) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    ASSERT_GT(n, 0) << "the stream ended early: " << got;
    got.append(buf, static_cast<size_t>(n));
  }
  EXPECT_NE(got.find("\"id\":\"" + id + "\""), std::string::npos) << got;
  ASSERT_EQ(cubby({"rm", "-f", id}).rc, 0);
  // EOF, then its exit: the stream saw the box go (a backstop is ctest's timeout).
  while (::read(rd.get(), buf, sizeof buf) > 0) {
  }
  auto st = stream.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code, 0);
}

// `exec` by full id or name goes straight to the box's agent (issue 13 item
// 6): strace shows no open of the store, yet the exec gets the box's env,
// workdir and user, -e on top. A box that is not running, an id prefix, a
// name reused after rm: the store decides, as before.
TEST_P(Daily, ExecByIdOrNameNeedsNoStore) {
  if (::access("/usr/bin/strace", X_OK) != 0) GTEST_SKIP() << "strace is not installed";
  auto r = cubby(box_args("run", {"-d", "--name", "fast", "-e", "A=box", "-e", "B=box", "-w", "/etc", "-u", "1000",
                                  image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string id = r.out.substr(0, 32);
  const std::string trace = home_ + "/exec.trace";
  for (const std::string& ref : {std::string("fast"), id}) {
    CmdResult t;
    {
      SpawnSpec s;
      s.argv = {"/usr/bin/strace", "-f", "-qq", "-e", "trace=%file", "-o", trace, cubby_path(), "--home", home_,
                "exec", "-e", "B=exec", ref, "sh", "-c", "echo $A $B $(pwd) $(id -u)"};
      auto [rd, wr] = sys::make_pipe().value();
      s.fds = {-1, wr.get(), 2};
      auto c = spawn(s).value();
      wr.reset();
      t.out = sys::read_all(rd.get()).value_or("");
      t.rc = c.wait().value().code;
    }
    EXPECT_EQ(t.rc, 0) << ref;
    EXPECT_EQ(t.out, "box exec /etc 1000\n") << ref;
    const std::string calls = read_file(trace).value_or("");
    EXPECT_NE(calls.find("exec.json"), std::string::npos) << calls.substr(0, 3000);
    EXPECT_EQ(calls.find("cubby.db"), std::string::npos) << "exec " << ref << " opened the store";
  }
  // A prefix is resolved by the store, as before.
  auto prefix = cubby({"exec", id.substr(0, 8), "true"});
  EXPECT_EQ(prefix.rc, 0) << prefix.err;
  // Not running: the store's account of it, not a connection error.
  ASSERT_EQ(cubby({"stop", "-t", "0", "fast"}).rc, 0);
  auto stopped = cubby({"exec", "fast", "true"});
  EXPECT_EQ(stopped.rc, 125);
  ASSERT_EQ(stopped.err_lines().size(), 1u) << stopped.err;
  EXPECT_NE(stopped.err.find("box fast"), std::string::npos) << stopped.err;
  EXPECT_EQ(stopped.err.find("connect"), std::string::npos) << stopped.err;
  // The name goes with its box, and a new box of that name is the one reached.
  ASSERT_EQ(cubby({"rm", "fast"}).rc, 0);
  EXPECT_NE(::access((home_ + "/names/fast").c_str(), F_OK), 0) << "the name file outlived its box";
  auto again = cubby(box_args("run", {"-d", "--name", "fast", "-e", "A=second", image_, "sleep", "1000000"}));
  ASSERT_EQ(again.rc, 0) << again.err;
  auto second = cubby({"exec", "fast", "sh", "-c", "echo $A"});
  EXPECT_EQ(second.out, "second\n") << second.err;
  EXPECT_EQ(cubby({"exec", id, "true"}).rc, 125) << "the removed box's id still reached something";
  EXPECT_EQ(cubby({"rm", "-f", "fast"}).rc, 0);
}

// `import FILE` on a terminal says how much of the archive it has read (as
// pull shows its bytes); off a terminal it prints the id alone, as before.
class DailyCli : public BoxTest {};

TEST_F(DailyCli, ImportShowsProgressOnATerminal) {
  const std::string out = home_ + "/tty.out";
  UniqueFd o(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnSpec s;
  s.argv = {"/usr/bin/script", "-qefc",
            cubby_path() + " --home " + home_ + " import " + CUBBY_TEST_ROOTFS + " localhost/tty:1", "/dev/null"};
  s.fds = {-1, o.get(), o.get()};
  auto c = spawn(s);
  ASSERT_TRUE(c.has_value());
  auto st = c->wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->code, 0);
  const std::string text = read_file(out).value_or("");
  EXPECT_NE(text.find("import " + std::string(CUBBY_TEST_ROOTFS) + ": "), std::string::npos) << text;
  EXPECT_NE(text.find("(100%)"), std::string::npos) << text;
  EXPECT_NE(text.find("sha256:"), std::string::npos) << text;
  auto plain = cubby({"import", CUBBY_TEST_ROOTFS, "localhost/plain:1"});
  EXPECT_EQ(plain.rc, 0) << plain.err;
  EXPECT_EQ(plain.err, "") << "progress off a terminal";
  EXPECT_EQ(plain.out.rfind("sha256:", 0), 0u) << plain.out;
}

}  // namespace
}  // namespace cubby::test
