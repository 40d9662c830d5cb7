// The typed decoders of proto/messages.h and the payload limits of
// proto/frame.h: every message type refuses a wrong-typed, a missing and an
// out-of-range field with an error naming it, and any payload nested too
// deeply, before a handler could see it (issue 10, item 3).
#include <sys/stat.h>

#include <functional>

#include <gtest/gtest.h>

#include "copy/entry.h"
#include "proto/frame.h"
#include "proto/messages.h"
#include "proto/mux.h"

namespace cubby::proto {
namespace {

namespace m = msg;

// The frame as a peer would send it, through the real frame decoder.
Result<Json> over_the_wire(const std::string& payload) {
  std::string wire = {static_cast<char>(payload.size() >> 24), static_cast<char>(payload.size() >> 16),
                      static_cast<char>(payload.size() >> 8), static_cast<char>(payload.size()), 0, 0, 0, 0};
  wire += payload;
  FrameDecoder d;
  d.feed(wire.data(), wire.size());
  auto f = d.next();
  if (!f) return std::unexpected(f.error());
  if (!*f) return fail(Error::protocol("incomplete"));
  return std::move((*f)->msg);
}
std::string msgpack(const Json& j) {
  std::string s;
  Json::to_msgpack(j, nlohmann::detail::output_adapter<char>(s));
  return s;
}
// `depth` nested one-element arrays around a nil.
std::string nested(size_t depth) { return std::string(depth, '\x91') + '\xc0'; }
// j (a map of at most 14 entries) with one more entry holding `value`, raw.
std::string with_raw_field(const Json& j, const std::string& value) {
  std::string s = msgpack(j);
  EXPECT_EQ(s[0] & 0xf0, 0x80) << "a fixmap";
  s[0] = static_cast<char>(s[0] + 1);
  return s + "\xa2zz" + value;
}

using Decoder = std::function<std::string(const Json&)>;  // "" or the error
template <class T>
Decoder decoder() {
  return [](const Json& j) {
    auto r = m::decode<T>(j);
    return r ? std::string() : r.error().message();
  };
}

constexpr const char* kAbsent = "<absent>";
struct Bad {
  const char* field;
  Json value;  // kAbsent: the field removed
  const char* why;
};
struct Case {
  const char* name;
  Decoder decode;
  Json valid;
  std::vector<Bad> bad;
};

Json bin(std::vector<uint8_t> b) { return Json::binary(std::move(b)); }

std::vector<Case> cases() {
  const Json absent = kAbsent;
  return {
      {"hello", decoder<m::Hello>(), {{"t", "hello"}, {"v", 1}, {"min", 1}},
       {{"v", "1", "\"v\" must be an integer, not string"},
        {"v", absent, "\"v\" is missing"},
        {"v", -1, "\"v\" is out of range"},
        {"v", 1.0, "\"v\" must be an integer, not float"},
        {"min", true, "\"min\" must be an integer, not boolean"},
        {"agent", 7, "\"agent\" must be a string"}}},
      {"exec", decoder<m::Exec>(), {{"t", "exec"}, {"argv", {"sh", "-c", "true"}}, {"env", {"A=1"}}, {"tty", true},
                                    {"rows", 24}, {"cols", 80}, {"timeout_ms", 5}},
       {{"argv", "sh", "\"argv\" must be an array of strings, not string"},
        {"argv", {1}, "\"argv\" must be a string, not integer"},
        {"argv", absent, "\"argv\" is missing"},
        {"argv", Json::array(), "\"argv\" is empty"},
        {"argv", {std::string("a\0b", 3)}, "\"argv\" contains a NUL byte"},
        {"env", "A=1", "\"env\" must be an array"},
        {"cwd", 5, "\"cwd\" must be a string"},
        {"cwd", std::string(5000, 'a'), "\"cwd\" is longer than 4096 bytes"},
        {"user", {"root"}, "\"user\" must be a string, not array"},
        {"stdin", "yes", "\"stdin\" must be a boolean"},
        {"tty", 1, "\"tty\" must be a boolean, not integer"},
        {"detach", Json(nullptr), "\"detach\" must be a boolean, not null"},
        {"rows", "24", "\"rows\" must be an integer"},
        {"rows", 70000, "\"rows\" is out of range (0..65535)"},
        {"cols", -1, "\"cols\" is out of range"},
        {"timeout_ms", "1", "\"timeout_ms\" must be an integer"},
        {"timeout_ms", -1, "\"timeout_ms\" is out of range"}}},
      {"resize", decoder<m::Resize>(), {{"t", "resize"}, {"rows", 50}, {"cols", 132}},
       {{"rows", "50", "\"rows\" must be an integer"},
        {"cols", absent, "\"cols\" is missing"},
        {"rows", 65536, "\"rows\" is out of range"}}},
      {"in", decoder<m::In>(), {{"t", "in"}, {"d", bin({1, 2})}},
       {{"d", "text", "\"d\" must be binary, not string"}, {"d", absent, "\"d\" is missing"}}},
      {"in_eof", decoder<m::InEof>(), {{"t", "in_eof"}}, {}},
      {"ping", decoder<m::Ping>(), {{"t", "ping"}}, {}},
      {"watch_start", decoder<m::WatchStart>(), {{"t", "watch_start"}}, {}},
      {"signal", decoder<m::Signal>(), {{"t", "signal"}, {"sig", 15}},
       {{"sig", "TERM", "\"sig\" must be an integer, not string"},
        {"sig", 0, "\"sig\" is out of range (1..64)"},
        {"sig", 65, "\"sig\" is out of range"}}},
      {"exec_status", decoder<m::ExecStatus>(), {{"t", "exec_status"}, {"id", 3}},
       {{"id", "3", "\"id\" must be an integer"},
        {"id", absent, "\"id\" is missing"},
        {"id", -3, "\"id\" is out of range"}}},
      {"attach", decoder<m::Attach>(), {{"t", "attach"}, {"start", true}, {"stdin", true}, {"rows", 24}, {"cols", 80}},
       {{"start", 1, "\"start\" must be a boolean"},
        {"stdin", "no", "\"stdin\" must be a boolean"},
        {"rows", {24}, "\"rows\" must be an integer, not array"},
        {"cols", 1 << 20, "\"cols\" is out of range"}}},
      {"kill", decoder<m::Kill>(), {{"t", "kill"}, {"sig", 9}},
       {{"sig", "KILL", "\"sig\" must be an integer"}, {"sig", -9, "\"sig\" is out of range"}}},
      {"cp_stat", decoder<m::CpStat>(), {{"t", "cp_stat"}, {"path", "/etc"}},
       {{"path", 1, "\"path\" must be a string"}, {"path", absent, "\"path\" is missing"},
        {"path", std::string(5000, 'p'), "\"path\" is longer than"}}},
      {"cp_put", decoder<m::CpPut>(), {{"t", "cp_put"}, {"dir", "/srv"}, {"keep_owner", true}},
       {{"dir", Json::object(), "\"dir\" must be a string, not object"}, {"dir", absent, "\"dir\" is missing"},
        {"keep_owner", "y", "\"keep_owner\" must be a boolean"}}},
      {"cp_get", decoder<m::CpGet>(), {{"t", "cp_get"}, {"path", "/srv"}, {"follow", false}},
       {{"path", absent, "\"path\" is missing"}, {"follow", 0, "\"follow\" must be a boolean"}}},
      {"cp_entry", decoder<m::CpEntry>(), {{"t", "cp_entry"}, {"p", "a/b"}, {"k", "f"}, {"mode", 0644}, {"uid", 0},
                                           {"gid", 0}, {"mt", 1}, {"mtn", 2}, {"size", 3}},
       {{"k", "x", "\"k\" is not one of"},
        {"k", 102, "\"k\" must be a string"},
        {"mode", 010000, "\"mode\" is out of range"},
        {"uid", -1, "\"uid\" is out of range"},
        {"gid", uint64_t{1} << 32, "\"gid\" is out of range"},
        {"mt", "1", "\"mt\" must be an integer"},
        {"mtn", 1000000000, "\"mtn\" is not a nanosecond count"},
        {"size", absent, "\"size\" is missing"},
        {"p", absent, "\"p\" is missing"}}},
      // A sparse file's extents: a hostile peer's map must not move the
      // writer backwards, overlap, or reach beyond the declared size.
      {"cp_entry sparse", decoder<m::CpEntry>(),
       {{"t", "cp_entry"}, {"p", "s"}, {"k", "f"}, {"mode", 0644}, {"uid", 0}, {"gid", 0}, {"mt", 1},
        {"size", 100}, {"x", {0, 10, 50, 10, 90, 10}}},
       {{"x", "0,10", "\"x\" must be an array of integer pairs, not string"},
        {"x", {0, 10, 50}, "\"x\" must be an array of integer pairs"},
        {"x", {0, 10, 5, 10}, "\"x\" has extents out of order or overlapping"},
        {"x", {50, 10, 0, 10}, "\"x\" has extents out of order or overlapping"},
        {"x", {0, 0}, "\"x\" has an empty extent"},
        {"x", {95, 10}, "\"x\" has an extent beyond the file's size"},
        {"x", {101, 1}, "\"x\" has an extent beyond the file's size"},
        {"x", {uint64_t{1} << 63, uint64_t{1} << 63}, "\"x\" has an extent beyond the file's size"},
        {"x", {-1, 5}, "\"x\" must hold non-negative integers only"},
        {"x", {0, "5"}, "\"x\" must hold non-negative integers only"},
        {"x", Json(std::vector<uint64_t>(2 * 4097, 1)), "\"x\" has more than 4096 pairs"}}},
      {"cp_data", decoder<m::CpData>(), {{"t", "cp_data"}, {"d", bin({0})}}, {{"d", {0}, "\"d\" must be binary"}}},
      {"cp_end", decoder<m::CpEnd>(), {{"t", "cp_end"}}, {}},
      {"error", decoder<m::ErrorReply>(), {{"t", "error"}, {"msg", "no"}, {"missing", true}},
       {{"msg", 1, "\"msg\" must be a string"}, {"missing", "yes", "\"missing\" must be a boolean"}}},
      {"pong", decoder<m::Pong>(), {{"t", "pong"}}, {}},
      {"started", decoder<m::Started>(), {{"t", "started"}, {"id", 1}, {"pid", 42}},
       {{"id", absent, "\"id\" is missing"}, {"pid", "42", "\"pid\" must be an integer"},
        {"pid", -1, "\"pid\" is out of range"}}},
      {"out", decoder<m::Out>(), {{"t", "out"}, {"s", 2}, {"d", bin({'x'})}},
       {{"s", 3, "\"s\" is out of range (1..2)"}, {"s", "1", "\"s\" must be an integer"},
        {"d", "x", "\"d\" must be binary"}}},
      {"exit", decoder<m::Exit>(), {{"t", "exit"}, {"id", 2}, {"code", 1}, {"signal", 0}, {"timed_out", false}},
       {{"code", "1", "\"code\" must be an integer"},
        {"code", absent, "\"code\" is missing"},
        {"code", 256, "\"code\" is out of range (0..255)"},
        {"signal", 99, "\"signal\" is out of range"},
        {"timed_out", 0, "\"timed_out\" must be a boolean"},
        {"error", false, "\"error\" must be a string"}}},
      {"running", decoder<m::Running>(), {{"t", "running"}, {"id", 2}}, {{"id", "2", "\"id\" must be an integer"}}},
      {"ok", decoder<m::Ok>(), {{"t", "ok"}}, {}},
      {"cp_stat reply", decoder<m::CpStatReply>(), {{"t", "cp_stat"}, {"kind", "d"}},
       {{"kind", "dir", "\"kind\" is longer than 1 bytes"}, {"kind", "x", "\"kind\" is not one of"},
        {"kind", absent, "\"kind\" is missing"}}},
      {"close", decoder<m::MuxClose>(), {{"t", "close"}}, {}},
      {"mux_ack", decoder<m::MuxAck>(), {{"t", "mux_ack"}, {"n", 4096}},
       {{"n", "4096", "\"n\" must be an integer"},
        {"n", -1, "\"n\" is out of range"},
        {"n", absent, "\"n\" is missing"}}},
      {"config", decoder<m::Config>(), {{"t", "config"}, {"cfg", {{"main", {{"argv", {"sh"}}}}}}},
       {{"cfg", "x", "\"cfg\" must be a map, not string"}, {"cfg", absent, "\"cfg\" is missing"}}},
      {"go", decoder<m::Go>(), {{"t", "go"}}, {}},
      {"log", decoder<m::Log>(), {{"t", "log"}, {"d", bin({'l'})}}, {{"d", 1, "\"d\" must be binary"}}},
      {"guest exit", decoder<m::GuestExit>(), {{"t", "exit"}, {"code", 3}},
       {{"code", "3", "\"code\" must be an integer"}, {"code", 300, "\"code\" is out of range"}}},
      {"untether", decoder<m::Untether>(), {{"t", "untether"}}, {}},
      {"ended", decoder<m::Ended>(), {{"t", "ended"}, {"code", 137}, {"msg", ""}},
       {{"code", "137", "\"code\" must be an integer"}, {"code", absent, "\"code\" is missing"},
        {"code", 256, "\"code\" is out of range"}, {"msg", 1, "\"msg\" must be a string"}}},
  };
}

TEST(Messages, EveryMessageRefusesWrongTypedMissingAndOutOfRangeFields) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto valid = over_the_wire(msgpack(c.valid));
    ASSERT_TRUE(valid) << valid.error().message();
    EXPECT_EQ(c.decode(*valid), "") << "the valid form must decode";
    for (const auto& b : c.bad) {
      SCOPED_TRACE(std::string(b.field) + " = " + b.value.dump());
      Json j = c.valid;
      if (b.value == kAbsent)
        j.erase(b.field);
      else
        j[b.field] = b.value;
      auto wire = over_the_wire(msgpack(j));
      ASSERT_TRUE(wire) << "the frame layer passes well-formed maps: " << wire.error().message();
      std::string why = c.decode(*wire);
      EXPECT_NE(why.find(std::string("malformed ") + std::string(msg::type_of(j))), std::string::npos) << why;
      EXPECT_NE(why.find(b.why), std::string::npos) << why;
    }
  }
}

