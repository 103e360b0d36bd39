//! The run's SQLite database: items, their results and attempts, progress and limiter state.
//!
//! Owns the schema and every read and write of the db. Reads go through [`Store`]; during a
//! run all writes go through one [`Writer`] thread that groups whatever has queued up into
//! one transaction, so thousands of results per second cost a few commits.
//!
//! Invariants: an item becomes `done` (or `failed`) in the same transaction that stores its
//! result; the db holds the config snapshot with `${VAR}` references, never resolved
//! secrets; a work list is imported once and a different work list for the same db is
//! refused by its fingerprint.

pub mod claim;
mod importing;
mod queue;

pub use importing::{DuplicateId, ImportRow, Importing, importing_path};

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::limiter::{BucketState, BucketUsage};
use crate::scheduler::Lane;
use crate::session::RunState;
use crate::worklist::Item;

mod batch;
pub use batch::{Applied, BatchRow, BatchSeen, BatchState, LineApply};
mod inputs;
pub use inputs::input_fields;
mod series;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    line INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    tokens INTEGER,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    body TEXT,
    usage TEXT,
    latency_ms INTEGER,
    error TEXT,
    finished_at_ms INTEGER,
    class INTEGER NOT NULL DEFAULT 0,
    tenant INTEGER NOT NULL DEFAULT 0,
    grp INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    http_status INTEGER,
    outcome TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_seq ON attempts (seq);
CREATE TABLE IF NOT EXISTS item_steps (
    seq INTEGER PRIMARY KEY,
    progress TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS item_pages (
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    page INTEGER NOT NULL,
    items TEXT NOT NULL,
    PRIMARY KEY (seq, step, page)
);
CREATE TABLE IF NOT EXISTS control (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    paused INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    elapsed_ms INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    limits TEXT NOT NULL,
    limiter_state TEXT NOT NULL
);
";

/// SQLite `application_id` of a ratebound db ("RBND"): tells it from any other SQLite file.
pub const APPLICATION_ID: i32 = 0x5242_4E44;
/// The schema version this build writes (SQLite `user_version`); a db with a higher one was
/// written by a newer ratebound and is refused.
pub const SCHEMA_VERSION: i32 = 1;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("{path}: database error while {doing}")]
    Sqlite {
        /// The db path.
        path: PathBuf,
        /// What the store was doing.
        doing: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// `status` or `export` was pointed at a db that does not exist.
    #[error(
        "{path}: no such run database\n  hint: pass the --db that `ratebound run` created (by default <worklist stem>.ratebound.db)"
    )]
    Missing {
        /// The db path.
        path: PathBuf,
    },
    /// The db belongs to a different work list.
    #[error(
        "{db}: this database belongs to a different work list (`{was}`, fingerprint {was_fp:.12}); `{now}` has fingerprint {now_fp:.12}\n  hint: pass --db with a new file to start a separate run, or restore the original work list to continue"
    )]
    WorklistChanged {
        /// The db path.
        db: PathBuf,
        /// The work list the db was created for.
        was: String,
        /// Its fingerprint.
        was_fp: String,
        /// The work list given now.
        now: String,
        /// Its fingerprint.
        now_fp: String,
    },
    /// Another runner holds the db.
    #[error(
        "{db}: another ratebound is running this db ({})\n  hint: wait for it to finish, stop it with Ctrl-C (or `kill PID`), or watch it with `ratebound status --db {db}`; two runs on one db would send every item twice",
        claim::describe(holder.as_ref())
    )]
    Claimed {
        /// The db path.
        db: PathBuf,
        /// Who holds it, if it has said so yet.
        holder: Option<claim::Holder>,
    },
    /// The lock file beside the db cannot be created or locked.
    #[error(
        "{path}: cannot lock the run's database\n  hint: the folder must exist and be writable; ratebound keeps `<db>.lock` beside the db"
    )]
    Lock {
        /// The lock file's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a ratebound db (another program's SQLite file, or not SQLite).
    #[error(
        "{path}: not a ratebound database; left untouched\n  hint: pass the --db that `ratebound run` created (by default <worklist stem>.ratebound.db)"
    )]
    Foreign {
        /// The file's path.
        path: PathBuf,
    },
    /// The db was written by a newer ratebound.
    #[error(
        "{path}: written by a newer ratebound (schema version {found}; this one reads up to {SCHEMA_VERSION})\n  hint: use the ratebound that created it, or start a separate run with a new --db"
    )]
    Newer {
        /// The db path.
        path: PathBuf,
        /// Its schema version.
        found: i32,
    },
    /// The import's temporary file of id hashes could not be written or read.
    #[error(
        "{path}: checking the work list's ids for repeats in a temporary file failed\n  hint: set TMPDIR to a writable directory with room (8 bytes per item)"
    )]
    Spill {
        /// The db path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The import's file beside the db could not be written, synced or put in its place.
    #[error(
        "{path}: {doing} failed\n  hint: the db's folder must be writable, with room for the imported list (about 1.5 times the work list's size)"
    )]
    ImportFile {
        /// The import file's path.
        path: PathBuf,
        /// What the import was doing.
        doing: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread stopped after an error.
    #[error("{path}: the database writer stopped: {message}")]
    WriterGone {
        /// The db path.
        path: PathBuf,
        /// What went wrong in the writer.
        message: String,
    },
}

