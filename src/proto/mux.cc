#include "proto/mux.h"

namespace cubby::proto::mux {

Result<std::optional<RawFrame>> RawSplitter::next() {
  if (buf_.size() - pos_ < kHeaderSize) return std::optional<RawFrame>{};
  auto b = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
  uint32_t len = (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  uint32_t chan = (uint32_t{b[4]} << 24) | (uint32_t{b[5]} << 16) | (uint32_t{b[6]} << 8) | b[7];
  if (len > kMaxPayload) return fail(Error::protocol("frame of " + std::to_string(len) + " bytes exceeds limit"));
  if (buf_.size() - pos_ < kHeaderSize + len) return std::optional<RawFrame>{};
  RawFrame f{chan, buf_.substr(pos_, kHeaderSize + len)};
  pos_ += kHeaderSize + len;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 65536) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return std::optional<RawFrame>{std::move(f)};
}

void set_channel(std::string& frame, uint32_t c) {
  frame[4] = static_cast<char>(c >> 24);
  frame[5] = static_cast<char>(c >> 16);
  frame[6] = static_cast<char>(c >> 8);
  frame[7] = static_cast<char>(c);
}

std::optional<Json> decode(const std::string& frame) {
  if (frame.size() < kHeaderSize) return std::nullopt;
  FrameDecoder d;
  d.feed(frame.data(), frame.size());
  auto f = d.next();
  if (!f || !*f) return std::nullopt;
  return std::move((*f)->msg);
}

}  // namespace cubby::proto::mux
