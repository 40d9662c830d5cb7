// Memory snapshots of running vm boxes (issue 14): `cubby snapshot`,
// `snapshots`, `rm-snapshot`, `run --from` and `fork`. The box's shim saves
// it (proto/vm_snapshot.h: the guest quiesces its session stream, QEMU
// writes its migration stream, the box disk is copied while the vCPUs are
// stopped); a copy is a new box record whose first start is a restore of
// that directory instead of a boot (ShimConfig::restore_dir).
//
// A snapshot is <home>/snapshots/<id>/ plus a store record. It is written
// under a name of its own (.partial-<pid>-<id>, swept when that pid is
// gone) and renamed into place after its record exists, so a listed
// snapshot is whole unless the disk lost it, and a crash leaves at most a
// partial directory of a dead process. `fork` uses a partial directory of
// its own and never records it.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/log.h"
#include "proto/launch.h"
#include "proto/messages.h"
#include "proto/transport.h"
#include "proto/vm_snapshot.h"
#include "runtime/runtime.h"

namespace cubby {

using proto::Json;
using store::BoxRecord;
using store::BoxStatus;
using store::SnapshotRecord;
namespace msg = proto::msg;
namespace vm_snapshot = proto::vm_snapshot;

namespace {

std::string snapshots_root(const std::string& home) { return home + "/snapshots"; }

std::string partial_dir(const std::string& home, const std::string& id) {
  return snapshots_root(home) + "/.partial-" + std::to_string(::getpid()) + "-" + id;
}

// Bytes the files of a directory take on disk (sparse files count what
// they hold, a hard link what it is).
int64_t disk_usage(const std::string& dir) {
  int64_t total = 0;
  for (const auto& n : list_dir(dir)) {
    struct stat st;
    if (::lstat((dir + "/" + n).c_str(), &st) == 0 && S_ISREG(st.st_mode)) total += static_cast<int64_t>(st.st_blocks) * 512;
  }
  return total;
}

// Partial directories whose process is gone (a snapshot or fork killed
// half-way). A pid reused since is left alone: the next sweep after it
// ends takes the directory.
void sweep_partials(const std::string& home) {
  for (const auto& n : list_dir(snapshots_root(home))) {
    if (n.rfind(".partial-", 0) != 0) continue;
    pid_t pid = static_cast<pid_t>(std::atol(n.c_str() + 9));
    if (pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM)) continue;
    (void)remove_tree(snapshots_root(home) + "/" + n);
  }
}

// A default snapshot name, Docker-like in spirit: the box's name and a
// short id (unique enough, and a later `rm-snapshot` can use either).
std::string default_name(const BoxRecord& b, const std::string& id) { return b.name + "-" + id.substr(0, 8); }

bool valid_snapshot_name(const std::string& n) {
  if (n.empty() || n.size() > 128 || n[0] == '.' || n[0] == '-') return false;
  return n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == std::string::npos;
}

}  // namespace

Result<void> Runtime::take_snapshot(const BoxRecord& b, const std::string& dir) {
  if (b.status != BoxStatus::kRunning) return fail(Error::conflict("box " + b.name + " is not running"));
  if (b.isolation != "vm")
    return fail(Error::invalid("box " + b.name + " is a sandbox box: only vm boxes (--isolation vm) can be "
                               "snapshotted (a sandbox's memory is the host kernel's)"));
  if (is_paused(b)) return fail(Error::conflict("box " + b.name + " is paused: unpause it first"));
  sweep_partials(home_);
  CUBBY_TRYV(mkdir_p(snapshots_root(home_), 0700));
  CUBBY_TRYV(mkdir_p(dir, 0700));
  auto asked = [&]() -> Result<void> {
    auto fd = CUBBY_TRY(proto::UnixTransport(box_dir(b.id), launch::kAgentSocket).connect());
    proto::Conn conn(std::move(fd));
    CUBBY_TRYV(conn.send({{"t", vm_snapshot::kRequest}, {"dir", dir}}));
    auto f = conn.recv();
    if (!f) return fail(f.error().wrap("snapshot box " + b.name));
    if (msg::type_of(f->msg) != msg::kOk)
      return fail(Error(ErrorKind::kSystem, "snapshot box " + b.name + ": " + msg::error_text(f->msg, "the shim refused")));
    return {};
  }();
  if (!asked) (void)remove_tree(dir);
  return asked;
}

