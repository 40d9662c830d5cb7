// The Docker flags and verbs of issue 13 (item 2), through the real CLI:
// `logs --tail/--since/--until/-t`, ... Each test names the Docker
// behaviour it follows; docs/TESTING.md lists the two-sided checks.
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "runtime/log_lines.h"

namespace cubby::test {
namespace {

using nlohmann::json;

int64_t now_ns() {
  struct timespec t;
  ::clock_gettime(CLOCK_REALTIME, &t);
  return int64_t{t.tv_sec} * 1'000'000'000 + t.tv_nsec;
}

class Flags : public BackendTest {
 protected:
  // Reads `logs -f BOX` until `text` has been logged (an event, not a guess
  // at how long the box takes), then lets the follower run to the box's end.
  struct Follower {
    ChildProcess cli;
    UniqueFd out;
  };
  Follower follow_until(const std::string& id, const std::string& text) {
    auto [r, w] = sys::make_pipe().value();
    Follower f{spawn_cubby(home_, {"logs", "-f", "--no-console", id}, w.get(), -1), std::move(r)};
    w.reset();
    std::string got;
    char buf[256];
    while (got.find(text) == std::string::npos) {
      ssize_t n = ::read(f.out.get(), buf, sizeof buf);
      if (n <= 0) {
        ADD_FAILURE() << "the log ended before \"" << text << "\": " << got;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return f;
  }
  CmdResult logs(std::vector<std::string> args, const std::string& id) {
    args.insert(args.begin(), {"logs", "--no-console"});
    args.push_back(id);
    return cubby(args);
  }
};

INSTANTIATE_TEST_SUITE_P(Backends, Flags, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

// docker logs --tail N (the last N lines of both streams together, a last
// line without its newline counted), --since/--until (RFC 3339, Unix time,
// or a duration back from now) and -t (RFC 3339 with nanoseconds, UTC).
// The box writes "one" and "err1", waits, then the rest: `mid`, taken in
// between, splits them.
TEST_P(Flags, LogsTailSinceUntilAndTimestampsWorkOnLines) {
  std::string id = run_detached(
      {"sh", "-c", "echo one; echo err1 >&2; mkfifo /tmp/go; echo ready; cat /tmp/go; echo two; printf 'three\\nfour\\npartial'"});
  auto follower = follow_until(id, "ready\n");
  const int64_t mid = now_ns();
  ASSERT_EQ(cubby({"exec", "-d", id, "sh", "-c", ": > /tmp/go"}).rc, 0);
  (void)sys::read_all(follower.out.get());
  EXPECT_EQ(follower.cli.wait().value().code, 0);
  ASSERT_EQ(cubby({"wait", id}).out, "0\n");

  auto all = logs({}, id);
  ASSERT_EQ(all.out, "one\nready\ntwo\nthree\nfour\npartial");
  ASSERT_EQ(all.err, "err1\n");

  auto t2 = logs({"--tail", "2"}, id);
  EXPECT_EQ(t2.rc, 0) << t2.err;
  EXPECT_EQ(t2.out, "four\npartial");
  EXPECT_EQ(t2.err, "");
  EXPECT_EQ(logs({"-n", "0"}, id).out, "");
  EXPECT_EQ(logs({"--tail", "all"}, id).out, all.out);
  EXPECT_EQ(logs({"--tail", "100"}, id).out, all.out);

  const std::string mid_rfc = format_log_time(mid);
  for (const std::string& since : {mid_rfc, mid_rfc.substr(0, mid_rfc.size() - 1) + "+00:00",
                                   std::to_string(mid / 1'000'000'000) + "." + mid_rfc.substr(20, 9)}) {
    auto s = logs({"--since", since}, id);
    EXPECT_EQ(s.rc, 0) << since << ": " << s.err;
    EXPECT_EQ(s.out, "two\nthree\nfour\npartial") << since;
    EXPECT_EQ(s.err, "") << since;
    auto u = logs({"--until", since}, id);
    EXPECT_EQ(u.out, "one\nready\n") << since;
    EXPECT_EQ(u.err, "err1\n") << since;
  }
  EXPECT_EQ(logs({"--since", "1h"}, id).out, all.out);
  EXPECT_EQ(logs({"--since", "1h", "--tail", "1"}, id).out, "partial");
  EXPECT_EQ(logs({"--until", "1h"}, id).out, "");

  auto t = logs({"-t"}, id);
  EXPECT_EQ(t.rc, 0) << t.err;
  std::regex line(R"(^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$)");
  std::istringstream in(t.out);
  std::vector<std::string> texts, stamps;
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(l, m, line)) << "not stamped: " << l;
    stamps.push_back(m[1]);
    texts.push_back(m[2]);
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"one", "ready", "two", "three", "four", "partial"}));
  EXPECT_TRUE(std::is_sorted(stamps.begin(), stamps.end()));
  EXPECT_LT(stamps[1], mid_rfc);
  EXPECT_GE(stamps[2], mid_rfc);
  EXPECT_EQ(logs({"--timestamps", "--tail", "1"}, id).out, stamps.back() + " partial");

  for (const char* bad : {"yesterday", "10x", "2026-13-01", "2026-12-02T25:00:00Z", "-5m"}) {
    auto r = logs({"--since", bad}, id);
    EXPECT_EQ(r.rc, 125) << bad;
    EXPECT_EQ(r.err_lines().size(), 1u) << bad << ": " << r.err;
  }
  EXPECT_EQ(logs({"--tail", "many"}, id).rc, 125);
  EXPECT_EQ(cubby({"rm", id}).rc, 0);
}

// docker cp works on a created, stopped or exited container, both ways ("run
// the job, copy the results out"), and leaves it as it was: status, exit
// code and times. A copy into a created box is there when it starts.
TEST_P(Flags, CpWorksOnBoxesThatAreNotRunningAndLeavesThemAsTheyWere) {
  const std::string host = home_ + "/host";
  ASSERT_EQ(::mkdir(host.c_str(), 0700), 0);
  ASSERT_TRUE(write_file(host + "/in.txt", "from-the-host\n").has_value());
  auto c = cubby(box_args("create", {image_, "sh", "-c", "cat /in.txt; echo result > /out.txt; exit 3"}));
  ASSERT_EQ(c.rc, 0) << c.err;
  std::string id = c.out.substr(0, 32);
  auto in = cubby({"cp", host + "/in.txt", id + ":/in.txt"});
  ASSERT_EQ(in.rc, 0) << in.err;
  EXPECT_EQ(status(id), "created") << "cp must leave a created box created";
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  ASSERT_EQ(cubby({"wait", id}).out, "3\n");
  EXPECT_EQ(logs({}, id).out, "from-the-host\n");

  auto before = json::parse(cubby({"inspect", id}).out);
  auto out = cubby({"cp", id + ":/out.txt", host + "/"});
  ASSERT_EQ(out.rc, 0) << out.err;
  EXPECT_EQ(read_file(host + "/out.txt").value_or(""), "result\n");
  auto tar = cubby({"cp", id + ":/out.txt", "-"});
  EXPECT_EQ(tar.rc, 0) << tar.err;
  EXPECT_NE(tar.out.find("result\n"), std::string::npos);
  // Into the exited box, and out again: it is its filesystem, kept.
  ASSERT_EQ(cubby({"cp", host + "/in.txt", id + ":/again.txt"}).rc, 0);
  ASSERT_EQ(cubby({"cp", id + ":/again.txt", host + "/again.txt"}).rc, 0);
  EXPECT_EQ(read_file(host + "/again.txt").value_or(""), "from-the-host\n");
  auto missing = cubby({"cp", id + ":/no/such", host + "/x"});
  EXPECT_EQ(missing.rc, 125);
  EXPECT_EQ(missing.err_lines().size(), 1u) << missing.err;

  auto after = json::parse(cubby({"inspect", id}).out);
  for (const char* k : {"status", "exit_code", "started_at", "finished_at", "error"})
    EXPECT_EQ(after[k], before[k]) << k << " changed by cp";
  EXPECT_EQ(after["status"], "exited");
  EXPECT_EQ(after["exit_code"], 3);
  EXPECT_EQ(logs({}, id).out, "from-the-host\n") << "the copies must not run the workload";
  EXPECT_EQ(cubby({"rm", id}).rc, 0);
}

// Reads `logs -f BOX` until `text` has appeared `times` times; returns
// what it read (the follower is stopped by the caller's rm, or the box's end).
size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

// docker run --restart, carried out by the shim: on-failure:N restarts a
// failing box N times (RestartCount N, then the box ends with its code);
// on-failure leaves a box that exits 0 alone; always restarts until a
// user's stop or kill, which ends the box for good.
TEST_P(Flags, RestartPolicyIsCarriedOutByTheShimAndEndedByStopOrKill) {
  auto r = cubby(box_args("run", {"-d", "--restart", "on-failure:2", image_, "sh", "-c", "echo run; exit 3"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string failing = r.out.substr(0, 32);
  EXPECT_EQ(cubby({"wait", failing}).out, "3\n");
  auto in = json::parse(cubby({"inspect", failing}).out);
  EXPECT_EQ(in["restart_count"], 2);
  EXPECT_EQ(in["status"], "exited");
  EXPECT_EQ(in["config"]["restart"], "on-failure");
  EXPECT_EQ(in["config"]["restart_max"], 2);
  EXPECT_EQ(logs({}, failing).out, "run\nrun\nrun\n");

  r = cubby(box_args("run", {"-d", "--restart", "on-failure", image_, "sh", "-c", "echo ok"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string fine = r.out.substr(0, 32);
  EXPECT_EQ(cubby({"wait", fine}).out, "0\n");
  EXPECT_EQ(json::parse(cubby({"inspect", fine}).out)["restart_count"], 0);

  for (const std::string how : {"stop", "kill"}) {
    r = cubby(box_args("run", {"-d", "--restart", "always", image_, "sh", "-c", "echo up; mkfifo /tmp/go; cat /tmp/go"}));
    ASSERT_EQ(r.rc, 0) << r.err;
    std::string id = r.out.substr(0, 32);
    // Each run ends from inside (an exec opens its fifo): the shim
    // starts it again, and the follower (one shim for every run) sees it.
    auto [rd, wr] = sys::make_pipe().value();
    ChildProcess follower = spawn_cubby(home_, {"logs", "-f", "--no-console", id}, wr.get(), -1);
    wr.reset();
    std::string got;
    char buf[256];
    for (size_t runs = 1; runs <= 3; ++runs) {
      while (count_of(got, "up\n") < runs) {
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        ASSERT_GT(n, 0) << "the log ended after " << got;
        got.append(buf, static_cast<size_t>(n));
      }
      if (runs < 3) {
        // The run ends once its fifo opens (the writer waits for the reader).
        auto k = cubby({"exec", "-d", id, "sh", "-c", "until [ -p /tmp/go ]; do :; done; : > /tmp/go"});
        ASSERT_EQ(k.rc, 0) << k.err;
      }
    }
    EXPECT_EQ(json::parse(cubby({"inspect", id}).out)["restart_count"], 2);
    auto end = cubby({how, id});
    ASSERT_EQ(end.rc, 0) << end.err;
    (void)sys::read_all(rd.get());  // the follower ends with the box: no restart after a user's end
    EXPECT_EQ(follower.wait().value().code, 0);
    auto after = json::parse(cubby({"inspect", id}).out);
    EXPECT_NE(after["status"], "running") << how;
    EXPECT_EQ(after["restart_count"], 2) << how;
    EXPECT_EQ(count_of(logs({}, id).out, "up\n"), 3u) << how << ": restarted after a user's " << how;
    EXPECT_EQ(cubby({"rm", id}).rc, 0);
  }
}

// docker restart: a running box is stopped and started again (a new run,
// RestartCount back to 0), an exited one started.
TEST_P(Flags, RestartVerbStopsAndStartsAgain) {
  std::string id = run_detached({"sh", "-c", "echo run; sleep 1000000"});
  // Each run has written its line before the next step (read from logs -f:
  // an event; a vm box stopped with -t 0 before its guest wrote would not).
  auto runs_logged = [&](size_t n) {
    auto [rd, wr] = sys::make_pipe().value();
    ChildProcess follower = spawn_cubby(home_, {"logs", "-f", "--no-console", id}, wr.get(), -1);
    wr.reset();
    std::string got;
    char buf[256];
    while (count_of(got, "run\n") < n) {
      ssize_t k = ::read(rd.get(), buf, sizeof buf);
      if (k <= 0) break;
      got.append(buf, static_cast<size_t>(k));
    }
    return got;
  };  // the follower is killed and reaped as it goes out of scope
  ASSERT_EQ(runs_logged(1), "run\n");
  pid_t first = shim_pid(id);
  auto r = cubby({"restart", "-t", "0", id});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, id + "\n");
  EXPECT_EQ(status(id), "running");
  EXPECT_NE(shim_pid(id), first);
  ASSERT_EQ(runs_logged(2), "run\nrun\n");
  ASSERT_EQ(cubby({"stop", "-t", "0", id}).rc, 0);
  ASSERT_EQ(cubby({"restart", id}).rc, 0);
  EXPECT_EQ(status(id), "running");
  EXPECT_EQ(runs_logged(3), "run\nrun\nrun\n");
  EXPECT_EQ(cubby({"restart", "no-such-box"}).rc, 125);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// An exec whose box ends under it, or that comes after the end, says how
// the box ended ("box NAME exited (7)"), not "lost the connection".
TEST_P(Flags, ExecIntoAnEndedBoxSaysHowItEnded) {
  auto r = cubby(box_args("run", {"-d", "--name", "ends", image_, "sh", "-c", "mkfifo /tmp/go; cat /tmp/go; exit 7"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  auto [out_r, out_w] = sys::make_pipe().value();
  auto [err_r, err_w] = sys::make_pipe().value();
  ChildProcess ex = spawn_cubby(home_, {"exec", id, "sh", "-c", "echo started; exec sleep 1000000"}, out_w.get(), err_w.get());
  out_w.reset();
  err_w.reset();
  std::string got;
  char buf[64];
  while (got.find("started\n") == std::string::npos) {
    ssize_t n = ::read(out_r.get(), buf, sizeof buf);
    ASSERT_GT(n, 0) << "the exec ended before it started: " << got;
    got.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(cubby({"exec", "-d", id, "sh", "-c", ": > /tmp/go"}).rc, 0);
  std::string err = sys::read_all(err_r.get()).value_or("");
  int rc = ex.wait().value().code;
  EXPECT_EQ(cubby({"wait", id}).out, "7\n");
  EXPECT_EQ(err, "cubby exec: box ends exited (7)\n") << "rc " << rc;
  EXPECT_EQ(rc, 125);
  auto after = cubby({"exec", id, "true"});
  EXPECT_EQ(after.rc, 125);
  EXPECT_EQ(after.err, "cubby exec: box ends exited (7)\n");
  EXPECT_EQ(cubby({"rm", id}).rc, 0);
}

// exec -d prints the exec's id; exec-status reads its status later, while
// it runs and after it ended (the agent keeps it), as docker's exec inspect.
TEST_P(Flags, DetachedExecStatusIsReadableLater) {
  std::string id = run_detached();
  auto d = cubby({"exec", "-d", id, "sh", "-c", "mkfifo /tmp/go; cat /tmp/go; exit 5"});
  ASSERT_EQ(d.rc, 0) << d.err;
  std::string exec_id = d.out.substr(0, d.out.size() - 1);
  ASSERT_FALSE(exec_id.empty());
  auto running = cubby({"exec-status", id, exec_id});
  ASSERT_EQ(running.rc, 0) << running.err;
  EXPECT_EQ(json::parse(running.out)["running"], true);
  // The fifo is opened by the writer once the reader waits on it.
  ASSERT_EQ(cubby({"exec", id, "sh", "-c", "while [ ! -p /tmp/go ]; do :; done; : > /tmp/go"}).rc, 0);
  json st;
  for (;;) {  // the exec ends when the agent reaps it: read until it says so (bounded by ctest's timeout)
    auto r = cubby({"exec-status", id, exec_id});
    ASSERT_EQ(r.rc, 0) << r.err;
    st = json::parse(r.out);
    if (st["running"] == false) break;
    (void)cubby({"exec", id, "true"});  // a round trip to the agent between reads, not a sleep
  }
  EXPECT_EQ(st["exit_code"], 5);
  EXPECT_EQ(cubby({"exec-status", id, exec_id}).out, cubby({"exec-status", id, exec_id}).out) << "readable twice";
  auto unknown = cubby({"exec-status", id, "999999"});
  EXPECT_EQ(unknown.rc, 125);
  EXPECT_EQ(unknown.err_lines().size(), 1u);
  EXPECT_EQ(cubby({"exec-status", id, "x"}).rc, 125);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

// docker export: the box's filesystem as a tar (from a box in any state),
// its changes in it, /proc and /dev as empty directories, nothing of theirs.
TEST_P(Flags, ExportWritesTheBoxsFilesystemAsATar) {
  auto r = cubby(box_args("run", {"--name", "exp", image_, "sh", "-c", "mkdir /out && echo done > /out/result"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string tar = home_ + "/exp.tar";
  auto e = cubby({"export", "-o", tar, "exp"});
  ASSERT_EQ(e.rc, 0) << e.err;
  auto [rd, wr] = sys::make_pipe().value();
  SpawnSpec spec;
  spec.argv = {"/bin/tar", "-tf", tar};
  spec.fds = {-1, wr.get(), 2};
  ChildProcess lister = spawn(spec).value();
  wr.reset();
  std::string listing = sys::read_all(rd.get()).value_or("");
  ASSERT_EQ(lister.wait().value().code, 0);
  std::set<std::string> names;
  std::istringstream in(listing);
  for (std::string l; std::getline(in, l);) names.insert(l);
  for (const char* want : {"out/", "out/result", "bin/busybox", "proc/", "etc/passwd"})
    EXPECT_TRUE(names.count(want)) << want << " missing from:\n" << listing.substr(0, 2000);
  for (const auto& n : names) {
    EXPECT_FALSE(n.rfind("proc/", 0) == 0 && n != "proc/") << "exported /proc's contents: " << n;
    EXPECT_FALSE(n.rfind("sys/", 0) == 0 && n != "sys/") << "exported /sys's contents: " << n;
  }
  EXPECT_EQ(status("exp"), "exited");
  auto to_stdout = cubby({"export", "exp"});
  EXPECT_EQ(to_stdout.rc, 0) << to_stdout.err;
  // The same archive (a file's last block is not padded, a pipe's is).
  const size_t file_size = read_file(tar).value_or("").size();
  EXPECT_GE(to_stdout.out.size(), file_size);
  EXPECT_LT(to_stdout.out.size(), file_size + 10240);
  EXPECT_EQ(cubby({"export", "no-such-box"}).rc, 125);
  EXPECT_EQ(cubby({"rm", "exp"}).rc, 0);
}

// What does not depend on the backend: run on the sandbox only.
class FlagsCli : public BoxTest {
 protected:
  std::vector<std::string> ls(std::vector<std::string> args) {
    args.insert(args.begin(), {"ls", "-q", "--no-trunc"});
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 0) << r.err;
    std::vector<std::string> ids;
    std::istringstream in(r.out);
    for (std::string id; in >> id;) ids.push_back(id);
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  std::string create(const std::vector<std::string>& args) {
    auto r = cubby(box_args("create", args));
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out.substr(0, 32);
  }
};

// docker run --env-file: KEY=VALUE lines, `#` comments and blank lines
// skipped, KEY alone taken from the caller's environment (dropped when
// unset), values kept exactly; -e given after wins; a bad file is one line.
// `run --pull missing|never|always`, Docker's: with never, an image not in
// the store is one "not found" line and no registry is asked; an image that
// is there runs; a bad policy names the flag; nothing is left behind. (The
// registry named is a closed loopback port: were it asked, the error would
// say so.)
TEST_F(FlagsCli, PullPolicyNeverRunsOnlyWhatIsThere) {
  auto r = cubby(box_args("run", {"--rm", "--pull", "never", "127.0.0.1:1/nothing:1", "true"}));
  EXPECT_EQ(r.rc, 125);
  EXPECT_NE(r.err.find("no such image: 127.0.0.1:1/nothing:1"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("pull"), std::string::npos) << "never must not pull: " << r.err;
  auto ok = cubby(box_args("run", {"--rm", "--pull", "never", image_, "echo", "here"}));
  EXPECT_EQ(ok.rc, 0) << ok.err;
  EXPECT_EQ(ok.out, "here\n");
  auto bad = cubby(box_args("run", {"--rm", "--pull", "sometimes", image_, "true"}));
  EXPECT_EQ(bad.rc, 125);
  EXPECT_NE(bad.err.find("--pull: invalid value \"sometimes\""), std::string::npos) << bad.err;
  EXPECT_EQ(ls({"-a"}).size(), 0u);
}

TEST_F(FlagsCli, EnvFileIsReadAsDockerReadsItAndDashEWins) {
  const std::string f = home_ + "/env.list";
  ASSERT_TRUE(write_file(f, "# a comment\n\n  A=1\nB=two words  \nC='quoted'\nFROM_HOST\nUNSET_HERE\nD=x=y\r\nE=old\n").has_value());
  ::setenv("FROM_HOST", "host-value", 1);
  ::unsetenv("UNSET_HERE");
  auto r = cubby(box_args("run", {"--rm", "--env-file", f, "-e", "E=new", image_, "sh", "-c",
                                  "echo \"[$A][$B][$C][$FROM_HOST][${UNSET_HERE-unset}][$D][$E]\""}));
  ::unsetenv("FROM_HOST");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "[1][two words  ]['quoted'][host-value][unset][x=y][new]\n");
  ASSERT_TRUE(write_file(f, "OK=1\nBAD KEY=2\n").has_value());
  auto bad = cubby(box_args("run", {"--rm", "--env-file", f, image_, "true"}));
  EXPECT_EQ(bad.rc, 125);
  ASSERT_EQ(bad.err_lines().size(), 1u) << bad.err;
  EXPECT_NE(bad.err.find("env.list:2"), std::string::npos) << bad.err;
  auto missing = cubby(box_args("run", {"--rm", "--env-file", home_ + "/nope", image_, "true"}));
  EXPECT_EQ(missing.rc, 125);
  EXPECT_EQ(missing.err_lines().size(), 1u) << missing.err;
  EXPECT_EQ(ls({"-a"}), std::vector<std::string>{}) << "a refused run left a box";
}

// --label K=V (repeatable) in inspect, and ls --filter with Docker's rules:
// one key's values are alternatives, different keys all apply; a status
// filter shows ended boxes without -a; -q prints short ids (--no-trunc:
// whole ones); a bad filter is one line.
TEST_F(FlagsCli, LabelsAndLsFiltersFollowDocker) {
  std::string web = create({"--name", "web-1", "--label", "tier=front", "-l", "team=a", image_, "true"});
  std::string db = create({"--name", "db-1", "--label", "tier=back", "--label", "flag", image_, "true"});
  std::string job = run_detached({"sleep", "1000000"});
  auto in = json::parse(cubby({"inspect", web}).out);
  EXPECT_EQ(in["labels"], json({{"tier", "front"}, {"team", "a"}}));
  EXPECT_EQ(json::parse(cubby({"inspect", db}).out)["labels"], json({{"tier", "back"}, {"flag", ""}}));
  EXPECT_EQ(json::parse(cubby({"inspect", job}).out)["labels"], json::object());

  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_EQ(ls({}), std::vector<std::string>{job});
  EXPECT_EQ(ls({"-a"}), sorted({web, db, job}));
  EXPECT_EQ(ls({"--filter", "status=created"}), sorted({web, db})) << "a status filter implies -a";
  EXPECT_EQ(ls({"-f", "status=created", "-f", "status=running"}), sorted({web, db, job}));
  EXPECT_EQ(ls({"-a", "--filter", "label=tier"}), sorted({web, db}));
  EXPECT_EQ(ls({"-a", "--filter", "label=tier=front"}), std::vector<std::string>{web});
  EXPECT_EQ(ls({"-a", "--filter", "label=flag"}), std::vector<std::string>{db});
  EXPECT_EQ(ls({"-a", "--filter", "label=tier", "--filter", "label=team=a"}), std::vector<std::string>{web})
      << "two label filters must both hold";
  // The unnamed box is box-<hex id>: the name filters below are substrings
  // no such name can hold ("-1" or "db" could: a 1-in-16 flake in CI).
  EXPECT_EQ(ls({"-a", "--filter", "name=b-1"}), sorted({web, db}));
  EXPECT_EQ(ls({"-a", "--filter", "name=^web"}), std::vector<std::string>{web});
  EXPECT_EQ(ls({"-a", "--filter", "name=web", "--filter", "name=db-"}), sorted({web, db}));
  EXPECT_EQ(ls({"-a", "--filter", "name=web", "--filter", "status=running"}), std::vector<std::string>{});
  EXPECT_EQ(ls({"-a", "--filter", "image=" + image_}), sorted({web, db, job}));
  EXPECT_EQ(ls({"-a", "--filter", "image=" + image_ + ":latest"}), sorted({web, db, job}));
  EXPECT_EQ(ls({"-a", "--filter", "image=alpine"}), std::vector<std::string>{});
  EXPECT_EQ(ls({"-a", "--filter", "id=" + web.substr(0, 5)}), std::vector<std::string>{web});

  auto q = cubby({"ls", "-a", "-q"});
  std::istringstream qin(q.out);
  for (std::string id; qin >> id;) EXPECT_EQ(id.size(), 12u) << "ls -q prints short ids, as docker ps -q";
  for (const char* bad : {"colour=red", "status=sleeping", "label=", "name=(", "novalue"}) {
    auto r = cubby({"ls", "--filter", bad});
    EXPECT_EQ(r.rc, 125) << bad;
    EXPECT_EQ(r.err_lines().size(), 1u) << bad << ": " << r.err;
  }
  auto bad_label = cubby(box_args("create", {"--label", "=x", image_, "true"}));
  EXPECT_EQ(bad_label.rc, 125);
  EXPECT_EQ(bad_label.err_lines().size(), 1u);
}

// docker ps's table: columns as wide as their content (a long name is not
// cut, nor misaligns the next row), relative times, the command cut to 20
// characters unless --no-trunc.
TEST_F(FlagsCli, LsTableFitsRealNamesAndSaysHowLongAgo) {
  const std::string long_name = "a-rather-long-box-name-that-docker-would-show-whole";
  std::string a = create({"--name", long_name, image_, "sh", "-c", "echo this command is longer than twenty characters"});
  std::string b = create({"--name", "b", image_, "true"});
  auto r = cubby({"ls", "-a"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::istringstream in(r.out);
  std::vector<std::string> lines;
  // Columns are counted in characters: the ellipsis is one, of three bytes.
  for (std::string l; std::getline(in, l);) lines.push_back(std::regex_replace(l, std::regex("\u2026"), "~"));
  ASSERT_EQ(lines.size(), 3u) << r.out;
  EXPECT_EQ(lines[0].rfind("BOX ID", 0), 0u);
  const size_t names_at = lines[0].find("NAMES");
  ASSERT_NE(names_at, std::string::npos);
  for (size_t i = 1; i < 3; ++i) {
    EXPECT_TRUE(lines[i].substr(names_at) == long_name || lines[i].substr(names_at) == "b") << "misaligned: " << r.out;
    EXPECT_NE(lines[i].find("Created"), std::string::npos) << lines[i];
    EXPECT_TRUE(lines[i].find("second") != std::string::npos || lines[i].find("minute") != std::string::npos) << lines[i];
    EXPECT_NE(lines[i].find(" ago"), std::string::npos) << lines[i];
  }
  EXPECT_NE(lines[0].find("CREATED"), std::string::npos);
  EXPECT_EQ(lines[1].find(a.substr(0, 13)), std::string::npos) << "the id is cut to 12";
  EXPECT_NE(r.out.find("\"sh -c 'echo this co\u2026\""), std::string::npos) << r.out;
  auto full = cubby({"ls", "-a", "--no-trunc"});
  EXPECT_NE(full.out.find(a), std::string::npos);
  EXPECT_NE(full.out.find("'echo this command is longer than twenty characters'"), std::string::npos) << full.out;
  (void)b;
}

TEST_F(FlagsCli, BadRestartPoliciesAreOneLine) {
  for (std::vector<std::string> bad : {std::vector<std::string>{"--restart", "sometimes"}, {"--restart", "on-failure:x"},
                                       {"--restart", "on-failure:-1"}, {"--restart", "always", "--rm"}}) {
    bad.push_back(image_);
    bad.push_back("true");
    auto r = cubby(box_args("create", bad));
    EXPECT_EQ(r.rc, 125) << bad[1];
    EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  }
  EXPECT_EQ(ls({"-a"}), std::vector<std::string>{});
}

// docker container prune / image prune -a / system prune: what is not
// running (or not used) goes, with -f or a "y"; a running box and its image
// stay; anything but "y" removes nothing.
TEST_F(FlagsCli, PruneRemovesWhatIsNotRunningOrNotUsed) {
  std::string created = create({"--label", "keep=no", image_, "true"});
  std::string exited = create({image_, "true"});
  ASSERT_EQ(cubby({"start", exited}).rc, 0);
  ASSERT_EQ(cubby({"wait", exited}).out, "0\n");
  std::string running = run_detached();
  // A second image nobody uses.
  const std::string spare = home_ + "/spare";
  ASSERT_EQ(::mkdir(spare.c_str(), 0700), 0);
  ASSERT_TRUE(write_file(spare + "/hello", "hi\n").has_value());
  ASSERT_EQ(std::system(("tar -C " + spare + " -cf " + spare + ".tar .").c_str()), 0);
  auto imp = cubby({"import", spare + ".tar", "localhost/spare:1"});
  ASSERT_EQ(imp.rc, 0) << imp.err;

  auto no = cubby({"prune"}, std::string("n\n"));
  EXPECT_EQ(no.rc, 0);
  EXPECT_EQ(ls({"-a"}).size(), 3u) << "a no removed boxes";
  auto filtered = cubby({"prune", "-f", "--filter", "label=keep=no"});
  ASSERT_EQ(filtered.rc, 0) << filtered.err;
  EXPECT_NE(filtered.out.find("Deleted Boxes:\n" + created + "\n"), std::string::npos) << filtered.out;
  EXPECT_EQ(ls({"-a"}).size(), 2u);
  auto yes = cubby({"prune"}, std::string("y\n"));
  ASSERT_EQ(yes.rc, 0) << yes.err;
  EXPECT_NE(yes.out.find(exited), std::string::npos) << yes.out;
  EXPECT_NE(yes.out.find("Total reclaimed space: "), std::string::npos);
  EXPECT_EQ(ls({"-a"}), std::vector<std::string>{running});

  auto images = cubby({"image", "prune", "-f"});
  ASSERT_EQ(images.rc, 0) << images.err;
  EXPECT_NE(images.out.find("untagged: localhost/spare:1"), std::string::npos) << images.out;
  EXPECT_EQ(cubby({"image", "inspect", "localhost/spare:1"}).rc, 125);
  EXPECT_EQ(cubby({"image", "inspect", image_}).rc, 0) << "the running box's image went";

  ASSERT_EQ(cubby({"stop", "-t", "0", running}).rc, 0);
  auto sys = cubby({"system", "prune", "-f"});
  ASSERT_EQ(sys.rc, 0) << sys.err;
  EXPECT_NE(sys.out.find("Deleted Boxes:"), std::string::npos);
  EXPECT_NE(sys.out.find("Deleted Images:"), std::string::npos);
  EXPECT_EQ(ls({"-a"}), std::vector<std::string>{});
  EXPECT_EQ(cubby({"images", "-q"}).out, "");
  EXPECT_EQ(cubby({"system", "bogus"}).rc, 125);
}

// docker import --change: CMD/ENTRYPOINT (exec or shell form), ENV
// (KEY=VALUE pairs, quotes, or the "KEY VALUE" form), WORKDIR, USER; the
// rest refused by name, before anything is read.
TEST_F(FlagsCli, ImportChangesSetTheImagesConfig) {
  auto imp = cubby({"import", "--change", "CMD [\"sh\", \"-c\", \"echo $A $B $C; pwd; id -u\"]", "-c",
                    "ENV A=1 B=\"two words\"", "-c", "env C three", "-c", "WORKDIR /tmp", "-c", "USER 1000",
                    CUBBY_TEST_ROOTFS, "localhost/changed:1"});
  ASSERT_EQ(imp.rc, 0) << imp.err;
  auto r = cubby(box_args("run", {"--rm", "localhost/changed:1"}));
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "1 two words three\n/tmp\n1000\n");
  ASSERT_EQ(cubby({"import", "-c", "ENTRYPOINT echo from-entrypoint", CUBBY_TEST_ROOTFS, "localhost/changed:2"}).rc, 0);
  auto e = cubby(box_args("run", {"--rm", "localhost/changed:2"}));
  EXPECT_EQ(e.out, "from-entrypoint\n") << e.err;
  for (const char* bad : {"EXPOSE 80", "CMD [1]", "CMD [\"a\"", "WORKDIR relative", "ENV", "USER a b", "  "}) {
    auto b = cubby({"import", "--change", bad, CUBBY_TEST_ROOTFS, "localhost/bad:1"});
    EXPECT_EQ(b.rc, 125) << bad;
    EXPECT_EQ(b.err_lines().size(), 1u) << bad << ": " << b.err;
  }
  EXPECT_EQ(cubby({"image", "inspect", "localhost/bad:1"}).rc, 125);
}

// docker commit: the box's changes (new files, deletions, a directory
// replaced whole) as a layer on its image; --change sets the config; the
// box's own image is untouched.
TEST_F(FlagsCli, CommitMakesAnImageOfTheBoxsChanges) {
  auto r = cubby(box_args("run", {"--name", "src", image_, "sh", "-c",
                                  "echo new > /new.txt; rm /etc/group; mkdir /d; echo x > /d/f; "
                                  "rm -rf /home; mkdir /home; echo h > /home/only"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  auto c = cubby({"commit", "-c", "CMD [\"cat\", \"/new.txt\"]", "src", "localhost/committed:1"});
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_EQ(c.out.rfind("sha256:", 0), 0u) << c.out;
  auto run = cubby(box_args("run", {"--rm", "localhost/committed:1"}));
  EXPECT_EQ(run.rc, 0) << run.err;
  EXPECT_EQ(run.out, "new\n");
  auto seen = cubby(box_args("run", {"--rm", "localhost/committed:1", "sh", "-c",
                                     "test ! -e /etc/group && echo gone; cat /d/f; ls /home"}));
  EXPECT_EQ(seen.out, "gone\nx\nonly\n") << seen.err;
  auto inspect = json::parse(cubby({"image", "inspect", "localhost/committed:1"}).out);
  auto base = json::parse(cubby({"image", "inspect", image_}).out);
  ASSERT_TRUE(inspect.contains("RootFS")) << inspect.dump().substr(0, 500);
  EXPECT_EQ(inspect["RootFS"]["Layers"].size(), base["RootFS"]["Layers"].size() + 1) << "one layer more than the box's image";
  EXPECT_EQ(cubby(box_args("run", {"--rm", image_, "cat", "/etc/group"})).rc, 0) << "the box's image changed";
  EXPECT_EQ(cubby({"commit", "src", "Bad:Ref"}).rc, 125);
  EXPECT_EQ(cubby({"commit", "no-such-box", "localhost/x:1"}).rc, 125);
  EXPECT_EQ(cubby({"rm", "src"}).rc, 0);
}

TEST_F(FlagsCli, VersionSaysWhatThisClientIs) {
  auto v = cubby({"version"});
  ASSERT_EQ(v.rc, 0) << v.err;
  EXPECT_NE(v.out.find(" Version:          0."), std::string::npos) << v.out;
  EXPECT_NE(v.out.find(" Git commit:"), std::string::npos);
  auto j = json::parse(cubby({"version", "--format", "json"}).out);
  for (const char* k : {"version", "git_commit", "built", "compiler", "os_arch", "agent_protocol", "store_schema", "features"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(cubby({"version", "--format", "yaml"}).rc, 125);
}

}  // namespace
}  // namespace cubby::test