impl StoreError {
    /// True when the user pointed ratebound at the wrong db or work list (exit 2, nothing
    /// sent), as opposed to a database that failed.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StoreError::WorklistChanged { .. }
                | StoreError::Missing { .. }
                | StoreError::Claimed { .. }
                | StoreError::Foreign { .. }
                | StoreError::Newer { .. }
        )
    }
}

/// What a finished attempt or item result is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Not finished yet.
    Pending,
    /// Succeeded; the result is stored.
    Done,
    /// Failed permanently; the last response is stored.
    Failed,
}

impl ItemStatus {
    fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
        }
    }
}

/// One attempt (one HTTP request) as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    /// The item's sequence number.
    pub seq: u64,
    /// 1-based attempt number for this item.
    pub attempt: u32,
    /// Unix ms when it was sent.
    pub sent_at_ms: u64,
    /// Time to response or failure.
    pub latency_ms: u64,
    /// The HTTP status, if a response came back.
    pub http_status: Option<u16>,
    /// `done`, `rate_limited`, `transient`, `failed` or `fatal`.
    pub outcome: &'static str,
    /// A short description of a transport failure (never headers or bodies sent).
    pub error: Option<String>,
}

/// An item's final result, written together with its status.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemResult {
    /// The item's sequence number.
    pub seq: u64,
    /// `Done` or `Failed`.
    pub status: ItemStatus,
    /// Attempts made, in total.
    pub attempts: u32,
    /// The last HTTP status, if any.
    pub http_status: Option<u16>,
    /// The last response body as text.
    pub body: Option<String>,
    /// The response's `usage` object as JSON text.
    pub usage: Option<String>,
    /// The last attempt's latency.
    pub latency_ms: u64,
    /// Why it failed, for failures.
    pub error: Option<String>,
    /// The last attempt, recorded in the same transaction.
    pub last_attempt: AttemptRecord,
}

/// The [`RunState`] stored in column `i` of `r`; an unknown name is an error naming it.
fn run_state(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<RunState> {
    let name: String = r.get(i)?;
    name.parse().map_err(|e: crate::session::UnknownRunState| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A live run's progress, written periodically so `status` can read it from elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressRow {
    /// The run's state, stored as [`RunState::as_str`].
    pub state: RunState,
    /// The runner's process id.
    pub pid: u32,
    /// Unix ms of this write.
    pub heartbeat_ms: u64,
    /// Active run time over all sessions.
    pub elapsed_ms: u64,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Per-limit usage.
    pub limits: Vec<BucketUsage>,
    /// Buckets' state to restore after a restart.
    pub limiter_state: Vec<BucketState>,
}

/// A heartbeat older than this means the runner is gone.
pub const STALE_AFTER_MS: u64 = 5_000;

impl ProgressRow {
    /// Whether the runner that wrote this row is alive at unix ms `now_ms`: it says
    /// `running`, its heartbeat is fresh and (where `/proc` tells) its process exists.
    pub fn is_live(&self, now_ms: u64) -> bool {
        let proc_dir = Path::new("/proc");
        let process_exists = !proc_dir.exists() || proc_dir.join(self.pid.to_string()).exists();
        matches!(self.state, RunState::Running | RunState::Paused)
            && now_ms.saturating_sub(self.heartbeat_ms) < STALE_AFTER_MS
            && process_exists
    }
}

/// Item counts by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// All items of the run.
    pub total: u64,
    /// Finished successfully.
    pub done: u64,
    /// Failed permanently.
    pub failed: u64,
    /// Not finished.
    pub pending: u64,
}

/// Request counters over the whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests that got a response or failed (every recorded attempt).
    pub sent: u64,
    /// Responses with status 429.
    pub rate_limited: u64,
    /// Attempts after the first, per item.
    pub retries: u64,
}

/// A pending item as loaded for dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingRow {
    /// Sequence number (file order).
    pub seq: u64,
    /// The item's id.
    pub id: String,
    /// Higher first.
    pub priority: i64,
    /// Token estimate override.
    pub tokens: Option<u64>,
    /// The item's payload as JSON text.
    pub payload: String,
    /// Attempts already made in earlier sessions.
    pub attempts: u32,
    /// Transient failures in earlier sessions (they count against `max_attempts`).
    pub failures: u32,
    /// How far a multi-request job got (JSON of `job::steps::Progress`), if it started.
    pub steps: Option<String>,
    /// Its listings' records stored so far: (step, page, records as JSON), in page order.
    pub pages: Vec<(String, u32, String)>,
}

