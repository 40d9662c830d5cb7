// -v SRC:DST[:ro] on the sandbox backend, with real boxes: a bind is shared
// both ways while the box runs, :ro refuses writes with EROFS, a file can be
// bound, and an image's symlinks cannot steer a volume out of the box's
// rootfs (the runc CVE-2021-30465 class). Bad values, and a file volume on
// the vm backend, are refused at create with one line; nothing is created.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

class Volumes : public BoxTest {
 protected:
  void SetUp() override {
    BoxTest::SetUp();
    char t[] = "/tmp/cubby-vol-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    host_ = t;
    ASSERT_TRUE(mkdir_p(host_ + "/dir"));
    ASSERT_TRUE(write_file(host_ + "/dir/from_host", "hello\n", 0644));
    ASSERT_TRUE(write_file(host_ + "/file", "v1\n"));
    // A box's root is a stranger on the host (its own range of host ids,
    // runtime/idmap.h): as under Docker's userns-remap, what it may read
    // or write must say so (files the host writes are 0644 for it to read).
    // The ro checks then show EROFS, not a permission error.
    ASSERT_EQ(::chmod((host_ + "/dir").c_str(), 0777), 0);
    ASSERT_EQ(::chmod((host_ + "/file").c_str(), 0666), 0);
  }
  void TearDown() override {
    if (!host_.empty()) (void)remove_tree(host_);
    BoxTest::TearDown();
  }

  // `run --rm` in a sandbox with the given -v values.
  CmdResult run_with(const std::vector<std::string>& volumes, const std::string& script,
                     const std::string& image = "") {
    std::vector<std::string> args = {"run", "--rm", "--isolation", "sandbox", "--network", "none"};
    for (const auto& v : volumes) args.insert(args.end(), {"-v", v});
    args.insert(args.end(), {image.empty() ? image_ : image, "sh", "-c", script});
    return cubby(args);
  }

  // The test image plus the given "./PATH TARGET" symlinks, imported as `ref`.
  void import_with_symlinks(const std::string& ref, const std::vector<std::pair<std::string, std::string>>& links) {
    std::string py =
        "import sys, tarfile\n"
        "src = tarfile.open(sys.argv[1]); out = tarfile.open(sys.argv[2], 'w', format=tarfile.PAX_FORMAT)\n"
        "for m in src.getmembers():\n"
        "    out.addfile(m, src.extractfile(m) if m.isfile() else None)\n"
        "for a in sys.argv[3:]:\n"
        "    name, target = a.split('=', 1)\n"
        "    ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = target; out.addfile(ti)\n"
        "out.close()\n";
    ASSERT_TRUE(write_file(host_ + "/mk.py", py));
    std::string tar = host_ + "/evil.tar";
    std::string cmd = "python3 '" + host_ + "/mk.py' '" + CUBBY_TEST_ROOTFS + "' '" + tar + "'";
    for (const auto& [name, target] : links) cmd += " './" + name + "=" + target + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto r = cubby({"import", tar, ref});
    ASSERT_EQ(r.rc, 0) << r.err;
  }

  // A bad -v must give one line naming it, exit 125 and create nothing.
  void expect_refused(const std::vector<std::string>& args, const std::vector<std::string>& needles) {
    auto r = cubby(args);
    std::string what;
    for (const auto& a : args) what += " " + a;
    EXPECT_EQ(r.rc, 125) << what << "\n" << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << what << "\n" << r.err;
    for (const auto& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(r.out, "") << what;
    EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "") << what << " created a box";
  }

  std::string host_;
};

