// Multiplexing many sessions over one byte stream (the vm backend's single
// virtio-serial port). Every frame keeps its own header ([u32 len][u32
// channel], see frame.h); the multiplexers only rewrite the channel field,
// they never decode payloads, except to recognise the two frames of the
// mux layer itself:
//   - channel kControlChannel carries shim<->guest-init messages (config,
//     go, signal, log, exit), never a session;
//   - {"t":"close"} on a session channel ends that session (either way).
// A session channel is opened implicitly by its first frame.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proto/frame.h"

namespace cubby::proto::mux {

inline constexpr uint32_t kControlChannel = 0;
inline constexpr const char* kClose = "close";
// The name of the virtio-serial port carrying the stream.
inline constexpr const char* kPortName = "cubby";

// One raw frame: header + payload bytes, undecoded.
struct RawFrame {
  uint32_t channel = 0;
  std::string bytes;  // the whole frame, header included
};

// Splits a byte stream into raw frames.
class RawSplitter {
 public:
  void feed(const char* d, size_t n) { buf_.append(d, n); }
  // nullopt: need more bytes. Error: oversized frame.
  Result<std::optional<RawFrame>> next();

 private:
  std::string buf_;
  size_t pos_ = 0;
};

// Rewrites the channel field of a raw frame in place.
void set_channel(std::string& frame, uint32_t channel);
// Decodes a raw frame's payload (for the few frames the mux layer reads).
std::optional<Json> decode(const std::string& frame);
inline bool is_close(const std::string& frame) {
  // A close frame is tiny: don't decode session traffic.
  if (frame.size() > kHeaderSize + 16) return false;
  auto m = decode(frame);
  return m && m->value("t", "") == kClose;
}

}  // namespace cubby::proto::mux
