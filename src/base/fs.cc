#include "base/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>

#include "base/sys.h"
#include "base/unique_fd.h"

namespace cubby {

std::vector<std::string> split_path(const std::string& p) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    if (end > start) out.push_back(p.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

UniqueFd open_resolved(int at, const std::string& path, int flags, uint64_t resolve) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = resolve;
  long fd;
  do fd = ::syscall(SYS_openat2, at, path.empty() ? "." : path.c_str(), &how, sizeof how);
  while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  return UniqueFd(static_cast<int>(fd));
}

Result<std::string> read_file(const std::string& path, size_t limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return sys_fail("open " + path);
  auto r = sys::read_all(fd.get(), limit);
  if (!r) return std::unexpected(r.error().wrap("read " + path));
  return r;
}

Result<void> write_file(const std::string& path, std::string_view data, int mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return sys_fail("open " + path);
  auto r = sys::write_all(fd.get(), data.data(), data.size());
  if (!r) return std::unexpected(r.error().wrap(path));
  return {};
}

Result<void> write_file_atomic(const std::string& path, std::string_view data, int mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd) return sys_fail("open " + tmp);
    auto r = sys::write_all(fd.get(), data.data(), data.size());
    if (!r || ::fsync(fd.get()) < 0) {
      ::unlink(tmp.c_str());
      return sys_fail("write " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) < 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return sys_fail("rename " + path, e);
  }
  return {};
}

Result<void> mkdir_p(const std::string& path, int mode) {
  for (size_t end = path.find('/', 1);; end = path.find('/', end + 1)) {
    std::string dir = path.substr(0, end);
    if (::mkdir(dir.c_str(), static_cast<mode_t>(mode)) == 0) {
      if (::chmod(dir.c_str(), static_cast<mode_t>(mode)) < 0) return sys_fail("chmod " + dir);
    } else if (errno != EEXIST) {
      return sys_fail("mkdir " + dir);
    }
    if (end == std::string::npos) break;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return sys_fail("mkdir " + path);
  if (!S_ISDIR(st.st_mode)) return sys_fail("mkdir " + path, ENOTDIR);
  return {};
}

Result<void> make_private(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) return errno == ENOENT ? Result<void>{} : sys_fail("stat " + path);
  // A file that went between the two calls (SQLite's last connection to close
  // removes -wal and -shm) needs no mode.
  if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), st.st_mode & 07700) < 0 && errno != ENOENT)
    return sys_fail("chmod " + path);
  return {};
}

Result<void> make_private_dir(const std::string& path) {
  CUBBY_TRYV(mkdir_p(path, 0700));
  return make_private(path);
}

Result<void> remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);  // does not follow symlinks
  if (ec && ec != std::errc::no_such_file_or_directory)
    return fail(Error::sys("remove " + path, ec.value()));
  return {};
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());  // glibc opens it O_CLOEXEC
  if (!d) return out;
  while (dirent* de = ::readdir(d)) {
    std::string n = de->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

std::string now_rfc3339() {
  time_t t = ::time(nullptr);
  struct tm tm;
  ::gmtime_r(&t, &tm);
  char buf[32];
  ::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace cubby
