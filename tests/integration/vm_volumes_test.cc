// -v SRC:DST[:ro] on the vm backend: virtio-fs, one virtiofsd per volume
// owned by the box's shim (shim/virtiofs.h). A host write is seen in the
// box and a box write on the host while it runs; :ro refuses writes; a file
// the box writes is owned on the host by the guest uid that wrote it (no id
// mapping: virtiofsd 7.2 has none); a kill -9 of the shim or of QEMU leaves
// no virtiofsd; a SRC that is gone by start, or a file SRC, is one clear
// error. Boots under TCG like every vm test (~3 s a box).
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using namespace std::chrono_literals;

// As the shim finds it (shim/virtiofs.cc).
std::string virtiofsd_path() {
  const char* e = std::getenv("CUBBY_VIRTIOFSD");
  return e && *e ? e : "/usr/lib/qemu/virtiofsd";
}

// This test's live virtiofsd processes (by their executable): those below
// this process. It is a child subreaper, so a shim and its virtiofsd stay
// below it even orphaned; a virtiofsd of a test running beside it under
// `ctest -j` is below that test's process instead.
std::set<pid_t> virtiofsd_processes() {
  std::set<pid_t> out;
  std::error_code ec;
  const std::string want = virtiofsd_path();
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec2;
    auto exe = std::filesystem::read_symlink(e.path() / "exe", ec2);
    if (ec2 || exe != want) continue;
    if (pid_t p = std::stoi(name); descends_from(p, ::getpid())) out.insert(p);
  }
  return out;
}

// Waits (pidfd, with a backstop) until pid has exited; reaps it if it was
// adopted by this subreaper. False: still running after the backstop.
bool exits_within(pid_t pid, std::chrono::milliseconds backstop) {
  UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!fd) return true;  // already gone
  auto r = sys::wait_readable(fd.get(), backstop);
  reap_adopted();
  return r && *r;
}

class VmVolumes : public BoxTest {
 protected:
  VmVolumes() { isolation_ = "vm"; }
  void SetUp() override {
    BoxTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    if (::geteuid() != 0) GTEST_SKIP() << "-v on the vm backend needs root (virtiofsd)";
    if (::access(virtiofsd_path().c_str(), X_OK) != 0) GTEST_SKIP() << "no virtiofsd (qemu-system-common)";
    char t[] = "/tmp/cubby-vmvol-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    host_ = t;
    ASSERT_TRUE(mkdir_p(host_ + "/dir"));
    ASSERT_EQ(::chmod((host_ + "/dir").c_str(), 0777), 0);
    ASSERT_TRUE(write_file(host_ + "/dir/from_host", "hello\n", 0644));
    before_ = virtiofsd_processes();
  }
  void TearDown() override {
    // Every virtiofsd this test started is gone with its box.
    for (pid_t p : virtiofsd_processes())
      if (!before_.count(p)) ADD_FAILURE() << "virtiofsd " << p << " outlived its box";
    if (!host_.empty()) (void)remove_tree(host_);
    BoxTest::TearDown();
  }
  // The virtiofsd children of a box's shim.
  std::vector<pid_t> daemons_of(const std::string& id) {
    std::vector<pid_t> out;
    auto all = virtiofsd_processes();
    for (pid_t c : children_of(shim_pid(id)))
      if (all.count(c)) out.push_back(c);
    return out;
  }
  // `run -d` of a sleeper with host_/dir on /data.
  std::string run_with_volume() {
    auto r = cubby(box_args("run", {"-d", "-v", host_ + "/dir:/data", image_, "sleep", "1000000"}));
    EXPECT_EQ(r.rc, 0) << r.err;
    std::string id = r.out.substr(0, 32);
    return id;
  }
  std::string host_;
  std::set<pid_t> before_;
};

