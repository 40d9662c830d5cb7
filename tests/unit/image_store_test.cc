// ImageStore against real files: import (plain, gzip, zstd, xz, from a
// pipe), the OCI layout it writes, resolve/list/remove with GC, unpack
// safety (traversal, symlink and hardlink escapes), corrupt input, and
// concurrent importers (threads and processes).
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "image/digest.h"
#include "image/image_store.h"

namespace cubby::image {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- helpers ----

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cubby-image-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A minimal ustar writer, so tests can build archives no well-behaved tool
// would produce (../x, absolute names, escaping links).
class Tar {
 public:
  Tar& file(const std::string& name, const std::string& content, int mode = 0644, int uid = 0,
            int gid = 0, long mtime = 1700000000) {
    header(name, '0', content.size(), mode, "", uid, gid, mtime);
    data_ += content;
    data_.append((512 - content.size() % 512) % 512, '\0');
    return *this;
  }
  Tar& dir(const std::string& name, int mode = 0755, long mtime = 1700000000) {
    header(name, '5', 0, mode, "", 0, 0, mtime);
    return *this;
  }
  Tar& symlink(const std::string& name, const std::string& target) {
    header(name, '2', 0, 0777, target, 0, 0, 1700000000);
    return *this;
  }
  Tar& hardlink(const std::string& name, const std::string& target) {
    header(name, '1', 0, 0644, target, 0, 0, 1700000000);
    return *this;
  }
  Tar& chardev(const std::string& name, int major, int minor) {
    header(name, '3', 0, 0666, "", 0, 0, 1700000000, major, minor);
    return *this;
  }
  std::string bytes() const { return data_ + std::string(1024, '\0'); }

 private:
  static void octal(char* field, size_t width, unsigned long v) {
    std::snprintf(field, width, "%0*lo", static_cast<int>(width - 1), v);
  }
  void header(const std::string& name, char type, size_t size, int mode, const std::string& link,
              int uid, int gid, long mtime, int major = 0, int minor = 0) {
    char h[512] = {};
    EXPECT_LT(name.size(), 100u);
    std::memcpy(h, name.data(), std::min<size_t>(name.size(), 99));
    octal(h + 100, 8, mode);
    octal(h + 108, 8, uid);
    octal(h + 116, 8, gid);
    octal(h + 124, 12, size);
    octal(h + 136, 12, mtime);
    std::memset(h + 148, ' ', 8);
    h[156] = type;
    std::memcpy(h + 157, link.data(), std::min<size_t>(link.size(), 99));
    std::memcpy(h + 257, "ustar", 6);
    std::memcpy(h + 263, "00", 2);
    octal(h + 329, 8, major);
    octal(h + 337, 8, minor);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(h + 148, 8, "%06o", sum);
    h[155] = ' ';
    data_.append(h, 512);
  }
  std::string data_;
};

void put_file(const std::string& path, const std::string& data) {
  auto r = write_file(path, data);
  ASSERT_TRUE(r.has_value()) << r.error().message();
}

std::string get_file(const std::string& path) {
  auto r = read_file(path);
  return r ? *r : "<unreadable " + path + ">";
}

UniqueFd open_ro(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << path;
  return fd;
}

// Every path under root (relative) plus the contents of index.json.
std::set<std::string> snapshot(const std::string& root) {
  std::set<std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it)
    out.insert(fs::relative(it->path(), root).string());
  out.insert("index.json=" + get_file(root + "/index.json"));
  return out;
}

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

// Any entry named `name` anywhere below dir.
bool found_below(const std::string& dir, const std::string& name) {
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it)
    if (it->path().filename() == name) return true;
  return false;
}

