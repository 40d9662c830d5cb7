// config.json decoding (src/oci/spec.h): what runc's default spec gives,
// and every unhonoured key refused by name, never dropped.
#include <gtest/gtest.h>

#include "oci/spec.h"

using namespace cubby::oci;
using nlohmann::json;

namespace {

json base() {
  return json::parse(R"({
    "ociVersion": "1.0.2-dev",
    "process": {"terminal": false, "user": {"uid": 1, "gid": 2, "additionalGids": [3]},
                "args": ["sh", "-c", "true"], "env": ["PATH=/bin"], "cwd": "/",
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}], "noNewPrivileges": true},
    "root": {"path": "rootfs", "readonly": true},
    "hostname": "h",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
               {"destination": "/data", "type": "none", "source": "/srv", "options": ["rbind", "ro"]}],
    "linux": {"namespaces": [{"type": "pid"}, {"type": "uts"}, {"type": "network", "path": "/proc/1/ns/net"}],
              "resources": {"devices": [{"allow": false, "access": "rwm"}], "memory": {"limit": 1048576},
                            "pids": {"limit": 10}, "cpu": {"quota": 50000, "period": 100000}},
              "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"], "cgroupsPath": "/x/y"}
  })");
}

std::string error_of(const json& j) {
  auto r = parse_spec(j.dump(), "/b");
  EXPECT_FALSE(r.has_value());
  return r ? "" : r.error().message();
}

TEST(OciSpec, DecodesTheFieldsItHonours) {
  auto s = parse_spec(base().dump(), "/b");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->root.path, "/b/rootfs");
  EXPECT_TRUE(s->root.readonly);
  EXPECT_EQ(s->process.args, (std::vector<std::string>{"sh", "-c", "true"}));
  EXPECT_EQ(s->process.user.uid, 1u);
  EXPECT_EQ(s->process.user.gid, 2u);
  EXPECT_EQ(s->process.user.additional_gids, (std::vector<uint32_t>{3}));
  ASSERT_TRUE(s->process.capabilities);
  EXPECT_EQ(s->process.capabilities->bounding, (std::vector<int>{5}));  // CAP_KILL
  ASSERT_EQ(s->process.rlimits.size(), 1u);
  EXPECT_EQ(s->process.rlimits[0].soft, 512u);
  EXPECT_TRUE(s->process.no_new_privileges);
  EXPECT_EQ(s->hostname, "h");
  ASSERT_EQ(s->mounts.size(), 2u);
  EXPECT_EQ(s->mounts[1].type, "bind");  // an rbind option makes a bind, whatever the type says
  EXPECT_EQ(s->linux.namespaces[2].path, "/proc/1/ns/net");
  EXPECT_EQ(*s->linux.resources.memory_limit, 1048576);
  EXPECT_EQ(*s->linux.resources.pids_limit, 10);
  EXPECT_EQ(*s->linux.resources.cpu_quota, 50000);
  EXPECT_EQ(s->linux.cgroups_path, "/x/y");
}

