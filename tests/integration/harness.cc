#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "hypervisor/kvm_probe.h"

namespace cubby::test {

std::vector<std::string> CmdResult::err_lines() const {
  std::vector<std::string> lines;
  std::istringstream in(err);
  std::string l;
  while (std::getline(in, l))
    if (!l.empty()) lines.push_back(l);
  return lines;
}

std::string bin_dir() { return CUBBY_TEST_BIN_DIR; }
std::string cubby_path() { return bin_dir() + "/cubby"; }

ChildProcess spawn_cubby(const std::string& home, const std::vector<std::string>& args, int out_fd, int err_fd,
                         int in_fd) {
  SpawnSpec s;
  s.argv = {cubby_path(), "--home", home};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  s.fds = {in_fd, out_fd, err_fd};
  auto c = spawn(s);
  EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message());
  return c ? std::move(*c) : ChildProcess();
}

CmdResult run_cubby(const std::string& home, const std::vector<std::string>& args,
                    const std::optional<std::string>& input) {
  CmdResult r;
  auto [out_r, out_w] = sys::make_pipe().value();
  auto [err_r, err_w] = sys::make_pipe().value();
  UniqueFd in_r, in_w;
  if (input) {
    auto p = sys::make_pipe().value();
    in_r = std::move(p.first);
    in_w = std::move(p.second);
  }
  SpawnSpec s;
  s.argv = {cubby_path(), "--home", home};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  s.fds = {input ? in_r.get() : -1, out_w.get(), err_w.get()};
  auto child = spawn(s);
  if (!child) {
    r.err = child.error().message();
    return r;
  }
  out_w.reset();
  err_w.reset();
  in_r.reset();
  // Feed stdin and read both pipes to EOF in one poll loop (no sleeping), so
  // an input larger than a pipe cannot deadlock against unread output; then
  // reap. A command that exits without reading all its input gives EPIPE
  // here, not a SIGPIPE that would kill the test (this thread's signal, kept
  // blocked and then drained; spawned children reset their mask).
  sigset_t pipe_set, old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  size_t in_off = 0;
  if (input && input->empty()) in_w.reset();
  if (in_w) (void)::fcntl(in_w.get(), F_SETFL, O_NONBLOCK);
  bool out_open = true, err_open = true;
  char buf[65536];
  while (out_open || err_open) {
    pollfd p[3] = {{out_open ? out_r.get() : -1, POLLIN, 0},
                   {err_open ? err_r.get() : -1, POLLIN, 0},
                   {in_w ? in_w.get() : -1, POLLOUT, 0}};
    if (::poll(p, 3, -1) < 0) continue;
    if (p[2].revents) {
      ssize_t n = ::write(in_w.get(), input->data() + in_off, input->size() - in_off);
      if (n > 0) in_off += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || in_off == input->size()) in_w.reset();
    }
    for (int i = 0; i < 2; ++i) {
      if (!p[i].revents) continue;
      ssize_t n = ::read(i == 0 ? out_r.get() : err_r.get(), buf, sizeof buf);
      if (n > 0)
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(n));
      else
        (i == 0 ? out_open : err_open) = false;
    }
  }
  in_w.reset();
  timespec now{};
  while (::sigtimedwait(&pipe_set, nullptr, &now) == SIGPIPE) {
  }
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  auto st = child->wait();
  r.rc = st ? st->shell_code() : -1;
  return r;
}

std::set<pid_t> cubby_processes() {
  std::set<pid_t> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    auto argv = process_argv(pid);
    if (!argv || argv->empty()) continue;
    std::string a0 = (*argv)[0];
    std::string base = a0.substr(a0.rfind('/') + 1);
    if (base == "cubby-shim" || base == "cubby-agent" || a0 == cubby_path()) out.insert(pid);
  }
  ::closedir(d);
  return out;
}