size_t count_entries(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

int open_fd_count() {
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

int run(const std::string& cmd) { return std::system(cmd.c_str()); }

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/home/images";
    outside_ = tmp_.path() + "/outside";
    ASSERT_EQ(::mkdir(outside_.c_str(), 0755), 0);
    auto s = ImageStore::open(root_);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    // As the runtime does: the boxes' layers (here: in_use_) are kept.
    s->set_layers_in_use([this]() -> Result<std::vector<std::string>> {
      if (in_use_fails_) return fail(Error::internal("the box store is unreadable"));
      return in_use_;
    });
    store_.emplace(std::move(*s));
  }
  ImageStore& store() { return *store_; }

  Result<ImageInfo> import_bytes(const std::string& bytes, const std::string& ref) {
    std::string path = tmp_.path() + "/input-" + std::to_string(counter_++);
    put_file(path, bytes);
    UniqueFd fd = open_ro(path);
    auto r = store().import_tarball(fd.get(), ref);
    ::unlink(path.c_str());
    return r;
  }

  // Feeds bytes through a pipe from another thread, as `cubby import - ref` would.
  Result<ImageInfo> import_via_pipe(const std::string& bytes, const std::string& ref) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    std::thread writer([&] {
      size_t off = 0;
      while (off < bytes.size()) {
        ssize_t n = ::write(wr.get(), bytes.data() + off, bytes.size() - off);
        if (n <= 0) break;  // reader gave up (EPIPE)
        off += static_cast<size_t>(n);
      }
      wr.reset();
    });
    auto r = store().import_tarball(rd.get(), ref);
    rd.reset();
    writer.join();
    return r;
  }

  // A rootfs-like tree on disk, archived with GNU tar (flags: "", "z", "J", "--zstd").
  std::string tar_of_tree(const std::string& flags) {
    std::string dir = tmp_.path() + "/tree";
    if (!exists(dir)) {
      fs::create_directories(dir + "/bin");
      fs::create_directories(dir + "/etc");
      put_file(dir + "/etc/hostname", "from-gnu-tar\n");
      put_file(dir + "/bin/busybox", std::string(100000, 'B'));
      fs::create_symlink("busybox", dir + "/bin/sh");
    }
    std::string out = tmp_.path() + "/tree.tar" + std::to_string(counter_++);
    int rc = run("tar -C " + dir + " " + flags + " -cf " + out + " . 2>/dev/null");
    if (rc != 0) return {};
    std::string bytes = get_file(out);
    ::unlink(out.c_str());
    return bytes;
  }

  // Imports must fail with kInvalid naming `needle` and change nothing.
  void expect_rejected(const std::string& bytes, const std::string& needle, const std::string& ref = "localhost/evil") {
    auto before = snapshot(root_);
    auto r = import_bytes(bytes, ref);
    ASSERT_FALSE(r.has_value()) << "imported an unsafe/corrupt archive (" << needle << ")";
    EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid) << r.error().message();
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    EXPECT_EQ(snapshot(root_), before) << "store changed after failed import: " << r.error().message();
    EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
    EXPECT_EQ(count_entries(root_ + "/layers"), 0u);
    EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 0u);
  }

  TempDir tmp_;
  std::string root_, outside_;
  std::vector<std::string> in_use_;  // layer dirs "boxes" use
  bool in_use_fails_ = false;
  std::optional<ImageStore> store_;
  int counter_ = 0;
};

Tar rootfs_tar(const std::string& marker) {
  Tar t;
  t.dir("./").dir("./bin").dir("./etc", 0700).file("./bin/busybox", "#!busybox " + marker, 0755);
  t.symlink("./bin/sh", "/bin/busybox").file("./etc/motd", "hello " + marker);
  return t;
}

// ---- import and the OCI layout ----

