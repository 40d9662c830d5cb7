#include "store/store.h"

#include <sqlite3.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "store/names.h"

namespace cubby::store {

const char* to_string(BoxStatus s) {
  switch (s) {
    case BoxStatus::kCreated: return "created";
    case BoxStatus::kRunning: return "running";
    case BoxStatus::kStopped: return "stopped";
    case BoxStatus::kExited: return "exited";
    case BoxStatus::kRemoving: return "removing";
  }
  return "?";
}

std::optional<BoxStatus> parse_status(const std::string& s) {
  if (s == "created") return BoxStatus::kCreated;
  if (s == "running") return BoxStatus::kRunning;
  if (s == "stopped") return BoxStatus::kStopped;
  if (s == "exited") return BoxStatus::kExited;
  if (s == "removing") return BoxStatus::kRemoving;
  return std::nullopt;
}

namespace {

// Migrations, applied in order; index i moves the schema from i to i+1.
const char* const kMigrations[] = {
    R"sql(
    CREATE TABLE boxes (
      id          TEXT PRIMARY KEY,
      name        TEXT NOT NULL UNIQUE,
      image       TEXT NOT NULL,
      image_id    TEXT NOT NULL,
      status      TEXT NOT NULL,
      exit_code   INTEGER,
      isolation   TEXT NOT NULL,
      created_at  TEXT NOT NULL,
      started_at  TEXT NOT NULL DEFAULT '',
      finished_at TEXT NOT NULL DEFAULT '',
      shim_pid    INTEGER,
      shim_start  INTEGER,
      config      TEXT NOT NULL,
      error       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX boxes_status ON boxes(status);
    )sql",
    // 1 -> 2: whether the OOM killer killed a workload process in the last run.
    "ALTER TABLE boxes ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0;",
    // 2 -> 3: how many times the shim restarted the box by its --restart policy since it was started.
    "ALTER TABLE boxes ADD COLUMN restart_count INTEGER NOT NULL DEFAULT 0;",
    // 3 -> 4: snapshots of running vm boxes (cubby snapshot).
    R"sql(
    CREATE TABLE snapshots (
      id          TEXT PRIMARY KEY,
      name        TEXT NOT NULL UNIQUE,
      box_id      TEXT NOT NULL,
      box_name    TEXT NOT NULL,
      image       TEXT NOT NULL,
      image_id    TEXT NOT NULL,
      created_at  TEXT NOT NULL,
      config      TEXT NOT NULL,
      size        INTEGER NOT NULL DEFAULT 0
    );
    )sql",
};

// RAII prepared statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &st_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.c_str(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  template <typename T>
  Stmt& bind(int i, const std::optional<T>& v) {
    if (v) return bind(i, static_cast<int64_t>(*v));
    sqlite3_bind_null(st_, i);
    return *this;
  }
  int step() { return sqlite3_step(st_); }
  sqlite3_stmt* get() { return st_; }
  std::string errmsg() const { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
  int rc_;
};

std::string col_text(sqlite3_stmt* st, int i) {
  auto p = sqlite3_column_text(st, i);
  return p ? reinterpret_cast<const char*>(p) : "";
}
template <typename T>
std::optional<T> col_opt(sqlite3_stmt* st, int i) {
  if (sqlite3_column_type(st, i) == SQLITE_NULL) return std::nullopt;
  return static_cast<T>(sqlite3_column_int64(st, i));
}

constexpr const char* kColumns =
    "id,name,image,image_id,status,exit_code,isolation,created_at,started_at,finished_at,"
    "shim_pid,shim_start,config,error,oom_killed,restart_count";

BoxRecord read_row(sqlite3_stmt* st) {
  BoxRecord b;
  b.id = col_text(st, 0);
  b.name = col_text(st, 1);
  b.image = col_text(st, 2);
  b.image_id = col_text(st, 3);
  b.status = parse_status(col_text(st, 4)).value_or(BoxStatus::kExited);
  b.exit_code = col_opt<int>(st, 5);
  b.isolation = col_text(st, 6);
  b.created_at = col_text(st, 7);
  b.started_at = col_text(st, 8);
  b.finished_at = col_text(st, 9);
  b.shim_pid = col_opt<pid_t>(st, 10);
  b.shim_start = col_opt<uint64_t>(st, 11);
  b.config = nlohmann::json::parse(col_text(st, 12), nullptr, false);
  if (b.config.is_discarded()) b.config = nlohmann::json::object();
  b.error = col_text(st, 13);
  b.oom_killed = sqlite3_column_int(st, 14) != 0;
  b.restart_count = sqlite3_column_int(st, 15);
  return b;
}

Error db_error(sqlite3* db, const std::string& what) {
  return Error(ErrorKind::kSystem, "state store: " + what + ": " + sqlite3_errmsg(db));
}

}  // namespace