/// A finished item for export.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    /// The item's id.
    pub id: String,
    /// `done` or `failed`.
    pub status: String,
    /// Last HTTP status.
    pub http_status: Option<u16>,
    /// Last response body.
    pub body: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Last latency.
    pub latency_ms: Option<u64>,
    /// `usage` JSON text.
    pub usage: Option<String>,
    /// Failure description.
    pub error: Option<String>,
}

/// Read access to a run's db (and the import done before a run starts).
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

use crate::clock::unix_ms;

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// `path` with `suffix` appended: the files beside a db (`<db>.lock`, `<db>.importing`,
/// SQLite's `-wal`, `-shm` and `-journal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a file opened as a db holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// Nothing yet: a new db.
    Empty,
    /// A ratebound db from before schema versions (its tables, no `application_id`).
    Unversioned,
    /// A ratebound db of a version this build reads.
    Current,
}

/// Tells a ratebound db from any other file, reading only its header and table names.
fn identity(conn: &Connection, path: &Path) -> Result<Identity, StoreError> {
    let foreign = || StoreError::Foreign {
        path: path.to_path_buf(),
    };
    // A file that is not SQLite fails here, on its first read.
    let pragma = |name| conn.pragma_query_value(None, name, |r| r.get::<_, i32>(0));
    let (app, version) = match (pragma("application_id"), pragma("user_version")) {
        (Ok(app), Ok(version)) => (app, version),
        _ => return Err(foreign()),
    };
    if app == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found: version,
            });
        }
        return Ok(Identity::Current);
    }
    if app != 0 {
        return Err(foreign());
    }
    let tables = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|_| foreign())?;
    if tables.is_empty() {
        Ok(Identity::Empty)
    } else if ["meta", "items", "progress"]
        .iter()
        .all(|t| tables.iter().any(|n| n == t))
    {
        Ok(Identity::Unversioned)
    } else {
        Err(foreign())
    }
}

/// Creates the tables a db lacks (adding what later versions added to an older one) and
/// marks the file as a ratebound db of this schema version.
fn schema(conn: &Connection, identity: Identity) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    queue::add_lane_columns(conn)?;
    conn.execute_batch(queue::QUEUE_SCHEMA)?;
    queue::backfill_counters(conn)?;
    conn.execute_batch(batch::BATCH_SCHEMA)?;
    if identity != Identity::Current {
        conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

/// A read-only connection to the existing ratebound db at `path`, which it leaves as it is.
fn read_only_conn(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_path_buf(),
        });
    }
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        doing: "opening the database read-only",
        source,
    };
    // A db whose run closed cleanly has no `-wal` file: open it immutable, so SQLite
    // creates no `-wal`/`-shm` beside it either. A live (or crashed) run's db has one,
    // which a read-only connection reads through.
    let mode = if sidecar(path, "-wal").exists() {
        "mode=ro"
    } else {
        "immutable=1"
    };
    const URI_RESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
    let uri = format!(
        "file:{}?{mode}",
        percent_encoding::utf8_percent_encode(&path.to_string_lossy(), URI_RESERVED)
    );
    let conn = Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    match identity(&conn, path)? {
        Identity::Empty => Err(StoreError::Foreign {
            path: path.to_path_buf(),
        }),
        Identity::Unversioned | Identity::Current => {
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .map_err(err)?;
            Ok(conn)
        }
    }
}

