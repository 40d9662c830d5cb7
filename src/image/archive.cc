#include "image/archive.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <memory>
#include <regex>
#include <set>

#include "base/fs.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "image/digest.h"
#include "image/media_types.h"
#include "image/unpack.h"

namespace cubby::image {
namespace {

using json = nlohmann::json;

constexpr char kContainerdName[] = "io.containerd.image.name";

Error bad(const std::string& why) { return Error::invalid("corrupt archive: " + why); }

// A file of the unpacked archive, by its name inside the archive: a regular
// file that stays inside root after resolving symlinks.
Result<std::string> member(const std::string& root, const std::string& name) {
  if (name.empty() || name[0] == '/' || name.find("..") != std::string::npos)
    return fail(bad("unsafe file name \"" + name + "\""));
  std::string p = root + "/" + name;
  char real[PATH_MAX];
  if (!::realpath(p.c_str(), real)) return fail(bad("missing file \"" + name + "\""));
  std::string r = real;
  if (!r.starts_with(root + "/")) return fail(bad("\"" + name + "\" points outside the archive"));
  struct stat st;
  if (::stat(real, &st) < 0 || !S_ISREG(st.st_mode)) return fail(bad("\"" + name + "\" is not a regular file"));
  return r;
}

struct FileDigest {
  std::string hex;
  uint64_t size = 0;
};

Result<FileDigest> hash_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  Sha256 h;
  FileDigest d;
  std::unique_ptr<char[]> buf(new char[1 << 16]);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), 1 << 16);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_fail("read " + path);
    if (n == 0) break;
    h.update(buf.get(), static_cast<size_t>(n));
    d.size += static_cast<uint64_t>(n);
  }
  d.hex = h.hex_final();
  return d;
}

Result<json> read_json_member(const std::string& path, const std::string& name) {
  std::string text = CUBBY_TRY(read_file(path, 8u << 20));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return fail(bad(name + " is not JSON"));
  return j;
}

// A blob of an OCI layout, checked against its descriptor.
Result<std::string> oci_blob(const std::string& root, const json& desc, const std::string& what) {
  if (!desc.is_object() || !desc.contains("digest") || !desc["digest"].is_string())
    return fail(bad(what + " descriptor without a digest"));
  std::string dg = desc["digest"].get<std::string>();
  if (!dg.starts_with("sha256:") || !is_sha256_hex(dg.substr(7))) return fail(bad(what + " has a bad digest \"" + dg + "\""));
  std::string path = CUBBY_TRY(member(root, "blobs/sha256/" + dg.substr(7)));
  FileDigest d = CUBBY_TRY(hash_file(path));
  if (d.hex != dg.substr(7)) return fail(Error::invalid(what + " " + dg + " does not match its digest (got sha256:" + d.hex + ")"));
  if (desc.contains("size") && desc["size"].is_number_unsigned() && desc["size"].get<uint64_t>() != d.size)
    return fail(Error::invalid(what + " " + dg + " does not match its size"));
  return path;
}

bool is_tag_only(const std::string& s) {
  static const std::regex tag("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$");
  return std::regex_match(s, tag);
}

// Layers of a config + manifest, staged (blob into staged.blobs, unpacked
// layer into staged.layers unless the store has it).
Result<void> stage_layers(ImageStore& store, StagingArea& area, StagedImage& staged,
                          const std::vector<std::pair<std::string, std::string>>& layer_blobs,  // (hex, path)
                          const json& config, StageBudget& budget) {
  std::vector<std::string> diff_ids;
  if (config.is_object() && config.contains("rootfs") && config["rootfs"].is_object() &&
      config["rootfs"].contains("diff_ids") && config["rootfs"]["diff_ids"].is_array())
    for (const auto& d : config["rootfs"]["diff_ids"])
      if (d.is_string()) diff_ids.push_back(d.get<std::string>());
  if (diff_ids.size() != layer_blobs.size())
    return fail(bad("config lists " + std::to_string(diff_ids.size()) + " layers, manifest " +
                    std::to_string(layer_blobs.size())));
  for (size_t i = 0; i < layer_blobs.size(); ++i) {
    const auto& [hex, path] = layer_blobs[i];
    const std::string& did = diff_ids[i];
    if (!did.starts_with("sha256:") || !is_sha256_hex(did.substr(7))) return fail(bad("bad diff_id \"" + did + "\""));
    std::string dhex = did.substr(7);
    if (!store.has_blob(hex)) staged.blobs[hex] = path;
    if (store.has_layer(dhex) || staged.layers.count(dhex)) continue;
    auto l = stage_layer(path, area.dir(), "layer-" + std::to_string(staged.layers.size()) + "-" + dhex.substr(0, 12), dhex,
                         &budget);
    if (!l) return fail(l.error().wrap("layer " + std::to_string(i + 1)));
    staged.layers[dhex] = l->dir;
  }
  return {};
}