void tune_sqlite_for_short_process() {
  // Each returns SQLITE_MISUSE once SQLite is initialised: then nothing changes.
  (void)sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0);
  (void)sqlite3_config(SQLITE_CONFIG_PAGECACHE, nullptr, 0, 0);
  (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

Result<Store> Store::open(const std::string& home) {
  CUBBY_TRYV(make_private_dir(home));
  std::string path = home + "/cubby.db";
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return fail(Error(ErrorKind::kSystem, "open state store " + path + ": " + m));
  }
  Store s(db);
  // The records hold secrets (a box's -e values): the owner's alone. SQLite
  // has just created the file 0644 (less the umask) if it was missing, and
  // makes -wal and -shm (on first use, below) with the database's mode, so
  // this covers all three, and closes those an older cubby left readable.
  for (const char* suffix : {"", "-wal", "-shm"}) CUBBY_TRYV(make_private(path + suffix));
  // The busy timeout is a backstop for lock waits between processes.
  sqlite3_busy_timeout(db, 30000);
  // WAL is a property of the file, set once. Setting it needs the
  // database's exclusive lock, and two connections of a new home doing so at
  // once can meet in SQLite's lock upgrade, where one gets SQLITE_BUSY
  // without its busy handler being asked (measured: 1 in 3 runs of 8
  // processes opening a fresh home). So a home's first opens take turns
  // under a file lock; every later open only reads the mode.
  if (s.journal_mode() != "wal") {
    UniqueFd lock(::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock) return sys_fail("open " + path + ".lock");
    while (::flock(lock.get(), LOCK_EX) < 0)
      if (errno != EINTR) return sys_fail("lock " + path + ".lock");
    CUBBY_TRYV(s.exec("PRAGMA journal_mode=WAL"));
  }
  CUBBY_TRYV(s.exec("PRAGMA synchronous=NORMAL"));
  CUBBY_TRYV(s.exec("PRAGMA foreign_keys=ON"));
  CUBBY_TRYV(s.migrate());
  return s;
}

Store::Store(Store&& o) noexcept : db_(std::exchange(o.db_, nullptr)) {}
Store::~Store() {
  if (db_) sqlite3_close(db_);
}

Result<void> Store::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : "?";
    sqlite3_free(err);
    return fail(Error(ErrorKind::kSystem, std::string("state store: ") + m));
  }
  return {};
}

std::string Store::journal_mode() {
  Stmt st(db_, "PRAGMA journal_mode");
  return st.step() == SQLITE_ROW ? col_text(st.get(), 0) : std::string();
}

int Store::schema_version() {
  Stmt st(db_, "PRAGMA user_version");
  return st.step() == SQLITE_ROW ? sqlite3_column_int(st.get(), 0) : -1;
}

Result<void> Store::migrate() {
  constexpr int target = static_cast<int>(std::size(kMigrations));
  static_assert(target == kSchemaVersion);
  if (schema_version() == target) return {};  // the fast path: no write lock
  // BEGIN IMMEDIATE takes the write lock first, so two processes migrating
  // a fresh home serialise and the second sees the work done.
  CUBBY_TRYV(exec("BEGIN IMMEDIATE"));
  int v = schema_version();
  if (v > target) {
    (void)exec("ROLLBACK");
    return fail(Error::conflict("state store schema " + std::to_string(v) +
                                " is newer than this cubby (" + std::to_string(target) + ")"));
  }
  for (; v < target; ++v) {
    auto r = exec(kMigrations[v]);
    if (!r) {
      (void)exec("ROLLBACK");
      return r;
    }
  }
  CUBBY_TRYV(exec(("PRAGMA user_version=" + std::to_string(target)).c_str()));
  return exec("COMMIT");
}