impl Store {
    fn err(&self, doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            doing,
            source,
        }
    }

    /// Opens or creates the db at `path` with its schema, refusing a file that is not a
    /// ratebound db (before changing anything in it) or was written by a newer ratebound.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            doing: "opening the database",
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        let identity = identity(&conn, path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| schema(&conn, identity))
            .map_err(err)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing db to act on it (`pause`, `resume`, `retry-failed`); a missing
    /// file is an error.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        Store::open(path)
    }

    /// Opens an existing db read-only (`status`, `export`): no journal switch, no schema,
    /// nothing written; a file that is not a ratebound db is refused untouched.
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            conn: read_only_conn(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The db's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value from the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err("reading run metadata"))
    }

    /// Binds the db to a work list on first use, or checks it is the same one.
    ///
    /// Returns true when the db is new and the work list must be imported.
    pub fn bind_worklist(
        &mut self,
        worklist: &Path,
        fingerprint: &str,
        config_snapshot: &str,
    ) -> Result<bool, StoreError> {
        let now = worklist.display().to_string();
        match self.meta("fingerprint")? {
            Some(was_fp) if was_fp == fingerprint => {
                // A rerun may change settings (workers, limits); keep the latest snapshot.
                self.conn
                    .execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('config', ?1)",
                        [config_snapshot],
                    )
                    .map_err(self.err("saving the config snapshot"))?;
                Ok(self.meta("imported")?.is_none())
            }
            Some(was_fp) => Err(StoreError::WorklistChanged {
                db: self.path.clone(),
                was: self.meta("worklist")?.unwrap_or_default(),
                was_fp,
                now,
                now_fp: fingerprint.to_string(),
            }),
            None => {
                let tx = self
                    .conn
                    .transaction()
                    .map_err(|source| StoreError::Sqlite {
                        path: self.path.clone(),
                        doing: "starting the run",
                        source,
                    })?;
                let started = unix_ms(SystemTime::now()).to_string();
                for (key, value) in [
                    ("fingerprint", fingerprint),
                    ("worklist", now.as_str()),
                    ("config", config_snapshot),
                    ("started_at_ms", started.as_str()),
                ] {
                    tx.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                        [key, value],
                    )
                    .map_err(|source| StoreError::Sqlite {
                        path: self.path.clone(),
                        doing: "starting the run",
                        source,
                    })?;
                }
                tx.commit().map_err(|source| StoreError::Sqlite {
                    path: self.path.clone(),
                    doing: "starting the run",
                    source,
                })?;
                Ok(true)
            }
        }
    }

    /// Imports items (all in the default lane) in batched transactions, then puts the
    /// import in place ([`Importing::install`]) with the db's `meta`: what the CLI's
    /// streaming import does, for tests. A repeated id is refused and imports nothing.
    pub fn import(&mut self, items: impl Iterator<Item = Item>) -> Result<u64, StoreError> {
        let mut importing = self.begin_import()?;
        let mut count = 0u64;
        let mut hashes = Vec::new();
        let mut batch = Vec::with_capacity(10_000);
        let mut items = items.peekable();
        while items.peek().is_some() {
            batch.clear();
            batch.extend((items.by_ref().take(10_000)).map(|i| ImportRow::of(&i, Lane::default())));
            hashes.extend(batch.iter().map(|r| crate::worklist::id_hash(&r.id)));
            importing.insert_items(&batch)?;
            count += batch.len() as u64;
        }
        hashes.sort_unstable();
        let repeated = crate::worklist::repeats(hashes.into_iter());
        if let Some(dup) = importing.first_repeated_id(&repeated)? {
            return Err(StoreError::WriterGone {
                path: self.path.clone(),
                message: format!("item `{}` on line {} is a duplicate", dup.id, dup.line),
            });
        }
        // What the db was bound to before (`bind_worklist`) stays.
        let kept: Vec<(String, String)> = (self.conn)
            .prepare("SELECT key, value FROM meta")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(self.err("reading the db's meta"))?;
        let kept: Vec<(&str, &str)> = kept.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        importing.install(self, count, &kept)?;
        Ok(count)
    }

    /// Asks a live run to pause (drain in flight, keep the process) or to resume.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO control (id, paused) VALUES (1, ?1)",
                [paused],
            )
            .map(|_| ())
            .map_err(self.err("setting the pause flag"))
    }

    /// Whether the run has been asked to pause.
    pub fn is_paused(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row("SELECT paused FROM control WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map(|p| p.unwrap_or(false))
            .map_err(self.err("reading the pause flag"))
    }

    /// Puts every permanently failed item back in the queue (its attempts and last error
    /// stay recorded in `attempts`); returns how many.
    pub fn requeue_failed(&mut self) -> Result<u64, StoreError> {
        let err = queue::failing(&self.path, "requeueing failed items");
        let tx = self.conn.transaction().map_err(&err)?;
        let n = tx
            .execute(
                &format!(
                    "UPDATE items SET status = 'pending', error = NULL, finished_at_ms = NULL
                     WHERE {} AND status = 'failed'",
                    queue::FINISHED
                ),
                [],
            )
            .and_then(|n| queue::bump(&tx, "failed", -(n as i64)).map(|()| n as u64))
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(n)
    }

    /// Remembers where the run's config lives, so `resume` can continue a stopped run.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map(|_| ())
            .map_err(self.err("writing run metadata"))
    }

    /// Records who runs the db now (see [`claim`]), for `status` and other hosts.
    pub fn record_claim(&self, holder: &claim::Holder) -> Result<(), StoreError> {
        self.set_meta(
            "claim",
            &format!("{} {} {}", holder.pid, holder.since_ms, holder.host),
        )
    }

    /// Items not yet finished, in dispatch order: priority descending, then file order
    /// (every lane together; a run reads them a page at a time instead, with
    /// [`Store::pending_page`]).
    /// Items held by an open batch are the batch lane's and left out.
    pub fn pending(&self) -> Result<Vec<PendingRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT seq, id, priority, tokens, payload, attempts,
                        (SELECT COUNT(*) FROM attempts a WHERE a.seq = items.seq AND a.outcome = 'transient'),
                        (SELECT progress FROM item_steps s WHERE s.seq = items.seq)
                 FROM items WHERE status = 'pending' AND NOT {} ORDER BY priority DESC, seq",
                batch::IN_OPEN_BATCH
            ))
            .map_err(self.err("loading pending items"))?;
        let mut rows = stmt
            .query_map([], queue::pending_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<PendingRow>>>())
            .map_err(self.err("loading pending items"))?;
        self.load_pages(&mut rows)?;
        Ok(rows)
    }

    /// The latest progress row, if a run has started.
    pub fn progress(&self) -> Result<Option<ProgressRow>, StoreError> {
        self.conn
            .query_row(
                "SELECT state, pid, heartbeat_ms, elapsed_ms, in_flight, limits, limiter_state FROM progress WHERE id = 1",
                [],
                |r| {
                    let limits: String = r.get(5)?;
                    let state: String = r.get(6)?;
                    Ok(ProgressRow {
                        state: run_state(r, 0)?,
                        pid: r.get(1)?,
                        heartbeat_ms: r.get(2)?,
                        elapsed_ms: r.get(3)?,
                        in_flight: r.get(4)?,
                        limits: serde_json::from_str(&limits).unwrap_or_default(),
                        limiter_state: serde_json::from_str(&state).unwrap_or_default(),
                    })
                },
            )
            .optional()
            .map_err(self.err("reading progress"))
    }

    /// The progress row of a runner that is alive right now, if any.
    pub fn live_run(&self) -> Result<Option<ProgressRow>, StoreError> {
        let now = unix_ms(SystemTime::now());
        Ok(self.progress()?.filter(|p| p.is_live(now)))
    }

    /// Finished items in file order; only failures when `failed_only`.
    pub fn results(&self, failed_only: bool) -> Result<Vec<ResultRow>, StoreError> {
        self.with_results(failed_only, |rows| rows.collect())
    }

    /// Hands `f` the finished items in file order (only failures when `failed_only`), read
    /// one at a time as it goes: memory stays flat whatever the run's size. A read error
    /// ends the rows early and is returned after `f`.
    pub fn with_results<R>(
        &self,
        failed_only: bool,
        f: impl FnOnce(&mut dyn Iterator<Item = ResultRow>) -> R,
    ) -> Result<R, StoreError> {
        self.with_finished(failed_only, false, |rows| f(&mut rows.map(|(row, _)| row)))
    }

    /// The `FROM ... WHERE ... ORDER BY seq` that reads the finished items (only failures
    /// when `failed_only`) in file order: through `items NOT INDEXED`, a pass in rowid order
    /// that needs no sort, when they are an eighth of the list or more; else through the
    /// finished items' index (`items_finished`), sorting the few. (Through an index, a
    /// million finished rows went through a temporary sort of every row's body and payload.)
    pub(crate) fn finished_rows(&self, failed_only: bool) -> Result<String, StoreError> {
        let counts = self.counts()?;
        let (filter, selected) = if failed_only {
            ("status = 'failed'", counts.failed)
        } else {
            ("status IN ('done', 'failed')", counts.done + counts.failed)
        };
        let items = if selected.saturating_mul(8) >= counts.total {
            "items NOT INDEXED"
        } else {
            "items"
        };
        Ok(format!(
            "FROM {items} WHERE {} AND {filter} ORDER BY seq",
            queue::FINISHED
        ))
    }

    /// As [`Store::with_results`], each row with the item's stored payload (the JSON text
    /// of its [`Payload`](crate::worklist::Payload)) when `with_payload`.
    pub fn with_finished<R>(
        &self,
        failed_only: bool,
        with_payload: bool,
        f: impl FnOnce(&mut dyn Iterator<Item = (ResultRow, Option<String>)>) -> R,
    ) -> Result<R, StoreError> {
        let payload = if with_payload { "payload" } else { "NULL" };
        let from = self.finished_rows(failed_only)?;
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, status, http_status, body, attempts, latency_ms, usage, error, {payload} {from}"
            ))
            .map_err(self.err("reading results"))?;
        let mut failure = None;
        let rows = stmt
            .query_map([], |r| {
                let row = ResultRow {
                    id: r.get(0)?,
                    status: r.get(1)?,
                    http_status: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    latency_ms: r.get(5)?,
                    usage: r.get(6)?,
                    error: r.get(7)?,
                };
                Ok((row, r.get(8)?))
            })
            .map_err(self.err("reading results"))?;
        let mut rows = rows.map_while(|row| row.map_err(|e| failure = Some(e)).ok());
        let out = f(&mut rows);
        match failure {
            Some(source) => Err(self.err("reading results")(source)),
            None => Ok(out),
        }
    }
}

