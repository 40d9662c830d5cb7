// Multiplexing many sessions over one byte stream (the vm backend's single
// virtio-serial port). Every frame keeps its own header ([u32 len][u32
// channel], see frame.h); the multiplexers only rewrite the channel field,
// they never decode payloads, except to recognise the two frames of the
// mux layer itself:
//   - channel kControlChannel carries shim<->guest-init messages (config,
//     go, signal, log, exit), never a session;
//   - {"t":"close"} on a session channel ends that session (either way);
//   - {"t":"mux_ack","n":N} on a session channel returns N bytes of credit.
// A session channel is opened implicitly by its first frame.
//
// Flow control is per channel, so one session whose client stops reading
// stalls only itself: each side may have at most kWindow bytes of a
// channel's session frames in flight, and the receiver acks bytes once it
// has handed them to the session's socket. A stalled session's memory is
// thus bounded by the window on both halves of the multiplexer, and the
// backpressure reaches the agent, which stops reading that process's output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "proto/frame.h"
#include "proto/messages.h"

namespace cubby::proto::mux {

inline constexpr uint32_t kControlChannel = 0;
inline constexpr const char* kClose = msg::kMuxClose;
inline constexpr const char* kAck = msg::kMuxAck;
inline constexpr uint64_t kWindow = 1u << 20;
inline constexpr uint64_t kAckEvery = kWindow / 4;
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
// The mux layer's own frames are tiny: session traffic is never decoded.
// Either side's session frames may come from an untrusted peer (a client of
// agent.sock, the guest), so a malformed one is no mux frame, never a throw.
inline bool is_close(const std::string& frame) {
  if (frame.size() > kHeaderSize + 32) return false;
  auto m = decode(frame);
  return m && msg::decode<msg::MuxClose>(*m).has_value();
}
// The credit an ack frame returns; 0 for any other frame.
inline uint64_t ack_bytes(const std::string& frame) {
  if (frame.size() > kHeaderSize + 32) return 0;
  auto m = decode(frame);
  if (!m || msg::type_of(*m) != kAck) return 0;
  auto a = msg::decode<msg::MuxAck>(*m);
  return a ? a->bytes : 0;
}
// Whether the receiving half of the mux would act on this session frame (a
// close or an ack with credit) rather than pass it on: what a client of
// agent.sock sends must never be one, or it could end its channel under the
// guest's feet or lift its own flow-control window (see HostMux).
inline bool acts_on_mux(const std::string& frame) { return is_close(frame) || ack_bytes(frame) > 0; }
inline std::string ack_frame(uint32_t channel, uint64_t n) { return encode({{"t", kAck}, {"n", n}}, channel); }

// Bytes a side has delivered to a session's socket and not yet acked;
// returns the ack to send (or "") after adding `delivered`.
class AckCounter {
 public:
  std::string add(uint32_t channel, uint64_t delivered) {
    pending_ += delivered;
    if (pending_ < kAckEvery) return {};
    uint64_t n = pending_;
    pending_ = 0;
    return ack_frame(channel, n);
  }

 private:
  uint64_t pending_ = 0;
};

}  // namespace cubby::proto::mux
