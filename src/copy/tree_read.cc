#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "base/fs.h"
#include "copy/tree.h"
#include "proto/messages.h"

namespace cubby::copy {

namespace {

Entry meta_of(const struct stat& st, const std::string& rel, Kind kind) {
  Entry e;
  e.path = rel;
  e.kind = kind;
  e.mode = st.st_mode & 07777;
  e.uid = st.st_uid;
  e.gid = st.st_gid;
  e.mtime_sec = st.st_mtim.tv_sec;
  e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  return e;
}

std::string child_path(const std::string& rel, const std::string& name) { return rel.empty() ? name : rel + "/" + name; }

Result<std::string> link_text(int dirfd, const char* name, const std::string& rel) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
  if (n < 0) return sys_fail("read link " + rel);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// The data extents of a file of `size` bytes, by SEEK_DATA/SEEK_HOLE, or
// nothing when it has no holes. Probed only when it has fewer blocks than
// its size needs (GNU cp's test), so a file without holes costs no extra
// syscall. Beyond kMaxExtents the rest is one extent: read as data, holes
// and all, which is only less sparse.
std::optional<std::vector<Extent>> data_extents(int fd, const struct stat& st) {
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0 || static_cast<uint64_t>(st.st_blocks) * 512 >= size) return std::nullopt;
  std::vector<Extent> x;
  uint64_t pos = 0;
  while (pos < size) {
    off_t d = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0 && errno == ENXIO) break;  // only a hole from here on
    if (d < 0) return std::nullopt;      // no SEEK_DATA here: read it all
    if (static_cast<uint64_t>(d) >= size) break;
    off_t h = ::lseek(fd, d, SEEK_HOLE);
    if (h < 0) return std::nullopt;
    uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(h), size);
    if (end <= static_cast<uint64_t>(d)) return std::nullopt;  // changing under us
    if (x.size() + 1 == proto::msg::kMaxExtents) end = size;
    x.push_back({static_cast<uint64_t>(d), end - static_cast<uint64_t>(d)});
    pos = end;
  }
  if (x.size() == 1 && x[0].offset == 0 && x[0].length == size) return std::nullopt;
  return x;
}

// Sends the file as st says it is: st_size bytes (or its extents' bytes)
// exactly; a file that shrinks while it is read is padded with zeros, one
// that grows is cut, so the stream stays well formed.
Result<void> send_file(int fd, const struct stat& st, const std::string& rel, EntrySink& sink) {
  Entry e = meta_of(st, rel, Kind::kFile);
  e.size = static_cast<uint64_t>(st.st_size);
  std::vector<Extent> ranges;
  if (auto x = data_extents(fd, st)) {
    e.sparse = true;
    e.extents = std::move(*x);
    ranges = e.extents;
  } else if (e.size > 0) {
    ranges.push_back({0, e.size});
  }
  CUBBY_TRYV(sink.entry(e));
  std::unique_ptr<char[]> buf(new char[kDataChunk]);
  bool eof = false;
  for (const auto& x : ranges) {
    uint64_t off = x.offset, left = x.length;
    while (left > 0) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(left, kDataChunk));
      ssize_t n = 0;
      if (!eof) n = ::pread(fd, buf.get(), want, static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return sys_fail("read " + (rel.empty() ? std::string("file") : rel));
      if (n == 0) {
        eof = true;
        std::memset(buf.get(), 0, want);
        n = static_cast<ssize_t>(want);
      }
      CUBBY_TRYV(sink.data(buf.get(), static_cast<size_t>(n)));
      off += static_cast<uint64_t>(n);
      left -= static_cast<uint64_t>(n);
    }
  }
  return {};
}

// Files with several names seen so far in this copy (dev, inode) -> the
// first name, so a hard link is sent as one (as tar and docker cp do).
using Links = std::map<std::pair<dev_t, ino_t>, std::string>;

