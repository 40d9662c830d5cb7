#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "store/store.h"

namespace cubby::store {
namespace {

class StoreCas : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cubby-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    home_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(home_); }

  Store open() {
    auto db = Store::open(home_);
    EXPECT_TRUE(db) << db.error().message();
    return std::move(*db);
  }
  BoxRecord box(char c, nlohmann::json config = nlohmann::json::object()) {
    BoxRecord b;
    b.id = std::string(32, c);
    b.name = std::string("box-") + c;
    b.image = "busybox";
    b.isolation = "sandbox";
    b.config = std::move(config);
    return b;
  }
  bool exists(const std::string& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
  }

  std::string home_;
};

TEST_F(StoreCas, MarkRunningWinsOnceUntilTheBoxEnds) {
  Store db = open();
  BoxRecord b = box('a');
  ASSERT_TRUE(db.insert_box(b));
  EXPECT_TRUE(db.mark_running(b.id, 100, 1).value());
  EXPECT_FALSE(db.mark_running(b.id, 200, 2).value()) << "a second shim took over a running box";
  auto r = db.get_box(b.id).value();
  EXPECT_EQ(r->shim_pid, 100);
  EXPECT_TRUE(db.mark_ended(b.id, 100, 1, BoxStatus::kExited, 0, "").value());
  EXPECT_TRUE(db.mark_running(b.id, 300, 3).value()) << "an ended box can be started again";
}

// `rm x` reads the record (created) and, before it writes, `start x` marks it
// running on another connection (another process). The removal must lose,
// and win once the box has ended; nothing starts a box being removed.
TEST_F(StoreCas, RemovalLosesToAStartAfterItsRead) {
  Store rm = open(), starter = open();
  BoxRecord b = box('b');
  ASSERT_TRUE(rm.insert_box(b));
  ASSERT_TRUE(mkdir_p(home_ + "/boxes/" + b.id + "/upper"));
  BoxRecord seen = rm.get_box(b.id).value().value();
  ASSERT_EQ(seen.status, BoxStatus::kCreated);

  ASSERT_TRUE(starter.mark_running(b.id, 100, 1).value());
  EXPECT_FALSE(rm.mark_removing(seen).value()) << "rm removed a box a start had just made running";
  auto now = rm.get_box(b.id).value();
  ASSERT_TRUE(now);
  EXPECT_EQ(now->status, BoxStatus::kRunning);
  EXPECT_EQ(now->shim_pid, 100);
  EXPECT_FALSE(rm.mark_removing(*now).value()) << "a running record is never marked removing";
  auto refused = rm.finish_removal(b.id, home_ + "/boxes/" + b.id);
  ASSERT_FALSE(refused) << "finish_removal deleted a running box";
  EXPECT_EQ(refused.error().kind(), ErrorKind::kConflict);
  EXPECT_TRUE(exists(home_ + "/boxes/" + b.id + "/upper")) << "the running box lost its directory";

  // Ended, then started and ended again by others: the ended state rm saw
  // has the same shape (no shim), so removing it is right; a stale running
  // view is not.
  ASSERT_TRUE(starter.mark_ended(b.id, 100, 1, BoxStatus::kStopped, 0, "").value());
  BoxRecord stale_running = *now;
  now = rm.get_box(b.id).value();
  EXPECT_FALSE(rm.mark_removing(stale_running).value());
  ASSERT_TRUE(rm.mark_removing(*now).value());
  EXPECT_FALSE(starter.mark_running(b.id, 200, 2).value()) << "a box being removed was started";
  EXPECT_TRUE(rm.mark_removing(rm.get_box(b.id).value().value()).value()) << "a second rm may finish the removal";
  ASSERT_TRUE(rm.finish_removal(b.id, home_ + "/boxes/" + b.id));
  EXPECT_FALSE(rm.get_box(b.id).value());
  EXPECT_FALSE(exists(home_ + "/boxes/" + b.id));
  EXPECT_TRUE(starter.finish_removal(b.id, home_ + "/boxes/" + b.id)) << "the racing finisher's delete is a no-op";
}