std::vector<pid_t> processes_mentioning(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0 || pid == ::getpid()) continue;
    auto argv = process_argv(pid);
    if (!argv) continue;
    for (auto& a : *argv)
      if (a.find(needle) != std::string::npos) {
        out.push_back(pid);
        break;
      }
  }
  ::closedir(d);
  return out;
}

bool descends_from(pid_t pid, pid_t ancestor) {
  for (int hops = 0; pid > 1 && hops < 256; ++hops) {
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat").value_or("");
    auto rp = stat.rfind(')');  // the comm may hold spaces and parentheses
    if (rp == std::string::npos) return false;
    std::istringstream in(stat.substr(rp + 2));
    std::string state;
    in >> state >> pid;  // fields 3 and 4: state, ppid
    if (pid == ancestor) return true;
  }
  return false;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    auto text = read_file(dir + "/" + e->d_name + "/children");
    if (!text) continue;
    std::istringstream in(*text);
    pid_t c;
    while (in >> c) out.push_back(c);
  }
  ::closedir(d);
  return out;
}

int reap_adopted() {
  int n = 0;
  for (pid_t c : children_of(::getpid())) {
    auto st = process_state(c);
    if (st && *st == 'Z') {
      int status;
      if (::waitpid(c, &status, WNOHANG) == c) ++n;
    }
  }
  return n;
}

std::vector<std::string> cgroups_of(const std::string& id) {
  std::vector<std::string> out;
  for (const char* ctrl : {"memory", "cpu", "pids", "unified", ""}) {
    std::string dir = std::string("/sys/fs/cgroup/") + ctrl + (*ctrl ? "/" : "") + "cubby/" + id;
    if (::access(dir.c_str(), F_OK) == 0) out.push_back(dir);
  }
  return out;
}

std::set<pid_t> descendant_cubby_processes() {
  std::set<pid_t> all = cubby_processes(), out;
  std::vector<pid_t> todo = {::getpid()};
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    for (pid_t c : children_of(p)) {
      if (all.count(c)) out.insert(c);
      todo.push_back(c);
    }
  }
  return out;
}

int count_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the DIR's own fd
}

// ---------------------------------------------------------------------------

namespace {
std::string g_image_cache;  // an image store imported once, copied per test
}

void BoxTest::SetUp() {
  if (vm()) {
    if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0) GTEST_SKIP() << "qemu-system-x86_64 is not installed";
    if (::access((bin_dir() + "/../assets/initramfs.cpio.gz").c_str(), R_OK) != 0)
      GTEST_SKIP() << "vm assets not built";
    // KVM where the probe says it can boot the guest; TCG elsewhere, which
    // includes a /dev/kvm that opens but boots nothing (PVM, as here).
    if (!hypervisor::probe("").usable) ::setenv("CUBBY_VM_ACCEL", "tcg", 1);
  }
  static bool subreaper = (::prctl(PR_SET_CHILD_SUBREAPER, 1), true);
  (void)subreaper;
  reap_adopted();
  fds_before_ = count_fds();
  char tmpl[] = "/tmp/cubby-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  home_ = tmpl;
  ASSERT_TRUE(mkdir_p(home_ + "/boxes"));
  box_watch_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  ASSERT_GE(::inotify_add_watch(box_watch_.get(), (home_ + "/boxes").c_str(), IN_CREATE), 0);
  auto r = cubby({"import", CUBBY_TEST_ROOTFS, image_});
  ASSERT_EQ(r.rc, 0) << r.err;
  // `--isolation auto` notes its choice on stderr once per home; tests that
  // compare stderr exactly start past that (Sandbox.AutoIsolationSaysWhichOnce
  // checks the note itself).
  ASSERT_TRUE(write_file(home_ + "/.isolation-auto-noted", ""));
}

