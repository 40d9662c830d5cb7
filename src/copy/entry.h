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
// On the wire (an agent session, see proto/messages.h) an entry is one
// cp_entry frame, a file's bytes are cp_data frames of at most kDataChunk
// bytes, and cp_end closes the stream. Frames are written blocking: on the
// vm backend the mux's per-channel window (proto/mux.h) then stalls the
// writer instead of buffering, so a copy of any size needs bounded memory.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
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

struct Entry {
  std::string path;    // relative, "/"-separated; "" is the copied root
  Kind kind = Kind::kFile;
  uint32_t mode = 0;   // permission bits (07777)
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  int64_t atime_sec = 0;  // not on the wire: cp leaves atime alone
  uint32_t atime_nsec = kTimeOmit;
  uint64_t size = 0;   // kFile: bytes that follow (sparse: the file's size)
  std::string target;  // kSymlink: link text; kHardlink: entry path it links to
  // Set after the owner (chown clears security.capability). Not on the wire.
  std::vector<std::pair<std::string, std::string>> xattrs;
};

// Receives a stream. For a kFile entry, exactly `size` bytes follow through
// data() before the next entry() or finish().
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