TEST(Messages, EveryMessageNestedTooDeeplyIsRefusedBeforeDecoding) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto ok = over_the_wire(with_raw_field(c.valid, nested(kMaxDepth - 2)));
    ASSERT_TRUE(ok) << "an unknown field within the depth limit is ignored: " << ok.error().message();
    EXPECT_EQ(c.decode(*ok), "");
    for (size_t depth : {kMaxDepth, size_t{100000}}) {
      auto deep = over_the_wire(with_raw_field(c.valid, nested(depth)));
      ASSERT_FALSE(deep) << "depth " << depth;
      EXPECT_NE(deep.error().message().find("nested too deeply"), std::string::npos) << deep.error().message();
    }
  }
}

TEST(Messages, PayloadLimitsHoldWithoutRecursion) {
  auto why = [](const std::string& payload) {
    auto r = parse_payload(payload.data(), payload.size());
    return r ? std::string() : r.error().message();
  };
  EXPECT_EQ(why(msgpack({{"t", "ping"}})), "");
  // 1 + kMaxDepth containers: the map and kMaxDepth - 1 arrays are allowed.
  EXPECT_EQ(why(with_raw_field({{"t", "ping"}}, nested(kMaxDepth - 1))), "");
  EXPECT_NE(why(with_raw_field({{"t", "ping"}}, nested(kMaxDepth))).find("nested too deeply"), std::string::npos);
  // The 100 000-deep payload, as maps this time.
  std::string deep_maps = "\x82\xa1t\xa4ping\xa1x";
  for (int i = 0; i < 100000; ++i) deep_maps += "\x81\xa1x";
  deep_maps += '\xc0';
  EXPECT_NE(why(deep_maps).find("nested too deeply"), std::string::npos);
  // Too many values: an array of kMaxValues + 1 nils.
  std::string many = "\x82\xa1t\xa4ping\xa1x\xdd";
  uint32_t n = kMaxValues + 1;
  many += {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8), static_cast<char>(n)};
  many += std::string(n, '\xc0');
  EXPECT_NE(why(many).find("too many values"), std::string::npos);
  // Counts and lengths that promise more than there is, trailing bytes,
  // the reserved byte 0xc1, not a map, no or a wrong-typed or a long "t".
  EXPECT_NE(why("\x82\xa1t\xa4ping\xa1x\xdd\xff\xff\xff\xff").find("truncated"), std::string::npos);
  EXPECT_NE(why("\x81\xa1t\xdb\xff\xff\xff\xffping").find("truncated"), std::string::npos);
  EXPECT_NE(why(msgpack({{"t", "ping"}}) + '\xc0').find("trailing bytes"), std::string::npos);
  EXPECT_NE(why("\x81\xa1t\xc1").find("unknown type byte"), std::string::npos);
  EXPECT_NE(why(msgpack(Json::array({1}))).find("not a map"), std::string::npos);
  EXPECT_NE(why(msgpack({{"x", 1}})).find("no message type"), std::string::npos);
  EXPECT_NE(why(msgpack({{"t", 1}})).find("no message type"), std::string::npos);
  EXPECT_NE(why(msgpack({{"t", ""}})).find("no message type"), std::string::npos);  // found by the fuzzer
  EXPECT_NE(why(msgpack({{"t", std::string(100, 't')}})).find("too long"), std::string::npos);
  EXPECT_NE(why("").find("truncated"), std::string::npos);
}