Result<std::vector<ImageInfo>> load_oci(ImageStore& store, StagingArea& area, const std::string& root,
                                        const std::string& tag, StageBudget& budget) {
  json index = CUBBY_TRY(read_json_member(CUBBY_TRY(member(root, "index.json")), "index.json"));
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
    return fail(bad("index.json has no manifests"));
  std::vector<ImageInfo> out;
  const json& ms = index["manifests"];
  if (ms.empty()) return fail(bad("index.json lists no images"));
  if (!tag.empty() && ms.size() > 1) return fail(Error::invalid("--tag needs an archive with one image"));
  for (const auto& top : ms) {
    std::string name;
    if (top.contains("annotations") && top["annotations"].is_object()) {
      const json& a = top["annotations"];
      if (a.contains(kContainerdName) && a[kContainerdName].is_string()) name = a[kContainerdName].get<std::string>();
      else if (a.contains(kRefAnnotation) && a[kRefAnnotation].is_string() && !is_tag_only(a[kRefAnnotation].get<std::string>()))
        name = a[kRefAnnotation].get<std::string>();
    }
    if (!tag.empty()) name = tag;
    if (name.empty()) return fail(Error::invalid("the archive's image has no name; give one with --tag REF"));
    std::string ref = CUBBY_TRY(normalize_ref(name));
    json desc = top;
    std::string mt = desc.value("mediaType", "");
    std::string path = CUBBY_TRY(oci_blob(root, desc, "manifest"));
    std::string bytes = CUBBY_TRY(read_file(path, 4u << 20));
    json m = json::parse(bytes, nullptr, false);
    if (!m.is_object()) return fail(bad("manifest is not JSON"));
    if (mt.empty()) mt = m.value("mediaType", m.contains("manifests") ? kOciIndex : kOciManifest);
    if (mt == kOciIndex || mt == kDockerList) {
      const json* pick = nullptr;
      if (m.contains("manifests") && m["manifests"].is_array())
        for (const auto& d : m["manifests"]) {
          const json p = d.value("platform", json::object());
          if (p.value("os", "") == "linux" && p.value("architecture", "") == kHostArch) {
            pick = &d;
            break;
          }
        }
      if (!pick) return fail(Error::not_found("the archive's index has no image for linux/" + std::string(kHostArch)));
      desc = *pick;
      path = CUBBY_TRY(oci_blob(root, desc, "manifest"));
      bytes = CUBBY_TRY(read_file(path, 4u << 20));
      m = json::parse(bytes, nullptr, false);
      if (!m.is_object()) return fail(bad("manifest is not JSON"));
      mt = desc.value("mediaType", m.value("mediaType", kOciManifest));
    }
    if (mt != kOciManifest && mt != kDockerManifest) return fail(Error::invalid("unsupported manifest type \"" + mt + "\""));
    if (!m.contains("config") || !m.contains("layers") || !m["layers"].is_array()) return fail(bad("malformed manifest"));
    StagedImage staged;
    staged.ref = ref;
    staged.manifest_media_type = mt;
    staged.manifest_bytes = bytes;
    std::string cpath = CUBBY_TRY(oci_blob(root, m["config"], "config"));
    std::string chex = m["config"]["digest"].get<std::string>().substr(7);
    json config = CUBBY_TRY(read_json_member(cpath, "config"));
    if (!store.has_blob(chex)) staged.blobs[chex] = cpath;
    std::vector<std::pair<std::string, std::string>> lb;
    for (const auto& l : m["layers"]) {
      std::string lp = CUBBY_TRY(oci_blob(root, l, "layer"));
      lb.emplace_back(l["digest"].get<std::string>().substr(7), lp);
    }
    CUBBY_TRYV(stage_layers(store, area, staged, lb, config, budget));
    out.push_back(CUBBY_TRY(store.commit(area, staged)));
  }
  return out;
}

