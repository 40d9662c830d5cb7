#include "proto/messages.h"

#include <sys/stat.h>

#include <limits>

namespace cubby::proto::msg {

namespace {

constexpr int kMaxInt = std::numeric_limits<int>::max();

const char* kind_name(const Json& v) {
  if (v.is_number_float()) return "float";
  if (v.is_number()) return "integer";
  return v.type_name();
}

// Reads the fields of one message map. Every getter checks type and range;
// the first failure is kept (the getters then return defaults) and ok()
// reports it, so a decoder is a plain list of fields.
class Fields {
 public:
  Fields(const Json& m, const char* type) : m_(m), type_(type) {}

  Result<void> ok() const {
    if (error_) return fail(*error_);
    return {};
  }

  bool has(const char* k) const { return m_.contains(k); }

  // Each getter returns the field, or its default when the field is absent
  // (or after an error). Required when def is nullopt.
  template <class I>
  I integer(const char* k, I lo, I hi, std::optional<I> def = std::nullopt) {
    const Json* v = get(k, !def);
    I fallback = def.value_or(lo);
    if (!v) return fallback;
    if (!v->is_number_integer()) {
      bad(k, std::string("must be an integer, not ") + kind_name(*v));
      return fallback;
    }
    __int128 x = v->is_number_unsigned() ? static_cast<__int128>(v->get<uint64_t>())
                                         : static_cast<__int128>(v->get<int64_t>());
    if (x < lo || x > hi) {
      bad(k, "is out of range (" + std::to_string(lo) + ".." + std::to_string(hi) + ")");
      return fallback;
    }
    return static_cast<I>(x);
  }

  bool flag(const char* k) {
    const Json* v = get(k, false);
    if (!v) return false;
    if (!v->is_boolean()) {
      bad(k, std::string("must be a boolean, not ") + kind_name(*v));
      return false;
    }
    return v->get<bool>();
  }

  // These strings become C strings (paths, argv, environment): no NULs.
  std::string text(const char* k, size_t max, std::optional<std::string> def = std::nullopt) {
    const Json* v = get(k, !def);
    if (!v) return def.value_or("");
    return check_text(k, *v, max);
  }

  std::vector<std::string> texts(const char* k, size_t max_each, bool required) {
    const Json* v = get(k, required);
    if (!v) return {};
    if (!v->is_array()) {
      bad(k, std::string("must be an array of strings, not ") + kind_name(*v));
      return {};
    }
    std::vector<std::string> out;
    out.reserve(v->size());
    for (const auto& e : *v) {
      out.push_back(check_text(k, e, max_each));
      if (error_) return {};
    }
    return out;
  }

  std::vector<uint8_t> bytes(const char* k) {
    const Json* v = get(k, true);
    if (!v) return {};
    if (!v->is_binary()) {
      bad(k, std::string("must be binary, not ") + kind_name(*v));
      return {};
    }
    return v->get_binary();
  }

  // A flat array of pairs of unsigned integers, at most max_pairs of them.
  std::vector<std::pair<uint64_t, uint64_t>> pairs(const char* k, size_t max_pairs) {
    const Json* v = get(k, true);
    if (!v) return {};
    if (!v->is_array() || v->size() % 2 != 0) {
      bad(k, std::string("must be an array of integer pairs, not ") + kind_name(*v));
      return {};
    }
    if (v->size() / 2 > max_pairs) {
      bad(k, "has more than " + std::to_string(max_pairs) + " pairs");
      return {};
    }
    std::vector<std::pair<uint64_t, uint64_t>> out;
    out.reserve(v->size() / 2);
    for (size_t i = 0; i < v->size(); i += 2) {
      const Json& a = (*v)[i];
      const Json& b = (*v)[i + 1];
      if (!a.is_number_unsigned() || !b.is_number_unsigned()) {
        bad(k, "must hold non-negative integers only");
        return {};
      }
      out.emplace_back(a.get<uint64_t>(), b.get<uint64_t>());
    }
    return out;
  }