TEST(Messages, RequestsDispatchOnTheirType) {
  auto r = m::decode_request({{"t", "exec"}, {"argv", {"true"}}});
  ASSERT_TRUE(r);
  ASSERT_TRUE(std::holds_alternative<m::Exec>(*r));
  const auto& e = std::get<m::Exec>(*r);
  EXPECT_EQ(e.argv, std::vector<std::string>{"true"});
  EXPECT_EQ(e.size.rows, 24);  // the defaults
  EXPECT_EQ(e.size.cols, 80);
  EXPECT_FALSE(e.tty);
  auto h = m::decode_request({{"t", "hello"}, {"v", 1}});
  ASSERT_TRUE(h && std::holds_alternative<m::Hello>(*h));
  EXPECT_EQ(std::get<m::Hello>(*h).min_version, 1) << "min defaults to v";
  auto u = m::decode_request({{"t", "bogus"}, {"v", "anything"}});
  ASSERT_TRUE(u && std::holds_alternative<m::Unknown>(*u)) << "an unknown type is not malformed";
  EXPECT_EQ(std::get<m::Unknown>(*u).type, "bogus");
  auto bad = m::decode_request({{"t", "hello"}, {"v", "1"}});  // the repro
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(), "malformed hello: \"v\" must be an integer, not string");
  EXPECT_FALSE(m::decode<m::Ping>({{"t", "pong"}})) << "a decoder checks the type it decodes";
}

