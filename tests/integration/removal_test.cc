// Removing boxes and images without taking what a box still uses, and
// without leaving what nothing can find again (issue 10, items 5-7):
//  - image garbage collection keeps every layer a box record names, in any
//    state (rmi, a retagging import; the pull case is in registry_test.cc);
//  - removal is a compare-and-set (the rm/start race itself is tested on the
//    store, store_cas_test.cc) that deletes the directory before the record,
//    so a failure or a kill -9 at any point leaves a record rm finishes;
//  - a box directory without a record is swept by the next CLI call.
// Sandbox boxes: none of this depends on the backend.
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "harness.h"
#include "stand_in_shim.h"
#include "store/store.h"

namespace cubby::test {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

class Removal : public BoxTest {
 protected:
  size_t count_entries(const std::string& dir) {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) ++n;
    return n;
  }
  size_t layers() { return count_entries(home_ + "/images/layers"); }
  bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
  }
  json ls() {
    auto r = cubby({"ls", "-a", "--format", "json"});
    EXPECT_EQ(r.rc, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }
  std::string id_of(const std::string& box) {
    auto j = json::parse(cubby({"inspect", box}).out, nullptr, false);
    return j.is_object() && j["id"].is_string() ? j["id"].get<std::string>() : "";
  }
  std::string image_id() {
    auto j = json::parse(cubby({"images", "--format", "json"}).out, nullptr, false);
    return j.is_array() && j.size() == 1 ? j[0]["id"].get<std::string>() : "";
  }
  // A box that ran and exited: its directory has the files a real one has.
  std::string exited_box(const std::string& name) {
    auto r = cubby(box_args("run", {"--name", name, image_, "true"}));
    EXPECT_EQ(r.rc, 0) << r.err;
    return id_of(name);
  }
  std::optional<store::BoxRecord> record(const std::string& id) {
    auto db = store::Store::open(home_);  // the store alone: no reconcile, no sweep
    EXPECT_TRUE(db) << db.error().message();
    if (!db) return std::nullopt;
    auto b = db->get_box(id);
    EXPECT_TRUE(b) << b.error().message();
    return b ? *b : std::nullopt;
  }
};

// An immutable file (FS_IMMUTABLE_FL: unlink fails with EPERM, even for
// root) that makes removing its directory fail, as a crash there would
// stop it; released on destruction.
class StuckFile {
 public:
  explicit StuckFile(const std::string& path) {
    if (!write_file(path, "x")) return;
    fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd_ || ::ioctl(fd_.get(), FS_IOC_GETFLAGS, &flags_) != 0) return;
    int stuck = flags_ | FS_IMMUTABLE_FL;
    ok_ = ::ioctl(fd_.get(), FS_IOC_SETFLAGS, &stuck) == 0;
  }
  ~StuckFile() { release(); }
  bool ok() const { return ok_; }
  void release() {
    if (ok_) (void)::ioctl(fd_.get(), FS_IOC_SETFLAGS, &flags_);
    ok_ = false;
    fd_.reset();
  }

 private:
  UniqueFd fd_;
  int flags_ = 0;
  bool ok_ = false;
};

