// The home's file modes (issue 10, items 1 and 2): everything cubby makes in
// its home is the owner's alone, so another host user can neither run a
// box's or an image's setuid files (root's on the host: the identity uid map
// makes the bit real) nor read a box's -e secrets from the store.
//
// A box's upper/ is the box's own / and a layer keeps its image's modes, so
// those two keep group/other bits by design; the walk checks that every
// directory around them is 0700 (no other user can traverse into them) and
// does not descend into them, as their contents are the image's and the
// box's, not cubby's.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "base/fs.h"
#include "base/sys.h"
#include "harness.h"
#include "store/store.h"

namespace cubby::test {
namespace {

constexpr uid_t kNobody = 65534;
constexpr char kSecret[] = "API_TOKEN=s3cret-4f1d9a";

// Serves the first image of an OCI layout (a `cubby save` archive, unpacked)
// as registry API v2 under any name and tag; prints its port.
constexpr char kLayoutRegistry[] = R"PY(
import http.server, json, sys
L = sys.argv[1]
m = json.load(open(L + "/index.json"))["manifests"][0]
def blob(d): return open(L + "/blobs/sha256/" + d[7:], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        p = self.path.split("/")  # "", v2, NAME, NAME, manifests|blobs, REF
        if self.path == "/v2/": body, ctype = b"{}", "application/json"
        elif len(p) == 6 and p[4] == "manifests": body, ctype = blob(m["digest"]), m["mediaType"]
        elif len(p) == 6 and p[4] == "blobs": body, ctype = blob(p[5]), "application/octet-stream"
        else:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print("listening on", srv.server_address[1], flush=True)
srv.serve_forever()
)PY";

std::string mode_str(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", m & 07777);
  return b;
}

// Where the image's modes rule rather than cubby's: a layer (images/layers/HEX)
// and a box's upper dir (boxes/ID/upper), in this home or a nested one.
bool image_owned(const std::vector<std::string>& parts) {
  size_t n = parts.size();
  return (n >= 3 && parts[n - 3] == "images" && parts[n - 2] == "layers") ||
         (n >= 3 && parts[n - 3] == "boxes" && parts[n - 1] == "upper");
}

struct Walk {
  std::vector<std::string> loose;  // "path mode" of everything group/other can use
  size_t image_owned = 0;          // layers and upper dirs seen (not descended)
  size_t sockets = 0, files = 0;
};

// Every entry below dir (and dir itself) must have no group or other bits:
// directories 0700, files and sockets 0600 at most. Image-owned trees are
// not descended, and are checked only by their parents being 0700.
void walk(const std::string& path, std::vector<std::string>& parts, Walk& w) {
  struct stat st;
  if (::lstat(path.c_str(), &st) < 0) {
    if (errno != ENOENT) w.loose.push_back(path + ": lstat: " + std::strerror(errno));
    return;  // ENOENT: gone while we walked (a staging area, a socket's temporary name)
  }
  if (!parts.empty() && image_owned(parts) && S_ISDIR(st.st_mode)) {
    ++w.image_owned;
    return;
  }
  if ((st.st_mode & 077) != 0 || S_ISLNK(st.st_mode)) w.loose.push_back(path + " " + mode_str(st.st_mode));
  if (S_ISSOCK(st.st_mode)) ++w.sockets;
  if (S_ISREG(st.st_mode)) ++w.files;
  if (!S_ISDIR(st.st_mode)) return;
  DIR* d = ::opendir(path.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names) {
    parts.push_back(n);
    walk(path + "/" + n, parts, w);
    parts.pop_back();
  }
}

Walk walk_home(const std::string& home) {
  Walk w;
  std::vector<std::string> parts;
  walk(home, parts, w);
  return w;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "\n  " + x;
  return s;
}

// What happened to an execve or open done as uid/gid 65534 (no groups).
struct AsNobody {
  int err = 0;      // errno of the failed call; 0: it succeeded
  std::string out;  // the program's stdout, if it ran
};

// Post-fork code below: raw syscalls on data built before the fork only.
AsNobody as_nobody(const std::string& path, const std::vector<std::string>& args, bool exec) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  char* envp[] = {nullptr};
  auto [err_r, err_w] = sys::make_pipe().value();
  auto [out_r, out_w] = sys::make_pipe().value();
  pid_t pid = ::fork();
  if (pid == 0) {
    int e = 0;
    if (::setgroups(0, nullptr) < 0 || ::setresgid(kNobody, kNobody, kNobody) < 0 ||
        ::setresuid(kNobody, kNobody, kNobody) < 0 || ::dup2(out_w.get(), 1) < 0) {
      e = errno ? errno : EPERM;
    } else if (exec) {
      ::execve(path.c_str(), argv.data(), envp);
      e = errno;
    } else {
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      e = fd < 0 ? errno : 0;
    }
    (void)!::write(err_w.get(), &e, sizeof e);
    ::_exit(0);
  }
  AsNobody r;
  if (pid < 0) {
    r.err = -1;
    return r;
  }
  err_w.reset();
  out_w.reset();
  int e = 0;
  // A record: the call failed (or, for open, its result); EOF: exec happened.
  r.err = ::read(err_r.get(), &e, sizeof e) == static_cast<ssize_t>(sizeof e) ? e : 0;
  r.out = sys::read_all(out_r.get()).value_or("");
  int st;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::string describe(const AsNobody& r) {
  if (r.err == 0) return "it succeeded" + (r.out.empty() ? std::string() : ", printing: " + r.out);
  return std::strerror(r.err);
}

class HomeModes : public BoxTest {
 protected:
  void SetUp() override {
    BoxTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    char tmpl[] = "/tmp/cubby-modes-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    scratch_ = tmpl;
    // A home other users can traverse, as /var/lib/cubby was when an older
    // cubby made it (the harness' mkdtemp home is 0700): the next open must
    // close it, and what is inside must not rely on it.
    ASSERT_EQ(::chmod(home_.c_str(), 0755), 0);
  }
  void TearDown() override {
    if (!scratch_.empty()) (void)remove_tree(scratch_);
    BoxTest::TearDown();
  }