TEST_F(ImageStoreTest, ImportPlainTarUnpacksFaithfully) {
  Tar t;
  t.dir("./").dir("./bin").dir("./etc", 0700, 1600000000).dir("./home/user", 0750);
  t.file("./bin/busybox", "#!busybox", 04755, 0, 0, 1650000000);
  t.symlink("./bin/sh", "/bin/busybox");           // absolute symlinks are legitimate
  t.symlink("./bin/ls", "busybox");
  t.hardlink("./bin/cat", "./bin/busybox");
  t.file("./home/user/.profile", "export X=1\n", 0600, 1000, 1001);
  t.file("./etc/.wh.gone", "");                   // whiteout: left for the registry work
  t.chardev("./dev-null", 1, 3);                   // device nodes are skipped
  t.dir("./empty");
  std::string bytes = t.bytes();
  int fds_before = open_fd_count();
  std::string cwd_before = fs::current_path();

  auto r = import_bytes(bytes, "localhost/faithful");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(open_fd_count(), fds_before);
  EXPECT_EQ(fs::current_path().string(), cwd_before);
  const ImageInfo& img = *r;
  EXPECT_EQ(img.ref, "localhost/faithful:latest");
  EXPECT_TRUE(is_sha256_hex(img.id));
  EXPECT_EQ(img.manifest_digest.substr(0, 7), "sha256:");
  EXPECT_EQ(img.created.size(), 20u);
  EXPECT_EQ(img.created[10], 'T');
  EXPECT_EQ(img.created.back(), 'Z');
  EXPECT_EQ(img.size, bytes.size());  // plain tar kept as is
  EXPECT_EQ(img.config.cmd, std::vector<std::string>{"/bin/sh"});
  ASSERT_EQ(img.config.env.size(), 1u);
  EXPECT_EQ(img.config.env[0].rfind("PATH=/usr/local/sbin:", 0), 0u);
  ASSERT_EQ(img.diff_ids.size(), 1u);
  EXPECT_EQ(img.diff_ids[0], "sha256:" + sha256_hex(bytes));

  auto dirs = store().layer_dirs(img);
  ASSERT_TRUE(dirs.has_value()) << dirs.error().message();
  ASSERT_EQ(dirs->size(), 1u);
  const std::string L = (*dirs)[0];
  EXPECT_EQ(L, root_ + "/layers/" + sha256_hex(bytes));
  EXPECT_EQ(get_file(L + "/bin/busybox"), "#!busybox");
  struct stat st;
  ASSERT_EQ(::lstat((L + "/bin/busybox").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_mtime, 1650000000);
  EXPECT_EQ(fs::read_symlink(L + "/bin/sh").string(), "/bin/busybox");
  EXPECT_EQ(fs::read_symlink(L + "/bin/ls").string(), "busybox");
  struct stat a, b;
  ASSERT_EQ(::lstat((L + "/bin/cat").c_str(), &a), 0);
  ASSERT_EQ(::lstat((L + "/bin/busybox").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  ASSERT_EQ(::lstat((L + "/home/user/.profile").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1001u);
  }
  ASSERT_EQ(::lstat((L + "/etc").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_mtime, 1600000000);
  EXPECT_TRUE(exists(L + "/etc/.wh.gone"));
  EXPECT_TRUE(exists(L + "/empty"));
  EXPECT_FALSE(exists(L + "/dev-null"));
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);

  // The store is a valid OCI image layout.
  EXPECT_EQ(json::parse(get_file(root_ + "/oci-layout"))["imageLayoutVersion"], "1.0.0");
  json index = json::parse(get_file(root_ + "/index.json"));
  EXPECT_EQ(index["schemaVersion"], 2);
  ASSERT_EQ(index["manifests"].size(), 1u);
  json desc = index["manifests"][0];
  EXPECT_EQ(desc["mediaType"], "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(desc["digest"], img.manifest_digest);
  EXPECT_EQ(desc["annotations"]["org.opencontainers.image.ref.name"], "localhost/faithful:latest");
  std::string mbytes = get_file(root_ + "/blobs/sha256/" + img.manifest_digest.substr(7));
  EXPECT_EQ(desc["size"], mbytes.size());
  json manifest = json::parse(mbytes);
  EXPECT_EQ(manifest["schemaVersion"], 2);
  EXPECT_EQ(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
  EXPECT_EQ(manifest["config"]["digest"], "sha256:" + img.id);
  ASSERT_EQ(manifest["layers"].size(), 1u);
  EXPECT_EQ(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar");
  EXPECT_EQ(manifest["layers"][0]["digest"], img.diff_ids[0]);
  EXPECT_EQ(manifest["layers"][0]["size"], bytes.size());
  json config = json::parse(get_file(root_ + "/blobs/sha256/" + img.id));
  EXPECT_EQ(config["architecture"], "amd64");
  EXPECT_EQ(config["os"], "linux");
  EXPECT_EQ(config["created"], img.created);
  EXPECT_EQ(config["rootfs"]["type"], "layers");
  EXPECT_EQ(config["rootfs"]["diff_ids"][0], img.diff_ids[0]);
  EXPECT_EQ(config["config"]["Cmd"][0], "/bin/sh");
  // Every blob is named by its content's digest.
  for (auto& e : fs::directory_iterator(root_ + "/blobs/sha256"))
    EXPECT_EQ(sha256_hex(get_file(e.path())), e.path().filename().string());
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 3u);
}

TEST_F(ImageStoreTest, ImportGzipFromPipe) {
  std::string gz = tar_of_tree("-z");
  ASSERT_FALSE(gz.empty());
  ASSERT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);
  auto r = import_via_pipe(gz, "piped:v1");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->ref, "docker.io/library/piped:v1");
  EXPECT_GT(r->size, gz.size());  // blob is the uncompressed tar
  auto dirs = store().layer_dirs(*r);
  ASSERT_TRUE(dirs.has_value());
  EXPECT_EQ(get_file((*dirs)[0] + "/etc/hostname"), "from-gnu-tar\n");
  EXPECT_EQ(fs::read_symlink((*dirs)[0] + "/bin/sh").string(), "busybox");
  // Same content uncompressed gives the same diff_id and shares the layer.
  auto plain = import_bytes(tar_of_tree(""), "plain");
  ASSERT_TRUE(plain.has_value()) << plain.error().message();
  EXPECT_EQ(count_entries(root_ + "/layers"), plain->diff_ids == r->diff_ids ? 1u : 2u);
}

TEST_F(ImageStoreTest, ImportZstdAndXz) {
  for (std::string flags : {"--zstd", "-J", "-j"}) {
    std::string bytes = tar_of_tree(flags);
    if (bytes.empty()) {
      ADD_FAILURE() << "tar " << flags << " unavailable";
      continue;
    }
    auto r = import_bytes(bytes, "localhost/c" + std::to_string(flags.size()));
    ASSERT_TRUE(r.has_value()) << flags << ": " << r.error().message();
    auto dirs = store().layer_dirs(*r);
    ASSERT_TRUE(dirs.has_value());
    EXPECT_EQ(get_file((*dirs)[0] + "/etc/hostname"), "from-gnu-tar\n");
  }
}

// ---- resolve, list, remove ----

TEST_F(ImageStoreTest, ResolveByRefIdAndPrefix) {
  auto a = import_bytes(rootfs_tar("a").bytes(), "busybox");
  ASSERT_TRUE(a.has_value()) << a.error().message();
  auto b = import_bytes(rootfs_tar("b").bytes(), "localhost/other:2");
  ASSERT_TRUE(b.has_value());

  for (const std::string& q : std::vector<std::string>{
           "busybox", "busybox:latest", "library/busybox", "docker.io/library/busybox:latest", a->id,
           "sha256:" + a->id, a->id.substr(0, 4), a->id.substr(0, 12)}) {
    if (q.size() == 4 && b->id.rfind(q, 0) == 0) continue;  // 1 in 65536: both share the prefix
    auto r = store().resolve(q);
    ASSERT_TRUE(r.has_value()) << q << ": " << r.error().message();
    EXPECT_EQ(r->id, a->id) << q;
    EXPECT_EQ(r->ref, "docker.io/library/busybox:latest");
    EXPECT_EQ(r->diff_ids, a->diff_ids);
    EXPECT_EQ(r->created, a->created);
    EXPECT_EQ(r->size, a->size);
    EXPECT_EQ(r->config.cmd, a->config.cmd);
  }
  EXPECT_EQ(store().resolve("localhost/other:2")->id, b->id);

  std::string unused;  // a hex digit neither id starts with
  for (char ch : std::string("0123456789abcdef"))
    if (ch != a->id[0] && ch != b->id[0]) unused = std::string(4, ch);
  for (const std::string& q : std::vector<std::string>{"nosuch", "localhost/other", a->id.substr(0, 3),
                                                       unused + std::string(60, '0'), "sha256:" + unused, unused}) {
    auto r = store().resolve(q);
    ASSERT_FALSE(r.has_value()) << q;
    EXPECT_EQ(r.error().kind(), ErrorKind::kNotFound) << q;
    EXPECT_EQ(r.error().message(), "no such image: " + q);
  }

  auto list = store().list();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 2u);
  std::set<std::string> refs{(*list)[0].ref, (*list)[1].ref};
  EXPECT_EQ(refs, (std::set<std::string>{"docker.io/library/busybox:latest", "localhost/other:2"}));
}

// Writes an image straight into the OCI layout (as the registry work would)
// with a chosen config; returns the config id.
std::string write_raw_image(const std::string& root, const std::string& ref, const std::string& config) {
  std::string cid = sha256_hex(config);
  put_file(root + "/blobs/sha256/" + cid, config);
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                   {"config", {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                               {"digest", "sha256:" + cid}, {"size", config.size()}}},
                   {"layers", json::array()}};
  std::string m = manifest.dump();
  put_file(root + "/blobs/sha256/" + sha256_hex(m), m);
  json index = json::parse(get_file(root + "/index.json"));
  index["manifests"].push_back({{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                {"digest", "sha256:" + sha256_hex(m)},
                                {"size", m.size()},
                                {"annotations", {{"org.opencontainers.image.ref.name", ref}}}});
  put_file(root + "/index.json", index.dump());
  return cid;
}

TEST_F(ImageStoreTest, AmbiguousIdPrefixAndForeignLayout) {
  // Find two configs whose ids share the first 4 hex digits (birthday search).
  std::map<std::string, std::string> seen;
  std::string c1, c2;
  for (int i = 0; c1.empty(); ++i) {
    std::string c = R"({"architecture":"amd64","os":"linux","config":{"User":"u)" + std::to_string(i) +
                    R"(","WorkingDir":"/w","Entrypoint":["/e"]},"rootfs":{"type":"layers","diff_ids":[]}})";
    std::string pre = sha256_hex(c).substr(0, 4);
    if (auto it = seen.find(pre); it != seen.end()) {
      c1 = it->second;
      c2 = c;
    }
    seen[pre] = c;
  }
  std::string id1 = write_raw_image(root_, "localhost/one:latest", c1);
  std::string id2 = write_raw_image(root_, "localhost/two:latest", c2);
  ASSERT_EQ(id1.substr(0, 4), id2.substr(0, 4));

  auto r = store().resolve(id1.substr(0, 4));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("ambiguous"), std::string::npos) << r.error().message();
  EXPECT_FALSE(store().remove(id1.substr(0, 4)).has_value());
  size_t n = 5;
  while (id1.substr(0, n) == id2.substr(0, n)) ++n;
  auto one = store().resolve(id1.substr(0, n));
  ASSERT_TRUE(one.has_value()) << one.error().message();
  EXPECT_EQ(one->ref, "localhost/one:latest");
  EXPECT_EQ(one->config.user.substr(0, 1), "u");
  EXPECT_EQ(one->config.working_dir, "/w");
  EXPECT_EQ(one->config.entrypoint, std::vector<std::string>{"/e"});
  EXPECT_EQ(store().list()->size(), 2u);
}

