// `cubby cp`: docker cp's rules on top of the entry streams of copy/.
//
//   host -> box   read_tree (host) or read_tar (stdin) -> Rebase -> FrameSink
//                 ... agent session ... StreamCheck -> TreeWriter in the box
//                 (the destination RESOLVE_IN_ROOT, below it RESOLVE_BENEATH |
//                 RESOLVE_NO_SYMLINKS)
//   box -> host   agent read_tree (RESOLVE_IN_ROOT) -> FrameSink ... session
//                 ... StreamCheck -> Rebase -> TreeWriter on the host
//                 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) or a tar on stdout
// Sparse files stay sparse all the way: read_tree sends only their data
// extents, the writers leave the holes, and the tars are pax sparse.
//
// Tar exists only here: the agent stays free of libarchive (see
// agent/copy_worker.h), and the host never parses a tar the box wrote.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>

#include <functional>
#include <memory>
#include <optional>

#include "copy/tree.h"
#include "image/unpack.h"
#include "proto/launch.h"
#include "proto/messages.h"
#include "proto/transport.h"
#include "runtime/runtime.h"

namespace cubby {

using proto::Json;
namespace msg = proto::msg;

namespace {

using launch::kAgentSocket;

enum class Dest { kMissing, kDir, kOther };

// Where the copied root lands: dir/name, or with name "" its contents go
// straight into dir (the "SRC/." form into an existing directory).
struct Target {
  std::string dir, name;
};

bool contents_form(const std::string& p) { return p == "." || (p.size() >= 2 && p.compare(p.size() - 2, 2, "/.") == 0); }

std::string strip_trailing(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (p.size() >= 2 && p.compare(p.size() - 2, 2, "/.") == 0) p.resize(p.size() - 2);
  return p.empty() ? "/" : p;
}
std::string base_name(const std::string& p) {
  std::string s = strip_trailing(p);
  if (s == "/" || s == ".") return "";
  size_t slash = s.rfind('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}
std::string dir_name(const std::string& p) {
  std::string s = strip_trailing(p);
  size_t slash = s.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : s.substr(0, slash);
}

// docker cp's table: a file onto a directory goes inside it, onto a file
// replaces it, to a missing path becomes that path (its parent must exist);
// a directory onto a directory goes inside it (its contents with "SRC/."),
// to a missing path becomes it, onto a file is an error.
Result<Target> plan(bool src_dir, const std::string& src, const std::string& dst, Dest dst_state) {
  if (!src_dir && (src.back() == '/' || contents_form(src))) return fail(Error::invalid(src + ": not a directory"));
  switch (dst_state) {
    case Dest::kDir:
      if (src_dir && (contents_form(src) || base_name(src).empty())) return Target{dst, ""};
      return Target{dst, base_name(src)};
    case Dest::kOther:
      if (src_dir) return fail(Error::invalid("cannot copy a directory onto the file " + dst));
      return Target{dir_name(dst), base_name(dst)};
    case Dest::kMissing:
      if (!src_dir && dst.back() == '/') return fail(Error::not_found("destination directory " + dst + " does not exist"));
      if (base_name(dst).empty()) return fail(Error::invalid("cannot copy onto " + dst));
      return Target{dir_name(dst), base_name(dst)};
  }
  return fail(Error::internal("bad destination state"));
}

std::string under(const std::string& name, const std::string& rel) {
  if (name.empty()) return rel;
  return rel.empty() ? name : name + "/" + rel;
}

// Renames a stream's root (entry "") to the name the plan gives it, and
// everything below with it; with name "" the root is dropped and its
// contents go straight into the destination. The plan (and the sink) are
// chosen when the root arrives, since only then is its kind known for a
// box's path.
class Rebase : public copy::EntrySink {
 public:
  using Planner = std::function<Result<std::pair<std::string, copy::EntrySink*>>(const copy::Entry& root)>;
  explicit Rebase(Planner p) : plan_(std::move(p)) {}
  Result<void> entry(const copy::Entry& e) override {
    if (!inner_) {
      if (!e.path.empty()) return fail(Error::protocol("a copy stream must start with its root"));
      auto [name, sink] = CUBBY_TRY(plan_(e));
      name_ = std::move(name);
      inner_ = sink;
      if (name_.empty()) return {};  // contents only: the destination directory stays as it is
    }
    copy::Entry r = e;
    r.path = under(name_, e.path);
    if (e.kind == copy::Kind::kHardlink) r.target = under(name_, e.target);
    return inner_->entry(r);
  }
  Result<void> data(const char* d, size_t n) override { return inner_->data(d, n); }
  Result<void> finish() override {
    if (!inner_) return fail(Error::protocol("empty copy stream"));
    return inner_->finish();
  }

 private:
  Planner plan_;
  std::string name_;
  copy::EntrySink* inner_ = nullptr;
};

// --- tar on stdout / from stdin ----------------------------------------------

std::string archive_msg(struct archive* a) {
  const char* s = archive_error_string(a);
  return s ? s : "unknown libarchive error";
}

class TarSink : public copy::EntrySink {
 public:
  explicit TarSink(int fd) : a_(archive_write_new(), archive_write_free), fd_(fd) {}
  Result<void> entry(const copy::Entry& e) override {
    if (!opened_) {
      archive_write_set_format_pax_restricted(a_.get());
      if (archive_write_open_fd(a_.get(), fd_) != ARCHIVE_OK) return fail(err("open"));
      opened_ = true;
    }
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> ae(archive_entry_new(), archive_entry_free);
    archive_entry_set_pathname(ae.get(), (e.kind == copy::Kind::kDir ? e.path + "/" : e.path).c_str());
    archive_entry_set_perm(ae.get(), e.mode);
    archive_entry_set_uid(ae.get(), e.uid);
    archive_entry_set_gid(ae.get(), e.gid);
    archive_entry_set_mtime(ae.get(), e.mtime_sec, e.mtime_nsec);
    switch (e.kind) {
      case copy::Kind::kDir: archive_entry_set_filetype(ae.get(), AE_IFDIR); break;
      case copy::Kind::kFile:
        archive_entry_set_filetype(ae.get(), AE_IFREG);
        archive_entry_set_size(ae.get(), static_cast<la_int64_t>(e.size));
        // A pax sparse entry (GNU.sparse 1.0, which GNU tar and bsdtar
        // read). Without extents libarchive would write it dense, so an
        // all-hole file gets the empty one at its end (as its map has).
        for (const auto& x : e.extents)
          archive_entry_sparse_add_entry(ae.get(), static_cast<la_int64_t>(x.offset), static_cast<la_int64_t>(x.length));
        if (e.sparse && e.extents.empty()) archive_entry_sparse_add_entry(ae.get(), static_cast<la_int64_t>(e.size), 0);
        break;
      case copy::Kind::kSymlink:
        archive_entry_set_filetype(ae.get(), AE_IFLNK);
        archive_entry_set_symlink(ae.get(), e.target.c_str());
        break;
      case copy::Kind::kHardlink:
        archive_entry_set_filetype(ae.get(), AE_IFREG);
        archive_entry_set_hardlink(ae.get(), e.target.c_str());
        break;
      case copy::Kind::kFifo: archive_entry_set_filetype(ae.get(), AE_IFIFO); break;  // never read by cp
    }
    if (archive_write_header(a_.get(), ae.get()) < ARCHIVE_WARN) return fail(err("write " + e.path));
    sparse_ = e.kind == copy::Kind::kFile && e.sparse;
    if (sparse_) {
      file_ = e;
      extents_ = copy::ExtentCursor(file_.extents);
      pos_ = 0;
      left_ = copy::stream_bytes(e);
      if (left_ == 0) return end_sparse();
    }
    return {};
  }
  Result<void> data(const char* d, size_t n) override {
    if (!sparse_) return write(d, n);
    // libarchive's pax writer takes the whole file and drops the bytes of
    // its holes, so each hole is fed as zeros (skipped, never written).
    if (n > left_) return fail(Error::protocol("more data than the file's extents"));
    left_ -= n;
    CUBBY_TRYV(extents_.feed(d, n, [&](uint64_t at, const char* p, size_t k) -> Result<void> {
      CUBBY_TRYV(zeros(at - pos_));
      pos_ = at + k;
      return write(p, k);
    }));
    if (left_ == 0) return end_sparse();
    return {};
  }
  Result<void> finish() override {
    if (!opened_) return fail(Error::protocol("empty copy stream"));
    if (archive_write_close(a_.get()) != ARCHIVE_OK) return fail(err("finish"));
    return {};
  }

 private:
  Error err(const std::string& what) {
    return Error(ErrorKind::kSystem, "tar on standard output: " + what + ": " + archive_msg(a_.get()), 0);
  }
  Result<void> write(const char* d, size_t n) {
    while (n > 0) {
      la_ssize_t w = archive_write_data(a_.get(), d, n);
      if (w <= 0) return fail(err("write"));
      d += w;
      n -= static_cast<size_t>(w);
    }
    return {};
  }
  Result<void> zeros(uint64_t n) {
    static const char kZeros[copy::kDataChunk] = {};
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof kZeros));
      CUBBY_TRYV(write(kZeros, k));
      n -= k;
    }
    return {};
  }
  // The hole after the last extent.
  Result<void> end_sparse() {
    sparse_ = false;
    return zeros(file_.size - pos_);
  }

