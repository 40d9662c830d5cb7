// Box root is not host root (runtime/idmap.h, shim/box_mounts.h): as root, a
// sandbox box's ids are a range of host ids of its own. What a box writes on
// a -v volume is owned by that range on the host, not by root; its
// /proc/self/uid_map is that range, not the identity; concurrent boxes get
// disjoint ranges; the image's files keep their owners inside the box
// (idmapped layers, no shifted copy); copy-up, whiteouts, stop/start, exec -u
// and cp work in the range; `--userns host` keeps the identity map.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fcntl.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "harness.h"
#include "runtime/idmap.h"

namespace cubby::test {
namespace {

using nlohmann::json;

class Userns : public BoxTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "id ranges are for boxes run as root";
    BoxTest::SetUp();
    char t[] = "/tmp/cubby-userns-XXXXXX";
    ASSERT_NE(::mkdtemp(t), nullptr);
    vol_ = t;
    // The box's root is a stranger here: the volume says it may write.
    ASSERT_EQ(::chmod(vol_.c_str(), 0777), 0);
  }
  void TearDown() override {
    if (!vol_.empty()) (void)remove_tree(vol_);
    if (::geteuid() == 0) BoxTest::TearDown();
  }

  std::string run_d(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"run", "-d", "--isolation", "sandbox", "--network", "none"};
    args.insert(args.end(), extra.begin(), extra.end());
    if (std::find(extra.begin(), extra.end(), image_) == extra.end())
      args.insert(args.end(), {image_, "sleep", "1000000"});
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out.substr(0, 32);
  }
  json inspect(const std::string& box) {
    auto r = cubby({"inspect", box});
    EXPECT_EQ(r.rc, 0) << r.err;
    auto j = json::parse(r.out, nullptr, false);
    return j.is_array() && !j.empty() ? j[0] : j;
  }
  std::optional<IdRange> ids_of(const std::string& box) {
    json c = inspect(box).value("config", json::object());
    if (!c.contains("ids")) return std::nullopt;
    return c["ids"].get<IdRange>();
  }
  std::string exec(const std::string& box, const std::vector<std::string>& argv, const std::string& user = "") {
    std::vector<std::string> args = {"exec"};
    if (!user.empty()) args.insert(args.end(), {"-u", user});
    args.push_back(box);
    args.insert(args.end(), argv.begin(), argv.end());
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 0) << r.err;
    return r.out;
  }
  struct stat lstat_of(const std::string& p) {
    struct stat st{};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return st;
  }
  std::string upper(const std::string& box) { return home_ + "/boxes/" + box + "/upper"; }

  std::string vol_;
};

// The first line of a uid_map: inside-id, outside-id, count.
std::array<uint64_t, 3> map_line(const std::string& text) {
  std::istringstream in(text);
  std::array<uint64_t, 3> f{};
  in >> f[0] >> f[1] >> f[2];
  return f;
}

