// The box's DNS path, the parts without a box: the wire decoders (net/dns.h)
// on real and hostile messages, and how domain rules parse, judge names and
// become nftables sets (net/egress.h). The proxy itself is tested end to end
// in tests/integration/network_test.cc (UserNetwork.DomainRules*).
#include <gtest/gtest.h>

#include "net/dns.h"
#include "net/egress.h"

namespace cubby::net {
namespace {

using dns::Question;

std::vector<uint8_t> bytes(std::initializer_list<int> v) { return std::vector<uint8_t>(v.begin(), v.end()); }

// A reply to `q` (built from its query) with `records` appended as answers.
std::vector<uint8_t> reply_to(const Question& q, uint16_t id, int answers, const std::vector<uint8_t>& records) {
  auto m = dns::make_query(q, id);
  m[2] = 0x81;
  m[3] = 0x80;
  m[7] = static_cast<uint8_t>(answers);
  m.insert(m.end(), records.begin(), records.end());
  return m;
}

TEST(DnsWire, QueryRoundTripsAndRefusalEchoesTheQuestion) {
  auto m = dns::make_query({"Allowed.Test", dns::kTypeA, dns::kClassIn}, 0xbeef);
  auto q = dns::parse_query(m);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->id, 0xbeef);
  EXPECT_EQ(q->question.name, "allowed.test");  // lowercased
  auto refused = dns::reply_with_rcode(m, *q, dns::kRcodeRefused);
  auto r = dns::parse_response(refused, q->question);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rcode, dns::kRcodeRefused);
  EXPECT_EQ(r->id, 0xbeef);
  EXPECT_TRUE(r->addresses.empty());
}

TEST(DnsWire, HostileQueriesAreRefusedToParse) {
  auto good = dns::make_query({"a.test", 1, 1}, 1);
  for (size_t cut = 0; cut < good.size(); ++cut)
    EXPECT_FALSE(dns::parse_query(std::span(good.data(), cut))) << "a query cut at " << cut;
  auto two = good;
  two[5] = 2;  // two questions
  EXPECT_FALSE(dns::parse_query(two));
  auto reply = good;
  reply[2] |= 0x80;  // a reply, not a query
  EXPECT_FALSE(dns::parse_query(reply));
  // One label "allowed.test" (a dot inside a label) must never judge as the name allowed.test.
  auto dotted = bytes({0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 12, 'a', 'l', 'l', 'o', 'w', 'e', 'd', '.', 't', 'e', 's',
                       't', 0, 0, 1, 0, 1});
  EXPECT_FALSE(dns::parse_query(dotted));
  auto pointer_to_itself = bytes({0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1});
  EXPECT_FALSE(dns::parse_query(pointer_to_itself));
}

TEST(DnsWire, ReplyAddressesFollowTheCnameChainOnly) {
  Question q{"allowed.test", dns::kTypeA, dns::kClassIn};
  // allowed.test CNAME cdn.other.test (compressed: "cdn" + pointer to "test"
  // of the question), cdn.other.test A 198.18.0.2, and an A of a name off
  // the chain (an attempt to open 10.9.9.9 through an allowed name).
  std::vector<uint8_t> rec = bytes({0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 12, 3, 'c', 'd', 'n', 5, 'o', 't', 'h', 'e',
                                    'r', 0xc0, 20});
  size_t cname_rdata = 12 + 18 + 12;
  auto rest = bytes({0xc0, static_cast<int>(cname_rdata), 0, 1, 0, 1, 0, 0, 0x1c, 0x20, 0, 4, 198, 18, 0, 2,
                     1, 'x', 0, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 9, 9, 9});
  rec.insert(rec.end(), rest.begin(), rest.end());
  auto m = reply_to(q, 9, 3, rec);
  dns::ParseError why;
  auto r = dns::parse_response(m, q, &why);
  ASSERT_TRUE(r) << why.why;
  ASSERT_EQ(r->addresses.size(), 1u);
  EXPECT_EQ(r->addresses[0].ip, (198u << 24) | (18u << 16) | 2u);
  EXPECT_EQ(r->addresses[0].ttl, 7200u);
  EXPECT_TRUE(dns::cap_ttls(m, q, *r, 3600));
  auto capped = dns::parse_response(m, q);
  ASSERT_TRUE(capped);
  EXPECT_EQ(capped->addresses[0].ttl, 3600u);
  // Every cut of it is refused, none read past the end.
  for (size_t cut = 0; cut < m.size(); ++cut) EXPECT_FALSE(dns::parse_response(std::span(m.data(), cut), q)) << cut;
  // The answer to another question is not this one's.
  EXPECT_FALSE(dns::parse_response(m, Question{"other.test", dns::kTypeA, dns::kClassIn}));
}

TEST(DnsWire, CompressionLoopsAndForwardPointersAreRefused) {
  Question q{"a.test", dns::kTypeA, dns::kClassIn};
  size_t rr = 12 + 12;  // the record's owner starts here
  // "b" then a pointer back to "b": a loop.
  auto loop = reply_to(q, 1, 1, bytes({1, 'b', 0xc0, static_cast<int>(rr), 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4}));
  EXPECT_FALSE(dns::parse_response(loop, q));
  auto forward = reply_to(q, 1, 1, bytes({0xc0, 0x40, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4}));
  EXPECT_FALSE(dns::parse_response(forward, q));
  auto long_rdata = reply_to(q, 1, 1, bytes({0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 1, 0, 1, 2, 3, 4}));
  EXPECT_FALSE(dns::parse_response(long_rdata, q));
}