TEST_F(Volumes, ReadWriteBindIsSharedBothWaysWhileTheBoxRuns) {
  auto r = cubby({"run", "-d", "--isolation", "sandbox", "--network", "none", "-v", host_ + "/dir:/data", image_,
                  "sleep", "1000000"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string id = r.out.substr(0, 32);
  auto cat = cubby({"exec", id, "cat", "/data/from_host"});
  EXPECT_EQ(cat.rc, 0) << cat.err;
  EXPECT_EQ(cat.out, "hello\n");
  // A host change after the start is seen at once (a bind, not a copy).
  ASSERT_TRUE(write_file(host_ + "/dir/later", "later\n", 0644));
  EXPECT_EQ(cubby({"exec", id, "cat", "/data/later"}).out, "later\n");
  auto w = cubby({"exec", id, "sh", "-c", "echo from-box > /data/from_box && mkdir /data/sub"});
  EXPECT_EQ(w.rc, 0) << w.err;
  EXPECT_EQ(read_file(host_ + "/dir/from_box").value_or("?"), "from-box\n");
  struct stat st;
  EXPECT_EQ(::stat((host_ + "/dir/sub").c_str(), &st), 0);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  // The host's data outlives the box.
  EXPECT_EQ(read_file(host_ + "/dir/from_host").value_or("?"), "hello\n");
}

TEST_F(Volumes, ReadOnlyBindRefusesWritesWithErofs) {
  auto r = run_with({host_ + "/dir:/data:ro"}, "cat /data/from_host; echo x > /data/new");
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out, "hello\n");
  EXPECT_NE(r.err.find("Read-only file system"), std::string::npos) << r.err;
  EXPECT_EQ(::access((host_ + "/dir/new").c_str(), F_OK), -1);
  // Also for a file already there, and with :rw spelled out it writes.
  auto trunc = run_with({host_ + "/dir:/data:ro"}, "echo x > /data/from_host");
  EXPECT_NE(trunc.rc, 0);
  EXPECT_EQ(read_file(host_ + "/dir/from_host").value_or("?"), "hello\n");
  auto rw = run_with({host_ + "/dir:/data:rw"}, "echo y > /data/new");
  EXPECT_EQ(rw.rc, 0) << rw.err;
  EXPECT_EQ(read_file(host_ + "/dir/new").value_or("?"), "y\n");
}

TEST_F(Volumes, FileBindGetsAFileMountPoint) {
  // /etc/app does not exist in the image: its directory is made in the box.
  auto r = run_with({host_ + "/file:/etc/app/conf"}, "cat /etc/app/conf; echo v2 > /etc/app/conf");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "v1\n");
  EXPECT_EQ(read_file(host_ + "/file").value_or("?"), "v2\n");
  auto ro = run_with({host_ + "/file:/etc/passwd:ro"}, "cat /etc/passwd; echo x >> /etc/passwd");
  EXPECT_NE(ro.rc, 0);
  EXPECT_EQ(ro.out, "v2\n");
  EXPECT_EQ(read_file(host_ + "/file").value_or("?"), "v2\n");
}

TEST_F(Volumes, ImageSymlinksCannotSteerAVolumeOutOfTheRootfs) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs python3";
  ASSERT_NE(::access("/etc/cubby-vol-marker", F_OK), 0);
  import_with_symlinks("evil:1", {{"data", "/etc"}, {"up", "../../../../../../etc"}, {"p", "/proc/sys"}, {"dangling", "/cubby-vol-nowhere/x"}});
  ASSERT_TRUE(write_file(host_ + "/dir/cubby-vol-marker", "inside\n", 0644));
  // Each DST reaches the box's own /etc (the symlink, or ".." clamped at the
  // box's root), so the volume shows there and at the path given.
  for (const std::string dst : {"/data", "/up", "/data/../../etc"}) {
    auto r = run_with({host_ + "/dir:" + dst},
                      "cat /etc/cubby-vol-marker && cat " + dst + "/cubby-vol-marker && echo w > /etc/cubby-vol-written",
                      "evil:1");
    EXPECT_EQ(r.rc, 0) << dst << ": " << r.err;
    EXPECT_EQ(r.out, "inside\ninside\n") << dst;
    EXPECT_EQ(read_file(host_ + "/dir/cubby-vol-written").value_or("?"), "w\n") << dst;
    (void)::unlink((host_ + "/dir/cubby-vol-written").c_str());
  }
  EXPECT_NE(::access("/etc/cubby-vol-marker", F_OK), 0) << "a volume landed on the host's /etc";
  EXPECT_NE(::access("/etc/cubby-vol-written", F_OK), 0) << "a box wrote into the host's /etc";
  // A symlink into /proc: the start fails, and says why.
  auto p = run_with({host_ + "/dir:/p"}, "true", "evil:1");
  EXPECT_EQ(p.rc, 125);
  EXPECT_NE(p.err.find("/proc or /sys"), std::string::npos) << p.err;
  // A symlink to nowhere is not followed out of the box either.
  auto d = run_with({host_ + "/dir:/dangling"}, "true", "evil:1");
  EXPECT_EQ(d.rc, 125);
  EXPECT_NE(d.err.find("dangling symlink"), std::string::npos) << d.err;
  EXPECT_NE(::access("/cubby-vol-nowhere", F_OK), 0);
}