// docker save: manifest.json = [{Config, RepoTags, Layers}], files by path.
Result<std::vector<ImageInfo>> load_docker(ImageStore& store, StagingArea& area, const std::string& root,
                                           const std::string& tag, StageBudget& budget) {
  json mj = CUBBY_TRY(read_json_member(CUBBY_TRY(member(root, "manifest.json")), "manifest.json"));
  if (!mj.is_array() || mj.empty()) return fail(bad("manifest.json lists no images"));
  if (!tag.empty() && mj.size() > 1) return fail(Error::invalid("--tag needs an archive with one image"));
  std::vector<ImageInfo> out;
  for (const auto& e : mj) {
    if (!e.is_object() || !e.contains("Config") || !e["Config"].is_string() || !e.contains("Layers") ||
        !e["Layers"].is_array())
      return fail(bad("malformed manifest.json entry"));
    std::vector<std::string> refs;
    if (!tag.empty()) refs.push_back(tag);
    else if (e.contains("RepoTags") && e["RepoTags"].is_array())
      for (const auto& t : e["RepoTags"])
        if (t.is_string()) refs.push_back(t.get<std::string>());
    if (refs.empty()) return fail(Error::invalid("the archive's image has no name; give one with --tag REF"));
    std::string cpath = CUBBY_TRY(member(root, e["Config"].get<std::string>()));
    FileDigest cd = CUBBY_TRY(hash_file(cpath));
    json config = CUBBY_TRY(read_json_member(cpath, "config"));
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", kOciManifest},
                     {"config", {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                                 {"digest", "sha256:" + cd.hex}, {"size", cd.size}}},
                     {"layers", json::array()}};
    std::vector<std::pair<std::string, std::string>> lb;
    for (const auto& l : e["Layers"]) {
      if (!l.is_string()) return fail(bad("malformed Layers"));
      std::string lp = CUBBY_TRY(member(root, l.get<std::string>()));
      FileDigest ld = CUBBY_TRY(hash_file(lp));
      unsigned char magic[4] = {};
      {
        UniqueFd fd(::open(lp.c_str(), O_RDONLY | O_CLOEXEC));
        if (!fd || ::read(fd.get(), magic, 4) < 0) return sys_fail("read " + lp);
      }
      std::string mt = "application/vnd.oci.image.layer.v1.tar";
      if (magic[0] == 0x1f && magic[1] == 0x8b) mt += "+gzip";
      else if (magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) mt += "+zstd";
      manifest["layers"].push_back({{"mediaType", mt}, {"digest", "sha256:" + ld.hex}, {"size", ld.size}});
      lb.emplace_back(ld.hex, lp);
    }
    StagedImage staged;
    staged.manifest_media_type = kOciManifest;
    staged.manifest_bytes = manifest.dump();
    if (!store.has_blob(cd.hex)) staged.blobs[cd.hex] = cpath;
    CUBBY_TRYV(stage_layers(store, area, staged, lb, config, budget));
    for (const auto& r : refs) {
      staged.ref = CUBBY_TRY(normalize_ref(r));
      out.push_back(CUBBY_TRY(store.commit(area, staged)));
      // Moved into the store by the first commit.
      staged.blobs.clear();
      staged.layers.clear();
    }
  }
  return out;
}

struct WriteFree {
  void operator()(struct archive* a) const { archive_write_free(a); }
};

Result<void> add_file(struct archive* a, const std::string& name, const std::string& data) {
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, static_cast<la_int64_t>(data.size()));
  archive_entry_set_mtime(e, 0, 0);
  int r = archive_write_header(a, e);
  archive_entry_free(e);
  if (r != ARCHIVE_OK) return fail(Error::sys(std::string("write archive: ") + archive_error_string(a), 0));
  if (!data.empty() && archive_write_data(a, data.data(), data.size()) < 0)
    return fail(Error::sys(std::string("write archive: ") + archive_error_string(a), 0));
  return {};
}

Result<void> add_blob(struct archive* a, const std::string& path, const std::string& hex) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return sys_fail("stat " + path);
  struct archive_entry* e = archive_entry_new();
  std::string name = "blobs/sha256/" + hex;
  archive_entry_set_pathname(e, name.c_str());
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_perm(e, 0644);
  archive_entry_set_size(e, st.st_size);
  archive_entry_set_mtime(e, 0, 0);
  int r = archive_write_header(a, e);
  archive_entry_free(e);
  if (r != ARCHIVE_OK) return fail(Error::sys(std::string("write archive: ") + archive_error_string(a), 0));
  std::unique_ptr<char[]> buf(new char[1 << 16]);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.get(), 1 << 16);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_fail("read " + path);
    if (n == 0) break;
    if (archive_write_data(a, buf.get(), static_cast<size_t>(n)) < 0)
      return fail(Error::sys(std::string("write archive: ") + archive_error_string(a), 0));
  }
  return {};
}

}  // namespace

