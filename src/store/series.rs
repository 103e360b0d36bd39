//! The `series` table: the run's time series, one row per interval, for `ratebound report`.
//!
//! Owns the table, its writing at each progress write (on the writer thread, inside the
//! same transaction) and its reading. At each heartbeat it reads the attempts recorded
//! since the last one (by rowid, remembered in `meta`), turns them into a
//! [`Point`](crate::series::Point) with the heartbeat's in-flight count, state and
//! limits, and merges it into the interval it falls in; past
//! [`MAX_POINTS`](crate::series::MAX_POINTS) rows every interval is widened. The
//! aggregation itself is `report::series`; this file is only SQL.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;

use super::{ProgressRow, Store, StoreError};
use crate::series::{self, Attempt, LimitUse, Point};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    start_ms INTEGER PRIMARY KEY,
    width_ms INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    done INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    rate_limited INTEGER NOT NULL,
    server_errors INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    cost_micro_usd INTEGER NOT NULL,
    latency_p50_ms INTEGER,
    latency_p95_ms INTEGER,
    in_flight INTEGER NOT NULL,
    state TEXT NOT NULL,
    limits TEXT NOT NULL
);";

const COLUMNS: &str = "start_ms, width_ms, sent, done, failed, rate_limited, server_errors, retries, tokens, cost_micro_usd, latency_p50_ms, latency_p95_ms, in_flight, state, limits";

/// The `meta` key holding the rowid of the last attempt counted in the series.
const LAST_ATTEMPT: &str = "series_last_attempt";

/// Records the heartbeat `p` in the series: the attempts since the last heartbeat, merged
/// into the interval holding `p.heartbeat_ms`. Runs inside the progress write's
/// transaction.
pub(super) fn on_heartbeat(tx: &Transaction<'_>, p: &ProgressRow) -> rusqlite::Result<()> {
    tx.execute_batch(SCHEMA)?;
    let last: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [LAST_ATTEMPT],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (attempts, newest) = attempts_after(tx, last)?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
        params![LAST_ATTEMPT, newest.to_string()],
    )?;
    let limits = (p.limits.iter())
        .map(|l| LimitUse {
            name: l.name.clone(),
            unit: l.unit.clone(),
            used: l.used,
            limit: l.limit,
            window_s: l.window_s,
        })
        .collect();
    let point = Point::observe(
        p.heartbeat_ms,
        &attempts,
        p.in_flight,
        p.state.as_str(),
        limits,
    );
    let covering = tx
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM series WHERE start_ms <= ?1 ORDER BY start_ms DESC LIMIT 1"
            ),
            [p.heartbeat_ms],
            read_point,
        )
        .optional()?
        .filter(|c| p.heartbeat_ms < c.start_ms + c.width_ms);
    let merged = match covering {
        Some(mut c) => {
            c.merge(&point);
            c
        }
        None => point,
    };
    insert(tx, &merged)?;
    compact(tx)
}

/// The attempts recorded after rowid `last`, and the newest rowid seen (`last` if none).
fn attempts_after(tx: &Transaction<'_>, last: i64) -> rusqlite::Result<(Vec<Attempt>, i64)> {
    let mut stmt = tx.prepare_cached(
        "SELECT a.rowid, a.latency_ms, a.http_status, a.outcome, a.attempt, i.status, i.attempts, i.usage
         FROM attempts a JOIN items i ON i.seq = a.seq WHERE a.rowid > ?1 ORDER BY a.rowid",
    )?;
    let mut newest = last;
    let mut out = Vec::new();
    let mut rows = stmt.query([last])?;
    while let Some(r) = rows.next()? {
        newest = r.get(0)?;
        let http_status: Option<u16> = r.get(2)?;
        let outcome: String = r.get(3)?;
        let attempt: u32 = r.get(4)?;
        let status: String = r.get(5)?;
        let attempts: u32 = r.get(6)?;
        let done = outcome == "done";
        let usage: Option<String> = r.get(7)?;
        out.push(Attempt {
            latency_ms: r.get(1)?,
            http_status,
            rate_limited: outcome == "rate_limited" || http_status == Some(429),
            retry: attempt > 1,
            done,
            failed: status == "failed" && attempt == attempts && !done,
            tokens: if done {
                usage.as_deref().map_or(0, tokens_of)
            } else {
                0
            },
        });
    }
    Ok((out, newest))
}

/// Tokens a stored `usage` reports: `total_tokens`, else input plus output (Anthropic).
fn tokens_of(usage: &str) -> u64 {
    let Ok(v) = serde_json::from_str::<Value>(usage) else {
        return 0;
    };
    let field = |k: &str| v.get(k).and_then(Value::as_u64);
    field("total_tokens")
        .unwrap_or_else(|| field("input_tokens").unwrap_or(0) + field("output_tokens").unwrap_or(0))
}

fn insert(tx: &Transaction<'_>, p: &Point) -> rusqlite::Result<()> {
    let limits = serde_json::to_string(&p.limits).unwrap_or_else(|_| "[]".into());
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO series ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        p.start_ms,
        p.width_ms,
        p.sent,
        p.done,
        p.failed,
        p.rate_limited,
        p.server_errors,
        p.retries,
        p.tokens,
        p.cost_micro_usd,
        p.latency_p50_ms,
        p.latency_p95_ms,
        p.in_flight,
        p.state.as_str(),
        limits
    ])?;
    Ok(())
}

fn read_point(r: &rusqlite::Row<'_>) -> rusqlite::Result<Point> {
    let limits: String = r.get(14)?;
    Ok(Point {
        start_ms: r.get(0)?,
        width_ms: r.get(1)?,
        sent: r.get(2)?,
        done: r.get(3)?,
        failed: r.get(4)?,
        rate_limited: r.get(5)?,
        server_errors: r.get(6)?,
        retries: r.get(7)?,
        tokens: r.get(8)?,
        cost_micro_usd: r.get(9)?,
        latency_p50_ms: r.get(10)?,
        latency_p95_ms: r.get(11)?,
        in_flight: r.get(12)?,
        state: r.get(13)?,
        limits: serde_json::from_str(&limits).unwrap_or_default(),
    })
}

fn all_points(conn: &rusqlite::Connection) -> rusqlite::Result<Vec<Point>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM series ORDER BY start_ms"))?;
    stmt.query_map([], read_point)?.collect()
}

/// Widens every interval while the table holds more than `MAX_POINTS` rows.
fn compact(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let count: usize = tx.query_row("SELECT count(*) FROM series", [], |r| r.get(0))?;
    if count <= series::MAX_POINTS {
        return Ok(());
    }
    let mut points = all_points(tx)?;
    while let Some(width) = series::coarser_width(&points) {
        points = series::coarsen(&points, width);
    }
    tx.execute("DELETE FROM series", [])?;
    points.iter().try_for_each(|p| insert(tx, p))
}

impl Store {
    /// The run's time series in time order; empty for a db written before it was kept.
    pub fn series(&self) -> Result<Vec<Point>, StoreError> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'series'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err("reading the time series"))?;
        if !exists {
            return Ok(Vec::new());
        }
        all_points(&self.conn).map_err(self.err("reading the time series"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_total_or_input_plus_output() {
        assert_eq!(tokens_of(r#"{"total_tokens":40}"#), 40);
        assert_eq!(tokens_of(r#"{"input_tokens":5,"output_tokens":7}"#), 12);
        assert_eq!(tokens_of("nope"), 0);
    }
}
