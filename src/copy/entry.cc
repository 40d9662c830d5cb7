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

uint64_t stream_bytes(const Entry& e) {
  if (e.kind != Kind::kFile) return 0;
  if (!e.sparse) return e.size;
  uint64_t n = 0;
  for (const auto& x : e.extents) n += x.length;
  return n;
}

Json to_wire(const Entry& e) {
  Json m = {{"t", msg::kCpEntry}, {"p", e.path},       {"k", std::string(1, static_cast<char>(e.kind))},
            {"mode", e.mode},     {"uid", e.uid},      {"gid", e.gid},
            {"mt", e.mtime_sec},  {"mtn", e.mtime_nsec}};
  if (e.kind == Kind::kFile) m["size"] = e.size;
  if (e.kind == Kind::kFile && e.sparse) {
    Json x = Json::array();
    for (const auto& ext : e.extents) {
      x.push_back(ext.offset);
      x.push_back(ext.length);
    }
    m["x"] = std::move(x);
  }
  if (e.kind == Kind::kSymlink || e.kind == Kind::kHardlink) m["target"] = e.target;
  return m;
}

Result<Entry> from_wire(const Json& m) {
  auto w = CUBBY_TRY(msg::decode<msg::CpEntry>(m));
  Entry e;
  e.path = CUBBY_TRY(clean_path(w.path, "entry"));
  e.kind = static_cast<Kind>(w.kind);
  e.mode = w.mode;
  e.uid = w.uid;
  e.gid = w.gid;
  e.mtime_sec = w.mtime_sec;
  e.mtime_nsec = w.mtime_nsec;
  e.size = w.size;
  e.sparse = w.sparse;
  for (const auto& [off, len] : w.extents) e.extents.push_back({off, len});
  e.target = std::move(w.target);
  if (e.kind == Kind::kSymlink && e.target.empty()) return fail(Error::protocol("cp_entry: empty symlink target"));
  if (e.kind == Kind::kHardlink) e.target = CUBBY_TRY(clean_path(e.target, "hardlink target"));
  return e;
}

Result<void> StreamCheck::entry(const Entry& e) {
  auto show = [](const std::string& p) { return p.empty() ? std::string(".") : p; };
  auto what = [](Kind k) {
    return k == Kind::kSymlink ? "a symlink" : k == Kind::kFifo ? "a fifo" : "a file";
  };
  // The root ("") and each proper ancestor of the path.
  for (size_t end = 0; !e.path.empty() && end != std::string::npos; end = e.path.find('/', end + 1)) {
    std::string up = e.path.substr(0, end);
    if (auto it = made_.find(up); it != made_.end())
      return fail(Error::invalid("refusing " + e.path + ": it is below " + show(up) + ", " + what(it->second) +
                                 " the copy made"));
  }
  auto it = made_.find(e.path);
  if (e.kind == Kind::kDir) {
    if (it != made_.end())
      return fail(Error::invalid("refusing directory " + show(e.path) + " over " + what(it->second) +
                                 " the copy made"));
    return inner_.entry(e);
  }
  Kind kind = e.kind;
  if (e.kind == Kind::kHardlink) {
    auto t = made_.find(e.target);
    if (t == made_.end())
      return fail(Error::invalid("refusing hardlink " + e.path + " to " + show(e.target) +
                                 ": not a file this copy made before it"));
    kind = t->second;  // a link to a symlink is a symlink
  }
  made_[e.path] = kind == Kind::kHardlink ? Kind::kFile : kind;
  return inner_.entry(e);
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
    const std::string_view t = msg::type_of(f.msg);
    if (t == msg::kCpData) {
      auto d = CUBBY_TRY(msg::decode<msg::CpData>(f.msg));
      if (d.data.size() > owed) return fail(Error::protocol("cp_data beyond the file's size"));
      owed -= d.data.size();
      CUBBY_TRYV(sink.data(reinterpret_cast<const char*>(d.data.data()), d.data.size()));
      continue;
    }
    if (t == msg::kError) {
      auto r = CUBBY_TRY(msg::decode<msg::ErrorReply>(f.msg));
      std::string why = r.msg.empty() ? "copy failed" : r.msg;
      return fail(r.missing && owed == 0 ? Error::not_found(why) : Error::conflict(why));
    }
    if (owed > 0) return fail(Error::protocol("file data ended early (got " + std::string(t) + ")"));
    if (t == msg::kCpEntry) {
      Entry e = CUBBY_TRY(from_wire(f.msg));
      CUBBY_TRYV(sink.entry(e));
      if (e.kind == Kind::kFile) owed = stream_bytes(e);
    } else if (t == msg::kCpEnd) {
      return sink.finish();
    } else {
      return fail(Error::protocol("unexpected message in a copy: " + std::string(t)));
    }
  }
}

}  // namespace cubby::copy
