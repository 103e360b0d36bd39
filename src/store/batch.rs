//! The batch lane's tables: each batch's lifecycle checkpoints and the items cut into it.
//!
//! Owns `batches` (one row per batch: its state, the provider's file and batch ids, the
//! provider's status and counts) and `batch_items` (which items a batch holds, and what
//! became of each). Every lifecycle step is one small transaction written before the next
//! step starts, so a rerun after a kill knows exactly where each batch stood. Applying a
//! finished batch's results marks its items done or failed, records their attempts and
//! closes the batch in one transaction: results are applied once and never lost.
//!
//! An item is in the batch lane while a batch that is not yet applied holds it; such items
//! are left out of [`Store::pending`], so the online lane never sends them too.

use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// The batch lane's schema, created with the rest by [`Store::open`].
pub(super) const BATCH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    local_id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    cut_at_ms INTEGER NOT NULL,
    created_at_ms INTEGER,
    ended_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS batch_items (
    local_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    result TEXT,
    PRIMARY KEY (local_id, seq)
);
CREATE INDEX IF NOT EXISTS batch_items_seq ON batch_items (seq);
";

/// The SQL condition (on `items`) of an item held by a batch not yet applied.
pub(super) const IN_OPEN_BATCH: &str =
    "EXISTS (SELECT 1 FROM batch_items bi JOIN batches b ON b.local_id = bi.local_id
     WHERE bi.seq = items.seq AND b.state != 'applied')";

/// Where a batch is in its lifecycle; each state is a checkpoint written before the next
/// step begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Its items are chosen; nothing sent yet.
    Cut,
    /// Its input file is uploaded (OpenAI); the file id is stored.
    Uploaded,
    /// A create request may have been sent: look the provider's batches up by the key
    /// before creating again.
    Creating,
    /// The provider holds it; the batch id is stored. Polled until it ends.
    Created,
    /// The provider says it ended (completed, expired, cancelled or failed).
    Ended,
    /// Its results are applied to the items: closed.
    Applied,
}

impl BatchState {
    /// The name stored in the db.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Cut => "cut",
            BatchState::Uploaded => "uploaded",
            BatchState::Creating => "creating",
            BatchState::Created => "created",
            BatchState::Ended => "ended",
            BatchState::Applied => "applied",
        }
    }

    fn parse(s: &str) -> BatchState {
        match s {
            "uploaded" => BatchState::Uploaded,
            "creating" => BatchState::Creating,
            "created" => BatchState::Created,
            "ended" => BatchState::Ended,
            "applied" => BatchState::Applied,
            _ => BatchState::Cut,
        }
    }
}

/// One batch as stored (and as `status --json` lists it under `batches`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BatchRow {
    /// Our number for it, in cut order.
    pub local_id: u64,
    /// The key sent as metadata, to find it at the provider after a kill.
    pub key: String,
    /// Its lifecycle checkpoint.
    pub state: BatchState,
    /// Items it holds.
    pub requests: u64,
    /// Estimated tokens of its requests (what the enqueued-token limit counts).
    pub tokens: u64,
    /// Bytes of its request lines.
    pub bytes: u64,
    /// The uploaded input file's id (OpenAI).
    pub file_id: Option<String>,
    /// The provider's batch id.
    pub batch_id: Option<String>,
    /// The provider's last reported status (`in_progress`, `completed`, ...).
    pub status: Option<String>,
    /// Requests the provider reports succeeded.
    pub completed: u64,
    /// Requests the provider reports failed (errored, expired, cancelled).
    pub failed: u64,
    /// The output file's id (OpenAI) or the results URL (Anthropic), once ended.
    pub output_file_id: Option<String>,
    /// The error file's id (OpenAI), once ended.
    pub error_file_id: Option<String>,
    /// Unix ms when it was created at the provider.
    pub created_at_ms: Option<u64>,
}

