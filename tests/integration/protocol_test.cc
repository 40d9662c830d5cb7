// What a hostile client of a box's agent.sock can do with malformed frames
// (issue 10, item 3: 13 of 56 fuzz cases ended PID 1, the box exiting 139).
// Each bad frame ends only its own session, with an error frame naming the
// problem; the box runs on, its other sessions keep working and new execs
// return their output. On vm the frames cross the shim's multiplexer and the
// guest's init too, so the same test covers them.
#include <sys/socket.h>
#include <sys/time.h>

#include <nlohmann/json.hpp>

#include "base/sys.h"
#include "harness.h"
#include "proto/messages.h"
#include "proto/transport.h"

namespace cubby::test {
namespace {

using proto::Json;

class Protocol : public BackendTest {};

INSTANTIATE_TEST_SUITE_P(Backends, Protocol, ::testing::Values("sandbox", "vm"),
                         [](const auto& info) { return info.param; });

std::string msgpack(const Json& j) {
  std::string s;
  Json::to_msgpack(j, nlohmann::detail::output_adapter<char>(s));
  return s;
}
std::string frame(const std::string& payload) {
  uint32_t n = static_cast<uint32_t>(payload.size());
  std::string f = {static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                   static_cast<char>(n), 0, 0, 0, 0};
  return f + payload;
}
// A backstop only: every answer below is an event (a frame or the hang-up).
void recv_backstop(int fd) {
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

struct BadFrame {
  const char* name;
  std::string payload;  // MessagePack
  bool after_hello;     // sent in a session that has said hello
  const char* why;      // in the error frame's msg
  bool ends = true;     // false: not malformed, only unknown; the session goes on
};

std::vector<BadFrame> bad_frames() {
  // {"t":"ping","x":[[[...nil...]]]}, 100 000 deep (the stack overflow).
  std::string deep = "\x82\xa1t\xa4ping\xa1x" + std::string(100000, '\x91') + '\xc0';
  return {
      {"hello.v", msgpack({{"t", "hello"}, {"v", "1"}}), false, "malformed hello: \"v\" must be an integer"},
      {"hello.min", msgpack({{"t", "hello"}, {"v", 1}, {"min", {1}}}), false, "\"min\" must be an integer"},
      {"exec_status.id", msgpack({{"t", "exec_status"}, {"id", "1"}}), true, "malformed exec_status: \"id\""},
      {"kill.sig", msgpack({{"t", "kill"}, {"sig", "KILL"}}), true, "malformed kill: \"sig\""},
      {"resize.rows", msgpack({{"t", "resize"}, {"rows", "24"}, {"cols", 80}}), true, "malformed resize: \"rows\""},
      {"attach.start", msgpack({{"t", "attach"}, {"start", "yes"}}), true, "malformed attach: \"start\""},
      {"attach.rows", msgpack({{"t", "attach"}, {"rows", {24}}, {"cols", 80}}), true, "malformed attach: \"rows\""},
      {"exec.argv", msgpack({{"t", "exec"}, {"argv", "sh"}}), true, "malformed exec: \"argv\""},
      {"exec.tty", msgpack({{"t", "exec"}, {"argv", {"true"}}, {"tty", "yes"}}), true, "malformed exec: \"tty\""},
      {"exec.rows", msgpack({{"t", "exec"}, {"argv", {"true"}}, {"rows", -1}}), true, "malformed exec: \"rows\""},
      {"signal.sig", msgpack({{"t", "signal"}, {"sig", "TERM"}}), true, "malformed signal: \"sig\""},
      {"in.d", msgpack({{"t", "in"}, {"d", 7}}), true, "malformed in: \"d\""},
      {"cp_stat.path", msgpack({{"t", "cp_stat"}, {"path", 1}}), true, "malformed cp_stat: \"path\""},
      {"100000 deep", deep, true, "nested too deeply"},
      // The mux layer's own ack with a bad count: on vm the guest's init reads
      // it (it used to throw there, powering the guest off); the agent then
      // sees a type it does not know.
      {"mux_ack.n", msgpack({{"t", "mux_ack"}, {"n", "1"}}), true, "unknown message type: mux_ack", false},
  };
}

// A frame that got no error frame: did it end the box? `cubby wait` says
// (its exit code), with a backstop for a box that is still running.
std::optional<std::string> box_ended(const std::string& home, const std::string& id) {
  auto [out_r, out_w] = sys::make_pipe().value();
  ChildProcess w = spawn_cubby(home, {"wait", id}, out_w.get(), -1);
  out_w.reset();
  // Still running after the backstop: the ChildProcess kills and reaps it.
  if (!sys::wait_readable(w.pidfd(), std::chrono::seconds(10)).value_or(false)) return std::nullopt;
  (void)w.wait();
  return sys::read_all(out_r.get()).value_or("?");
}

TEST_P(Protocol, MalformedFramesEndOnlyTheirOwnSessionAndNeverTheBox) {
  std::string id = run_detached();
  proto::UnixTransport t(home_ + "/boxes/" + id, "agent.sock");
  auto keeper = proto::connect_and_hello(t);  // a session that must outlive all of them
  ASSERT_TRUE(keeper) << keeper.error().message();
  recv_backstop(keeper->fd());
  bool box_died = false;
  for (const auto& bad : bad_frames()) {
    SCOPED_TRACE(bad.name);
    proto::Conn c;
    if (bad.after_hello) {
      auto h = proto::connect_and_hello(t);
      ASSERT_TRUE(h) << h.error().message();
      c = std::move(*h);
    } else {
      c = proto::Conn(t.connect().value());
    }
    recv_backstop(c.fd());
    ASSERT_TRUE(c.send_encoded(frame(bad.payload)));
    auto reply = c.recv();
    if (!reply) {
      ADD_FAILURE() << "no error frame: " << reply.error().message();
      if (auto code = box_ended(home_, id)) {
        ADD_FAILURE() << "the frame ended the box, exit code " << *code;
        // Go on with a new box, to see every case.
        box_died = true;
        id = run_detached();
        t = proto::UnixTransport(home_ + "/boxes/" + id, "agent.sock");
      }
      continue;
    }
    EXPECT_EQ(proto::msg::type_of(reply->msg), "error");
    std::string msg = proto::msg::error_text(reply->msg, "");
    EXPECT_NE(msg.find(bad.why), std::string::npos) << msg;
    if (!bad.ends) {
      ASSERT_TRUE(c.send({{"t", "ping"}}));
      auto pong = c.recv();
      EXPECT_TRUE(pong && proto::msg::type_of(pong->msg) == "pong") << "an unknown type must not end the session";
    } else if (auto after = c.recv(); after) {
      ADD_FAILURE() << "the session must end after a malformed frame";
    } else {
      EXPECT_EQ(after.error().message(), "connection closed");
    }
    EXPECT_EQ(status(id), "running");
  }
  if (!box_died) {
    ASSERT_TRUE(keeper->send({{"t", "ping"}}));
    auto pong = keeper->recv();
    ASSERT_TRUE(pong) << pong.error().message();
    EXPECT_EQ(proto::msg::type_of(pong->msg), "pong") << "another session was dropped with the bad ones";
  }
  auto r = cubby({"exec", id, "echo", "still serving"});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "still serving\n");
}

}  // namespace
}  // namespace cubby::test