TEST(OciSpec, RefusesUnhonouredKeysByName) {
  auto j = base();
  j["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"}, {"syscalls", {{{"names", {"kill"}}}}}};
  EXPECT_EQ(error_of(j), "config.json: linux.seccomp.syscalls[0].action: is required");
  j = base();
  j["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"}, {"listenerPath", "/run/a.sock"}};
  EXPECT_EQ(error_of(j), "config.json: linux.seccomp.listenerPath: a seccomp agent (SCMP_ACT_NOTIFY) is not supported by cubby-runc");
  j = base();
  j["hooks"] = {{"prestart", {{{"path", "bin/true"}}}}};
  EXPECT_EQ(error_of(j), "config.json: hooks.prestart[0].path: must be an absolute path");
  j = base();
  j["hooks"] = {{"poststop", {{{"path", "/bin/true"}, {"timeout", -1}}}}};
  EXPECT_EQ(error_of(j), "config.json: hooks.poststop[0].timeout: must be greater than zero");
  j = base();
  j["linux"]["sysctl"] = {{"net.ipv4.ip_forward", 1}};
  EXPECT_EQ(error_of(j), "config.json: linux.sysctl.net.ipv4.ip_forward: must be a string");
  j = base();
  j["linux"]["resources"]["cpu"]["cpus"] = "0-1";
  EXPECT_EQ(error_of(j), "config.json: linux.resources.cpu.cpus: cpuset limits are not supported by cubby-runc yet");
  j = base();
  j["linux"]["resources"]["memory"]["disableOOMKiller"] = true;
  EXPECT_EQ(error_of(j), "config.json: linux.resources.memory.disableOOMKiller: true is not supported by cubby-runc yet");
  j = base();
  j["process"]["oomScoreAdj"] = 1001;
  EXPECT_EQ(error_of(j), "config.json: process.oomScoreAdj: must be between -1000 and 1000");
  j = base();
  j["linux"]["namespaces"].push_back({{"type", "user"}});
  EXPECT_NE(error_of(j).find("user namespaces"), std::string::npos);
  j = base();
  j["mounts"].push_back({{"destination", "/x"}, {"type", "overlay"}, {"source", "o"}});
  EXPECT_EQ(error_of(j), "config.json: mounts[2].type: mount type \"overlay\" is not supported by cubby-runc yet");
  j = base();
  j["linux"]["resources"]["devices"].push_back({{"allow", true}, {"access", "rwx"}, {"type", "c"}});
  EXPECT_EQ(error_of(j), "config.json: linux.resources.devices[1].access: must be letters of rwm");
  j = base();
  j["linux"]["resources"]["hugepageLimits"] = {{{"pageSize", "2MB"}, {"limit", 1}}};
  EXPECT_EQ(error_of(j), "config.json: linux.resources.hugepageLimits: not supported by cubby-runc yet");
}

// What containerd's and Docker's default specs add (judged in box_options).
TEST(OciSpec, DecodesOomScoreAdjAndDeviceRules) {
  auto j = base();
  j["process"]["oomScoreAdj"] = 0;
  j["linux"]["resources"]["devices"].push_back({{"allow", true}, {"type", "c"}, {"major", 1}, {"minor", 3}, {"access", "rwm"}});
  j["linux"]["resources"]["devices"].push_back({{"allow", true}, {"type", "c"}, {"major", -1}, {"minor", -1}, {"access", "m"}});
  auto s = parse_spec(j.dump(), "/b");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->process.oom_score_adj, 0);
  const auto& d = s->linux.resources.devices;
  ASSERT_EQ(d.size(), 3u);
  EXPECT_FALSE(d[0].allow);
  EXPECT_EQ(d[0].type, "a");
  EXPECT_EQ(d[1].major, 1);
  EXPECT_EQ(d[1].minor, 3);
  EXPECT_FALSE(d[2].major);  // -1 is "any"
  EXPECT_EQ(d[2].access, "m");
}

// Docker 20.10's generated spec: sysctls, its seccomp profile (deny by
// default), cpu shares 0, blockIO weight 0, disableOOMKiller false.
TEST(OciSpec, DecodesWhatDockersSpecAdds) {
  auto j = base();
  j["linux"]["sysctl"] = {{"net.ipv4.ping_group_range", "0 2147483647"}};
  j["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ERRNO"}, {"architectures", {"SCMP_ARCH_X86_64"}},
                           {"syscalls", {{{"names", {"read"}}, {"action", "SCMP_ACT_ALLOW"}}}}};
  j["linux"]["resources"]["memory"]["disableOOMKiller"] = false;
  j["linux"]["resources"]["cpu"] = {{"shares", 0}};
  j["linux"]["resources"]["blockIO"] = {{"weight", 0}};
  auto s = parse_spec(j.dump(), "/b");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->linux.sysctl.at("net.ipv4.ping_group_range"), "0 2147483647");
  ASSERT_TRUE(s->linux.seccomp);
  EXPECT_EQ(s->linux.seccomp->default_action, "SCMP_ACT_ERRNO");
  ASSERT_EQ(s->linux.seccomp->syscalls.size(), 1u);
  EXPECT_EQ(s->linux.seccomp->syscalls[0].names, std::vector<std::string>{"read"});
  // podman's umask (0022, what every box process has); others refused.
  j["process"]["user"]["umask"] = 18;
  EXPECT_TRUE(parse_spec(j.dump(), "/b"));
  j["process"]["user"]["umask"] = 63;
  EXPECT_EQ(error_of(j), "config.json: process.user.umask: a umask other than 0022 is not supported by cubby-runc yet");
  EXPECT_FALSE(s->linux.resources.cpu_shares);
}