// A --rm box's shim (or the reconciler of its dead shim) moves it from
// running straight to removing, with its exit code, in one compare-and-set.
TEST_F(StoreCas, EndingARemovedOnExitBoxClaimsItsRemoval) {
  Store db = open();
  BoxRecord b = box('c');
  ASSERT_TRUE(db.insert_box(b));
  ASSERT_TRUE(db.mark_running(b.id, 100, 1).value());
  EXPECT_FALSE(db.mark_ended(b.id, 101, 1, BoxStatus::kRemoving, 0, "").value()) << "another shim's end won";
  ASSERT_TRUE(db.mark_ended(b.id, 100, 1, BoxStatus::kRemoving, 137, "").value());
  auto r = db.get_box(b.id).value();
  EXPECT_EQ(r->status, BoxStatus::kRemoving);
  EXPECT_EQ(r->exit_code, 137);
  EXPECT_FALSE(db.mark_running(b.id, 200, 2).value());
}

// The directory goes before the record: when removing the directory fails
// (as a crash there would stop it), the record is still there, `removing`,
// for `ls` to show and `rm` to finish.
TEST_F(StoreCas, RemovalDeletesTheDirectoryBeforeTheRecord) {
  Store db = open();
  BoxRecord b = box('d');
  ASSERT_TRUE(db.insert_box(b));
  std::string dir = home_ + "/boxes/" + b.id;
  ASSERT_TRUE(mkdir_p(dir + "/upper"));
  ASSERT_TRUE(write_file(dir + "/upper/stuck", "x"));
  UniqueFd f(::open((dir + "/upper/stuck").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(f);
  int flags = 0;
  ASSERT_EQ(::ioctl(f.get(), FS_IOC_GETFLAGS, &flags), 0);
  int stuck = flags | FS_IMMUTABLE_FL;  // unlink fails with EPERM, even for root
  if (::ioctl(f.get(), FS_IOC_SETFLAGS, &stuck) != 0) GTEST_SKIP() << "no immutable files on this filesystem";

  ASSERT_TRUE(db.mark_removing(db.get_box(b.id).value().value()).value());
  auto r = db.finish_removal(b.id, dir);
  EXPECT_FALSE(r) << "the directory could not be removed, yet finish_removal succeeded";
  auto left = db.get_box(b.id).value();
  ASSERT_TRUE(left) << "the record went before the directory: nothing can find " << dir << " now";
  EXPECT_EQ(left->status, BoxStatus::kRemoving);

  ASSERT_EQ(::ioctl(f.get(), FS_IOC_SETFLAGS, &flags), 0);
  f.reset();
  ASSERT_TRUE(db.finish_removal(b.id, dir));
  EXPECT_FALSE(db.get_box(b.id).value());
  EXPECT_FALSE(exists(dir));
}

// Image GC keeps every layer any record names, in any state.
TEST_F(StoreCas, LayersInUseCoverEveryRecord) {
  EXPECT_EQ(Store::layers_in_use(home_ + "/none").value(), std::vector<std::string>{});
  EXPECT_FALSE(exists(home_ + "/none/cubby.db")) << "asking created a database";
  Store db = open();
  ASSERT_TRUE(db.insert_box(box('e', {{"layers", {"/h/images/layers/l1", "/h/images/layers/l2"}}})));
  BoxRecord r = box('f', {{"layers", {"/h/images/layers/l2", "/h/images/layers/l3"}}});
  ASSERT_TRUE(db.insert_box(r));
  ASSERT_TRUE(db.mark_running(r.id, 100, 1).value());
  BoxRecord x = box('0', {{"layers", {"/h/images/layers/l4"}}});
  ASSERT_TRUE(db.insert_box(x));
  ASSERT_TRUE(db.mark_removing(db.get_box(x.id).value().value()).value());
  ASSERT_TRUE(db.insert_box(box('1')));  // no layers key
  auto got = Store::layers_in_use(home_).value();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"/h/images/layers/l1", "/h/images/layers/l2", "/h/images/layers/l3",
                                           "/h/images/layers/l4"}));
}