TEST_F(VmVolumes, ReadWriteVolumeIsSharedBothWaysAndBoxFilesHaveTheGuestOwner) {
  std::string id = run_with_volume();
  EXPECT_EQ(daemons_of(id).size(), 1u) << "one virtiofsd per volume, the shim's child";
  auto cat = cubby({"exec", id, "cat", "/data/from_host"});
  EXPECT_EQ(cat.rc, 0) << cat.err;
  EXPECT_EQ(cat.out, "hello\n");
  // A host write after the start is seen (shared, not copied).
  ASSERT_TRUE(write_file(host_ + "/dir/later", "later\n", 0644));
  EXPECT_EQ(cubby({"exec", id, "cat", "/data/later"}).out, "later\n");
  auto w = cubby({"exec", id, "sh", "-c", "echo from-box > /data/from_box && mkdir /data/sub"});
  EXPECT_EQ(w.rc, 0) << w.err;
  EXPECT_EQ(read_file(host_ + "/dir/from_box").value_or("?"), "from-box\n");
  struct stat st;
  ASSERT_EQ(::stat((host_ + "/dir/sub").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  // Owners: the guest's uid as it is (guest root is host root here).
  ASSERT_EQ(::stat((host_ + "/dir/from_box").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  auto u = cubby({"exec", "-u", "1234:1234", id, "sh", "-c", "echo u > /data/by_1234"});
  EXPECT_EQ(u.rc, 0) << u.err;
  ASSERT_EQ(::stat((host_ + "/dir/by_1234").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1234u);
  EXPECT_EQ(st.st_gid, 1234u);
  // No device nodes through the volume (virtiofsd has no CAP_MKNOD).
  auto mk = cubby({"exec", id, "mknod", "/data/null", "c", "1", "3"});
  EXPECT_NE(mk.rc, 0);
  EXPECT_NE(::access((host_ + "/dir/null").c_str(), F_OK), 0) << "a device node landed on the host";
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  EXPECT_EQ(read_file(host_ + "/dir/from_host").value_or("?"), "hello\n");
}

TEST_F(VmVolumes, ReadOnlyVolumeRefusesWrites) {
  auto r = cubby(box_args("run", {"--rm", "-v", host_ + "/dir:/data:ro", "-v", host_ + ":/rw", image_, "sh", "-c",
                                  "cat /data/from_host; echo x > /data/new; echo $? > /rw/status; "
                                  "echo x > /data/from_host; echo $? >> /rw/status"}));
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(host_ + "/status").value_or("?"), "1\n1\n");
  EXPECT_NE(::access((host_ + "/dir/new").c_str(), F_OK), 0);
  EXPECT_EQ(read_file(host_ + "/dir/from_host").value_or("?"), "hello\n");
}

TEST_F(VmVolumes, KillOfTheShimOrOfQemuLeavesNoVirtiofsd) {
  for (const char* victim : {"shim", "qemu"}) {
    SCOPED_TRACE(victim);
    std::string id = run_with_volume();
    auto daemons = daemons_of(id);
    ASSERT_EQ(daemons.size(), 1u);
    pid_t shim = shim_pid(id);
    pid_t target = shim;
    if (std::string(victim) == "qemu") {
      auto qemu = processes_mentioning(home_ + "/boxes/" + id);
      ASSERT_EQ(qemu.size(), 1u);
      target = qemu[0];
    }
    ASSERT_EQ(::kill(target, SIGKILL), 0);
    EXPECT_TRUE(exits_within(daemons[0], 10s)) << "virtiofsd " << daemons[0] << " survived the " << victim;
    EXPECT_TRUE(exits_within(shim, 10s));
    // No socket left in the box directory.
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(home_ + "/boxes/" + id, ec))
      EXPECT_EQ(e.path().filename().string().find("virtiofs"), std::string::npos) << e.path();
    EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  }
}

TEST_F(VmVolumes, MissingOrFileSourceIsOneClearError) {
  // Gone between create and start: the start names it.
  ASSERT_TRUE(mkdir_p(host_ + "/gone"));
  auto c = cubby(box_args("create", {"--name", "g", "-v", host_ + "/gone:/data", image_, "true"}));
  ASSERT_EQ(c.rc, 0) << c.err;
  ASSERT_EQ(::rmdir((host_ + "/gone").c_str()), 0);
  auto s = cubby({"start", "g"});
  EXPECT_EQ(s.rc, 125) << s.err;
  EXPECT_EQ(s.err_lines().size(), 1u) << s.err;
  EXPECT_NE(s.err.find(host_ + "/gone"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("No such file or directory"), std::string::npos) << s.err;
  EXPECT_EQ(cubby({"rm", "-f", "g"}).rc, 0);
  // A file: refused at create, nothing created.
  auto f = cubby(box_args("run", {"--rm", "-v", host_ + "/dir/from_host:/f", image_, "true"}));
  EXPECT_EQ(f.rc, 125);
  EXPECT_EQ(f.err_lines().size(), 1u) << f.err;
  EXPECT_NE(f.err.find("shares directories only"), std::string::npos) << f.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
}

}  // namespace
}  // namespace cubby::test
