#include "shim/vm_disk.h"
#include "shim/vm_template.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"

namespace cubby::shim {
namespace {

bool is_whiteout(const struct stat& st) { return S_ISCHR(st.st_mode) && st.st_rdev == ::makedev(0, 0); }

bool is_opaque(const std::string& dir) {
  for (const char* name : {"user.overlay.opaque", "trusted.overlay.opaque"}) {
    char v[2] = {};
    if (::lgetxattr(dir.c_str(), name, v, sizeof v) == 1 && v[0] == 'y') return true;
  }
  return false;
}

// Ownership, mode, xattrs (minus overlayfs' own) and times of src onto dst.
Result<void> copy_metadata(const std::string& src, const std::string& dst, const struct stat& st) {
  if (::lchown(dst.c_str(), st.st_uid, st.st_gid) < 0 && errno != EPERM) return sys_fail("chown " + dst);
  if (!S_ISLNK(st.st_mode) && ::chmod(dst.c_str(), st.st_mode & 07777) < 0) return sys_fail("chmod " + dst);
  ssize_t n = ::llistxattr(src.c_str(), nullptr, 0);
  if (n > 0) {
    std::string names(static_cast<size_t>(n), '\0');
    n = ::llistxattr(src.c_str(), names.data(), names.size());
    for (size_t at = 0; n > 0 && at < static_cast<size_t>(n); at = names.find('\0', at) + 1) {
      std::string name = names.c_str() + at;
      if (name.rfind("trusted.overlay.", 0) == 0 || name.rfind("user.overlay.", 0) == 0) continue;
      ssize_t len = ::lgetxattr(src.c_str(), name.c_str(), nullptr, 0);
      if (len < 0) continue;
      std::string value(static_cast<size_t>(len), '\0');
      len = ::lgetxattr(src.c_str(), name.c_str(), value.data(), value.size());
      if (len >= 0) (void)::lsetxattr(dst.c_str(), name.c_str(), value.data(), static_cast<size_t>(len), 0);
    }
  }
  timespec times[2] = {st.st_atim, st.st_mtim};
  (void)::utimensat(AT_FDCWD, dst.c_str(), times, AT_SYMLINK_NOFOLLOW);
  return {};
}

// A non-directory entry of a layer at dst: hardlinked (same filesystem, no
// bytes copied), or copied where a link is not allowed.
Result<void> place_entry(const std::string& src, const std::string& dst, const struct stat& st) {
  if (::link(src.c_str(), dst.c_str()) == 0) return {};
  if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
    ssize_t n = ::readlink(src.c_str(), target.data(), target.size());
    if (n < 0) return sys_fail("readlink " + src);
    target.resize(static_cast<size_t>(n));
    if (::symlink(target.c_str(), dst.c_str()) < 0) return sys_fail("symlink " + dst);
  } else if (S_ISREG(st.st_mode)) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!in || !out) return sys_fail("copy " + src);
    for (off_t left = st.st_size; left > 0;) {
      ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, static_cast<size_t>(left), 0);
      if (n <= 0) return sys_fail("copy " + src);
      left -= n;
    }
  } else if (::mknod(dst.c_str(), st.st_mode, st.st_rdev) < 0) {
    return sys_fail("mknod " + dst);
  }
  return copy_metadata(src, dst, st);
}

Result<void> apply_layer(const std::string& src, const std::string& dst) {
  DIR* d = ::opendir(src.c_str());
  if (!d) return sys_fail("open layer dir " + src);
  std::unique_ptr<DIR, int (*)(DIR*)> closer(d, ::closedir);
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    std::string s = src + "/" + name, t = dst + "/" + name;
    struct stat st, old;
    if (::lstat(s.c_str(), &st) < 0) return sys_fail("stat " + s);
    bool exists = ::lstat(t.c_str(), &old) == 0;
    if (is_whiteout(st)) {  // the name is deleted from the layers below
      if (exists) CUBBY_TRYV(remove_tree(t));
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      // An opaque directory hides everything below it; a directory replaces
      // a file of the same name.
      if (exists && (!S_ISDIR(old.st_mode) || is_opaque(s))) {
        CUBBY_TRYV(remove_tree(t));
        exists = false;
      }
      if (!exists && ::mkdir(t.c_str(), 0700) < 0) return sys_fail("mkdir " + t);
      CUBBY_TRYV(apply_layer(s, t));
      CUBBY_TRYV(copy_metadata(s, t, st));  // after the children: keeps mtime and a read-only mode
      continue;
    }
    if (exists) CUBBY_TRYV(remove_tree(t));
    CUBBY_TRYV(place_entry(s, t, st));
  }
  return {};
}

uint64_t g_tree_bytes;
int add_size(const char*, const struct stat* st, int, FTW*) {
  g_tree_bytes += static_cast<uint64_t>(st->st_blocks) * 512 + 256;
  return 0;
}

std::string disks_dir(const std::string& home) { return home + "/vm/disks"; }

}  // namespace

std::string find_program(const std::string& name) {
  std::string path = getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin";
  path += ":/usr/sbin:/sbin";
  size_t at = 0;
  while (at <= path.size()) {
    size_t end = path.find(':', at);
    if (end == std::string::npos) end = path.size();
    std::string p = path.substr(at, end - at) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
    at = end + 1;
  }
  return "";
}

Result<ExitStatus> run_tool(const std::vector<std::string>& argv) {
  SpawnSpec s;
  s.argv = argv;
  s.fds = {-1, 2, 2};
  s.die_with_parent = true;
  s.umask = 077;  // the disk images it makes hold the image and the box's files: owner only
  auto c = CUBBY_TRY(spawn(s));
  return c.wait();
}