Result<SnapshotRecord> Runtime::snapshot(const std::string& ref, const std::string& name) {
  auto b = CUBBY_TRY(resolve(ref));
  if (!name.empty() && !valid_snapshot_name(name))
    return fail(Error::invalid("invalid snapshot name \"" + name + "\" (letters, digits, '_', '.', '-'; up to 128)"));
  SnapshotRecord s;
  s.id = random_id();
  s.name = name.empty() ? default_name(b, s.id) : name;
  if (!CUBBY_TRY(db_.match_snapshots(s.name)).empty())
    return fail(Error::conflict("a snapshot named \"" + s.name + "\" exists already"));
  s.box_id = b.id;
  s.box_name = b.name;
  s.image = b.image;
  s.image_id = b.image_id;
  s.config = b.config;
  const std::string tmp = partial_dir(home_, s.id), dir = snapshots_root(home_) + "/" + s.id;
  CUBBY_TRYV(take_snapshot(b, tmp));
  s.size = disk_usage(tmp);
  s.created_at = now_rfc3339();
  // The record before the rename: a crash between them leaves a record
  // whose files are gone (its restore says so, rm-snapshot removes it),
  // never a directory nobody knows of.
  if (auto r = db_.insert_snapshot(s); !r) {
    (void)remove_tree(tmp);
    return std::unexpected(r.error());
  }
  if (::rename(tmp.c_str(), dir.c_str()) < 0) {
    auto e = Error::sys("rename " + tmp);
    (void)remove_tree(tmp);
    (void)db_.remove_snapshot(s.id);
    return fail(e);
  }
  return s;
}

Result<std::vector<SnapshotRecord>> Runtime::snapshots() { return db_.list_snapshots(); }

Json Runtime::snapshot_json(const SnapshotRecord& s) {
  return {{"id", s.id},       {"name", s.name},   {"box_id", s.box_id},         {"box_name", s.box_name},
          {"image", s.image}, {"image_id", s.image_id}, {"created_at", s.created_at}, {"size", s.size}};
}

Result<SnapshotRecord> Runtime::resolve_snapshot(const std::string& ref) {
  if (ref.empty()) return fail(Error::invalid("empty snapshot reference"));
  auto found = CUBBY_TRY(db_.match_snapshots(ref));
  for (auto& s : found)
    if (s.name == ref || s.id == ref) return s;
  bool hex = ref.find_first_not_of("0123456789abcdef") == std::string::npos;
  if (!hex || ref.size() < 4 || found.empty()) return fail(Error::not_found("no such snapshot: " + ref));
  if (found.size() > 1)
    return fail(Error::invalid("snapshot prefix " + ref + " is ambiguous (" + std::to_string(found.size()) +
                               " snapshots match)"));
  return found[0];
}

Result<void> Runtime::remove_snapshot(const std::string& ref) {
  auto s = CUBBY_TRY(resolve_snapshot(ref));
  // The record first: a box starting from it meanwhile either read it (and
  // its restore opens the files before they go, or fails saying so) or
  // finds no such snapshot.
  CUBBY_TRYV(db_.remove_snapshot(s.id));
  CUBBY_TRYV(remove_tree(snapshots_root(home_) + "/" + s.id));
  // The snapshot may have held the last use of its image's layers.
  if (!s.image_id.empty() && !images_.resolve("sha256:" + s.image_id))
    if (auto gc = images_.collect_garbage(); !gc) LOG_WARN("image garbage collection: {}", gc.error().message());
  return {};
}

