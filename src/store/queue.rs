//! The items table as the queue: pages of pending items in scheduler order, and the
//! counters `status` reads instead of counting rows (the bulk import is `importing`'s).
//!
//! Owns the lane columns of `items` (class, tenant, endpoint group, as indices into the
//! scheduling policy, set at import) and the queue's two partial indexes:
//! - `items_pending` on `(class, tenant, grp, priority DESC)` of the pending items: a lane's
//!   pending items come out in queue order, a page after a cursor, in O(page · log n)
//!   whatever the list's size;
//! - `items_finished` on `status` of the others, for `retry-failed` and exports.
//!
//! Every index entry ends with the rowid, which is `seq`: equal keys are in file order, and
//! a cursor's `seq > ?` is a range of the index. SQLite reads a partial index only for a
//! query whose `WHERE` holds the index's own condition word for word (`status = 'pending'`,
//! [`FINISHED`]). Split this way, the import's inserts compare five integers per entry (the
//! rowid included), not a text and six integers: that index was 40% of the import's
//! writing thread.
//!
//! Owns the `counters` table too: item counts by status and request counts, kept by the
//! import, the writer and `retry-failed` in the same transactions as the rows they count.
//!
//! Invariant: an import is runnable only once it is complete. It is written into a file of
//! its own, bound to the work list (fingerprint and `imported` mark) last, and only then
//! renamed over the db ([`super::Importing`]); until then a rerun starts the import over,
//! so a kill at any instant leaves nothing half-queued.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Counts, PendingRow, RequestCounts, Store, StoreError};
use crate::scheduler::{After, Lane};

/// The lane columns and the queue indexes, created after [`add_lane_columns`] has run on a
/// db of an earlier version (whose one index on `status` first is replaced, once).
pub(super) const QUEUE_SCHEMA: &str = "
DROP INDEX IF EXISTS items_queue;
DROP INDEX IF EXISTS items_lane;
CREATE INDEX IF NOT EXISTS items_pending ON items (class, tenant, grp, priority DESC)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS items_finished ON items (status) WHERE status <> 'pending';
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
";

/// The condition of `items_finished`: a query reading finished items through it holds it.
pub(crate) const FINISHED: &str = "status <> 'pending'";

/// The probes of [`Store::pending_lanes`]: the next lane after a cursor, each with the
/// number of cursor columns it reads.
const PROBES: [(&str, usize); 3] = [
    (
        "SELECT class, tenant, grp FROM items WHERE status = 'pending'
           AND class = ?1 AND tenant = ?2 AND grp > ?3 ORDER BY grp LIMIT 1",
        3,
    ),
    (
        "SELECT class, tenant, grp FROM items WHERE status = 'pending'
           AND class = ?1 AND tenant > ?2 ORDER BY tenant, grp LIMIT 1",
        2,
    ),
    (
        "SELECT class, tenant, grp FROM items WHERE status = 'pending'
           AND class > ?1 ORDER BY class, tenant, grp LIMIT 1",
        1,
    ),
];

/// The `SELECT ... WHERE` of [`Store::pending_page`]: a lane's pending items (`?1` to `?3`)
/// with what earlier sessions recorded of them, to which each page adds its cursor and
/// order. Items held by an open batch are the batch lane's: the online queue skips them.
fn page_columns() -> String {
    format!(
        "SELECT seq, id, priority, tokens, payload, attempts,
            (SELECT COUNT(*) FROM attempts a WHERE a.seq = items.seq AND a.outcome = 'transient'),
            (SELECT progress FROM item_steps s WHERE s.seq = items.seq)
         FROM items WHERE status = 'pending' AND class = ?1 AND tenant = ?2 AND grp = ?3
         AND NOT {}",
        super::batch::IN_OPEN_BATCH
    )
}

/// The counters `status` reads.
const COUNTERS: [&str; 6] = ["total", "done", "failed", "sent", "rate_limited", "retries"];

