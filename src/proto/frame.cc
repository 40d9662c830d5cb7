#include "proto/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include "base/sys.h"

namespace cubby::proto {

namespace {
void put_u32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}
uint32_t get_u32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}
}  // namespace

void encode_into(std::string& out, const Json& msg, uint32_t channel) {
  size_t at = out.size();
  out.append(kHeaderSize, '\0');
  Json::to_msgpack(msg, nlohmann::detail::output_adapter<char>(out));
  size_t len = out.size() - at - kHeaderSize;
  std::string hdr;
  put_u32(hdr, static_cast<uint32_t>(len));
  put_u32(hdr, channel);
  out.replace(at, kHeaderSize, hdr);
}

std::string encode(const Json& msg, uint32_t channel) {
  std::string out;
  encode_into(out, msg, channel);
  return out;
}

Result<std::optional<Frame>> FrameDecoder::next() {
  if (buf_.size() - pos_ < kHeaderSize) return std::optional<Frame>{};
  uint32_t len = get_u32(buf_.data() + pos_);
  uint32_t chan = get_u32(buf_.data() + pos_ + 4);
  if (len > kMaxPayload)
    return fail(Error::protocol("frame of " + std::to_string(len) + " bytes exceeds limit"));
  if (buf_.size() - pos_ < kHeaderSize + len) return std::optional<Frame>{};
  const char* p = buf_.data() + pos_ + kHeaderSize;
  Json msg = Json::from_msgpack(p, p + len, /*strict=*/true, /*allow_exceptions=*/false);
  pos_ += kHeaderSize + len;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 65536) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  if (msg.is_discarded() || !msg.is_object() || !msg.contains("t") || !msg["t"].is_string())
    return fail(Error::protocol("malformed frame payload"));
  return std::optional<Frame>{Frame{chan, std::move(msg)}};
}

Result<void> Conn::send(const Json& msg, uint32_t channel) { return send_encoded(encode(msg, channel)); }

Result<void> Conn::send_encoded(std::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::send(fd_.get(), p, left, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("send");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return {};
}

Result<Frame> Conn::recv() {
  for (;;) {
    auto f = CUBBY_TRY(dec_.next());
    if (f) return std::move(*f);
    char buf[65536];
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_fail("read");
    }
    if (n == 0) return fail(Error::protocol("connection closed"));
    dec_.feed(buf, static_cast<size_t>(n));
  }
}

}  // namespace cubby::proto
