// The id-range pool (runtime/idmap.h) and its claim in the store: /etc/subuid
// parsing, the default pool minus others' subordinate ids, the lowest free
// range, exhaustion, and concurrent creates in separate processes never
// claiming the same range.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <set>

#include "base/fs.h"
#include "runtime/idmap.h"
#include "store/store.h"

namespace cubby {
namespace {

class IdMap : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cubby-idmap-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)remove_tree(dir_); }

  IdPool pool(const std::string& subuid, const std::string& subgid) {
    EXPECT_TRUE(write_file(dir_ + "/subuid", subuid));
    EXPECT_TRUE(write_file(dir_ + "/subgid", subgid));
    auto p = load_id_pool(dir_ + "/subuid", dir_ + "/subgid");
    EXPECT_TRUE(p) << p.error().message();
    return p.value_or(IdPool{});
  }

  std::string dir_;
};

TEST_F(IdMap, ParsesSubidLinesAndSkipsJunk) {
  auto e = parse_subid("alice:100000:65536\n#cubby:1:2\ncubby:200000:131072\nbad\ncubby:x:1\ncubby:5:0\n"
                       "cubby:4294967295:2\n1000:300000:65536",
                       "cubby");
  ASSERT_EQ(e.mine.size(), 1u);
  EXPECT_EQ(e.mine[0].start, 200000u);
  EXPECT_EQ(e.mine[0].count, 131072u);
  ASSERT_EQ(e.others.size(), 2u);
  EXPECT_EQ(e.others[0].start, 100000u);
  EXPECT_EQ(e.others[1].start, 300000u);
}

TEST_F(IdMap, DefaultPoolStartsHighAndSkipsOthersSubordinateIds) {
  // Missing files: the default pool, first range at 0x10000000.
  auto p = load_id_pool(dir_ + "/none", dir_ + "/none");
  ASSERT_TRUE(p);
  auto r = pick_id_range(*p, {});
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (IdRange{0x10000000, 0x10000000, kIdsPerBox}));
  // Someone's subordinate uids cover the first range (and part of the second):
  // both are skipped, for uids and gids alike.
  auto q = pool("bob:268435456:70000\n", "");
  EXPECT_EQ(pick_id_range(q, {}).value(), (IdRange{0x10020000, 0x10020000, kIdsPerBox}));
}

TEST_F(IdMap, LowestFreeRangeAndExhaustion) {
  auto p = pool("cubby:1000000:196608\n", "cubby:2000000:196608\n");  // three ranges
  IdRange a = pick_id_range(p, {}).value();
  EXPECT_EQ(a, (IdRange{1000000, 2000000, kIdsPerBox}));
  IdRange b = pick_id_range(p, {a}).value();
  EXPECT_EQ(b, (IdRange{1065536, 2065536, kIdsPerBox}));
  IdRange c = pick_id_range(p, {a, b}).value();
  EXPECT_EQ(c.uid, 1131072u);
  auto none = pick_id_range(p, {a, b, c});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().kind(), ErrorKind::kConflict);
  EXPECT_NE(none.error().message().find("--userns host"), std::string::npos) << none.error().message();
  // A freed range (its box removed) is the next one handed out.
  EXPECT_EQ(pick_id_range(p, {a, c}).value(), b);
  // A range held from an older pool, overlapping two of ours unaligned,
  // blocks both.
  EXPECT_EQ(pick_id_range(p, {IdRange{1000001, 5000000, kIdsPerBox}}).value().uid, 1131072u);
}

TEST_F(IdMap, CubbyEntryInOnlyOneFileIsRefused) {
  ASSERT_TRUE(write_file(dir_ + "/subuid", "cubby:1000000:65536\n"));
  ASSERT_TRUE(write_file(dir_ + "/subgid", "root:1:2\n"));
  auto p = load_id_pool(dir_ + "/subuid", dir_ + "/subgid");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("subgid"), std::string::npos) << p.error().message();
}

// Concurrent creates are separate processes with separate connections: the
// claim and the insert are one write transaction, so no two get one range.
TEST_F(IdMap, ConcurrentClaimsInTheStoreAreDisjoint) {
  constexpr int kProcs = 8, kEach = 5;
  IdPool p = pool("", "");
  std::vector<pid_t> kids;
  for (int i = 0; i < kProcs; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto db = store::Store::open(dir_);
      if (!db) {
        std::string m = "open: " + db.error().message() + "\n";
        (void)!::write(2, m.data(), m.size());
        ::_exit(2);
      }
      for (int j = 0; j < kEach; ++j) {
        store::BoxRecord b;
        b.id = std::string(30, 'a') + static_cast<char>('a' + i) + static_cast<char>('a' + j);
        b.name = b.id;
        b.image = "busybox";
        b.isolation = "sandbox";
        b.config = nlohmann::json::object();
        auto r = db->insert_box_claiming(b, "ids", [&](const std::vector<nlohmann::json>& taken) -> Result<nlohmann::json> {
          std::vector<IdRange> held;
          for (const auto& t : taken) held.push_back(t.get<IdRange>());
          // Widen the window between reading and inserting.
          ::usleep(2000);
          return nlohmann::json(CUBBY_TRY(pick_id_range(p, held)));
        });
        if (!r) {
          std::string m = "box " + b.id + ": " + r.error().message() + "\n";
          (void)!::write(2, m.data(), m.size());
          ::_exit(3);
        }
      }
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  for (pid_t k : kids) {
    int st = 0;
    ASSERT_EQ(::waitpid(k, &st, 0), k);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  }
  auto db = store::Store::open(dir_);
  ASSERT_TRUE(db);
  auto boxes = db->list_boxes().value();
  ASSERT_EQ(boxes.size(), static_cast<size_t>(kProcs * kEach));
  std::set<uint32_t> uids;
  for (const auto& b : boxes) uids.insert(b.config.at("ids").get<IdRange>().uid);
  EXPECT_EQ(uids.size(), boxes.size()) << "two boxes claimed one range";
  // Lowest first: exactly the first kProcs*kEach ranges of the pool.
  EXPECT_EQ(*uids.rbegin(), 0x10000000u + (kProcs * kEach - 1) * kIdsPerBox);
}

}  // namespace
}  // namespace cubby