TEST(Messages, MuxFramesWithBadFieldsAreNotMuxFrames) {
  EXPECT_EQ(mux::ack_bytes(mux::ack_frame(3, 100)), 100u);
  EXPECT_EQ(mux::ack_bytes(encode({{"t", "mux_ack"}, {"n", "100"}})), 0u);
  EXPECT_EQ(mux::ack_bytes(encode({{"t", "mux_ack"}, {"n", -1}})), 0u);
  EXPECT_TRUE(mux::is_close(encode({{"t", "close"}})));
  EXPECT_FALSE(mux::is_close(encode({{"t", "closed"}})));
}

TEST(Messages, CopyEntriesRoundTripAndKeepUtimeOmit) {
  copy::Entry e;
  e.path = "dir/file";
  e.kind = copy::Kind::kFile;
  e.mode = 04755;
  e.uid = 1000;
  e.gid = 4294967295u;
  e.mtime_sec = -5;
  e.mtime_nsec = copy::kTimeOmit;  // a tar entry without an mtime
  e.size = 1ull << 40;
  auto w = over_the_wire(msgpack(copy::to_wire(e)));
  ASSERT_TRUE(w);
  auto back = copy::from_wire(*w);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->path, e.path);
  EXPECT_EQ(back->mode, e.mode);
  EXPECT_EQ(back->gid, e.gid);
  EXPECT_EQ(back->mtime_sec, e.mtime_sec);
  EXPECT_EQ(back->mtime_nsec, copy::kTimeOmit);
  EXPECT_EQ(back->size, e.size);
  e.kind = copy::Kind::kSymlink;
  e.target = "";
  EXPECT_FALSE(copy::from_wire(copy::to_wire(e)));
  e.kind = copy::Kind::kHardlink;
  e.target = "../out";
  EXPECT_FALSE(copy::from_wire(copy::to_wire(e)));
}

}  // namespace
}  // namespace cubby::proto