  void run_tool(const std::vector<std::string>& argv) {
    SpawnSpec s;
    s.argv = argv;
    auto c = spawn(s);
    ASSERT_TRUE(c) << c.error().message();
    auto st = c->wait();
    ASSERT_TRUE(st && st->shell_code() == 0) << argv[0] << " failed";
  }

  // `cubby save` of the test image, unpacked, served by kLayoutRegistry;
  // returns its port (0: it did not start). The server lives as long as
  // `server`.
  int serve_layout(ChildProcess& server) {
    std::string layout = scratch_ + "/layout";
    EXPECT_EQ(cubby({"save", "-o", scratch_ + "/bb.oci.tar", image_}).rc, 0);
    EXPECT_TRUE(mkdir_p(layout));
    run_tool({"/usr/bin/tar", "-C", layout, "-xf", scratch_ + "/bb.oci.tar"});
    EXPECT_TRUE(write_file(scratch_ + "/registry.py", kLayoutRegistry));
    auto [r, w] = sys::make_pipe().value();
    SpawnSpec s;
    s.argv = {"/usr/bin/python3", scratch_ + "/registry.py", layout};
    s.fds = {-1, w.get(), 2};
    s.die_with_parent = true;
    auto c = spawn(s);
    if (!c) {
      ADD_FAILURE() << c.error().message();
      return 0;
    }
    server = std::move(*c);
    w.reset();
    std::string line;
    char ch;
    while (line.find('\n') == std::string::npos) {
      auto ready = sys::wait_readable(r.get(), std::chrono::seconds(30));  // a backstop only
      if (!ready || !*ready || ::read(r.get(), &ch, 1) != 1) break;
      line += ch;
    }
    if (line.rfind("listening on ", 0) != 0) {
      ADD_FAILURE() << "registry did not start: " << line;
      return 0;
    }
    return std::stoi(line.substr(13));
  }

  void expect_private(const std::string& when) {
    Walk w = walk_home(home_);
    EXPECT_TRUE(w.loose.empty()) << when << ": group/other can use" << joined(w.loose);
    EXPECT_GE(w.image_owned, 2u) << when << ": no layer or upper dir seen; the walk checked nothing image-owned";
    EXPECT_GT(w.files, 0u);
  }

