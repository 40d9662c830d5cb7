// cubby's host<->agent wire format.
//
// Every message is one frame:  [u32 big-endian payload length]
//                              [u32 big-endian channel id]
//                              [payload: one MessagePack map]
// The map always has "t" (the message type, see messages.h). Stdio bytes
// travel inside typed frames ("out"/"in" with a binary "d" field), so
// terminal bytes and control messages can never be confused: a client
// writes to a terminal only the "d" of an output frame, never raw stream
// bytes. The channel id lets many sessions share one transport (the vm
// backend's single virtio-serial port); on a Unix socket it is always 0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::proto {

using Json = nlohmann::json;

inline constexpr size_t kHeaderSize = 8;
// Frames above this are refused: a peer cannot make us allocate unbounded
// memory. Output is chunked well below it.
inline constexpr uint32_t kMaxPayload = 1u << 20;
// A payload's MessagePack structure is checked before it is decoded:
// nlohmann's reader recurses once per nesting level, so without a bound a
// 100 000-deep payload overflows the stack of whoever reads it (the agent is
// PID 1). Every message of ours is a map of scalars, strings, binaries and
// flat arrays: depth 2, a few dozen values; the limits leave room to grow
// and still bound the memory a 1 MiB payload can expand to.
inline constexpr size_t kMaxDepth = 32;
inline constexpr size_t kMaxValues = 65536;  // in one payload, containers included
inline constexpr size_t kMaxTypeLength = 64;  // of the "t" string

struct Frame {
  uint32_t channel = 0;
  Json msg;
};

// Checks and decodes one payload: MessagePack within the limits above, a map
// whose "t" is a short non-empty string; anything else is kProtocol. Never
// throws.
// Typed decoding of the map is messages.h's decode().
Result<Json> parse_payload(const char* p, size_t n);

// Serialises one frame (header + MessagePack payload).
std::string encode(const Json& msg, uint32_t channel = 0);
void encode_into(std::string& out, const Json& msg, uint32_t channel = 0);

// Incremental decoder for non-blocking readers: feed() bytes as they arrive,
// then call next() until it returns nullopt.
class FrameDecoder {
 public:
  void feed(const char* data, size_t len) { buf_.append(data, len); }
  Result<std::optional<Frame>> next();
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  std::string buf_;
  size_t pos_ = 0;
};

// A blocking framed connection (clients and the shim use it).
class Conn {
 public:
  Conn() = default;
  explicit Conn(UniqueFd fd) : fd_(std::move(fd)) {}
  // Takes over a session whose first bytes were already read into `dec`
  // (the agent's copy worker continues a session its event loop began).
  Conn(UniqueFd fd, FrameDecoder dec) : fd_(std::move(fd)), dec_(std::move(dec)) {}
  int fd() const { return fd_.get(); }
  bool valid() const { return fd_.valid(); }
  Result<void> send(const Json& msg, uint32_t channel = 0);
  // Sends frames already encoded with encode_into() (several in one write).
  Result<void> send_encoded(std::string_view bytes);
  // Blocks for the next frame. EOF is an Error of kind kProtocol with
  // message "connection closed".
  Result<Frame> recv();
  // The next frame if one is already buffered (no syscall); use after
  // recv() when poll() will not report the bytes already read.
  Result<std::optional<Frame>> try_next() { return dec_.next(); }
  void close() { fd_.reset(); }

 private:
  UniqueFd fd_;
  FrameDecoder dec_;
};

}  // namespace cubby::proto