/// What a finished run recorded, for `estimate --from-db`: latencies and token usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The latency of every attempt answered 2xx, in milliseconds, in the order sent.
    pub latencies_ms: Vec<u64>,
    /// Each done item's id and its response's `usage` JSON text, in file order.
    pub usage: Vec<(String, String)>,
    /// Attempts that failed transiently (5xx, timeouts, connection errors).
    pub transient: u64,
    /// Every attempt recorded.
    pub attempts: u64,
}

impl Recorded {
    /// Reads the latencies and token usage of the run in the db at `path`, opening it
    /// read-only: nothing is written to it, not even a schema (a missing file is an error).
    pub fn read(path: &Path) -> Result<Recorded, StoreError> {
        let err = |doing: &'static str| {
            move |source| StoreError::Sqlite {
                path: path.to_path_buf(),
                doing,
                source,
            }
        };
        let conn = read_only_conn(path)?;
        let latencies_ms = conn
            .prepare(
                "SELECT latency_ms FROM attempts WHERE http_status BETWEEN 200 AND 299 ORDER BY sent_at_ms, seq",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, i64>(0))?
                    .map(|r| r.map(|ms| u64::try_from(ms).unwrap_or(0)))
                    .collect::<rusqlite::Result<Vec<u64>>>()
            })
            .map_err(err("reading recorded latencies"))?;
        let usage = conn
            .prepare(
                &format!("SELECT id, usage FROM items WHERE {} AND status = 'done' AND usage IS NOT NULL ORDER BY seq", queue::FINISHED),
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<(String, String)>>>()
            })
            .map_err(err("reading recorded usage"))?;
        let (transient, attempts) = conn
            .query_row(
                "SELECT COUNT(*) FILTER (WHERE outcome = 'transient'), COUNT(*) FROM attempts",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map_err(err("counting recorded attempts"))?;
        Ok(Recorded {
            latencies_ms,
            usage,
            transient: u64::try_from(transient).unwrap_or(0),
            attempts: u64::try_from(attempts).unwrap_or(0),
        })
    }
}

