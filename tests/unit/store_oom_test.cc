// The store's oom_killed field (schema 2): recorded when a run ends, cleared
// when the next starts, and added to a schema-1 store by its migration.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include "base/fs.h"
#include "store/store.h"

namespace cubby::store {
namespace {

class StoreOom : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cubby-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    home_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(home_); }
  std::string home_;
};

TEST_F(StoreOom, RecordedAtTheEndClearedAtTheStart) {
  auto db = Store::open(home_);
  ASSERT_TRUE(db) << db.error().message();
  EXPECT_EQ(db->schema_version(), 2);
  BoxRecord b;
  b.id = std::string(32, 'b');
  b.name = "b";
  b.image = "busybox";
  b.isolation = "sandbox";
  b.config = nlohmann::json::object();
  ASSERT_TRUE(db->insert_box(b));
  EXPECT_FALSE(db->get_box(b.id).value()->oom_killed);
  ASSERT_TRUE(db->mark_running(b.id, 100, 1).value());
  ASSERT_TRUE(db->mark_ended(b.id, 100, 1, BoxStatus::kExited, 137, "", true).value());
  EXPECT_TRUE(db->get_box(b.id).value()->oom_killed);
  EXPECT_TRUE(db->list_boxes().value().at(0).oom_killed);
  ASSERT_TRUE(db->mark_running(b.id, 200, 2).value());
  EXPECT_FALSE(db->get_box(b.id).value()->oom_killed) << "a new run starts with no OOM kill";
  ASSERT_TRUE(db->mark_ended(b.id, 200, 2, BoxStatus::kExited, 0, "").value());
  EXPECT_FALSE(db->get_box(b.id).value()->oom_killed);
}

TEST_F(StoreOom, SchemaOneStoreIsMigrated) {
  // A store as cubby wrote it before this field (schema 1), with a box in it.
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

  auto db = Store::open(home_);
  ASSERT_TRUE(db) << db.error().message();
  EXPECT_EQ(db->schema_version(), 2);
  auto old = db->get_box(std::string(32, 'c')).value();
  ASSERT_TRUE(old);
  EXPECT_EQ(old->name, "old");
  EXPECT_EQ(old->exit_code, 137);
  EXPECT_FALSE(old->oom_killed);
}

}  // namespace
}  // namespace cubby::store
