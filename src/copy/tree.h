// Reading a file tree into an entry stream, and writing one out, with every
// path resolved by openat2 from a directory fd. The same code serves both
// sides of `cubby cp`; only the resolve flags differ:
//   - in a box (the agent), RESOLVE_IN_ROOT from the box's "/": symlinks the
//     box planted are followed, but only ever inside the box (as Docker
//     resolves container paths), and no magic link of /proc is crossed;
//   - on the host, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from the destination
//     directory: an entry from the (untrusted) box can neither climb out nor
//     be written through any symlink, its own or one already there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "copy/entry.h"

namespace cubby::copy {

// Streams the tree at `path` (from `at`, see base/fs.h's open_resolved) into sink: the
// root as entry "", then what is below it, parents before children. Below
// the root symlinks are sent as links, never followed; the root itself is
// followed only with `follow` (cp -L); a file met again under another name
// is sent as a hard link to the first. Sockets, fifos and devices are
// skipped. A missing root is kNotFound. Calls sink.finish() at the end.
Result<void> read_tree(int at, const std::string& path, uint64_t resolve, bool follow, EntrySink& sink);

// Who owns what a TreeWriter creates.
enum class Owner {
  kCaller,  // whoever we run as (host side without -a)
  kRoot,    // 0:0 (box side without -a: the box's root, like Docker)
  kEntry,   // the entry's uid/gid (-a)
};

struct WriterOptions {
  int root = -1;           // every path is resolved from this directory fd
  std::string base;        // the destination directory below root ("" = root)
  uint64_t resolve = 0;    // openat2 RESOLVE_* flags
  bool allow_symlinks = false;  // false: any symlink on the way is an error
  Owner owner = Owner::kCaller;
  bool strip_setid = false;     // drop setuid/setgid bits (untrusted source)
};

// Creates the entries it receives under root/base. Files replace existing
// non-directories (never written through them); directories merge into
// existing ones. Missing parents are created. Directory modes and times are
// applied at finish(), after their contents were written.
class TreeWriter : public EntrySink {
 public:
  explicit TreeWriter(WriterOptions o) : o_(std::move(o)) {}
  Result<void> entry(const Entry& e) override;
  Result<void> data(const char* d, size_t n) override;
  Result<void> finish() override;

 private:
  struct DirFix {
    std::string path;
    Entry meta;
  };
  Result<UniqueFd> open_dir(const std::string& rel, bool create);
  Result<void> replace_nondir(int parent, const std::string& name, const std::string& rel);
  Result<void> set_meta(int fd, const Entry& e, const std::string& rel);
  std::string shown(const std::string& rel) const;

  WriterOptions o_;
  UniqueFd file_;          // the file receiving data
  Entry file_meta_;
  uint64_t owed_ = 0;
  std::vector<DirFix> dirs_;
};

}  // namespace cubby::copy