Result<void> walk(int fd, const struct stat& st, const std::string& rel, EntrySink& sink, Links& links) {
  if (S_ISREG(st.st_mode)) {
    if (st.st_nlink > 1 && !rel.empty()) {
      auto [it, first] = links.emplace(std::pair{st.st_dev, st.st_ino}, rel);
      if (!first) {
        Entry e = meta_of(st, rel, Kind::kHardlink);
        e.target = it->second;
        return sink.entry(e);
      }
    }
    return send_file(fd, st, rel, sink);
  }
  CUBBY_TRYV(sink.entry(meta_of(st, rel, Kind::kDir)));
  int dfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dfd < 0) return sys_fail("dup");
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(dfd), ::closedir);
  if (!dir) {
    ::close(dfd);
    return sys_fail("open directory " + rel);
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* d = ::readdir(dir.get())) {
    if (std::strcmp(d->d_name, ".") != 0 && std::strcmp(d->d_name, "..") != 0) names.emplace_back(d->d_name);
  }
  if (errno != 0) return sys_fail("read directory " + rel);
  std::sort(names.begin(), names.end());  // a stable order for archives and tests
  for (const auto& name : names) {
    std::string crel = child_path(rel, name);
    struct stat cst;
    if (::fstatat(fd, name.c_str(), &cst, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT) continue;  // removed while we walked
      return sys_fail("stat " + crel);
    }
    if (S_ISLNK(cst.st_mode)) {
      auto text = link_text(fd, name.c_str(), crel);
      if (!text) {
        if (text.error().sys_errno() == ENOENT) continue;
        return fail(text.error());
      }
      Entry e = meta_of(cst, crel, Kind::kSymlink);
      e.target = *text;
      CUBBY_TRYV(sink.entry(e));
      continue;
    }
    if (!S_ISDIR(cst.st_mode) && !S_ISREG(cst.st_mode)) continue;  // fifo, socket, device
    // O_NOFOLLOW|O_NONBLOCK: whatever replaced the entry since the stat is
    // never followed and never blocks us (a fifo); the fd's own stat counts.
    UniqueFd cfd(::openat(fd, name.c_str(),
                          O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | (S_ISDIR(cst.st_mode) ? O_DIRECTORY : 0)));
    if (!cfd) {
      if (errno == ENOENT || errno == ELOOP || errno == ENOTDIR) continue;
      return sys_fail("open " + crel);
    }
    if (::fstat(cfd.get(), &cst) < 0) return sys_fail("stat " + crel);
    if (!S_ISDIR(cst.st_mode) && !S_ISREG(cst.st_mode)) continue;
    CUBBY_TRYV(walk(cfd.get(), cst, crel, sink, links));
  }
  return {};
}

}  // namespace

Result<void> read_tree(int at, const std::string& path, uint64_t resolve, bool follow, EntrySink& sink) {
  int nofollow = follow ? 0 : O_NOFOLLOW;
  UniqueFd probe = open_resolved(at, path, O_PATH | nofollow, resolve);
  if (!probe) {
    if (errno == ENOENT) return fail(Error::not_found(path + ": no such file or directory"));
    return sys_fail(path);
  }
  struct stat st;
  if (::fstat(probe.get(), &st) < 0) return sys_fail("stat " + path);
  if (S_ISLNK(st.st_mode)) {
    Entry e = meta_of(st, "", Kind::kSymlink);
    e.target = CUBBY_TRY(link_text(probe.get(), "", path));
    CUBBY_TRYV(sink.entry(e));
    return sink.finish();
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return fail(Error::invalid(path + ": not a regular file, directory or symlink"));
  UniqueFd fd = open_resolved(at, path, O_RDONLY | O_NONBLOCK | nofollow, resolve);
  if (!fd) return sys_fail("open " + path);
  if (::fstat(fd.get(), &st) < 0) return sys_fail("stat " + path);
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return fail(Error::invalid(path + ": not a regular file, directory or symlink"));
  Links links;
  CUBBY_TRYV(walk(fd.get(), st, "", sink, links));
  return sink.finish();
}

}  // namespace cubby::copy
