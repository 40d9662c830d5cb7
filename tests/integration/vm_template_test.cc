// vm templates (issue 14, shim/vm_template.h): the first vm box of a key
// boots and leaves a template; the next ones are restores of it, each with
// its own identity; a changed key is not used, a broken template falls back
// to a cold boot, and a shim killed while building one leaves nothing that
// keeps the next start from succeeding. Under TCG here.
#include <dirent.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <set>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using nlohmann::json;

class VmTemplate : public BoxTest {
 protected:
  VmTemplate() { isolation_ = "vm"; }

  std::string id_of(const std::string& box) {
    auto j = json::parse(cubby({"inspect", box}).out, nullptr, false);
    return j.is_object() && j["id"].is_string() ? j["id"].get<std::string>() : "";
  }
  // How the box's VM came up (the shim's <box_dir>/vm.start).
  std::string start_of(const std::string& box) {
    return read_file(home_ + "/boxes/" + id_of(box) + "/vm.start").value_or("(none)");
  }
  std::vector<std::string> template_dirs() {
    std::vector<std::string> out;
    if (DIR* d = ::opendir((home_ + "/vm/templates").c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::string n = e->d_name; n[0] != '.' && n.find(".lock") == std::string::npos) out.push_back(n);
      ::closedir(d);
    }
    return out;
  }
  std::string exec(const std::string& box, const std::string& script) {
    auto r = cubby({"exec", box, "sh", "-c", script});
    EXPECT_EQ(r.rc, 0) << script << ": " << r.err;
    return r.out;
  }
};

TEST_F(VmTemplate, LaterBoxesStartFromTheTemplateEachWithItsOwnIdentity) {
  std::vector<std::string> boxes;
  for (int i = 0; i < 3; ++i) {
    auto r = cubby(box_args("run", {"-d", "--name", "t" + std::to_string(i), image_, "sleep", "1000000"}));
    ASSERT_EQ(r.rc, 0) << r.err;
    boxes.push_back("t" + std::to_string(i));
  }
  EXPECT_EQ(start_of("t0"), "cold, template built\n");
  EXPECT_EQ(start_of("t1"), "template\n");
  EXPECT_EQ(start_of("t2"), "template\n");
  ASSERT_EQ(template_dirs().size(), 1u);

  std::set<std::string> boot_ids, randoms, hostnames;
  for (const auto& b : boxes) {
    boot_ids.insert(exec(b, "cat /proc/sys/kernel/random/boot_id"));
    randoms.insert(exec(b, "head -c 16 /dev/urandom | od -An -tx1"));
    hostnames.insert(exec(b, "hostname"));
    // A restored guest's clock is the host's, not the template's.
    auto guest = std::stoll(exec(b, "date +%s"));
    EXPECT_LT(std::llabs(guest - static_cast<long long>(::time(nullptr))), 60) << b << ": guest time " << guest;
  }
  EXPECT_EQ(boot_ids.size(), 3u) << "two boxes share a boot_id";
  EXPECT_EQ(randoms.size(), 3u) << "two boxes' RNGs gave the same bytes";
  EXPECT_EQ(hostnames.size(), 3u);
  // Each its own disk: what one writes, the others do not see.
  exec("t1", "echo from-t1 > /root/mine && sync");
  EXPECT_EQ(exec("t2", "cat /root/mine 2>/dev/null || echo absent"), "absent\n");
  EXPECT_EQ(exec("t0", "cat /root/mine 2>/dev/null || echo absent"), "absent\n");
  EXPECT_EQ(exec("t1", "cat /root/mine"), "from-t1\n");
  // And it survives the box's stop/start (a restore again).
  ASSERT_EQ(cubby({"stop", "-t", "1", "t1"}).rc, 0);
  ASSERT_EQ(cubby({"start", "t1"}).rc, 0);
  EXPECT_EQ(start_of("t1"), "template\n");
  EXPECT_EQ(exec("t1", "cat /root/mine"), "from-t1\n");
}

// Another memory size is another key: its own template, the first one not
// used. A template that no longer restores is removed, the box boots cold,
// and the next start builds it anew.
TEST_F(VmTemplate, AChangedKeyIsNotUsedAndABrokenTemplateBootsCold) {
  auto run = [&](const std::string& name, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--name", name};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {image_, "echo", "ok"});
    auto r = cubby(box_args("run", args));
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, "ok\n") << r.err;
    return start_of(name);
  };
  EXPECT_EQ(run("a", {}), "cold, template built\n");
  auto first = template_dirs();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(run("b", {"--memory", "320m"}), "cold, template built\n");
  EXPECT_EQ(template_dirs().size(), 2u);
  EXPECT_EQ(run("c", {}), "template\n");

  // Broken: the stream cut short.
  const std::string state = home_ + "/vm/templates/" + first[0] + "/state";
  ASSERT_EQ(::truncate(state.c_str(), 4096), 0);
  EXPECT_EQ(run("d", {}), "cold\n");
  EXPECT_NE(::access(state.c_str(), F_OK), 0) << "the broken template was kept";
  EXPECT_EQ(run("e", {}), "cold, template built\n");
  EXPECT_EQ(run("f", {}), "template\n");
}

// kill -9 of the shim while it builds a template (from the moment it opened
// the template's file until the VM's snapshot): QEMU goes with it, nothing
// is left running, and the next start succeeds and builds the template.
TEST_F(VmTemplate, AShimKilledWhileBuildingLeavesNothingThatBlocksTheNext) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC));
  ASSERT_TRUE(mkdir_p(home_ + "/vm/templates"));
  ASSERT_GE(::inotify_add_watch(in.get(), (home_ + "/vm/templates").c_str(), IN_CREATE), 0);
  ChildProcess run = spawn_cubby(home_, box_args("run", {"-d", "--name", "k", image_, "sleep", "1000000"}));
  // The template's directory appears once the shim began the build.
  alignas(inotify_event) char buf[4096];
  ASSERT_GT(::read(in.get(), buf, sizeof buf), 0);
  pid_t shim = -1;
  for (int i = 0; i < 1000 && shim <= 0; ++i) shim = shim_pid("k");  // recorded before the launch; bounded
  ASSERT_GT(shim, 0);
  ASSERT_EQ(::kill(shim, SIGKILL), 0);
  auto st = run.wait();
  ASSERT_TRUE(st.has_value());
  EXPECT_NE(st->code, 0);
  EXPECT_EQ(cubby({"rm", "-f", "k"}).rc, 0);
  auto r = cubby(box_args("run", {"--name", "next", image_, "echo", "ok"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n");
  EXPECT_EQ(start_of("next"), "cold, template built\n");
}

}  // namespace
}  // namespace cubby::test