Result<void> Store::insert_box(const BoxRecord& b) {
  Stmt st(db_,
          "INSERT INTO boxes(id,name,image,image_id,status,exit_code,isolation,created_at,config) "
          "VALUES(?,?,?,?,?,?,?,?,?)");
  st.bind(1, b.id).bind(2, b.name).bind(3, b.image).bind(4, b.image_id)
      .bind(5, std::string(to_string(b.status))).bind(6, b.exit_code).bind(7, b.isolation)
      .bind(8, b.created_at).bind(9, b.config.dump());
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT)
    return fail(Error::conflict("the name \"" + b.name + "\" is already in use"));
  if (rc != SQLITE_DONE) return fail(db_error(db_, "insert box"));
  return {};
}

Result<void> Store::insert_box_claiming(BoxRecord& b, const std::string& key, const Claim& claim) {
  CUBBY_TRYV(exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> Result<void> {
    const std::string where = "$." + key;
    Stmt st(db_, "SELECT json_extract(config, ?) FROM boxes WHERE json_type(config, ?) IS NOT NULL");
    st.bind(1, where).bind(2, where);
    std::vector<nlohmann::json> taken;
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) {
      // json_extract gives an object or array as JSON text, a scalar as itself.
      std::string text = col_text(st.get(), 0);
      auto v = nlohmann::json::parse(text, nullptr, false);
      taken.push_back(v.is_discarded() ? nlohmann::json(text) : std::move(v));
    }
    if (rc != SQLITE_DONE) return fail(db_error(db_, "read the boxes' " + key));
    b.config[key] = CUBBY_TRY(claim(taken));
    return insert_box(b);
  };
  auto r = body();
  if (r) r = exec("COMMIT");
  if (!r) (void)exec("ROLLBACK");
  return r;
}

Result<std::optional<BoxRecord>> Store::get_box(const std::string& id) {
  Stmt st(db_, (std::string("SELECT ") + kColumns + " FROM boxes WHERE id=?").c_str());
  st.bind(1, id);
  int rc = st.step();
  if (rc == SQLITE_ROW) return std::optional<BoxRecord>(read_row(st.get()));
  if (rc == SQLITE_DONE) return std::optional<BoxRecord>();
  return fail(db_error(db_, "get box"));
}

namespace {
Result<std::vector<BoxRecord>> select_boxes(sqlite3* db, const char* where_order, const char* what) {
  Stmt st(db, (std::string("SELECT ") + kColumns + " FROM boxes " + where_order).c_str());
  std::vector<BoxRecord> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_row(st.get()));
  if (rc != SQLITE_DONE) return fail(db_error(db, what));
  return out;
}
}  // namespace

Result<std::vector<BoxRecord>> Store::list_boxes() {
  return select_boxes(db_, "ORDER BY created_at, rowid", "list boxes");
}

Result<std::vector<BoxRecord>> Store::list_running() {
  return select_boxes(db_, "WHERE status='running'", "list running boxes");
}

Result<std::vector<BoxRecord>> Store::list_running_shims() {
  Stmt st(db_, "SELECT id,shim_pid,shim_start FROM boxes WHERE status='running'");
  std::vector<BoxRecord> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    BoxRecord b;
    b.id = col_text(st.get(), 0);
    b.status = BoxStatus::kRunning;
    b.shim_pid = col_opt<pid_t>(st.get(), 1);
    b.shim_start = col_opt<uint64_t>(st.get(), 2);
    out.push_back(std::move(b));
  }
  if (rc != SQLITE_DONE) return fail(db_error(db_, "list running boxes"));
  return out;
}

Result<std::vector<BoxRecord>> Store::match(const std::string& key) {
  // Ids are lowercase hex, so a prefix range scan is exact: [key, key + '~').
  Stmt st(db_, (std::string("SELECT ") + kColumns +
                " FROM boxes WHERE (id >= ?1 AND id < ?2) OR name = ?3").c_str());
  st.bind(1, key).bind(2, key + "~").bind(3, key);
  std::vector<BoxRecord> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_row(st.get()));
  if (rc != SQLITE_DONE) return fail(db_error(db_, "find box"));
  return out;
}

Result<bool> Store::mark_running(const std::string& id, pid_t pid, uint64_t start) {
  Stmt st(db_,
          "UPDATE boxes SET status='running', shim_pid=?, shim_start=?, started_at=?, oom_killed=0, restart_count=0, "
          "finished_at='', exit_code=NULL, error='' WHERE id=? AND status NOT IN ('running','removing')");
  st.bind(1, static_cast<int64_t>(pid)).bind(2, static_cast<int64_t>(start))
      .bind(3, now_rfc3339()).bind(4, id);
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "mark box running"));
  return sqlite3_changes(db_) == 1;
}

