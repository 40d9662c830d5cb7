// The image store. Layout under root (an OCI image-layout, plus cubby's own
// unpacked-layer cache and bookkeeping):
//
//   oci-layout                {"imageLayoutVersion":"1.0.0"}
//   index.json                OCI image index; each image is a manifest
//                             descriptor annotated with
//                             org.opencontainers.image.ref.name = normalised ref
//   blobs/sha256/<hex>        manifests, configs and layer blobs
//   layers/<diff-id hex>/     unpacked layers, shared by every image using them
//   lock                      flock(2) lock serialising every change
//   tmp/                      work areas of running imports and GC
//
// Concurrency protocol (for everyone who extends the store, e.g. registry
// pull): slow work (reading, hashing, unpacking) happens in a private work
// area tmp/<name>.d, whose owner holds an flock on tmp/<name>.lock for its
// lifetime. Making things visible (renaming blobs and layer dirs into place,
// rewriting index.json) and garbage collection happen only while holding an
// exclusive flock on `lock`. GC is mark-and-sweep from index.json plus the
// layers boxes use (set_layers_in_use, asked under that lock), so anything
// renamed into blobs/ or layers/ must be referenced by index.json before
// the lock is released. Readers take the lock shared, so they never see
// blobs vanish between reading index.json and reading the blobs; the
// runtime records a new box's layers under the shared lock for the same reason.
// index.json is replaced atomically (temp file + fsync + rename).
#include "image/image_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "image/digest.h"
#include "image/media_types.h"
#include "image/registry_config.h"
#include "image/unpack.h"

namespace cubby::image {
namespace {

using json = nlohmann::json;


constexpr char kDefaultPath[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Paths {
  explicit Paths(const std::string& r)
      : root(r),
        blobs(r + "/blobs/sha256"),
        layers(r + "/layers"),
        tmp(r + "/tmp"),
        index(r + "/index.json"),
        lock(r + "/lock"),
        layout(r + "/oci-layout") {}
  std::string root, blobs, layers, tmp, index, lock, layout;
  std::string blob(const std::string& hex) const { return blobs + "/" + hex; }
  std::string layer(const std::string& hex) const { return layers + "/" + hex; }
};

bool path_exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

Result<void> fsync_dir(const std::string& p) {
  UniqueFd fd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) < 0) return sys_fail("fsync " + p);
  return {};
}

// Writes a file that becomes visible all at once: unique temp file in the
// same directory, fsync, rename, fsync of the directory. Without durable,
// no fsyncs: after a crash the file may be missing or empty (see
// ImageStore::open).
Result<void> write_atomic(const std::string& path, std::string_view data, bool durable = true) {
  std::string tmpl = path + ".tmp-XXXXXX";
  UniqueFd fd(::mkostemp(tmpl.data(), O_CLOEXEC));
  if (!fd) return sys_fail("create temp file for " + path);
  auto cleanup_fail = [&](const std::string& what, int e) -> Result<void> {
    ::unlink(tmpl.c_str());
    return sys_fail(what, e);
  };
  if (::fchmod(fd.get(), 0600) < 0) return cleanup_fail("chmod " + tmpl, errno);
  if (auto w = sys::write_all(fd.get(), data.data(), data.size()); !w) {
    ::unlink(tmpl.c_str());
    return fail(w.error().wrap("write " + tmpl));
  }
  if (durable && ::fsync(fd.get()) < 0) return cleanup_fail("fsync " + tmpl, errno);
  fd.reset();
  if (::rename(tmpl.c_str(), path.c_str()) < 0) return cleanup_fail("rename " + tmpl + " to " + path, errno);
  if (!durable) return {};
  size_t slash = path.rfind('/');
  return fsync_dir(slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash));
}

// Writes a small file (blob) with fsync, not yet visible anywhere.
Result<void> write_synced(const std::string& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd) return sys_fail("create " + path);
  if (auto w = sys::write_all(fd.get(), data.data(), data.size()); !w)
    return fail(w.error().wrap("write " + path));
  if (::fsync(fd.get()) < 0) return sys_fail("fsync " + path);
  return {};
}

// An flock on the store's lock file, released on destruction.
class StoreLock {
 public:
  static Result<StoreLock> acquire(const std::string& path, bool exclusive) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) return sys_fail("open lock " + path);
    while (::flock(fd.get(), exclusive ? LOCK_EX : LOCK_SH) < 0) {
      if (errno != EINTR) return sys_fail("flock " + path);
    }
    return StoreLock(std::move(fd));
  }

 private:
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing the fd releases the lock
};

