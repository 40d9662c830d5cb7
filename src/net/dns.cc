#include "net/dns.h"

#include <algorithm>

namespace cubby::net::dns {
namespace {

constexpr size_t kMaxNameWire = 255;  // RFC 1035 3.1
constexpr size_t kMaxLabels = 127;
constexpr size_t kMaxAddresses = 64;   // bounds the nft work one reply can cause
constexpr size_t kMaxChain = 16;       // CNAME hops followed from the name asked

uint16_t u16(std::span<const uint8_t> m, size_t at) { return static_cast<uint16_t>(m[at] << 8 | m[at + 1]); }
uint32_t u32(std::span<const uint8_t> m, size_t at) {
  return static_cast<uint32_t>(m[at]) << 24 | static_cast<uint32_t>(m[at + 1]) << 16 |
         static_cast<uint32_t>(m[at + 2]) << 8 | m[at + 3];
}

bool plain_byte(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'; }

// Reads the (possibly compressed) name at `at`. On success `out` is the
// dotted lowercase form (a byte outside [a-z0-9-_] becomes "\ddd", so a
// label holding a '.' never reads as two labels) and `end` the offset just
// past the name where it started (past its first pointer, if any).
// Loops are impossible: every pointer must point before the start of the
// stretch of labels it ends, so the targets strictly decrease.
bool read_name(std::span<const uint8_t> m, size_t at, std::string& out, size_t& end) {
  out.clear();
  size_t pos = at, floor = at, wire = 0, labels = 0;
  bool jumped = false;
  for (;;) {
    if (pos >= m.size()) return false;
    uint8_t len = m[pos];
    if ((len & 0xC0) == 0xC0) {
      if (pos + 1 >= m.size()) return false;
      size_t target = static_cast<size_t>(len & 0x3F) << 8 | m[pos + 1];
      if (target >= floor) return false;
      if (!jumped) end = pos + 2;
      jumped = true;
      pos = floor = target;
      continue;
    }
    if (len & 0xC0) return false;  // 0x40, 0x80: extended and reserved label types
    wire += 1 + len;
    if (wire > kMaxNameWire) return false;
    if (len == 0) {
      if (!jumped) end = pos + 1;
      return true;
    }
    if (++labels > kMaxLabels || pos + 1 + len > m.size()) return false;
    if (!out.empty()) out += '.';
    for (size_t i = pos + 1; i <= pos + len; ++i) {
      uint8_t c = m[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<uint8_t>(c - 'A' + 'a');
      if (plain_byte(c)) {
        out += static_cast<char>(c);
      } else {
        char esc[5] = {'\\', static_cast<char>('0' + c / 100), static_cast<char>('0' + c / 10 % 10),
                       static_cast<char>('0' + c % 10), 0};
        out += esc;
      }
    }
    pos += 1 + len;
  }
}

struct Header {
  uint16_t id, flags, qd, an, ns, ar;
};
std::optional<Header> read_header(std::span<const uint8_t> m) {
  if (m.size() < kHeaderSize) return std::nullopt;
  return Header{u16(m, 0), u16(m, 2), u16(m, 4), u16(m, 6), u16(m, 8), u16(m, 10)};
}
bool is_reply(uint16_t flags) { return flags & 0x8000; }
int opcode(uint16_t flags) { return flags >> 11 & 0xF; }

// Reads a question at `at` into q; `end` is past it.
bool read_question(std::span<const uint8_t> m, size_t at, Question& q, size_t& end) {
  if (!read_name(m, at, q.name, end) || end + 4 > m.size()) return false;
  q.type = u16(m, end);
  q.klass = u16(m, end + 2);
  end += 4;
  return true;
}

}  // namespace

std::optional<Query> parse_query(std::span<const uint8_t> m) {
  auto h = read_header(m);
  if (!h || is_reply(h->flags) || opcode(h->flags) != 0 || h->qd != 1 || h->an != 0 || h->ns != 0) return std::nullopt;
  Query q;
  q.id = h->id;
  if (!read_question(m, kHeaderSize, q.question, q.question_end)) return std::nullopt;
  // A name the policy judges must be what the upstream will look up: no
  // escaped bytes (a '.' inside a label, a NUL), no empty root query.
  if (q.question.name.empty() || q.question.name.find('\\') != std::string::npos) return std::nullopt;
  return q;
}

std::optional<Response> parse_response(std::span<const uint8_t> m, const Question& asked, ParseError* err) {
  auto bad = [&](const char* why) -> std::optional<Response> {
    if (err) err->why = why;
    return std::nullopt;
  };
  auto h = read_header(m);
  if (!h) return bad("shorter than a DNS header");
  if (!is_reply(h->flags) || opcode(h->flags) != 0) return bad("not a reply to a standard query");
  if (h->qd != 1) return bad("not exactly one question");
  Response r;
  r.id = h->id;
  r.rcode = static_cast<uint8_t>(h->flags & 0xF);
  r.truncated = h->flags & 0x0200;
  Question q;
  size_t at = 0;
  if (!read_question(m, kHeaderSize, q, at)) return bad("malformed question");
  if (q.name != asked.name || q.type != asked.type || q.klass != asked.klass) return bad("answers another question");
  struct Record {
    std::string owner, target;  // target: a CNAME's
    uint16_t type;
    uint32_t ttl, ip;
  };
  std::vector<Record> answers;
  size_t records = static_cast<size_t>(h->an) + h->ns + h->ar;
  for (size_t i = 0; i < records; ++i) {
    Record rec{};
    if (!read_name(m, at, rec.owner, at) || at + 10 > m.size()) return bad("malformed record");
    rec.type = u16(m, at);
    uint16_t klass = u16(m, at + 2);
    size_t ttl_at = at + 4;
    rec.ttl = u32(m, ttl_at);
    size_t rdlen = u16(m, at + 8), rdata = at + 10;
    if (rdata + rdlen > m.size()) return bad("record data past the end");
    at = rdata + rdlen;
    if (rec.type != kTypeOpt) r.ttl_offsets.push_back(ttl_at);
    if (i >= h->an || klass != kClassIn) continue;  // only the answer section says what the name is
    if (rec.type == kTypeA) {
      if (rdlen != 4) return bad("an A record that is not 4 bytes");
      rec.ip = u32(m, rdata);
      answers.push_back(std::move(rec));
    } else if (rec.type == kTypeCname) {
      size_t end = 0;
      if (!read_name(m, rdata, rec.target, end) || end != rdata + rdlen) return bad("malformed CNAME");
      answers.push_back(std::move(rec));
    }
  }
  // The chain from the name asked: each CNAME whose owner is on it adds its target.
  std::vector<std::string> chain = {asked.name};
  for (size_t hop = 0; hop < kMaxChain; ++hop) {
    bool grew = false;
    for (const auto& a : answers) {
      if (a.type != kTypeCname || std::find(chain.begin(), chain.end(), a.owner) == chain.end()) continue;
      if (std::find(chain.begin(), chain.end(), a.target) != chain.end()) continue;
      chain.push_back(a.target);
      grew = true;
    }
    if (!grew) break;
  }
  for (const auto& a : answers) {
    if (a.type != kTypeA || std::find(chain.begin(), chain.end(), a.owner) == chain.end()) continue;
    if (r.addresses.size() == kMaxAddresses) break;
    r.addresses.push_back({a.ip, a.ttl});
  }
  return r;
}

bool cap_ttls(std::span<uint8_t> m, const Question& asked, const Response& r, uint32_t max_ttl) {
  bool changed = false;
  for (size_t at : r.ttl_offsets) {
    if (at + 4 > m.size()) return false;
    if (u32(m, at) <= max_ttl) continue;
    m[at] = static_cast<uint8_t>(max_ttl >> 24);
    m[at + 1] = static_cast<uint8_t>(max_ttl >> 16);
    m[at + 2] = static_cast<uint8_t>(max_ttl >> 8);
    m[at + 3] = static_cast<uint8_t>(max_ttl);
    changed = true;
  }
  if (!changed) return true;
  auto again = parse_response(m, asked);
  if (!again || again->rcode != r.rcode || again->addresses.size() != r.addresses.size()) return false;
  for (size_t i = 0; i < r.addresses.size(); ++i)
    if (again->addresses[i].ip != r.addresses[i].ip || again->addresses[i].ttl != std::min(r.addresses[i].ttl, max_ttl))
      return false;
  return true;
}

void set_id(std::span<uint8_t> m, uint16_t id) {
  if (m.size() < 2) return;
  m[0] = static_cast<uint8_t>(id >> 8);
  m[1] = static_cast<uint8_t>(id);
}

std::vector<uint8_t> reply_with_rcode(std::span<const uint8_t> m, const Query& q, uint8_t rcode) {
  std::vector<uint8_t> out(m.begin(), m.begin() + static_cast<std::ptrdiff_t>(q.question_end));
  uint16_t rd = u16(m, 2) & 0x0100;
  uint16_t flags = static_cast<uint16_t>(0x8000 | rd | 0x0080 | (rcode & 0xF));  // QR, RD as asked, RA
  out[2] = static_cast<uint8_t>(flags >> 8);
  out[3] = static_cast<uint8_t>(flags);
  for (size_t i = 4; i < kHeaderSize; ++i) out[i] = 0;
  out[5] = 1;  // QDCOUNT 1
  return out;
}

std::vector<uint8_t> make_query(const Question& q, uint16_t id) {
  std::vector<uint8_t> out = {static_cast<uint8_t>(id >> 8), static_cast<uint8_t>(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
  size_t start = 0;
  while (start <= q.name.size()) {
    size_t dot = q.name.find('.', start);
    if (dot == std::string::npos) dot = q.name.size();
    size_t len = dot - start;
    if (len == 0 || len > 63) return {};
    out.push_back(static_cast<uint8_t>(len));
    out.insert(out.end(), q.name.begin() + static_cast<std::ptrdiff_t>(start), q.name.begin() + static_cast<std::ptrdiff_t>(dot));
    start = dot + 1;
  }
  if (out.size() - kHeaderSize + 1 > kMaxNameWire) return {};
  out.push_back(0);
  for (uint16_t v : {q.type, q.klass}) {
    out.push_back(static_cast<uint8_t>(v >> 8));
    out.push_back(static_cast<uint8_t>(v));
  }
  return out;
}

bool name_matches(const std::string& pattern, const std::string& name) {
  if (pattern.rfind("*.", 0) != 0) return pattern == name;
  std::string_view suffix(pattern.data() + 1, pattern.size() - 1);  // ".example.com"
  return name.size() > suffix.size() && std::string_view(name).ends_with(suffix);
}

}  // namespace cubby::net::dns