Result<std::optional<BoxRecord>> Store::mark_running_keeping(const std::string& id, pid_t pid, uint64_t start) {
  CUBBY_TRYV(exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> Result<std::optional<BoxRecord>> {
    auto before = CUBBY_TRY(get_box(id));
    if (!before || !CUBBY_TRY(mark_running(id, pid, start))) return std::optional<BoxRecord>();
    return before;
  };
  auto r = body();
  if (r) {
    if (auto c = exec("COMMIT"); !c) r = fail(c.error());
  }
  if (!r) (void)exec("ROLLBACK");
  return r;
}

Result<bool> Store::restore_ended(const BoxRecord& b, pid_t pid, uint64_t start) {
  Stmt st(db_,
          "UPDATE boxes SET status=?, exit_code=?, error=?, started_at=?, finished_at=?, shim_pid=NULL, "
          "shim_start=NULL, oom_killed=?, restart_count=? WHERE id=? AND status='running' AND shim_pid=? AND shim_start=?");
  st.bind(1, std::string(to_string(b.status))).bind(2, b.exit_code).bind(3, b.error).bind(4, b.started_at)
      .bind(5, b.finished_at).bind(6, int64_t{b.oom_killed}).bind(7, int64_t{b.restart_count}).bind(8, b.id)
      .bind(9, static_cast<int64_t>(pid)).bind(10, static_cast<int64_t>(start));
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "restore box record"));
  return sqlite3_changes(db_) == 1;
}

Result<bool> Store::mark_restarted(const std::string& id, pid_t pid, uint64_t start, std::optional<int> last_code) {
  Stmt st(db_,
          "UPDATE boxes SET restart_count=restart_count+1, started_at=?, exit_code=?, oom_killed=0 "
          "WHERE id=? AND status='running' AND shim_pid=? AND shim_start=?");
  st.bind(1, now_rfc3339()).bind(2, last_code).bind(3, id).bind(4, static_cast<int64_t>(pid))
      .bind(5, static_cast<int64_t>(start));
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "mark box restarted"));
  return sqlite3_changes(db_) == 1;
}

Result<bool> Store::mark_ended(const std::string& id, pid_t pid, uint64_t start, BoxStatus status,
                               std::optional<int> exit_code, const std::string& error, bool oom_killed) {
  Stmt st(db_,
          "UPDATE boxes SET status=?, exit_code=?, error=?, finished_at=?, shim_pid=NULL, "
          "shim_start=NULL, oom_killed=? WHERE id=? AND status='running' AND shim_pid=? AND shim_start=?");
  st.bind(1, std::string(to_string(status))).bind(2, exit_code).bind(3, error)
      .bind(4, now_rfc3339()).bind(5, int64_t{oom_killed}).bind(6, id).bind(7, static_cast<int64_t>(pid))
      .bind(8, static_cast<int64_t>(start));
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "mark box ended"));
  return sqlite3_changes(db_) == 1;
}

Result<bool> Store::mark_removing(const BoxRecord& seen) {
  if (seen.status == BoxStatus::kRunning) return false;
  // IS, not =: an ended box's shim fields are NULL, and NULL = NULL is not true.
  Stmt st(db_,
          "UPDATE boxes SET status='removing' WHERE id=? AND status=? AND shim_pid IS ? AND shim_start IS ? "
          "AND status!='running'");
  st.bind(1, seen.id).bind(2, std::string(to_string(seen.status))).bind(3, seen.shim_pid).bind(4, seen.shim_start);
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "mark box removing"));
  return sqlite3_changes(db_) == 1;
}

Result<void> Store::finish_removal(const std::string& id, const std::string& box_dir) {
  // Only what a won mark_removing claimed: never the directory of a box in use.
  auto b = CUBBY_TRY(get_box(id));
  if (b && b->status != BoxStatus::kRemoving)
    return fail(Error::conflict("box " + b->name + " is " + to_string(b->status) + ", not being removed"));
  CUBBY_TRYV(remove_tree(box_dir));
  Stmt st(db_, "DELETE FROM boxes WHERE id=? AND status='removing'");
  st.bind(1, id);
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "delete box"));
  // Its name file, unless a box made since has the name (box_dir is
  // <home>/boxes/<id>). After the record: a crash between leaves a stale
  // file, which exec_direct checks against exec.json and ignores.
  if (size_t at = box_dir.rfind("/boxes/"); b && at != std::string::npos) {
    const std::string f = name_file(box_dir.substr(0, at), b->name);
    if (read_file(f, 64).value_or("") == id) ::unlink(f.c_str());
  }
  return {};  // none deleted: a concurrent `rm` finished first
}