TEST_F(ImageStoreTest, RemoveCollectsGarbageButKeepsSharedLayers) {
  std::string shared = rootfs_tar("shared").bytes();
  auto a = import_bytes(shared, "localhost/a");
  auto b = import_bytes(shared, "localhost/b");
  auto c = import_bytes(rootfs_tar("own").bytes(), "localhost/c");
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->diff_ids, b->diff_ids);
  std::string shared_dir = root_ + "/layers/" + a->diff_ids[0].substr(7);
  std::string shared_blob = root_ + "/blobs/sha256/" + a->diff_ids[0].substr(7);
  EXPECT_EQ(count_entries(root_ + "/layers"), 2u);

  ASSERT_TRUE(store().remove("localhost/a:latest").has_value());
  EXPECT_EQ(store().list()->size(), 2u);
  EXPECT_EQ(store().resolve("localhost/a").error().kind(), ErrorKind::kNotFound);
  EXPECT_TRUE(exists(shared_dir));
  EXPECT_TRUE(exists(shared_blob));
  auto bd = store().layer_dirs(*store().resolve("localhost/b"));
  ASSERT_TRUE(bd.has_value());
  EXPECT_EQ(get_file((*bd)[0] + "/etc/motd"), "hello shared");

  // By id this time; the shared layer's last user goes.
  ASSERT_TRUE(store().remove(b->id.substr(0, 12)).has_value()) ;
  EXPECT_FALSE(exists(shared_dir));
  EXPECT_FALSE(exists(shared_blob));
  EXPECT_FALSE(exists(root_ + "/blobs/sha256/" + b->manifest_digest.substr(7)));
  EXPECT_EQ(count_entries(root_ + "/layers"), 1u);
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 3u);  // c: layer, config, manifest
  EXPECT_EQ(store().layer_dirs(*b).error().kind(), ErrorKind::kNotFound);

  auto gone = store().remove("localhost/a");
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().kind(), ErrorKind::kNotFound);

  ASSERT_TRUE(store().remove("sha256:" + c->id).has_value());
  EXPECT_EQ(count_entries(root_ + "/layers"), 0u);
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 0u);
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
  EXPECT_TRUE(store().list()->empty());
}

