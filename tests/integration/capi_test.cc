// The C API (include/cubby/cubby.h) end to end: the FFI surface the Python
// SDK and other languages will use.
#include "cubby/cubby.h"

#include <nlohmann/json.hpp>

#include "harness.h"

namespace cubby::test {
namespace {

class CApi : public BoxTest {};

TEST_F(CApi, RunExecListStopRemove) {
  cubby_runtime* rt = nullptr;
  char* err = nullptr;
  ASSERT_EQ(cubby_open(home_.c_str(), bin_dir().c_str(), &rt, &err), 0) << (err ? err : "");
  const char* argv[] = {"sleep", "1000000", nullptr};
  char* id = nullptr;
  ASSERT_EQ(cubby_run_detached(rt, "busybox", argv, &id, &err), 0) << (err ? err : "");
  ASSERT_EQ(std::string(id).size(), 32u);

  const char* cmd[] = {"sh", "-c", "echo out; echo err >&2; exit 3", nullptr};
  int code = -1;
  char *out = nullptr, *errout = nullptr;
  ASSERT_EQ(cubby_exec(rt, id, cmd, &code, &out, &errout, &err), 0) << (err ? err : "");
  EXPECT_EQ(code, 3);
  EXPECT_STREQ(out, "out\n");
  EXPECT_STREQ(errout, "err\n");
  cubby_free(out);
  cubby_free(errout);

  char* list = nullptr;
  ASSERT_EQ(cubby_list_json(rt, &list, &err), 0);
  auto j = nlohmann::json::parse(list);
  cubby_free(list);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["status"], "running");

  EXPECT_EQ(cubby_remove(rt, id, 0, &err), -1) << "a running box is not removed without force";
  ASSERT_NE(err, nullptr);
  EXPECT_NE(std::string(err).find("running"), std::string::npos);
  cubby_free(err);
  err = nullptr;
  EXPECT_EQ(cubby_stop(rt, id, 1, &err), 0) << (err ? err : "");
  EXPECT_EQ(cubby_remove(rt, id, 0, &err), 0) << (err ? err : "");
  EXPECT_EQ(cubby_remove(rt, "nosuchbox", 1, &err), -1);
  cubby_free(err);
  cubby_free(id);
  cubby_close(rt);
}

}  // namespace
}  // namespace cubby::test