std::set<std::string> BoxTest::boxes_seen() {
  std::set<std::string> ids;
  alignas(inotify_event) char buf[65536];
  ssize_t n;
  while (box_watch_ && (n = ::read(box_watch_.get(), buf, sizeof buf)) > 0) {
    for (ssize_t off = 0; off < n;) {
      auto* e = reinterpret_cast<inotify_event*>(buf + off);
      if (e->len) ids.insert(e->name);
      off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
    }
  }
  return ids;
}

void BoxTest::TearDown() {
  if (home_.empty()) return;  // skipped in SetUp
  // Remove whatever the test left, then prove nothing leaked.
  auto left = cubby({"ls", "-a", "-q"});
  std::istringstream in(left.out);
  std::string id;
  while (in >> id) {
    auto r = cubby({"rm", "-f", id});
    EXPECT_EQ(r.rc, 0) << r.err;
  }
  reap_adopted();
  for (pid_t p : descendant_cubby_processes()) {
    auto argv = process_argv(p);
    std::string a = argv && !argv->empty() ? (*argv)[0] + " " + (argv->size() > 1 ? (*argv)[1] : "") : "?";
    ADD_FAILURE() << "leaked cubby process " << p << ": " << a;
  }
  for (const auto& id : boxes_seen()) {
    for (pid_t p : processes_mentioning(id)) ADD_FAILURE() << "process " << p << " still carries box id " << id;
    for (const auto& cg : cgroups_of(id)) ADD_FAILURE() << "cgroup leaked: " << cg;
  }
  box_watch_.reset();
  // No process (a QEMU, say: its command line names the home's disks) may
  // outlive its box. One still exiting gets a bounded wait on its pidfd.
  for (pid_t p : processes_mentioning(home_))
    if (auto fd = sys::pidfd_open(p)) (void)sys::wait_readable(fd->get(), std::chrono::seconds(5));
  for (pid_t p : processes_mentioning(home_)) {
    auto argv = process_argv(p);
    ADD_FAILURE() << "process " << p << " (" << (argv && !argv->empty() ? (*argv)[0] : "?")
                  << ") outlived its box: it still names " << home_;
  }
  if (vm()) ::unsetenv("CUBBY_VM_ACCEL");
  for (pid_t c : children_of(::getpid())) {
    auto st = process_state(c);
    if (st && *st == 'Z') ADD_FAILURE() << "zombie child " << c;
  }
  auto mounts = read_file("/proc/self/mountinfo").value_or("");
  EXPECT_EQ(mounts.find(home_), std::string::npos) << "a mount under " << home_ << " leaked";
  EXPECT_EQ(count_fds(), fds_before_) << "fds leaked in the test process";
  DIR* d = ::opendir((home_ + "/boxes").c_str());
  if (d) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ADD_FAILURE() << "box directory left behind: " << e->d_name;
    ::closedir(d);
  }
  (void)remove_tree(home_);
}

std::vector<std::string> BoxTest::box_args(const std::string& verb, const std::vector<std::string>& args) const {
  std::vector<std::string> a = {verb, "--isolation", isolation_, "--network", "none"};
  a.insert(a.end(), args.begin(), args.end());
  return a;
}

std::string BoxTest::run_detached(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"-d", image_};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = cubby(box_args("run", args));
  EXPECT_EQ(r.rc, 0) << r.err;
  std::string id = r.out;
  while (!id.empty() && (id.back() == '\n')) id.pop_back();
  EXPECT_EQ(id.size(), 32u) << "run -d printed: " << r.out;
  return id;
}

pid_t BoxTest::shim_pid(const std::string& box) {
  auto r = cubby({"inspect", box});
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j["pid"].is_number()) return -1;
  return j["pid"].get<pid_t>();
}

std::string BoxTest::status(const std::string& box) {
  auto r = cubby({"inspect", box});
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (j.is_discarded()) return "?";
  return j["status"].get<std::string>();
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string k;
  long v = -1;
  while (f >> k) {
    if (k == "VmRSS:") {
      f >> v;
      break;
    }
  }
  return v;
}

}  // namespace cubby::test