/// A message to the writer.
enum WriteOp {
    Attempt(AttemptRecord),
    Steps {
        seq: u64,
        progress: String,
        pages: Vec<(String, u32, String)>,
    },
    Finish(ItemResult),
    Progress(ProgressRow),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where the writer's transactions run.
enum Sink {
    /// A thread owning the connection, grouping whatever has queued into one transaction.
    Thread {
        tx: mpsc::Sender<WriteOp>,
        thread: Option<JoinHandle<Result<(), StoreError>>>,
    },
    /// On the caller's thread, one transaction per write: for tests in paused tokio time,
    /// where a commit on another thread would let virtual time race ahead of it.
    Inline {
        conn: Connection,
        committed: tokio::sync::mpsc::UnboundedSender<u64>,
    },
}

/// The single writer of a running run: every attempt, result and progress row goes through
/// it, and it reports each commit so the runner knows what is durable.
pub struct Writer {
    sink: Sink,
    path: PathBuf,
    /// After each commit, how many attempts and results it made durable.
    committed: Option<tokio::sync::mpsc::UnboundedReceiver<u64>>,
}

impl Writer {
    /// Starts the writer thread on the db at `path`.
    pub fn start(path: &Path) -> Result<Writer, StoreError> {
        let conn = Self::connect(path)?;
        let (tx, rx) = mpsc::channel();
        let (committed_tx, committed) = tokio::sync::mpsc::unbounded_channel();
        let owned = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("ratebound-store".into())
            .spawn(move || write_loop(conn, rx, &owned, &committed_tx))
            .map_err(|e| StoreError::WriterGone {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Writer {
            sink: Sink::Thread {
                tx,
                thread: Some(thread),
            },
            path: path.to_path_buf(),
            committed: Some(committed),
        })
    }

    /// A writer that commits each write on the caller's thread before returning (tests in
    /// paused time).
    pub fn inline(path: &Path) -> Result<Writer, StoreError> {
        let (committed_tx, committed) = tokio::sync::mpsc::unbounded_channel();
        Ok(Writer {
            sink: Sink::Inline {
                conn: Self::connect(path)?,
                committed: committed_tx,
            },
            path: path.to_path_buf(),
            committed: Some(committed),
        })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        open_conn(path).map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            doing: "opening the database for writing",
            source,
        })
    }

    fn send(&mut self, op: WriteOp) -> Result<(), StoreError> {
        match &mut self.sink {
            Sink::Thread { tx, .. } => {
                if tx.send(op).is_ok() {
                    return Ok(());
                }
                Err(self.stop_error())
            }
            Sink::Inline { conn, committed } => commit(conn, vec![op], &self.path, committed),
        }
    }

    fn stop_error(&mut self) -> StoreError {
        let joined = match &mut self.sink {
            Sink::Thread { thread, .. } => thread.take().map(JoinHandle::join),
            Sink::Inline { .. } => None,
        };
        let message = match joined {
            Some(Ok(Err(e))) => return e,
            Some(Err(_)) => "the writer thread panicked".to_string(),
            _ => "the writer thread is gone".to_string(),
        };
        StoreError::WriterGone {
            path: self.path.clone(),
            message,
        }
    }

