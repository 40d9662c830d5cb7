#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <unordered_set>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"
#include "base/unique_fd.h"
#include "copy/tree.h"
#include "image/digest.h"

namespace cubby::image {
namespace {

struct ReadFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ReadArchive = std::unique_ptr<struct archive, ReadFree>;

// Paths longer than this are refused: every path goes to openat2 as one
// string, which the kernel limits to PATH_MAX.
constexpr size_t kMaxPath = 4000;

std::string archive_msg(struct archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

Error corrupt(struct archive* a) { return Error::invalid("corrupt archive: " + archive_msg(a)); }

// Source for the decompression pass: counts bytes and keeps read(2) errors
// apart from format errors.
struct FdSource {
  int fd;
  uint64_t total = 0;
  int read_errno = 0;
  char buf[64 * 1024];
};

la_ssize_t fd_read(struct archive* a, void* client, const void** out) {
  auto* s = static_cast<FdSource*>(client);
  for (;;) {
    ssize_t n = ::read(s->fd, s->buf, sizeof s->buf);
    if (n >= 0) {
      s->total += static_cast<uint64_t>(n);
      *out = s->buf;
      return n;
    }
    if (errno == EINTR) continue;
    s->read_errno = errno;
    archive_set_error(a, errno, "read input");
    return -1;
  }
}

Error read_error(struct archive* a, const FdSource& src) {
  if (src.read_errno != 0) return Error::sys("read archive input", src.read_errno);
  return corrupt(a);
}

// Normalises a path from entry `entry` (its name, or its hardlink target
// described by `what`) to "a/b/c": no leading "./", no empty or "."
// components. Absolute paths and ".." are refused.
Result<std::string> clean_entry_path(const std::string& entry, const std::string& raw,
                                     const std::string& what) {
  auto unsafe = [&](const std::string& why) -> Result<std::string> {
    return fail(Error::invalid("unsafe archive entry \"" + entry + "\": " + what + " " + why));
  };
  if (raw.empty()) return unsafe("is empty");
  // The rules are cp's (copy::clean_path); the message names the entry.
  auto clean = copy::clean_path(raw, what);
  if (!clean) return unsafe(raw[0] == '/' ? "is an absolute path" : "has a \"..\" component");
  return clean;
}

const char* entry_path(struct archive_entry* e) {
  const char* p = archive_entry_pathname(e);
  return p ? p : archive_entry_pathname_utf8(e);
}
const char* entry_hardlink(struct archive_entry* e) {
  const char* p = archive_entry_hardlink(e);
  return p ? p : archive_entry_hardlink_utf8(e);
}

// The first proper ancestor of path that the archive made a symlink, or "".
std::string symlink_ancestor(const std::string& path,
                             const std::unordered_set<std::string>& symlinks) {
  for (size_t i = path.find('/'); i != std::string::npos; i = path.find('/', i + 1)) {
    std::string prefix = path.substr(0, i);
    if (symlinks.count(prefix)) return prefix;
  }
  return {};
}

// The xattrs of e an image may set: user.* and security.capability.
// overlayfs's own are dropped above all: trusted.overlay.* and, since the
// sandbox mounts its overlay with userxattr, user.overlay.* in a layer would
// steer overlayfs (opaque dirs, redirects, metacopy) outside the whiteout
// rules; security.selinux/ima and system.* describe the host, not the image.
void kept_xattrs(struct archive_entry* e, const std::string& raw, std::vector<std::pair<std::string, std::string>>& out) {
  out.clear();
  const char* name = nullptr;
  const void* value = nullptr;
  size_t size = 0;
  archive_entry_xattr_reset(e);
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
    std::string n = name ? name : "";
    if ((n.starts_with("user.") && !n.starts_with("user.overlay.")) || n == "security.capability")
      out.emplace_back(std::move(n), std::string(static_cast<const char*>(value), size));
    else
      LOG_DEBUG("image unpack: {}: dropping xattr {}", raw, n);
  }
}

// A failure of the tree writer, as the unpacker reports it: resource and
// I/O trouble is the host's (kSystem); anything else (a symlink in the way,
// a missing hardlink target, a non-empty directory to replace) is the
// archive's fault.
Error writer_error(const Error& e) {
  if (e.kind() == ErrorKind::kSystem) {
    switch (e.sys_errno()) {
      case ENOSPC: case EDQUOT: case EIO: case EROFS: case ENOMEM: case EMFILE: case ENFILE:
        return e.wrap("unpack");
      default:
        return Error::invalid("unpack: " + e.message());
    }
  }
  return e.wrap("unpack");
}

// A reader of the decompressed bytes of src (plain, gzip, bzip2, xz or
// zstd), positioned at its data. Empty input is kInvalid.
Result<ReadArchive> open_decompressor(FdSource& src) {
  ReadArchive a(archive_read_new());
  if (!a) return fail(Error::internal("archive_read_new failed"));
  support_decompressors(a.get());
  archive_read_support_format_raw(a.get());
  if (archive_read_open(a.get(), &src, nullptr, fd_read, nullptr) != ARCHIVE_OK) {
    if (src.read_errno == 0 && src.total == 0) return fail(Error::invalid("corrupt archive: empty input"));
    return fail(read_error(a.get(), src));
  }
  struct archive_entry* entry = nullptr;
  int r = archive_read_next_header(a.get(), &entry);
  if (r == ARCHIVE_EOF || (r < ARCHIVE_WARN && src.read_errno == 0 && src.total == 0))
    return fail(Error::invalid("corrupt archive: empty input"));
  if (r < ARCHIVE_WARN) return fail(read_error(a.get(), src));
  return a;
}

}  // namespace

namespace {

// Unpacks the entries of the open tar reader `a` (see unpack_tar).
Result<void> unpack_entries(struct archive* a_raw, const std::string& dest_dir, bool overlay_whiteouts,
                            const StageBudget* budget) {
  struct NoFree {
    void operator()(struct archive*) const {}
  };
  std::unique_ptr<struct archive, NoFree> a(a_raw);
  // Our own checks (below) give clear errors naming the entry; the writer's
  // openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) is the kernel's second line.
  UniqueFd root(::open(dest_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!root) return sys_fail("open " + dest_dir);
  copy::WriterOptions o;
  o.root = root.get();
  o.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  o.owner = copy::Owner::kRestore;
  o.replace_all = true;
  o.root_meta = true;
  o.sync_files = true;  // the store's one syncfs before the commit then finds little left to do
  o.atomic_files = false;  // a fresh directory, discarded whole if the layer fails
  copy::TreeWriter w(std::move(o));
  auto check = [](Result<void> r) -> Result<void> {
    if (!r) return fail(writer_error(r.error()));
    return {};
  };
  copy::Entry ce;  // reused: its strings keep their buffers

  std::unordered_set<std::string> symlinks;  // cleaned paths the archive made symlinks
  std::vector<std::string> opaque_dirs;                        // relative dirs
  std::vector<std::pair<std::string, std::string>> whiteouts;  // (relative dir, name)
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(corrupt(a.get()));
    const char* raw_c = entry_path(e);
    if (!raw_c) return fail(Error::invalid("corrupt archive: entry without a path"));
    std::string raw = raw_c;
    if (r == ARCHIVE_WARN) LOG_DEBUG("image unpack: {}: {}", raw, archive_msg(a.get()));

    std::string path = CUBBY_TRY(clean_entry_path(raw, raw, "path"));
    mode_t type = archive_entry_filetype(e);
    if (type == AE_IFCHR || type == AE_IFBLK) {
      LOG_DEBUG("image unpack: skipping device node {}", raw);
      continue;  // data (none) is skipped by the next read_next_header
    }
    if (std::string via = symlink_ancestor(path, symlinks); !via.empty())
      return fail(Error::invalid("unsafe archive entry \"" + raw + "\": would be written through symlink \"" + via + "\""));

    if (overlay_whiteouts) {
      size_t slash = path.rfind('/');
      std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
      std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
      if (base.rfind(".wh.", 0) == 0) {
        if (base == ".wh..wh..opq") {
          opaque_dirs.push_back(parent);
        } else {
          std::string name = base.substr(4);
          if (name.empty() || name == "." || name == ".." || name.rfind(".wh.", 0) == 0)
            return fail(Error::invalid("unsafe archive entry \"" + raw + "\": bad whiteout"));
          whiteouts.emplace_back(parent, name);
        }
        continue;
      }
    }

    const char* link_c = entry_hardlink(e);
    if (path.empty() && (type != AE_IFDIR || link_c))
      return fail(Error::invalid("unsafe archive entry \"" + raw + "\": would replace the layer root"));

    std::string target;  // of a hardlink
    if (link_c) {
      target = CUBBY_TRY(clean_entry_path(raw, link_c, "hardlink target \"" + std::string(link_c) + "\""));
      if (target.empty())
        return fail(Error::invalid("unsafe archive entry \"" + raw + "\": hardlink to the layer root"));
      if (std::string via = symlink_ancestor(target, symlinks); !via.empty())
        return fail(Error::invalid("unsafe archive entry \"" + raw + "\": hardlink target \"" +
                                   link_c + "\" goes through symlink \"" + via + "\""));
      if (target.size() > kMaxPath)
        return fail(Error::invalid("unsafe archive entry \"" + raw + "\": hardlink target path too long"));
      // A hardlink to a symlink is itself a symlink.
      if (symlinks.count(target)) symlinks.insert(path); else symlinks.erase(path);
    } else if (type == AE_IFLNK) {
      symlinks.insert(path);
    } else {
      symlinks.erase(path);
    }

    if (path.size() > kMaxPath)
      return fail(Error::invalid("unsafe archive entry \"" + raw.substr(0, 100) + "...\": path too long"));
    ce.path = std::move(path);
    ce.target.clear();
    tar_entry_meta(e, raw, ce);
    if (link_c) {
      ce.kind = copy::Kind::kHardlink;
      ce.target = std::move(target);
    } else if (type == AE_IFREG) {
      ce.kind = copy::Kind::kFile;
    } else if (type == AE_IFDIR) {
      ce.kind = copy::Kind::kDir;
    } else if (type == AE_IFLNK) {
      const char* t = archive_entry_symlink(e);
      if (!t) t = archive_entry_symlink_utf8(e);
      if (!t) return fail(Error::invalid("corrupt archive: symlink \"" + raw + "\" without a target"));
      ce.kind = copy::Kind::kSymlink;
      ce.target = t;
    } else if (type == AE_IFIFO) {
      ce.kind = copy::Kind::kFifo;
    } else {
      LOG_DEBUG("image unpack: {}: skipping entry of type {:o}", raw, static_cast<unsigned>(type));
      continue;
    }
    // What the header declares must fit before any of it is read (a sparse
    // entry declares its logical size; its data in the stream is charged).
    if (budget && ce.kind == copy::Kind::kFile && archive_entry_sparse_count(e) == 0)
      CUBBY_TRYV(budget->fits(ce.size, "archive entry \"" + raw + "\""));
    CUBBY_TRYV(check(w.entry(ce)));
    if (ce.kind != copy::Kind::kFile) continue;
    for (;;) {
      const void* buf = nullptr;
      size_t len = 0;
      la_int64_t off = 0;
      r = archive_read_data_block(a.get(), &buf, &len, &off);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) return fail(corrupt(a.get()));
      CUBBY_TRYV(check(w.data_at(static_cast<uint64_t>(off), static_cast<const char*>(buf), len)));
    }
    CUBBY_TRYV(check(w.end_file()));
  }
  // Whiteouts last: the archive may list a directory after its whiteouts.
  for (const auto& dir : opaque_dirs) {
    if (std::string via = symlink_ancestor(dir + "/x", symlinks); !via.empty() || symlinks.count(dir))
      return fail(Error::invalid("unsafe archive entry \"" + dir + "/.wh..wh..opq\": under a symlink"));
    auto opened = w.open_dir(dir);
    if (!opened) return fail(writer_error(opened.error()));
    UniqueFd fd = std::move(*opened);
    // user.overlay.*: the sandbox mounts its overlay inside a user namespace
    // (option userxattr), where trusted.* xattrs are not read at all.
    if (::fsetxattr(fd.get(), "user.overlay.opaque", "y", 1, 0) < 0)
      return sys_fail("mark " + (dir.empty() ? std::string("/") : dir) + " opaque (user.overlay.opaque)");
  }
  for (const auto& [dir, name] : whiteouts) {
    if (!dir.empty() && symlinks.count(dir))
      return fail(Error::invalid("unsafe archive entry \"" + dir + "/.wh." + name + "\": under a symlink"));
    auto opened = w.open_dir(dir);
    if (!opened) return fail(writer_error(opened.error()));
    UniqueFd fd = std::move(*opened);
    if (::mknodat(fd.get(), name.c_str(), S_IFCHR | 0, ::makedev(0, 0)) < 0) {
      if (errno != EEXIST) return sys_fail("create whiteout " + dir + "/" + name);
      // The layer also holds NAME itself: the whiteout wins (it hides lower layers).
      if (::unlinkat(fd.get(), name.c_str(), 0) < 0 && ::unlinkat(fd.get(), name.c_str(), AT_REMOVEDIR) < 0)
        return sys_fail("replace " + dir + "/" + name + " with a whiteout");
      if (::mknodat(fd.get(), name.c_str(), S_IFCHR | 0, ::makedev(0, 0)) < 0)
        return sys_fail("create whiteout " + dir + "/" + name);
    }
  }
  // Directory modes and times last, after the whiteouts changed them.
  return check(w.finish());
}

// The tar inside a compressed layer, read through a second libarchive reader
// (decompression only) and hashed on the way: one pass, no temporary file.
struct TarTee {
  struct archive* outer;
  StageBudget* budget = nullptr;
  int copy_to = -1;
  Sha256 hash;
  uint64_t size = 0;
  std::optional<Error> error;  // the budget's or the copy's, not the archive's
  char buf[128 * 1024];
};

la_ssize_t tee_read(struct archive* inner, void* client, const void** out) {
  auto* t = static_cast<TarTee*>(client);
  la_ssize_t n = archive_read_data(t->outer, t->buf, sizeof t->buf);
  if (n < 0) {
    archive_set_error(inner, archive_errno(t->outer), "%s", archive_msg(t->outer).c_str());
    return -1;
  }
  auto stop = [&](Error e) {
    t->error = std::move(e);
    archive_set_error(inner, EFBIG, "%s", t->error->message().c_str());
    return la_ssize_t{-1};
  };
  if (t->budget)
    if (auto r = t->budget->charge(static_cast<uint64_t>(n)); !r) return stop(r.error());
  if (t->copy_to >= 0)
    if (auto w = sys::write_all(t->copy_to, t->buf, static_cast<size_t>(n)); !w) return stop(w.error().wrap("write the layer's tar"));
  t->hash.update(t->buf, static_cast<size_t>(n));
  t->size += static_cast<uint64_t>(n);
  *out = t->buf;
  return n;
}

}  // namespace