TEST_F(Userns, FilesABoxMakesOnAVolumeAreOwnedByItsRangeNotByRoot) {
  std::string id = run_d({"-v", vol_ + ":/data"});
  exec(id, {"sh", "-c", "echo r > /data/by-root && mkdir /data/dir"});
  exec(id, {"touch", "/data/by-user"}, "1000:1000");
  auto root_file = lstat_of(vol_ + "/by-root");
  EXPECT_NE(root_file.st_uid, 0u) << "a box's root wrote a host file as host root";
  EXPECT_NE(root_file.st_gid, 0u);
  // Inside, the same files are the box's root's and user's.
  EXPECT_EQ(exec(id, {"stat", "-c", "%u:%g", "/data/by-root", "/data/by-user"}), "0:0\n1000:1000\n");
  // A host file owned by host root is not the box's root's: not writable.
  ASSERT_TRUE(write_file(vol_ + "/host-owned", "h\n", 0644));
  auto w = cubby({"exec", id, "sh", "-c", "echo x >> /data/host-owned"});
  EXPECT_NE(w.rc, 0) << "the box's root wrote a file of host root's";
  EXPECT_EQ(read_file(vol_ + "/host-owned").value_or("?"), "h\n");
  // On the host they belong to the range the box's record holds.
  auto ids = ids_of(id);
  EXPECT_TRUE(ids) << inspect(id).dump();
  if (ids) {
    EXPECT_EQ(root_file.st_uid, ids->uid);
    EXPECT_EQ(root_file.st_gid, ids->gid);
    EXPECT_EQ(lstat_of(vol_ + "/dir").st_uid, ids->uid);
    EXPECT_EQ(lstat_of(vol_ + "/by-user").st_uid, ids->uid + 1000);
    EXPECT_EQ(lstat_of(vol_ + "/by-user").st_gid, ids->gid + 1000);
  }
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Userns, TheBoxUidMapIsItsRangeNotTheIdentity) {
  std::string id = run_d({});
  auto u = map_line(exec(id, {"cat", "/proc/self/uid_map"}));
  auto g = map_line(exec(id, {"cat", "/proc/self/gid_map"}));
  EXPECT_NE(u[1], 0u) << "box root is host root";
  EXPECT_GE(u[1], 65536u);
  EXPECT_EQ(u[2], kIdsPerBox);
  EXPECT_NE(g[1], 0u) << "box gid 0 is host gid 0";
  // The box's processes, seen from the host, run as the range (the agent
  // is PID 1: the shim's only child).
  auto kids = children_of(shim_pid(id));
  ASSERT_EQ(kids.size(), 1u);
  struct stat st{};
  ASSERT_EQ(::stat(("/proc/" + std::to_string(kids[0])).c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, u[1]);
  // And the agent holds none of the host root's supplementary groups (they
  // would show as the overflow gid, and still be host gid 0).
  EXPECT_EQ(exec(id, {"sh", "-c", "grep '^Groups:' /proc/1/status | tr -d ' \\t'"}), "Groups:\n");
  auto ids = ids_of(id);
  EXPECT_TRUE(ids);
  if (ids) {
    EXPECT_EQ(u, (std::array<uint64_t, 3>{0, ids->uid, ids->count}));
    EXPECT_EQ(g, (std::array<uint64_t, 3>{0, ids->gid, ids->count}));
  }
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Userns, ConcurrentBoxesGetDisjointRanges) {
  constexpr int kBoxes = 6;
  std::vector<ChildProcess> runs;
  std::vector<std::string> outs;
  for (int i = 0; i < kBoxes; ++i) {
    std::string out = vol_ + "/id" + std::to_string(i);
    UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd);
    runs.push_back(spawn_cubby(home_, {"run", "-d", "--isolation", "sandbox", "--network", "none", image_, "sleep",
                                       "1000000"},
                               fd.get()));
    outs.push_back(out);
  }
  for (auto& r : runs) EXPECT_EQ(r.wait().value().code, 0);
  std::vector<std::pair<std::string, std::array<uint64_t, 3>>> maps;
  for (const auto& o : outs) {
    std::string id = read_file(o).value_or("").substr(0, 32);
    ASSERT_EQ(id.size(), 32u);
    auto m = map_line(exec(id, {"cat", "/proc/self/uid_map"}));
    auto ids = ids_of(id);
    EXPECT_TRUE(ids && m[1] == ids->uid) << id;
    maps.emplace_back(id, m);
  }
  for (size_t i = 0; i < maps.size(); ++i)
    for (size_t j = i + 1; j < maps.size(); ++j) {
      const auto& a = maps[i].second;
      const auto& b = maps[j].second;
      EXPECT_TRUE(a[1] + a[2] <= b[1] || b[1] + b[2] <= a[1])
          << maps[i].first << " [" << a[1] << "+" << a[2] << ") and " << maps[j].first << " [" << b[1] << "+"
          << b[2] << ") overlap";
    }
  for (const auto& [id, m] : maps) EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Userns, ImageFilesKeepTheirOwnersInsideTheBox) {
  std::string id = run_d({});
  EXPECT_EQ(exec(id, {"stat", "-c", "%u:%g", "/etc/passwd", "/home/user", "/bin/busybox"}), "0:0\n1000:1000\n0:0\n");
  // (/proc's and /sys's roots are the kernel's, owned by host root, and
  // show as the overflow id in any box whose root is not host root.)
  EXPECT_EQ(exec(id, {"sh", "-c", "ls -lnd / /tmp /dev /etc/* /bin /home/* /root | grep -c ' 65534 ' || true"}), "0\n")
      << "an image file shows as the overflow id";
  // The layers are shared, not shifted copies: on the host they keep the
  // image's own owners.
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(home_ + "/images/layers")) {
    struct stat st{};
    if (::lstat((e.path().string() + "/home/user").c_str(), &st) == 0) {
      EXPECT_EQ(st.st_uid, 1000u);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 1);
  auto ids = ids_of(id);
  ASSERT_TRUE(ids);
  // Copy-up as the image's user: the copied dir and the new file are that
  // user's, in the box's range on the host.
  exec(id, {"touch", "/home/user/new"}, "1000");
  EXPECT_EQ(exec(id, {"stat", "-c", "%u:%g", "/home/user/new"}), "1000:1000\n");
  EXPECT_EQ(lstat_of(upper(id) + "/home/user").st_uid, ids->uid + 1000);
  EXPECT_EQ(lstat_of(upper(id) + "/home/user/new").st_uid, ids->uid + 1000);
  // A changed root-owned file is copied up as the box's root.
  exec(id, {"sh", "-c", "echo extra:x:2000:2000::/:/bin/sh >> /etc/passwd"});
  EXPECT_EQ(lstat_of(upper(id) + "/etc/passwd").st_uid, ids->uid);
  EXPECT_EQ(exec(id, {"stat", "-c", "%u", "/etc/passwd"}), "0\n");
  // A whiteout: the file is gone in the box, a 0/0 device in the upper.
  exec(id, {"rm", "/etc/group"});
  EXPECT_NE(cubby({"exec", id, "cat", "/etc/group"}).rc, 0);
  auto wh = lstat_of(upper(id) + "/etc/group");
  EXPECT_TRUE(S_ISCHR(wh.st_mode) && wh.st_rdev == makedev(0, 0));
  exec(id, {"sh", "-c", "echo back > /etc/group"});
  EXPECT_EQ(exec(id, {"cat", "/etc/group"}), "back\n");
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Userns, TheRangeIsTheBoxesFromCreateToRm) {
  std::string id = run_d({"--name", "keep"});
  auto ids = ids_of(id);
  ASSERT_TRUE(ids);
  exec(id, {"sh", "-c", "echo kept > /root/f && chown 1000 /root/f"});
  ASSERT_EQ(cubby({"stop", "-t", "0", id}).rc, 0);
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  EXPECT_EQ(ids_of(id), ids) << "a restarted box got another range: its upper's owners would be wrong";
  EXPECT_EQ(exec(id, {"stat", "-c", "%u", "/root/f"}), "1000\n");
  EXPECT_EQ(exec(id, {"sh", "-c", "cat /root/f && echo more >> /root/f && cat /proc/self/uid_map"}).substr(0, 5),
            "kept\n");
  // A second box gets another range; once the first is removed, its range
  // is free again (it belongs to the record).
  std::string other = run_d({});
  auto other_ids = ids_of(other);
  ASSERT_TRUE(other_ids);
  EXPECT_NE(other_ids->uid, ids->uid);
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  std::string third = run_d({});
  EXPECT_EQ(ids_of(third), ids);
  EXPECT_EQ(cubby({"rm", "-f", other, third}).rc, 0);
}