TEST_F(ImageStoreTest, RemoveByIdWithSeveralRefsIsAConflict) {
  auto a = import_bytes(rootfs_tar("x").bytes(), "localhost/x");
  ASSERT_TRUE(a.has_value());
  // Tag the same manifest a second time, by hand, as a registry pull might.
  json index = json::parse(get_file(root_ + "/index.json"));
  json dup = index["manifests"][0];
  dup["annotations"]["org.opencontainers.image.ref.name"] = "localhost/y:latest";
  index["manifests"].push_back(dup);
  put_file(root_ + "/index.json", index.dump());

  auto r = store().remove(a->id);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind(), ErrorKind::kConflict);
  ASSERT_TRUE(store().remove("localhost/x").has_value());
  auto y = store().resolve(a->id);
  ASSERT_TRUE(y.has_value());
  EXPECT_EQ(y->ref, "localhost/y:latest");
  EXPECT_TRUE(store().layer_dirs(*y).has_value());  // GC kept what y needs
  ASSERT_TRUE(store().remove(a->id).has_value());
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 0u);
}

TEST_F(ImageStoreTest, ReimportRetagsAndCollectsOldImage) {
  auto old = import_bytes(rootfs_tar("old").bytes(), "localhost/app:1");
  ASSERT_TRUE(old.has_value());
  auto neu = import_bytes(rootfs_tar("new").bytes(), "localhost/app:1");
  ASSERT_TRUE(neu.has_value());
  auto list = store().list();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, neu->id);
  EXPECT_FALSE(exists(root_ + "/layers/" + old->diff_ids[0].substr(7)));
  EXPECT_FALSE(exists(root_ + "/blobs/sha256/" + old->id));
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 3u);
  EXPECT_EQ(count_entries(root_ + "/layers"), 1u);
}