Result<TarBlob> unpack_stream(int fd, const std::string& dest_dir, const StreamOptions& o) {
  auto src = std::make_unique<FdSource>();
  src->fd = fd;
  ReadArchive outer = CUBBY_TRY(open_decompressor(*src));
  ReadArchive inner(archive_read_new());
  if (!inner) return fail(Error::internal("archive_read_new failed"));
  auto tee = std::make_unique<TarTee>();
  tee->outer = outer.get();
  tee->budget = o.budget;
  tee->copy_to = o.copy_to;
  // Whatever went wrong first: reading the input, the budget or the copy
  // (passed through libarchive as a read error), else the archive.
  auto first_cause = [&](const Error& e) {
    if (tee->error) return *tee->error;
    if (src->read_errno) return read_error(outer.get(), *src);
    return e;
  };
  archive_read_support_format_tar(inner.get());
  if (archive_read_open(inner.get(), tee.get(), nullptr, tee_read, nullptr) != ARCHIVE_OK)
    return fail(first_cause(corrupt(inner.get())));
  auto u = unpack_entries(inner.get(), dest_dir, o.overlay_whiteouts, o.budget);
  if (!u) return fail(first_cause(u.error()));
  if (o.read_to_end) {
    // The diff_id covers the whole tar stream, padding after the end marker
    // too; tar pads to its record size (10 KiB by default), so more than
    // kMaxTrailingBytes there is no padding (/dev/zero would never end).
    const uint64_t end = tee->size;
    const void* ignored;
    for (la_ssize_t n; (n = tee_read(inner.get(), tee.get(), &ignored)) != 0;) {
      if (n < 0) return fail(first_cause(corrupt(inner.get())));
      if (tee->size - end > kMaxTrailingBytes)
        return fail(Error::invalid("corrupt archive: more than " + std::to_string(kMaxTrailingBytes >> 10) +
                                   " KiB after the tar's end-of-archive marker"));
    }
  }
  if (tee->size == 0)
    return fail(Error::invalid(src->total == 0 ? "corrupt archive: empty input" : "corrupt archive: no data after decompression"));
  return TarBlob{tee->hash.hex_final(), tee->size};
}