TEST_F(Userns, CpAndExecWorkInTheRange) {
  std::string id = run_d({});
  auto ids = ids_of(id);
  ASSERT_TRUE(ids);
  ASSERT_TRUE(write_file(vol_ + "/in", "into the box\n", 0600));
  ASSERT_EQ(cubby({"cp", vol_ + "/in", id + ":/root/in"}).rc, 0);
  EXPECT_EQ(exec(id, {"stat", "-c", "%u:%g %a", "/root/in"}), "0:0 600\n");
  EXPECT_EQ(lstat_of(upper(id) + "/root/in").st_uid, ids->uid);
  exec(id, {"sh", "-c", "echo out > /home/user/out && chown 1000:1000 /home/user/out"});
  ASSERT_EQ(cubby({"cp", id + ":/home/user/out", vol_ + "/out"}).rc, 0);
  EXPECT_EQ(read_file(vol_ + "/out").value_or("?"), "out\n");
  EXPECT_EQ(lstat_of(vol_ + "/out").st_uid, 0u) << "cp out of a box gives the file to the caller";
  ASSERT_EQ(cubby({"cp", "-a", id + ":/home/user/out", vol_ + "/out-a"}).rc, 0);
  EXPECT_EQ(lstat_of(vol_ + "/out-a").st_uid, 1000u) << "-a keeps the box's owner (box uid 1000)";
  EXPECT_EQ(exec(id, {"id", "-u"}, "1000"), "1000\n");
  EXPECT_EQ(exec(id, {"id", "-u"}, "65534"), "65534\n");
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
}

