// The box log: what the workload wrote to stdout and stderr, kept apart,
// and for a vm box its console (the guest kernel's and init's messages, and
// QEMU's own), which `cubby logs` shows on stderr.
// A sequence of records: [u8 stream (1 stdout, 2 stderr, 3 console)][3 bytes zero]
// [u32 big-endian length][bytes]. Binary-safe, append-only, and readable
// while being written (a reader stops at an incomplete record).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cubby::logfile {

inline constexpr size_t kRecordHeader = 8;
inline constexpr int kStdout = 1, kStderr = 2, kConsole = 3;

// Rotation, as Docker's json-file driver does it (--log-opt max-size,
// max-file): the shim (shim/box_log.h) writes box.log until the next record
// would take it past max_size, then renames box.log.(N-2) to box.log.(N-1),
// ..., box.log to box.log.1, and starts a new box.log; box.log.(max_files-1)
// is the oldest kept. A record never spans two files (a bigger one is split).
// So a box's log takes at most max_size * max_files bytes on disk.
inline constexpr int64_t kDefaultMaxSize = 10 << 20;
inline constexpr int kDefaultMaxFiles = 2;
inline constexpr int64_t kMinMaxSize = 4096;
inline constexpr int kMaxMaxFiles = 100;
// box.log for i == 0, else box.log.i.
inline std::string file_name(int i) { return i == 0 ? std::string("box.log") : "box.log." + std::to_string(i); }

inline void append_record(std::string& out, int stream, std::string_view data) {
  char h[kRecordHeader] = {static_cast<char>(stream), 0, 0, 0,
                           static_cast<char>(data.size() >> 24), static_cast<char>(data.size() >> 16),
                           static_cast<char>(data.size() >> 8), static_cast<char>(data.size())};
  out.append(h, kRecordHeader);
  out.append(data);
}

// Parses complete records from buf[pos..]; calls f(stream, bytes) for each and
// advances pos past them. Returns false on a corrupt header.
template <typename F>
bool parse_records(std::string_view buf, size_t& pos, F&& f) {
  while (buf.size() - pos >= kRecordHeader) {
    auto b = reinterpret_cast<const unsigned char*>(buf.data() + pos);
    if (b[0] != kStdout && b[0] != kStderr && b[0] != kConsole) return false;
    uint32_t len = (uint32_t{b[4]} << 24) | (uint32_t{b[5]} << 16) | (uint32_t{b[6]} << 8) | b[7];
    if (buf.size() - pos - kRecordHeader < len) break;
    f(static_cast<int>(b[0]), buf.substr(pos + kRecordHeader, len));
    pos += kRecordHeader + len;
  }
  return true;
}

}  // namespace cubby::logfile