// The issue's repro: the same tarball imported again is a new image id (its
// config's "created" differs) with the same layer; `rmi` then removes the
// only image that names the layer, while a running and a created box use it.
TEST_F(Removal, RmiAfterReimportKeepsTheLayerBoxesUse) {
  std::string r = run_detached();
  auto c = cubby(box_args("create", {"--name", "c", image_, "cat", "/etc/group"}));
  ASSERT_EQ(c.rc, 0) << c.err;
  ASSERT_EQ(layers(), 1u);
  std::string first = image_id();
  // Until the clock's next second, so the config (and the id) differ: a
  // bounded wait for the clock itself, not for an event.
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  timespec next{now.tv_sec + 1, 0};
  while (::clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &next, nullptr) == EINTR) {
  }
  ASSERT_EQ(cubby({"import", CUBBY_TEST_ROOTFS, image_}).rc, 0);
  ASSERT_NE(image_id(), first) << "the re-import kept the image id";

  auto rmi = cubby({"rmi", image_});
  EXPECT_EQ(rmi.rc, 0) << rmi.err;
  EXPECT_EQ(layers(), 1u) << "rmi removed the layer a running and a created box use";
  auto e = cubby({"exec", r, "ls", "/bin/busybox"});
  EXPECT_EQ(e.rc, 0) << e.err;
  auto s = cubby({"start", "c"});
  EXPECT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(cubby({"wait", "c"}).out, "0\n");
  EXPECT_NE(cubby({"logs", "c"}).out.find("root:x:0:"), std::string::npos);

  // The boxes go, and with them the last use of the layer.
  EXPECT_EQ(cubby({"rm", "-f", r, "c"}).rc, 0);
  EXPECT_EQ(layers(), 0u) << "the layer outlived every image and box";
  EXPECT_EQ(count_entries(home_ + "/images/blobs/sha256"), 0u);
}

// Importing another tarball under the box's image reference untags the
// image the box was created from: its layer must stay while the box does.
TEST_F(Removal, RetaggingImportKeepsTheOldLayerBoxesUse) {
  std::string r = run_detached();
  std::string other = home_ + "/other";
  ASSERT_TRUE(mkdir_p(other + "/etc"));
  ASSERT_TRUE(write_file(other + "/etc/other", "other\n"));
  ASSERT_EQ(std::system(("tar -C " + other + " -cf " + other + ".tar .").c_str()), 0);
  auto imp = cubby({"import", other + ".tar", image_});
  ASSERT_EQ(imp.rc, 0) << imp.err;
  EXPECT_EQ(layers(), 2u) << "the retag removed the layer of a running box";
  auto e = cubby({"exec", r, "ls", "/bin/busybox"});
  EXPECT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(cubby({"rmi", image_}).rc, 0);
  EXPECT_EQ(layers(), 1u) << "only the new image's layer was free to go";
  e = cubby({"exec", r, "ls", "/bin/busybox"});
  EXPECT_EQ(e.rc, 0) << e.err;
  EXPECT_EQ(cubby({"rm", "-f", r}).rc, 0);
  EXPECT_EQ(layers(), 0u);
}

