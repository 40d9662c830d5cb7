// A file-tree entry (directory, file, symlink, hardlink, fifo) with its
// metadata, and for a file its bytes: `cubby cp`'s unit of transfer, and
// what the layer unpacker (image/unpack.cc) turns each tar entry into for
// the same TreeWriter (copy/tree.h).
//
// Both sides speak the same stream: a sequence of entries, each file's bytes
// right after it, then an end. Sources (a host tree walk, a tar from stdin,
// a box tree walk, an agent session) push it into an EntrySink (a tree
// writer, a tar on stdout, an agent session). Paths are relative ("" is the
// copied root itself, then "sub/file"); every writer re-checks them, since
// the stream may come from an untrusted box.
//
// A sparse file (one with holes) is an entry with its data extents: only
// their bytes follow, in order, and the writer leaves the rest as holes, so
// a 4 GiB file with a few blocks of data costs a few blocks both on the
// wire and on the disk it lands on.
//
// On the wire (an agent session, see proto/messages.h) an entry is one
// cp_entry frame, a file's bytes are cp_data frames of at most kDataChunk
// bytes, and cp_end closes the stream. Frames are written blocking: on the
// vm backend the mux's per-channel window (proto/mux.h) then stalls the
// writer instead of buffering, so a copy of any size needs bounded memory.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/error.h"
#include "proto/frame.h"

namespace cubby::copy {

// kFifo is for the layer unpacker only: cp never reads one, and from_wire
// refuses it.
enum class Kind : char { kDir = 'd', kFile = 'f', kSymlink = 'l', kHardlink = 'h', kFifo = 'p' };

// A time's nanoseconds set to this leave that time as it is (futimens).
inline constexpr uint32_t kTimeOmit = UTIME_OMIT;

// A range of a sparse file that holds data; the rest is holes.
struct Extent {
  uint64_t offset = 0, length = 0;
  bool operator==(const Extent&) const = default;
};

struct Entry {
  std::string path;    // relative, "/"-separated; "" is the copied root
  Kind kind = Kind::kFile;
  uint32_t mode = 0;   // permission bits (07777)
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  int64_t atime_sec = 0;  // not on the wire: cp leaves atime alone
  uint32_t atime_nsec = kTimeOmit;
  uint64_t size = 0;   // kFile: the file's size
  // kFile: without `sparse` its `size` bytes follow; with it, the bytes of
  // `extents` (sorted, disjoint, non-empty, within size) follow in order and
  // everything else is a hole (stream_bytes() says how many follow).
  bool sparse = false;
  std::vector<Extent> extents;
  std::string target;  // kSymlink: link text; kHardlink: entry path it links to
  // Set after the owner (chown clears security.capability). Not on the wire.
  std::vector<std::pair<std::string, std::string>> xattrs;
};

// The bytes that follow a kFile entry in a stream.
uint64_t stream_bytes(const Entry& e);

// Where a sparse file's stream bytes go: each chunk, as it arrives, is cut
// at its extents' ends and handed to put(file_offset, bytes, count).
class ExtentCursor {
 public:
  ExtentCursor() = default;
  explicit ExtentCursor(const std::vector<Extent>& x) : x_(&x) {}
  template <class Put>
  Result<void> feed(const char* d, size_t n, Put&& put) {
    while (n > 0) {
      if (!x_ || i_ == x_->size()) return fail(Error::protocol("more data than the file's extents"));
      const Extent& x = (*x_)[i_];
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, x.length - done_));
      CUBBY_TRYV(put(x.offset + done_, d, k));
      d += k;
      n -= k;
      done_ += k;
      if (done_ == x.length) {
        ++i_;
        done_ = 0;
      }
    }
    return {};
  }
  bool at_end() const { return !x_ || i_ == x_->size(); }

 private:
  const std::vector<Extent>* x_ = nullptr;
  size_t i_ = 0;         // the extent being filled
  uint64_t done_ = 0;    // and how much of it is
};

// Receives a stream. For a kFile entry, exactly stream_bytes(e) bytes follow
// through data() before the next entry() or finish().
class EntrySink {
 public:
  virtual ~EntrySink() = default;
  virtual Result<void> entry(const Entry& e) = 0;
  virtual Result<void> data(const char* d, size_t n) = 0;
  virtual Result<void> finish() = 0;
};

inline constexpr size_t kDataChunk = 128 * 1024;

// "a//b/./c/" -> "a/b/c"; "", "." and "./" -> "". Absolute paths and ".."
// components are refused (kInvalid, naming `what`).
Result<std::string> clean_path(const std::string& raw, const std::string& what);

// An entry as a cp_entry frame's map, and back (checks kinds and paths).
proto::Json to_wire(const Entry& e);
Result<Entry> from_wire(const proto::Json& m);

// Passes a stream on to `inner` after checking each entry against what the
// stream itself made before it, which a writer's openat2 flags cannot see
// (and a tar on stdout has no writer at all):
//   - nothing may lie below a non-directory the stream made (its own
//     `link -> /etc`, then `link/passwd`), and a directory may not take the
//     place of one (the tar trick: a symlink, then a directory of the same
//     name, then files "in" it, for an extractor that follows it);
//   - a hard link must point at a non-directory the stream made earlier: a
//     link to anything else would give the destination a second name for a
//     file that was there before (a host file, for a box's stream), or
//     reach it through one of the stream's symlinks.
// Entry paths are relative and clean already (from_wire, clean_path). It
// keeps one path per non-directory of the stream.
class StreamCheck : public EntrySink {
 public:
  explicit StreamCheck(EntrySink& inner) : inner_(inner) {}
  Result<void> entry(const Entry& e) override;
  Result<void> data(const char* d, size_t n) override { return inner_.data(d, n); }
  Result<void> finish() override { return inner_.finish(); }

 private:
  EntrySink& inner_;
  std::unordered_map<std::string, Kind> made_;  // the stream's non-directories, by path
};

// Writes the stream as frames on a blocking session.
class FrameSink : public EntrySink {
 public:
  explicit FrameSink(proto::Conn& conn) : conn_(conn) {}
  Result<void> entry(const Entry& e) override;
  Result<void> data(const char* d, size_t n) override;
  Result<void> finish() override;
  // A send failed: the peer hung up (its reason may be waiting to be read).
  bool peer_gone() const { return peer_gone_; }

 private:
  Result<void> send(const proto::Json& m);
  proto::Conn& conn_;
  bool peer_gone_ = false;
};

// Reads frames until cp_end and pushes them into sink. An "error" frame
// from the peer becomes that error; anything else out of place is kProtocol.
Result<void> receive_frames(proto::Conn& conn, EntrySink& sink);

}  // namespace cubby::copy
