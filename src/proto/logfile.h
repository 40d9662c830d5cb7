// The box log: what the workload wrote to stdout and stderr, kept apart,
// and for a vm box its console (the guest kernel's and init's messages, and
// QEMU's own), which `cubby logs` shows on stderr.
// A sequence of records: [u8 stream (1 stdout, 2 stderr, 3 console)][u8 flags]
// [2 bytes zero][u32 big-endian length], then with flags & kStamped a u64
// big-endian time (ns since the epoch, CLOCK_REALTIME), then the bytes.
// Binary-safe, append-only, and readable while being written (a reader stops
// at an incomplete record).
//
// Writers into the shim's pipes (the agent, the guest) send unstamped
// records; the shim stamps each as it takes it (shim/box_log.h), so every
// record in box.log carries the time its bytes reached the shim, and a
// box.log from before stamps (flags 0) still reads. A record is one read of
// the workload's output, so every line in it arrived at its time: `logs -t`
// and `--since` give a line the time of the record it begins in, as
// Docker's json-file does for the line it stores.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cubby::logfile {

inline constexpr size_t kRecordHeader = 8;
inline constexpr size_t kStampedHeader = kRecordHeader + 8;
inline constexpr uint8_t kStamped = 1;
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

// An unstamped record (what the agent and the guest write into the shim's
// pipes); with a time (ns since the epoch) a stamped one (box.log).
inline void append_record(std::string& out, int stream, std::string_view data, std::optional<int64_t> time_ns = {}) {
  char h[kStampedHeader] = {static_cast<char>(stream), static_cast<char>(time_ns ? kStamped : 0), 0, 0,
                            static_cast<char>(data.size() >> 24), static_cast<char>(data.size() >> 16),
                            static_cast<char>(data.size() >> 8), static_cast<char>(data.size())};
  if (time_ns)
    for (int i = 0; i < 8; ++i) h[kRecordHeader + i] = static_cast<char>(static_cast<uint64_t>(*time_ns) >> (56 - 8 * i));
  out.append(h, time_ns ? kStampedHeader : kRecordHeader);
  out.append(data);
}

// Parses complete records from buf[pos..]; calls f(stream, time_ns, bytes)
// for each (time_ns 0 for an unstamped record) and advances pos past them.
// Returns false on a corrupt header.
template <typename F>
bool parse_stamped_records(std::string_view buf, size_t& pos, F&& f) {
  while (buf.size() - pos >= kRecordHeader) {
    auto b = reinterpret_cast<const unsigned char*>(buf.data() + pos);
    if (b[0] != kStdout && b[0] != kStderr && b[0] != kConsole) return false;
    if ((b[1] & ~kStamped) != 0 || b[2] != 0 || b[3] != 0) return false;
    const size_t header = (b[1] & kStamped) ? kStampedHeader : kRecordHeader;
    uint32_t len = (uint32_t{b[4]} << 24) | (uint32_t{b[5]} << 16) | (uint32_t{b[6]} << 8) | b[7];
    if (buf.size() - pos < header || buf.size() - pos - header < len) break;
    uint64_t t = 0;
    for (size_t i = kRecordHeader; i < header; ++i) t = (t << 8) | b[i];
    f(static_cast<int>(b[0]), static_cast<int64_t>(t), buf.substr(pos + header, len));
    pos += header + len;
  }
  return true;
}

// The same without the times.
template <typename F>
bool parse_records(std::string_view buf, size_t& pos, F&& f) {
  return parse_stamped_records(buf, pos, [&](int stream, int64_t, std::string_view d) { f(stream, d); });
}

}  // namespace cubby::logfile
