#include "proto/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include "base/sys.h"
#include "proto/messages.h"

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

// Walks a MessagePack value without decoding it, iteratively (no recursion,
// so no input can exhaust the stack here either), and checks that it is one
// complete value, nested at most kMaxDepth deep, holding at most kMaxValues
// values. `left[d]` counts the values still owed to the container open at
// depth d (left[0]: the top-level value itself).
Result<void> check_structure(const unsigned char* p, size_t n) {
  auto bad = [](const char* why) { return fail(Error::protocol(std::string("malformed payload: ") + why)); };
  uint64_t left[kMaxDepth + 1];
  size_t depth = 0, values = 0, at = 0;
  left[0] = 1;
  auto be = [&](size_t width) {  // a big-endian length after the type byte
    uint64_t v = 0;
    for (size_t i = 0; i < width; ++i) v = (v << 8) | p[at + i];
    return v;
  };
  for (;;) {
    while (left[depth] == 0) {
      if (depth == 0) {
        if (at != n) return bad("trailing bytes");
        return {};
      }
      --depth;
    }
    --left[depth];
    if (at >= n) return bad("truncated");
    if (++values > kMaxValues) return bad("too many values");
    unsigned char b = p[at++];
    uint64_t skip = 0;       // bytes of this value after its type byte
    uint64_t width = 0;      // of a length field that follows the type byte
    uint64_t children = 0;   // values a container holds
    bool container = false;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      skip = 0;  // fixints, nil, false, true
    } else if (b <= 0x8f) {
      container = true, children = 2 * uint64_t{b & 0x0fu};
    } else if (b <= 0x9f) {
      container = true, children = b & 0x0fu;
    } else if (b <= 0xbf) {
      skip = b & 0x1fu;  // fixstr
    } else {
      switch (b) {
        case 0xc4: case 0xd9: width = 1; break;            // bin8, str8
        case 0xc5: case 0xda: width = 2; break;            // bin16, str16
        case 0xc6: case 0xdb: width = 4; break;            // bin32, str32
        case 0xc7: width = 1, skip = 1; break;             // ext8: length, then a type byte
        case 0xc8: width = 2, skip = 1; break;
        case 0xc9: width = 4, skip = 1; break;
        case 0xca: skip = 4; break;                        // float32
        case 0xcb: skip = 8; break;                        // float64
        case 0xcc: case 0xd0: skip = 1; break;             // (u)int8
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;                        // fixext 1..16: type + data
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: container = true, width = 2; break;     // array16
        case 0xdd: container = true, width = 4; break;     // array32
        case 0xde: container = true, width = 2; break;     // map16
        case 0xdf: container = true, width = 4; break;     // map32
        default: return bad("unknown type byte");          // 0xc1
      }
    }
    if (width > n - at) return bad("truncated");
    uint64_t len = be(width);
    at += width;
    if (container) {
      if (width) children = (b == 0xde || b == 0xdf) ? 2 * len : len;
      // Every value takes at least a byte: a count beyond what is left is a lie.
      if (children > n - at) return bad("truncated");
      if (depth == kMaxDepth) return bad("nested too deeply");
      if (children == 0) continue;
      left[++depth] = children;
      continue;
    }
    skip += len;
    if (skip > n - at) return bad("truncated");
    at += skip;
  }
}
}  // namespace

Result<Json> parse_payload(const char* p, size_t n) {
  CUBBY_TRYV(check_structure(reinterpret_cast<const unsigned char*>(p), n));
  Json msg = Json::from_msgpack(p, p + n, /*strict=*/true, /*allow_exceptions=*/false);
  if (msg.is_discarded() || !msg.is_object()) return fail(Error::protocol("malformed payload: not a map"));
  auto t = msg.find("t");
  if (t == msg.end() || !t->is_string() || t->get_ref<const std::string&>().empty())
    return fail(Error::protocol("malformed payload: no message type"));
  if (t->get_ref<const std::string&>().size() > kMaxTypeLength)
    return fail(Error::protocol("malformed payload: message type too long"));
  return msg;
}

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
  auto msg = parse_payload(buf_.data() + pos_ + kHeaderSize, len);
  pos_ += kHeaderSize + len;
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 65536) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  if (!msg) return std::unexpected(std::move(msg.error()));
  return std::optional<Frame>{Frame{chan, std::move(*msg)}};
}

Result<void> Conn::send(const Json& msg, uint32_t channel) {
  std::string f = encode(msg, channel);
  // The peer would drop the frame and hang up ("send: Broken pipe" here):
  // say what is wrong instead. Callers check user input against the
  // documented limits before this; this is the last line.
  if (f.size() - kHeaderSize > kMaxPayload)
    return fail(Error::invalid("a " + std::string(msg::type_of(msg)) + " message of " +
                               std::to_string((f.size() - kHeaderSize) >> 10) + " KiB is over the protocol's " +
                               std::to_string(kMaxPayload >> 10) + " KiB frame limit"));
  return send_encoded(f);
}

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
