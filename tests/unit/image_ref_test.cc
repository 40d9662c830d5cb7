// normalize_ref: the Docker reference grammar.
#include <gtest/gtest.h>

#include <string>

#include "image/image_store.h"

namespace cubby::image {
namespace {

std::string norm(const std::string& r) {
  auto n = normalize_ref(r);
  EXPECT_TRUE(n.has_value()) << r << ": " << (n ? "" : n.error().message());
  return n ? *n : "";
}

TEST(ImageRef, DockerHubDefaults) {
  EXPECT_EQ(norm("busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
  EXPECT_EQ(norm("library/busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(norm("index.docker.io/busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(norm("user/app"), "docker.io/user/app:latest");
  EXPECT_EQ(norm("localhost"), "docker.io/library/localhost:latest");
}

TEST(ImageRef, RegistriesTagsDigests) {
  EXPECT_EQ(norm("localhost/busybox"), "localhost/busybox:latest");
  EXPECT_EQ(norm("localhost:5000/a/b:v1.0-rc_1"), "localhost:5000/a/b:v1.0-rc_1");
  EXPECT_EQ(norm("quay.io/a.b/c__d/e-f--g:TAG"), "quay.io/a.b/c__d/e-f--g:TAG");
  EXPECT_EQ(norm("Registry.Example.com:443/x"), "Registry.Example.com:443/x:latest");
  const std::string d = "sha256:" + std::string(64, 'a');
  EXPECT_EQ(norm("busybox@" + d), "docker.io/library/busybox@" + d);
  EXPECT_EQ(norm("busybox:1@" + d), "docker.io/library/busybox:1@" + d);
  EXPECT_EQ(norm("x:" + std::string(128, 't')), "docker.io/library/x:" + std::string(128, 't'));
}

TEST(ImageRef, Rejects) {
  const char* bad[] = {
      "", " ", "busy box", "busybox ", "\tbusybox", "Busybox", "docker.io/Library/busybox",
      "a//b", "/busybox", "busybox/", "busybox:", "busybox:-x", "busybox:.x", "busybox:a b",
      "busybox@sha256:abc", "busybox@sha512:" "aaaa", "busybox@", "@sha256:", ":latest",
      "a..b", "a.-b", "-a", "a-", "a_", "a___b", "ex ample.com/x", "exa_mple.com/x",
      "example.com:port/x", "example.com:/x", "a\nb", "héllo", "x:y:z",
      "ghcr.io/Owner/x", "_tag:t",
  };
  for (const char* r : bad) {
    auto n = normalize_ref(r);
    EXPECT_FALSE(n.has_value()) << "accepted \"" << r << "\" as " << (n ? *n : "");
    if (!n) {
      EXPECT_EQ(n.error().kind(), ErrorKind::kInvalid) << r;
      EXPECT_NE(n.error().message().find("invalid reference"), std::string::npos);
    }
  }
  EXPECT_FALSE(normalize_ref("x:" + std::string(129, 't')).has_value());
  EXPECT_FALSE(normalize_ref(std::string(64, 'a')).has_value());  // looks like an image id
  EXPECT_FALSE(normalize_ref("example.com/" + std::string(260, 'a')).has_value());
  EXPECT_NE(normalize_ref("Busybox").error().message().find("lowercase"), std::string::npos);
}

}  // namespace
}  // namespace cubby::image
