#include "shim/qmp.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/raw_fd_passing.h"
#include "base/sys.h"

namespace cubby::shim {
namespace {
// QMP replies to the commands the shim sends are small; a longer line is
// not QEMU speaking QMP.
constexpr size_t kMaxLine = 1 << 20;
}  // namespace

Result<nlohmann::json> Qmp::next_message(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (auto nl = buf_.find('\n'); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return fail(Error::protocol("qmp: not a JSON object: " + line.substr(0, 200)));
      return j;
    }
    if (buf_.size() > kMaxLine) return fail(Error::protocol("qmp: a line longer than 1 MiB"));
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !CUBBY_TRY(sys::wait_readable(fd_.get(), left)))
      return fail(Error::timeout("qmp: QEMU did not answer"));
    char chunk[4096];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_fail("qmp: read");
    if (n == 0) return fail(Error::protocol("qmp: QEMU closed its monitor"));
    buf_.append(chunk, static_cast<size_t>(n));
  }
}

Result<void> Qmp::handshake(std::chrono::milliseconds backstop) {
  const auto deadline = std::chrono::steady_clock::now() + backstop;
  auto greeting = CUBBY_TRY(next_message(deadline));
  if (!greeting.contains("QMP")) return fail(Error::protocol("qmp: no greeting"));
  CUBBY_TRY(execute("qmp_capabilities", nullptr, backstop));
  return {};
}

Result<nlohmann::json> Qmp::execute(const std::string& command, const nlohmann::json& arguments,
                                    std::chrono::milliseconds backstop) {
  if (!fd_) return fail(Error::internal("qmp: no monitor"));
  nlohmann::json req = {{"execute", command}};
  if (!arguments.is_null()) req["arguments"] = arguments;
  std::string line = req.dump() + "\n";
  CUBBY_TRYV(sys::write_all(fd_.get(), line.data(), line.size()));
  return await_reply(command, backstop);
}

Result<void> Qmp::pass_fd(const std::string& name, int fd) {
  if (!fd_) return fail(Error::internal("qmp: no monitor"));
  std::string line = nlohmann::json({{"execute", "getfd"}, {"arguments", {{"fdname", name}}}}).dump() + "\n";
  if (int e = sys::send_fd_raw(fd_.get(), fd, line.data(), line.size()); e != 0) return sys_fail("qmp: send getfd", e);
  CUBBY_TRY(await_reply("getfd", std::chrono::seconds(10)));
  return {};
}

Result<nlohmann::json> Qmp::await_reply(const std::string& command, std::chrono::milliseconds backstop) {
  const auto deadline = std::chrono::steady_clock::now() + backstop;
  for (;;) {
    auto m = CUBBY_TRY(next_message(deadline));
    if (m.contains("event")) {  // asynchronous: STOP, RESUME, MIGRATION, ...
      if (events_.size() < 1024) events_.push_back(std::move(m));
      continue;
    }
    if (auto r = m.find("return"); r != m.end()) return *r;
    if (auto e = m.find("error"); e != m.end()) {
      std::string desc = e->is_object() && e->contains("desc") && (*e)["desc"].is_string() ? (*e)["desc"].get<std::string>()
                                                                                         : e->dump();
      return fail(Error(ErrorKind::kSystem, "qmp " + command + ": " + desc.substr(0, 500)));
    }
    return fail(Error::protocol("qmp: unexpected reply to " + command));
  }
}

Result<nlohmann::json> Qmp::await_event(const std::string& name, const std::function<bool(const nlohmann::json&)>& done,
                                        std::chrono::milliseconds backstop) {
  const auto deadline = std::chrono::steady_clock::now() + backstop;
  for (;;) {
    nlohmann::json m;
    if (!events_.empty()) {
      m = std::move(events_.front());
      events_.pop_front();
    } else {
      m = CUBBY_TRY(next_message(deadline));
    }
    auto ev = m.find("event");
    if (ev == m.end() || !ev->is_string() || *ev != name) continue;
    nlohmann::json data = m.contains("data") ? m["data"] : nlohmann::json::object();
    if (done(data)) return data;
  }
}

}  // namespace cubby::shim