    /// The stream of commit reports: after each commit, the number of attempts and results
    /// ([`Writer::attempt`], [`Writer::finish`]) it made durable. Can be taken once.
    pub fn take_committed(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<u64>> {
        self.committed.take()
    }

    /// Records an attempt that did not finish its item.
    pub fn attempt(&mut self, record: AttemptRecord) -> Result<(), StoreError> {
        self.send(WriteOp::Attempt(record))
    }

    /// Records how far item `seq`'s multi-request job got (JSON text), replacing what was
    /// there, together with its listings' new `pages` (step, page, records as JSON), in one
    /// transaction, so a rerun goes on from there. Counts as one record in commit reports.
    pub fn steps(
        &mut self,
        seq: u64,
        progress: String,
        pages: Vec<(String, u32, String)>,
    ) -> Result<(), StoreError> {
        self.send(WriteOp::Steps {
            seq,
            progress,
            pages,
        })
    }

    /// Stores an item's result and final status in one transaction.
    pub fn finish(&mut self, result: ItemResult) -> Result<(), StoreError> {
        self.send(WriteOp::Finish(result))
    }

    /// Writes the progress row.
    pub fn progress(&mut self, row: ProgressRow) -> Result<(), StoreError> {
        self.send(WriteOp::Progress(row))
    }

    /// Waits until everything sent so far is committed.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(WriteOp::Flush(done))?;
        match wait.await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.stop_error()),
        }
    }
}

/// Most writes grouped into one transaction.
const MAX_BATCH: usize = 5_000;

fn write_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<WriteOp>,
    path: &Path,
    committed: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(), StoreError> {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        commit(&mut conn, batch, path, committed)?;
    }
    Ok(())
}

/// Applies `batch` in one transaction, then reports the attempts and results it made
/// durable and answers the flushes in it.
fn commit(
    conn: &mut Connection,
    batch: Vec<WriteOp>,
    path: &Path,
    committed: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(), StoreError> {
    let err = |doing| {
        move |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            doing,
            source,
        }
    };
    let tx = conn.transaction().map_err(err("starting a write"))?;
    let mut flushes = Vec::new();
    let mut records = 0u64;
    for op in batch {
        match op {
            WriteOp::Attempt(a) => {
                write_attempt(&tx, &a).map_err(err("recording an attempt"))?;
                records += 1;
            }
            WriteOp::Steps {
                seq,
                progress,
                pages,
            } => {
                write_steps(&tx, seq, &progress, &pages).map_err(err("recording step progress"))?;
                records += 1;
            }
            WriteOp::Finish(r) => {
                write_result(&tx, &r).map_err(err("storing a result"))?;
                records += 1;
            }
            WriteOp::Progress(p) => write_progress(&tx, &p).map_err(err("writing progress"))?,
            WriteOp::Flush(done) => flushes.push(done),
        }
    }
    tx.commit().map_err(err("committing results"))?;
    if records > 0 {
        // Nobody listens once the run is over; nothing to do then.
        let _ = committed.send(records);
    }
    for done in flushes {
        // The waiter may have given up; nothing to do then.
        let _ = done.send(());
    }
    Ok(())
}

/// Records an attempt, counted, and keeps the item's count of attempts across sessions, so
/// a rerun goes on numbering (and limiting) them.
fn write_attempt(tx: &rusqlite::Transaction<'_>, a: &AttemptRecord) -> rusqlite::Result<()> {
    queue::count_attempt(tx, a.seq, a.attempt, a.http_status)?;
    insert_attempt(tx, a)?;
    tx.prepare_cached("UPDATE items SET attempts = ?2 WHERE seq = ?1")?
        .execute(params![a.seq, a.attempt])?;
    Ok(())
}

/// Records how far a multi-request job got, with the pages it has read.
fn write_steps(
    tx: &rusqlite::Transaction<'_>,
    seq: u64,
    progress: &str,
    pages: &[(String, u32, String)],
) -> rusqlite::Result<()> {
    for (step, page, items) in pages {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO item_pages (seq, step, page, items) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![seq, step, page, items])?;
    }
    tx.prepare_cached("INSERT OR REPLACE INTO item_steps (seq, progress) VALUES (?1, ?2)")?
        .execute(params![seq, progress])?;
    Ok(())
}

/// Stores an item's result with its last attempt and marks it finished, counted: in the
/// caller's transaction, so an item is never done without its result.
fn write_result(tx: &rusqlite::Transaction<'_>, r: &ItemResult) -> rusqlite::Result<()> {
    let a = &r.last_attempt;
    queue::count_attempt(tx, a.seq, a.attempt, a.http_status)?;
    insert_attempt(tx, a)?;
    queue::finish_item(tx, r.seq, r.status.as_str())?;
    tx.prepare_cached(
        "UPDATE items SET status = ?2, attempts = ?3, http_status = ?4, body = ?5, usage = ?6,
         latency_ms = ?7, error = ?8, finished_at_ms = ?9 WHERE seq = ?1",
    )?
    .execute(params![
        r.seq,
        r.status.as_str(),
        r.attempts,
        r.http_status,
        r.body,
        r.usage,
        r.latency_ms,
        r.error,
        r.last_attempt.sent_at_ms + r.latency_ms
    ])?;
    Ok(())
}

/// Writes the session's progress row and adds the heartbeat to the time series.
fn write_progress(tx: &rusqlite::Transaction<'_>, p: &ProgressRow) -> rusqlite::Result<()> {
    let limits = serde_json::to_string(&p.limits).unwrap_or_else(|_| "[]".into());
    let state = serde_json::to_string(&p.limiter_state).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT OR REPLACE INTO progress (id, state, pid, heartbeat_ms, elapsed_ms, in_flight, limits, limiter_state)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![p.state.as_str(), p.pid, p.heartbeat_ms, p.elapsed_ms, p.in_flight, limits, state],
    )?;
    series::on_heartbeat(tx, p)
}