TEST_F(Userns, UsernsHostKeepsTheIdentityMap) {
  std::string id = run_d({"--userns", "host", "-v", vol_ + ":/data"});
  EXPECT_FALSE(ids_of(id));
  EXPECT_EQ(inspect(id)["config"].value("userns", ""), "host");
  EXPECT_EQ(map_line(exec(id, {"cat", "/proc/self/uid_map"})), (std::array<uint64_t, 3>{0, 0, 4294967295u}));
  exec(id, {"touch", "/data/f"});
  EXPECT_EQ(lstat_of(vol_ + "/f").st_uid, 0u);
  EXPECT_EQ(exec(id, {"stat", "-c", "%u:%g", "/etc/passwd", "/home/user"}), "0:0\n1000:1000\n");
  EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  // The default is auto, spelled out or not; nonsense is one line at create.
  std::string a = run_d({"--userns", "auto"});
  EXPECT_TRUE(ids_of(a));
  EXPECT_EQ(inspect(a)["config"].value("userns", ""), "auto");
  EXPECT_EQ(cubby({"rm", "-f", a}).rc, 0);
  auto bad = cubby({"create", "--userns", "keep-id", image_, "true"});
  EXPECT_EQ(bad.rc, 125);
  EXPECT_EQ(bad.err_lines().size(), 1u) << bad.err;
  EXPECT_NE(bad.err.find("--userns"), std::string::npos) << bad.err;
  auto vm = cubby({"create", "--isolation", "vm", "--userns", "host", image_, "true"});
  EXPECT_EQ(vm.rc, 125);
  EXPECT_NE(vm.err.find("--userns host"), std::string::npos) << vm.err;
  EXPECT_EQ(cubby({"ls", "-a", "-q"}).out, "");
}

// Rootless (the CLI run as another user, its own home): the box's root is
// the caller, nothing else is mapped, no range is claimed, and
// --userns host is refused. Its user namespace denies setgroups, so every
// exec keeps its groups instead of failing "set groups".
TEST_F(Userns, RootlessMapsRootToTheCallerOnly) {
  if (std::system("command -v setpriv >/dev/null 2>&1") != 0) GTEST_SKIP() << "needs setpriv";
  const std::string home = vol_ + "/rootless";
  ASSERT_TRUE(mkdir_p(home, 0700));
  ASSERT_EQ(::chown(home.c_str(), 65534, 65534), 0);
  auto as_nobody = [&](const std::string& args) {
    std::string out = vol_ + "/rootless.out";
    std::string cmd = "cd / && setpriv --reuid=65534 --regid=65534 --clear-groups " + cubby_path() + " --home " +
                      home + " " + args + " >" + out + " 2>&1";
    int rc = std::system(cmd.c_str());
    return std::pair{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_file(out).value_or("")};
  };
  auto [irc, iout] = as_nobody(std::string("import ") + CUBBY_TEST_ROOTFS + " busybox");
  ASSERT_EQ(irc, 0) << iout;
  auto [rc, out] = as_nobody("run --rm --isolation sandbox --network none busybox sh -c "
                             "'cat /proc/self/uid_map /proc/self/gid_map; id -u'");
  EXPECT_EQ(rc, 0) << out;
  std::istringstream in(out);
  std::array<uint64_t, 3> u{}, g{};
  uint64_t me = 1;
  in >> u[0] >> u[1] >> u[2] >> g[0] >> g[1] >> g[2] >> me;
  EXPECT_EQ(u, (std::array<uint64_t, 3>{0, 65534, 1})) << out;
  EXPECT_EQ(g, (std::array<uint64_t, 3>{0, 65534, 1})) << out;
  EXPECT_EQ(me, 0u) << out;
  auto [hrc, hout] = as_nobody("create --isolation sandbox --userns host busybox true");
  EXPECT_EQ(hrc, 125) << hout;
  EXPECT_NE(hout.find("--userns host needs root"), std::string::npos) << hout;
  // rm -rf of the home as root below (the box's files are nobody's).
}

}  // namespace
}  // namespace cubby::test
