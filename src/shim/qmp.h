// A QEMU Machine Protocol client: the shim's way to drive a vm box's QEMU
// (stop and continue its vCPUs for `cubby pause`; later, migration to a
// file for snapshots). QEMU gets one end of a socketpair as its monitor's
// chardev (-chardev socket,fd=N -mon mode=control), so there is no socket
// path to find, race for or leave behind; the shim keeps the other end.
//
// QEMU parses what the guest sends and may be the guest's by now: every
// line it writes is untrusted. Lines are bounded, JSON is parsed with
// nlohmann (no exceptions escape), and every wait has a backstop.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/unique_fd.h"

namespace cubby::shim {

class Qmp {
 public:
  Qmp() = default;
  explicit Qmp(UniqueFd fd) : fd_(std::move(fd)) {}
  bool valid() const { return fd_.valid(); }

  // Reads QEMU's greeting and leaves capabilities negotiation mode. QEMU
  // writes the greeting once its monitor is up, so this waits on it.
  Result<void> handshake(std::chrono::milliseconds backstop);
  // Runs one command; its "return" value, or QEMU's error as an Error.
  // Asynchronous events read meanwhile are skipped.
  Result<nlohmann::json> execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                                 std::chrono::milliseconds backstop = std::chrono::seconds(10));
  // QMP's getfd: QEMU takes `fd` (SCM_RIGHTS with the command) under `name`,
  // for a command such as migrate to a "fd:NAME" URI.
  Result<void> pass_fd(const std::string& name, int fd);
  // Waits for the event `name` whose data `done` accepts (events read while
  // a command ran count too). Returns that event's data.
  Result<nlohmann::json> await_event(const std::string& name, const std::function<bool(const nlohmann::json&)>& done,
                                     std::chrono::milliseconds backstop);

 private:
  Result<nlohmann::json> next_message(std::chrono::steady_clock::time_point deadline);
  Result<nlohmann::json> await_reply(const std::string& command, std::chrono::milliseconds backstop);

  UniqueFd fd_;
  std::string buf_;
  std::deque<nlohmann::json> events_;  // read while awaiting a reply
};

}  // namespace cubby::shim