// Found by the fuzz target (tests/fuzz/corpus/dns/9f791e84...): a record
// whose owner name points into another record's TTL field reads differently
// once that TTL is capped; cap_ttls must say so (the proxy then answers
// SERVFAIL rather than pass on a reply it did not check as sent).
TEST(DnsWire, CappingATtlANamePointsIntoIsRefused) {
  auto m = bytes({0x00, 0x07, 0x81, 0x80, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x07, 0x61, 0x6c, 0x6c,
                  0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x4a, 0x74, 0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c,
                  0x00, 0x64, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x01,
                  0x00, 0x01, 0x12, 0x00, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0xc0, 0x22, 0x00, 0x01, 0x00, 0x01,
                  0x00, 0x00, 0x00, 0x1e, 0x00, 0x04, 0xc6, 0x12, 0x00, 0x06});
  Question q{"allowed.tejt", dns::kTypeA, dns::kClassIn};
  auto r = dns::parse_response(m, q);
  ASSERT_TRUE(r);
  EXPECT_FALSE(dns::cap_ttls(m, q, *r, 60));
}

TEST(DnsNames, WildcardCoversSubdomainsOnly) {
  EXPECT_TRUE(dns::name_matches("api.example.com", "api.example.com"));
  EXPECT_FALSE(dns::name_matches("api.example.com", "x.api.example.com"));
  EXPECT_TRUE(dns::name_matches("*.example.com", "a.example.com"));
  EXPECT_TRUE(dns::name_matches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(dns::name_matches("*.example.com", "example.com"));
  EXPECT_FALSE(dns::name_matches("*.example.com", "badexample.com"));
}

TEST(EgressNames, ParseJudgeAndRuleset) {
  auto r = parse_egress_rule("API.Example.com.:443");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(to_string(*r), "api.example.com:443");
  EXPECT_EQ(to_string(parse_egress_rule("*.example.com").value()), "*.example.com");
  for (const char* bad : {"1.2.3", "ex ample.com", "*.", "a..b", "example.com/24", "-:80", "*.*.x.com"})
    EXPECT_FALSE(parse_egress_rule(bad)) << bad;
  EXPECT_FALSE(parse_egress_policy({}, {"evil.test:80"})) << "a denied name takes no port";

  auto p = parse_egress_policy({"*.example.com:443", "api.example.com", "bad.example.com:80"},
                               {"0.0.0.0/0", "*.bad.example.com", "bad.example.com"})
               .value();
  EXPECT_TRUE(has_name_rules(p));
  auto v = judge_name(p, "api.example.com");  // exact beats the wildcard: every port
  EXPECT_TRUE(v.answer);
  EXPECT_EQ(v.ports, std::vector<uint16_t>{0});
  v = judge_name(p, "www.example.com");
  EXPECT_TRUE(v.answer);
  EXPECT_EQ(v.ports, std::vector<uint16_t>{443});
  EXPECT_FALSE(judge_name(p, "bad.example.com").answer) << "deny wins a tie";
  EXPECT_FALSE(judge_name(p, "x.bad.example.com").answer) << "the longer wildcard wins";
  EXPECT_FALSE(judge_name(p, "other.test").answer) << "a deny-all answers only allowed names";
  auto open = parse_egress_policy({}, {"evil.test"}).value();
  EXPECT_TRUE(judge_name(open, "other.test").answer);
  EXPECT_TRUE(judge_name(open, "other.test").ports.empty());
  EXPECT_FALSE(judge_name(open, "evil.test").answer);

  std::string t = user_network_ruleset(p, "tap0", "10.0.2.2");
  EXPECT_NE(t.find("set names_any { type ipv4_addr; flags timeout; }"), std::string::npos) << t;
  EXPECT_NE(t.find("th dport 53 dnat ip to 127.0.0.53"), std::string::npos) << t;
  // The sets come after the refusals of the host and of metadata (a name
  // that resolves there stays refused) and before the deny-all.
  auto sets = t.find("@names_any"), metadata = t.find("169.254.0.0/16"), deny_all = t.find("0.0.0.0/0");
  EXPECT_LT(metadata, sets);
  EXPECT_LT(sets, deny_all);
  EXPECT_EQ(user_network_ruleset(parse_egress_policy({"10.0.0.0/8"}, {}).value(), "tap0", "10.0.2.2").find("names_"),
            std::string::npos)
      << "no names, no sets";
  EXPECT_EQ(name_element_commands((198u << 24) | 2u, 443, 90),
            "add element inet cubby names_port { 198.0.0.2 . 443 timeout 90s }\n"
            "delete element inet cubby names_port { 198.0.0.2 . 443 }\n"
            "add element inet cubby names_port { 198.0.0.2 . 443 timeout 90s }\n");
}

}  // namespace
}  // namespace cubby::net
