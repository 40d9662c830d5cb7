// cubby-runc (src/oci) driven as containerd drives runc: a bundle made with
// `runc spec` over the test busybox rootfs, create/start/state/kill/delete,
// the pid file, exit statuses, and the --log JSON error of a config it
// cannot honour. Every test leaves no container, box, process or mount.
#include <fcntl.h>
#include <sys/inotify.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/process.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

struct Ran {
  int rc = -1;
  std::string out, err;
};

class OciRuntime : public BoxTest {
 protected:
  void SetUp() override {
    BoxTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    root_ = home_ + "/oci-root";
    bundle_ = home_ + "/bundle";
    ASSERT_TRUE(mkdir_p(bundle_ + "/rootfs"));
    ASSERT_EQ(sh("tar -xf " + std::string(CUBBY_TEST_ROOTFS) + " -C " + bundle_ + "/rootfs"), 0);
    ASSERT_EQ(sh("cd " + bundle_ + " && runc spec"), 0) << "runc spec (Debian's runc) is needed";
    spec_ = json::parse(read_file(bundle_ + "/config.json").value());
  }

  void TearDown() override {
    if (!root_.empty()) {
      // Delete what a failed test left, then prove the state dir and the
      // boxes' home are empty.
      auto l = runc({"list", "-q"});
      std::istringstream in(l.out);
      std::string id;
      while (in >> id) EXPECT_EQ(runc({"delete", "--force", id}).rc, 0);
      reap_adopted();
      for (pid_t p : processes_mentioning(root_)) ADD_FAILURE() << "process " << p << " outlived its container";
      for (const auto& n : list_dir(root_))
        if (n != ".cubby") ADD_FAILURE() << "state left behind: " << n;
      for (const auto& n : list_dir(root_ + "/.cubby/boxes")) {
        ADD_FAILURE() << "box left behind: " << n;
        for (const auto& cg : cgroups_of(n)) ADD_FAILURE() << "cgroup leaked: " << cg;
      }
    }
    BoxTest::TearDown();
  }

  static int sh(const std::string& cmd) { return std::system(cmd.c_str()); }

