// The state store: one SQLite database per CUBBY_HOME (<home>/cubby.db).
//
// WAL mode so readers never block the writer; a busy timeout so twenty
// concurrent CLI processes queue instead of failing; schema versioned with
// PRAGMA user_version and forward migrations. State transitions are
// compare-and-set UPDATEs (WHERE status=... AND shim_pid=...), so two
// processes reconciling the same box at once cannot both win, and a record
// is never moved off `running` while the recorded shim is the one alive.
// Deleting is one of them: a box is first moved to `removing` from the state
// its remover saw (so an `rm` that read `created` loses to a `start` that
// made it `running` meanwhile), then its directory goes, then its record,
// only ever from `removing`. A crash at any point leaves either a record
// (`ls` shows it, `rm` finishes it) or nothing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

struct sqlite3;

namespace cubby::store {

// kRemoving: being removed (its directory may be partly gone); `rm` finishes
// it, nothing starts it.
enum class BoxStatus { kCreated, kRunning, kStopped, kExited, kRemoving };
const char* to_string(BoxStatus s);
std::optional<BoxStatus> parse_status(const std::string& s);

struct BoxRecord {
  std::string id;    // 32 lowercase hex
  std::string name;  // unique (the runtime always sets one)
  std::string image;
  std::string image_id;
  BoxStatus status = BoxStatus::kCreated;
  std::optional<int> exit_code;
  std::string isolation;  // "sandbox" | "vm"
  std::string created_at, started_at, finished_at;
  std::optional<pid_t> shim_pid;
  std::optional<uint64_t> shim_start;  // /proc start time of shim_pid
  nlohmann::json config;                // the box spec (see runtime/box_spec.h)
  std::string error;                    // why it ended, when cubby knows
  bool oom_killed = false;              // the OOM killer killed a workload process in the last run
  int restart_count = 0;                // restarts by the --restart policy since the last start (Docker's RestartCount)
};

// A saved running vm box (`cubby snapshot`; proto/vm_snapshot.h): its files
// live in <home>/snapshots/<id>/, this record says what it is.
struct SnapshotRecord {
  std::string id;    // 32 lowercase hex
  std::string name;  // unique among snapshots
  std::string box_id, box_name;  // the box it was taken of (which may be gone)
  std::string image, image_id;
  std::string created_at;
  nlohmann::json config;  // the box's spec then (runtime/box_spec.h); its layers stay in use
  int64_t size = 0;       // bytes the snapshot's files take on disk
};

// For a short-lived process that opens one store and exits (the CLI): tunes
// SQLite's process-wide memory setup so opening a connection touches fewer
// fresh pages (no lookaside arena, no bulk page-cache arena; each is filled
// in eagerly and costs a page fault per 4 KiB on first use, which is most of
// what a CLI call does with them). Call before anything uses SQLite; a no-op
// afterwards. Libraries embedding cubby leave SQLite's defaults alone.
void tune_sqlite_for_short_process();

class Store {
 public:
  static Result<Store> open(const std::string& home);
  // Store::open(home)->layers_in_use(), for callers without a store open
  // (image garbage collection): a home without a database has no boxes, and
  // none is created.
  static Result<std::vector<std::string>> layers_in_use(const std::string& home);
  Store(Store&& o) noexcept;
  Store& operator=(Store&&) = delete;
  ~Store();

  // Inserts a new box; a taken name is a kConflict error.
  Result<void> insert_box(const BoxRecord& b);
  // Inserts a new box whose config[key] must differ from every other box's
  // (a user-namespace id range): `claim` gets config[key] of each record
  // that has one and returns the value for b.config[key]. It runs inside
  // the insert's write transaction (BEGIN IMMEDIATE), so a concurrent
  // create waits for this one's commit and then sees its claim: no two
  // boxes ever get the same value. The record holds it until deleted.
  using Claim = std::function<Result<nlohmann::json>(const std::vector<nlohmann::json>& taken)>;
  Result<void> insert_box_claiming(BoxRecord& b, const std::string& key, const Claim& claim);
  Result<std::optional<BoxRecord>> get_box(const std::string& id);
  Result<std::vector<BoxRecord>> list_boxes();
  // Only running boxes (what reconciliation looks at, on every CLI call).
  Result<std::vector<BoxRecord>> list_running();
  // The same with only id, shim_pid and shim_start filled in: what the
  // liveness probe needs, without decoding every running box's config.
  Result<std::vector<BoxRecord>> list_running_shims();
  // Boxes whose id starts with `prefix` (lowercase hex) or whose name equals it.
  Result<std::vector<BoxRecord>> match(const std::string& prefix_or_name);

  // The layer directories every box record names (config.layers), whatever
  // its state: what image garbage collection must keep.
  Result<std::vector<std::string>> layers_in_use();
  // The ids of every record (the orphan sweep compares box directories with them).
  Result<std::vector<std::string>> box_ids();

  Result<void> insert_snapshot(const SnapshotRecord& s);
  Result<std::vector<SnapshotRecord>> list_snapshots();
  // Snapshots whose id starts with prefix_or_name, or whose name it is.
  Result<std::vector<SnapshotRecord>> match_snapshots(const std::string& prefix_or_name);
  Result<void> remove_snapshot(const std::string& id);

  // created|stopped|exited -> running with this shim. False if the box is
  // gone, being removed or already running (another shim won).
  Result<bool> mark_running(const std::string& id, pid_t shim_pid, uint64_t shim_start);
  // mark_running for a box that is started only to serve a copy (`cp` on a
  // box that is not running, as docker cp works on an exited container):
  // the same compare-and-set, in one transaction with reading the record as
  // it was, which restore_ended() puts back once the copy is done, so the
  // box keeps its status, exit code and times. Nothing when the claim lost.
  Result<std::optional<BoxRecord>> mark_running_keeping(const std::string& id, pid_t shim_pid, uint64_t shim_start);
  // running(shim_pid, shim_start) -> `before` (status, exit code, error,
  // times, oom_killed). False if the record no longer names that shim.
  Result<bool> restore_ended(const BoxRecord& before, pid_t shim_pid, uint64_t shim_start);
  // The shim started the box again by its --restart policy: one more
  // restart, a new started_at, the last run's exit code kept. False if the
  // record no longer names that shim.
  Result<bool> mark_restarted(const std::string& id, pid_t shim_pid, uint64_t shim_start, std::optional<int> last_code);
  // running(shim_pid, shim_start) -> ended (stopped or exited, or removing
  // for a box removed on exit). False if the record no longer names that
  // shim (someone else already reconciled it).
  Result<bool> mark_ended(const std::string& id, pid_t shim_pid, uint64_t shim_start,
                          BoxStatus status, std::optional<int> exit_code, const std::string& error,
                          bool oom_killed = false);
  // The record as `seen` (status, shim_pid, shim_start) -> removing. False if
  // it changed since (a `start` made it running, it was removed) or `seen`
  // is running: stop it first. A box already `removing` may be claimed
  // again, so an `rm` can finish what a crashed one began.
  Result<bool> mark_removing(const BoxRecord& seen);
  // The end of a removal mark_removing (or mark_ended(kRemoving)) won: the
  // box directory first, then the record, so a crash in between leaves a
  // record that `rm` finishes. kConflict, touching nothing, if the record
  // is not `removing`; a record already gone (a concurrent rm) is fine.
  Result<void> finish_removal(const std::string& id, const std::string& box_dir);

  int schema_version();
  static constexpr int kSchemaVersion = 4;

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Result<void> exec(const char* sql);
  Result<void> migrate();
  std::string journal_mode();
  sqlite3* db_ = nullptr;
};

}  // namespace cubby::store
