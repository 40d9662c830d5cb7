// libFuzzer target for the DNS decoders the box's DNS proxy runs on what
// the box and the upstream servers send (net/dns.h): a query as the box's,
// a reply as an upstream's (to the question the input itself carries, so
// the records are reached, and to a fixed one), and the writers the proxy
// uses on what it read. A finding is a crash, a sanitizer report, or a
// broken invariant (abort()):
//  - a refusal built from an accepted query parses as a reply to it;
//  - capping the TTLs of an accepted reply, where cap_ttls says it worked,
//    leaves it accepted, with the same addresses, none of its TTLs above the
//    cap (a reply whose names point into its TTLs must make cap_ttls fail).
// Built and run by tests/fuzz/run.sh (target dns); seeds in tests/fuzz/corpus/dns.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "net/dns.h"

namespace {

using namespace cubby::net::dns;

void as_reply(std::span<const uint8_t> msg, const Question& asked) {
  auto r = parse_response(msg, asked);
  if (!r) return;
  std::vector<uint8_t> copy(msg.begin(), msg.end());
  if (!cap_ttls(copy, asked, *r, 60)) return;  // it read differently once capped: refused, as it should be
  auto again = parse_response(copy, asked);
  if (!again || again->addresses.size() != r->addresses.size()) abort();
  for (const auto& a : again->addresses)
    if (a.ttl > 60) abort();
  (void)name_matches("*.example.com", asked.name);
  (void)name_matches(asked.name, "example.com");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> msg(data, size);
  if (auto q = parse_query(msg)) {
    auto refused = reply_with_rcode(msg, *q, kRcodeRefused);
    auto r = parse_response(refused, q->question);
    if (!r || r->rcode != kRcodeRefused || r->id != q->id || !r->addresses.empty()) abort();
    auto again = make_query(q->question, q->id);
    if (!again.empty() && !parse_query(again)) abort();
  }
  // The input's own question, read as a query's (QR off, no answer or
  // authority counts), is what the reply is checked against.
  if (size >= kHeaderSize) {
    std::vector<uint8_t> as_query(data, data + size);
    as_query[2] &= 0x7F;
    for (size_t i = 6; i < 10; ++i) as_query[i] = 0;
    if (auto q = parse_query(as_query)) as_reply(msg, q->question);
  }
  as_reply(msg, Question{"allowed.test", kTypeA, kClassIn});
  return 0;
}
