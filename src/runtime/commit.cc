#include "runtime/commit.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "base/fs.h"
#include "base/sys.h"
#include "image/config_changes.h"
#include "image/digest.h"
#include "image/media_types.h"
#include "image/unpack.h"
#include "runtime/runtime.h"

namespace cubby {

namespace {

using nlohmann::json;

// Writes the upper directory's entries as a layer tar.
class LayerWriter {
 public:
  LayerWriter(int out_fd, const BoxSpec& spec) : a_(archive_write_new(), archive_write_free), spec_(spec) {
    archive_write_set_format_pax_restricted(a_.get());
    opened_ = archive_write_open_fd(a_.get(), out_fd) == ARCHIVE_OK;
  }
  Result<void> walk(int dirfd, const std::string& rel) {
    if (!opened_) return fail(err("open"));
    std::vector<std::string> names;
    {
      int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
      if (dup < 0) return sys_fail("dup");
      std::unique_ptr<DIR, int (*)(DIR*)> d(::fdopendir(dup), ::closedir);
      if (!d) {
        ::close(dup);
        return sys_fail("open " + shown(rel));
      }
      while (dirent* e = ::readdir(d.get()))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      const std::string path = rel.empty() ? name : rel + "/" + name;
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return sys_fail("stat " + shown(path));
      if (S_ISCHR(st.st_mode) && st.st_rdev == 0) {  // overlayfs's whiteout: the file is deleted
        CUBBY_TRYV(marker(rel, ".wh." + name));
      } else if (S_ISDIR(st.st_mode)) {
        UniqueFd sub(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) return sys_fail("open " + shown(path));
        CUBBY_TRYV(header(path + "/", st, AE_IFDIR));
        char v[2] = {};
        if (::fgetxattr(sub.get(), "user.overlay.opaque", v, sizeof v) == 1 && v[0] == 'y')
          CUBBY_TRYV(marker(path, ".wh..wh..opq"));  // the lower dirs' contents are hidden
        CUBBY_TRYV(walk(sub.get(), path));
      } else if (S_ISLNK(st.st_mode)) {
        std::string target(PATH_MAX, '\0');
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (n < 0) return sys_fail("read link " + shown(path));
        target.resize(static_cast<size_t>(n));
        CUBBY_TRYV(header(path, st, AE_IFLNK, target));
      } else if (S_ISREG(st.st_mode)) {
        auto [it, first] = links_.emplace(std::pair{st.st_dev, st.st_ino}, path);
        if (!first) {
          CUBBY_TRYV(header(path, st, AE_IFREG, "", it->second));
          continue;
        }
        UniqueFd f(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!f) return sys_fail("open " + shown(path));
        CUBBY_TRYV(header(path, st, AE_IFREG));
        char buf[65536];
        for (off_t left = st.st_size; left > 0;) {  // exactly the size the header says
          ssize_t n = ::read(f.get(), buf, static_cast<size_t>(std::min<off_t>(left, sizeof buf)));
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) return sys_fail("read " + shown(path));
          if (n == 0) {  // shrank while read (a running box): pad
            std::memset(buf, 0, sizeof buf);
            n = static_cast<ssize_t>(std::min<off_t>(left, sizeof buf));
          }
          if (archive_write_data(a_.get(), buf, static_cast<size_t>(n)) != n) return fail(err("write " + path));
          left -= n;
        }
      }
      // Sockets, fifos and other devices: not part of an image.
    }
    return {};
  }
  Result<void> finish() {
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return fail(err("finish"));
    return {};
  }

