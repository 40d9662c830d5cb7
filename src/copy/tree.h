// Reading a file tree into an entry stream, and writing one out, with every
// path resolved by openat2 from a directory fd. The same writer serves both
// sides of `cubby cp` and the image layer unpacker (image/unpack.cc, with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from the new layer's directory and
// tar's replacement and owner rules); for cp only the resolve flags differ:
//   - in a box (the agent), the destination directory is found with
//     RESOLVE_IN_ROOT from the box's "/" (symlinks the box planted on the
//     way are followed, but only ever inside the box, as Docker resolves
//     container paths, and no magic link of /proc is crossed); below it,
//     RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from that directory, as on the
//     host: a tar's own `link -> /etc` then `link/passwd` cannot lead a
//     write out of the destination;
//   - on the host, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from the destination
//     directory: an entry from the (untrusted) box can neither climb out nor
//     be written through any symlink, its own or one already there.
// cp's streams also pass a StreamCheck (copy/entry.h) first, which refuses
// what the kernel cannot see: hard links to files the stream did not make.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstdint>
#include <map>
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
  kCaller,   // whoever we run as (host side without -a)
  kRoot,     // 0:0 (box side without -a: the box's root, like Docker)
  kEntry,    // the entry's uid/gid (-a); a refused chown is an error
  // As tar restores owners (the layer unpacker): the entry's uid/gid when
  // running as root, where a refused chown is only logged; unprivileged, the
  // caller's. Either way set-id bits stay only on objects that got the
  // entry's ids, so nobody gets a setuid program owned by someone else.
  kRestore,
};

struct WriterOptions {
  int root = -1;           // every path is resolved from this directory fd
  std::string base;        // the destination directory below root ("" = root)
  uint64_t resolve = 0;    // openat2 RESOLVE_* flags (symlinks on the way are errors)
  std::string shown_base;  // how messages name root/base ("" : "/" + base)
  Owner owner = Owner::kCaller;
  bool strip_setid = false;     // drop setuid/setgid bits (untrusted source)
  // tar's replacement rule (the layer unpacker): an entry replaces whatever
  // non-directory is in its way, and an empty directory too (a non-empty one
  // is an error). Without it (cp) a directory is never replaced, nor is a
  // non-directory replaced by a directory.
  bool replace_all = false;
  // A "" directory entry's mode, owner and times are applied to the
  // destination itself (a layer's "./"); without it they are ignored (cp
  // into an existing directory leaves that directory as it was).
  bool root_meta = false;
  // Start writeback of each file once it is complete (sync_file_range
  // WRITE), so a later syncfs finds little left to do.
  bool sync_files = false;
  // Each regular file is written under a temporary name in its directory
  // (an O_TMPFILE, else a hidden ".NAME.cubby-XXXXXXXX") and renamed into
  // place once complete, so its name holds the old file or the whole new
  // one, never part of it. A writer destroyed mid-file unlinks its named
  // temporary; an O_TMPFILE needs no cleanup even when the process is
  // killed. Off for the layer unpacker: a failed layer's directory goes
  // whole.
  bool atomic_files = true;
};

// Creates the entries it receives under root/base. Files, symlinks, fifos
// and links replace existing non-directories (removed, never written
// through); directories merge into existing ones. Missing parents are made.
// The last component is always created with *at() calls that never follow
// it, and parents are resolved with openat2 under `resolve`, so containment
// is the kernel's check. Entries come grouped by directory, so the last
// parent's fd is kept: one openat2 per directory, not per entry (the fd
// names the directory as it was resolved; if it is moved meanwhile, in a box
// only the box can do that, and it stays in the box). Directory
// modes, owners, xattrs and times are applied at finish(), deepest first,
// after their contents were written (a 0555 directory still takes them).
class TreeWriter : public EntrySink {
 public:
  explicit TreeWriter(WriterOptions o) : o_(std::move(o)) {}
  TreeWriter(TreeWriter&&) = default;
  ~TreeWriter() override;
  // For a kFile entry the file is created (0600 until complete) and either
  // exactly stream_bytes(e) bytes follow in order through data(), landing
  // at e's extents when it is sparse (the file is complete with the last
  // one, at once when there are none), or blocks at their offsets through
  // data_at() and end_file() completes it (a sparse tar entry). Unwritten
  // ranges and a missing tail are left as holes.
  Result<void> entry(const Entry& e) override;
  Result<void> data(const char* d, size_t n) override;
  // Blocks must come in order, without overlap, within the entry's size.
  Result<void> data_at(uint64_t offset, const char* d, size_t n);
  // Completes a file written with data_at (size, owner, mode, xattrs,
  // times); nothing when no file is open.
  Result<void> end_file();
  // The directory rel (below base), created with its parents where missing,
  // opened O_RDONLY (for fsetxattr or mknodat: overlay whiteouts).
  Result<UniqueFd> open_dir(const std::string& rel);
  Result<void> finish() override;

 private:
  // A directory fd of rel's parent (cached) and rel's last component.
  Result<int> parent_of(const std::string& rel, std::string& name);
  // The resolved directory rel (O_PATH, or flags), made with its parents
  // where missing and `create`.
  Result<UniqueFd> resolve_dir(const std::string& rel, bool create, int flags = O_PATH);
  Error refused(const std::string& rel, int err) const;
  // Makes way for a new non-directory at parent/name (where one exists):
  // removes a non-directory, and with replace_all an empty directory.
  Result<void> make_way(int parent, const std::string& name, const std::string& rel);
  // Owner per o_.owner; returns whether the object got the entry's ids.
  Result<bool> set_owner(int fd, int parent, const std::string& name, const Entry& e);
  Result<void> set_meta(int fd, const Entry& e);
  Result<void> complete_file();
  Result<void> write_at(uint64_t offset, const char* d, size_t n);
  // Opens the file of a kFile entry parent/name (a temporary with atomic_files).
  Result<UniqueFd> open_file(int parent, const std::string& name, const std::string& rel);
  // Puts the complete temporary file in place at file_parent_/file_name_.
  Result<void> publish(int fd);
  void drop_temp();
  void forget_cached(const std::string& rel);
  std::string shown(const std::string& rel) const;

  WriterOptions o_;
  std::string cached_rel_;  // the parent directory cached_fd_ was resolved for
  UniqueFd cached_fd_;
  UniqueFd file_;           // the file receiving data
  Entry file_meta_;
  // Where file_ goes: its parent (o_.root or cached_fd_, which no entry
  // changes before the file is complete), its name, and its temporary name
  // ("" for an O_TMPFILE, or without atomic_files).
  int file_parent_ = -1;
  std::string file_name_, temp_name_;
  bool tmpfile_works_ = true;  // cleared when the filesystem has no O_TMPFILE
  uint64_t owed_ = 0;       // data(): bytes still to come
  uint64_t end_ = 0;        // end of the furthest block written
  ExtentCursor extents_;    // data() of a sparse file: where its bytes go
  std::map<std::string, Entry> dirs_;  // deferred metadata; reverse order is deepest first
};

}  // namespace cubby::copy
