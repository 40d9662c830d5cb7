// Registry pull, load and save against a REAL registry: Debian's
// docker-registry on 127.0.0.1, images built offline with umoci from the
// busybox rootfs and pushed with skopeo (registry/build-images.sh), a small
// token server and a misbehaving fake registry (registry/server.py).
//
// Instances (started once for the suite, stopped by pid at the end):
//   plain_   no auth, plain HTTP
//   tls_     HTTPS with a self-signed CA + htpasswd basic auth
//   token_   bearer tokens from the token server (JWT, x5c-signed)
//   tamper_  plain; one layer blob is corrupted on disk after the push
//   fake_    server.py fake: 500, 401, oversized manifest, 404
// Needs docker-registry, skopeo, umoci, openssl, apache2-utils (htpasswd),
// python3: scripts/install-deps.sh installs them; missing ones FAIL the tests.
#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"

namespace cubby::test {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kScripts = std::string(CUBBY_TEST_SOURCE_DIR) + "/integration/registry";

int free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// A server process whose output is read through a pipe until it says
// "listening on", then drained by a thread until it exits.
struct Server {
  ChildProcess proc;
  std::thread drain;
  std::string log;
  int port = 0;

  std::string start(const std::vector<std::string>& argv) {
    auto pipe = sys::make_pipe();
    if (!pipe) return pipe.error().message();
    SpawnSpec s;
    s.argv = argv;
    s.fds = {-1, pipe->second.get(), pipe->second.get()};
    auto c = spawn(s);
    if (!c) return c.error().message();
    proc = std::move(*c);
    pipe->second.reset();
    UniqueFd rd = std::move(pipe->first);
    std::string buf;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);  // backstop
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "no \"listening on\" from " + argv[0] + ": " + buf;
      auto ready = sys::wait_readable(rd.get(), left);
      if (!ready || !*ready) continue;
      char tmp[4096];
      ssize_t n = ::read(rd.get(), tmp, sizeof tmp);
      if (n <= 0) return argv[0] + " exited before listening: " + buf;
      buf.append(tmp, static_cast<size_t>(n));
      size_t p = buf.find("listening on");
      if (p != std::string::npos && buf.find('\n', p) != std::string::npos) {
        std::string rest = buf.substr(p + 13);
        if (port == 0) port = std::atoi(rest.c_str());
        break;
      }
    }
    log = buf;
    drain = std::thread([this, fd = std::move(rd)]() mutable {
      char tmp[4096];
      for (;;) {
        ssize_t n = ::read(fd.get(), tmp, sizeof tmp);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        log.append(tmp, static_cast<size_t>(n));
      }
    });
    return "";
  }
  void stop() {
    if (proc.valid()) {
      (void)proc.signal(SIGTERM);
      (void)proc.wait();
    }
    if (drain.joinable()) drain.join();
  }
};

std::string sh(const std::string& cmd) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "re");
  if (!p) return "popen failed";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return st == 0 ? "" : "`" + cmd + "` failed: " + out;
}

std::string registry_config(const std::string& dir, int port, const std::string& extra,
                            const std::string& ip = "127.0.0.1") {
  return "version: 0.1\nlog: {level: info}\nstorage:\n  filesystem: {rootdirectory: " + dir +
         "/data}\n  delete: {enabled: true}\nhttp:\n  addr: " + ip + ":" + std::to_string(port) + "\n" + extra;
}

// An IPv4 address of this host that is not loopback ("" if none).
std::string non_loopback_ipv4() {
  ifaddrs* ifs = nullptr;
  if (::getifaddrs(&ifs) < 0) return "";
  std::string found;
  for (ifaddrs* i = ifs; i && found.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
      continue;
    char buf[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf)) found = buf;
  }
  ::freeifaddrs(ifs);
  return found;
}

class Registry : public BoxTest {
 protected:
  static inline std::string setup_error_;
  static inline std::string scratch_;
  static inline Server plain_, tls_, token_, tamper_, token_server_, fake_;

  static std::string start_registry(Server& s, const std::string& name, const std::string& extra) {
    std::string dir = scratch_ + "/" + name;
    fs::create_directories(dir);
    s.port = free_port();
    std::string cfg = dir + "/config.yml";
    std::ofstream(cfg) << registry_config(dir, s.port, extra);
    return s.start({"/usr/bin/docker-registry", "serve", cfg});
  }

  static std::string setup() {
    for (const char* tool : {"/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/umoci", "/usr/bin/openssl",
                             "/usr/bin/htpasswd", "/usr/bin/python3"})
      if (::access(tool, X_OK) != 0)
        return std::string(tool) + " is missing: run scripts/install-deps.sh (CI installs it)";
    char tmpl[] = "/tmp/cubby-registry-XXXXXX";
    if (!::mkdtemp(tmpl)) return "mkdtemp failed";
    scratch_ = tmpl;
    const std::string& d = scratch_;
    if (auto e = sh(kScripts + "/build-images.sh " CUBBY_TEST_ROOTFS " " + d); !e.empty()) return e;
    if (auto e = sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout " + d + "/key.pem -out " + d +
                    "/cert.pem -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost");
        !e.empty())
      return e;
    if (auto e = sh("htpasswd -Bbn testuser testpass > " + d + "/htpasswd"); !e.empty()) return e;
    fs::create_directories(d + "/certs.d");
    fs::copy_file(d + "/cert.pem", d + "/certs.d/ca.crt");