// A box keeps the layers it was created with, whatever happens to its
// image: retagged by a new import, removed, or both.
TEST_F(ImageStoreTest, LayersBoxesUseSurviveRetagAndRemove) {
  auto old = import_bytes(rootfs_tar("old").bytes(), "localhost/app");
  ASSERT_TRUE(old.has_value());
  auto old_dirs = store().layer_dirs(*old);
  ASSERT_TRUE(old_dirs.has_value());
  in_use_ = *old_dirs;  // a box (any state) was created from `old`
  // A path spelled through another home (a symlink, "..") names the same layer.
  in_use_[0] = tmp_.path() + "/home/../home/images/layers/" + old->diff_ids[0].substr(7);

  auto neu = import_bytes(rootfs_tar("new").bytes(), "localhost/app");  // retags: `old` is untagged
  ASSERT_TRUE(neu.has_value());
  EXPECT_FALSE(exists(root_ + "/blobs/sha256/" + old->id)) << "an untagged image's blobs are garbage";
  EXPECT_EQ(get_file((*old_dirs)[0] + "/etc/motd"), "hello old") << "retag took a box's layer";
  ASSERT_TRUE(store().remove("localhost/app").has_value());
  EXPECT_EQ(get_file((*old_dirs)[0] + "/etc/motd"), "hello old") << "rmi took a box's layer";
  EXPECT_FALSE(exists(root_ + "/layers/" + neu->diff_ids[0].substr(7))) << "no box used the new layer";

  // The box store cannot be read: keep everything rather than guess.
  in_use_fails_ = true;
  in_use_.clear();
  ASSERT_TRUE(store().collect_garbage().has_value());
  EXPECT_TRUE(exists((*old_dirs)[0]));
  in_use_fails_ = false;  // the box is removed: its layer goes with the next GC
  ASSERT_TRUE(store().collect_garbage().has_value());
  EXPECT_EQ(count_entries(root_ + "/layers"), 0u);
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
}

// A store nobody told about boxes (no set_layers_in_use) removes blobs but
// never a layer: it cannot know whether a box mounts it.
TEST_F(ImageStoreTest, WithoutKnowingTheBoxesNoLayerIsRemoved) {
  auto a = import_bytes(rootfs_tar("a").bytes(), "localhost/a");
  ASSERT_TRUE(a.has_value());
  auto blind = ImageStore::open(root_);
  ASSERT_TRUE(blind.has_value());
  ASSERT_TRUE(blind->remove("localhost/a").has_value());
  EXPECT_TRUE(exists(root_ + "/layers/" + a->diff_ids[0].substr(7)));
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 0u);
  ASSERT_TRUE(store().collect_garbage().has_value());
  EXPECT_EQ(count_entries(root_ + "/layers"), 0u);
}

TEST_F(ImageStoreTest, DamagedImageIsSkippedButCanBeUntagged) {
  auto good = import_bytes(rootfs_tar("good").bytes(), "localhost/good");
  auto bad = import_bytes(rootfs_tar("bad").bytes(), "localhost/bad");
  ASSERT_TRUE(good && bad);
  ASSERT_EQ(::unlink((root_ + "/blobs/sha256/" + bad->manifest_digest.substr(7)).c_str()), 0);
  auto list = store().list();
  ASSERT_TRUE(list.has_value());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].ref, "localhost/good:latest");
  EXPECT_EQ(store().resolve("localhost/bad").error().kind(), ErrorKind::kNotFound);
  ASSERT_TRUE(store().remove("localhost/bad").has_value());
  EXPECT_FALSE(exists(root_ + "/layers/" + bad->diff_ids[0].substr(7)));
  EXPECT_EQ(count_entries(root_ + "/blobs/sha256"), 3u);
  EXPECT_EQ(count_entries(root_ + "/layers"), 1u);
}

// ---- unpack safety ----

TEST_F(ImageStoreTest, RejectsDotDot) {
  expect_rejected(Tar().dir("./").file("../x_marker", "pwned").bytes(), "../x_marker");
  expect_rejected(Tar().dir("a").file("a/../../x_marker", "pwned").bytes(), "a/../../x_marker");
  EXPECT_FALSE(found_below(tmp_.path(), "x_marker"));
}

TEST_F(ImageStoreTest, RejectsAbsolutePaths) {
  std::string target = outside_ + "/abs_marker";
  expect_rejected(Tar().file(target, "pwned").bytes(), target);
  expect_rejected(Tar().dir("/").bytes(), "\"/\"");
  EXPECT_FALSE(exists(target));
}