/// What the provider last said about a batch, to store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchSeen {
    /// The provider's status.
    pub status: String,
    /// Requests succeeded so far.
    pub completed: u64,
    /// Requests failed so far.
    pub failed: u64,
    /// Whether the batch has ended (results can be fetched).
    pub ended: bool,
    /// The output file id or results URL.
    pub output: Option<String>,
    /// The error file id.
    pub errors: Option<String>,
}

/// What becomes of one item of an applied batch.
#[derive(Clone, Debug, PartialEq)]
pub enum LineApply {
    /// Done: the result is stored and the item marked done.
    Done {
        /// The item's sequence number.
        seq: u64,
        /// The response's status.
        http_status: u16,
        /// The response body.
        body: String,
        /// The response's `usage` JSON text.
        usage: Option<String>,
    },
    /// Failed for good: the last response is stored and the item marked failed.
    Failed {
        /// The item's sequence number.
        seq: u64,
        /// The response's status, if the line had one.
        http_status: Option<u16>,
        /// The response body or error object.
        body: Option<String>,
        /// Why it failed.
        error: String,
    },
    /// A failed attempt that may be retried: recorded, and the item goes back to the queue.
    Retry {
        /// The item's sequence number.
        seq: u64,
        /// The response's status, if the line had one.
        http_status: Option<u16>,
        /// Why it failed.
        error: String,
    },
    /// Not attempted (expired, cancelled, missing): back to the queue, no attempt spent.
    Requeue {
        /// The item's sequence number.
        seq: u64,
    },
}

/// How many items of an applied batch went each way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Marked done.
    pub done: u64,
    /// Marked failed.
    pub failed: u64,
    /// Back in the queue after a retryable failure.
    pub retried: u64,
    /// Back in the queue, not attempted.
    pub requeued: u64,
}

fn now_ms() -> u64 {
    crate::clock::unix_ms(std::time::SystemTime::now())
}

