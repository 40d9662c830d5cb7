// spawn()'s confinement options (new network namespace, capability drop,
// credentials, no_new_privs), read back from the child's own /proc/self.
#include <unistd.h>

#include <algorithm>
#include <string>

#include <gtest/gtest.h>

#include "base/fs.h"
#include "base/process.h"
#include "base/sys.h"

namespace cubby {
namespace {

// What a child spawned with `spec` prints for `cat FILE` (or readlink).
std::string child_output(SpawnSpec spec, std::vector<std::string> argv) {
  auto [r, w] = sys::make_pipe().value();
  spec.argv = std::move(argv);
  spec.fds = {-1, w.get(), 2};
  auto child = spawn(spec);
  EXPECT_TRUE(child) << (child ? "" : child.error().message());
  w.reset();
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(r.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  if (child) EXPECT_EQ(child->wait()->code, 0);
  return out;
}

std::string status_field(const std::string& status, const std::string& key) {
  auto at = status.find("\n" + key + ":");
  if (at == std::string::npos) return "?";
  at = status.find_first_not_of(" \t", at + key.size() + 2);
  return status.substr(at, status.find('\n', at) - at);
}

TEST(SpawnConfine, CredentialsCapabilitiesAndNoNewPrivs) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  SpawnSpec s;
  s.drop_capabilities = true;
  s.run_as = SpawnSpec::Credentials{4242, 4343, {4444}};
  s.no_new_privs = true;
  std::string st = child_output(s, {"/bin/cat", "/proc/self/status"});
  EXPECT_EQ(status_field(st, "Uid"), "4242\t4242\t4242\t4242");
  EXPECT_EQ(status_field(st, "Gid"), "4343\t4343\t4343\t4343");
  EXPECT_EQ(status_field(st, "Groups"), "4444 ");
  EXPECT_EQ(status_field(st, "CapEff"), "0000000000000000");
  EXPECT_EQ(status_field(st, "CapPrm"), "0000000000000000");
  EXPECT_EQ(status_field(st, "CapInh"), "0000000000000000");
  EXPECT_EQ(status_field(st, "CapBnd"), "0000000000000000");
  EXPECT_EQ(status_field(st, "NoNewPrivs"), "1");
}

// uid 0 that stays uid 0 (no run_as) still gains nothing at exec.
TEST(SpawnConfine, RootWithoutCapabilities) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  SpawnSpec s;
  s.drop_capabilities = true;
  std::string st = child_output(s, {"/bin/cat", "/proc/self/status"});
  EXPECT_EQ(status_field(st, "Uid"), "0\t0\t0\t0");
  EXPECT_EQ(status_field(st, "CapEff"), "0000000000000000");
  EXPECT_EQ(status_field(st, "CapBnd"), "0000000000000000");
  auto plain = child_output(SpawnSpec{}, {"/bin/cat", "/proc/self/status"});
  EXPECT_NE(status_field(plain, "CapEff"), "0000000000000000") << "the test means nothing without root's caps";
}

TEST(SpawnConfine, NewNetworkNamespaceHasOnlyLoopback) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  SpawnSpec s;
  s.new_netns = true;
  char buf[64] = {};
  ASSERT_GT(::readlink("/proc/self/ns/net", buf, sizeof buf - 1), 0);
  std::string ours = buf;
  std::string theirs = child_output(s, {"/bin/readlink", "/proc/self/ns/net"});
  EXPECT_NE(theirs, ours + "\n");
  EXPECT_EQ(theirs.rfind("net:[", 0), 0u) << theirs;
  std::string dev = child_output(s, {"/bin/cat", "/proc/self/net/dev"});  // 2 header lines, then one per device
  EXPECT_EQ(std::count(dev.begin(), dev.end(), '\n'), 3) << dev;
  EXPECT_NE(dev.find("lo:"), std::string::npos) << dev;
}

// What a caller without CAP_SYS_ADMIN gets: the network namespace belongs
// to a user namespace of its own, where the child has no capability.
TEST(SpawnConfine, NetworkNamespaceInANewUserNamespace) {
  SpawnSpec s;
  s.new_netns = true;
  s.new_userns = true;
  char buf[64] = {};
  ASSERT_GT(::readlink("/proc/self/ns/user", buf, sizeof buf - 1), 0);
  EXPECT_NE(child_output(s, {"/bin/readlink", "/proc/self/ns/user"}), std::string(buf) + "\n");
  std::string st = child_output(s, {"/bin/cat", "/proc/self/status"});
  EXPECT_EQ(status_field(st, "CapEff"), "0000000000000000");
  std::string dev = child_output(s, {"/bin/cat", "/proc/self/net/dev"});
  EXPECT_EQ(std::count(dev.begin(), dev.end(), '\n'), 3) << dev;
}

TEST(SpawnConfine, FailureNamesTheConfinementStep) {
  SpawnSpec s;
  s.argv = {"/bin/true"};
  s.run_as = SpawnSpec::Credentials{4242, 4242, std::vector<gid_t>(70000, 4242)};  // > NGROUPS_MAX: EINVAL
  auto child = spawn(s);
  ASSERT_FALSE(child);
  EXPECT_NE(child.error().message().find("confine /bin/true"), std::string::npos) << child.error().message();
}

}  // namespace
}  // namespace cubby