TEST_F(ImageStoreTest, RejectsWritesThroughAbsoluteSymlink) {
  // Same shape as evil -> /etc, evil/passwd, aimed at a directory we own.
  expect_rejected(Tar().symlink("evil", outside_).file("evil/passwd", "root::0:0::/:/bin/sh\n").bytes(),
                  "evil/passwd");
  EXPECT_FALSE(exists(outside_ + "/passwd"));
  // Deeper, and via a directory entry first.
  expect_rejected(Tar().dir("d").symlink("d/evil", outside_).dir("d/evil/sub").bytes(), "d/evil/sub");
  EXPECT_FALSE(exists(outside_ + "/sub"));
}

TEST_F(ImageStoreTest, RejectsWritesThroughRelativeSymlink) {
  for (std::string up : {"../../..", "../../../../..", "../../../../../../../../../.."}) {
    SCOPED_TRACE(up);
    expect_rejected(Tar().dir("./").symlink("./evil", up).file("./evil/x_marker", "pwned").bytes(),
                    "evil/x_marker");
  }
  EXPECT_FALSE(found_below(tmp_.path(), "x_marker"));
  EXPECT_FALSE(exists("/x_marker"));
}

TEST_F(ImageStoreTest, RejectsEscapingHardlinks) {
  put_file(outside_ + "/secret", "secret");
  expect_rejected(Tar().hardlink("link", "../../etc/passwd").bytes(), "entry \"link\"");
  expect_rejected(Tar().hardlink("link", "/etc/passwd").bytes(), "/etc/passwd");
  // A hardlink through an archive symlink would pull an outside file in.
  expect_rejected(Tar().symlink("evil", outside_).hardlink("h", "evil/secret").bytes(), "\"h\"");
  // A hardlink to a symlink is a symlink: writing through it is refused too.
  expect_rejected(
      Tar().symlink("evil", outside_).hardlink("alias", "evil").file("alias/x_marker", "x").bytes(),
      "alias/x_marker");
  struct stat st;
  ASSERT_EQ(::stat((outside_ + "/secret").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_FALSE(found_below(tmp_.path(), "x_marker"));
}

TEST_F(ImageStoreTest, ReplacingASymlinkWithADirectoryIsFine) {
  Tar t;
  t.symlink("d", outside_).dir("d").file("d/inside", "ok");
  auto r = import_bytes(t.bytes(), "localhost/replaced");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(get_file((*store().layer_dirs(*r))[0] + "/d/inside"), "ok");
  EXPECT_FALSE(exists(outside_ + "/inside"));
}

// ---- corrupt input and bad references ----

TEST_F(ImageStoreTest, RejectsCorruptInput) {
  std::mt19937 rng(42);
  std::string noise(8192, '\0');
  for (auto& ch : noise) ch = static_cast<char>(rng());
  noise[0] = 'N';  // no compression magic
  expect_rejected(noise, "corrupt archive");
  expect_rejected("", "corrupt archive: empty input");
  expect_rejected("hello\n", "corrupt archive");

  std::string gz = tar_of_tree("-z");
  ASSERT_GT(gz.size(), 100u);
  expect_rejected(gz.substr(0, gz.size() / 2), "corrupt archive");
  std::string plain = rootfs_tar("t").file("big", std::string(5000, 'x')).bytes();
  expect_rejected(plain.substr(0, plain.size() - 1024 - 2048), "corrupt archive");

  // Empty input through a pipe.
  auto before = snapshot(root_);
  auto r = import_via_pipe("", "localhost/empty");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind(), ErrorKind::kInvalid);
  EXPECT_NE(r.error().message().find("corrupt archive"), std::string::npos);
  EXPECT_EQ(snapshot(root_), before);
}

TEST_F(ImageStoreTest, BadReferenceChangesNothing) {
  std::string good = rootfs_tar("g").bytes();
  for (const std::string& ref : std::vector<std::string>{"UPPER", "a//b", "bad ref", "", "x:", "x@sha256:1234",
                                                       "x@sha256:" + std::string(64, 'a')}) {
    expect_rejected(good, "invalid reference \"" + ref + "\"", ref);
  }
}

// ---- concurrency ----

TEST_F(ImageStoreTest, ConcurrentThreadImportsShareOneLayer) {
  std::string bytes = rootfs_tar("conc").bytes();
  std::string path = tmp_.path() + "/conc.tar";
  put_file(path, bytes);
  constexpr int kN = 8;
  std::vector<std::string> errors(kN);
  std::vector<std::thread> threads;
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      auto s = ImageStore::open(root_);  // opens race too
      if (!s) { errors[i] = s.error().message(); return; }
      UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      auto r = s->import_tarball(fd.get(), "localhost/t" + std::to_string(i));
      if (!r) errors[i] = r.error().message();
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kN; ++i) EXPECT_EQ(errors[i], "") << "thread " << i;
  auto list = store().list();
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(list->size(), static_cast<size_t>(kN));
  EXPECT_EQ(count_entries(root_ + "/layers"), 1u);
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
  for (const auto& img : *list) {
    auto d = store().layer_dirs(img);
    ASSERT_TRUE(d.has_value()) << img.ref;
    EXPECT_EQ(get_file((*d)[0] + "/etc/motd"), "hello conc");
  }
}