impl Store {
    /// Cuts a batch: records that the items `seqs` (in order) go into a new batch whose key
    /// starts with `key_prefix`, in one transaction. Returns its local id.
    pub fn cut_batch(
        &mut self,
        key_prefix: &str,
        seqs: &[u64],
        tokens: u64,
        bytes: u64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            doing: "cutting a batch",
            source,
        };
        let tx = (self.conn)
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let next: u64 = tx
            .query_row(
                "SELECT COALESCE(MAX(local_id), 0) + 1 FROM batches",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        tx.execute(
            "INSERT INTO batches (local_id, key, state, requests, tokens, bytes, cut_at_ms)
             VALUES (?1, ?2, 'cut', ?3, ?4, ?5, ?6)",
            params![
                next,
                format!("{key_prefix}-{next}"),
                seqs.len() as u64,
                tokens,
                bytes,
                now_ms()
            ],
        )
        .map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO batch_items (local_id, seq) VALUES (?1, ?2)")
                .map_err(err)?;
            for seq in seqs {
                insert.execute(params![next, seq]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(next)
    }

    /// Every batch in cut order; only those not yet applied when `open_only`.
    pub fn batches(&self, open_only: bool) -> Result<Vec<BatchRow>, StoreError> {
        let filter = if open_only {
            "WHERE state != 'applied'"
        } else {
            ""
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT local_id, key, state, requests, tokens, bytes, file_id, batch_id, status,
                        completed, failed, output_file_id, error_file_id, created_at_ms
                 FROM batches {filter} ORDER BY local_id"
            ))
            .map_err(self.err("reading batches"))?;
        stmt.query_map([], |r| {
            Ok(BatchRow {
                local_id: r.get(0)?,
                key: r.get(1)?,
                state: BatchState::parse(&r.get::<_, String>(2)?),
                requests: r.get(3)?,
                tokens: r.get(4)?,
                bytes: r.get(5)?,
                file_id: r.get(6)?,
                batch_id: r.get(7)?,
                status: r.get(8)?,
                completed: r.get(9)?,
                failed: r.get(10)?,
                output_file_id: r.get(11)?,
                error_file_id: r.get(12)?,
                created_at_ms: r.get(13)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(self.err("reading batches"))
    }

    /// The items of batch `local_id` as pending rows, in the order they were cut.
    pub fn batch_items(&self, local_id: u64) -> Result<Vec<super::PendingRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT i.seq, i.id, i.priority, i.tokens, i.payload, i.attempts,
                        (SELECT COUNT(*) FROM attempts a WHERE a.seq = i.seq AND a.outcome = 'transient')
                 FROM batch_items bi JOIN items i ON i.seq = bi.seq
                 WHERE bi.local_id = ?1 ORDER BY bi.rowid",
            )
            .map_err(self.err("reading a batch's items"))?;
        stmt.query_map([local_id], |r| {
            Ok(super::PendingRow {
                seq: r.get(0)?,
                id: r.get(1)?,
                priority: r.get(2)?,
                tokens: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
                failures: r.get(6)?,
                steps: None,
                pages: Vec::new(),
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(self.err("reading a batch's items"))
    }

    fn set_batch(
        &self,
        local_id: u64,
        set: &str,
        values: &[&dyn rusqlite::ToSql],
    ) -> Result<(), StoreError> {
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&local_id];
        all.extend_from_slice(values);
        self.conn
            .execute(
                &format!("UPDATE batches SET {set} WHERE local_id = ?1"),
                all.as_slice(),
            )
            .map(|_| ())
            .map_err(self.err("checkpointing a batch"))
    }

    /// Checkpoint: the input file is uploaded as `file_id`.
    pub fn batch_uploaded(&self, local_id: u64, file_id: &str) -> Result<(), StoreError> {
        self.set_batch(local_id, "state = 'uploaded', file_id = ?2", &[&file_id])
    }

    /// Checkpoint: a create was refused before the batch existed; it waits to be sent again.
    pub fn batch_recut(&self, local_id: u64) -> Result<(), StoreError> {
        self.set_batch(local_id, "state = 'cut'", &[])
    }

    /// Closes a batch that was never sent, its items back in the queue.
    pub fn batch_drop(&mut self, local_id: u64) -> Result<(), StoreError> {
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE;
                 UPDATE batch_items SET result = 'requeued' WHERE local_id = {local_id};
                 UPDATE batches SET state = 'applied', status = 'dropped' WHERE local_id = {local_id};
                 COMMIT;"
            ))
            .map_err(self.err("closing an unsent batch"))
    }

    /// Pending items that came back from a batch to be retried or sent again.
    pub fn batch_returned(&self) -> Result<std::collections::HashSet<u64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT bi.seq FROM batch_items bi JOIN items i ON i.seq = bi.seq
                 WHERE bi.result IN ('retry', 'requeued') AND i.status = 'pending'",
            )
            .map_err(self.err("reading returned items"))?;
        stmt.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(self.err("reading returned items"))
    }

    /// Checkpoint: a create request is about to be sent.
    pub fn batch_creating(&self, local_id: u64) -> Result<(), StoreError> {
        self.set_batch(local_id, "state = 'creating'", &[])
    }

    /// Checkpoint: the provider holds the batch as `batch_id`.
    pub fn batch_created(&self, local_id: u64, batch_id: &str) -> Result<(), StoreError> {
        self.set_batch(
            local_id,
            "state = 'created', batch_id = ?2, created_at_ms = COALESCE(created_at_ms, ?3)",
            &[&batch_id, &now_ms()],
        )
    }

    /// Checkpoint: what the provider last said; the batch becomes `ended` when it has.
    pub fn batch_seen(&self, local_id: u64, seen: &BatchSeen) -> Result<(), StoreError> {
        let state = if seen.ended { "ended" } else { "created" };
        self.set_batch(
            local_id,
            "state = ?2, status = ?3, completed = ?4, failed = ?5, output_file_id = ?6,
             error_file_id = ?7, ended_at_ms = CASE WHEN ?2 = 'ended' THEN ?8 END",
            &[
                &state,
                &seen.status,
                &seen.completed,
                &seen.failed,
                &seen.output,
                &seen.errors,
                &now_ms(),
            ],
        )
    }

    /// Applies a finished batch: every item's fate in `lines`, its attempt recorded, and
    /// the batch closed, all in one transaction. A batch already applied is left alone.
    pub fn apply_batch(
        &mut self,
        local_id: u64,
        lines: &[LineApply],
    ) -> Result<Applied, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            doing: "applying a batch's results",
            source,
        };
        let tx = (self.conn)
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM batches WHERE local_id = ?1",
                [local_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let mut applied = Applied::default();
        if state.as_deref() != Some("ended") {
            return Ok(applied);
        }
        let now = now_ms();
        let latency: u64 = tx
            .query_row(
                "SELECT ?2 - COALESCE(created_at_ms, cut_at_ms) FROM batches WHERE local_id = ?1",
                params![local_id, now],
                |r| r.get(0),
            )
            .map_err(err)?;
        for line in lines {
            let (seq, result) = apply_line(&tx, line, now, latency).map_err(err)?;
            match result {
                "done" => applied.done += 1,
                "failed" => applied.failed += 1,
                "retry" => applied.retried += 1,
                _ => applied.requeued += 1,
            }
            tx.prepare_cached(
                "UPDATE batch_items SET result = ?3 WHERE local_id = ?1 AND seq = ?2",
            )
            .and_then(|mut s| s.execute(params![local_id, seq, result]))
            .map_err(err)?;
        }
        tx.execute(
            "UPDATE batches SET state = 'applied' WHERE local_id = ?1",
            [local_id],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(applied)
    }

    /// Writes the progress row of a batch-only session (`state`: `running`, `stopped`,
    /// `finished`), keeping the limiter state an online session saved.
    pub fn batch_heartbeat(&self, state: &str, elapsed_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO progress (id, state, pid, heartbeat_ms, elapsed_ms, in_flight, limits, limiter_state)
                 VALUES (1, ?1, ?2, ?3, ?4, 0, '[]', '[]')
                 ON CONFLICT(id) DO UPDATE SET state = ?1, pid = ?2, heartbeat_ms = ?3, elapsed_ms = ?4, in_flight = 0",
                params![state, std::process::id(), now_ms(), elapsed_ms],
            )
            .map(|_| ())
            .map_err(self.err("writing the batch lane's heartbeat"))
    }

    /// Items finished through the batch lane.
    pub fn batch_done(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM batch_items WHERE result = 'done'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err("counting batch results"))
    }
}