    std::string e;
    if (!(e = start_registry(plain_, "plain", "")).empty()) return e;
    if (!(e = start_registry(tamper_, "tamper", "")).empty()) return e;
    if (!(e = start_registry(tls_, "tls",
                             "  tls: {certificate: " + d + "/cert.pem, key: " + d + "/key.pem}\n" +
                                 "auth:\n  htpasswd: {realm: test-realm, path: " + d + "/htpasswd}\n"))
             .empty())
      return e;
    if (!(e = token_server_.start({"/usr/bin/python3", kScripts + "/server.py", "token", d + "/key.pem", d + "/cert.pem"})).empty())
      return e;
    if (!(e = start_registry(token_, "token",
                             "auth:\n  token: {realm: 'http://127.0.0.1:" + std::to_string(token_server_.port) +
                                 "/token', service: test-registry, issuer: test-issuer, rootcertbundle: " + d +
                                 "/cert.pem}\n"))
             .empty())
      return e;
    if (!(e = fake_.start({"/usr/bin/python3", kScripts + "/server.py", "fake"})).empty()) return e;

    std::string L = "oci:" + d + "/layout:";
    auto push = [&](const std::string& src, const std::string& dst, const std::string& opts) {
      return sh("skopeo copy -q --dest-tls-verify=false " + opts + " " + L + src + " docker://" + dst);
    };
    std::string p = "127.0.0.1:" + std::to_string(plain_.port);
    for (auto [src, dst, opts] : std::vector<std::tuple<std::string, std::string, std::string>>{
             {"v1", p + "/test/busybox:v1", ""},
             {"v1", p + "/test/bb-v2s2:v1", "--format v2s2"},
             {"v1", p + "/test/zstd:v1", "--dest-compress-format zstd"},
             {"other", p + "/test/other:v1", ""},
             {"multi", p + "/test/multi:latest", "--all"},
             {"v1", "127.0.0.1:" + std::to_string(tamper_.port) + "/test/tamper:v1", ""},
             {"v1", "127.0.0.1:" + std::to_string(tls_.port) + "/test/busybox:v1",
              "--dest-cert-dir " + d + "/certs.d --dest-creds testuser:testpass"},
             {"v1", "127.0.0.1:" + std::to_string(token_.port) + "/test/busybox:v1",
              "--dest-creds tokenuser:tokenpass"}})
      if (auto err = push(src, dst, opts); !err.empty()) return err;
    // Corrupt the biggest blob of the tamper registry, keeping its size.
    std::string biggest;
    uintmax_t size = 0;
    for (auto& f : fs::recursive_directory_iterator(d + "/tamper/data/docker/registry/v2/blobs"))
      if (f.is_regular_file() && f.path().filename() == "data" && f.file_size() > size) {
        size = f.file_size();
        biggest = f.path();
      }
    if (biggest.empty()) return "no blob to tamper with";
    std::fstream f(biggest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.put('\x5a');
    f.put('\xa5');
    return "";
  }

  static void SetUpTestSuite() { setup_error_ = setup(); }
  static void TearDownTestSuite() {
    for (Server* s : {&plain_, &tls_, &token_, &tamper_, &token_server_, &fake_}) s->stop();
    if (!scratch_.empty()) (void)remove_tree(scratch_);
  }

  void SetUp() override {
    ASSERT_EQ(setup_error_, "") << "registry test setup failed";
    BoxTest::SetUp();
  }

  std::string plain(const std::string& repo) { return "127.0.0.1:" + std::to_string(plain_.port) + "/" + repo; }
  std::string at(const Server& s, const std::string& repo) { return "127.0.0.1:" + std::to_string(s.port) + "/" + repo; }

  // The one-line error of a failing command.
  std::string fails(const std::vector<std::string>& args) {
    auto r = cubby(args);
    EXPECT_EQ(r.rc, 125) << r.out << r.err;
    EXPECT_EQ(r.err_lines().size(), 1u) << r.err;
    return r.err;
  }

  json inspect(const std::string& ref) {
    auto r = cubby({"image", "inspect", ref});
    EXPECT_EQ(r.rc, 0) << r.err;
    return json::parse(r.out, nullptr, false);
  }

  size_t count_entries(const std::string& dir) {
    size_t n = 0;
    std::error_code ec;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) ++n;
    return n;
  }
};

TEST_F(Registry, PullOciNoAuthThenRunWithImageConfig) {
  auto r = cubby({"pull", plain("test/busybox:v1")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("sha256:"), std::string::npos);
  EXPECT_EQ(r.err, "");  // quiet when not on a TTY
  // Config: Cmd, WorkingDir, Env; layer 2 adds /hello and whites out /bin/vi.
  r = cubby({"run", "--rm", "--network", "none", plain("test/busybox:v1")});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "default-cmd\n");
  r = cubby({"run", "--rm", "--network", "none", plain("test/busybox:v1"), "sh", "-c",
             "pwd; echo $FROM_IMAGE; cat /hello; test -e /bin/vi && echo vi-present || echo vi-gone"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "/work\nyes\nhi\nvi-gone\n");
  r = cubby({"run", "--rm", "--network", "none", "--entrypoint", "/bin/echo", plain("test/busybox:v1"), "over"});
  EXPECT_EQ(r.out, "over\n") << r.err;
  json j = inspect(plain("test/busybox:v1"));
  EXPECT_TRUE(j["ExposedPorts"].contains("8080/tcp")) << j.dump();
  EXPECT_EQ(j["RootFS"]["Layers"].size(), 2u);
  EXPECT_EQ(j["Architecture"], "amd64");
  // Pulling again is a no-op that still succeeds; a digest reference resolves.
  r = cubby({"pull", plain("test/busybox:v1")});
  EXPECT_EQ(r.rc, 0) << r.err;
  std::string digest = j["ManifestDigest"];
  r = cubby({"pull", "-q", plain("test/busybox@" + digest)});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, plain("test/busybox@" + digest) + "\n");
}