// Snapshots (schema 4): recorded, found by name or id prefix, removed; the
// layers of their box's spec stay in use while they exist (a box made from
// one boots from them again).
TEST_F(StoreCas, SnapshotsAreFoundAndHoldTheirLayers) {
  Store db = open();
  store::SnapshotRecord s;
  s.id = std::string(31, 'a') + "1";
  s.name = "snap";
  s.box_id = std::string(32, 'b');
  s.box_name = "web";
  s.image = "busybox";
  s.image_id = "x";
  s.created_at = "t";
  s.config = {{"layers", {"/h/images/layers/s1"}}};
  s.size = 42;
  ASSERT_TRUE(db.insert_snapshot(s));
  EXPECT_EQ(db.insert_snapshot(s).error().kind(), ErrorKind::kConflict);
  EXPECT_EQ(Store::layers_in_use(home_).value(), std::vector<std::string>{"/h/images/layers/s1"});
  ASSERT_EQ(db.match_snapshots("snap").value().size(), 1u);
  ASSERT_EQ(db.match_snapshots("aaaa").value().size(), 1u);
  EXPECT_EQ(db.match_snapshots("aaaa").value()[0].size, 42);
  EXPECT_EQ(db.list_snapshots().value().at(0).box_name, "web");
  ASSERT_TRUE(db.remove_snapshot(s.id));
  EXPECT_TRUE(db.list_snapshots().value().empty());
  EXPECT_TRUE(Store::layers_in_use(home_).value().empty());
}

// oom_killed (schema 2): recorded by the end of a run, cleared by the next start.
TEST_F(StoreCas, OomKilledIsRecordedAtTheEndAndClearedAtTheStart) {
  Store db = open();
  EXPECT_EQ(db.schema_version(), Store::kSchemaVersion);
  BoxRecord b = box('b');
  ASSERT_TRUE(db.insert_box(b));
  EXPECT_FALSE(db.get_box(b.id).value()->oom_killed);
  ASSERT_TRUE(db.mark_running(b.id, 100, 1).value());
  ASSERT_TRUE(db.mark_ended(b.id, 100, 1, BoxStatus::kExited, 137, "", true).value());
  EXPECT_TRUE(db.get_box(b.id).value()->oom_killed);
  EXPECT_TRUE(db.list_boxes().value().at(0).oom_killed);
  ASSERT_TRUE(db.mark_running(b.id, 200, 2).value());
  EXPECT_FALSE(db.get_box(b.id).value()->oom_killed) << "a new run starts with no OOM kill";
  ASSERT_TRUE(db.mark_ended(b.id, 200, 2, BoxStatus::kExited, 0, "").value());
  EXPECT_FALSE(db.get_box(b.id).value()->oom_killed);
}

// A store as cubby wrote it before oom_killed (schema 1), with a box in it.
TEST_F(StoreCas, SchemaOneStoreIsMigrated) {
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open((home_ + "/cubby.db").c_str(), &raw), SQLITE_OK);
  const char* v1 = R"sql(
    CREATE TABLE boxes (
      id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image TEXT NOT NULL, image_id TEXT NOT NULL,
      status TEXT NOT NULL, exit_code INTEGER, isolation TEXT NOT NULL, created_at TEXT NOT NULL,
      started_at TEXT NOT NULL DEFAULT '', finished_at TEXT NOT NULL DEFAULT '', shim_pid INTEGER,
      shim_start INTEGER, config TEXT NOT NULL, error TEXT NOT NULL DEFAULT '');
    CREATE INDEX boxes_status ON boxes(status);
    INSERT INTO boxes(id,name,image,image_id,status,exit_code,isolation,created_at,config)
      VALUES('cccccccccccccccccccccccccccccccc','old','busybox','sha256:x','exited',137,'sandbox','t','{}');
    PRAGMA user_version=1;
  )sql";
  ASSERT_EQ(sqlite3_exec(raw, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(raw);
  sqlite3_close(raw);

  Store db = open();
  EXPECT_EQ(db.schema_version(), Store::kSchemaVersion);
  auto old = db.get_box(std::string(32, 'c')).value();
  ASSERT_TRUE(old);
  EXPECT_EQ(old->name, "old");
  EXPECT_EQ(old->exit_code, 137);
  EXPECT_FALSE(old->oom_killed);
}

}  // namespace
}  // namespace cubby::store