 private:
  Error err(const std::string& what) {
    const char* s = archive_error_string(a_.get());
    return Error(ErrorKind::kSystem, "commit: layer tar: " + what + ": " + (s ? s : "?"), 0);
  }
  static std::string shown(const std::string& rel) { return "/" + rel; }
  // Host ids back to the box's: a box with a range of its own has box id N at host id base + N.
  uint32_t box_id(uint32_t host, bool gid) const {
    if (spec_.ids) {
      uint32_t base = gid ? spec_.ids->gid : spec_.ids->uid;
      if (host >= base && host - base < spec_.ids->count) return host - base;
    }
    return host;
  }
  Result<void> marker(const std::string& dir, const std::string& name) {
    struct stat st{};
    st.st_mode = S_IFREG | 0644;
    return header(dir.empty() ? name : dir + "/" + name, st, AE_IFREG, "", "", true);
  }
  Result<void> header(const std::string& path, const struct stat& st, unsigned type, const std::string& symlink = "",
                      const std::string& hardlink = "", bool raw_ids = false) {
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(e.get(), path.c_str());
    archive_entry_set_filetype(e.get(), type);
    archive_entry_set_perm(e.get(), st.st_mode & 07777);
    archive_entry_set_uid(e.get(), raw_ids ? st.st_uid : box_id(st.st_uid, false));
    archive_entry_set_gid(e.get(), raw_ids ? st.st_gid : box_id(st.st_gid, true));
    archive_entry_set_mtime(e.get(), st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (type == AE_IFREG && hardlink.empty()) archive_entry_set_size(e.get(), st.st_size);
    if (!symlink.empty()) archive_entry_set_symlink(e.get(), symlink.c_str());
    if (!hardlink.empty()) archive_entry_set_hardlink(e.get(), hardlink.c_str());
    if (archive_write_header(a_.get(), e.get()) < ARCHIVE_WARN) return fail(err("write " + path));
    return {};
  }

  std::unique_ptr<struct archive, int (*)(struct archive*)> a_;
  const BoxSpec& spec_;
  bool opened_ = false;
  std::map<std::pair<dev_t, ino_t>, std::string> links_;
};

}  // namespace

Result<image::ImageInfo> commit_box(Runtime& rt, const std::string& box, const std::string& ref,
                                    const image::ConfigChanges& changes) {
  std::string nref = CUBBY_TRY(image::normalize_ref(ref));
  auto b = CUBBY_TRY(rt.resolve(box));
  auto ctx = [&](const Error& e) { return std::unexpected<Error>(e.wrap("commit " + b.name)); };
  if (b.isolation == "vm")
    return fail(Error::invalid("commit of a vm box is not supported yet (its changes are inside its disk image)"));
  BoxSpec spec = b.config.get<BoxSpec>();
  auto& images = rt.images();
  auto parent = images.resolve(b.image_id);
  if (!parent) return ctx(parent.error().wrap("the box's image"));
  auto area = images.stage("commit");
  if (!area) return ctx(area.error());

  // 1. The changes as a layer tar, then unpacked as a pulled layer is.
  const std::string tar_path = area->dir() + "/layer.tar";
  {
    UniqueFd tar(::open(tar_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!tar) return ctx(Error::sys("create " + tar_path));
    const std::string upper = rt.box_dir(b.id) + "/upper";
    UniqueFd dir(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    LayerWriter w(tar.get(), spec);
    // A box that never started has no upper yet: an empty layer.
    if (dir) {
      if (auto r = w.walk(dir.get(), ""); !r) return ctx(r.error());
    } else if (errno != ENOENT) {
      return ctx(Error::sys("open " + upper));
    }
    if (auto r = w.finish(); !r) return ctx(r.error());
    if (::fsync(tar.get()) < 0) return ctx(Error::sys("fsync " + tar_path));
  }
  const std::string unpacked = area->dir() + "/rootfs";
  if (::mkdir(unpacked.c_str(), 0755) < 0) return ctx(Error::sys("mkdir " + unpacked));
  char real[PATH_MAX];
  if (!::realpath(unpacked.c_str(), real)) return ctx(Error::sys("realpath " + unpacked));
  image::StreamOptions so;
  so.overlay_whiteouts = true;
  UniqueFd tar(::open(tar_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!tar) return ctx(Error::sys("open " + tar_path));
  auto blob = image::unpack_stream(tar.get(), real, so);
  if (!blob) return ctx(blob.error());

  // 2. Config and manifest: the parent's, plus this layer.
  json config, manifest;
  {
    auto c = images.read_blob(parent->id);
    auto m = images.read_blob(parent->manifest_digest.substr(7));
    if (!c || !m) return ctx((c ? m.error() : c.error()).wrap("read the box's image"));
    config = json::parse(*c, nullptr, false);
    manifest = json::parse(*m, nullptr, false);
    if (!config.is_object() || !manifest.is_object() || !manifest.contains("layers"))
      return ctx(Error::invalid("the box's image has a malformed config or manifest"));
  }
  const std::string created = now_rfc3339();
  config["created"] = created;
  config["rootfs"]["diff_ids"].push_back("sha256:" + blob->digest_hex);
  config["history"].push_back({{"created", created}, {"created_by", "cubby commit"}, {"comment", "from box " + b.name}});
  if (!config["config"].is_object()) config["config"] = json::object();
  image::apply_config_changes(config["config"], changes);
  const std::string config_bytes = config.dump();
  const std::string config_hex = image::sha256_hex(config_bytes);
  const std::string media_type = manifest.value("mediaType", std::string(image::kOciManifest));
  const bool docker = media_type == image::kDockerManifest;
  manifest["config"]["digest"] = "sha256:" + config_hex;
  manifest["config"]["size"] = config_bytes.size();
  manifest["layers"].push_back({{"mediaType", docker ? "application/vnd.docker.image.rootfs.diff.tar" : image::kOciLayerTar},
                                {"digest", "sha256:" + blob->digest_hex},
                                {"size", blob->size}});
  const std::string config_path = area->dir() + "/config.json";
  if (auto r = write_file(config_path, config_bytes); !r) return ctx(r.error());

  image::StagedImage staged;
  staged.ref = nref;
  staged.manifest_media_type = media_type;
  staged.manifest_bytes = manifest.dump();
  staged.blobs[config_hex] = config_path;
  staged.blobs[blob->digest_hex] = tar_path;
  staged.layers[blob->digest_hex] = real;
  auto info = images.commit(*area, staged);
  if (!info) return ctx(info.error());
  return info;
}

}  // namespace cubby