fn insert_attempt(tx: &rusqlite::Transaction<'_>, a: &AttemptRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO attempts (seq, attempt, sent_at_ms, latency_ms, http_status, outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        a.seq,
        a.attempt,
        a.sent_at_ms,
        a.latency_ms,
        a.http_status,
        a.outcome,
        a.error
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worklist::Payload;

    fn item(seq: u64, priority: i64) -> Item {
        Item {
            seq,
            line: seq + 2,
            id: format!("i{seq}"),
            priority,
            tokens: None,
            payload: Payload::Vars(serde_json::Map::new()),
        }
    }

    fn attempt(seq: u64, attempt: u32, http_status: u16) -> AttemptRecord {
        AttemptRecord {
            seq,
            attempt,
            sent_at_ms: 1_000,
            latency_ms: 5,
            http_status: Some(http_status),
            outcome: "done",
            error: None,
        }
    }

    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        assert!(
            store
                .bind_worklist(Path::new("w.csv"), "fp1", "cfg")
                .unwrap()
        );
        (dir, store)
    }

    #[test]
    fn pending_items_come_back_in_priority_then_file_order() {
        let (_dir, mut store) = fresh();
        store
            .import([item(0, 0), item(1, 5), item(2, 0), item(3, 5)].into_iter())
            .unwrap();
        let order: Vec<u64> = store.pending().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(order, vec![1, 3, 0, 2]);
        assert!(
            !store
                .bind_worklist(Path::new("w.csv"), "fp1", "cfg")
                .unwrap(),
            "imported once"
        );
    }

    #[test]
    fn failed_items_go_back_to_the_queue_and_the_pause_flag_round_trips() {
        let (dir, mut store) = fresh();
        store.import([item(0, 0), item(1, 0)].into_iter()).unwrap();
        store
            .conn
            .execute(
                "UPDATE items SET status = 'failed', error = 'HTTP 400' WHERE seq = 1",
                [],
            )
            .unwrap();
        assert_eq!(store.requeue_failed().unwrap(), 1);
        assert_eq!(store.counts().unwrap().pending, 2);
        assert!(!store.is_paused().unwrap());
        let other = Store::open(&dir.path().join("s.db")).unwrap();
        other.set_paused(true).unwrap();
        assert!(store.is_paused().unwrap(), "another process sees the flag");
    }

    #[tokio::test]
    async fn attempts_and_transient_failures_carry_over_to_the_next_session() {
        let (dir, mut store) = fresh();
        store.import([item(0, 0)].into_iter()).unwrap();
        let mut writer = Writer::start(&dir.path().join("s.db")).unwrap();
        for n in 1..=2 {
            writer
                .attempt(AttemptRecord {
                    outcome: "transient",
                    ..attempt(0, n, 503)
                })
                .unwrap();
        }
        writer.attempt(attempt(0, 3, 429)).unwrap();
        writer.flush().await.unwrap();
        let row = &store.pending().unwrap()[0];
        assert_eq!((row.attempts, row.failures), (3, 2));
    }

    #[test]
    fn a_different_worklist_is_refused() {
        let (_dir, mut store) = fresh();
        let err = store
            .bind_worklist(Path::new("other.csv"), "fp2", "cfg")
            .unwrap_err();
        assert!(matches!(err, StoreError::WorklistChanged { .. }), "{err}");
        assert!(err.to_string().contains("hint:"));
    }

    #[tokio::test]
    async fn an_item_is_done_together_with_its_stored_result() {
        let (dir, mut store) = fresh();
        store.import([item(0, 0), item(1, 0)].into_iter()).unwrap();
        let mut writer = Writer::start(&dir.path().join("s.db")).unwrap();
        writer.attempt(attempt(0, 1, 429)).unwrap();
        writer
            .finish(ItemResult {
                seq: 0,
                status: ItemStatus::Done,
                attempts: 2,
                http_status: Some(200),
                body: Some("{\"ok\":true}".into()),
                usage: Some("{\"total_tokens\":3}".into()),
                latency_ms: 5,
                error: None,
                last_attempt: attempt(0, 2, 200),
            })
            .unwrap();
        writer.flush().await.unwrap();
        let counts = store.counts().unwrap();
        assert_eq!((counts.done, counts.pending, counts.total), (1, 1, 2));
        let results = store.results(false).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].body.as_deref(), Some("{\"ok\":true}"));
        assert_eq!(results[0].attempts, 2);
        let requests = store.request_counts().unwrap();
        assert_eq!(
            (requests.sent, requests.rate_limited, requests.retries),
            (2, 1, 1)
        );
        assert_eq!(store.pending().unwrap()[0].seq, 1);
    }
}