Result<void> flatten_layers(const std::vector<std::string>& layers, const std::string& dest) {
  for (const auto& l : layers) CUBBY_TRYV(apply_layer(l, dest));
  if (!layers.empty()) {
    struct stat st;
    if (::lstat(layers.back().c_str(), &st) == 0) CUBBY_TRYV(copy_metadata(layers.back(), dest, st));
  }
  return {};
}

Result<std::string> image_disk(const std::string& home, const std::vector<std::string>& layers) {
  if (layers.empty()) return fail(Error::invalid("the image has no layers"));
  (void)collect_unused_image_disks(home);
  uint64_t h = 1469598103934665603ull;  // FNV-1a of the layer paths (content-addressed dirs)
  std::string list;
  for (auto& l : layers) list += l + '\n';
  for (unsigned char c : list) h = (h ^ c) * 1099511628211ull;
  char key[17];
  std::snprintf(key, sizeof key, "%016llx", static_cast<unsigned long long>(h));
  std::string dir = disks_dir(home);
  std::string path = dir + "/" + key + ".ext4";
  if (::access(path.c_str(), R_OK) == 0) return path;
  CUBBY_TRYV(mkdir_p(dir, 0700));
  std::string suffix = "." + std::to_string(::getpid());
  std::string merged = path + ".tree" + suffix, tmp = path + ".tmp" + suffix;
  auto cleanup = [&] {
    (void)remove_tree(merged);
    ::unlink(tmp.c_str());
  };
  if (::mkdir(merged.c_str(), 0700) < 0) return sys_fail("mkdir " + merged);  // gets the image root's mode
  if (auto f = flatten_layers(layers, merged); !f) {
    cleanup();
    return std::unexpected(f.error().wrap("flatten the image layers"));
  }
  g_tree_bytes = 0;
  ::nftw(merged.c_str(), add_size, 64, FTW_PHYS);
  uint64_t kib = (g_tree_bytes * 3 / 2) / 1024 + 32 * 1024;
  auto r = run_tool({find_program("mke2fs"), "-q", "-t", "ext4", "-L", "cubby-image", "-O", "^has_journal", "-E",
                     "root_owner=0:0", "-d", merged, "-F", tmp, std::to_string(kib) + "k"});
  if (!r || r->shell_code() != 0) {
    cleanup();
    return fail(Error::internal("mke2fs -d " + merged + " failed (is e2fsprogs installed?)"));
  }
  (void)remove_tree(merged);
  // The layer list next to the disk, for collect_unused_image_disks.
  (void)write_file(path + ".layers", list, 0600);
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    cleanup();
    return sys_fail("rename " + tmp);
  }
  return path;
}

int collect_unused_image_disks(const std::string& home) {
  std::string dir = disks_dir(home);
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  std::vector<std::string> gone;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() <= 5 || name.compare(name.size() - 5, 5, ".ext4") != 0) continue;
    std::ifstream f(dir + "/" + name + ".layers");
    if (!f) continue;  // written before disks recorded their layers: kept
    std::string layer;
    while (std::getline(f, layer)) {
      if (!layer.empty() && ::access(layer.c_str(), F_OK) != 0) {
        gone.push_back(dir + "/" + name);
        break;
      }
    }
  }
  ::closedir(d);
  // A running VM keeps its open disk's inode; only the name goes.
  for (const auto& p : gone) {
    LOG_INFO("removing image disk {} (its image is gone)", p);
    ::unlink(p.c_str());
    ::unlink((p + ".layers").c_str());
    remove_templates_of(home, p);
  }
  return static_cast<int>(gone.size());
}

Result<void> copy_disk_sparse(const std::string& src, const std::string& dst) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return sys_fail("open " + src);
  struct stat st;
  if (::fstat(in.get(), &st) < 0) return sys_fail("stat " + src);
  const std::string tmp = dst + ".partial";
  ::unlink(tmp.c_str());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) return sys_fail("create " + tmp);
  auto copy = [&]() -> Result<void> {
    if (::ftruncate(out.get(), st.st_size) < 0) return sys_fail("size " + tmp);
    for (off_t at = 0; at < st.st_size;) {
      off_t data = ::lseek(in.get(), at, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;  // only a hole is left
      if (data < 0) return sys_fail("seek " + src);
      off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
      if (hole < 0) return sys_fail("seek " + src);
      for (loff_t from = data, to = data; from < hole;) {
        ssize_t n = ::copy_file_range(in.get(), &from, out.get(), &to, static_cast<size_t>(hole - from), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return n < 0 ? sys_fail("copy " + src) : fail(Error::internal(src + " shrank while copied"));
      }
      at = hole;
    }
    if (::fsync(out.get()) < 0) return sys_fail("sync " + tmp);
    if (::rename(tmp.c_str(), dst.c_str()) < 0) return sys_fail("rename " + tmp);
    return {};
  };
  auto r = copy();
  if (!r) ::unlink(tmp.c_str());
  return r;
}

Result<std::string> box_disk(const std::string& box_dir) {
  std::string path = box_dir + "/disk.ext4";
  if (::access(path.c_str(), R_OK | W_OK) == 0) return path;
  std::string tmp = path + ".tmp";
  auto r = run_tool({find_program("mke2fs"), "-q", "-t", "ext4", "-L", "cubby-rw", "-E",
                     "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0", "-F", tmp, "1G"});
  if (!r || r->shell_code() != 0) {
    ::unlink(tmp.c_str());
    return fail(Error::internal("mke2fs for the box disk failed (is e2fsprogs installed?)"));
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) return sys_fail("rename " + tmp);
  return path;
}

}  // namespace cubby::shim