/// Adds the lane columns to an `items` table made before they existed.
pub(super) fn add_lane_columns(conn: &Connection) -> rusqlite::Result<()> {
    let has_lanes: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('items') WHERE name = 'grp'")?
        .exists([])?;
    if !has_lanes {
        for column in ["class", "tenant", "grp"] {
            conn.execute_batch(&format!(
                "ALTER TABLE items ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

/// Fills the counters of a db made before they existed, from the rows (once).
pub(super) fn backfill_counters(conn: &Connection) -> rusqlite::Result<()> {
    let kept: bool = conn.prepare("SELECT 1 FROM counters")?.exists([])?;
    if kept {
        return Ok(());
    }
    conn.execute_batch(&format!("INSERT INTO counters (name, n) {COUNTED};"))
}

/// The counters counted from the rows (through the indexes on `status`, of this version
/// or an earlier one, and one pass over `attempts`; the finished counts hold
/// [`FINISHED`] so that `items_finished` serves them): what a db
/// made before the counters existed starts them from, and what `status` reads of such a
/// db opened read-only.
const COUNTED: &str = "SELECT 'total', COUNT(*) FROM items
   UNION ALL SELECT 'done', COUNT(*) FROM items WHERE status <> 'pending' AND status = 'done'
   UNION ALL SELECT 'failed', COUNT(*) FROM items WHERE status <> 'pending' AND status = 'failed'
   UNION ALL SELECT 'sent', COUNT(*) FROM attempts
   UNION ALL SELECT 'rate_limited', COUNT(*) FROM attempts WHERE http_status = 429
   UNION ALL SELECT 'retries', COUNT(*) FROM attempts a WHERE attempt > 1
     AND NOT EXISTS (SELECT 1 FROM attempts p WHERE p.seq = a.seq
         AND p.attempt = a.attempt - 1 AND p.http_status BETWEEN 200 AND 299)";

/// Adds `by` to counter `name` inside a write.
pub(super) fn bump(tx: &Transaction<'_>, name: &str, by: i64) -> rusqlite::Result<()> {
    if by != 0 {
        tx.prepare_cached("UPDATE counters SET n = n + ?2 WHERE name = ?1")?
            .execute(params![name, by])?;
    }
    Ok(())
}

/// Counts a recorded attempt: sent, 429s, and retries (an attempt after one of the same
/// item that did not succeed; a later step or page of a multi-request job follows a
/// success). Runs before the attempt is inserted.
pub(super) fn count_attempt(
    tx: &Transaction<'_>,
    seq: u64,
    attempt: u32,
    http_status: Option<u16>,
) -> rusqlite::Result<()> {
    bump(tx, "sent", 1)?;
    if http_status == Some(429) {
        bump(tx, "rate_limited", 1)?;
    }
    if attempt > 1 {
        let after_success = tx
            .prepare_cached(
                "SELECT 1 FROM attempts WHERE seq = ?1 AND attempt = ?2 AND http_status BETWEEN 200 AND 299",
            )?
            .exists(params![seq, attempt - 1])?;
        if !after_success {
            bump(tx, "retries", 1)?;
        }
    }
    Ok(())
}

/// Marks item `seq` finished as `status` (from pending) and counts it; false when it was
/// not pending.
pub(super) fn finish_item(tx: &Transaction<'_>, seq: u64, status: &str) -> rusqlite::Result<bool> {
    let changed = tx
        .prepare_cached("UPDATE items SET status = ?2 WHERE seq = ?1 AND status = 'pending'")?
        .execute(params![seq, status])?;
    if changed == 1 {
        bump(tx, status, 1)?;
    }
    Ok(changed == 1)
}

impl Store {
    /// Moves items to the lanes given by `(seq, lane)` (after the scheduling config
    /// changed), in one transaction.
    pub fn set_lanes(&mut self, lanes: &[(u64, Lane)]) -> Result<(), StoreError> {
        let err = failing(&self.path, "setting the items' lanes");
        let tx = self.conn.transaction().map_err(&err)?;
        let write = (|| {
            let mut update = tx.prepare_cached(
                "UPDATE items SET class = ?2, tenant = ?3, grp = ?4 WHERE seq = ?1",
            )?;
            for (seq, lane) in lanes {
                update.execute(params![seq, lane.class, lane.tenant, lane.group])?;
            }
            Ok::<(), rusqlite::Error>(())
        })();
        write.and_then(|()| tx.commit()).map_err(&err)
    }

    /// The lanes that have pending items, in index order: a skip scan of a few index
    /// probes per lane, never a pass over the items. (SQLite does not seek the index for a
    /// row-value range after `status`; each probe ranges over one column instead.)
    pub fn pending_lanes(&self) -> Result<Vec<Lane>, StoreError> {
        let err = self.err("listing the queue's lanes");
        let next = |after: (i64, i64, i64)| -> rusqlite::Result<Option<Lane>> {
            let cursor: [&dyn rusqlite::ToSql; 3] = [&after.0, &after.1, &after.2];
            for (sql, n) in PROBES {
                let found = (self.conn.prepare_cached(sql)?)
                    .query_row(&cursor[..n], |r| {
                        Ok(Lane {
                            class: r.get(0)?,
                            tenant: r.get(1)?,
                            group: r.get(2)?,
                        })
                    })
                    .optional()?;
                if found.is_some() {
                    return Ok(found);
                }
            }
            Ok(None)
        };
        let mut lanes = Vec::new();
        let mut after = (-1i64, -1i64, -1i64);
        let walk = (|| {
            while let Some(lane) = next(after)? {
                after = (
                    i64::from(lane.class),
                    i64::from(lane.tenant),
                    i64::from(lane.group),
                );
                lanes.push(lane);
            }
            Ok::<(), rusqlite::Error>(())
        })();
        walk.map_err(err)?;
        Ok(lanes)
    }

    /// Up to `n` pending items of `lane` after the cursor `after`, in queue order (priority
    /// descending, then file order), with what earlier sessions recorded of them.
    pub fn pending_page(
        &self,
        lane: Lane,
        after: After,
        n: usize,
    ) -> Result<Vec<PendingRow>, StoreError> {
        let columns = page_columns();
        let err = self.err("loading pending items");
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let lane_params = (lane.class, lane.tenant, lane.group);
        let mut rows = Vec::with_capacity(n.min(4096));
        let read = |sql: &str, p: &[&dyn rusqlite::ToSql], rows: &mut Vec<PendingRow>| {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let found = stmt.query_map(p, pending_row)?;
            for row in found {
                rows.push(row?);
            }
            Ok::<(), rusqlite::Error>(())
        };
        let (class, tenant, grp) = lane_params;
        let outcome = match after {
            None => read(
                &format!("{columns} ORDER BY priority DESC, seq LIMIT ?4"),
                &[&class, &tenant, &grp, &limit],
                &mut rows,
            ),
            Some((priority, seq)) => read(
                &format!("{columns} AND priority = ?4 AND seq > ?5 ORDER BY seq LIMIT ?6"),
                &[&class, &tenant, &grp, &priority, &seq, &limit],
                &mut rows,
            )
            .and_then(|()| {
                let left = limit - rows.len() as i64;
                if left <= 0 {
                    return Ok(());
                }
                read(
                    &format!("{columns} AND priority < ?4 ORDER BY priority DESC, seq LIMIT ?5"),
                    &[&class, &tenant, &grp, &priority, &left],
                    &mut rows,
                )
            }),
        };
        outcome.map_err(err)?;
        self.load_pages(&mut rows)?;
        Ok(rows)
    }

    /// Up to `n` pending items of every lane after the cursor `after`, in queue order
    /// (priority descending, then file order): each lane's page, merged. Items held by an
    /// open batch are left out.
    pub fn pending_after(&self, after: After, n: usize) -> Result<Vec<PendingRow>, StoreError> {
        let mut rows = Vec::new();
        for lane in self.pending_lanes()? {
            rows.extend(self.pending_page(lane, after, n)?);
        }
        rows.sort_unstable_by_key(|r| (std::cmp::Reverse(r.priority), r.seq));
        rows.truncate(n);
        Ok(rows)
    }

    /// Fills in the stored listing pages of the rows of multi-request jobs that started.
    pub(super) fn load_pages(&self, rows: &mut [PendingRow]) -> Result<(), StoreError> {
        let mut started = rows.iter_mut().filter(|r| r.steps.is_some()).peekable();
        if started.peek().is_none() {
            return Ok(());
        }
        let mut pages = self
            .conn
            .prepare_cached(
                "SELECT step, page, items FROM item_pages WHERE seq = ?1 ORDER BY step, page",
            )
            .map_err(self.err("loading stored pages"))?;
        for row in started {
            row.pages = pages
                .query_map([row.seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(self.err("loading stored pages"))?;
        }
        Ok(())
    }

    /// Item counts by status, from the counters (O(1), whatever the list's size).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let [total, done, failed, ..] = self.counters()?;
        Ok(Counts {
            total,
            done,
            failed,
            pending: total.saturating_sub(done + failed),
        })
    }

    /// Requests sent, 429s and retries over the whole run, from the counters.
    pub fn request_counts(&self) -> Result<RequestCounts, StoreError> {
        let [.., sent, rate_limited, retries] = self.counters()?;
        Ok(RequestCounts {
            sent,
            rate_limited,
            retries,
        })
    }

    /// The counters, or, in a db made before they existed and opened read-only (so not
    /// backfilled), the same numbers counted from the rows.
    fn counters(&self) -> Result<[u64; 6], StoreError> {
        let mut out = [0u64; 6];
        let kept: bool = (self.conn)
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'counters'",
            )
            .and_then(|mut stmt| stmt.exists([]))
            .map_err(self.err("reading the counters"))?;
        let sql = if kept {
            "SELECT name, n FROM counters"
        } else {
            COUNTED
        };
        let mut stmt = (self.conn.prepare_cached(sql)).map_err(self.err("reading the counters"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("reading the counters"))?;
        for (name, n) in rows {
            if let Some(i) = COUNTERS.iter().position(|c| *c == name) {
                out[i] = u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(out)
    }
}

/// Wraps a SQLite error of the db at `path` while `doing`.
pub(super) fn failing<'a>(
    path: &'a std::path::Path,
    doing: &'static str,
) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
    move |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        doing,
        source,
    }
}

/// A pending row from the columns of [`Store::pending_page`] (pages not loaded yet).
pub(super) fn pending_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PendingRow> {
    Ok(PendingRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        priority: r.get(2)?,
        tokens: r.get(3)?,
        payload: r.get(4)?,
        attempts: r.get(5)?,
        failures: r.get(6)?,
        steps: r.get(7)?,
        pages: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImportRow;

    fn row(seq: u64, priority: i64, lane: Lane) -> ImportRow {
        ImportRow {
            seq,
            line: seq + 2,
            id: format!("i{seq}"),
            priority,
            tokens: None,
            payload: "{\"Vars\":{}}".into(),
            lane,
        }
    }

    /// A db at `path` holding `rows`, imported as the CLI does.
    fn imported(path: &std::path::Path, rows: &[ImportRow]) -> Store {
        let mut store = Store::open(path).unwrap();
        let mut importing = store.begin_import().unwrap();
        importing.insert_items(rows).unwrap();
        importing
            .install(&mut store, rows.len() as u64, &[])
            .unwrap();
        store
    }

    /// The index each SQLite plan step over `items` goes through (`None`: a full scan).
    fn indexes_used(store: &Store, sql: &str) -> Vec<Option<String>> {
        let mut stmt = store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        // Unbound parameters are NULL: the plan is the same.
        let mut rows = stmt.raw_query();
        let mut details = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            details.push(row.get::<_, String>(3).unwrap());
        }
        details
            .into_iter()
            .filter(|d| d.starts_with("SCAN items") || d.starts_with("SEARCH items"))
            .map(|d| {
                d.split("INDEX ")
                    .nth(1)
                    .map(|i| i.split(' ').next().unwrap_or("").to_string())
            })
            .collect()
    }

    #[test]
    fn the_queue_reads_through_its_partial_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<ImportRow> = (0..50).map(|seq| row(seq, 0, Lane::default())).collect();
        let store = imported(&dir.path().join("q.db"), &rows);
        let pending = Some("items_pending".to_string());
        let columns = page_columns();
        for sql in [
            format!("{columns} ORDER BY priority DESC, seq LIMIT ?4"),
            format!("{columns} AND priority = ?4 AND seq > ?5 ORDER BY seq LIMIT ?6"),
            format!("{columns} AND priority < ?4 ORDER BY priority DESC, seq LIMIT ?5"),
        ]
        .iter()
        .map(String::as_str)
        .chain(PROBES.map(|(sql, _)| sql))
        {
            assert_eq!(
                indexes_used(&store, sql),
                std::slice::from_ref(&pending),
                "{sql}"
            );
        }
        // Few finished: through the finished index; many: in rowid order, no index.
        let finished = store.finished_rows(true).unwrap();
        let used = indexes_used(&store, &format!("SELECT seq {finished}"));
        assert_eq!(used, [Some("items_finished".to_string())]);
        store
            .conn
            .execute_batch("UPDATE items SET status = 'failed'; UPDATE counters SET n = 50 WHERE name = 'failed';")
            .unwrap();
        let finished = store.finished_rows(true).unwrap();
        assert_eq!(
            indexes_used(&store, &format!("SELECT seq {finished}")),
            [None]
        );
    }

    #[test]
    fn each_lane_pages_in_queue_order_after_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let lane = |class, tenant, group| Lane {
            class,
            tenant,
            group,
        };
        let lanes = [lane(0, 0, 0), lane(0, 2, 1), lane(1, 0, 0), lane(1, 0, 3)];
        // Two statements of 64 rows, then 22 one at a time.
        let rows: Vec<ImportRow> = (0..150)
            .map(|seq| row(seq, (seq % 3) as i64, lanes[(seq % 4) as usize]))
            .collect();
        let store = imported(&dir.path().join("q.db"), &rows);
        assert_eq!(store.pending_lanes().unwrap(), lanes);
        for l in lanes {
            let mut want: Vec<(i64, u64)> = (rows.iter())
                .filter(|r| r.lane == l)
                .map(|r| (r.priority, r.seq))
                .collect();
            want.sort_by_key(|&(p, s)| (std::cmp::Reverse(p), s));
            let (mut got, mut after) = (Vec::new(), None);
            loop {
                let page = store.pending_page(l, after, 3).unwrap();
                got.extend(page.iter().map(|r| (r.priority, r.seq)));
                after = got.last().copied();
                if page.len() < 3 {
                    break;
                }
            }
            assert_eq!(got, want, "lane {l:?}");
        }
        assert_eq!(store.counts().unwrap().pending, 150);
    }

    #[test]
    fn a_repeated_id_is_found_from_the_hashes_seen_twice_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db")).unwrap();
        let mut importing = store.begin_import().unwrap();
        let mut rows: Vec<ImportRow> = (0..10).map(|seq| row(seq, 0, Lane::default())).collect();
        rows[6].id = "i4".into();
        rows[8].id = "i2".into();
        importing.insert_items(&rows).unwrap();
        let hash = crate::worklist::id_hash;
        let found = importing
            .first_repeated_id(&[hash("i2"), hash("i4")])
            .unwrap();
        assert_eq!(
            found.map(|d| (d.id, d.line, d.first_line)),
            Some(("i4".to_string(), 8, 6)),
            "the first repeat in file order, with its first line"
        );
        // Equal hashes of different ids (here: a hash of a lone id) are no repeat.
        assert_eq!(importing.first_repeated_id(&[hash("i7")]).unwrap(), None);
        assert_eq!(importing.first_repeated_id(&[]).unwrap(), None);
    }

    #[test]
    fn an_import_takes_the_dbs_place_only_when_installed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let rows: Vec<ImportRow> = (0..5).map(|seq| row(seq, 0, Lane::default())).collect();
        let mut store = Store::open(&path).unwrap();
        // A file left by an import cut short is started over.
        let side = super::super::importing_path(&path);
        std::fs::write(&side, b"left by a kill").unwrap();
        let mut importing = store.begin_import().unwrap();
        assert_eq!(importing.path(), side);
        importing.insert_items(&rows).unwrap();
        drop(importing);
        assert!(!side.exists(), "a dropped import leaves no file");
        assert_eq!(store.meta("imported").unwrap(), None);
        assert_eq!(store.counts().unwrap().total, 0, "the db is untouched");

        let mut importing = store.begin_import().unwrap();
        importing.insert_items(&rows).unwrap();
        importing
            .install(&mut store, 5, &[("fingerprint", "fp")])
            .unwrap();
        assert!(!side.exists());
        assert_eq!(store.meta("imported").unwrap().as_deref(), Some("5"));
        assert_eq!(store.meta("fingerprint").unwrap().as_deref(), Some("fp"));
        assert_eq!(store.counts().unwrap().total, 5);
        let mode: String = (store.conn)
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(store);
        let again = Store::open_read_only(&path).unwrap();
        assert_eq!(again.counts().unwrap().pending, 5);
    }

    #[test]
    fn a_db_made_before_the_counters_counts_its_rows_when_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let rows: Vec<ImportRow> = (0..5).map(|seq| row(seq, 0, Lane::default())).collect();
        drop(imported(&path, &rows));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "UPDATE items SET status = 'done' WHERE seq < 2;
             UPDATE items SET status = 'failed' WHERE seq = 4;
             INSERT INTO attempts (seq, attempt, sent_at_ms, latency_ms, http_status, outcome)
               VALUES (0, 1, 0, 5, 429, 'rate_limited'), (0, 2, 9, 5, 200, 'done');
             DROP TABLE counters;",
        )
        .unwrap();
        drop(conn);
        let old = Store::open_read_only(&path).unwrap();
        let counts = old.counts().unwrap();
        assert_eq!(
            (counts.total, counts.done, counts.failed, counts.pending),
            (5, 2, 1, 2)
        );
        let requests = old.request_counts().unwrap();
        assert_eq!(
            (requests.sent, requests.rate_limited, requests.retries),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_db_with_the_old_status_index_gets_the_partial_ones_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let rows: Vec<ImportRow> = (0..6)
            .map(|seq| row(seq, seq as i64 % 2, Lane::default()))
            .collect();
        drop(imported(&path, &rows));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP INDEX items_pending; DROP INDEX items_finished;
             CREATE INDEX items_lane ON items (status, class, tenant, grp, priority DESC, seq);
             UPDATE items SET status = 'failed' WHERE seq = 1;",
        )
        .unwrap();
        drop(conn);
        let mut store = Store::open(&path).unwrap();
        let indexes: Vec<String> = (store.conn)
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(indexes, ["items_finished", "items_pending"]);
        let page = store.pending_page(Lane::default(), None, 10).unwrap();
        let seqs: Vec<u64> = page.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [3, 5, 0, 2, 4]);
        store
            .conn
            .execute("UPDATE counters SET n = 1 WHERE name = 'failed'", [])
            .unwrap();
        assert_eq!(store.requeue_failed().unwrap(), 1);
        assert_eq!(
            store.pending_page(Lane::default(), None, 10).unwrap().len(),
            6
        );
    }

    #[test]
    fn pages_of_every_lane_come_in_queue_order_across_lanes() {
        let dir = tempfile::tempdir().unwrap();
        let lanes = [0, 1, 2].map(|tenant| Lane {
            tenant,
            ..Lane::default()
        });
        let rows: Vec<ImportRow> = (0..30)
            .map(|seq| row(seq, (seq % 4) as i64, lanes[(seq % 3) as usize]))
            .collect();
        let store = imported(&dir.path().join("q.db"), &rows);
        let mut want: Vec<(i64, u64)> = rows.iter().map(|r| (r.priority, r.seq)).collect();
        want.sort_by_key(|&(p, s)| (std::cmp::Reverse(p), s));
        let (mut got, mut after) = (Vec::new(), None);
        loop {
            let page = store.pending_after(after, 4).unwrap();
            got.extend(page.iter().map(|r| (r.priority, r.seq)));
            after = got.last().copied();
            if page.len() < 4 {
                break;
            }
        }
        assert_eq!(got, want);
    }
}