// The first cause wins: an agent that fails its set-up (here a -v onto a
// dangling image symlink) is what `run` prints and `inspect` records, with
// --network default too, where slirp4netns used to fail on the namespace
// that went with the agent ("slirp4netns did not become ready").
TEST_F(Volumes, AgentSetUpErrorIsTheReportedCauseInBothNetworkModes) {
  if (std::system("command -v python3 >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs python3";
  if (::access("/usr/bin/slirp4netns", X_OK) != 0) GTEST_SKIP() << "slirp4netns is not installed";
  import_with_symlinks("evil:1", {{"dangling", "/cubby-vol-nowhere/x"}});
  for (const std::string net : {"none", "default"}) {
    SCOPED_TRACE(net);
    auto r = cubby({"run", "--name", "d-" + net, "--isolation", "sandbox", "--network", net, "-v",
                    host_ + "/dir:/dangling", "evil:1", "true"});
    EXPECT_EQ(r.rc, 125);
    ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
    EXPECT_NE(r.err.find("/dangling is a dangling symlink in the image"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("slirp4netns"), std::string::npos) << r.err;
    auto j = json::parse(cubby({"inspect", "d-" + net}).out);
    EXPECT_EQ(j["status"], "exited");
    EXPECT_EQ(j["exit_code"], 125);
    EXPECT_NE(j["error"].get<std::string>().find("/dangling is a dangling symlink in the image"), std::string::npos)
        << j["error"];
    EXPECT_EQ(cubby({"rm", "d-" + net}).rc, 0);
  }
}

TEST_F(Volumes, InspectShowsCanonicalMounts) {
  ASSERT_EQ(::symlink((host_ + "/dir").c_str(), (host_ + "/link").c_str()), 0);
  auto c = cubby({"create", "--isolation", "sandbox", "--network", "none", "-v", host_ + "/link/:/data/./x/:ro", "-v",
                  host_ + "/file:/f", image_, "true"});
  ASSERT_EQ(c.rc, 0) << c.err;
  std::string id = c.out.substr(0, 32);
  auto i = cubby({"inspect", id});
  ASSERT_EQ(i.rc, 0) << i.err;
  auto j = json::parse(i.out);
  ASSERT_EQ(j["config"]["mounts"].size(), 2u) << i.out;
  EXPECT_EQ(j["config"]["mounts"][0], json({{"source", host_ + "/dir"}, {"target", "/data/x"}, {"read_only", true}}));
  EXPECT_EQ(j["mounts"], json({host_ + "/dir:/data/x:ro", host_ + "/file:/f:rw"}));
  // Started later, the box still gets them.
  EXPECT_EQ(cubby({"start", id}).rc, 0);
  EXPECT_EQ(cubby({"wait", id}).out, "0\n");
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Volumes, BadValuesAreRefusedAtCreate) {
  const std::string d = host_ + "/dir";
  for (const char* verb : {"create", "run"}) {
    auto v = [&](const std::string& val) {
      return std::vector<std::string>{verb, "--isolation", "sandbox", "--network", "none", "-v", val, image_, "true"};
    };
    expect_refused(v("relative/dir:/data"), {"relative/dir:/data", "absolute"});
    expect_refused(v("./dir:/data"), {"absolute"});
    expect_refused(v(host_ + "/missing:/data"), {host_ + "/missing", "does not exist"});
    expect_refused(v("myvolume:/data"), {"myvolume", "named volumes are not supported"});
    expect_refused(v(d + ":/data:z"), {"unknown option \"z\""});
    expect_refused(v(d + ":/"), {"\"/\""});
    expect_refused(v(d + ":data"), {"box path must be absolute"});
    expect_refused(v(d), {"anonymous volumes"});
  }
  EXPECT_EQ(::access((host_ + "/missing").c_str(), F_OK), -1) << "a missing host path was created";
}

TEST_F(Volumes, VmBackendRefusesFileVolumesBeforeBooting) {
  // virtio-fs shares directories (vm_volumes_test.cc has the rest). Refused
  // in create, before any QEMU, kernel or KVM check: runs anywhere.
  for (const char* verb : {"create", "run"})
    expect_refused({verb, "--isolation", "vm", "-v", host_ + "/file:/f", image_, "true"},
                   {::geteuid() == 0 ? "shares directories only" : "needs root"});
}

}  // namespace
}  // namespace cubby::test