/// Writes one item's fate; returns its seq and the result name stored in `batch_items`.
fn apply_line(
    tx: &rusqlite::Transaction<'_>,
    line: &LineApply,
    now: u64,
    latency: u64,
) -> rusqlite::Result<(u64, &'static str)> {
    let attempt = |seq: u64, status: Option<u16>, outcome: &str, error: Option<&str>| {
        tx.prepare_cached("UPDATE items SET attempts = attempts + 1 WHERE seq = ?1")?
            .execute([seq])?;
        let number: u32 = tx
            .prepare_cached("SELECT attempts FROM items WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))?;
        // The counters `status` reads count batch attempts as the online lane's are.
        super::queue::count_attempt(tx, seq, number, status)?;
        tx.prepare_cached(
            "INSERT INTO attempts (seq, attempt, sent_at_ms, latency_ms, http_status, outcome, error)
             SELECT seq, attempts, ?2, ?3, ?4, ?5, ?6 FROM items WHERE seq = ?1",
        )?
        .execute(params![seq, now.saturating_sub(latency), latency, status, outcome, error])
    };
    let finish = "UPDATE items SET status = ?2, http_status = ?3, body = ?4, usage = ?5,
                  latency_ms = ?6, error = ?7, finished_at_ms = ?8 WHERE seq = ?1 AND status = 'pending'";
    Ok(match line {
        LineApply::Done {
            seq,
            http_status,
            body,
            usage,
        } => {
            attempt(*seq, Some(*http_status), "done", None)?;
            let changed = tx.prepare_cached(finish)?.execute(params![
                seq,
                "done",
                http_status,
                body,
                usage,
                latency,
                None::<String>,
                now
            ])?;
            super::queue::bump(tx, "done", i64::try_from(changed).unwrap_or(0))?;
            (*seq, "done")
        }
        LineApply::Failed {
            seq,
            http_status,
            body,
            error,
        } => {
            attempt(*seq, *http_status, "failed", Some(error))?;
            let changed = tx.prepare_cached(finish)?.execute(params![
                seq,
                "failed",
                http_status,
                body,
                None::<String>,
                latency,
                error,
                now
            ])?;
            super::queue::bump(tx, "failed", i64::try_from(changed).unwrap_or(0))?;
            (*seq, "failed")
        }
        LineApply::Retry {
            seq,
            http_status,
            error,
        } => {
            attempt(*seq, *http_status, "transient", Some(error))?;
            (*seq, "retry")
        }
        LineApply::Requeue { seq } => (*seq, "requeued"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worklist::{Item, Payload};

    fn store_with(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("t.db")).expect("open");
        let items = (1..=n).map(|seq| Item {
            seq,
            id: format!("i{seq}"),
            line: seq,
            priority: 0,
            tokens: None,
            payload: Payload::Vars(serde_json::Map::new()),
        });
        store.import(items).expect("import");
        (dir, store)
    }

    #[test]
    fn batched_items_leave_the_online_queue_until_their_batch_is_applied() {
        let (_dir, mut store) = store_with(4);
        let id = store.cut_batch("k", &[1, 2, 3], 30, 300).expect("cut");
        let pending = |s: &Store| {
            s.pending()
                .expect("pending")
                .iter()
                .map(|r| r.seq)
                .collect::<Vec<_>>()
        };
        assert_eq!(pending(&store), vec![4]);
        store.batch_uploaded(id, "file-1").expect("uploaded");
        store.batch_creating(id).expect("creating");
        store.batch_created(id, "batch-1").expect("created");
        let seen = BatchSeen {
            status: "completed".into(),
            completed: 1,
            failed: 2,
            ended: true,
            output: Some("out".into()),
            errors: Some("err".into()),
        };
        store.batch_seen(id, &seen).expect("seen");
        let lines = [
            LineApply::Done {
                seq: 1,
                http_status: 200,
                body: "{}".into(),
                usage: None,
            },
            LineApply::Retry {
                seq: 2,
                http_status: Some(500),
                error: "server_error".into(),
            },
            LineApply::Requeue { seq: 3 },
        ];
        let applied = store.apply_batch(id, &lines).expect("apply");
        assert_eq!((applied.done, applied.retried, applied.requeued), (1, 1, 1));
        assert_eq!(pending(&store), vec![2, 3, 4]);
        let again = store.apply_batch(id, &lines).expect("apply again");
        assert_eq!(
            again,
            Applied::default(),
            "an applied batch is never applied twice"
        );
        let counts = store.counts().expect("counts");
        assert_eq!((counts.done, counts.pending), (1, 3));
        let rows = store.batches(false).expect("batches");
        assert_eq!(rows[0].state, BatchState::Applied);
        assert_eq!(rows[0].key, "k-1");
        assert!(store.batches(true).expect("open").is_empty());
        let retried = store.pending().expect("pending");
        assert_eq!(
            retried[0].failures, 1,
            "a retried line counts as a transient failure"
        );
    }
}