namespace {
Result<std::vector<std::string>> select_strings(sqlite3* db, const char* sql, const char* what) {
  Stmt st(db, sql);
  std::vector<std::string> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(col_text(st.get(), 0));
  if (rc != SQLITE_DONE) return fail(db_error(db, what));
  return out;
}
}  // namespace

Result<std::vector<std::string>> Store::layers_in_use() {
  // A config that is not JSON fails the whole query: the caller then keeps
  // every layer rather than guess.
  // A snapshot's layers stay too: a box made from it boots from them when
  // it is started again.
  return select_strings(db_,
                        "SELECT j.value FROM boxes, json_each(boxes.config, '$.layers') AS j WHERE j.type='text' "
                        "UNION SELECT j.value FROM snapshots, json_each(snapshots.config, '$.layers') AS j "
                        "WHERE j.type='text'",
                        "list the layers boxes use");
}

Result<std::vector<std::string>> Store::layers_in_use(const std::string& home) {
  struct stat st;
  if (::stat((home + "/cubby.db").c_str(), &st) < 0) {
    if (errno == ENOENT) return std::vector<std::string>{};
    return sys_fail("stat " + home + "/cubby.db");
  }
  auto db = CUBBY_TRY(open(home));
  return db.layers_in_use();
}

namespace {
constexpr const char* kSnapshotColumns = "id,name,box_id,box_name,image,image_id,created_at,config,size";

Result<std::vector<SnapshotRecord>> read_snapshots(sqlite3* db, Stmt& st) {
  std::vector<SnapshotRecord> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    SnapshotRecord r;
    r.id = col_text(st.get(), 0);
    r.name = col_text(st.get(), 1);
    r.box_id = col_text(st.get(), 2);
    r.box_name = col_text(st.get(), 3);
    r.image = col_text(st.get(), 4);
    r.image_id = col_text(st.get(), 5);
    r.created_at = col_text(st.get(), 6);
    r.config = nlohmann::json::parse(col_text(st.get(), 7), nullptr, false);
    if (r.config.is_discarded()) r.config = nlohmann::json::object();
    r.size = sqlite3_column_int64(st.get(), 8);
    out.push_back(std::move(r));
  }
  if (rc != SQLITE_DONE) return fail(db_error(db, "list snapshots"));
  return out;
}
}  // namespace

Result<void> Store::insert_snapshot(const SnapshotRecord& r) {
  Stmt st(db_,
          "INSERT INTO snapshots(id,name,box_id,box_name,image,image_id,created_at,config,size) "
          "VALUES(?,?,?,?,?,?,?,?,?)");
  st.bind(1, r.id).bind(2, r.name).bind(3, r.box_id).bind(4, r.box_name).bind(5, r.image).bind(6, r.image_id)
      .bind(7, r.created_at).bind(8, r.config.dump()).bind(9, r.size);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT) return fail(Error::conflict("a snapshot named \"" + r.name + "\" exists already"));
  if (rc != SQLITE_DONE) return fail(db_error(db_, "insert snapshot"));
  return {};
}

Result<std::vector<SnapshotRecord>> Store::list_snapshots() {
  Stmt st(db_, (std::string("SELECT ") + kSnapshotColumns + " FROM snapshots ORDER BY created_at, id").c_str());
  return read_snapshots(db_, st);
}

Result<std::vector<SnapshotRecord>> Store::match_snapshots(const std::string& key) {
  Stmt st(db_, (std::string("SELECT ") + kSnapshotColumns +
                " FROM snapshots WHERE (id >= ?1 AND id < ?2) OR name = ?3").c_str());
  st.bind(1, key).bind(2, key + "~").bind(3, key);
  return read_snapshots(db_, st);
}

Result<void> Store::remove_snapshot(const std::string& id) {
  Stmt st(db_, "DELETE FROM snapshots WHERE id=?");
  st.bind(1, id);
  if (st.step() != SQLITE_DONE) return fail(db_error(db_, "remove snapshot"));
  return {};
}

Result<std::vector<std::string>> Store::box_ids() { return select_strings(db_, "SELECT id FROM boxes", "list box ids"); }

}  // namespace cubby::store