// Removing the directory fails half-way (as a crash there would stop it):
// the record is still there, `removing`, for ls to show and rm to finish,
// and nothing starts the box meanwhile.
TEST_F(Removal, FailedRemovalLeavesARecordRmFinishes) {
  std::string id = exited_box("k");
  ASSERT_EQ(id.size(), 32u);
  std::string dir = home_ + "/boxes/" + id;
  StuckFile stuck(dir + "/stuck");
  if (!stuck.ok()) GTEST_SKIP() << "no immutable files on this filesystem";
  auto r = cubby({"rm", "k"});
  EXPECT_EQ(r.rc, 125);
  EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
  json boxes = ls();
  ASSERT_EQ(boxes.size(), 1u) << "the record went before the directory: " << dir << " is an orphan";
  EXPECT_EQ(boxes[0]["status"], "removing");
  auto s = cubby({"start", "k"});
  EXPECT_NE(s.rc, 0);
  EXPECT_NE(s.err.find("being removed"), std::string::npos) << s.err;
  stuck.release();
  r = cubby({"rm", "k"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(ls().size(), 0u);
  EXPECT_FALSE(exists(dir));
}

// kill -9 of `rm -f` at every write it makes (each SQLite write, each
// unlink/rmdir of the box's tree), through strace's fault injection: right
// after the kill, before any other cubby call could sweep, a box directory
// never exists without its record; the next `rm -f` finishes the job.
TEST_F(Removal, KilledRmLeavesARecordOrNothing) {
  const std::string strace = "/usr/bin/strace";
  ASSERT_EQ(::access(strace.c_str(), X_OK), 0) << "strace is missing: run scripts/install-deps.sh";
  for (const std::string sc : {"pwrite64", "unlink", "unlinkat", "rmdir"}) {
    int kills = 0;
    for (int n = 1;; ++n) {
      ASSERT_LT(n, 100) << sc << ": rm -f never finished";
      std::string id = exited_box("k");
      ASSERT_EQ(id.size(), 32u);
      SpawnSpec s;
      s.argv = {strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=" + sc, "-e",
                "inject=" + sc + ":signal=KILL:when=" + std::to_string(n), cubby_path(), "--home", home_, "rm", "-f", "k"};
      s.fds = {-1, -1, -1};
      auto child = spawn(s);
      ASSERT_TRUE(child) << child.error().message();
      auto st = child->wait();
      ASSERT_TRUE(st);
      bool finished = !st->signaled && st->code == 0;
      ASSERT_TRUE(finished || (st->signaled && st->signal == SIGKILL)) << sc << " #" << n << ": rm -f failed";
      std::string dir = home_ + "/boxes/" + id;
      auto rec = record(id);
      if (exists(dir)) {
        EXPECT_TRUE(rec) << "rm -f killed at " << sc << " #" << n << " left " << dir << " without a record";
      }
      if (finished) {
        EXPECT_FALSE(rec) << "rm -f succeeded and left the record";
      }
      auto again = cubby({"rm", "-f", "k"});
      if (rec) {
        EXPECT_EQ(again.rc, 0) << again.err;
      }
      EXPECT_FALSE(exists(dir)) << sc << " #" << n;
      EXPECT_EQ(ls().size(), 0u) << sc << " #" << n;
      if (finished) break;  // every write of a whole rm was a kill point once
      ++kills;
    }
    EXPECT_GT(kills, 0) << "rm -f makes no " << sc << " call: not a kill point";
  }
}

// A box directory with no record (an older cubby's crash, or a `start` that
// made the directory again after an rm removed the box) is swept by the next
// CLI call; directories of records, and of a live shim, are left alone.
TEST_F(Removal, OrphanedBoxDirectoriesAreSweptAtOpen) {
  std::string running = run_detached();
  auto c = cubby(box_args("create", {"--name", "c", image_, "true"}));
  ASSERT_EQ(c.rc, 0) << c.err;
  std::string created = id_of("c");
  std::string boxes = home_ + "/boxes/";
  std::string orphan = std::string(32, 'e');
  ASSERT_TRUE(mkdir_p(boxes + orphan + "/upper/etc"));
  ASSERT_TRUE(write_file(boxes + orphan + "/box.log", "old"));
  ASSERT_TRUE(mkdir_p(boxes + "not-a-box"));  // not an id: not cubby's to judge

  // An orphan whose shim still runs (a stand-in with a shim's argv) keeps
  // its directory: the box lives on without its record.
  std::string live = std::string(32, 'd');
  ASSERT_TRUE(mkdir_p(boxes + live));
  StandInShim shim(live);
  ASSERT_TRUE(shim.ok());

  auto r = cubby({"ls"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_FALSE(exists(boxes + orphan)) << "the orphaned directory was not swept";
  EXPECT_TRUE(exists(boxes + running));
  EXPECT_TRUE(exists(boxes + created));
  EXPECT_TRUE(exists(boxes + "not-a-box"));
  EXPECT_TRUE(exists(boxes + live)) << "the sweep took a live shim's directory";
  EXPECT_EQ(cubby({"exec", running, "true"}).rc, 0);
  EXPECT_EQ(cubby({"start", "c"}).rc, 0);

  shim.stop();  // its directory is an orphan now
  EXPECT_EQ(cubby({"ls"}).rc, 0);
  EXPECT_FALSE(exists(boxes + live));
  ::rmdir((boxes + "not-a-box").c_str());
}

}  // namespace
}  // namespace cubby::test