  std::string scratch_;
};

TEST_F(HomeModes, EverythingInTheHomeIsTheOwnersAlone) {
  ASSERT_EQ(cubby(box_args("run", {"--rm", image_, "true"})).rc, 0);
  std::string id = run_detached({"sleep", "1000000"});
  ASSERT_FALSE(id.empty());
  auto r = cubby(box_args("run", {"-d", "-e", kSecret, "--name", "secret", image_, "sleep", "1000000"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(cubby({"exec", id, "sh", "-c", "echo written > /root/in-box; echo to-log"}).rc, 0);
  ASSERT_TRUE(write_file(scratch_ + "/host.txt", "from the host\n", 0644));
  r = cubby({"cp", scratch_ + "/host.txt", id + ":/root/"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = cubby({"cp", id + ":/root/in-box", scratch_ + "/out.txt"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_file(scratch_ + "/out.txt").value_or(""), "written\n");
  EXPECT_EQ(cubby({"logs", id}).rc, 0);
  r = cubby({"import", CUBBY_TEST_ROOTFS, "second"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(cubby({"save", "-o", scratch_ + "/second.tar", "second"}).rc, 0);
  r = cubby({"load", "-i", scratch_ + "/second.tar"});
  ASSERT_EQ(r.rc, 0) << r.err;
  // With --network default, slirp4netns' API socket sits in the box dir too.
  std::string net;
  if (::access("/usr/bin/slirp4netns", X_OK) == 0) {
    r = cubby({"run", "-d", "--isolation", isolation_, "--network", "default", image_, "sleep", "1000000"});
    ASSERT_EQ(r.rc, 0) << r.err;
    net = r.out.substr(0, r.out.find('\n'));
    ASSERT_EQ(::access((home_ + "/boxes/" + net + "/slirp.sock").c_str(), F_OK), 0) << "no API socket to check";
  }
  // A pull into a home cubby makes itself (two levels of it missing).
  ChildProcess registry;
  int port = serve_layout(registry);
  ASSERT_GT(port, 0);
  std::string pulled = home_ + "/fresh/pulled";
  r = run_cubby(pulled, {"pull", "127.0.0.1:" + std::to_string(port) + "/test/bb:v1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  registry = ChildProcess();
  EXPECT_GT(walk_home(pulled + "/images/blobs").files, 0u) << "the pull stored no blobs to check";

  expect_private("with boxes running");
  ASSERT_EQ(cubby({"stop", "-t", "1", id}).rc, 0);
  ASSERT_EQ(cubby({"start", id}).rc, 0);
  ASSERT_EQ(cubby({"exec", id, "true"}).rc, 0);
  ASSERT_EQ(cubby({"stop", "-t", "1", id}).rc, 0);
  expect_private("after stop and start");
}

TEST_F(HomeModes, NoOtherUserRunsABoxsSetuidFile) {
  // /root, not /tmp: the box's /tmp is a tmpfs, /root is in its upper dir.
  // With --userns host the box's root is host root, so its chmod 4755 makes
  // a real setuid-root file on the host, kept from other users by the
  // home's modes alone. By default the box's root is its own range of host
  // ids (runtime/idmap.h): the bit can only give that stranger's uid.
  for (const std::string userns : {"host", "auto"}) {
    auto run = cubby({"run", "-d", "--isolation", "sandbox", "--network", "none", "--userns", userns, image_, "sleep",
                      "1000000"});
    ASSERT_EQ(run.rc, 0) << run.err;
    std::string id = run.out.substr(0, 32);
    auto r = cubby({"cp", bin_dir() + "/print_euid", id + ":/root/helper"});
    ASSERT_EQ(r.rc, 0) << r.err;
    ASSERT_EQ(cubby({"exec", id, "chmod", "4755", "/root/helper"}).rc, 0);
    std::string file = home_ + "/boxes/" + id + "/upper/root/helper";
    struct stat st;
    ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
    ASSERT_TRUE(st.st_mode & S_ISUID) << "the box's chmod 4755 did not land in its upper dir";
    if (userns == "host")
      ASSERT_EQ(st.st_uid, 0u);
    else
      EXPECT_GE(st.st_uid, 65536u) << "a default box made a setuid file of a real host user's";
    AsNobody x = as_nobody(file, {"helper"}, true);
    EXPECT_EQ(x.err, EACCES) << userns << ": uid 65534 execve " << file << ": " << describe(x);
    EXPECT_EQ(cubby({"rm", "-f", id}).rc, 0);
  }
}

TEST_F(HomeModes, NoOtherUserRunsAnImagesSetuidFile) {
  // A hostile image: a setuid root file; no box needs to run.
  std::string root = scratch_ + "/rootfs";
  ASSERT_TRUE(mkdir_p(root + "/bin", 0755));
  auto bytes = read_file(bin_dir() + "/print_euid");
  ASSERT_TRUE(bytes);
  ASSERT_TRUE(write_file(root + "/bin/helper", *bytes, 0755));
  ASSERT_EQ(::chmod((root + "/bin/helper").c_str(), 04755), 0);
  run_tool({"/usr/bin/tar", "-C", root, "--numeric-owner", "--owner=0", "--group=0", "-cf", scratch_ + "/suid.tar", "."});
  auto r = cubby({"import", scratch_ + "/suid.tar", "suid"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::string file;
  DIR* d = ::opendir((home_ + "/images/layers").c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* e = ::readdir(d)) {
    std::string p = home_ + "/images/layers/" + e->d_name + "/bin/helper";
    struct stat st;
    if (e->d_name[0] != '.' && ::stat(p.c_str(), &st) == 0 && (st.st_mode & S_ISUID)) file = p;
  }
  ::closedir(d);
  ASSERT_FALSE(file.empty()) << "no layer kept the setuid bit (the image's mode must be kept)";
  AsNobody x = as_nobody(file, {"helper"}, true);
  EXPECT_EQ(x.err, EACCES) << "uid 65534 execve " << file << ": " << describe(x);
}

TEST_F(HomeModes, NoOtherUserReadsTheStore) {
  auto r = cubby(box_args("create", {"-e", kSecret, "--name", "s", image_, "true"}));
  ASSERT_EQ(r.rc, 0) << r.err;
  // An open connection, as a running cubby has: -wal and -shm exist.
  auto db = store::Store::open(home_);
  ASSERT_TRUE(db) << db.error().message();
  auto boxes = db->list_boxes();
  ASSERT_TRUE(boxes && boxes->size() == 1u);
  std::string all;
  for (const char* f : {"cubby.db", "cubby.db-wal", "cubby.db-shm"}) {
    std::string path = home_ + "/" + f;
    auto bytes = read_file(path);
    ASSERT_TRUE(bytes) << path << " is missing";
    all += *bytes;
    AsNobody o = as_nobody(path, {}, false);
    EXPECT_EQ(o.err, EACCES) << "uid 65534 open " << path << ": " << describe(o);
  }
  EXPECT_NE(all.find(kSecret), std::string::npos) << "the secret is not in the store; this test checks nothing";
}

TEST_F(HomeModes, OpenClosesAHomeAnOlderCubbyLeftOpen) {
  for (const char* d : {"", "/boxes", "/images", "/images/layers"})
    ASSERT_EQ(::chmod((home_ + d).c_str(), 0755), 0) << d;
  ASSERT_EQ(::chmod((home_ + "/cubby.db").c_str(), 0644), 0);
  ASSERT_EQ(cubby({"ls"}).rc, 0);
  for (const char* d : {"", "/boxes", "/images"}) {
    struct stat st;
    ASSERT_EQ(::stat((home_ + d).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << home_ << d;
  }
  struct stat st;
  ASSERT_EQ(::stat((home_ + "/cubby.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // A pull opens no box store: it closes the home itself.
  ASSERT_EQ(::chmod(home_.c_str(), 0755), 0);
  EXPECT_NE(cubby({"pull", "127.0.0.1:1/none/such:v1"}).rc, 0);
  ASSERT_EQ(::stat(home_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

}  // namespace
}  // namespace cubby::test