  std::unique_ptr<struct archive, int (*)(struct archive*)> a_;
  int fd_;
  bool opened_ = false;
  // The sparse file being written: its entry, where its bytes go, the file
  // offset reached, the stream bytes to come.
  bool sparse_ = false;
  copy::Entry file_;
  copy::ExtentCursor extents_;
  uint64_t pos_ = 0, left_ = 0;
};

// The data extents of a sparse tar entry (pax or GNU sparse), or nothing
// for a dense one. A map with more extents than a cp_entry carries is read
// dense instead (archive_read_data fills the holes with zeros).
Result<std::optional<std::vector<copy::Extent>>> sparse_map(archive_entry* ae, const copy::Entry& e) {
  if (archive_entry_sparse_reset(ae) == 0) return std::nullopt;
  std::vector<copy::Extent> x;
  uint64_t end = 0;
  la_int64_t off = 0, len = 0;
  while (archive_entry_sparse_next(ae, &off, &len) == ARCHIVE_OK) {
    if (len == 0) continue;  // the map's end marker
    auto o = static_cast<uint64_t>(off), l = static_cast<uint64_t>(len);
    if (off < 0 || len < 0 || o < end || o > e.size || l > e.size - o)
      return fail(Error::invalid("tar from standard input: " + e.path + ": a bad sparse map"));
    x.push_back({o, l});
    end = o + l;
  }
  if (x.size() > proto::msg::kMaxExtents) return std::nullopt;
  if (x.size() == 1 && x[0].offset == 0 && x[0].length == e.size) return std::nullopt;
  return x;
}

// A sparse entry's data blocks, which must be its map's extents in order.
Result<void> send_extents(struct archive* a, const copy::Entry& e, copy::EntrySink& sink) {
  auto bad = [&](const std::string& why) { return Error::invalid("tar from standard input: " + e.path + ": " + why); };
  copy::ExtentCursor cursor(e.extents);
  for (;;) {
    const void* b = nullptr;
    size_t n = 0;
    la_int64_t off = 0;
    int r = archive_read_data_block(a, &b, &n, &off);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(bad(archive_msg(a)));
    auto next = static_cast<uint64_t>(off);
    auto sent = cursor.feed(static_cast<const char*>(b), n, [&](uint64_t at, const char* d, size_t k) -> Result<void> {
      if (at != next) return fail(bad("data outside its sparse map"));
      next += k;
      return sink.data(d, k);
    });
    if (!sent) return fail(sent.error().kind() == ErrorKind::kProtocol ? bad("data outside its sparse map") : sent.error());
  }
  if (!cursor.at_end()) return fail(bad("is cut short"));
  return {};
}

// A tar (plain or compressed) from fd as an entry stream; entry names are
// relative to the destination directory. Devices, fifos and sockets are
// skipped (a box could not create them anyway).
Result<void> read_tar(int fd, copy::EntrySink& sink) {
  std::unique_ptr<struct archive, int (*)(struct archive*)> a(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(a.get());
  image::support_decompressors(a.get());
  auto corrupt = [&] { return Error::invalid("tar from standard input: " + archive_msg(a.get())); };
  if (archive_read_open_fd(a.get(), fd, 64 * 1024) != ARCHIVE_OK) return fail(corrupt());
  std::unique_ptr<char[]> buf(new char[copy::kDataChunk]);
  for (;;) {
    archive_entry* ae = nullptr;
    int r = archive_read_next_header(a.get(), &ae);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return fail(corrupt());
    const char* raw = archive_entry_pathname(ae);
    if (!raw) return fail(Error::invalid("tar from standard input: entry without a name"));
    copy::Entry e;
    e.path = CUBBY_TRY(copy::clean_path(raw, "archive entry"));
    image::tar_entry_meta(ae, raw, e);
    mode_t type = archive_entry_filetype(ae);
    if (const char* link = archive_entry_hardlink(ae)) {
      e.kind = copy::Kind::kHardlink;
      e.target = CUBBY_TRY(copy::clean_path(link, "hardlink target"));
      CUBBY_TRYV(sink.entry(e));
      continue;
    }
    if (type == AE_IFDIR) {
      e.kind = copy::Kind::kDir;
      CUBBY_TRYV(sink.entry(e));
    } else if (type == AE_IFLNK) {
      e.kind = copy::Kind::kSymlink;
      const char* t = archive_entry_symlink(ae);
      if (!t || !*t) return fail(Error::invalid("tar from standard input: symlink " + e.path + " without a target"));
      e.target = t;
      CUBBY_TRYV(sink.entry(e));
    } else if (type == AE_IFREG) {
      if (e.path.empty()) return fail(Error::invalid("tar from standard input: a file named \".\""));
      e.kind = copy::Kind::kFile;
      if (auto x = CUBBY_TRY(sparse_map(ae, e))) {
        e.sparse = true;
        e.extents = std::move(*x);
      }
      CUBBY_TRYV(sink.entry(e));
      if (e.sparse) {
        CUBBY_TRYV(send_extents(a.get(), e, sink));
        continue;
      }
      uint64_t left = e.size;
      while (left > 0) {
        la_ssize_t n = archive_read_data(a.get(), buf.get(), copy::kDataChunk);
        if (n < 0) return fail(corrupt());
        if (n == 0) return fail(Error::invalid("tar from standard input: " + e.path + " is cut short"));
        size_t k = static_cast<size_t>(std::min<uint64_t>(left, static_cast<uint64_t>(n)));
        CUBBY_TRYV(sink.data(buf.get(), k));
        left -= k;
      }
    }
  }
  return sink.finish();
}

Result<proto::Conn> connect_box(Runtime& rt, const store::BoxRecord& b) {
  if (b.status != store::BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  proto::UnixTransport t(rt.box_dir(b.id), kAgentSocket);
  auto conn = proto::connect_and_hello(t);
  if (!conn) return fail(conn.error().wrap("copy with box " + b.name));
  return conn;
}

}  // namespace

// A box started for one copy (docker cp works on a stopped or exited box),
// stopped again when the copy is done, whichever way it ends.
struct CopyStart {
  Runtime& rt;
  store::BoxRecord& b;
  bool started = false;
  static Result<std::unique_ptr<CopyStart>> begin(Runtime& rt, store::BoxRecord& b) {
    if (b.status == store::BoxStatus::kRemoving) return fail(Error::conflict("box " + b.name + " is being removed"));
    auto c = std::make_unique<CopyStart>(rt, b);
    c->started = CUBBY_TRY(rt.start_for_copy(b));
    return c;
  }
  CopyStart(Runtime& r, store::BoxRecord& rec) : rt(r), b(rec) {}
  ~CopyStart() {
    if (started) rt.end_copy_start(b);
  }
};

Result<void> Runtime::copy_to_box(const std::string& src, const std::string& ref, const std::string& box_path,
                                  const CopyOptions& o, int in_fd) {
  if (box_path.empty() || src.empty()) return fail(Error::invalid("empty path"));
  auto b = CUBBY_TRY(resolve(ref));
  bool from_tar = src == "-";
  struct stat st{};
  if (!from_tar) {
    int r = o.follow_links ? ::stat(src.c_str(), &st) : ::lstat(strip_trailing(src).c_str(), &st);
    if (r < 0 && errno == ENOENT) return fail(Error::not_found(src + ": no such file or directory"));
    if (r < 0) return sys_fail(src);
    // "SRC/" and "SRC/." ask for a directory: a symlink's target then.
    bool wants_dir = src.back() == '/' || contents_form(src);
    if (!o.follow_links && wants_dir && S_ISLNK(st.st_mode) && ::stat(src.c_str(), &st) < 0) return sys_fail(src);
  }
  auto running = CUBBY_TRY(CopyStart::begin(*this, b));
  auto conn = CUBBY_TRY(connect_box(*this, b));
  CUBBY_TRYV(conn.send({{"t", msg::kCpStat}, {"path", box_path}}));
  auto reply = CUBBY_TRY(conn.recv());
  Dest state = Dest::kOther;
  if (msg::type_of(reply.msg) == msg::kCpStat) {
    state = CUBBY_TRY(msg::decode<msg::CpStatReply>(reply.msg)).kind == 'd' ? Dest::kDir : Dest::kOther;
  } else if (auto e = msg::decode<msg::ErrorReply>(reply.msg); e && e->missing) {
    state = Dest::kMissing;
  } else {
    return fail(Error::conflict("box " + b.name + ": " + msg::error_text(reply.msg, "cannot stat " + box_path)));
  }
  Target to{box_path, ""};
  if (from_tar) {
    if (state != Dest::kDir) return fail(Error::invalid("box path " + box_path + " must be an existing directory to extract a tar into"));
  } else {
    to = CUBBY_TRY(plan(S_ISDIR(st.st_mode), src, box_path, state));
  }
  CUBBY_TRYV(conn.send({{"t", msg::kCpPut}, {"dir", to.dir}, {"keep_owner", o.archive}}));
  copy::FrameSink wire(conn);
  Rebase rebased([&](const copy::Entry&) -> Result<std::pair<std::string, copy::EntrySink*>> {
    return std::pair<std::string, copy::EntrySink*>{to.name, &wire};
  });
  auto sent = from_tar ? read_tar(in_fd, wire) : copy::read_tree(AT_FDCWD, src, 0, o.follow_links, rebased);
  // Our side failed: hang up (the worker stops at the cut stream). The
  // agent hung up: its reason is in the reply.
  if (!sent && !wire.peer_gone()) return fail(sent.error());
  auto done = conn.recv();
  if (!done) return fail(sent ? done.error().wrap("copy to box " + b.name) : sent.error());
  if (msg::type_of(done->msg) != msg::kOk)
    return fail(Error::conflict("copy to box " + b.name + ": " + msg::error_text(done->msg, "failed")));
  return {};
}

Result<void> Runtime::copy_from_box(const std::string& ref, const std::string& box_path, const std::string& dst,
                                    const CopyOptions& o, int out_fd) {
  if (box_path.empty() || dst.empty()) return fail(Error::invalid("empty path"));
  auto b = CUBBY_TRY(resolve(ref));
  bool to_tar = dst == "-";
  Dest state = Dest::kMissing;
  if (!to_tar) {
    struct stat st;
    if (::stat(dst.c_str(), &st) == 0) state = S_ISDIR(st.st_mode) ? Dest::kDir : Dest::kOther;
    else if (errno != ENOENT) return sys_fail(dst);
  }
  auto running = CUBBY_TRY(CopyStart::begin(*this, b));
  auto conn = CUBBY_TRY(connect_box(*this, b));
  CUBBY_TRYV(conn.send({{"t", msg::kCpGet}, {"path", box_path}, {"follow", o.follow_links}, {"one_fs", o.one_fs}}));

  std::unique_ptr<copy::EntrySink> sink;
  UniqueFd dest_dir;
  Rebase rebased([&](const copy::Entry& root) -> Result<std::pair<std::string, copy::EntrySink*>> {
    bool src_dir = root.kind == copy::Kind::kDir;
    if (to_tar) {
      if (!src_dir && (box_path.back() == '/' || contents_form(box_path)))
        return fail(Error::invalid(box_path + ": not a directory"));
      sink = std::make_unique<TarSink>(out_fd);
      return std::pair<std::string, copy::EntrySink*>{contents_form(box_path) ? "" : base_name(box_path), sink.get()};
    }
    Target to = CUBBY_TRY(plan(src_dir, box_path, dst, state));
    dest_dir.reset(::open(to.dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dest_dir) {
      if (errno == ENOENT) return fail(Error::not_found("destination directory " + to.dir + " does not exist"));
      return sys_fail(to.dir);
    }
    copy::WriterOptions w;
    w.root = dest_dir.get();
    w.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    w.shown_base = to.dir;
    w.owner = o.archive ? copy::Owner::kEntry : copy::Owner::kCaller;
    w.strip_setid = !o.archive;  // a box must not hand the caller a setuid program
    sink = std::make_unique<copy::TreeWriter>(std::move(w));
    return std::pair<std::string, copy::EntrySink*>{to.name, sink.get()};
  });
  copy::StreamCheck checked(rebased);
  auto r = copy::receive_frames(conn, checked);
  if (!r) {
    if (r.error().kind() == ErrorKind::kProtocol) return fail(r.error().wrap("copy from box " + b.name));
    return fail(r.error());
  }
  return {};
}

}  // namespace cubby