Result<StagedLayer> stage_layer_fd(int fd, const std::string& work_dir, const std::string& tag,
                                   const std::string& expected_diff_hex, StageBudget* budget) {
  StagedLayer out{"", work_dir + "/" + tag + ".layer"};
  // The layer's root, i.e. the image's / (0755 unless the tar says): the
  // store's 0700 layers/ around it keeps other users out, not its mode.
  if (::mkdir(out.dir.c_str(), 0755) < 0) return sys_fail("mkdir " + out.dir);
  StreamOptions o;
  o.overlay_whiteouts = true;
  o.budget = budget;
  auto blob = CUBBY_TRY(unpack_stream(fd, out.dir, o));
  out.diff_hex = blob.digest_hex;
  if (!expected_diff_hex.empty() && out.diff_hex != expected_diff_hex)
    return fail(Error::invalid("layer content does not match its diff_id (want sha256:" + expected_diff_hex +
                               ", got sha256:" + out.diff_hex + ")"));
  return out;
}

Result<StagedLayer> stage_layer(const std::string& blob_path, const std::string& work_dir,
                                const std::string& tag, const std::string& expected_diff_hex, StageBudget* budget) {
  UniqueFd in(::open(blob_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return sys_fail("open " + blob_path);
  return stage_layer_fd(in.get(), work_dir, tag, expected_diff_hex, budget);
}

Error StageBudget::over(const std::string& what) const {
  return Error::invalid(what + " would take the image past the staging limit of " + std::to_string(limit_ >> 20) +
                        " MiB (\"image-stage-limit\" in config.json raises it); nothing was stored");
}

Result<void> StageBudget::charge(uint64_t n) {
  if (used_.fetch_add(n) + n > limit_) return fail(over("the archive's uncompressed data"));
  return {};
}

Result<void> StageBudget::fits(uint64_t declared, const std::string& what) const {
  if (declared > limit_ - std::min(limit_, used_.load())) return fail(over(what + " of " + std::to_string(declared) + " bytes"));
  return {};
}


void support_decompressors(struct archive* a) {
  // Only in-process decompressors: never let libarchive spawn helper programs.
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_bzip2(a);
  archive_read_support_filter_xz(a);
  archive_read_support_filter_zstd(a);
}

void tar_entry_meta(struct archive_entry* ae, const std::string& raw, copy::Entry& out) {
  out.mode = static_cast<uint32_t>(archive_entry_mode(ae) & 07777);
  out.uid = static_cast<uint32_t>(archive_entry_uid(ae));
  out.gid = static_cast<uint32_t>(archive_entry_gid(ae));
  if (archive_entry_mtime_is_set(ae)) {
    out.mtime_sec = archive_entry_mtime(ae);
    out.mtime_nsec = static_cast<uint32_t>(archive_entry_mtime_nsec(ae));
  } else {
    out.mtime_sec = 0;
    out.mtime_nsec = copy::kTimeOmit;
  }
  if (archive_entry_atime_is_set(ae)) {
    out.atime_sec = archive_entry_atime(ae);
    out.atime_nsec = static_cast<uint32_t>(archive_entry_atime_nsec(ae));
  } else {
    out.atime_sec = out.mtime_sec;
    out.atime_nsec = out.mtime_nsec;
  }
  out.size = archive_entry_size_is_set(ae) && archive_entry_size(ae) > 0 ? static_cast<uint64_t>(archive_entry_size(ae)) : 0;
  kept_xattrs(ae, raw, out.xattrs);
}

}  // namespace cubby::image
