//! An import is written into a new db file beside the run's db, then put in its place whole.
//!
//! Owns `<db>.importing` ([`importing_path`]). [`Store::begin_import`] creates it fresh: the
//! schema, then the items in large transactions with no journal and no syncs (SQLite's
//! `journal_mode = OFF`, `synchronous = OFF`). In WAL mode every page went first into the
//! `-wal` file and again into the db at each checkpoint, with a sync each time; at 10M items
//! that was about a third of the time before the first request. [`Importing::install`] binds
//! the file to the work list, turns it to WAL, syncs it, and renames it over the db.
//!
//! Invariant: the file at the db's path is never half imported. A kill, a crash or a bad
//! row before the rename leaves the db as it was (not runnable: an import was due) and at
//! most a `.importing` file, which the next import deletes and starts over (a dropped
//! [`Importing`] deletes its own). A file written without a journal is only ever read
//! once it is complete and synced.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::queue::failing;
use super::{Identity, Store, StoreError, open_conn, schema, sidecar};
use crate::scheduler::Lane;
use crate::worklist::Item;

/// An item as the import writes it: its fields, its payload as JSON text and its lane.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRow {
    /// Sequence number (file order).
    pub seq: u64,
    /// 1-based line of the record.
    pub line: u64,
    /// The item's id.
    pub id: String,
    /// Higher first.
    pub priority: i64,
    /// Token estimate override.
    pub tokens: Option<u64>,
    /// The payload as JSON text.
    pub payload: String,
    /// Where it queues.
    pub lane: Lane,
}

impl ImportRow {
    /// The row of `item` queued in `lane`.
    pub fn of(item: &Item, lane: Lane) -> ImportRow {
        let mut row = ImportRow {
            seq: 0,
            line: 0,
            id: String::new(),
            priority: 0,
            tokens: None,
            payload: String::new(),
            lane,
        };
        row.refill(item, lane);
        row
    }

    /// Makes this row that of `item` queued in `lane`, reusing its buffers: the import
    /// refills the rows of written batches instead of allocating new ones for every item.
    pub fn refill(&mut self, item: &Item, lane: Lane) {
        self.seq = item.seq;
        self.line = item.line;
        self.id.clear();
        self.id.push_str(&item.id);
        self.priority = item.priority;
        self.tokens = item.tokens;
        self.payload.clear();
        item.payload.write_json(&mut self.payload);
        self.lane = lane;
    }
}

/// Two items with one id, found at import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateId {
    /// The id.
    pub id: String,
    /// The line of the second item.
    pub line: u64,
    /// The line of the first.
    pub first_line: u64,
}

/// The import's page cache, in KiB (negative: SQLite's unit for a size in KiB): the
/// pending index's pages stay in memory instead of being read back from the OS for every insert.
const IMPORT_CACHE_KIB: i64 = -49_152;

/// Rows per INSERT statement: one statement of many rows costs SQLite's virtual machine one
/// start and one halt where as many statements would cost one each.
const ROWS_PER_INSERT: usize = 64;

/// The statement inserting [`ROWS_PER_INSERT`] rows.
static INSERT_ROWS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| insert_rows(ROWS_PER_INSERT));

/// An INSERT of `n` items' columns (9 parameters each).
fn insert_rows(n: usize) -> String {
    let one = "(?,?,?,?,?,?,?,?,?)";
    let values = vec![one; n].join(",");
    format!(
        "INSERT INTO items (seq, id, line, priority, tokens, payload, class, tenant, grp) VALUES {values}"
    )
}

/// Binds the columns of `rows` to `insert`'s parameters, in order.
fn bind_rows(
    insert: &mut rusqlite::CachedStatement<'_>,
    rows: &[ImportRow],
) -> rusqlite::Result<()> {
    for (i, row) in rows.iter().enumerate() {
        let at = i * 9;
        insert.raw_bind_parameter(at + 1, row.seq)?;
        insert.raw_bind_parameter(at + 2, &row.id)?;
        insert.raw_bind_parameter(at + 3, row.line)?;
        insert.raw_bind_parameter(at + 4, row.priority)?;
        insert.raw_bind_parameter(at + 5, row.tokens)?;
        insert.raw_bind_parameter(at + 6, &row.payload)?;
        insert.raw_bind_parameter(at + 7, row.lane.class)?;
        insert.raw_bind_parameter(at + 8, row.lane.tenant)?;
        insert.raw_bind_parameter(at + 9, row.lane.group)?;
    }
    Ok(())
}

