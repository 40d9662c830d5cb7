// The state store: one SQLite database per CUBBY_HOME (<home>/cubby.db).
//
// WAL mode so readers never block the writer; a busy timeout so twenty
// concurrent CLI processes queue instead of failing; schema versioned with
// PRAGMA user_version and forward migrations. State transitions are
// compare-and-set UPDATEs (WHERE status=... AND shim_pid=...), so two
// processes reconciling the same box at once cannot both win, and a record
// is never moved off `running` while the recorded shim is the one alive.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

struct sqlite3;

namespace cubby::store {

enum class BoxStatus { kCreated, kRunning, kStopped, kExited };
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
  Store(Store&& o) noexcept;
  Store& operator=(Store&&) = delete;
  ~Store();

  // Inserts a new box; a taken name is a kConflict error.
  Result<void> insert_box(const BoxRecord& b);
  Result<std::optional<BoxRecord>> get_box(const std::string& id);
  Result<std::vector<BoxRecord>> list_boxes();
  // Only running boxes (what reconciliation looks at, on every CLI call).
  Result<std::vector<BoxRecord>> list_running();
  // The same with only id, shim_pid and shim_start filled in: what the
  // liveness probe needs, without decoding every running box's config.
  Result<std::vector<BoxRecord>> list_running_shims();
  // Boxes whose id starts with `prefix` (lowercase hex) or whose name equals it.
  Result<std::vector<BoxRecord>> match(const std::string& prefix_or_name);

  // created|stopped|exited -> running with this shim. False if the box is
  // gone or already running (another shim won).
  Result<bool> mark_running(const std::string& id, pid_t shim_pid, uint64_t shim_start);
  // running(shim_pid, shim_start) -> ended. False if the record no longer
  // names that shim (someone else already reconciled it).
  Result<bool> mark_ended(const std::string& id, pid_t shim_pid, uint64_t shim_start,
                          BoxStatus status, std::optional<int> exit_code, const std::string& error,
                          bool oom_killed = false);
  Result<bool> delete_box(const std::string& id);

  int schema_version();
  static constexpr int kSchemaVersion = 2;

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  Result<void> exec(const char* sql);
  Result<void> migrate();
  sqlite3* db_ = nullptr;
};

}  // namespace cubby::store
