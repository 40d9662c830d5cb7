// cubby-runc (src/oci) driven as containerd drives runc: a bundle made with
// `runc spec` over the test busybox rootfs, create/start/state/kill/delete,
// the pid file, exit statuses, and the --log JSON error of a config it
// cannot honour. Every test leaves no container, box, process or mount.
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/process.h"
#include "base/sys.h"
#include "harness.h"
#include "hypervisor/kvm_probe.h"

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

  // Runs argv with stdout and stderr into the file `out` and returns its exit
  // status. With tty, under script(1), which makes a PTY and types `input`
  // into it (`ctr run -t`, `docker run -it` want a terminal); -e gives the
  // command's own status.
  int run_to(const std::vector<std::string>& argv, const std::string& out, bool tty = false,
             const std::string& input = "") {
    UniqueFd o(::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    UniqueFd in;
    SpawnSpec s;
    if (tty) {
      std::string cmd;
      for (const auto& a : argv) cmd += "'" + a + "' ";
      EXPECT_TRUE(write_file(home_ + "/tty.in", input));
      in.reset(::open((home_ + "/tty.in").c_str(), O_RDONLY | O_CLOEXEC));
      s.argv = {"/usr/bin/script", "-qefc", cmd, "/dev/null"};
    } else {
      s.argv = argv;
    }
    s.fds = {tty ? in.get() : -1, o.get(), o.get()};
    auto c = spawn(s);
    if (!c) return -1;
    auto st = c->wait();
    return st && !st->signaled ? st->code : -1;
  }

  // A docker-archive of the test busybox rootfs as localhost/busybox:latest
  // (umoci builds the OCI image, skopeo writes the archive; no network),
  // for `ctr images import` and `docker load`.
  std::string image_archive() {
    const std::string d = home_ + "/img";
    std::string cmd = "set -e; mkdir -p " + d + "; cd " + d +
                      "; umoci init --layout l; umoci new --image l:latest; umoci unpack --image l:latest b;"
                      " tar -xf " + std::string(CUBBY_TEST_ROOTFS) + " -C b/rootfs;"
                      " umoci repack --image l:latest b;"
                      " umoci config --image l:latest --config.cmd sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin;"
                      " skopeo copy -q oci:l:latest docker-archive:" + d + "/busybox.tar:localhost/busybox:latest;"
                      " rm -rf b l";
    EXPECT_EQ(sh(cmd + " >" + d + ".log 2>&1"), 0) << read_file(d + ".log").value_or("");
    return d + "/busybox.tar";
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
  auto pr = runc({"checkpoint", "k1"});
  EXPECT_EQ(pr.rc, 1);
  EXPECT_EQ(pr.err, "cubby-runc: \"checkpoint\" is not supported by cubby-runc yet\n");
  auto d = runc({"delete", "k1"});
  EXPECT_NE(d.rc, 0);  // running: refused without --force
  EXPECT_NE(read_file(home_ + "/runc.err").value_or("").find("running"), std::string::npos);
  ASSERT_EQ(runc({"kill", "k1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(state("k1")["status"], "stopped");
  EXPECT_EQ(runc({"delete", "k1"}).rc, 0);
}

// pause/resume freeze the container's processes (the box's workload cgroup
// leaf; v1 freezer here) and `state` says paused; update writes new limits
// into that leaf; events --stats reads them back in runc's shape; a SIGKILL
// reaches a paused container (thawed after the signal).
TEST_F(OciRuntime, PauseResumeUpdateAndStats) {
  write_honourable({"sleep", "1000000"});
  pid_t pid = create("p1");
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"start", "p1"}).rc, 0);
  std::string box = json::parse(read_file(root_ + "/p1/state.json").value())["box"];
  auto pr = runc({"pause", "p1"});
  ASSERT_EQ(pr.rc, 0) << pr.err;
  EXPECT_EQ(state("p1")["status"], "paused");
  const bool v1 = std::filesystem::exists("/sys/fs/cgroup/freezer/cubby/" + box);
  if (v1) {
    EXPECT_EQ(read_file("/sys/fs/cgroup/freezer/cubby/" + box + "/workload/freezer.state").value_or(""), "FROZEN\n");
  }
  EXPECT_NE(runc({"pause", "p1"}).rc, 0);  // already paused
  ASSERT_EQ(runc({"resume", "p1"}).rc, 0);
  EXPECT_EQ(state("p1")["status"], "running");
  EXPECT_NE(runc({"resume", "p1"}).rc, 0);
  // update --resources - (stdin), as containerd's shim calls it.
  ASSERT_TRUE(write_file(home_ + "/res.json", R"({"memory":{"limit":67108864},"pids":{"limit":50},"cpu":{"quota":50000,"period":100000}})"));
  auto u = runc({"update", "--resources", home_ + "/res.json", "p1"});
  ASSERT_EQ(u.rc, 0) << u.err;
  if (v1) {
    EXPECT_EQ(read_file("/sys/fs/cgroup/memory/cubby/" + box + "/workload/memory.limit_in_bytes").value_or(""), "67108864\n");
    EXPECT_EQ(read_file("/sys/fs/cgroup/pids/cubby/" + box + "/workload/pids.max").value_or(""), "50\n");
    EXPECT_EQ(read_file("/sys/fs/cgroup/cpu/cubby/" + box + "/workload/cpu.cfs_quota_us").value_or(""), "50000\n");
  }
  ASSERT_TRUE(write_file(home_ + "/res.json", R"({"cpu":{"shares":512}})"));
  u = runc({"update", "--resources", home_ + "/res.json", "p1"});
  EXPECT_EQ(u.rc, 0) << u.err;
  if (v1) {
    EXPECT_EQ(read_file("/sys/fs/cgroup/cpu/cubby/" + box + "/workload/cpu.shares").value_or(""), "512\n");
  }
  ASSERT_TRUE(write_file(home_ + "/res.json", R"({"cpu":{"shares":1}})"));
  u = runc({"update", "--resources", home_ + "/res.json", "p1"});
  EXPECT_EQ(u.rc, 1);
  EXPECT_NE(u.err.find("cpu shares must be between 2 and 262144"), std::string::npos) << u.err;
  auto ev = runc({"events", "--stats", "p1"});
  ASSERT_EQ(ev.rc, 0) << ev.err;
  auto e = json::parse(ev.out, nullptr, false);
  ASSERT_TRUE(e.is_object()) << ev.out;
  EXPECT_EQ(e["type"], "stats");
  EXPECT_EQ(e["id"], "p1");
  EXPECT_EQ(e["data"]["memory"]["usage"]["limit"], 67108864);
  EXPECT_GT(e["data"]["memory"]["usage"]["usage"].get<uint64_t>(), 0u);
  EXPECT_EQ(e["data"]["pids"]["current"], 1);  // sleep
  EXPECT_EQ(e["data"]["pids"]["limit"], 50);
  // Paused, then SIGKILLed: the kill is not held by the freezer.
  ASSERT_EQ(runc({"pause", "p1"}).rc, 0);
  ASSERT_EQ(runc({"kill", "p1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(state("p1")["status"], "stopped");
  EXPECT_EQ(runc({"delete", "p1"}).rc, 0);
}

// --console-socket: the PTY master comes over the socket (SCM_RIGHTS), the
// container's shell runs on a terminal, and what is typed into the master
// reaches it; its exit status is the init's.
TEST_F(OciRuntime, ConsoleSocketGetsThePtyMaster) {
  write_honourable({"sh"});
  json s = json::parse(read_file(bundle_ + "/config.json").value());
  s["process"]["terminal"] = true;
  s["process"]["consoleSize"] = {{"height", 33}, {"width", 101}};
  write_config(s);
  const std::string sock_path = home_ + "/console.sock";
  UniqueFd lst(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock_path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(lst.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lst.get(), 1), 0);
  auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/init.pid", "--console-socket", sock_path, "t1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  pid_t pid = std::stoi(read_file(bundle_ + "/init.pid").value_or("-1"));
  UniqueFd conn(::accept4(lst.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(conn);
  char name[256];
  iovec iov{name, sizeof name};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof ctl;
  ASSERT_GT(::recvmsg(conn.get(), &m, MSG_CMSG_CLOEXEC), 0);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
  int mfd;
  std::memcpy(&mfd, CMSG_DATA(c), sizeof mfd);
  UniqueFd master(mfd);
  ASSERT_EQ(runc({"start", "t1"}).rc, 0);
  const char cmd[] = "stty size; echo tty-$(tty | cut -c1-8)-$((6*7)); exit 4\n";
  ASSERT_EQ(::write(master.get(), cmd, sizeof cmd - 1), static_cast<ssize_t>(sizeof cmd - 1));
  std::string seen;
  // Output until the shell ends (EIO on the master once every slave fd is
  // closed); the wait is a backstop.
  for (;;) {
    if (!sys::wait_readable(master.get(), std::chrono::seconds(30)).value_or(false)) break;
    char buf[4096];
    ssize_t n = ::read(master.get(), buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
  }
  EXPECT_NE(seen.find("33 101"), std::string::npos) << seen;
  EXPECT_NE(seen.find("tty-/dev/pts-42"), std::string::npos) << seen;
  EXPECT_EQ(wait_init(pid), 4);
  EXPECT_EQ(runc({"delete", "t1"}).rc, 0);
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
  s["linux"]["intelRdt"] = {{"closID", "x"}};
  write_config(s);
  ::unlink(log_.c_str());
  r = runc({"create", "--bundle", bundle_, "c2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"], "config.json: linux.intelRdt: not supported by cubby-runc yet");
  // What the decoder takes but the box cannot honour is refused by
  // box_options, as clearly.
  write_honourable({"true"});
  s = json::parse(read_file(bundle_ + "/config.json").value());
  s["linux"]["sysctl"] = {{"vm.swappiness", "10"}};
  write_config(s);
  ::unlink(log_.c_str());
  r = runc({"create", "--bundle", bundle_, "c2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"],
            "config.json: linux: sysctl vm.swappiness is not kept per namespace: setting it in a box would change the host");
  s["linux"].erase("sysctl");
  s["linux"]["resources"] = {{"devices", {{{"allow", true}, {"type", "b"}, {"major", 8}, {"minor", 0}, {"access", "rw"}}}}};
  write_config(s);
  ::unlink(log_.c_str());
  r = runc({"create", "--bundle", bundle_, "c2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"].get<std::string>().rfind(
                "config.json: linux.resources.devices[0]: allowing this device is not supported", 0),
            0u)
      << read_file(log_).value_or("");
  EXPECT_FALSE(std::filesystem::exists(bundle_ + "/init.pid"));
  EXPECT_NE(runc({"state", "c2"}).rc, 0);
}

// A CRI pod's containers share its network, ipc and uts namespaces: the
// config names them by path (/proc/<sandbox's pid>/ns/*). The pid-file
// process is in the container's namespaces (as runc's init is), so a
// second container joining those paths shares the first's; pid and mount
// cannot be joined (the agent is PID 1 and mounts the rootfs itself), and a
// path that is not such a namespace, or is the host's own, is refused.
TEST_F(OciRuntime, AContainerJoinsAnotherContainersNetworkIpcAndUts) {
  write_honourable({"sleep", "1000000"});
  json a = json::parse(read_file(bundle_ + "/config.json").value());
  a["hostname"] = "pod-a";
  write_config(a);
  pid_t pod = create("pod");
  ASSERT_GT(pod, 0);
  ASSERT_EQ(runc({"start", "pod"}).rc, 0);
  const std::string ns = "/proc/" + std::to_string(pod) + "/ns/";
  auto link = [](const std::string& p) { return std::filesystem::read_symlink(p).string(); };
  for (const char* t : {"net", "ipc", "uts"})
    EXPECT_NE(link(ns + t), link(std::string("/proc/self/ns/") + t)) << t << ": the pid-file process is in the box's";

  json b = a;
  b.erase("hostname");
  b["process"]["args"] = {"sh", "-c", "hostname; for n in net ipc uts; do readlink /proc/self/ns/$n; done"};
  for (auto& n : b["linux"]["namespaces"]) {
    std::string t = n["type"];
    if (t == "network") n["path"] = ns + "net";
    if (t == "ipc" || t == "uts") n["path"] = ns + t;
  }
  write_config(b);
  std::string out = home_ + "/joined.out";
  log_ = home_ + "/log.json";
  pid_t c = create("member", out);
  ASSERT_GT(c, 0);
  ASSERT_EQ(runc({"start", "member"}).rc, 0);
  EXPECT_EQ(wait_init(c), 0);
  EXPECT_EQ(read_file(out).value_or(""), "pod-a\n" + link(ns + "net") + "\n" + link(ns + "ipc") + "\n" + link(ns + "uts") + "\n");
  EXPECT_EQ(runc({"delete", "member"}).rc, 0);

  // What cannot be joined: one error each in the --log, nothing created.
  auto refused = [&](json cfg, const std::string& want) {
    write_config(cfg);
    ::unlink(log_.c_str());
    auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/bad.pid", "bad"});
    EXPECT_EQ(r.rc, 1) << want;
    // The error is the last record (warnings come first).
    std::string text = read_file(log_).value_or(""), last, line;
    for (std::istringstream in(text); std::getline(in, line);) last = line;
    auto rec = json::parse(last, nullptr, false);
    std::string msg = rec.is_object() ? rec.value("msg", std::string()) : text;
    EXPECT_EQ(rec.is_object() ? rec.value("level", std::string()) : "", "error") << text;
    EXPECT_NE(msg.find(want), std::string::npos) << msg;
    EXPECT_FALSE(std::filesystem::exists(bundle_ + "/bad.pid"));
    EXPECT_NE(runc({"state", "bad"}).rc, 0);
  };
  auto with = [&](const std::string& type, const std::string& path) {
    json cfg = b;
    for (auto& n : cfg["linux"]["namespaces"])
      if (n["type"] == type) n["path"] = path;
    return cfg;
  };
  refused(with("pid", ns + "pid"), "joining the pid namespace at " + ns + "pid is not supported by cubby-runc");
  refused(with("mount", ns + "mnt"), "joining the mount namespace at " + ns + "mnt is not supported by cubby-runc");
  refused(with("network", "/proc/self/ns/net"), "is the host's own network namespace");
  refused(with("ipc", ns + "net"), ns + "net is not a namespace of type ipc");
  refused(with("uts", bundle_ + "/config.json"), bundle_ + "/config.json is not a namespace");
  json sys = b;
  sys["linux"]["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
  refused(sys, "linux.sysctl.net.ipv4.ip_forward: the network namespace is joined");
  json vm = b;
  vm["annotations"] = {{"io.cubby.isolation", "vm"}};
  refused(vm, "needs the sandbox backend");
  log_ = "/dev/null";

  ASSERT_EQ(runc({"kill", "pod", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pod), 137);
  EXPECT_EQ(runc({"delete", "pod"}).rc, 0);
}

// containerd's default spec (`ctr oci spec`, what `ctr run` and the CRI
// start from) is honoured as it stands: its /run tmpfs, /dev/shm size,
// masked and read-only paths, device rules, caps, RLIMIT_NOFILE and
// noNewPrivileges; root.readonly makes / read-only and nothing else.
TEST_F(OciRuntime, ContainerdsDefaultSpecIsHonoured) {
  std::string text;
  ASSERT_EQ(sh("ctr oci spec > " + home_ + "/default.json"), 0);
  json s = json::parse(read_file(home_ + "/default.json").value());
  s["root"]["readonly"] = true;
  s["process"]["args"] = {"sh", "-c",
                          "grep -E ' /(run|dev/shm) ' /proc/mounts | cut -d' ' -f2-4 | sed 's/,uid=[0-9]*,gid=[0-9]*//'; "
                          "ls /sys/firmware | wc -l; "
                          "grep ' /proc/fs ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; "
                          "touch /x /tmp/x 2>/dev/null || echo root-ro; touch /run/x /dev/shm/x && echo tmpfs-rw; "
                          "ulimit -n; grep NoNewPrivs /proc/self/status"};
  s["mounts"][3]["options"] = {"nosuid", "noexec", "nodev", "mode=1777", "size=1m"};  // /dev/shm
  s["mounts"][6]["options"] = {"nosuid", "nodev", "mode=700", "size=2m"};           // /run
  write_config(s);
  std::string out = home_ + "/container.out";
  log_ = home_ + "/log.json";
  pid_t pid = create("d1", out);
  ASSERT_GT(pid, 0);
  log_ = "/dev/null";
  ASSERT_EQ(runc({"start", "d1"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 0) << read_file(out).value_or("");
  EXPECT_EQ(read_file(out).value_or(""),
            "/dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k\n"
            "/run tmpfs rw,nosuid,nodev,relatime,size=2048k,mode=700\n"
            "0\nro\nroot-ro\ntmpfs-rw\n1024\nNoNewPrivs:\t1\n");
  EXPECT_EQ(runc({"delete", "d1"}).rc, 0);
  // A tmpfs option cubby cannot turn into mount(2) arguments is one error
  // naming the mount, before anything exists.
  s["mounts"][6]["options"] = {"tmpcopyup"};
  write_config(s);
  log_ = home_ + "/log.json";
  ::unlink(log_.c_str());
  EXPECT_EQ(runc({"create", "--bundle", bundle_, "d2"}).rc, 1);
  EXPECT_EQ(json::parse(read_file(log_).value_or("{}"))["msg"].get<std::string>().rfind(
                "config.json: mounts[6] (/run): tmpfs option \"tmpcopyup\" is not supported", 0),
            0u)
      << read_file(log_).value_or("");
}

// runc's own default spec as it stands (but the terminal): a read-only root
// and 3 capabilities, a subset of Docker's set, which is what the box's
// processes get (bounding, effective, permitted), execs too.
TEST_F(OciRuntime, RuncsDefaultSpecAndItsCapabilitySubset) {
  json s = spec_;
  s["process"]["terminal"] = false;
  s["process"]["args"] = {"sh", "-c", "grep -E '^Cap(Bnd|Eff|Prm)' /proc/self/status; touch /x 2>/dev/null || echo ro; sleep 1000000"};
  write_config(s);
  std::string out = home_ + "/container.out";
  pid_t pid = create("s1", out);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"start", "s1"}).rc, 0);
  // KILL (5), NET_BIND_SERVICE (10), AUDIT_WRITE (29).
  const std::string caps = "CapPrm:\t0000000020000420\nCapEff:\t0000000020000420\nCapBnd:\t0000000020000420\n";
  json proc = s["process"];
  proc["args"] = {"grep", "-E", "^Cap(Bnd|Eff|Prm)", "/proc/self/status"};
  ASSERT_TRUE(write_file(home_ + "/process.json", proc.dump()));
  std::string eout = home_ + "/exec.out";
  auto e = runc({"exec", "--process", home_ + "/process.json", "--pid-file", home_ + "/exec.pid", "s1"}, eout);
  EXPECT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(read_file(eout).value_or(""), caps);
  // An exec may not ask for another set (the agent gives the box's).
  proc["capabilities"]["bounding"] = {"CAP_KILL"};
  proc["capabilities"]["effective"] = {"CAP_KILL"};
  proc["capabilities"]["permitted"] = {"CAP_KILL"};
  proc["capabilities"]["ambient"] = {"CAP_KILL"};
  ASSERT_TRUE(write_file(home_ + "/process.json", proc.dump()));
  e = runc({"exec", "--process", home_ + "/process.json", "s1"});
  EXPECT_EQ(e.rc, 1);
  EXPECT_NE(e.err.find("an exec's capabilities other than the container's"), std::string::npos) << e.err;
  ASSERT_EQ(runc({"kill", "s1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(read_file(out).value_or(""), caps + "ro\n");
  EXPECT_EQ(runc({"delete", "s1"}).rc, 0);
  // Beyond Docker's set: refused by name.
  s["process"]["capabilities"]["bounding"].push_back("CAP_SYS_ADMIN");
  write_config(s);
  auto r = runc({"create", "--bundle", bundle_, "s2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("process.capabilities.bounding: CAP_SYS_ADMIN is outside Docker's default set"), std::string::npos) << r.err;
}

// config.json's linux.seccomp is the box's filter, in place of cubby's
// default: an allow-by-default profile (as podman and Docker users write
// them) denying mkdir with a chosen errno, and kill only for SIGUSR1 (an
// args condition). The workload and an exec both see it; a name this
// libseccomp does not know is skipped, with a warning.
TEST_F(OciRuntime, TheConfigsSeccompProfileIsTheBoxsFilter) {
  write_honourable({"sh", "-c",
                    "mkdir /tmp/made 2>/dev/null; echo mkdir=$?; mkdir /tmp/made 2>&1 | grep -o 'Text file busy';"
                    " sleep 1000000 & p=$!; kill -USR1 $p 2>/dev/null; echo usr1=$?; kill -0 $p; echo zero=$?;"
                    " kill -USR2 $p; wait $p; echo waited=$?; exec sleep 1000000"});
  json s = json::parse(read_file(bundle_ + "/config.json").value());
  s["linux"]["seccomp"] = {
      {"defaultAction", "SCMP_ACT_ALLOW"},
      {"architectures", {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}},
      {"syscalls",
       {{{"names", {"mkdir", "mkdirat", "no_such_syscall_here"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 26}},
        {{"names", {"kill"}},
         {"action", "SCMP_ACT_ERRNO"},
         {"args", {{{"index", 1}, {"value", 10}, {"op", "SCMP_CMP_EQ"}}}}}}}};
  write_config(s);
  std::string out = home_ + "/container.out";
  log_ = home_ + "/log.json";
  pid_t pid = create("sc1", out);
  ASSERT_GT(pid, 0);
  std::string records = read_file(log_).value_or("");
  EXPECT_NE(records.find("syscalls unknown to this libseccomp are skipped (as runc does): no_such_syscall_here"),
            std::string::npos)
      << records;
  EXPECT_EQ(records.find("default seccomp filter"), std::string::npos) << records;
  log_ = "/dev/null";
  ASSERT_EQ(runc({"start", "sc1"}).rc, 0);
  json proc = s["process"];
  proc["args"] = {"sh", "-c", "mkdir /tmp/by-exec 2>&1; echo rc=$?"};
  ASSERT_TRUE(write_file(home_ + "/process.json", proc.dump()));
  std::string eout = home_ + "/exec.out";
  auto e = runc({"exec", "--process", home_ + "/process.json", "sc1"}, eout);
  EXPECT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(read_file(eout).value_or(""), "mkdir: can't create directory '/tmp/by-exec': Text file busy\nrc=1\n");
  // The workload writes its last line on its own time: wait for it (each
  // write is an inotify event; the poll's timeout is a backstop), else the
  // kill below can cut it short (a CI flake).
  {
    UniqueFd w(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ASSERT_GE(::inotify_add_watch(w.get(), out.c_str(), IN_MODIFY), 0);
    while (read_file(out).value_or("").find("waited=") == std::string::npos) {
      pollfd p{w.get(), POLLIN, 0};
      ASSERT_GT(::poll(&p, 1, 60000), 0) << "the workload never wrote its last line: " << read_file(out).value_or("");
      alignas(inotify_event) char buf[4096];
      while (::read(w.get(), buf, sizeof buf) > 0) {
      }
    }
  }
  ASSERT_EQ(runc({"kill", "sc1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  // SIGUSR1 was denied (EPERM, the default errno), signal 0 and SIGUSR2 were not.
  EXPECT_EQ(read_file(out).value_or(""), "mkdir=1\nText file busy\nusr1=1\nzero=0\nwaited=140\n");
  EXPECT_EQ(runc({"delete", "sc1"}).rc, 0);
}

// The same program reaches a vm container's guest agent (one architecture).
TEST_F(OciRuntime, AVmContainerHasTheConfigsSeccompProfileToo) {
  if (::access((bin_dir() + "/../assets/initramfs.cpio.gz").c_str(), R_OK) != 0 ||
      ::access("/usr/lib/qemu/virtiofsd", X_OK) != 0)
    GTEST_SKIP() << "no vm guest assets or virtiofsd";
  // cubby-runc inherits this: TCG where KVM cannot boot the guest, as BoxTest's vm rows do.
  const bool tcg = !hypervisor::probe("").usable;
  if (tcg) ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
  struct Unset {
    bool on;
    ~Unset() { if (on) ::unsetenv("CUBBY_VM_ACCEL"); }
  } unset{tcg};
  write_honourable({"sh", "-c", "mkdir /tmp/made 2>&1; echo rc=$?"});
  json s = json::parse(read_file(bundle_ + "/config.json").value());
  s["annotations"]["io.cubby.isolation"] = "vm";
  s["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                           {"syscalls", {{{"names", {"mkdir", "mkdirat"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 26}}}}};
  write_config(s);
  std::string out = home_ + "/container.out";
  pid_t pid = create("sv1", out);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(runc({"start", "sv1"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 0);
  EXPECT_EQ(read_file(out).value_or(""), "mkdir: can't create directory '/tmp/made': Text file busy\nrc=1\n");
  EXPECT_EQ(runc({"delete", "sv1"}).rc, 0);
}

// What the compiler cannot honour is one error naming the field, in the
// --log JSON, and create exits non-zero with nothing left behind.
TEST_F(OciRuntime, ASeccompProfileItCannotHonourIsOneJsonError) {
  write_honourable({"true"});
  const json base = json::parse(read_file(bundle_ + "/config.json").value());
  const std::vector<std::pair<json, std::string>> cases = {
      {{{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {{{"names", {"mkdir"}}, {"action", "SCMP_ACT_NOTIFY"}}}}},
       "config.json: linux.seccomp.syscalls[0].action: SCMP_ACT_NOTIFY is not supported by cubby"},
      {{{"defaultAction", "SCMP_ACT_FROB"}}, "config.json: linux.seccomp.defaultAction: unknown action \"SCMP_ACT_FROB\""},
      {{{"defaultAction", "SCMP_ACT_ALLOW"}, {"flags", {"SECCOMP_FILTER_FLAG_NEW_LISTENER"}}},
       "config.json: linux.seccomp.flags[0]: unknown or unsupported flag \"SECCOMP_FILTER_FLAG_NEW_LISTENER\""},
      {{{"defaultAction", "SCMP_ACT_ALLOW"}, {"listenerPath", "/run/agent.sock"}},
       "config.json: linux.seccomp.listenerPath: a seccomp agent (SCMP_ACT_NOTIFY) is not supported by cubby-runc"},
      {{{"defaultAction", "SCMP_ACT_ALLOW"},
        {"syscalls", {{{"names", {"kill"}}, {"action", "SCMP_ACT_ERRNO"}, {"args", {{{"index", 7}, {"value", 1}, {"op", "SCMP_CMP_EQ"}}}}}}}},
       "config.json: linux.seccomp.syscalls[0].args[0].index: must be 0 to 5"},
      {{{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {{{"names", {"kill"}}, {"action", "SCMP_ACT_KILL"}, {"errnoRet", 1}}}}},
       "config.json: linux.seccomp.syscalls[0].action: errnoRet is only taken with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_KILL"},
      {{{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {{{"names", {"kill"}}, {"action", "SCMP_ACT_ERRNO"}, {"extra", 1}}}}},
       "config.json: linux.seccomp.syscalls[0].extra: not supported by cubby-runc yet"},
  };
  log_ = home_ + "/log.json";
  for (const auto& [profile, msg] : cases) {
    json s = base;
    s["linux"]["seccomp"] = profile;
    write_config(s);
    ::unlink(log_.c_str());
    auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/init.pid", "sc2"});
    EXPECT_EQ(r.rc, 1) << msg;
    auto text = read_file(log_).value_or("");
    auto line = json::parse(text.substr(0, text.find('\n')), nullptr, false);
    ASSERT_TRUE(line.is_object()) << text;
    EXPECT_EQ(line["level"], "error");
    EXPECT_EQ(line["msg"].get<std::string>().rfind(msg, 0), 0u) << line["msg"];
    EXPECT_EQ(text.find('\n'), text.size() - 1) << "one record: " << text;
    EXPECT_FALSE(std::filesystem::exists(bundle_ + "/init.pid"));
    EXPECT_NE(runc({"state", "sc2"}).rc, 0);
  }
}

// The config's hooks (oci/hooks.h): a script that writes one line per run
// (its phase, the hostname it sees, its env, then the state it got on
// stdin) to one file. Runtime-namespace hooks write it by its host path;
// container-namespace ones (createContainer, startContainer) through
// /hookdir, a bind mount of the same directory: the host has no /hookdir,
// and they see the box's hostname.
class OciHooks : public OciRuntime {
 protected:
  void SetUp() override {
    OciRuntime::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    dir_ = home_ + "/hookdir";
    ASSERT_TRUE(mkdir_p(dir_));
    // The box's root is a range of host ids of its own: it may write here.
    ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
    ASSERT_TRUE(write_file(dir_ + "/order", ""));
    ASSERT_EQ(::chmod((dir_ + "/order").c_str(), 0666), 0);
    script_ = home_ + "/hook.sh";
    ASSERT_TRUE(write_file(script_,
                           "#!/bin/sh\n"
                           "out=$2; [ \"$3\" = in-box ] && out=/hookdir/order\n"
                           "printf '%s %s %s ' \"$1\" \"$(hostname)\" \"$HOOKVAR\" >>$out || exit 9\n"
                           "cat >>$out; echo >>$out\n"
                           "exit ${4:-0}\n"));
    ASSERT_EQ(::chmod(script_.c_str(), 0755), 0);
  }

  json hook(const std::string& phase, bool in_box = false, int code = 0) {
    return {{"path", script_},
            {"args", {"hook.sh", phase, dir_ + "/order", in_box ? "in-box" : "host", std::to_string(code)}},
            {"env", {"HOOKVAR=v-" + phase}}};
  }

  // runc's default spec as write_honourable makes it, with /hookdir bound
  // and `hooks`.
  void write_with_hooks(const std::vector<std::string>& args, const json& hooks) {
    write_honourable(args);
    json s = json::parse(read_file(bundle_ + "/config.json").value());
    s["mounts"].push_back({{"destination", "/hookdir"}, {"type", "bind"}, {"source", dir_}, {"options", {"rbind", "rw"}}});
    s["hooks"] = hooks;
    write_config(s);
  }

  struct Line {
    std::string phase, hostname, env;
    json state;
  };
  std::vector<Line> lines() {
    std::vector<Line> out;
    std::istringstream in(read_file(dir_ + "/order").value_or(""));
    std::string l;
    while (std::getline(in, l)) {
      std::istringstream f(l);
      Line x;
      f >> x.phase >> x.hostname >> x.env;
      std::string rest;
      std::getline(f, rest);
      x.state = json::parse(rest, nullptr, false);
      out.push_back(std::move(x));
    }
    return out;
  }

  std::string dir_, script_;
};

TEST_F(OciHooks, EachHookRunsAtItsTimeWithTheStateOnStdin) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  ASSERT_STRNE(host, "runc");
  write_with_hooks({"sleep", "1000000"}, {{"prestart", {hook("prestart")}},
                                          {"createRuntime", {hook("createRuntime")}},
                                          {"createContainer", {hook("createContainer", true)}},
                                          {"startContainer", {hook("startContainer", true)}},
                                          {"poststart", {hook("poststart")}},
                                          {"poststop", {hook("poststop")}}});
  pid_t pid = create("h1");
  ASSERT_GT(pid, 0);
  auto l = lines();
  ASSERT_EQ(l.size(), 3u) << read_file(dir_ + "/order").value_or("");
  EXPECT_EQ(l[0].phase, "prestart");
  EXPECT_EQ(l[1].phase, "createRuntime");
  EXPECT_EQ(l[2].phase, "createContainer");
  for (const auto& x : l) {
    EXPECT_EQ(x.env, "v-" + x.phase);
    EXPECT_EQ(x.state["status"], "creating") << x.phase;
    EXPECT_EQ(x.state["id"], "h1");
    EXPECT_EQ(x.state["pid"], pid);
    EXPECT_EQ(x.state["bundle"], bundle_);
    EXPECT_EQ(x.state["ociVersion"], "1.0.2");
  }
  EXPECT_EQ(l[0].hostname, host);
  EXPECT_EQ(l[1].hostname, host);
  EXPECT_EQ(l[2].hostname, "runc");  // the box's uts namespace (and its mount namespace: /hookdir)
  auto st = runc({"start", "h1"});
  ASSERT_EQ(st.rc, 0) << st.err;
  l = lines();
  ASSERT_EQ(l.size(), 5u) << read_file(dir_ + "/order").value_or("");
  EXPECT_EQ(l[3].phase, "startContainer");
  EXPECT_EQ(l[3].hostname, "runc");
  EXPECT_EQ(l[3].state["status"], "created");
  EXPECT_EQ(l[4].phase, "poststart");
  EXPECT_EQ(l[4].hostname, host);
  EXPECT_EQ(l[4].state["status"], "running");
  EXPECT_EQ(l[4].state["pid"], pid);
  ASSERT_EQ(runc({"kill", "h1", "KILL"}).rc, 0);
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(lines().size(), 5u);  // poststop is delete's
  ASSERT_EQ(runc({"delete", "h1"}).rc, 0);
  l = lines();
  ASSERT_EQ(l.size(), 6u);
  EXPECT_EQ(l[5].phase, "poststop");
  EXPECT_EQ(l[5].state["status"], "stopped");
  EXPECT_EQ(l[5].state["id"], "h1");
}

// A failing createRuntime hook fails create with the hook's words, and
// nothing is left (delete's semantics: poststop runs, its own failure a
// warning); createContainer's likewise. A failing startContainer fails
// start and stops the container; a failing poststart is a warning.
TEST_F(OciHooks, FailingHooksFailTheirVerbOrWarn) {
  log_ = home_ + "/log.json";
  write_with_hooks({"sleep", "1000000"}, {{"createRuntime", {hook("createRuntime", false, 3)}},
                                          {"createContainer", {hook("createContainer", true)}},
                                          {"poststop", {hook("poststop", false, 1), hook("poststop2")}}});
  auto r = runc({"create", "--bundle", bundle_, "--pid-file", bundle_ + "/init.pid", "h2"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(r.err.rfind("cubby-runc: createRuntime hook 0 (" + script_ + "): exited with status 3", 0), 0u) << r.err;
  EXPECT_FALSE(std::filesystem::exists(bundle_ + "/init.pid"));
  EXPECT_NE(runc({"state", "h2"}).rc, 0);
  auto l = lines();
  ASSERT_EQ(l.size(), 3u) << read_file(dir_ + "/order").value_or("");
  EXPECT_EQ(l[0].phase, "createRuntime");
  EXPECT_EQ(l[1].phase, "poststop");  // createContainer never ran
  EXPECT_EQ(l[2].phase, "poststop2");  // the first poststop's failure did not stop the second
  std::string records = read_file(log_).value_or("");
  EXPECT_NE(records.find("\"level\":\"warning\",\"msg\":\"poststop hook 0 (" + script_ + "): exited with status 1"),
            std::string::npos)
      << records;
  EXPECT_NE(records.find("\"level\":\"error\",\"msg\":\"createRuntime hook 0"), std::string::npos) << records;
  for (const auto& n : list_dir(root_ + "/.cubby/boxes")) ADD_FAILURE() << "box left behind: " << n;

  // createContainer in the box: its failure is create's too.
  ASSERT_TRUE(write_file(dir_ + "/order", ""));
  json bad = hook("createContainer", true, 4);
  write_with_hooks({"sleep", "1000000"}, {{"createContainer", {bad}}});
  r = runc({"create", "--bundle", bundle_, "h3"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("createContainer hook 0 (" + script_ + "): exited with status 4"), std::string::npos) << r.err;
  EXPECT_NE(runc({"state", "h3"}).rc, 0);

  // startContainer: start fails, the container is stopped, delete removes it.
  write_with_hooks({"sleep", "1000000"}, {{"startContainer", {hook("startContainer", true, 5)}}});
  pid_t pid = create("h4");
  ASSERT_GT(pid, 0);
  r = runc({"start", "h4"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("startContainer hook 0 (" + script_ + "): exited with status 5"), std::string::npos) << r.err;
  EXPECT_EQ(wait_init(pid), 137);
  EXPECT_EQ(state("h4")["status"], "stopped");
  EXPECT_EQ(runc({"delete", "h4"}).rc, 0);

  // poststart: a warning; the container runs on.
  ::unlink(log_.c_str());
  write_with_hooks({"sh", "-c", "echo ran"}, {{"poststart", {hook("poststart", false, 6)}}});
  std::string out = home_ + "/container.out";
  pid = create("h5", out);
  ASSERT_GT(pid, 0);
  r = runc({"start", "h5"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(wait_init(pid), 0);
  EXPECT_EQ(read_file(out).value_or(""), "ran\n");
  records = read_file(log_).value_or("");
  EXPECT_NE(records.find("\"level\":\"warning\",\"msg\":\"poststart hook 0 (" + script_ + "): exited with status 6"),
            std::string::npos)
      << records;
  EXPECT_EQ(runc({"delete", "h5"}).rc, 0);
}

// A hook past its timeout is killed with what it started (its process
// group), and create fails saying so, promptly.
TEST_F(OciHooks, AHookPastItsTimeoutIsKilled) {
  ASSERT_TRUE(write_file(home_ + "/slow.sh", "#!/bin/sh\necho started\nsleep 987654 &\nwait\n"));
  ASSERT_EQ(::chmod((home_ + "/slow.sh").c_str(), 0755), 0);
  write_with_hooks({"true"}, {{"createRuntime", {{{"path", home_ + "/slow.sh"}, {"timeout", 1}}}}});
  auto t0 = std::chrono::steady_clock::now();
  auto r = runc({"create", "--bundle", bundle_, "h6"});
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("createRuntime hook 0 (" + home_ + "/slow.sh): timed out after 1 s (killed): started"), std::string::npos)
      << r.err;
  EXPECT_LT(took, std::chrono::seconds(20));
  reap_adopted();
  EXPECT_TRUE(processes_mentioning("987654").empty()) << "the hook's child outlived it";
  EXPECT_NE(runc({"state", "h6"}).rc, 0);
  // Hooks a vm container cannot run, and a bad hook, are refused by name.
  json s = json::parse(read_file(bundle_ + "/config.json").value());
  s["hooks"] = {{"startContainer", {hook("startContainer", true)}}};
  s["annotations"] = {{"io.cubby.isolation", "vm"}};
  write_config(s);
  r = runc({"create", "--bundle", bundle_, "h7"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("config.json: hooks.startContainer: runs in the container's namespaces, which a vm container keeps in its guest"),
            std::string::npos)
      << r.err;
  s["annotations"] = json::object();
  s["hooks"] = {{"poststop", {{{"path", "relative/hook"}}}}};
  write_config(s);
  r = runc({"create", "--bundle", bundle_, "h7"});
  EXPECT_EQ(r.err, "cubby-runc: config.json: hooks.poststop[0].path: must be an absolute path\n");
  s["hooks"] = {{"poststop", {{{"path", "/bin/true"}, {"timeout", 0}}}}};
  write_config(s);
  r = runc({"create", "--bundle", bundle_, "h7"});
  EXPECT_EQ(r.err, "cubby-runc: config.json: hooks.poststop[0].timeout: must be greater than zero\n");
  s["hooks"] = {{"postmortem", {{{"path", "/bin/true"}}}}};
  write_config(s);
  r = runc({"create", "--bundle", bundle_, "h7"});
  EXPECT_EQ(r.err, "cubby-runc: config.json: hooks.postmortem: not supported by cubby-runc yet\n");
}

TEST_F(OciRuntime, SystemdCgroupIsRefusedClearly) {
  auto r = runc({"--systemd-cgroup", "list"});
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--systemd-cgroup is not supported"), std::string::npos) << r.err;
}

// containerd 1.6 (Debian's) with its runc shim driving cubby-runc, as
// `ctr run --runc-binary` does: a private containerd (own root, state and
// socket under this test's home), stopped by its pid afterwards.
class OciContainerd : public OciRuntime {
 protected:
  void SetUp() override {
    OciRuntime::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    if (::access("/usr/bin/containerd", X_OK) != 0 || ::access("/usr/bin/ctr", X_OK) != 0)
      GTEST_SKIP() << "containerd is not installed (scripts/install-deps.sh installs it)";
    d_ = home_ + "/ctrd";
    ASSERT_TRUE(mkdir_p(d_));
    ASSERT_TRUE(write_file(d_ + "/config.toml", "version = 2\nroot = \"" + d_ + "/root\"\nstate = \"" + d_ +
                                                    "/state\"\n" + plugins_config() +
                                                    "[grpc]\n  address = \"" + d_ + "/containerd.sock\"\n"));
    // The socket's appearance is the readiness event (inotify; the timeout is a backstop).
    UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ASSERT_GE(::inotify_add_watch(watch.get(), d_.c_str(), IN_CREATE), 0);
    UniqueFd log(::open((d_ + "/containerd.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    SpawnSpec cs;
    cs.argv = {"/usr/bin/containerd", "--config", d_ + "/config.toml"};
    cs.fds = {-1, log.get(), log.get()};
    // Its shims and cubby-runc inherit this environment: vm containers run
    // under TCG where KVM cannot boot the guest, as BoxTest's vm rows do.
    const bool tcg = !hypervisor::probe("").usable;
    if (tcg) ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
    auto c = spawn(cs);
    if (tcg) ::unsetenv("CUBBY_VM_ACCEL");
    ASSERT_TRUE(c);
    ctrd_ = std::move(*c);
    while (::access((d_ + "/containerd.sock").c_str(), F_OK) != 0)
      ASSERT_TRUE(sys::wait_readable(watch.get(), std::chrono::seconds(60)).value_or(false)) << "containerd did not start";
    // A namespace of its own: the shim keeps runc state in /run/containerd/runc/<ns>,
    // which is cubby-runc's --root.
    ns_ = containerd_namespace();
    runc_root_ = "/run/containerd/runc/" + ns_;
    out_ = d_ + "/ctr.out";
  }

  void TearDown() override {
    if (ctrd_.valid()) {
      // Nothing of any container is left in cubby-runc's state dir.
      for (const auto& n : list_dir(runc_root_))
        if (n != ".cubby") ADD_FAILURE() << "cubby-runc state left behind: " << n;
      for (const auto& n : list_dir(runc_root_ + "/.cubby/boxes")) ADD_FAILURE() << "box left behind: " << n;
      ctr({"namespaces", "rm", ns_});
      EXPECT_TRUE(ctrd_.signal(SIGTERM));
      EXPECT_TRUE(ctrd_.wait());
      reap_adopted();
      for (pid_t p : processes_mentioning(d_)) ADD_FAILURE() << "process " << p << " outlived containerd";
      (void)remove_tree(runc_root_);
    }
    OciRuntime::TearDown();
  }

  // ctr's tests want no CRI plugin; OciCri configures one.
  virtual std::string plugins_config() { return "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"; }
  virtual std::string containerd_namespace() { return "cubby-test-" + std::to_string(::getpid()); }

  std::vector<std::string> ctr_argv(const std::vector<std::string>& args) const {
    std::vector<std::string> a = {"/usr/bin/ctr", "-a", d_ + "/containerd.sock", "-n", ns_};
    a.insert(a.end(), args.begin(), args.end());
    return a;
  }

  // ctr with its output in last_; tty: on a terminal (`ctr run -t`).
  int ctr(const std::vector<std::string>& args) { return ctr_tty(args, "", false); }
  int ctr_tty(const std::vector<std::string>& args, const std::string& input, bool tty = true) {
    int rc = run_to(ctr_argv(args), out_, tty, input);
    last_ = read_file(out_).value_or("");
    return rc;
  }

  std::string d_, ns_, runc_root_, last_;
  std::string out_;
  ChildProcess ctrd_;
};

// ctr's --config gives the shim a bundle made from `runc spec`.
TEST_F(OciContainerd, CtrRunDrivesItThroughContainerdsShim) {
  write_honourable({"sh", "-c", "echo hello-from-$(hostname); exit 3"});
  json cfg = json::parse(read_file(bundle_ + "/config.json").value());
  cfg["root"]["path"] = bundle_ + "/rootfs";
  ASSERT_TRUE(write_file(d_ + "/spec.json", cfg.dump()));
  const std::string runc_bin = bin_dir() + "/cubby-runc";
  EXPECT_EQ(ctr({"run", "--rm", "--runc-binary", runc_bin, "--config", d_ + "/spec.json", "t1"}), 3) << last_;
  EXPECT_EQ(last_, "hello-from-runc\n");
  // Detached, then killed through containerd: its status is the signal's.
  cfg["process"]["args"] = {"sleep", "1000000"};
  ASSERT_TRUE(write_file(d_ + "/spec.json", cfg.dump()));
  EXPECT_EQ(ctr({"run", "-d", "--runc-binary", runc_bin, "--config", d_ + "/spec.json", "t2"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "ls"}), 0);
  EXPECT_NE(last_.find("RUNNING"), std::string::npos) << last_;
  // exec through the shim (--process, --detach, --pid-file): its output and status.
  EXPECT_EQ(ctr({"task", "exec", "--exec-id", "e1", "t2", "sh", "-c", "echo exec-ok; exit 5"}), 5) << last_;
  EXPECT_EQ(last_, "exec-ok\n");
  // task ps: the container's processes by host pid (runc ps --format json).
  EXPECT_EQ(ctr({"task", "ps", "t2"}), 0) << last_;
  EXPECT_NE(last_.find("PID"), std::string::npos) << last_;
  EXPECT_GE(std::count(last_.begin(), last_.end(), '\n'), 2) << last_;
  EXPECT_EQ(ctr({"task", "kill", "-s", "SIGKILL", "t2"}), 0) << last_;
  // The kill is asynchronous: `task rm -f` waits for the exit containerd
  // saw (and warns with its code; a SIGKILL it sent itself would be 137 too,
  // but by then the task has the kill's status).
  EXPECT_EQ(ctr({"task", "rm", "-f", "t2"}), 0) << last_;
  EXPECT_NE(last_.find("exit code 137"), std::string::npos) << last_;
  EXPECT_EQ(ctr({"container", "rm", "t2"}), 0) << last_;
}

// The vm row: the annotation io.cubby.isolation=vm puts the container in a
// micro-VM of its own (TCG here), the bundle's rootfs shared read-only by
// virtio-fs as the overlay's lower. run's exit code, -d + task exec, kill;
// then a kill -9 of QEMU under `ctr run -d`: containerd sees the exit, task
// rm and container rm clean up, no virtiofsd or QEMU is left.
TEST_F(OciContainerd, CtrRunsAContainerInAVmByAnnotation) {
  if (::access((bin_dir() + "/../assets/initramfs.cpio.gz").c_str(), R_OK) != 0 ||
      ::access("/usr/lib/qemu/virtiofsd", X_OK) != 0)
    GTEST_SKIP() << "no vm guest assets or virtiofsd";
  write_honourable({"sh", "-c", "echo hello-from-$(uname -r); exit 3"});
  json cfg = json::parse(read_file(bundle_ + "/config.json").value());
  cfg["root"]["path"] = bundle_ + "/rootfs";
  cfg["annotations"]["io.cubby.isolation"] = "vm";
  ASSERT_TRUE(write_file(d_ + "/spec.json", cfg.dump()));
  const std::string runc_bin = bin_dir() + "/cubby-runc";
  EXPECT_EQ(ctr({"run", "--rm", "--runc-binary", runc_bin, "--config", d_ + "/spec.json", "v1"}), 3) << last_;
  EXPECT_NE(last_.find("hello-from-"), std::string::npos) << last_;
  EXPECT_NE(last_.find("cloud-amd64"), std::string::npos) << "not the guest kernel: " << last_;
  cfg["process"]["args"] = {"sleep", "1000000"};
  ASSERT_TRUE(write_file(d_ + "/spec.json", cfg.dump()));
  EXPECT_EQ(ctr({"run", "-d", "--runc-binary", runc_bin, "--config", d_ + "/spec.json", "v2"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "exec", "--exec-id", "e1", "v2", "sh", "-c", "echo exec-ok; exit 5"}), 5) << last_;
  EXPECT_EQ(last_, "exec-ok\n");
  EXPECT_EQ(ctr({"task", "kill", "-s", "SIGKILL", "v2"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "rm", "-f", "v2"}), 0) << last_;
  EXPECT_NE(last_.find("exit code 137"), std::string::npos) << last_;
  EXPECT_EQ(ctr({"container", "rm", "v2"}), 0) << last_;
  // kill -9 of the VMM.
  EXPECT_EQ(ctr({"run", "-d", "--runc-binary", runc_bin, "--config", d_ + "/spec.json", "v3"}), 0) << last_;
  // This container's QEMU: its command line names its box's disk under cubby-runc's --root.
  std::vector<pid_t> mine;
  for (pid_t p : processes_mentioning(runc_root_ + "/.cubby/boxes/"))
    if (auto a = process_argv(p); a && !a->empty() && a->at(0).find("qemu-system") != std::string::npos)
      mine.push_back(p);
  ASSERT_EQ(mine.size(), 1u);
  ASSERT_EQ(::kill(mine.back(), SIGKILL), 0);
  // task rm without -f: containerd must have seen the exit by itself.
  // task rm -f waits for the exit containerd saw: the VM's death is the box's
  // 137 (a SIGKILL the shim did not send is a cubby error, 125, if QEMU died first).
  EXPECT_EQ(ctr({"task", "rm", "-f", "v3"}), 0) << last_;
  EXPECT_EQ(ctr({"container", "rm", "v3"}), 0) << last_;
  for (pid_t p : processes_mentioning("/usr/lib/qemu/virtiofsd")) {
    if (!descends_from(p, ::getpid())) continue;  // another test's, beside this one under ctest -j
    UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, p, 0)));
    if (fd) {
      EXPECT_TRUE(sys::wait_readable(fd.get(), std::chrono::seconds(10)).value_or(false)) << "virtiofsd " << p << " left";
    }
  }
}

// An image imported into containerd, run with ctr's own default spec (no
// --config): its /run tmpfs, masked paths, device rules and the rest are
// honoured; --read-only too; -t and `task exec -t` get terminals over
// --console-socket; pause/resume go through the shim.
TEST_F(OciContainerd, CtrRunsAnImportedImageWithItsDefaultSpec) {
  std::string archive = image_archive();
  ASSERT_EQ(ctr({"images", "import", archive}), 0) << last_;
  const std::string img = "localhost/busybox:latest";
  const std::string runc_bin = bin_dir() + "/cubby-runc";
  EXPECT_EQ(ctr({"run", "--rm", "--runc-binary", runc_bin, img, "i1", "sh", "-c",
                 "grep -c ' /run tmpfs' /proc/mounts; ls /sys/firmware | wc -l; ulimit -n; exit 6"}), 6) << last_;
  EXPECT_EQ(last_, "1\n0\n1024\n") << last_;
  EXPECT_EQ(ctr({"run", "--rm", "--read-only", "--runc-binary", runc_bin, img, "i2", "sh", "-c",
                 "touch /x 2>/dev/null || echo ro; touch /tmp/x 2>/dev/null || echo tmp-ro; touch /run/x && echo tmpfs-rw"}), 0) << last_;
  // /tmp is the image's, read-only with the rest (containerd's spec mounts no tmpfs there; runc alike).
  EXPECT_EQ(last_, "ro\ntmp-ro\ntmpfs-rw\n") << last_;
  // A terminal: ctr passes --console-socket; the shell sees a tty and ctr
  // its exit status.
  EXPECT_EQ(ctr_tty({"run", "--rm", "-t", "--runc-binary", runc_bin, img, "i3", "sh"},
                    "tty >/dev/null && echo on-a-tty-$((6*7)); exit 9\n"), 9) << last_;
  EXPECT_NE(last_.find("on-a-tty-42"), std::string::npos) << last_;
  // Detached; exec -t; pause and resume as the shim calls them.
  EXPECT_EQ(ctr({"run", "-d", "--runc-binary", runc_bin, img, "i4", "sleep", "1000000"}), 0) << last_;
  EXPECT_EQ(ctr_tty({"task", "exec", "-t", "--exec-id", "e1", "i4", "sh"}, "tty >/dev/null && echo exec-tty; exit 3\n"), 3) << last_;
  EXPECT_NE(last_.find("exec-tty"), std::string::npos) << last_;
  EXPECT_EQ(ctr({"task", "pause", "i4"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "ls"}), 0);
  EXPECT_NE(last_.find("PAUSED"), std::string::npos) << last_;
  EXPECT_EQ(ctr({"task", "resume", "i4"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "ls"}), 0);
  EXPECT_NE(last_.find("RUNNING"), std::string::npos) << last_;
  EXPECT_EQ(ctr({"task", "kill", "-s", "SIGKILL", "i4"}), 0) << last_;
  EXPECT_EQ(ctr({"task", "rm", "-f", "i4"}), 0) << last_;
  EXPECT_EQ(ctr({"container", "rm", "i4"}), 0) << last_;
  EXPECT_EQ(ctr({"images", "rm", img}), 0) << last_;
}

// containerd 1.6's CRI plugin with a runtime handler "cubby" (the runc v2
// shim, BinaryName = cubby-runc), driven by tests/cri/cri_client.py (crictl
// is not in Debian): a pod sandbox (catatonit -P as the pause image) on a
// loopback-only CNI network, a container in it that shares the pod's
// network, ipc and uts namespaces (joined by path: the sandbox's pid-file
// process is in its box's namespaces), ExecSync, stop and removal of both;
// nothing is left (no process, no box, no netns mount, no runc state).
class OciCri : public OciContainerd {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/catatonit", X_OK) != 0 || std::system("/usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null") != 0)
      GTEST_SKIP() << "catatonit, python3-grpcio and python3-grpc-tools are needed (scripts/install-deps.sh)";
    mounts_before_ = netns_mounts();
    OciContainerd::SetUp();
  }

  void TearDown() override {
    // A test that failed half-way: its pod goes (with its containers) while
    // containerd is still here; its shims would outlive containerd.
    if (!pod_id_.empty() && ctrd_.valid()) {
      (void)cri("StopPodSandbox", {{"pod_sandbox_id", pod_id_}});
      (void)cri("RemovePodSandbox", {{"pod_sandbox_id", pod_id_}});
    }
    OciContainerd::TearDown();
    EXPECT_EQ(netns_mounts(), mounts_before_) << "a pod's network namespace outlived it";
  }

  std::string plugins_config() override {
    const std::string cri = "[plugins.\"io.containerd.grpc.v1.cri\"]\n";
    const std::string rt = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cubby]\n";
    EXPECT_TRUE(mkdir_p(home_ + "/ctrd/cni"));
    // loopback brings the pod's lo up; pod-lo (tests/cri) reports it as eth0.
    EXPECT_TRUE(mkdir_p(home_ + "/ctrd/cni-bin"));
    EXPECT_EQ(::symlink("/usr/lib/cni/loopback", (home_ + "/ctrd/cni-bin/loopback").c_str()), 0);
    EXPECT_EQ(::symlink((std::string(CUBBY_TEST_SOURCE_DIR) + "/cri/pod-lo").c_str(), (home_ + "/ctrd/cni-bin/pod-lo").c_str()), 0);
    EXPECT_TRUE(write_file(home_ + "/ctrd/cni/10-lo.conflist",
                           R"({"cniVersion": "1.0.0", "name": "cubby-lo", "plugins": [{"type": "loopback"}, {"type": "pod-lo"}]})"));
    // restrict_oom_score_adj: the sandbox's -998 needs CAP_SYS_RESOURCE,
    // which root lacks on this host (peers notes). No apparmor, no
    // external network: the streaming server is on loopback.
    return cri + "  sandbox_image = \"registry.k8s.io/pause:3.6\"\n  restrict_oom_score_adj = true\n"
                 "  disable_apparmor = true\n  stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n" +
           "[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"" + home_ + "/ctrd/cni-bin\"\n  conf_dir = \"" + home_ +
           "/ctrd/cni\"\n" + "[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"cubby\"\n" +
           rt + "  runtime_type = \"io.containerd.runc.v2\"\n" +
           "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.cubby.options]\n  BinaryName = \"" + bin_dir() +
           "/cubby-runc\"\n";
  }
  // The CRI plugin's own namespace.
  std::string containerd_namespace() override { return "k8s.io"; }

  static std::set<std::string> netns_mounts() {
    std::set<std::string> out;
    std::istringstream in(read_file("/proc/self/mountinfo").value_or(""));
    for (std::string line; std::getline(in, line);)
      if (line.find("/netns/cni-") != std::string::npos) out.insert(line);
    return out;
  }

  // One RuntimeService call: the response as JSON, or null (the error in last_).
  json cri(const std::string& method, const json& request) {
    int rc = run_to({"/usr/bin/python3", std::string(CUBBY_TEST_SOURCE_DIR) + "/cri/cri_client.py", d_ + "/containerd.sock",
                     method, request.dump()},
                    out_);
    last_ = read_file(out_).value_or("");
    if (rc != 0) return nullptr;
    return json::parse(last_, nullptr, false);
  }

  // catatonit (static) as registry.k8s.io/pause:3.6, as the peers notes build it.
  std::string pause_archive() {
    const std::string d = home_ + "/pause";
    std::string cmd = "set -e; mkdir -p " + d + "; cd " + d +
                      "; umoci init --layout l; umoci new --image l:3.6; umoci unpack --image l:3.6 b;"
                      " cp /usr/bin/catatonit b/rootfs/pause; umoci repack --image l:3.6 b;"
                      " umoci config --image l:3.6 --config.entrypoint /pause --config.entrypoint -P --config.user 65535:65535;"
                      " skopeo copy -q oci:l:3.6 docker-archive:" + d + "/pause.tar:registry.k8s.io/pause:3.6; rm -rf b l";
    EXPECT_EQ(sh(cmd + " >" + d + ".log 2>&1"), 0) << read_file(d + ".log").value_or("");
    return d + "/pause.tar";
  }

  std::set<std::string> mounts_before_;
  std::string pod_id_;  // set while a pod exists
};

TEST_F(OciCri, APodAndItsContainerRunUnderTheCriPlugin) {
  ASSERT_EQ(ctr({"images", "import", pause_archive()}), 0) << last_;
  ASSERT_EQ(ctr({"images", "import", image_archive()}), 0) << last_;
  json v = cri("Version", json::object());
  ASSERT_FALSE(v.is_null()) << last_;
  EXPECT_EQ(v["runtime_name"], "containerd");

  json pod = {{"metadata", {{"name", "pod1"}, {"uid", "uid-pod1"}, {"namespace", "default"}}},
              {"hostname", "cubby-pod"},
              {"log_directory", d_ + "/logs"},
              {"linux", json::object()}};
  json run = cri("RunPodSandbox", {{"config", pod}, {"runtime_handler", "cubby"}});
  ASSERT_FALSE(run.is_null()) << last_ << read_file(d_ + "/containerd.log").value_or("");
  const std::string pod_id = run["pod_sandbox_id"];
  pod_id_ = pod_id;
  json st = cri("PodSandboxStatus", {{"pod_sandbox_id", pod_id}, {"verbose", true}});
  ASSERT_FALSE(st.is_null()) << last_;
  EXPECT_EQ(st["status"].value("state", "SANDBOX_READY"), "SANDBOX_READY");  // the default (0) is omitted
  EXPECT_EQ(st["status"]["runtime_handler"], "cubby");
  json info = json::parse(st["info"].value("info", "{}"), nullptr, false);
  const pid_t sandbox_pid = info.value("pid", 0);
  ASSERT_GT(sandbox_pid, 0) << st.dump();

  // pid CONTAINER: a pid namespace of its own (joining the pod's is refused:
  // the agent is PID 1 of every box).
  json cfg = {{"metadata", {{"name", "c1"}}},
              {"image", {{"image", "localhost/busybox:latest"}}},
              {"command", {"sleep", "1000000"}},
              {"log_path", "c1.log"},
              {"linux", {{"security_context", {{"namespace_options", {{"pid", "CONTAINER"}}}}}}}};
  json created = cri("CreateContainer", {{"pod_sandbox_id", pod_id}, {"config", cfg}, {"sandbox_config", pod}});
  ASSERT_FALSE(created.is_null()) << last_ << read_file(d_ + "/containerd.log").value_or("");
  const std::string cid = created["container_id"];
  ASSERT_FALSE(cri("StartContainer", {{"container_id", cid}}).is_null()) << last_;

  json ex = cri("ExecSync", {{"container_id", cid},
                             {"cmd", {"sh", "-c", "hostname; for n in net ipc uts; do readlink /proc/self/ns/$n; done; "
                                                  "echo err >&2; exit 3"}},
                             {"timeout", 60}});
  ASSERT_FALSE(ex.is_null()) << last_;
  EXPECT_EQ(ex.value("exit_code", 0), 3);
  const std::string ns = "/proc/" + std::to_string(sandbox_pid) + "/ns/";
  auto link = [](const std::string& p) { return std::filesystem::read_symlink(p).string(); };
  EXPECT_EQ(ex.value("stdout", ""), "cubby-pod\n" + link(ns + "net") + "\n" + link(ns + "ipc") + "\n" + link(ns + "uts") + "\n");
  EXPECT_EQ(ex.value("stderr", ""), "err\n");
  EXPECT_NE(link(ns + "net"), link("/proc/self/ns/net"));

  ASSERT_FALSE(cri("StopContainer", {{"container_id", cid}, {"timeout", 10}}).is_null()) << last_;
  json cs = cri("ContainerStatus", {{"container_id", cid}});
  ASSERT_FALSE(cs.is_null()) << last_;
  EXPECT_EQ(cs["status"]["state"], "CONTAINER_EXITED") << cs.dump();
  ASSERT_FALSE(cri("RemoveContainer", {{"container_id", cid}}).is_null()) << last_;
  ASSERT_FALSE(cri("StopPodSandbox", {{"pod_sandbox_id", pod_id}}).is_null()) << last_;
  ASSERT_FALSE(cri("RemovePodSandbox", {{"pod_sandbox_id", pod_id}}).is_null()) << last_;
  pod_id_.clear();
  EXPECT_TRUE(cri("PodSandboxStatus", {{"pod_sandbox_id", pod_id}}).is_null());  // gone
  // The images go with the namespace (TearDown removes it).
  for (const char* img : {"registry.k8s.io/pause:3.6", "localhost/busybox:latest"}) EXPECT_EQ(ctr({"images", "rm", img}), 0) << last_;
}

// Docker 20.10 (Debian's dockerd, its own containerd) with cubby-runc as an
// added runtime: a private dockerd (own data root, exec root and socket, no
// bridge or iptables), stopped by its pid; the busybox image docker-loaded.
class OciDocker : public OciRuntime {
 protected:
  void SetUp() override {
    OciRuntime::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    if (::access("/usr/sbin/dockerd", X_OK) != 0 || ::access("/usr/bin/docker", X_OK) != 0)
      GTEST_SKIP() << "docker.io is not installed (scripts/install-deps.sh installs it)";
    d_ = home_ + "/dk";
    ASSERT_TRUE(mkdir_p(d_));
    UniqueFd watch(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ASSERT_GE(::inotify_add_watch(watch.get(), d_.c_str(), IN_CREATE), 0);
    UniqueFd log(::open((d_ + "/dockerd.log").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    SpawnSpec s;
    s.argv = {"/usr/sbin/dockerd", "--data-root", d_ + "/data", "--exec-root", d_ + "/exec", "-H", "unix://" + d_ + "/docker.sock",
              "--pidfile", d_ + "/docker.pid", "--bridge=none", "--iptables=false", "--ip-masq=false",
              "--add-runtime", "cubby=" + bin_dir() + "/cubby-runc"};
    s.fds = {-1, log.get(), log.get()};
    auto c = spawn(s);
    ASSERT_TRUE(c);
    dockerd_ = std::move(*c);
    // The API socket is made once the daemon is initialised (readiness by inotify; the timeout is a backstop).
    while (::access((d_ + "/docker.sock").c_str(), F_OK) != 0)
      ASSERT_TRUE(sys::wait_readable(watch.get(), std::chrono::seconds(60)).value_or(false))
          << "dockerd did not start: " << read_file(d_ + "/dockerd.log").value_or("");
    out_ = d_ + "/docker.out";
  }

  void TearDown() override {
    if (dockerd_.valid()) {
      for (const auto& n : list_dir(d_ + "/exec/runtime-cubby/moby"))
        if (n != ".cubby") ADD_FAILURE() << "cubby-runc state left behind: " << n;
      EXPECT_TRUE(dockerd_.signal(SIGTERM));
      EXPECT_TRUE(dockerd_.wait());
      reap_adopted();
      for (pid_t p : processes_mentioning(d_)) ADD_FAILURE() << "process " << p << " outlived dockerd";
    }
    OciRuntime::TearDown();
  }

  int docker(const std::vector<std::string>& args, bool tty = false, const std::string& input = "") {
    std::vector<std::string> a = {"/usr/bin/docker", "-H", "unix://" + d_ + "/docker.sock"};
    a.insert(a.end(), args.begin(), args.end());
    int rc = run_to(a, out_, tty, input);
    last_ = read_file(out_).value_or("");
    return rc;
  }

  std::string d_, out_, last_;
  ChildProcess dockerd_;
};

TEST_F(OciDocker, DockerRunsContainersInCubbyBoxes) {
  ASSERT_EQ(docker({"load", "-i", image_archive()}), 0) << last_;
  const std::string img = "localhost/busybox:latest";
  EXPECT_EQ(docker({"run", "--rm", "--runtime", "cubby", img, "echo", "hi"}), 0) << last_;
  EXPECT_EQ(last_, "hi\n");
  EXPECT_EQ(docker({"run", "--rm", "--runtime", "cubby", img, "sh", "-c", "exit 7"}), 7) << last_;
  // Docker's own sysctls reach the box's namespaces.
  EXPECT_EQ(docker({"run", "--rm", "--runtime", "cubby", img, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"}), 0) << last_;
  EXPECT_EQ(last_, "0\n");
  EXPECT_EQ(docker({"run", "-d", "--runtime", "cubby", "--name", "d1", img, "sh", "-c", "echo logged; exec sleep 1000000"}), 0)
      << last_;
  EXPECT_EQ(docker({"exec", "d1", "sh", "-c", "echo in-exec; exit 4"}), 4) << last_;
  EXPECT_EQ(last_, "in-exec\n");
  EXPECT_EQ(docker({"logs", "d1"}), 0) << last_;
  EXPECT_EQ(last_, "logged\n");
  EXPECT_EQ(docker({"stop", "-t", "2", "d1"}), 0) << last_;
  EXPECT_EQ(docker({"inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "d1"}), 0) << last_;
  EXPECT_EQ(last_, "exited 143\n");  // the SIGTERM docker stop sends (runc kill), not the SIGKILL after -t
  EXPECT_EQ(docker({"rm", "d1"}), 0) << last_;
  EXPECT_EQ(docker({"run", "--rm", "-it", "--runtime", "cubby", img, "sh"}, true,
                   "tty >/dev/null && echo it-$((6*7)); exit 5\n"), 5) << last_;
  EXPECT_NE(last_.find("it-42"), std::string::npos) << last_;
  // The runs above had Docker's default profile as the box's filter (Docker
  // sends it in config.json); a profile of one's own replaces it, and
  // seccomp=unconfined sends none (cubby's default filter, which allows mkdir).
  ASSERT_TRUE(write_file(d_ + "/no-mkdir.json",
                         R"({"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]})"));
  EXPECT_EQ(docker({"run", "--rm", "--runtime", "cubby", "--security-opt", "seccomp=" + d_ + "/no-mkdir.json", img, "sh", "-c",
                    "mkdir /tmp/d 2>&1; echo rc=$?"}), 0) << last_;
  EXPECT_EQ(last_, "mkdir: can't create directory '/tmp/d': Operation not permitted\nrc=1\n");
  EXPECT_EQ(docker({"run", "--rm", "--runtime", "cubby", "--security-opt", "seccomp=unconfined", img, "sh", "-c",
                    "mkdir /tmp/d && echo made"}), 0) << last_;
  EXPECT_EQ(last_, "made\n");
  EXPECT_EQ(docker({"rmi", img}), 0) << last_;
}

// podman 4.3 (Debian's, conmon) with --runtime cubby-runc: its own storage
// under this test's home, its default capability set (Docker's without
// MKNOD, NET_RAW and AUDIT_WRITE). Its nofile/nproc defaults exceed this
// host's hard limits (no CAP_SYS_RESOURCE), so the test sets them, as
// ../shared/notes/peers-on-this-machine.md does for runc.
TEST_F(OciRuntime, PodmanRunsContainersInCubbyBoxes) {
  if (::access("/usr/bin/podman", X_OK) != 0) GTEST_SKIP() << "podman is not installed";
  const std::string d = home_ + "/pm";
  const std::string out = d + ".out";
  auto podman = [&](const std::vector<std::string>& args, bool tty = false, const std::string& input = "") {
    std::vector<std::string> a = {"/usr/bin/podman", "--root", d + "/root", "--runroot", d + "/run", "--cgroup-manager",
                                  "cgroupfs", "--events-backend", "file", "--storage-driver", "overlay", "--tmpdir", d + "/tmp"};
    a.insert(a.end(), args.begin(), args.end());
    return run_to(a, out, tty, input);
  };
  auto last = [&] { return read_file(out).value_or(""); };
  ASSERT_EQ(podman({"load", "-i", image_archive()}), 0) << last();
  const std::vector<std::string> opts = {"--runtime", bin_dir() + "/cubby-runc", "--network", "none", "--ulimit",
                                         "nofile=1024:1024", "--ulimit", "nproc=4096:4096"};
  auto with = [&](std::vector<std::string> head, const std::vector<std::string>& tail) {
    head.insert(head.end(), opts.begin(), opts.end());
    head.insert(head.end(), tail.begin(), tail.end());
    return head;
  };
  const std::string img = "localhost/busybox:latest";
  EXPECT_EQ(podman(with({"run", "--rm"}, {img, "sh", "-c", "echo hi; umask; grep CapBnd /proc/self/status; exit 7"})), 7) << last();
  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP.
  EXPECT_EQ(last(), "hi\n0022\nCapBnd:\t00000000800405fb\n");
  EXPECT_EQ(podman(with({"run", "-d", "--name", "p1"}, {img, "sh", "-c", "echo logged; exec sleep 1000000"})), 0) << last();
  EXPECT_EQ(podman({"exec", "p1", "sh", "-c", "echo in-exec; exit 4"}), 4) << last();
  EXPECT_EQ(last(), "in-exec\n");
  EXPECT_EQ(podman({"logs", "p1"}), 0) << last();
  EXPECT_EQ(last(), "logged\n");
  EXPECT_EQ(podman({"stop", "-t", "2", "p1"}), 0) << last();
  EXPECT_EQ(podman({"inspect", "-f", "{{.State.ExitCode}}", "p1"}), 0) << last();
  EXPECT_EQ(last(), "143\n");
  EXPECT_EQ(podman({"rm", "p1"}), 0) << last();
  EXPECT_EQ(podman(with({"run", "--rm", "-it"}, {img, "sh"}), true, "tty >/dev/null && echo it-$((6*7)); exit 5\n"), 5)
      << last();
  EXPECT_NE(last().find("it-42"), std::string::npos) << last();
  EXPECT_EQ(podman({"rmi", "-a", "-f"}), 0) << last();
  // podman keeps its storage's overlay mount while the store is open: let it go.
  (void)podman({"system", "reset", "-f"});
  for (pid_t p : processes_mentioning(d)) ADD_FAILURE() << "process " << p << " outlived podman";
}

}  // namespace
}  // namespace cubby::test