// Removes leftovers of crashed imports and interrupted GC from tmp/. Call
// with the store lock held exclusively: work areas are created under the
// shared lock, so every .lock file seen here is either locked by a live
// owner or abandoned.
void sweep_tmp(const Paths& p) {
  std::vector<std::string> names = list_dir(p.tmp);
  std::set<std::string> all(names.begin(), names.end());
  for (const auto& n : names) {
    std::string full = p.tmp + "/" + n;
    if (n.size() > 5 && n.ends_with(".lock")) {
      UniqueFd fd(::open(full.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
      if (!fd || ::flock(fd.get(), LOCK_EX | LOCK_NB) < 0) continue;  // owner alive
      struct stat a, b;
      if (::fstat(fd.get(), &a) < 0 || ::lstat(full.c_str(), &b) < 0 || a.st_ino != b.st_ino) continue;
      (void)remove_tree(full.substr(0, full.size() - 5) + ".d");
      ::unlink(full.c_str());
      LOG_INFO("image store: removed stale work area {}", full);
    } else if (n.size() > 2 && n.ends_with(".d")) {
      if (all.count(n.substr(0, n.size() - 2) + ".lock")) continue;
      if (path_exists(full.substr(0, full.size() - 2) + ".lock")) continue;  // just created
      (void)remove_tree(full);
    } else if (n.starts_with("gc-")) {
      (void)remove_tree(full);
    }
  }
}

Result<std::string> digest_hex(const json& digest) {
  if (!digest.is_string()) return fail(Error::internal("descriptor without a digest"));
  const std::string& s = digest.get_ref<const std::string&>();
  if (s.rfind("sha256:", 0) != 0 || !is_sha256_hex(s.substr(7)))
    return fail(Error::internal("unsupported digest \"" + s + "\""));
  return s.substr(7);
}

Result<json> read_json(const std::string& path) {
  std::string text = CUBBY_TRY(read_file(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail(Error::internal("corrupt JSON in " + path));
  return j;
}

json empty_index() {
  return json{{"schemaVersion", 2}, {"mediaType", kOciIndex}, {"manifests", json::array()}};
}

// Whether path is a file with something in it.
bool has_content(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && st.st_size > 0;
}

Result<json> read_index(const Paths& p) {
  // Empty: the initial index of a store that crashed before its first
  // commit (open() writes it without fsync); later ones are written durably.
  if (!has_content(p.index)) return empty_index();
  json j = CUBBY_TRY(read_json(p.index));
  if (!j.contains("manifests")) j["manifests"] = json::array();
  if (!j["manifests"].is_array()) return fail(Error::internal("corrupt index " + p.index + ": manifests is not an array"));
  return j;
}

Result<void> write_index(const Paths& p, const json& index) {
  return write_atomic(p.index, index.dump(2) + "\n");
}

bool is_image_manifest_type(const std::string& mt) { return mt == kOciManifest || mt == kDockerManifest; }

std::string ref_of(const json& desc) {
  if (!desc.is_object() || !desc.contains("annotations") || !desc["annotations"].is_object()) return {};
  auto it = desc["annotations"].find(kRefAnnotation);
  if (it == desc["annotations"].end() || !it->is_string()) return {};
  return it->get<std::string>();
}

std::vector<std::string> string_list(const json& obj, const char* key) {
  std::vector<std::string> out;
  if (!obj.is_object() || !obj.contains(key) || !obj[key].is_array()) return out;
  for (const auto& v : obj[key])
    if (v.is_string()) out.push_back(v.get<std::string>());
  return out;
}

std::string string_field(const json& obj, const char* key) {
  if (!obj.is_object() || !obj.contains(key) || !obj[key].is_string()) return {};
  return obj[key].get<std::string>();
}

// Loads an image from its index descriptor (manifest + config blobs).
Result<ImageInfo> load_image(const Paths& p, const json& desc) {
  try {
    ImageInfo info;
    info.ref = ref_of(desc);
    std::string mhex = CUBBY_TRY(digest_hex(desc.at("digest")));
    info.manifest_digest = "sha256:" + mhex;
    json manifest = CUBBY_TRY(read_json(p.blob(mhex)));
    std::string chex = CUBBY_TRY(digest_hex(manifest.at("config").at("digest")));
    json config = CUBBY_TRY(read_json(p.blob(chex)));
    info.id = chex;
    info.created = string_field(config, "created");
    if (manifest.contains("layers"))
      for (const auto& l : manifest.at("layers")) info.size += l.at("size").get<uint64_t>();
    if (config.contains("rootfs")) info.diff_ids = string_list(config["rootfs"], "diff_ids");
    if (config.contains("config") && config["config"].is_object()) {
      const json& c = config["config"];
      info.config.entrypoint = string_list(c, "Entrypoint");
      info.config.cmd = string_list(c, "Cmd");
      info.config.env = string_list(c, "Env");
      info.config.working_dir = string_field(c, "WorkingDir");
      info.config.user = string_field(c, "User");
      if (c.contains("ExposedPorts") && c["ExposedPorts"].is_object())
        for (auto it = c["ExposedPorts"].begin(); it != c["ExposedPorts"].end(); ++it)
          info.config.exposed_ports.push_back(it.key());
    }
    return info;
  } catch (const json::exception& e) {
    return fail(Error::internal("corrupt image metadata for " + ref_of(desc) + ": " + e.what()));
  }
}

struct Loaded {
  size_t pos;  // index into index["manifests"]
  ImageInfo info;
};

std::vector<Loaded> load_all(const Paths& p, const json& index) {
  std::vector<Loaded> out;
  const json& ms = index["manifests"];
  for (size_t i = 0; i < ms.size(); ++i) {
    const json& d = ms[i];
    if (!d.is_object() || ref_of(d).empty()) continue;
    if (!is_image_manifest_type(string_field(d, "mediaType"))) continue;  // e.g. a multi-arch index
    auto info = load_image(p, d);
    if (!info) {
      LOG_WARN("image store: skipping {}: {}", ref_of(d), info.error().message());
      continue;
    }
    out.push_back({i, std::move(*info)});
  }
  return out;
}

std::string repo_of(const std::string& ref) {
  std::string r = ref.substr(0, ref.find('@'));
  size_t slash = r.rfind('/'), colon = r.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) r.resize(colon);
  return r;
}

bool is_hex(const std::string& s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return !s.empty();
}

struct Match {
  std::vector<const Loaded*> entries;
  bool by_ref = false;
};

// Looks up by normalised reference, full id ("sha256:" optional) or unique
// id prefix of >= 4 hex chars.
Result<Match> find_images(const std::vector<Loaded>& all, const std::string& q) {
  std::string s = q;
  bool explicit_id = s.rfind("sha256:", 0) == 0;
  if (explicit_id) s = s.substr(7);

  auto by_id = [&](const std::string& prefix) -> Result<Match> {
    Match m;
    std::set<std::string> ids;
    for (const auto& l : all)
      if (l.info.id.rfind(prefix, 0) == 0) {
        m.entries.push_back(&l);
        ids.insert(l.info.id);
      }
    if (ids.size() > 1) {
      std::string list;
      for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id.substr(0, 12);
      return fail(Error::invalid("ambiguous image id prefix \"" + q + "\": matches " + list));
    }
    return m;
  };

  if (is_hex(s) && s.size() == 64) {
    Match m = CUBBY_TRY(by_id(s));
    if (!m.entries.empty()) return m;
  } else if (!explicit_id) {
    if (auto n = normalize_ref(q)) {
      Match m;
      m.by_ref = true;
      for (const auto& l : all)
        if (l.info.ref == *n) m.entries.push_back(&l);
      if (m.entries.empty() && n->find('@') != std::string::npos) {
        std::string repo = repo_of(*n), digest = n->substr(n->find('@') + 1);
        for (const auto& l : all)
          if (repo_of(l.info.ref) == repo && l.info.manifest_digest == digest) {
            m.entries.push_back(&l);
            break;
          }
      }
      if (!m.entries.empty()) return m;
    }
  }
  if (is_hex(s) && s.size() >= 4 && s.size() < 64) {
    Match m = CUBBY_TRY(by_id(s));
    if (!m.entries.empty()) return m;
  }
  return fail(Error::not_found("no such image: " + q));
}

// Marks everything reachable from an index descriptor. Returns false if some
// metadata could not be read, in which case nothing may be deleted.
bool mark(const Paths& p, const json& desc, std::unordered_set<std::string>& blobs,
          std::unordered_set<std::string>& layers, int depth = 0) {
  if (depth > 4 || !desc.is_object()) return false;
  auto hex = digest_hex(desc.contains("digest") ? desc["digest"] : json());
  if (!hex) return false;
  blobs.insert(*hex);
  std::string mt = string_field(desc, "mediaType");
  bool is_manifest = is_image_manifest_type(mt);
  bool is_index = mt == kOciIndex || mt == kDockerList;
  if (!is_manifest && !is_index) return true;  // some other artifact: keep the blob itself
  std::string path = p.blob(*hex);
  if (!path_exists(path)) return depth > 0;  // a child of an index may be absent (other platforms)
  auto j = read_json(path);
  if (!j) return false;
  try {
    if (is_index) {
      for (const auto& child : (*j)["manifests"])
        if (!mark(p, child, blobs, layers, depth + 1)) return false;
      return true;
    }
    auto chex = digest_hex((*j)["config"]["digest"]);
    if (!chex) return false;
    blobs.insert(*chex);
    for (const auto& l : (*j)["layers"]) {
      auto lhex = digest_hex(l["digest"]);
      if (!lhex) return false;
      blobs.insert(*lhex);
    }
    if (path_exists(p.blob(*chex))) {
      auto config = read_json(p.blob(*chex));
      if (!config) return false;
      if (config->contains("rootfs"))
        for (const auto& d : string_list((*config)["rootfs"], "diff_ids"))
          if (d.rfind("sha256:", 0) == 0) layers.insert(d.substr(7));
    }
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

// Mark-and-sweep of blobs and unpacked layers against index, keeping the
// layers in_use names too (see ImageStore::set_layers_in_use). Call with
// the store lock held exclusively. Failures are logged: a GC problem never
// undoes a successful change.
void mark_and_sweep(const Paths& p, const json& index, const ImageStore::LayersInUse& in_use) {
  std::unordered_set<std::string> blobs, layers;
  for (const auto& d : index["manifests"]) {
    if (!mark(p, d, blobs, layers)) {
      LOG_WARN("image store: unreadable metadata for {}; skipping garbage collection", d.dump());
      return;
    }
  }
  for (const auto& n : list_dir(p.blobs)) {
    if (blobs.count(n)) continue;
    if (::unlink(p.blob(n).c_str()) < 0 && errno != ENOENT)
      LOG_WARN("image store: unlink {}: {}", p.blob(n), std::strerror(errno));
  }
  if (!in_use) return;  // who else uses a layer is unknown: keep them all
  auto used = in_use();
  if (!used) {
    LOG_WARN("image store: keeping every layer: {}", used.error().message());
    return;
  }
  for (const auto& dir : *used) layers.insert(dir.substr(dir.rfind('/') + 1));
  for (const auto& n : list_dir(p.layers)) {
    if (layers.count(n)) continue;
    // Rename away first so the layer disappears atomically, then delete.
    std::string tmpl = p.tmp + "/gc-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      LOG_WARN("image store: mkdtemp in {}: {}", p.tmp, std::strerror(errno));
      continue;
    }
    if (::rename(p.layer(n).c_str(), tmpl.c_str()) < 0) {
      LOG_WARN("image store: rename {}: {}", p.layer(n), std::strerror(errno));
      ::rmdir(tmpl.c_str());
      continue;
    }
    if (auto r = remove_tree(tmpl); !r) LOG_WARN("image store: {}", r.error().message());
  }
}

// The work areas this process holds, for remove_live_staging_areas().
std::mutex g_live_areas_mu;
std::map<std::string, std::string> g_live_areas;  // lock file -> directory

void forget_live_area(const std::string& lock) {
  std::lock_guard g(g_live_areas_mu);
  g_live_areas.erase(lock);
}

}  // namespace

void remove_live_staging_areas() {
  std::lock_guard g(g_live_areas_mu);
  for (const auto& [lock, dir] : g_live_areas) {
    // The process's other threads may still be writing here: each pass
    // removes what exists, and nothing can be made in a directory already
    // removed, so a few passes leave nothing (the bound is a backstop).
    for (int pass = 0; pass < 100 && path_exists(dir); ++pass) (void)remove_tree(dir);
    ::unlink(lock.c_str());
  }
  g_live_areas.clear();
}

StagingArea::StagingArea(StagingArea&& o) noexcept
    : dir_(std::exchange(o.dir_, {})), lock_path_(std::exchange(o.lock_path_, {})),
      lock_fd_(std::move(o.lock_fd_)) {}

Result<uint64_t> ImageStore::stage_limit() const {
  auto n = CUBBY_TRY(configured_stage_limit(root_.substr(0, root_.rfind('/'))));
  return n.value_or(kDefaultStageLimit);
}

StagingArea::~StagingArea() {
  // Directory first, then the lock file: a sweeper that sees a .d without
  // its .lock may remove it.
  if (!lock_path_.empty()) forget_live_area(lock_path_);
  if (!dir_.empty()) {
    if (auto r = remove_tree(dir_); !r) LOG_WARN("image store: {}", r.error().message());
  }
  if (!lock_path_.empty()) ::unlink(lock_path_.c_str());
}

// Creation holds the store lock shared, so a sweeper (which holds it
// exclusively) never sees the lock file before it is locked.
Result<StagingArea> ImageStore::stage(const std::string& kind) {
  Paths p(root_);
  auto store_lock = CUBBY_TRY(StoreLock::acquire(p.lock, false));
  std::string tmpl = p.tmp + "/" + kind + "-XXXXXX.lock";
  StagingArea w;
  // Registered from birth, under the registry's lock: a dying process's
  // remove_live_staging_areas() waits for a creation in progress instead
  // of missing the area it is making. (Declared after w: it unlocks before
  // w's destructor takes it again on an error.)
  std::lock_guard live(g_live_areas_mu);
  UniqueFd fd(::mkostemps(tmpl.data(), 5, O_CLOEXEC));
  if (!fd) return sys_fail("create work area lock in " + p.tmp);
  std::string dir = tmpl.substr(0, tmpl.size() - 5) + ".d";
  w.lock_path_ = tmpl;
  w.lock_fd_ = std::move(fd);
  g_live_areas[tmpl] = dir;
  if (::flock(w.lock_fd_.get(), LOCK_EX | LOCK_NB) < 0) return sys_fail("flock " + tmpl);
  if (::mkdir(dir.c_str(), 0700) < 0) return sys_fail("mkdir " + dir);
  // Canonical: unpacking wants a path without symlinks.
  char real[PATH_MAX];
  if (!::realpath(dir.c_str(), real)) {
    int e = errno;
    ::rmdir(dir.c_str());
    return sys_fail("realpath " + dir, e);
  }
  w.dir_ = real;
  g_live_areas[tmpl] = w.dir_;
  return w;
}

bool ImageStore::has_blob(const std::string& hex) const { return path_exists(Paths(root_).blob(hex)); }
bool ImageStore::has_layer(const std::string& hex) const { return path_exists(Paths(root_).layer(hex)); }

Result<void> ImageStore::with_read_lock(const std::function<Result<void>()>& f) {
  auto lock = CUBBY_TRY(StoreLock::acquire(Paths(root_).lock, false));
  return f();
}

Result<std::string> ImageStore::read_blob(const std::string& hex, size_t limit) const {
  if (!is_sha256_hex(hex)) return fail(Error::invalid("bad digest \"" + hex + "\""));
  return read_file(blob_path(hex), limit);
}

Result<ImageInfo> ImageStore::commit(StagingArea& area, const StagedImage& img) {
  (void)area;  // keeps the staged files alive (and guarded) until we are done
  Paths p(root_);
  auto ctx = [&](const Error& e) { return std::unexpected<Error>(e.wrap("store " + img.ref)); };
  if (!is_image_manifest_type(img.manifest_media_type))
    return ctx(Error::invalid("unsupported manifest media type \"" + img.manifest_media_type + "\""));
  std::string manifest_hex = sha256_hex(img.manifest_bytes);
  json manifest = json::parse(img.manifest_bytes, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object()) return ctx(Error::invalid("manifest is not a JSON object"));
  std::vector<std::string> needed;
  try {
    needed.push_back(CUBBY_TRY(digest_hex(manifest.at("config").at("digest"))));
    for (const auto& l : manifest.at("layers")) needed.push_back(CUBBY_TRY(digest_hex(l.at("digest"))));
  } catch (const json::exception& e) {
    return ctx(Error::invalid(std::string("malformed manifest: ") + e.what()));
  }
  std::string manifest_tmp = area.dir() + "/manifest-" + manifest_hex;
  if (!path_exists(manifest_tmp)) {  // no fsync of its own: the syncfs below covers it
    if (auto r = write_file(manifest_tmp, img.manifest_bytes, 0600); !r) return ctx(r.error());
  }
  {
    UniqueFd dfd(::open(area.dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd || ::syncfs(dfd.get()) < 0) return ctx(Error::sys("sync " + area.dir()));
  }

  auto lock = StoreLock::acquire(p.lock, true);
  if (!lock) return ctx(lock.error());
  auto index = read_index(p);
  if (!index) return ctx(index.error());
  auto place = [&](const std::string& from, const std::string& to) -> Result<void> {
    if (path_exists(to)) return {};  // same digest, same content: already there
    if (::rename(from.c_str(), to.c_str()) < 0) return sys_fail("rename " + from + " to " + to);
    return {};
  };
  auto commit = [&]() -> Result<void> {
    for (const auto& hex : needed)
      if (!img.blobs.count(hex) && !path_exists(p.blob(hex)))
        return fail(Error::conflict("blob sha256:" + hex + " vanished from the store (removed concurrently?); try again"));
    for (const auto& [hex, from] : img.blobs) CUBBY_TRYV(place(from, p.blob(hex)));
    CUBBY_TRYV(place(manifest_tmp, p.blob(manifest_hex)));
    for (const auto& [hex, from] : img.layers) CUBBY_TRYV(place(from, p.layer(hex)));
    // Every layer the config names must now be unpacked.
    auto cfg = CUBBY_TRY(read_json(p.blob(needed.front())));
    if (cfg.contains("rootfs"))
      for (const auto& d : string_list(cfg["rootfs"], "diff_ids"))
        if (d.rfind("sha256:", 0) != 0 || !path_exists(p.layer(d.substr(7))))
          return fail(Error::conflict("layer " + d + " vanished from the store (removed concurrently?); try again"));
    CUBBY_TRYV(fsync_dir(p.layers));
    CUBBY_TRYV(fsync_dir(p.blobs));
    json& ms = (*index)["manifests"];
    json kept = json::array();
    for (const auto& d : ms)
      if (ref_of(d) != img.ref) kept.push_back(d);
    json desc = {{"mediaType", img.manifest_media_type},
                 {"digest", "sha256:" + manifest_hex},
                 {"size", img.manifest_bytes.size()},
                 {"annotations", {{kRefAnnotation, img.ref}}}};
    if (cfg.contains("architecture") && cfg["architecture"].is_string() && cfg.contains("os") && cfg["os"].is_string())
      desc["platform"] = {{"architecture", cfg["architecture"]}, {"os", cfg["os"]}};
    kept.push_back(std::move(desc));
    ms = std::move(kept);
    return write_index(p, *index);
  };
  auto committed = commit();
  auto on_disk = read_index(p);
  if (on_disk) mark_and_sweep(p, *on_disk, layers_in_use_);
  if (!committed) return ctx(committed.error());
  if (!on_disk) return ctx(on_disk.error());
  for (const auto& d : (*on_disk)["manifests"])
    if (ref_of(d) == img.ref) {
      auto info = load_image(p, d);
      if (!info) return ctx(info.error());
      return info;
    }
  return ctx(Error::internal("image vanished right after commit"));
}

Result<ImageStore> ImageStore::open(const std::string& root) {
  if (root.empty()) return fail(Error::invalid("image store root is empty"));
  Paths p(root);
  // Every CLI call opens the store: the common case (it exists) is a few
  // stat calls and takes no lock, so `exec` and `ls` never queue behind an
  // import. Leftovers of crashed imports are swept when an import starts.
  // The store is the owner's alone (0700, one an older cubby made 0755 is
  // closed): a layer keeps its image's modes, setuid files included, so no
  // other user may reach into layers/.
  CUBBY_TRYV(make_private(root));
  if (has_content(p.index) && has_content(p.layout) && path_exists(p.tmp)) return ImageStore(root);
  for (const auto& d : {root, p.blobs, p.layers, p.tmp}) CUBBY_TRYV(mkdir_p(d, 0700));
  auto lock = CUBBY_TRY(StoreLock::acquire(p.lock, true));
  // A new store's two files are written without fsync (~4 ms of a first
  // pull here): its first commit syncs the whole filesystem before anything
  // refers to them, and a crash before that leaves them missing or empty,
  // which the checks above and read_index() treat as a new store.
  if (!has_content(p.layout)) CUBBY_TRYV(write_atomic(p.layout, "{\"imageLayoutVersion\":\"1.0.0\"}", false));
  if (!has_content(p.index)) CUBBY_TRYV(write_atomic(p.index, empty_index().dump(2) + "\n", false));
  sweep_tmp(p);
  return ImageStore(root);
}

Result<ImageInfo> ImageStore::import_tarball(int fd, const std::string& ref) {
  std::string nref = CUBBY_TRY(normalize_ref(ref));
  if (nref.find('@') != std::string::npos)
    return fail(Error::invalid("invalid reference \"" + ref + "\": cannot import to a digest reference"));
  auto ctx = [&](const Error& e) { return std::unexpected<Error>(e.wrap("import " + nref)); };
  Paths p(root_);

  // 1. Private work area: one pass decompresses, hashes, keeps the tar
  // (the layer's blob) and unpacks it, within the staging limit.
  auto limit = stage_limit();
  if (!limit) return ctx(limit.error());
  StageBudget budget(*limit);
  auto work = stage("import");
  if (!work) return ctx(work.error());
  std::string tar_path = work->dir() + "/layer.tar";
  UniqueFd tar(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!tar) return ctx(Error::sys("create " + tar_path));
  std::string rootfs = work->dir() + "/rootfs";
  // The layer's root (see stage_layer_fd): the image's / keeps its mode.
  if (::mkdir(rootfs.c_str(), 0755) < 0) return ctx(Error::sys("mkdir " + rootfs));
  char real[PATH_MAX];
  if (!::realpath(rootfs.c_str(), real)) return ctx(Error::sys("realpath " + rootfs));
  StreamOptions so;
  so.budget = &budget;
  so.copy_to = tar.get();
  auto blob = unpack_stream(fd, real, so);
  if (!blob) return ctx(blob.error());
  if (::fsync(tar.get()) < 0) return ctx(Error::sys("fsync " + tar_path));
  tar.reset();
  {
    UniqueFd dfd(::open(work->dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dfd || ::syncfs(dfd.get()) < 0) return ctx(Error::sys("sync " + work->dir()));
  }

  // 2. Config and manifest (uncompressed layer blob: digest == diff_id).
  const std::string& layer_hex = blob->digest_hex;
  std::string created = now_rfc3339();
  json config = {
      {"created", created},
      {"architecture", kHostArch},
      {"os", "linux"},
      {"config", {{"Cmd", {"/bin/sh"}}, {"Env", {kDefaultPath}}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {"sha256:" + layer_hex}}}},
      {"history", {{{"created", created}, {"created_by", "cubby import"}, {"comment", "imported from tarball"}}}},
  };
  std::string config_bytes = config.dump();
  std::string config_hex = sha256_hex(config_bytes);
  json manifest = {
      {"schemaVersion", 2},
      {"mediaType", kOciManifest},
      {"config", {{"mediaType", kOciConfig}, {"digest", "sha256:" + config_hex}, {"size", config_bytes.size()}}},
      {"layers", {{{"mediaType", kOciLayerTar}, {"digest", "sha256:" + layer_hex}, {"size", blob->size}}}},
  };
  std::string manifest_bytes = manifest.dump();
  std::string manifest_hex = sha256_hex(manifest_bytes);
  std::string config_tmp = work->dir() + "/config.json", manifest_tmp = work->dir() + "/manifest.json";
  if (auto r = write_synced(config_tmp, config_bytes); !r) return ctx(r.error());
  if (auto r = write_synced(manifest_tmp, manifest_bytes); !r) return ctx(r.error());

  // 3. Commit under the store lock.
  auto lock = StoreLock::acquire(p.lock, true);
  if (!lock) return ctx(lock.error());
  auto index = read_index(p);
  if (!index) return ctx(index.error());
  auto commit = [&]() -> Result<void> {
    auto place = [&](const std::string& from, const std::string& to) -> Result<void> {
      if (path_exists(to)) return {};  // same digest, same content: already there
      if (::rename(from.c_str(), to.c_str()) < 0) return sys_fail("rename " + from + " to " + to);
      return {};
    };
    CUBBY_TRYV(place(real, p.layer(layer_hex)));
    CUBBY_TRYV(place(tar_path, p.blob(layer_hex)));
    CUBBY_TRYV(place(config_tmp, p.blob(config_hex)));
    CUBBY_TRYV(place(manifest_tmp, p.blob(manifest_hex)));
    CUBBY_TRYV(fsync_dir(p.layers));
    CUBBY_TRYV(fsync_dir(p.blobs));
    json& ms = (*index)["manifests"];
    json kept = json::array();
    for (const auto& d : ms)
      if (ref_of(d) != nref) kept.push_back(d);
    kept.push_back({{"mediaType", kOciManifest},
                    {"digest", "sha256:" + manifest_hex},
                    {"size", manifest_bytes.size()},
                    {"platform", {{"architecture", kHostArch}, {"os", "linux"}}},
                    {"annotations", {{kRefAnnotation, nref}}}});
    ms = std::move(kept);
    return write_index(p, *index);
  };
  auto committed = commit();
  // GC against what index.json now says: drops the retagged image's
  // unreferenced objects on success, and whatever this import placed on failure.
  auto on_disk = read_index(p);
  if (on_disk) mark_and_sweep(p, *on_disk, layers_in_use_);
  sweep_tmp(p);
  if (!committed) return ctx(committed.error());

  ImageInfo info;
  info.ref = nref;
  info.id = config_hex;
  info.manifest_digest = "sha256:" + manifest_hex;
  info.created = created;
  info.size = blob->size;
  info.config.cmd = {"/bin/sh"};
  info.config.env = {kDefaultPath};
  info.diff_ids = {"sha256:" + layer_hex};
  return info;
}

Result<std::vector<ImageInfo>> ImageStore::list() {
  Paths p(root_);
  auto lock = CUBBY_TRY(StoreLock::acquire(p.lock, false));
  json index = CUBBY_TRY(read_index(p));
  std::vector<ImageInfo> out;
  for (auto& l : load_all(p, index)) out.push_back(std::move(l.info));
  return out;
}

Result<ImageInfo> ImageStore::resolve(const std::string& ref_or_id) {
  Paths p(root_);
  auto lock = CUBBY_TRY(StoreLock::acquire(p.lock, false));
  json index = CUBBY_TRY(read_index(p));
  auto all = load_all(p, index);
  Match m = CUBBY_TRY(find_images(all, ref_or_id));
  return m.entries.front()->info;
}

Result<void> ImageStore::remove(const std::string& ref_or_id) {
  Paths p(root_);
  auto lock = CUBBY_TRY(StoreLock::acquire(p.lock, true));
  json index = CUBBY_TRY(read_index(p));
  auto all = load_all(p, index);
  auto found = find_images(all, ref_or_id);
  if (!found && found.error().kind() == ErrorKind::kNotFound) {
    // An image whose blobs are damaged is invisible to list/resolve; let it
    // still be untagged by its exact reference.
    if (auto n = normalize_ref(ref_or_id)) {
      json kept = json::array();
      for (const auto& d : index["manifests"])
        if (ref_of(d) != *n) kept.push_back(d);
      if (kept.size() != index["manifests"].size()) {
        index["manifests"] = std::move(kept);
        if (auto w = write_index(p, index); !w) return fail(w.error().wrap("remove " + ref_or_id));
        mark_and_sweep(p, index, layers_in_use_);
        return {};
      }
    }
  }
  if (!found) return fail(found.error());
  Match& m = *found;
  if (!m.by_ref && m.entries.size() > 1) {
    std::string refs;
    for (const auto* l : m.entries) refs += (refs.empty() ? "" : ", ") + l->info.ref;
    return fail(Error::conflict("image " + m.entries.front()->info.id.substr(0, 12) +
                                " is referenced by several references (" + refs +
                                "); remove it by reference"));
  }
  std::set<size_t> drop;
  for (const auto* l : m.entries) drop.insert(l->pos);
  json kept = json::array();
  const json& ms = index["manifests"];
  for (size_t i = 0; i < ms.size(); ++i)
    if (!drop.count(i)) kept.push_back(ms[i]);
  index["manifests"] = std::move(kept);
  if (auto w = write_index(p, index); !w) return fail(w.error().wrap("remove " + ref_or_id));
  mark_and_sweep(p, index, layers_in_use_);
  sweep_tmp(p);
  return {};
}

Result<void> ImageStore::collect_garbage() {
  Paths p(root_);
  auto lock = CUBBY_TRY(StoreLock::acquire(p.lock, true));
  json index = CUBBY_TRY(read_index(p));
  mark_and_sweep(p, index, layers_in_use_);
  sweep_tmp(p);
  return {};
}

Result<std::vector<std::string>> ImageStore::layer_dirs(const ImageInfo& img) {
  Paths p(root_);
  std::vector<std::string> out;
  for (const auto& d : img.diff_ids) {
    if (d.rfind("sha256:", 0) != 0 || !is_sha256_hex(d.substr(7)))
      return fail(Error::invalid("image " + img.ref + ": bad diff_id \"" + d + "\""));
    std::string dir = p.layer(d.substr(7));
    struct stat st;
    if (::stat(dir.c_str(), &st) < 0 || !S_ISDIR(st.st_mode))
      return fail(Error::not_found("image " + img.ref + ": layer " + dir + " is missing"));
    out.push_back(dir);
  }
  return out;
}

}  // namespace cubby::image
