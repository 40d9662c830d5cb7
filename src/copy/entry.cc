#include "copy/entry.h"

#include "base/fs.h"
#include "proto/messages.h"

namespace cubby::copy {

using proto::Json;
namespace msg = proto::msg;

Result<std::string> clean_path(const std::string& raw, const std::string& what) {
  if (!raw.empty() && raw[0] == '/') return fail(Error::invalid("unsafe " + what + " \"" + raw + "\": absolute path"));
  if (raw.find('\0') != std::string::npos) return fail(Error::invalid("unsafe " + what + ": NUL in path"));
  std::string out;
  for (const auto& comp : split_path(raw)) {
    if (comp == ".") continue;
    if (comp == "..") return fail(Error::invalid("unsafe " + what + " \"" + raw + "\": \"..\" component"));
    if (!out.empty()) out += '/';
    out += comp;
  }
  return out;
}

Json to_wire(const Entry& e) {
  Json m = {{"t", msg::kCpEntry}, {"p", e.path},       {"k", std::string(1, static_cast<char>(e.kind))},
            {"mode", e.mode},     {"uid", e.uid},      {"gid", e.gid},
            {"mt", e.mtime_sec},  {"mtn", e.mtime_nsec}};
  if (e.kind == Kind::kFile) m["size"] = e.size;
  if (e.kind == Kind::kSymlink || e.kind == Kind::kHardlink) m["target"] = e.target;
  return m;
}

Result<Entry> from_wire(const Json& m) {
  Entry e;
  try {
    e.path = CUBBY_TRY(clean_path(m.at("p").get<std::string>(), "entry"));
    std::string k = m.at("k").get<std::string>();
    if (k != "d" && k != "f" && k != "l" && k != "h") return fail(Error::protocol("cp_entry: unknown kind " + k));
    e.kind = static_cast<Kind>(k[0]);
    e.mode = m.at("mode").get<uint32_t>() & 07777;
    e.uid = m.at("uid").get<uint32_t>();
    e.gid = m.at("gid").get<uint32_t>();
    e.mtime_sec = m.at("mt").get<int64_t>();
    e.mtime_nsec = m.value("mtn", uint32_t{0}) % 1000000000u;
    if (e.kind == Kind::kFile) e.size = m.at("size").get<uint64_t>();
    if (e.kind == Kind::kSymlink || e.kind == Kind::kHardlink) e.target = m.at("target").get<std::string>();
  } catch (const std::exception& ex) {
    return fail(Error::protocol(std::string("malformed cp_entry: ") + ex.what()));
  }
  if (e.kind == Kind::kSymlink && (e.target.empty() || e.target.find('\0') != std::string::npos))
    return fail(Error::protocol("cp_entry: bad symlink target"));
  if (e.kind == Kind::kHardlink) e.target = CUBBY_TRY(clean_path(e.target, "hardlink target"));
  return e;
}

Result<void> FrameSink::send(const Json& m) {
  auto r = conn_.send(m);
  if (!r) peer_gone_ = true;
  return r;
}

Result<void> FrameSink::entry(const Entry& e) { return send(to_wire(e)); }

Result<void> FrameSink::data(const char* d, size_t n) {
  while (n > 0) {
    size_t k = std::min(n, kDataChunk);
    auto p = reinterpret_cast<const uint8_t*>(d);
    CUBBY_TRYV(send({{"t", msg::kCpData}, {"d", Json::binary(std::vector<uint8_t>(p, p + k))}}));
    d += k;
    n -= k;
  }
  return {};
}

Result<void> FrameSink::finish() { return send({{"t", msg::kCpEnd}}); }

Result<void> receive_frames(proto::Conn& conn, EntrySink& sink) {
  uint64_t owed = 0;  // bytes of the current file still to come
  for (;;) {
    auto f = CUBBY_TRY(conn.recv());
    const std::string t = f.msg.value("t", "");
    if (t == msg::kCpData) {
      if (!f.msg.contains("d") || !f.msg["d"].is_binary()) return fail(Error::protocol("malformed cp_data"));
      auto& d = f.msg["d"].get_binary();
      if (d.size() > owed) return fail(Error::protocol("cp_data beyond the file's size"));
      owed -= d.size();
      CUBBY_TRYV(sink.data(reinterpret_cast<const char*>(d.data()), d.size()));
      continue;
    }
    if (owed > 0) {
      if (t == msg::kError) return fail(Error::conflict(f.msg.value("msg", std::string("copy failed"))));
      return fail(Error::protocol("file data ended early (got " + t + ")"));
    }
    if (t == msg::kCpEntry) {
      Entry e = CUBBY_TRY(from_wire(f.msg));
      CUBBY_TRYV(sink.entry(e));
      if (e.kind == Kind::kFile) owed = e.size;
    } else if (t == msg::kCpEnd) {
      return sink.finish();
    } else if (t == msg::kError) {
      Error err = Error::conflict(f.msg.value("msg", std::string("copy failed")));
      if (f.msg.value("missing", false)) err = Error::not_found(f.msg.value("msg", std::string("no such file")));
      return fail(err);
    } else {
      return fail(Error::protocol("unexpected message in a copy: " + t));
    }
  }
}

}  // namespace cubby::copy
