// The DNS wire format as the box's DNS proxy (shim/network_dns.h) needs it:
// a box's query (one question) is read, judged by name, and either refused
// or forwarded; the upstream's answer is checked against the question asked,
// its A records (the addresses the box may then reach) are collected along
// the CNAME chain from the name asked, and its TTLs are capped in place.
//
// Every byte comes from the box or from an upstream server, so both are
// hostile: every length is checked against the message, a compressed name
// may only point backwards (to an earlier byte than the pointer itself:
// loops are impossible by construction), names are at most 255 bytes of
// wire form and 127 labels, and anything malformed is a clean "no" (nullopt
// or an error text), never a read past the end. The decoders are in the
// fuzz target (tests/fuzz/dns_fuzz.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace cubby::net::dns {

inline constexpr size_t kHeaderSize = 12;
inline constexpr uint16_t kTypeA = 1, kTypeCname = 5, kTypeOpt = 41, kClassIn = 1;
inline constexpr uint8_t kRcodeServfail = 2, kRcodeRefused = 5;

struct Question {
  std::string name;  // lowercase, dotted, without the root's trailing dot ("" is the root)
  uint16_t type = 0, klass = 0;
};

// A query the box sent: a standard query (QR 0, opcode 0) with exactly one
// question and no answer or authority records (an EDNS OPT record in the
// additional section is fine).
struct Query {
  uint16_t id = 0;
  Question question;
  size_t question_end = 0;  // offset just past the question: the reply echoes bytes [12, question_end)
};
std::optional<Query> parse_query(std::span<const uint8_t> msg);

// An upstream's reply to `asked`.
struct Response {
  uint16_t id = 0;
  uint8_t rcode = 0;
  bool truncated = false;
  // The A records on the CNAME chain from the name asked (IPv4 in network
  // order as four bytes, host order here) with their TTLs.
  struct Address {
    uint32_t ip = 0;  // host order
    uint32_t ttl = 0;
  };
  std::vector<Address> addresses;
  // Offsets of every resource record's TTL field but the OPT record's
  // (whose "TTL" holds EDNS flags), for cap_ttls.
  std::vector<size_t> ttl_offsets;
};
// Reads a reply, checking that it is one (QR 1) and that its question is
// `asked` (name case-insensitively, type and class). The error says why not.
struct ParseError {
  std::string why;
};
std::optional<Response> parse_response(std::span<const uint8_t> msg, const Question& asked, ParseError* err = nullptr);

// Lowers every TTL of `r` (parse_response's reading of msg, a reply to
// `asked`) to at most `max_ttl`, in place. A compression pointer may point
// into a TTL field, so the capped message is read again: false (msg then
// unusable) when it no longer says what r says, addresses and all.
bool cap_ttls(std::span<uint8_t> msg, const Question& asked, const Response& r, uint32_t max_ttl);
// Writes the ID field.
void set_id(std::span<uint8_t> msg, uint16_t id);

// A reply to `query` (whose bytes are `msg`) with no records and `rcode`:
// the header (QR, RD as asked, RA) and the question echoed.
std::vector<uint8_t> reply_with_rcode(std::span<const uint8_t> msg, const Query& query, uint8_t rcode);

// A standard query for `q` with `id` and RD set (tests and the fuzz target
// build their inputs with it). Empty when q.name is not a valid name.
std::vector<uint8_t> make_query(const Question& q, uint16_t id);

// Whether `name` (as parse_query gives it) matches `pattern`: equal, or
// pattern is "*.suffix" and name ends in ".suffix" (a subdomain: *.example.com
// does not match example.com itself).
bool name_matches(const std::string& pattern, const std::string& name);

}  // namespace cubby::net::dns