TEST_F(ImageStoreTest, ConcurrentProcessesImportWhileOthersRemove) {
  // Pre-existing images using the same layer get removed while new ones
  // import it: GC must never take the layer from under a committing import.
  std::string bytes = rootfs_tar("proc").bytes();
  std::string path = tmp_.path() + "/proc.tar";
  put_file(path, bytes);
  constexpr int kImporters = 8, kRemovers = 4;
  for (int i = 0; i < kRemovers; ++i) ASSERT_TRUE(import_bytes(bytes, "localhost/old" + std::to_string(i)));

  std::vector<pid_t> pids;
  for (int i = 0; i < kImporters + kRemovers; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto s = ImageStore::open(root_);
      if (!s) ::_exit(2);
      if (i < kImporters) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        auto r = s->import_tarball(fd, "localhost/p" + std::to_string(i));
        if (!r) {
          std::fprintf(stderr, "child %d: %s\n", i, r.error().message().c_str());
          ::_exit(1);
        }
      } else {
        auto r = s->remove("localhost/old" + std::to_string(i - kImporters));
        if (!r) {
          std::fprintf(stderr, "child %d: %s\n", i, r.error().message().c_str());
          ::_exit(1);
        }
      }
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  auto list = store().list();
  ASSERT_TRUE(list.has_value());
  EXPECT_EQ(list->size(), static_cast<size_t>(kImporters));
  for (const auto& img : *list) {
    EXPECT_EQ(img.ref.substr(0, 11), "localhost/p");
    auto d = store().layer_dirs(img);
    ASSERT_TRUE(d.has_value()) << img.ref << ": " << d.error().message();
    EXPECT_EQ(get_file((*d)[0] + "/etc/motd"), "hello proc");
  }
  EXPECT_EQ(count_entries(root_ + "/layers"), 1u);
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
}

// A crashed importer's work area is swept on the next open.
TEST_F(ImageStoreTest, StaleWorkAreasAreSwept) {
  put_file(root_ + "/tmp/import-dead00.lock", "");
  ASSERT_EQ(::mkdir((root_ + "/tmp/import-dead00.d").c_str(), 0700), 0);
  put_file(root_ + "/tmp/import-dead00.d/layer.tar", "partial");
  ASSERT_EQ(::mkdir((root_ + "/tmp/gc-abc123").c_str(), 0700), 0);
  // Opening the store takes no lock and sweeps nothing (every CLI call opens
  // it); the next import, which holds the lock, sweeps the leftovers.
  ASSERT_TRUE(ImageStore::open(root_).has_value());
  EXPECT_EQ(count_entries(root_ + "/tmp"), 3u);
  ASSERT_TRUE(import_bytes(rootfs_tar("sweep").bytes(), "localhost/sweeper").has_value());
  EXPECT_EQ(count_entries(root_ + "/tmp"), 0u);
}

// A new store's index.json and oci-layout are written without fsync (the
// first commit's syncfs covers them), so a crash before that commit can
// leave them empty: such a store opens as a new one and works.
TEST_F(ImageStoreTest, StoreEmptiedByACrashBeforeItsFirstCommitOpensAsNew) {
  ASSERT_TRUE(ImageStore::open(root_).has_value());
  put_file(root_ + "/index.json", "");
  put_file(root_ + "/oci-layout", "");
  auto reopened = ImageStore::open(root_);
  ASSERT_TRUE(reopened.has_value()) << reopened.error().message();
  EXPECT_EQ(json::parse(get_file(root_ + "/oci-layout"))["imageLayoutVersion"], "1.0.0");
  EXPECT_EQ(json::parse(get_file(root_ + "/index.json"))["manifests"].size(), 0u);
  put_file(root_ + "/index.json", "");  // and read as empty where it is found so
  ASSERT_TRUE(reopened->list().has_value());
  EXPECT_EQ(reopened->list()->size(), 0u);
  ASSERT_TRUE(import_bytes(rootfs_tar("after").bytes(), "localhost/after-crash").has_value());
  EXPECT_EQ(store().list()->size(), 1u);
}

}  // namespace
}  // namespace cubby::image