// The whole profile and every hook key are decoded (compiled and run elsewhere).
TEST(OciSpec, DecodesSeccompProfilesAndHooks) {
  auto j = base();
  j["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"},
                           {"defaultErrnoRet", 38},
                           {"flags", {"SECCOMP_FILTER_FLAG_LOG"}},
                           {"syscalls", {{{"names", {"kill", "tkill"}},
                                          {"action", "SCMP_ACT_ERRNO"},
                                          {"errnoRet", 1},
                                          {"args", {{{"index", 1}, {"value", 7}, {"valueTwo", 3}, {"op", "SCMP_CMP_MASKED_EQ"}}}}}}}};
  j["hooks"] = {{"createRuntime", {{{"path", "/bin/h"}, {"args", {"h", "x"}}, {"env", {"A=1"}}, {"timeout", 5}}}},
                {"poststop", {{{"path", "/bin/p"}}}}};
  auto s = parse_spec(j.dump(), "/b");
  ASSERT_TRUE(s) << s.error().message();
  const auto& p = *s->linux.seccomp;
  EXPECT_EQ(p.default_errno_ret, 38u);
  EXPECT_EQ(p.flags, std::vector<std::string>{"SECCOMP_FILTER_FLAG_LOG"});
  ASSERT_EQ(p.syscalls[0].args.size(), 1u);
  EXPECT_EQ(p.syscalls[0].args[0].index, 1u);
  EXPECT_EQ(p.syscalls[0].args[0].value, 7u);
  EXPECT_EQ(p.syscalls[0].args[0].value_two, 3u);
  EXPECT_EQ(p.syscalls[0].args[0].op, "SCMP_CMP_MASKED_EQ");
  EXPECT_EQ(p.syscalls[0].errno_ret, 1u);
  ASSERT_EQ(s->hooks.create_runtime.size(), 1u);
  EXPECT_EQ(s->hooks.create_runtime[0].args, (std::vector<std::string>{"h", "x"}));
  EXPECT_EQ(s->hooks.create_runtime[0].env, std::vector<std::string>{"A=1"});
  EXPECT_EQ(s->hooks.create_runtime[0].timeout, 5);
  EXPECT_EQ(s->hooks.poststop[0].path, "/bin/p");
  EXPECT_FALSE(s->hooks.poststop[0].timeout);
}

TEST(OciSpec, EmptyOrNullKeysAreAbsent) {
  auto j = base();
  j["hooks"] = json::object();
  j["linux"]["seccomp"] = nullptr;
  j["linux"]["sysctl"] = json::object();
  EXPECT_TRUE(parse_spec(j.dump(), "/b"));
}

TEST(OciSpec, HostileValuesGetOneClearError) {
  EXPECT_EQ(parse_spec("{", "/b").error().message(), "config.json: not valid JSON");
  auto j = base();
  j["process"]["args"] = json::array();
  EXPECT_EQ(error_of(j), "config.json: process.args: must not be empty");
  j = base();
  j["process"]["user"]["uid"] = -1;
  EXPECT_EQ(error_of(j), "config.json: process.user.uid: out of range");
  j = base();
  j["process"]["user"]["uid"] = "0";
  EXPECT_EQ(error_of(j), "config.json: process.user.uid: must be an integer");
  j = base();
  j["process"]["capabilities"]["bounding"] = {"CAP_EVERYTHING"};
  EXPECT_EQ(error_of(j), "config.json: process.capabilities.bounding: unknown capability \"CAP_EVERYTHING\"");
  j = base();
  j["process"]["rlimits"][0]["soft"] = 4096;
  EXPECT_EQ(error_of(j), "config.json: process.rlimits[0]: soft limit above the hard limit");
  j = base();
  j["ociVersion"] = "2.0.0";
  EXPECT_EQ(error_of(j), "config.json: ociVersion: \"2.0.0\" is not a 1.x version");
  j = base();
  j["linux"]["namespaces"].push_back({{"type", "pid"}});
  EXPECT_EQ(error_of(j), "config.json: linux.namespaces[3]: namespace \"pid\" given twice");
  j = base();
  j.erase("linux");
  EXPECT_EQ(error_of(j), "config.json: linux: is required (cubby-runc runs Linux containers)");
  j = base();
  j["mounts"][0]["destination"] = "proc";
  EXPECT_EQ(error_of(j), "config.json: mounts[0].destination: must be an absolute path");
}

}  // namespace
