// Registry configuration (Docker config.json auths, insecure list, certs.d)
// and reference splitting, without a network.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "image/image_store.h"
#include "image/registry_config.h"

namespace cubby::image {
namespace {

TEST(ParseRef, SplitsDockerReferences) {
  auto r = parse_ref("busybox");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->domain, "docker.io");
  EXPECT_EQ(r->path, "library/busybox");
  EXPECT_EQ(r->tag, "latest");
  r = parse_ref("127.0.0.1:5000/a/b:v1@sha256:" + std::string(64, 'a'));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->domain, "127.0.0.1:5000");
  EXPECT_EQ(r->path, "a/b");
  EXPECT_EQ(r->tag, "v1");
  EXPECT_EQ(r->digest, "sha256:" + std::string(64, 'a'));
  EXPECT_FALSE(parse_ref("Bad:Ref"));
}

TEST(RegistryConfig, AuthsInsecureAndLogin) {
  char tmpl[] = "/tmp/cubby-regcfg-XXXXXX";
  std::string home = ::mkdtemp(tmpl);
  ::setenv("DOCKER_CONFIG", (home + "/docker").c_str(), 1);
  ASSERT_TRUE(write_file(home + "/config.json",
                         R"({"auths":{"https://index.docker.io/v1/":{"auth":")" + base64_encode("u:p:w") +
                             R"("}},"insecure-registries":["http://reg.example:5000"]})"));
  auto c = RegistryConfig::load(home);
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE(c->auth_for("docker.io"));
  EXPECT_EQ(c->auth_for("docker.io")->username, "u");
  EXPECT_EQ(c->auth_for("docker.io")->password, "p:w");
  EXPECT_TRUE(c->plain_http_allowed("reg.example:5000"));
  EXPECT_TRUE(c->plain_http_allowed("127.0.0.1:5000"));
  EXPECT_TRUE(c->plain_http_allowed("localhost"));
  EXPECT_FALSE(c->plain_http_allowed("ghcr.io"));
  EXPECT_FALSE(c->plain_http_allowed("127.0.0.1.evil.com"));
  ASSERT_TRUE(save_login(home, "ghcr.io", {"me", "secret"}));
  c = RegistryConfig::load(home);
  ASSERT_TRUE(c->auth_for("ghcr.io"));
  EXPECT_EQ(c->auth_for("ghcr.io")->password, "secret");
  EXPECT_TRUE(c->auth_for("docker.io"));  // kept
  EXPECT_TRUE(remove_login(home, "ghcr.io").value());
  EXPECT_FALSE(remove_login(home, "ghcr.io").value());
  EXPECT_FALSE(RegistryConfig::load(home)->auth_for("ghcr.io"));
  ASSERT_TRUE(write_file(home + "/config.json", "{not json"));
  EXPECT_FALSE(RegistryConfig::load(home));
  ::unsetenv("DOCKER_CONFIG");
  (void)remove_tree(home);
}

TEST(RegistryConfig, KeysAndBase64) {
  EXPECT_EQ(normalize_registry_key("https://index.docker.io/v1/"), "docker.io");
  EXPECT_EQ(normalize_registry_key("http://h:5000/v2/"), "h:5000");
  for (std::string s : {"", "a", "ab", "abc", "user:pass"}) EXPECT_EQ(base64_decode(base64_encode(s)).value(), s);
  EXPECT_FALSE(base64_decode("abc"));
}

}  // namespace
}  // namespace cubby::image