Result<std::vector<ImageInfo>> load_archive(ImageStore& store, int fd, const std::string& tag) {
  auto ctx = [](const Error& e) { return std::unexpected<Error>(e.wrap("load")); };
  auto limit = store.stage_limit();
  if (!limit) return ctx(limit.error());
  StageBudget budget(*limit);
  auto area = store.stage("load");
  if (!area) return ctx(area.error());
  std::string root = area->dir() + "/archive";
  if (::mkdir(root.c_str(), 0700) < 0) return ctx(Error::sys("mkdir " + root));
  char real[PATH_MAX];
  if (!::realpath(root.c_str(), real)) return ctx(Error::sys("realpath " + root));
  root = real;
  // Streamed straight into the work area: the archive's own end marker ends
  // the read (an endless input such as /dev/zero is an empty archive), and
  // the budget bounds what a huge one stages.
  StreamOptions so;
  so.budget = &budget;
  so.read_to_end = false;
  if (auto r = unpack_stream(fd, root, so); !r) return ctx(r.error());
  struct stat st;
  Result<std::vector<ImageInfo>> r;
  if (::stat((root + "/index.json").c_str(), &st) == 0) r = load_oci(store, *area, root, tag, budget);
  else if (::stat((root + "/manifest.json").c_str(), &st) == 0) r = load_docker(store, *area, root, tag, budget);
  else return ctx(Error::invalid("not a docker-archive or OCI archive (no manifest.json or index.json)"));
  if (!r) return ctx(r.error());
  return r;
}

Result<void> save_archive(ImageStore& store, const ImageInfo& img, int fd) {
  return store.with_read_lock([&]() -> Result<void> {
    std::string mhex = img.manifest_digest.substr(7);
    std::string mbytes = CUBBY_TRY(store.read_blob(mhex, 4u << 20));
    json m = json::parse(mbytes, nullptr, false);
    if (!m.is_object() || !m.contains("layers")) return fail(Error::internal("corrupt manifest for " + img.ref));
    std::string mt = m.value("mediaType", kOciManifest);
    std::unique_ptr<struct archive, WriteFree> a(archive_write_new());
    archive_write_set_format_pax_restricted(a.get());
    if (archive_write_open_fd(a.get(), fd) != ARCHIVE_OK)
      return fail(Error::sys(std::string("write archive: ") + archive_error_string(a.get()), 0));
    json index = {{"schemaVersion", 2},
                  {"mediaType", kOciIndex},
                  {"manifests", {{{"mediaType", mt},
                                  {"digest", img.manifest_digest},
                                  {"size", mbytes.size()},
                                  {"annotations", {{kRefAnnotation, img.ref}, {kContainerdName, img.ref}}}}}}};
    CUBBY_TRYV(add_file(a.get(), "oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}"));
    CUBBY_TRYV(add_file(a.get(), "index.json", index.dump()));
    std::set<std::string> done;
    auto blob = [&](const std::string& hex) -> Result<void> {
      if (!done.insert(hex).second) return {};
      return add_blob(a.get(), store.blob_path(hex), hex);
    };
    CUBBY_TRYV(blob(mhex));
    try {
      CUBBY_TRYV(blob(m.at("config").at("digest").get<std::string>().substr(7)));
      for (const auto& l : m.at("layers")) CUBBY_TRYV(blob(l.at("digest").get<std::string>().substr(7)));
    } catch (const json::exception& e) {
      return fail(Error::internal("corrupt manifest for " + img.ref + ": " + e.what()));
    }
    if (archive_write_close(a.get()) != ARCHIVE_OK)
      return fail(Error::sys(std::string("write archive: ") + archive_error_string(a.get()), 0));
    return {};
  });
}

Result<json> inspect_json(ImageStore& store, const ImageInfo& img) {
  json config = json::object();
  auto text = store.read_blob(img.id, 8u << 20);
  if (text) config = json::parse(*text, nullptr, false);
  if (!config.is_object()) config = json::object();
  std::string repo = img.ref.substr(0, img.ref.find('@'));
  if (size_t c = repo.rfind(':'); c != std::string::npos && c > repo.rfind('/')) repo.resize(c);
  json ports = json::object();
  for (const auto& p : img.config.exposed_ports) ports[p] = json::object();
  return json{{"Id", "sha256:" + img.id},
              {"RepoTags", img.ref.find('@') == std::string::npos ? json::array({img.ref}) : json::array()},
              {"RepoDigests", json::array({repo + "@" + img.manifest_digest})},
              {"ManifestDigest", img.manifest_digest},
              {"Created", img.created},
              {"Architecture", config.value("architecture", "")},
              {"Os", config.value("os", "")},
              {"Variant", config.value("variant", "")},
              {"Size", img.size},
              {"Config", config.contains("config") ? config["config"] : json::object()},
              {"ExposedPorts", ports},
              {"RootFS", {{"Type", "layers"}, {"Layers", img.diff_ids}}}};
}

}  // namespace cubby::image
