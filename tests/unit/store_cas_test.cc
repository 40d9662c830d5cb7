#include <gtest/gtest.h>
#include <stdlib.h>

#include "base/fs.h"
#include "store/store.h"

namespace cubby::store {
namespace {

TEST(StoreCas, MarkRunningWinsOnceUntilTheBoxEnds) {
  char tmpl[] = "/tmp/cubby-store-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  auto db = Store::open(tmpl);
  ASSERT_TRUE(db) << db.error().message();
  BoxRecord b;
  b.id = std::string(32, 'a');
  b.image = "busybox";
  b.isolation = "sandbox";
  b.config = nlohmann::json::object();
  ASSERT_TRUE(db->insert_box(b));
  EXPECT_TRUE(db->mark_running(b.id, 100, 1).value());
  EXPECT_FALSE(db->mark_running(b.id, 200, 2).value()) << "a second shim took over a running box";
  auto r = db->get_box(b.id).value();
  EXPECT_EQ(r->shim_pid, 100);
  EXPECT_TRUE(db->mark_ended(b.id, 100, 1, BoxStatus::kExited, 0, "").value());
  EXPECT_TRUE(db->mark_running(b.id, 300, 3).value()) << "an ended box can be started again";
  (void)remove_tree(tmpl);
}

}  // namespace
}  // namespace cubby::store