Result<std::vector<BoxRecord>> Runtime::start_copies(const BoxRecord& like, const Json& config, const std::string& dir,
                                                     int n, const std::string& name, bool keep_ports) {
  if (n < 1 || n > 64) return fail(Error::invalid("want 1 to 64 copies, not " + std::to_string(n)));
  if (!name.empty() && n > 1) return fail(Error::invalid("--name names one box: give it with a single copy"));
  if (!name.empty() && !CUBBY_TRY(db_.match(name)).empty())
    return fail(Error::conflict("the name \"" + name + "\" is already in use"));
  const auto spec_of_like = config.get<BoxSpec>();
  std::vector<BoxRecord> boxes;
  auto drop_all = [&] {
    for (auto& b : boxes) (void)remove(b.id, true);
  };
  for (int i = 0; i < n; ++i) {
    BoxRecord b;
    b.id = random_id();
    b.name = name.empty() ? "box-" + b.id.substr(0, 12) : name;
    b.image = like.image;
    b.image_id = like.image_id;
    b.isolation = "vm";
    b.created_at = now_rfc3339();
    BoxSpec spec = spec_of_like;
    // The box's own hostname unless the original's was given by the user
    // (Docker's default is the short id).
    if (spec.hostname == like.id.substr(0, 12)) spec.hostname = b.id.substr(0, 12);
    if (!keep_ports) spec.ports.clear();
    b.config = spec;
    if (auto r = db_.insert_box(b); !r) {
      drop_all();
      return std::unexpected(r.error());
    }
    boxes.push_back(b);
    CUBBY_TRYV(mkdir_p(box_dir(b.id), 0700));
    write_exec_index(b);
  }
  // All shims first, then their verdicts: the restores run side by side.
  std::vector<LaunchedShim> shims;
  std::optional<Error> failed;
  for (auto& b : boxes) {
    auto s = launch_start(b, false, false, false, dir);
    if (!s) {
      failed = s.error();
      break;
    }
    shims.push_back(std::move(*s));
  }
  for (size_t i = 0; i < shims.size(); ++i) {
    auto r = await_start(boxes[i], shims[i], false);
    if (!r && !failed) failed = r.error();
    if (r && r->ended && !failed)
      failed = Error::internal("box " + boxes[i].name + " ended as it was restored" +
                               (r->error.empty() ? " (exit " + std::to_string(r->code) + ")" : ": " + r->error));
  }
  if (failed) {
    drop_all();
    return fail(*failed);
  }
  for (auto& b : boxes) b = CUBBY_TRY(resolve(b.id));
  return boxes;
}

Result<std::vector<BoxRecord>> Runtime::run_from_snapshot(const std::string& ref, int n, const std::string& name) {
  auto s = CUBBY_TRY(resolve_snapshot(ref));
  const std::string dir = snapshots_root(home_) + "/" + s.id;
  if (::access((dir + "/" + vm_snapshot::kStateFile).c_str(), R_OK) != 0)
    return fail(Error::not_found("snapshot " + s.name + " has lost its files (" + dir + "): remove it"));
  BoxRecord like;
  like.id = s.box_id;
  like.image = s.image;
  like.image_id = s.image_id;
  return start_copies(like, s.config, dir, n, name, /*keep_ports=*/true);
}

Result<std::vector<BoxRecord>> Runtime::fork(const std::string& ref, int n) {
  auto b = CUBBY_TRY(resolve(ref));
  if (n < 1 || n > 64) return fail(Error::invalid("want 1 to 64 copies, not " + std::to_string(n)));
  const std::string dir = partial_dir(home_, random_id());
  CUBBY_TRYV(take_snapshot(b, dir));
  auto boxes = start_copies(b, b.config, dir, n, "", /*keep_ports=*/false);
  // Each restore read the whole stream before its box was ready, and the
  // disks were copied: the snapshot is no one's now.
  (void)remove_tree(dir);
  return boxes;
}

}  // namespace cubby