TEST_F(Registry, RunPullsOnDemand) {
  auto r = cubby({"run", "--rm", "--network", "none", plain("test/bb-v2s2:v1"), "cat", "/hello"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "hi\n");
  ASSERT_EQ(r.err_lines().size(), 1u) << r.err;
  EXPECT_NE(r.err.find("locally"), std::string::npos) << r.err;
}

TEST_F(Registry, DockerSchema2AndZstdLayers) {
  for (const char* repo : {"test/bb-v2s2:v1", "test/zstd:v1"}) {
    auto r = cubby({"pull", plain(repo)});
    ASSERT_EQ(r.rc, 0) << repo << ": " << r.err;
    r = cubby({"run", "--rm", "--network", "none", plain(repo), "cat", "/hello"});
    EXPECT_EQ(r.out, "hi\n") << repo << ": " << r.err;
  }
  // Same config and diff_ids: the unpacked layers are shared.
  EXPECT_EQ(count_entries(home_ + "/images/layers"), 1u /*busybox import*/ + 2u);
}

TEST_F(Registry, MultiPlatformIndex) {
  auto r = cubby({"pull", plain("test/multi:latest")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(inspect(plain("test/multi:latest"))["Architecture"], "amd64");
  r = cubby({"pull", "--platform", "linux/arm64", plain("test/multi:latest")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(inspect(plain("test/multi:latest"))["Architecture"], "arm64");
  EXPECT_NE(fails({"pull", "--platform", "linux/s390x", plain("test/multi:latest")}).find("linux/arm64"),
            std::string::npos);
  EXPECT_NE(fails({"pull", "--platform", "nonsense", plain("test/multi:latest")}).find("platform"), std::string::npos);
}

TEST_F(Registry, TlsWithBasicAuth) {
  std::string ref = at(tls_, "test/busybox:v1");
  std::string domain = "127.0.0.1:" + std::to_string(tls_.port);
  // Unknown CA: refused, with a hint.
  EXPECT_NE(fails({"pull", ref}).find("certs.d"), std::string::npos);
  ASSERT_TRUE(mkdir_p(home_ + "/certs.d/" + domain));
  fs::copy_file(scratch_ + "/cert.pem", home_ + "/certs.d/" + domain + "/ca.crt");
  EXPECT_NE(fails({"pull", ref}).find("authentication required"), std::string::npos);
  EXPECT_NE(fails({"login", "-u", "testuser", "-p", "wrong", domain}).find("incorrect username or password"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(home_ + "/config.json"));
  auto r = cubby({"login", "-u", "testuser", "--password-stdin", domain}, std::string("testpass\n"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ((fs::status(home_ + "/config.json").permissions() & fs::perms::others_read), fs::perms::none);
  json cfg = json::parse(read_file(home_ + "/config.json").value());
  EXPECT_TRUE(cfg["auths"].contains(domain)) << cfg.dump();
  r = cubby({"pull", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  r = cubby({"logout", domain});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(fails({"pull", ref}).find("authentication required"), std::string::npos);
}

TEST_F(Registry, BearerTokenAuth) {
  std::string ref = at(token_, "test/busybox:v1");
  auto r = cubby({"pull", ref});  // anonymous token
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string domain = "127.0.0.1:" + std::to_string(token_.port);
  EXPECT_NE(fails({"login", "-u", "tokenuser", "-p", "bad", domain}).find("incorrect"), std::string::npos);
  r = cubby({"login", "-u", "tokenuser", "-p", "tokenpass", domain});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(cubby({"rmi", ref}).rc, 0);
  r = cubby({"pull", ref});  // token with credentials
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
}

TEST_F(Registry, BadRegistriesAndReferences) {
  std::string before_blobs = std::to_string(count_entries(home_ + "/images/blobs/sha256"));
  std::string err = fails({"pull", at(tamper_, "test/tamper:v1")});
  EXPECT_NE(err.find("does not match its digest"), std::string::npos) << err;
  EXPECT_EQ(std::to_string(count_entries(home_ + "/images/blobs/sha256")), before_blobs);
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
  EXPECT_EQ(json::parse(cubby({"images", "--format", "json"}).out).size(), 1u);
  EXPECT_NE(fails({"pull", at(fake_, "err500/x:v1")}).find("500"), std::string::npos);
  EXPECT_NE(fails({"pull", at(fake_, "locked/x:v1")}).find("authentication required"), std::string::npos);
  EXPECT_NE(fails({"pull", at(fake_, "nothere/x:v1")}).find("not found"), std::string::npos);
  EXPECT_NE(fails({"pull", plain("test/busybox:nosuchtag")}).find("not found"), std::string::npos);
  EXPECT_NE(fails({"pull", at(fake_, "big/x:v1")}).find("MiB"), std::string::npos);
  EXPECT_NE(fails({"pull", "Bad:Ref"}).find("invalid reference"), std::string::npos);
  EXPECT_NE(fails({"pull", "x@sha256:123"}).find("digest"), std::string::npos);
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
}

TEST_F(Registry, LoadSaveAndGarbageCollection) {
  std::string d = scratch_;
  std::string da = home_ + "/docker.tar", oa = home_ + "/oci.tar";
  ASSERT_EQ(sh("skopeo copy -q oci:" + d + "/layout:v1 docker-archive:" + da + ":example.com/da:v1"), "");
  ASSERT_EQ(sh("skopeo copy -q oci:" + d + "/layout:other oci-archive:" + oa + ":example.com/oa:v1"), "");
  auto r = cubby({"load", "-i", da});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("example.com/da:v1"), std::string::npos);
  r = cubby({"load", "-i", oa});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* ref : {"example.com/da:v1", "example.com/oa:v1"}) {
    r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello"});
    EXPECT_EQ(r.out, "hi\n") << ref << ": " << r.err;
  }
  // save -> load into another home -> run.
  std::string saved = home_ + "/saved.tar";
  r = cubby({"save", "-o", saved, "example.com/oa:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string other_home = home_ + "/other-home";
  auto l = run_cubby(other_home, {"load", "-i", saved});
  ASSERT_EQ(l.rc, 0) << l.err;
  l = run_cubby(other_home, {"run", "--rm", "--network", "none", "example.com/oa:v1", "cat", "/other"});
  EXPECT_EQ(l.out, "other\n") << l.err;
  // rmi: the image with 3 layers goes; the 2 layers shared with da:v1 stay.
  size_t layers = count_entries(home_ + "/images/layers");
  ASSERT_EQ(cubby({"rmi", "example.com/oa:v1"}).rc, 0);
  EXPECT_EQ(count_entries(home_ + "/images/layers"), layers - 1);
  r = cubby({"run", "--rm", "--network", "none", "example.com/da:v1", "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  // Corrupt and unsafe archives.
  ASSERT_TRUE(write_file(home_ + "/junk.tar", "this is not a tar archive at all"));
  EXPECT_NE(fails({"load", "-i", home_ + "/junk.tar"}).find("archive"), std::string::npos);
  ASSERT_EQ(sh("cd " + home_ + " && mkdir -p evil && echo x > evil/f && tar --transform 's,^evil/f,../escape,' -cf evil.tar evil/f"), "");
  EXPECT_NE(fails({"load", "-i", home_ + "/evil.tar"}).find(".."), std::string::npos);
  EXPECT_FALSE(fs::exists(home_ + "/images/escape"));
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
}


// The tag a box was created from moves to a new version and is pulled
// again, then removed: the old version's own layer stays while a box uses
// it. The pull's garbage collection runs in cubby-fetch, which asks the box
// store too.
TEST_F(Registry, RepullAndRmiKeepTheLayersBoxesUse) {
  std::string ref = plain("test/moving:v1");
  std::string layout = "oci:" + scratch_ + "/layout:";
  ASSERT_EQ(sh("skopeo copy -q --dest-tls-verify=false " + layout + "other docker://" + ref), "");
  size_t layers_before = count_entries(home_ + "/images/layers");
  auto r = cubby({"pull", "-q", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby(box_args("run", {"-d", "--name", "r", ref, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby(box_args("create", {"--name", "c", ref, "cat", "/other"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  // v1 is two of other's three layers: other's own (/other) is left to the boxes.
  ASSERT_EQ(sh("skopeo copy -q --dest-tls-verify=false " + layout + "v1 docker://" + ref), "");
  r = cubby({"pull", "-q", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"exec", "r", "cat", "/other"});
  EXPECT_EQ(r.out, "other\n") << "the pull took a running box's layer: " << r.err;
  r = cubby({"rmi", ref});
  EXPECT_EQ(r.rc, 0) << r.err;
  r = cubby({"exec", "r", "cat", "/other"});
  EXPECT_EQ(r.out, "other\n") << "rmi took a running box's layer: " << r.err;
  EXPECT_EQ(count_entries(home_ + "/images/layers"), layers_before + 3);
  r = cubby({"start", "c"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(cubby({"wait", "c"}).out, "0\n");
  EXPECT_EQ(cubby({"logs", "c"}).out, "other\n");
  EXPECT_EQ(cubby({"rm", "-f", "r", "c"}).rc, 0);
  EXPECT_EQ(count_entries(home_ + "/images/layers"), layers_before) << "layers outlived every image and box using them";
}

// Four `cubby pull` processes of the same 3-layer image into one home at once:
// all succeed, the image is listed once and each layer is stored once.
TEST_F(Registry, ConcurrentPullsIntoOneHome) {
  std::string ref = plain("test/other:v1");
  size_t layers_before = count_entries(home_ + "/images/layers");
  std::vector<CmdResult> res(4);
  std::vector<std::thread> ts;
  for (auto& r : res) ts.emplace_back([&r, this, ref] { r = run_cubby(home_, {"pull", "-q", ref}); });
  for (auto& t : ts) t.join();
  for (const auto& r : res) {
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(r.out, ref + "\n") << r.err;
  }
  json imgs = json::parse(cubby({"images", "--format", "json"}).out, nullptr, false);
  ASSERT_TRUE(imgs.is_array()) << imgs.dump();
  EXPECT_EQ(imgs.size(), 2u) << imgs.dump();  // the busybox import + test/other
  size_t mentions = 0;
  for (const auto& i : imgs)
    if (i.dump().find("test/other") != std::string::npos) ++mentions;
  EXPECT_EQ(mentions, 1u) << imgs.dump();
  EXPECT_EQ(count_entries(home_ + "/images/layers"), layers_before + 3) << "layers stored more than once?";
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
  auto r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello", "/other"});
  EXPECT_EQ(r.out, "hi\nother\n") << r.err;
}

// A registry serving the OCI layout built by build-images.sh whose layer blobs
// are cut short (Content-Length says the whole size, the connection closes
// half-way): /v2/once/... on the first request of each layer blob only,
// /v2/always/... every time. Prints "truncated HEX" for each cut.
// /v2/stall/... sends half of each layer blob and then nothing, forever.
const char* kTruncatingRegistry = R"PY(
import http.server, json, sys, threading
L = sys.argv[1]
idx = json.load(open(L + "/index.json"))
by = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
mbytes = open(L + "/blobs/sha256/" + by["v1"]["digest"][7:], "rb").read()
layers = {l["digest"][7:] for l in json.loads(mbytes)["layers"]}
cut, mu = set(), threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def send(self, body, ctype="application/octet-stream", short=False):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if short else body)
    def do_GET(self):
        parts = self.path.split("/")  # "", v2, MODE, x, manifests|blobs, REF
        if self.path == "/v2/":
            return self.send(b"{}", "application/json")
        if len(parts) != 6 or parts[2] not in ("once", "always", "stall"):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        if parts[4] == "manifests":
            return self.send(mbytes, "application/vnd.oci.image.manifest.v1+json")
        h = parts[5][7:]
        body = open(L + "/blobs/sha256/" + h, "rb").read()
        short = False
        if h in layers and parts[2] == "stall":
            self.send(body, short=True)
            self.wfile.flush()
            threading.Event().wait()
        if h in layers:
            with mu:
                short = parts[2] == "always" or (parts[2], h) not in cut
                cut.add((parts[2], h))
        if short:
            print("truncated", parts[2], h, flush=True)
        self.send(body, short=short)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on", srv.server_address[1], flush=True)
srv.serve_forever()
)PY";

// kTruncatingRegistry, started for one test and stopped at its end.
struct TruncatingRegistry : Server {
  std::string error;  // why it did not start
  TruncatingRegistry(const std::string& home, const std::string& scratch) {
    std::string script = home + "/trunc.py";
    error = write_file(script, kTruncatingRegistry) ? start({"/usr/bin/python3", script, scratch + "/layout"})
                                                    : "cannot write " + script;
  }
  ~TruncatingRegistry() { stop(); }
};

// A layer download cut short is retried (the pull succeeds); one that is always
// cut short fails with one clear line and stores nothing.
TEST_F(Registry, TruncatedBlobIsRetriedOrFailsCleanly) {
  TruncatingRegistry trunc(home_, scratch_);
  ASSERT_EQ(trunc.error, "");

  size_t blobs = count_entries(home_ + "/images/blobs/sha256"), layers = count_entries(home_ + "/images/layers");
  std::string err = fails({"pull", at(trunc, "always/x:v1")});
  EXPECT_NE(err.find("blob sha256:"), std::string::npos) << err;
  EXPECT_EQ(count_entries(home_ + "/images/blobs/sha256"), blobs);
  EXPECT_EQ(count_entries(home_ + "/images/layers"), layers);
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
  EXPECT_EQ(json::parse(cubby({"images", "--format", "json"}).out).size(), 1u);

  auto r = cubby({"pull", at(trunc, "once/x:v1")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  r = cubby({"run", "--rm", "--network", "none", at(trunc, "once/x:v1"), "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  trunc.stop();
  // The pull above succeeded although its blobs were cut short the first
  // time: at least one retry happened (the server's log may not show every
  // line, so count at least one), and "always" was cut on every attempt.
  size_t once = 0, always = 0;
  for (size_t p = 0; (p = trunc.log.find("truncated ", p)) != std::string::npos; ++p)
    (trunc.log.compare(p + 10, 4, "once") == 0 ? once : always)++;
  EXPECT_GE(once, 1u) << trunc.log;
  EXPECT_GE(always, 3u) << trunc.log;  // 3 attempts
}

// A killed pull (SIGKILL or SIGTERM, mid-download) takes its cubby-fetch
// with it, and the fetcher leaves nothing staged (issue 10: six kills left
// six fetchers committing images).
TEST_F(Registry, KilledPullTakesItsFetcherAndItsStagingWithIt) {
  TruncatingRegistry stall(home_, scratch_);
  ASSERT_EQ(stall.error, "");
  const std::string tmp = home_ + "/images/tmp";
  for (int sig : {SIGKILL, SIGTERM}) {
    SCOPED_TRACE(sig == SIGKILL ? "SIGKILL" : "SIGTERM");
    UniqueFd watch(::inotify_init1(IN_CLOEXEC));
    ASSERT_GE(::inotify_add_watch(watch.get(), tmp.c_str(), IN_CREATE | IN_ONLYDIR), 0);
    ChildProcess pull = spawn_cubby(home_, {"pull", at(stall, "stall/x:v" + std::to_string(sig))});
    // The fetcher made its work area: it is mid-pull, and the stalled blob
    // keeps it there until it is killed.
    for (bool staged = false; !staged;) {
      auto ready = sys::wait_readable(watch.get(), std::chrono::seconds(60));  // backstop
      ASSERT_TRUE(ready && *ready) << "no work area appeared in " << tmp;
      alignas(inotify_event) char buf[4096];
      ssize_t n = ::read(watch.get(), buf, sizeof buf);
      for (ssize_t off = 0; off < n;) {
        auto* e = reinterpret_cast<inotify_event*>(buf + off);
        if (e->len && std::string(e->name).ends_with(".d")) staged = true;
        off += static_cast<ssize_t>(sizeof(inotify_event) + e->len);
      }
    }
    auto kids = children_of(pull.pid());
    ASSERT_EQ(kids.size(), 1u) << "expected the pull's one cubby-fetch";
    auto fetcher = sys::pidfd_open(kids[0]);
    ASSERT_TRUE(fetcher);
    ASSERT_TRUE(pull.signal(sig));
    (void)pull.wait();
    auto gone = sys::wait_readable(fetcher->get(), std::chrono::seconds(10));  // backstop
    EXPECT_TRUE(gone && *gone) << "cubby-fetch outlived its killed pull";
    reap_adopted();
    EXPECT_EQ(count_entries(tmp), 0u) << "the killed pull left staged work";
  }
  EXPECT_EQ(json::parse(cubby({"images", "--format", "json"}).out).size(), 1u) << "nothing was committed";
}

// Mirrors (CUBBY_HOME/config.json "mirrors" and docker.io's "registry-mirrors")
// are tried in order; any failure moves on to the next one, then to the
// registry itself.
TEST_F(Registry, MirrorsAreTriedInOrderThenTheRegistry) {
  std::string dead = "127.0.0.1:" + std::to_string(free_port());  // nothing listens there
  std::string live = "127.0.0.1:" + std::to_string(plain_.port);
  std::string fake = "127.0.0.1:" + std::to_string(fake_.port);
  auto config = [&](const json& j) { ASSERT_TRUE(write_file(home_ + "/config.json", j.dump())); };

  // A registry that does not answer, through a dead mirror, then a live one
  // whose repositories sit under a prefix.
  config({{"mirrors", {{dead, {"http://" + dead, "http://" + live + "/test"}}}}});
  auto r = cubby({"pull", dead + "/busybox:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  r = cubby({"run", "--rm", "--network", "none", dead + "/busybox:v1", "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;

  // docker.io (unreachable here) through daemon.json-style registry-mirrors.
  config({{"registry-mirrors", {"http://" + live}}});
  r = cubby({"pull", "test/other:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(inspect("docker.io/test/other:v1")["RepoTags"][0], "docker.io/test/other:v1");

  // Mirrors that refuse connections, answer 500, or lack the repository: the
  // registry itself serves the pull.
  config({{"mirrors", {{live, {"http://" + dead, "http://" + fake + "/err500", live + "/nosuch"}}}}});
  r = cubby({"pull", live + "/test/bb-v2s2:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");

  // Everything down: one line, naming what was tried.
  config({{"mirrors", {{dead, {"http://" + dead}}}}});
  std::string err = fails({"pull", dead + "/busybox:v2"});
  EXPECT_NE(err.find("mirrors tried first"), std::string::npos) << err;
  EXPECT_NE(err.find("cannot reach registry " + dead), std::string::npos) << err;
  config({{"mirrors", {{live, {"ftp://" + live}}}}});
  EXPECT_NE(fails({"pull", live + "/test/busybox:v1"}).find("invalid mirror"), std::string::npos);
  config({{"registry-mirrors", "http://" + live}});
  EXPECT_NE(fails({"pull", "test/other:v1"}).find("registry-mirrors"), std::string::npos);
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
}

// The manifest is resolved at the first mirror, but that mirror cuts every
// layer blob short: after its retries each blob comes from the next mirror
// (per blob, without resolving the manifest again), and the pull succeeds.
TEST_F(Registry, MirrorWithBadBlobsFallsBackPerBlob) {
  TruncatingRegistry trunc(home_, scratch_);
  ASSERT_EQ(trunc.error, "");
  std::string dead = "127.0.0.1:" + std::to_string(free_port());  // the registry itself: down
  std::string live = "127.0.0.1:" + std::to_string(plain_.port);
  ASSERT_TRUE(write_file(home_ + "/config.json",
                         json{{"mirrors", {{dead, {"http://" + at(trunc, "always"), "http://" + live + "/test"}}}}}.dump()));
  auto r = cubby({"pull", dead + "/busybox:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err, "");
  r = cubby({"run", "--rm", "--network", "none", dead + "/busybox:v1", "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  trunc.stop();
  EXPECT_NE(trunc.log.find("truncated always"), std::string::npos) << trunc.log;
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);
}

// Plain HTTP beyond loopback only for registries in "insecure-registries"
// (by HOST:PORT or by CIDR): a docker-registry on this host's non-loopback
// address, serving the plain registry's storage.
TEST_F(Registry, InsecureRegistriesAllowPlainHttpBeyondLoopback) {
  std::string ip = non_loopback_ipv4();
  if (ip.empty()) GTEST_SKIP() << "this host has no non-loopback IPv4 address";
  Server lan;
  struct Stop {
    Server& s;
    ~Stop() { s.stop(); }
  } stop{lan};
  lan.port = free_port();
  std::string cfg = home_ + "/lan-registry.yml";
  ASSERT_TRUE(write_file(cfg, registry_config(scratch_ + "/plain", lan.port, "", ip)));
  ASSERT_EQ(lan.start({"/usr/bin/docker-registry", "serve", cfg}), "");
  std::string domain = ip + ":" + std::to_string(lan.port), ref = domain + "/test/busybox:v1";

  std::string err = fails({"pull", ref});
  EXPECT_NE(err.find("registry " + domain + " answers only plain HTTP"), std::string::npos) << err;
  EXPECT_NE(err.find("insecure-registries"), std::string::npos) << err;
  EXPECT_EQ(json::parse(cubby({"images", "--format", "json"}).out).size(), 1u);
  EXPECT_EQ(count_entries(home_ + "/images/tmp"), 0u);

  ASSERT_TRUE(write_file(home_ + "/config.json", json{{"insecure-registries", {domain}}}.dump()));
  auto r = cubby({"pull", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  ASSERT_EQ(cubby({"rmi", ref}).rc, 0);

  ASSERT_TRUE(write_file(home_ + "/config.json", json{{"insecure-registries", {ip + "/32"}}}.dump()));
  r = cubby({"pull", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_TRUE(write_file(home_ + "/config.json", json{{"insecure-registries", {"127.0.0.0/8"}}}.dump()));
  EXPECT_NE(fails({"pull", ref}).find("answers only plain HTTP"), std::string::npos);
}

// A Docker credential helper (docker-credential-NAME get|store|erase) keeping
// its secrets in store.json next to itself and logging each call.
const char* kCredentialHelper = R"PY(#!/usr/bin/python3
import json, os, sys
d = os.path.dirname(os.path.abspath(__file__))
verb, data = sys.argv[1], sys.stdin.read()
url = json.loads(data)["ServerURL"] if verb == "store" else data.strip()
open(os.path.join(d, "calls.log"), "a").write(verb + " " + url + "\n")
path = os.path.join(d, "store.json")
creds = json.load(open(path)) if os.path.exists(path) else {}
if verb == "store":
    creds[url] = [json.loads(data)["Username"], json.loads(data)["Secret"]]
elif url not in creds:
    print("credentials not found in native keychain"); sys.exit(1)
elif verb == "get":
    print(json.dumps({"ServerURL": url, "Username": creds[url][0], "Secret": creds[url][1]}))
else:
    del creds[url]
json.dump(creds, open(path, "w"))
)PY";

// credHelpers and credsStore (in cubby's config.json or Docker's) against the
// htpasswd/TLS registry, with a real helper program on PATH.
TEST_F(Registry, CredentialHelpers) {
  std::string domain = "127.0.0.1:" + std::to_string(tls_.port), ref = domain + "/test/busybox:v1";
  ASSERT_TRUE(mkdir_p(home_ + "/certs.d/" + domain));
  fs::copy_file(scratch_ + "/cert.pem", home_ + "/certs.d/" + domain + "/ca.crt");
  std::string bin = home_ + "/helpers";
  ASSERT_TRUE(mkdir_p(bin));
  ASSERT_TRUE(write_file(bin + "/docker-credential-cubbytest", kCredentialHelper, 0755));
  ASSERT_TRUE(write_file(bin + "/docker-credential-broken", "#!/bin/sh\necho boom\nexit 3\n", 0755));
  struct Env {
    std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ~Env() {
      ::setenv("PATH", old_path.c_str(), 1);
      ::unsetenv("DOCKER_CONFIG");
    }
  } env;
  ::setenv("PATH", (bin + ":" + env.old_path).c_str(), 1);
  ::setenv("DOCKER_CONFIG", (home_ + "/docker").c_str(), 1);
  auto calls = [&] { return read_file(bin + "/calls.log").value_or(""); };
  auto config = [&](const json& j) { ASSERT_TRUE(write_file(home_ + "/config.json", j.dump())); };

  // credHelpers: the helper is asked, has nothing: anonymous, refused.
  config({{"credHelpers", {{domain, "cubbytest"}}}});
  EXPECT_NE(fails({"pull", ref}).find("authentication required"), std::string::npos);
  EXPECT_EQ(calls(), "get " + domain + "\n");
  // login stores through the helper; the file keeps only an empty marker.
  auto r = cubby({"login", "-u", "testuser", "--password-stdin", domain}, std::string("testpass\n"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(home_ + "/config.json").value().find("testpass"), std::string::npos);
  EXPECT_EQ(json::parse(read_file(home_ + "/config.json").value())["auths"][domain], json::object());
  EXPECT_NE(read_file(bin + "/store.json").value_or("").find("testpass"), std::string::npos);
  r = cubby({"pull", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"run", "--rm", "--network", "none", ref, "cat", "/hello"});
  EXPECT_EQ(r.out, "hi\n") << r.err;
  // logout erases from the helper's store.
  r = cubby({"logout", domain});
  EXPECT_EQ(r.out, "Removing login credentials for " + domain + "\n") << r.err;
  EXPECT_EQ(calls(), "get " + domain + "\nstore " + domain + "\nget " + domain + "\nerase " + domain + "\n");
  ASSERT_EQ(cubby({"rmi", ref}).rc, 0);
  EXPECT_NE(fails({"pull", ref}).find("authentication required"), std::string::npos);

  // credsStore in Docker's own config.json; cubby's file is empty. A registry
  // that asks for no authentication never runs the helper.
  ASSERT_TRUE(write_file(bin + "/store.json", json{{domain, {"testuser", "testpass"}}}.dump()));
  config(json::object());
  ASSERT_TRUE(mkdir_p(home_ + "/docker"));
  ASSERT_TRUE(write_file(home_ + "/docker/config.json", json{{"credsStore", "cubbytest"}}.dump()));
  std::string before = calls();
  r = cubby({"pull", ref});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(calls(), before + "get " + domain + "\n");
  r = cubby({"pull", plain("test/busybox:v1")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(calls(), before + "get " + domain + "\n");

  // Helpers that fail or are missing: one line each.
  ASSERT_EQ(cubby({"rmi", ref}).rc, 0);
  config({{"credHelpers", {{domain, "broken"}}}});
  std::string err = fails({"pull", ref});
  EXPECT_NE(err.find("docker-credential-broken get failed (exit code 3): boom"), std::string::npos) << err;
  config({{"credsStore", "nosuch"}});
  EXPECT_NE(fails({"pull", ref}).find("docker-credential-nosuch not found"), std::string::npos);
  config({{"credsStore", "../evil"}});
  EXPECT_NE(fails({"pull", ref}).find("invalid credential helper name"), std::string::npos);

  // A helper's "<token>" user is an identity token: exchanged at the token
  // server (OAuth2 refresh-token grant) for a bearer token.
  std::string tdomain = "127.0.0.1:" + std::to_string(token_.port), tref = tdomain + "/test/busybox:v1";
  config({{"credHelpers", {{tdomain, "cubbytest"}}}});
  ASSERT_TRUE(write_file(bin + "/store.json", json{{tdomain, {"<token>", "wrong-secret"}}}.dump()));
  EXPECT_NE(fails({"pull", tref}).find("incorrect"), std::string::npos);
  ASSERT_TRUE(write_file(bin + "/store.json", json{{tdomain, {"<token>", "refresh-secret"}}}.dump()));
  r = cubby({"pull", tref});
  ASSERT_EQ(r.rc, 0) << r.err;
}

// Writes a docker-archive (argv[1]) tagged example.com/xattr:v1 whose one
// layer carries xattrs as pax SCHILY.xattr.* records: user.* on a file and a
// directory, security.capability (cap_net_raw+ep, VFS_CAP_REVISION_2) on a
// file, and overlayfs's own (trusted.overlay.*, user.overlay.*) that an image
// must not be able to set.
const char* kXattrArchive = R"PY(
import hashlib, io, json, struct, sys, tarfile
def entry(tf, name, pax, data=None, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.mode, ti.pax_headers = mode, {("SCHILY.xattr." + k): v for k, v in pax.items()}
    if data is None:
        ti.type = tarfile.DIRTYPE; ti.mode = 0o755; tf.addfile(ti)
    else:
        ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
cap = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0).decode("utf-8", "surrogateescape")
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
    entry(tf, "d", {"user.dir": "on-a-dir"})
    entry(tf, "d/file", {"user.cubby": "hello", "user.empty": ""}, b"data\n")
    entry(tf, "ping", {"security.capability": cap}, b"#!/bin/sh\n", 0o755)
    entry(tf, "sneaky", {"trusted.overlay.opaque": "y", "trusted.overlay.redirect": "/etc", "user.ok": "1",
                         "user.overlay.opaque": "y", "user.overlay.redirect": "/etc"})
layer = buf.getvalue()
diff = hashlib.sha256(layer).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/ping"]},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff]}}).encode()
chex = hashlib.sha256(config).hexdigest()
with tarfile.open(sys.argv[1], "w") as out:
    for name, data in ((chex + ".json", config), (diff + "/layer.tar", layer),
                       ("manifest.json", json.dumps([{"Config": chex + ".json", "RepoTags": ["example.com/xattr:v1"],
                                                      "Layers": [diff + "/layer.tar"]}]).encode())):
        ti = tarfile.TarInfo(name); ti.size = len(data); out.addfile(ti, io.BytesIO(data))
print(diff)
)PY";

std::string xattr_of(const std::string& path, const std::string& name) {
  char buf[256];
  ssize_t n = ::lgetxattr(path.c_str(), name.c_str(), buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

// Layer xattrs survive load and pull into the unpacked layer: user.* and
// security.capability; trusted.* (overlayfs's own) are dropped.
TEST_F(Registry, LayerXattrsAreKept) {
  std::string archive = home_ + "/xattr.tar", script = home_ + "/xattr.py";
  ASSERT_TRUE(write_file(script, kXattrArchive));
  ASSERT_EQ(sh("/usr/bin/python3 " + script + " " + archive), "");
  std::string cap = std::string("\x01\x00\x00\x02\x00\x20\x00\x00", 8) + std::string(12, '\0');
  auto check = [&](const std::string& ref) {
    json j = inspect(ref);
    ASSERT_EQ(j["RootFS"]["Layers"].size(), 1u) << j.dump();
    std::string dir = home_ + "/images/layers/" + j["RootFS"]["Layers"][0].get<std::string>().substr(7);
    EXPECT_EQ(xattr_of(dir + "/d", "user.dir"), "on-a-dir");
    EXPECT_EQ(xattr_of(dir + "/d/file", "user.cubby"), "hello");
    EXPECT_EQ(xattr_of(dir + "/d/file", "user.empty"), "");
    EXPECT_EQ(xattr_of(dir + "/ping", "security.capability"), cap);
    EXPECT_EQ(xattr_of(dir + "/sneaky", "user.ok"), "1");
    EXPECT_EQ(xattr_of(dir + "/sneaky", "trusted.overlay.opaque"), "<No data available>");
    EXPECT_EQ(xattr_of(dir + "/sneaky", "trusted.overlay.redirect"), "<No data available>");
    EXPECT_EQ(xattr_of(dir + "/sneaky", "user.overlay.opaque"), "<No data available>");
    EXPECT_EQ(xattr_of(dir + "/sneaky", "user.overlay.redirect"), "<No data available>");
  };
  auto r = cubby({"load", "-i", archive});
  ASSERT_EQ(r.rc, 0) << r.err;
  check("example.com/xattr:v1");
  // Through a registry (skopeo gzips the layer on the way in).
  ASSERT_EQ(cubby({"rmi", "example.com/xattr:v1"}).rc, 0);
  ASSERT_EQ(sh("skopeo copy -q --dest-tls-verify=false docker-archive:" + archive + " docker://" + plain("test/xattr:v1")), "");
  r = cubby({"pull", plain("test/xattr:v1")});
  ASSERT_EQ(r.rc, 0) << r.err;
  check(plain("test/xattr:v1"));
}

}  // namespace
}  // namespace cubby::test
