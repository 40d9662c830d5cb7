#include "shim/vm_template.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>

#include "base/fs.h"
#include "base/log.h"
#include "base/sys.h"

namespace cubby::shim {
namespace {

constexpr const char* kStream = "state";
constexpr const char* kPartial = "state.partial";
constexpr const char* kKeyFile = "key";

std::string templates_dir(const std::string& home) { return home + "/vm/templates"; }

// <disk key> of <home>/vm/disks/<disk key>.ext4.
std::string disk_key(const std::string& image_disk) {
  std::string base = image_disk.substr(image_disk.rfind('/') + 1);
  return base.substr(0, base.find('.'));
}

}  // namespace

std::string file_identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return path + ":missing";
  return path + ":" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) +
         ":" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

VmTemplate::VmTemplate(const std::string& home, const std::string& image_disk, std::string key) : key_(std::move(key)) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(key_));
  dir_ = templates_dir(home) + "/" + disk_key(image_disk) + "-" + hash;
}

std::optional<UniqueFd> VmTemplate::open_for_restore() const {
  // The key is compared whole: a hash collision or a stale directory never
  // restores a VM built for something else.
  auto k = read_file(dir_ + "/" + kKeyFile, 1 << 16);
  if (!k || *k != key_) return std::nullopt;
  UniqueFd fd(::open((dir_ + "/" + kStream).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  return fd;
}

Result<std::optional<UniqueFd>> VmTemplate::begin_build() {
  CUBBY_TRYV(mkdir_p(dir_, 0700));
  UniqueFd lock(::open((dir_ + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return sys_fail("open " + dir_ + ".lock");
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK) return std::optional<UniqueFd>();
    return sys_fail("flock " + dir_ + ".lock");
  }
  // Under the lock: a key of another build, or a builder killed midway,
  // leaves nothing that counts.
  ::unlink((dir_ + "/" + kKeyFile).c_str());
  UniqueFd out(::open((dir_ + "/" + kPartial).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return sys_fail("create " + dir_ + "/" + kPartial);
  lock_ = std::move(lock);
  return std::optional<UniqueFd>(std::move(out));
}

Result<void> VmTemplate::commit() {
  const std::string partial = dir_ + "/" + kPartial;
  UniqueFd fd(::open(partial.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) < 0) return sys_fail("fsync " + partial);
  if (::rename(partial.c_str(), (dir_ + "/" + kStream).c_str()) < 0) return sys_fail("rename " + partial);
  // The key last: a template is whole once it names its key.
  CUBBY_TRYV(write_file_atomic(dir_ + "/" + kKeyFile, key_));
  lock_.reset();
  return {};
}

void VmTemplate::discard() {
  ::unlink((dir_ + "/" + kKeyFile).c_str());
  ::unlink((dir_ + "/" + kPartial).c_str());
  ::unlink((dir_ + "/" + kStream).c_str());
  lock_.reset();
}

void remove_templates_of(const std::string& home, const std::string& image_disk) {
  const std::string dir = templates_dir(home), prefix = disk_key(image_disk) + "-";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> gone;
  while (dirent* e = ::readdir(d))
    if (std::string n = e->d_name; n.rfind(prefix, 0) == 0) gone.push_back(dir + "/" + n);
  ::closedir(d);
  for (const auto& p : gone) {
    LOG_INFO("removing vm template {} (its image is gone)", p);
    if (p.size() > 5 && p.compare(p.size() - 5, 5, ".lock") == 0)
      ::unlink(p.c_str());
    else
      (void)remove_tree(p);
  }
}

}  // namespace cubby::shim
