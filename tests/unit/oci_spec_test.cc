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
  j["linux"]["seccomp"] = {{"defaultAction", "SCMP_ACT_ALLOW"}};
  EXPECT_EQ(error_of(j), "config.json: linux.seccomp: not supported by cubby-runc yet");
  j = base();
  j["hooks"] = {{"prestart", {{{"path", "/bin/true"}}}}};
  EXPECT_EQ(error_of(j), "config.json: hooks: not supported by cubby-runc yet");
  j = base();
  j["linux"]["sysctl"] = {{"net.ipv4.ip_forward", "1"}};
  EXPECT_EQ(error_of(j), "config.json: linux.sysctl: not supported by cubby-runc yet");
  j = base();
  j["process"]["oomScoreAdj"] = 5;
  EXPECT_EQ(error_of(j), "config.json: process.oomScoreAdj: not supported by cubby-runc yet");
  j = base();
  j["linux"]["namespaces"].push_back({{"type", "user"}});
  EXPECT_NE(error_of(j).find("user namespaces"), std::string::npos);
  j = base();
  j["mounts"].push_back({{"destination", "/x"}, {"type", "overlay"}, {"source", "o"}});
  EXPECT_EQ(error_of(j), "config.json: mounts[2].type: mount type \"overlay\" is not supported by cubby-runc yet");
  j = base();
  j["linux"]["resources"]["devices"].push_back({{"allow", true}, {"access", "rwm"}, {"type", "c"}});
  EXPECT_NE(error_of(j).find("linux.resources.devices[1]"), std::string::npos);
  j = base();
  j["linux"]["resources"]["hugepageLimits"] = {{{"pageSize", "2MB"}, {"limit", 1}}};
  EXPECT_EQ(error_of(j), "config.json: linux.resources.hugepageLimits: not supported by cubby-runc yet");
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
