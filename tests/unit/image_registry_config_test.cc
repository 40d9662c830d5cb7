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

TEST(RegistryConfig, MirrorsAndInsecureCidrs) {
  char tmpl[] = "/tmp/cubby-regcfg-XXXXXX";
  std::string home = ::mkdtemp(tmpl);
  ::setenv("DOCKER_CONFIG", (home + "/docker").c_str(), 1);
  ASSERT_TRUE(write_file(home + "/config.json", R"({"registry-mirrors":["https://m1.example/"],
      "mirrors":{"index.docker.io":["m0.example:5000/hub/"],"ghcr.io":["http://10.0.0.5:5000/v2/ghcr"]},
      "insecure-registries":["10.0.0.0/8","fd00::/8","reg.example:5000"]})"));
  auto c = RegistryConfig::load(home);
  ASSERT_TRUE(c) << c.error().message();
  const auto& hub = c->mirrors_for("docker.io");
  ASSERT_EQ(hub.size(), 2u);
  EXPECT_EQ(hub[0].str(), "m0.example:5000/hub");  // "mirrors" before "registry-mirrors"
  EXPECT_EQ(hub[1].str(), "https://m1.example");
  ASSERT_EQ(c->mirrors_for("ghcr.io").size(), 1u);
  EXPECT_EQ(c->mirrors_for("ghcr.io")[0].scheme, "http");
  EXPECT_EQ(c->mirrors_for("ghcr.io")[0].prefix, "ghcr");
  EXPECT_TRUE(c->mirrors_for("quay.io").empty());
  EXPECT_TRUE(c->plain_http_allowed("10.1.2.3:5000"));
  EXPECT_TRUE(c->plain_http_allowed("[fd00::2]:5000"));
  EXPECT_FALSE(c->plain_http_allowed("11.1.2.3:5000"));
  EXPECT_FALSE(c->plain_http_allowed("reg.example"));  // by name: the port is part of it
  EXPECT_TRUE(c->address_listed_insecure("10.9.9.9"));
  for (const char* bad : {"ftp://x", "https://", "http://h/../x", "h/a//b", "h x"}) EXPECT_FALSE(parse_mirror(bad)) << bad;
  ASSERT_TRUE(write_file(home + "/config.json", R"({"insecure-registries":"10.0.0.0/8"})"));
  EXPECT_FALSE(RegistryConfig::load(home));
  ::unsetenv("DOCKER_CONFIG");
  (void)remove_tree(home);
}

}  // namespace
}  // namespace cubby::image