  const Json* object(const char* k) {
    const Json* v = get(k, true);
    if (v && !v->is_object()) {
      bad(k, std::string("must be a map, not ") + kind_name(*v));
      return nullptr;
    }
    return v;
  }

  // A single-character code from `allowed` (cp kinds).
  char code(const char* k, std::string_view allowed) {
    std::string c = text(k, 1);
    if (!error_ && (c.size() != 1 || allowed.find(c[0]) == std::string_view::npos))
      bad(k, "is not one of \"" + std::string(allowed) + "\"");
    return error_ ? allowed[0] : c[0];
  }

  void bad(const char* k, const std::string& why) {
    if (!error_) error_ = Error::protocol("malformed " + std::string(type_) + ": \"" + k + "\" " + why);
  }

 private:
  const Json* get(const char* k, bool required) {
    if (error_) return nullptr;
    auto it = m_.find(k);
    if (it == m_.end()) {
      if (required) bad(k, "is missing");
      return nullptr;
    }
    return &*it;
  }

  std::string check_text(const char* k, const Json& v, size_t max) {
    if (!v.is_string()) {
      bad(k, std::string("must be a string, not ") + kind_name(v));
      return {};
    }
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > max)
      bad(k, "is longer than " + std::to_string(max) + " bytes");
    else if (s.find('\0') != std::string::npos)
      bad(k, "contains a NUL byte");
    return error_ ? std::string() : s;
  }

