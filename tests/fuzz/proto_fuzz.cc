// libFuzzer target for the decoders cubby runs on what a peer sends: the
// frame decoder (header, size and the payload limits of proto/frame.h), the
// mux's raw splitter and its close/ack recognisers (the shim's and the guest
// init's halves), and every typed decoder of proto/messages.h as the agent
// (decode_request, the copy worker's cp_entry), the runtime (replies) and
// the shim (the guest's control frames) call them. A finding is a crash, a
// sanitizer report, an uncaught exception (nlohmann's type_error is the bug
// class this guards) or a broken invariant (abort()).
//
// An input is used three ways: as one payload, as a session's byte stream
// (frames with headers, fed in two pieces), and as a mux stream.
// Built and run by tests/fuzz/run.sh; seeds in tests/fuzz/corpus/proto.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "copy/entry.h"
#include "proto/frame.h"
#include "proto/messages.h"
#include "proto/mux.h"

namespace {

using namespace cubby;
using namespace cubby::proto;

template <class... Ts>
void decode_as(const Json& m) {
  (void)(msg::decode<Ts>(m), ...);
}

void decode_all(const Json& m) {
  if (msg::type_of(m).empty()) abort();  // parse_payload promised a type
  (void)msg::decode_request(m);
  decode_as<msg::Hello, msg::Ping, msg::Exec, msg::Resize, msg::In, msg::InEof, msg::Signal, msg::ExecStatus,
            msg::Attach, msg::Kill, msg::WatchStart, msg::CpStat, msg::CpPut, msg::CpGet, msg::CpEntry, msg::CpData,
            msg::CpEnd, msg::ErrorReply, msg::Pong, msg::Started, msg::Out, msg::Exit, msg::Running, msg::Ok,
            msg::CpStatReply, msg::MuxClose, msg::MuxAck, msg::Config, msg::Go, msg::Log, msg::GuestExit,
            msg::Untether, msg::Ended>(m);
  (void)msg::error_text(m, "?");
  if (msg::type_of(m) == msg::kCpEntry) (void)copy::from_wire(m);
}

std::string msgpack(const Json& j) {
  std::string s;
  Json::to_msgpack(j, nlohmann::detail::output_adapter<char>(s));
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* p = reinterpret_cast<const char*>(data);
  if (auto m = parse_payload(p, size)) {
    decode_all(*m);
    // What was accepted re-encodes to something accepted, and stably: the
    // structure check and the encoder agree.
    std::string once = msgpack(*m);
    auto again = parse_payload(once.data(), once.size());
    if (!again || msgpack(*again) != once) abort();
  }
  size_t cut = size ? data[0] % (size + 1) : 0;
  FrameDecoder session;
  session.feed(p, cut);
  for (int round = 0; round < 2; ++round) {
    for (;;) {
      auto f = session.next();
      if (!f || !*f) break;
      decode_all((*f)->msg);
    }
    session.feed(p + cut, size - cut);
  }
  mux::RawSplitter split;
  split.feed(p, size);
  for (;;) {
    auto f = split.next();
    if (!f || !*f) break;
    (void)mux::is_close((*f)->bytes);
    (void)mux::ack_bytes((*f)->bytes);
    (void)mux::decode((*f)->bytes);
  }
  return 0;
}