  // The config cubby-runc honours today: runc's default spec with Docker's
  // capability set (what containerd and Docker generate), a writable root
  // and cubby's masked/read-only /proc paths.
  void write_honourable(const std::vector<std::string>& args) {
    json s = spec_;
    s["process"]["terminal"] = false;
    s["process"]["args"] = args;
    json caps = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                 "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                 "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"};
    s["process"]["capabilities"] = {{"bounding", caps}, {"effective", caps}, {"permitted", caps}};
    s["root"]["readonly"] = false;
    s["linux"]["maskedPaths"] = {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"};
    s["linux"]["readonlyPaths"] = {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"};
    write_config(s);
  }
  void write_config(const json& s) { ASSERT_TRUE(write_file(bundle_ + "/config.json", s.dump(2))); }

  // Runs cubby-runc with the global flags containerd passes. stdout and
  // stderr go to files, not pipes: `create` leaves its stdio to the
  // container's relay, so a pipe would not end with the command.
  Ran runc(const std::vector<std::string>& args, const std::string& out_path = "") {
    Ran r;
    std::string out = out_path.empty() ? home_ + "/runc.out" : out_path;
    std::string err = home_ + "/runc.err";
    UniqueFd o(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    UniqueFd e(::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    SpawnSpec s;
    s.argv = {bin_dir() + "/cubby-runc", "--root", root_, "--log", log_, "--log-format", "json"};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.fds = {-1, o.get(), e.get()};
    auto c = spawn(s);
    if (!c) return r;
    o.reset();
    e.reset();
    auto st = c->wait();
    r.rc = st && !st->signaled ? st->code : -1;
    r.out = read_file(out).value_or("");
    r.err = read_file(err).value_or("");
    return r;
  }

  json state(const std::string& id) {
    auto r = runc({"state", id});
    EXPECT_EQ(r.rc, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }

  // The relay is reparented to this test (a subreaper) once `create` has
  // exited, as it is to containerd-shim: wait for it by pid, as the shim does.
  int wait_init(pid_t pid) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0)
      if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }

  pid_t create(const std::string& id, const std::string& out_path = "") {
    auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/init.pid", id}, out_path);
    EXPECT_EQ(r.rc, 0) << r.err << read_file(log_).value_or("");
    auto text = read_file(bundle_ + "/init.pid");
    EXPECT_TRUE(text);
    return text ? static_cast<pid_t>(std::stoi(*text)) : -1;
  }

  std::string root_, bundle_;
  std::string log_ = "/dev/null";
  json spec_;
};

TEST_F(OciRuntime, VersionHasTheThreeLinesGoRuncParses) {
  auto r = runc({"--version"});
  ASSERT_EQ(r.rc, 0);
  std::istringstream in(r.out);
  std::string a, b, c;
  std::getline(in, a);
  std::getline(in, b);
  std::getline(in, c);
  EXPECT_EQ(a.rfind("runc version ", 0), 0u) << r.out;
  EXPECT_EQ(b.rfind("commit: ", 0), 0u) << r.out;
  EXPECT_EQ(c, "spec: 1.0.2");
  auto f = runc({"features"});
  ASSERT_EQ(f.rc, 0) << f.err;
  auto j = json::parse(f.out, nullptr, false);
  EXPECT_EQ(j["ociVersionMax"], "1.0.2");
  EXPECT_FALSE(j["linux"]["cgroup"]["systemd"].get<bool>());
}

TEST_F(OciRuntime, CreateStartRunsTheConfigsProcessWithTheCallersStdio) {
  write_honourable({"sh", "-c", "echo out-$(hostname)-$(id -u); ulimit -n; echo err >&2; exit 7"});
  std::string out = home_ + "/container.out";
  log_ = home_ + "/log.json";
  pid_t pid = create("c1", out);
  ASSERT_GT(pid, 0);
  // What cubby does differently from the config is said, not silent: one
  // warning record each (here runc's cgroup mount and the seccomp filter).
  std::string records = read_file(log_).value_or("");
  EXPECT_NE(records.find("\"level\":\"warning\""), std::string::npos) << records;
  EXPECT_NE(records.find("no cgroupfs is mounted"), std::string::npos) << records;
  EXPECT_EQ(records.find("\"level\":\"error\""), std::string::npos) << records;
  log_ = "/dev/null";
  auto s = state("c1");
  EXPECT_EQ(s["status"], "created");
  EXPECT_EQ(s["pid"], pid);
  EXPECT_EQ(s["id"], "c1");
  EXPECT_EQ(s["bundle"], bundle_);
  // Created means waiting: nothing has run yet.
  EXPECT_EQ(read_file(out).value_or("x"), "");
  auto l = runc({"list", "--format", "json"});
  ASSERT_EQ(l.rc, 0);
  EXPECT_EQ(json::parse(l.out)[0]["id"], "c1");
  ASSERT_EQ(runc({"start", "c1"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 7);  // the workload's exit status is the init's
  // hostname and rlimits are config.json's (runc spec: "runc", nofile 1024).
  EXPECT_EQ(read_file(out).value_or(""), "out-runc-0\n1024\n");
  EXPECT_EQ(state("c1")["status"], "stopped");
  EXPECT_NE(runc({"start", "c1"}).rc, 0);
  auto d = runc({"delete", "c1"});
  EXPECT_EQ(d.rc, 0) << d.err;
  EXPECT_NE(runc({"state", "c1"}).rc, 0);
}

TEST_F(OciRuntime, KillEndsARunningContainerWithTheSignalsStatus) {
  write_honourable({"sleep", "1000000"});
  pid_t pid = create("k1");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"start", "k1"}).rc, 0);
  EXPECT_EQ(state("k1")["status"], "running");
  // exec as containerd-shim calls it: --process, --detach, --pid-file; the
  // pid is reaped here with the exec's status, its stdio is the caller's.
  json proc = json::parse(read_file(bundle_ + "/config.json").value())["process"];
  proc["args"] = {"sh", "-c", "echo exec-$(hostname); exit 5"};
  ASSERT_TRUE(write_file(home_ + "/process.json", proc.dump()));
  std::string eout = home_ + "/exec.out";
  auto e = runc({"exec", "--process", home_ + "/process.json", "--detach", "--pid-file", home_ + "/exec.pid", "k1"}, eout);
  ASSERT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(wait_init(std::stoi(read_file(home_ + "/exec.pid").value_or("-1"))), 5);
  EXPECT_EQ(read_file(eout).value_or(""), "exec-runc\n");
  auto ps = runc({"ps", "--format", "json", "k1"});
  ASSERT_EQ(ps.rc, 0) << ps.err;
  auto pids = json::parse(ps.out, nullptr, false);
  ASSERT_TRUE(pids.is_array()) << ps.out;
  ASSERT_EQ(pids.size(), 1u) << ps.out;  // sleep, the workload (the agent is not the container's)
  EXPECT_EQ(read_file("/proc/" + std::to_string(pids[0].get<int>()) + "/comm").value_or(""), "sleep\n");
  auto pr = runc({"pause", "k1"});
  EXPECT_EQ(pr.rc, 1);
  EXPECT_EQ(pr.err, "cubby-runc: \"pause\" is not supported by cubby-runc yet\n");
  auto d = runc({"delete", "k1"});
  EXPECT_NE(d.rc, 0);  // running: refused without --force
  EXPECT_NE(read_file(home_ + "/runc.err").value_or("").find("running"), std::string::npos);
  ASSERT_EQ(runc({"kill", "k1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(state("k1")["status"], "stopped");
  EXPECT_EQ(runc({"delete", "k1"}).rc, 0);
}

// The pid file's process is what containerd watches and kills: its end
// (SIGKILL included) must end the container, never leave the box running
// unwatched (the box is tethered to the relay).
TEST_F(OciRuntime, AKilledInitTakesTheBoxWithIt) {
  write_honourable({"sleep", "1000000"});
  pid_t pid = create("r1");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"start", "r1"}).rc, 0);
  std::string box = json::parse(read_file(root_ + "/r1/state.json").value())["box"];
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  EXPECT_EQ(wait_init(pid), 137);
  // `cubby wait` returns when the box has ended; 20 s is only a backstop.
  auto w = spawn_cubby(root_ + "/.cubby", {"wait", box});
  EXPECT_TRUE(sys::wait_readable(w.pidfd(), std::chrono::seconds(20)).value_or(false))
      << "the box outlived the init containerd watches";
  EXPECT_EQ(state("r1")["status"], "stopped");
  EXPECT_EQ(runc({"delete", "r1"}).rc, 0);
}

TEST_F(OciRuntime, KillOrDeleteOfACreatedContainerLeavesNothing) {
  write_honourable({"sleep", "1000000"});
  pid_t pid = create("k2");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"kill", "k2", "9"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(runc({"delete", "k2"}).rc, 0);
  pid = create("k3");
  ASSERT_GT(pid, 0);
  EXPECT_EQ(runc({"delete", "--force", "k3"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(runc({"delete", "--force", "k3"}).rc, 0);  // already gone: fine with --force
  EXPECT_NE(runc({"delete", "k3"}).rc, 0);
}

TEST_F(OciRuntime, AConfigItCannotHonourIsOneJsonErrorInTheLog) {
  // runc's default spec as it stands asks for a read-only root and three
  // capabilities: refused by name, before anything exists.
  log_ = home_ + "/log.json";
  auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/init.pid", "c2"});
  EXPECT_EQ(r.rc, 1);
  auto text = read_file(log_).value_or("");
  ASSERT_FALSE(text.empty());
  auto line = json::parse(text.substr(0, text.find('\n')), nullptr, false);
  ASSERT_TRUE(line.is_object()) << text;
  EXPECT_EQ(line["level"], "error");
  EXPECT_EQ(line["msg"], "config.json: process.terminal is true but no --console-socket was given");
  EXPECT_TRUE(line.contains("time"));
  EXPECT_EQ(r.err, "cubby-runc: " + line["msg"].get<std::string>() + "\n");
  json s = spec_;
  s["process"]["terminal"] = false;
  s["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ERRNO"}};
  write_config(s);
  ::unlink(log_.c_str());
  r = runc({"create", "--bundle", bundle_, "c2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"], "config.json: linux.seccomp: not supported by cubby-runc yet");
  s.erase("linux");
  s["linux"] = spec_["linux"];
  write_config(s);
  ::unlink(log_.c_str());
  r = runc({"create", "--bundle", bundle_, "c2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"], "config.json: root.readonly: a read-only rootfs is not supported by cubby-runc yet (the box writes to its own upper dir)");
  EXPECT_FALSE(std::filesystem::exists(bundle_ + "/init.pid"));
  EXPECT_NE(runc({"state", "c2"}).rc, 0);
}

TEST_F(OciRuntime, SystemdCgroupIsRefusedClearly) {
  auto r = runc({"--systemd-cgroup", "list"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--systemd-cgroup is not supported"), std::string::npos) << r.err;
}

// containerd 1.6 (Debian's) with its runc shim driving cubby-runc, as
// `ctr run --runc-binary` does: a private containerd (own root, state and
// socket under this test's home), stopped by its pid afterwards. ctr's
// --config gives it the config cubby-runc honours (containerd's default
// spec asks for a /run tmpfs and masked paths cubby does not make yet).
TEST_F(OciRuntime, CtrRunDrivesItThroughContainerdsShim) {
  if (::access("/usr/bin/containerd", X_OK) != 0 || ::access("/usr/bin/ctr", X_OK) != 0)
    GTEST_SKIP() << "containerd is not installed (scripts/install-deps.sh installs it)";
  const std::string d = home_ + "/ctrd";
  ASSERT_TRUE(mkdir_p(d));
  ASSERT_TRUE(write_file(d + "/config.toml", "version = 2\nroot = \"" + d + "/root\"\nstate = \"" + d +
                                                 "/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"
                                                 "[grpc]\n  address = \"" + d + "/containerd.sock\"\n"));
  // The socket's appearance is the readiness event (inotify; the timeout is a backstop).
  UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  ASSERT_GE(::inotify_add_watch(watch.get(), d.c_str(), IN_CREATE), 0);
  UniqueFd log(::open((d + "/containerd.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  SpawnSpec cs;
  cs.argv = {"/usr/bin/containerd", "--config", d + "/config.toml"};
  cs.fds = {-1, log.get(), log.get()};
  auto ctrd = spawn(cs);
  ASSERT_TRUE(ctrd);
  while (::access((d + "/containerd.sock").c_str(), F_OK) != 0)
    ASSERT_TRUE(sys::wait_readable(watch.get(), std::chrono::seconds(60)).value_or(false)) << "containerd did not start";
  // A namespace of its own: the shim keeps runc state in /run/containerd/runc/<ns>,
  // which is cubby-runc's --root.
  const std::string ns = "cubby-test-" + std::to_string(::getpid());
  const std::string runc_root = "/run/containerd/runc/" + ns;
  auto ctr = [&](const std::vector<std::string>& args, const std::string& out) {
    std::vector<std::string> a = {"/usr/bin/ctr", "-a", d + "/containerd.sock", "-n", ns};
    a.insert(a.end(), args.begin(), args.end());
    UniqueFd o(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    SpawnSpec s;
    s.argv = a;
    s.fds = {-1, o.get(), o.get()};
    auto c = spawn(s);
    if (!c) return -1;
    auto st = c->wait();
    return st && !st->signaled ? st->code : -1;
  };
  write_honourable({"sh", "-c", "echo hello-from-$(hostname); exit 3"});
  json cfg = json::parse(read_file(bundle_ + "/config.json").value());
  cfg["root"]["path"] = bundle_ + "/rootfs";
  ASSERT_TRUE(write_file(d + "/spec.json", cfg.dump()));
  const std::string runc_bin = bin_dir() + "/cubby-runc";
  std::string out = d + "/ctr.out";
  EXPECT_EQ(ctr({"run", "--rm", "--runc-binary", runc_bin, "--config", d + "/spec.json", "t1"}, out), 3)
      << read_file(out).value_or("");
  EXPECT_EQ(read_file(out).value_or(""), "hello-from-runc\n");
  // Detached, then killed through containerd: its status is the signal's.
  cfg["process"]["args"] = {"sleep", "1000000"};
  ASSERT_TRUE(write_file(d + "/spec.json", cfg.dump()));
  EXPECT_EQ(ctr({"run", "-d", "--runc-binary", runc_bin, "--config", d + "/spec.json", "t2"}, out), 0)
      << read_file(out).value_or("");
  EXPECT_EQ(ctr({"task", "ls"}, out), 0);
  EXPECT_NE(read_file(out).value_or("").find("RUNNING"), std::string::npos) << read_file(out).value_or("");
  // exec through the shim (--process, --detach, --pid-file): its output and status.
  EXPECT_EQ(ctr({"task", "exec", "--exec-id", "e1", "t2", "sh", "-c", "echo exec-ok; exit 5"}, out), 5)
      << read_file(out).value_or("");
  EXPECT_EQ(read_file(out).value_or(""), "exec-ok\n");
  // task ps: the container's processes by host pid (runc ps --format json).
  EXPECT_EQ(ctr({"task", "ps", "t2"}, out), 0) << read_file(out).value_or("");
  auto ps = read_file(out).value_or("");
  EXPECT_NE(ps.find("PID"), std::string::npos) << ps;
  EXPECT_GE(std::count(ps.begin(), ps.end(), '\n'), 2) << ps;
  EXPECT_EQ(ctr({"task", "kill", "-s", "SIGKILL", "t2"}, out), 0) << read_file(out).value_or("");
  // The kill is asynchronous: `task rm -f` waits for the exit containerd
  // saw (and warns with its code; a SIGKILL it sent itself would be 137 too,
  // but by then the task has the kill's status).
  EXPECT_EQ(ctr({"task", "rm", "-f", "t2"}, out), 0) << read_file(out).value_or("");
  EXPECT_NE(read_file(out).value_or("").find("exit code 137"), std::string::npos) << read_file(out).value_or("");
  EXPECT_EQ(ctr({"container", "rm", "t2"}, out), 0) << read_file(out).value_or("");
  // Nothing of either container is left in cubby-runc's state dir.
  for (const auto& n : list_dir(runc_root))
    if (n != ".cubby") ADD_FAILURE() << "cubby-runc state left behind: " << n;
  for (const auto& n : list_dir(runc_root + "/.cubby/boxes")) ADD_FAILURE() << "box left behind: " << n;
  ctr({"namespaces", "rm", ns}, out);
  ASSERT_TRUE(ctrd->signal(SIGTERM));
  auto st = ctrd->wait();
  ASSERT_TRUE(st);
  for (pid_t p : processes_mentioning(d)) ADD_FAILURE() << "process " << p << " outlived containerd";
  (void)remove_tree(runc_root);
}

}  // namespace
}  // namespace cubby::test