  const Json& m_;
  const char* type_;
  std::optional<Error> error_;
};

TermSize term_size(Fields& f, bool required) {
  TermSize s;
  auto opt = [&](uint16_t d) { return required ? std::nullopt : std::optional<uint16_t>(d); };
  s.rows = f.integer<uint16_t>("rows", 0, 65535, opt(s.rows));
  s.cols = f.integer<uint16_t>("cols", 0, 65535, opt(s.cols));
  return s;
}

int signal_number(Fields& f, int def) { return f.integer<int>("sig", 1, kMaxSignal, def); }

// One read() per message: its schema.
void read(Fields& f, Hello& m) {
  m.version = f.integer<int>("v", 0, kMaxProtoVersion);
  m.min_version = f.integer<int>("min", 0, kMaxProtoVersion, m.version);
  m.agent = f.text("agent", kMaxName, "");
}
void read(Fields&, Ping&) {}
void read(Fields& f, Exec& m) {
  m.argv = f.texts("argv", kMaxArgBytes - 1, true);
  if (f.ok() && m.argv.empty()) f.bad("argv", "is empty");
  m.env = f.texts("env", kMaxArgBytes - 1, false);
  if (f.ok())
    if (auto r = check_command_size(m.argv, m.env); !r) f.bad("argv", "and \"env\" are too large: " + r.error().message());
  m.cwd = f.text("cwd", kMaxPath, "");
  m.user = f.text("user", kMaxName, "");
  m.with_stdin = f.flag("stdin");
  m.tty = f.flag("tty");
  m.detach = f.flag("detach");
  m.size = term_size(f, false);
  m.timeout_ms = f.integer<int64_t>("timeout_ms", 0, std::numeric_limits<int64_t>::max(), 0);
}
void read(Fields& f, Resize& m) { m.size = term_size(f, true); }
void read(Fields& f, In& m) { m.data = f.bytes("d"); }
void read(Fields&, InEof&) {}
void read(Fields& f, Signal& m) { m.sig = signal_number(f, m.sig); }
void read(Fields& f, ExecStatus& m) { m.id = f.integer<uint64_t>("id", 0, std::numeric_limits<uint64_t>::max()); }
void read(Fields& f, Attach& m) {
  m.start = f.flag("start");
  m.with_stdin = f.flag("stdin");
  if (f.has("rows")) m.size = term_size(f, false);
}
void read(Fields& f, Kill& m) { m.sig = signal_number(f, m.sig); }
void read(Fields&, WatchStart&) {}
void read(Fields& f, CpStat& m) { m.path = f.text("path", kMaxPath); }
void read(Fields& f, CpPut& m) {
  m.dir = f.text("dir", kMaxPath);
  m.keep_owner = f.flag("keep_owner");
}
void read(Fields& f, CpGet& m) {
  m.path = f.text("path", kMaxPath);
  m.follow = f.flag("follow");
}
void read(Fields& f, CpEntry& m) {
  m.path = f.text("p", kMaxText);
  m.kind = f.code("k", "fdlh");
  m.mode = f.integer<uint32_t>("mode", 0, 07777);
  m.uid = f.integer<uint32_t>("uid", 0, std::numeric_limits<uint32_t>::max());
  m.gid = f.integer<uint32_t>("gid", 0, std::numeric_limits<uint32_t>::max());
  m.mtime_sec = f.integer<int64_t>("mt", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  // UTIME_OMIT: a tar entry without an mtime (copy/entry.h's kTimeOmit).
  m.mtime_nsec = f.integer<uint32_t>("mtn", 0, UTIME_OMIT, 0);
  if (m.mtime_nsec > 999999999 && m.mtime_nsec != UTIME_OMIT) f.bad("mtn", "is not a nanosecond count");
  if (m.kind == 'f') m.size = f.integer<uint64_t>("size", 0, std::numeric_limits<uint64_t>::max());
  if (m.kind == 'f' && f.has("x")) {
    // A hostile peer's map must not make the writer seek backwards, write
    // a range twice, or grow the file beyond the size it declared.
    m.sparse = true;
    m.extents = f.pairs("x", kMaxExtents);
    uint64_t end = 0;
    for (const auto& [off, len] : m.extents) {
      if (!f.ok()) break;
      if (len == 0) f.bad("x", "has an empty extent");
      else if (off < end) f.bad("x", "has extents out of order or overlapping");
      else if (off > m.size || len > m.size - off) f.bad("x", "has an extent beyond the file's size");
      end = off + len;
    }
  }
  if (m.kind == 'l' || m.kind == 'h') m.target = f.text("target", kMaxText);
}
void read(Fields& f, CpData& m) { m.data = f.bytes("d"); }
void read(Fields&, CpEnd&) {}
void read(Fields& f, ErrorReply& m) {
  m.msg = f.text("msg", kMaxText, "");
  m.missing = f.flag("missing");
}
void read(Fields&, Pong&) {}
void read(Fields& f, Started& m) {
  m.id = f.integer<uint64_t>("id", 0, std::numeric_limits<uint64_t>::max());
  m.pid = f.integer<int>("pid", 0, kMaxInt);
}
void read(Fields& f, Out& m) {
  m.stream = f.integer<int>("s", 1, 2);
  m.data = f.bytes("d");
}
void read(Fields& f, Exit& m) {
  m.id = f.integer<uint64_t>("id", 0, std::numeric_limits<uint64_t>::max(), 0);
  m.code = f.integer<int>("code", 0, 255);
  m.signal = f.integer<int>("signal", 0, kMaxSignal, 0);
  m.timed_out = f.flag("timed_out");
  m.error = f.text("error", kMaxText, "");
}
void read(Fields& f, Running& m) { m.id = f.integer<uint64_t>("id", 0, std::numeric_limits<uint64_t>::max()); }
void read(Fields&, Ok&) {}
void read(Fields& f, CpStatReply& m) {
  m.kind = f.code("kind", "ofd");
}
void read(Fields&, MuxClose&) {}
void read(Fields& f, MuxAck& m) { m.bytes = f.integer<uint64_t>("n", 0, std::numeric_limits<uint64_t>::max()); }
void read(Fields& f, Config& m) {
  if (const Json* c = f.object("cfg")) m.cfg = *c;
}
void read(Fields&, Go&) {}
void read(Fields& f, Log& m) { m.data = f.bytes("d"); }
void read(Fields& f, GuestExit& m) { m.code = f.integer<int>("code", 0, 255); }
void read(Fields&, Untether&) {}
void read(Fields& f, Ended& m) {
  m.code = f.integer<int>("code", 0, 255);
  m.msg = f.text("msg", kMaxText, "");
}

// Decodes m as T into r when its type is T's.
template <class T>
bool try_as(const Json& m, std::optional<Result<Request>>& r) {
  if (type_of(m) != T::kType) return false;
  auto v = decode<T>(m);
  if (v)
    r.emplace(std::move(*v));
  else
    r.emplace(std::unexpected(std::move(v.error())));
  return true;
}

template <class... Ts>
Result<Request> pick_request(const Json& m, std::variant<Unknown, Ts...>*) {
  std::optional<Result<Request>> r;
  (try_as<Ts>(m, r) || ...);
  if (r) return std::move(*r);
  return Request(Unknown{std::string(type_of(m))});
}

}  // namespace

std::string_view type_of(const Json& m) {
  if (!m.is_object()) return {};
  auto t = m.find("t");
  return t != m.end() && t->is_string() ? std::string_view(t->get_ref<const std::string&>()) : std::string_view();
}

template <class T>
Result<T> decode(const Json& m) {
  if (type_of(m) != T::kType)
    return fail(Error::protocol("expected " + std::string(T::kType) + ", got \"" + std::string(type_of(m)) + "\""));
  Fields f(m, T::kType);
  T out;
  read(f, out);
  CUBBY_TRYV(f.ok());
  return out;
}

std::string error_text(const Json& m, std::string_view fallback) {
  auto e = decode<ErrorReply>(m);
  if (!e) return e.error().message();
  return e->msg.empty() ? std::string(fallback) : std::move(e->msg);
}

Result<Request> decode_request(const Json& m) { return pick_request(m, static_cast<Request*>(nullptr)); }

// decode<T> is defined here only: one instantiation per message type.
#define CUBBY_DECODER(T) template Result<T> decode<T>(const Json&);
CUBBY_DECODER(Hello)
CUBBY_DECODER(Ping)
CUBBY_DECODER(Exec)
CUBBY_DECODER(Resize)
CUBBY_DECODER(In)
CUBBY_DECODER(InEof)
CUBBY_DECODER(Signal)
CUBBY_DECODER(ExecStatus)
CUBBY_DECODER(Attach)
CUBBY_DECODER(Kill)
CUBBY_DECODER(WatchStart)
CUBBY_DECODER(CpStat)
CUBBY_DECODER(CpPut)
CUBBY_DECODER(CpGet)
CUBBY_DECODER(CpEntry)
CUBBY_DECODER(CpData)
CUBBY_DECODER(CpEnd)
CUBBY_DECODER(ErrorReply)
CUBBY_DECODER(Pong)
CUBBY_DECODER(Started)
CUBBY_DECODER(Out)
CUBBY_DECODER(Exit)
CUBBY_DECODER(Running)
CUBBY_DECODER(Ok)
CUBBY_DECODER(CpStatReply)
CUBBY_DECODER(MuxClose)
CUBBY_DECODER(MuxAck)
CUBBY_DECODER(Config)
CUBBY_DECODER(Go)
CUBBY_DECODER(Log)
CUBBY_DECODER(GuestExit)
CUBBY_DECODER(Untether)
CUBBY_DECODER(Ended)
#undef CUBBY_DECODER

Result<void> check_command_size(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  auto kib = [](size_t n) { return std::to_string((n + 1023) / 1024) + " KiB"; };
  size_t total = 0;
  for (const auto* list : {&argv, &env}) {
    for (const auto& s : *list) {
      if (s.size() + 1 > kMaxArgBytes)
        return fail(Error::invalid(std::string(list == &argv ? "an argument" : "an environment variable") + " of " +
                                   kib(s.size() + 1) + " is over the limit of " + kib(kMaxArgBytes) +
                                   " for one string (execve's MAX_ARG_STRLEN)"));
      total += s.size() + 1 + sizeof(char*);
    }
  }
  if (total > kMaxCommandBytes)
    return fail(Error::invalid("the command and its environment take " + kib(total) + ", over cubby's limit of " +
                               kib(kMaxCommandBytes) + " (each string counted with its NUL and pointer, as execve does)"));
  return {};
}

}  // namespace cubby::proto::msg