/// Where an import into the db at `db` is written: `<db>.importing` beside it.
pub fn importing_path(db: &Path) -> PathBuf {
    sidecar(db, ".importing")
}

/// How often the import's file is synced while it is written, so that the sync before
/// [`Importing::install`]'s rename finds little left to write.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// An import under way, into its own file; deleted when dropped before [`Importing::install`].
pub struct Importing {
    /// The import file, open without a journal.
    store: Store,
    /// Syncs it in the background while it is written.
    flusher: Flusher,
    /// It is in the db's place now.
    installed: bool,
}

/// A thread syncing a file every [`FLUSH_EVERY`] until stopped: the OS writes the pages out
/// while the import goes on, instead of all at once before the first request.
struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(path: &Path) -> io::Result<Flusher> {
        let file = File::open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ratebound-flush".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FLUSH_EVERY) {
                    // A failure shows again in the last sync, which is checked.
                    let _ = file.sync_data();
                }
            })?;
        Ok(Flusher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread (after the sync under way, if any).
    fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Starts an import into this db: a new file beside it ([`importing_path`]; one left by
    /// an import cut short is deleted first) with the schema and no items, written without
    /// a journal. The db itself is not touched until [`Importing::install`].
    ///
    /// # Errors
    /// When the file cannot be deleted, created or given its schema.
    pub fn begin_import(&self) -> Result<Importing, StoreError> {
        let path = importing_path(&self.path);
        for leftover in [
            path.clone(),
            sidecar(&path, "-journal"),
            sidecar(&path, "-wal"),
        ] {
            remove_if_present(&leftover)
                .map_err(file_failing(&leftover, "deleting an import cut short"))?;
        }
        let conn = Connection::open(&path)
            .and_then(|conn| {
                conn.pragma_update(None, "journal_mode", "OFF")?;
                conn.pragma_update(None, "synchronous", "OFF")?;
                conn.pragma_update(None, "cache_size", IMPORT_CACHE_KIB)?;
                schema(&conn, Identity::Empty)?;
                Ok(conn)
            })
            .map_err(failing(&path, "starting the import"))?;
        let flusher = Flusher::start(&path).map_err(file_failing(&path, "starting the import"))?;
        Ok(Importing {
            store: Store { conn, path },
            flusher,
            installed: false,
        })
    }
}

impl Importing {
    /// The import file's path.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// Inserts validated items with their lanes in one transaction (the import's unit of
    /// work: thousands at a time). Ids are not checked here: see
    /// [`Importing::first_repeated_id`].
    ///
    /// # Errors
    /// When SQLite cannot write them.
    pub fn insert_items(&mut self, batch: &[ImportRow]) -> Result<(), StoreError> {
        let store = &mut self.store;
        let err = failing(&store.path, "importing the work list");
        let tx = store.conn.transaction().map_err(&err)?;
        {
            let mut chunks = batch.chunks_exact(ROWS_PER_INSERT);
            let mut insert = tx.prepare_cached(&INSERT_ROWS).map_err(&err)?;
            for chunk in chunks.by_ref() {
                bind_rows(&mut insert, chunk).map_err(&err)?;
                insert.raw_execute().map_err(&err)?;
            }
            let mut insert = tx.prepare_cached(&insert_rows(1)).map_err(&err)?;
            for row in chunks.remainder() {
                bind_rows(&mut insert, std::slice::from_ref(row)).map_err(&err)?;
                insert.raw_execute().map_err(&err)?;
            }
            super::queue::bump(&tx, "total", batch.len() as i64).map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    /// The first item (in file order) whose id an earlier item has, among the items whose
    /// id hashes to one of `hashes` (the hashes an import saw more than once): one pass over
    /// the items in rowid order, keeping only those ids. `None` when equal hashes were
    /// different ids.
    ///
    /// # Errors
    /// When SQLite cannot read the items.
    pub fn first_repeated_id(&self, hashes: &[u64]) -> Result<Option<DuplicateId>, StoreError> {
        if hashes.is_empty() {
            return Ok(None);
        }
        let hashes: rustc_hash::FxHashSet<u64> = hashes.iter().copied().collect();
        let store = &self.store;
        let err = failing(&store.path, "looking for repeated ids");
        let mut stmt = (store.conn)
            .prepare("SELECT id, line FROM items ORDER BY seq")
            .map_err(&err)?;
        let mut rows = stmt.query([]).map_err(&err)?;
        let mut seen: rustc_hash::FxHashMap<String, u64> = Default::default();
        while let Some(row) = rows.next().map_err(&err)? {
            let id: String = row.get(0).map_err(&err)?;
            if !hashes.contains(&crate::worklist::id_hash(&id)) {
                continue;
            }
            let line: u64 = row.get(1).map_err(&err)?;
            if let Some(&first_line) = seen.get(&id) {
                return Ok(Some(DuplicateId {
                    id,
                    line,
                    first_line,
                }));
            }
            seen.insert(id, line);
        }
        Ok(None)
    }

    /// Completes an import of `count` items and puts it in the place of `db`: binds it to
    /// the work list (`meta` pairs: fingerprint, work list, config and start time) with the
    /// `imported` mark, turns it to WAL, syncs it, closes `db`'s connection, renames the
    /// file over the db (deleting a `-wal` or `-shm` of the old one first: SQLite would read
    /// them as the new one's) and opens `db` again on it.
    ///
    /// # Errors
    /// When a write, the sync or the rename fails. On disk, the db is then as it was (the
    /// import file is deleted), or fully imported when only reopening it failed; `db`'s
    /// connection may be closed either way, so the caller stops.
    pub fn install(
        mut self,
        db: &mut Store,
        count: u64,
        meta: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let path = self.store.path.clone();
        let err = failing(&path, "completing the import");
        let count = count.to_string();
        let tx = self.store.conn.transaction().map_err(&err)?;
        for (key, value) in meta.iter().chain([&("imported", count.as_str())]) {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                [key, value],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        (self.store.conn)
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        // Closes the import file: it is complete.
        self.store.conn = Connection::open_in_memory().map_err(&err)?;
        self.flusher.stop();
        File::open(&path)
            .and_then(|f| f.sync_all())
            .map_err(file_failing(&path, "syncing the imported list to disk"))?;
        // Closes the db's connection: nothing may write the old file once it is replaced.
        db.conn = Connection::open_in_memory().map_err(failing(&db.path, "closing the db"))?;
        for stale in [sidecar(&db.path, "-wal"), sidecar(&db.path, "-shm")] {
            remove_if_present(&stale)
                .map_err(file_failing(&path, "deleting the old db's -wal and -shm"))?;
        }
        std::fs::rename(&path, &db.path)
            .map_err(file_failing(&path, "putting the import in the db's place"))?;
        self.installed = true;
        if let Some(dir) = db.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // The rename lasts through a crash once the folder is synced.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(file_failing(&path, "syncing the db's folder"))?;
        }
        db.conn = open_conn(&db.path).map_err(failing(&db.path, "opening the imported db"))?;
        Ok(())
    }
}

impl Drop for Importing {
    /// An import dropped before it was installed leaves nothing behind.
    fn drop(&mut self) {
        self.flusher.stop();
        if !self.installed {
            let _ = remove_if_present(&self.store.path);
        }
    }
}

/// The [`StoreError::ImportFile`] of an I/O failure on `path` while `doing`.
fn file_failing<'a>(path: &'a Path, doing: &'static str) -> impl Fn(io::Error) -> StoreError + 'a {
    move |source| StoreError::ImportFile {
        path: path.to_path_buf(),
        doing,
        source,
    }
}

/// Deletes `path`; a missing file is no error.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
