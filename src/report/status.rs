//! `ratebound status`: where a run stands, live or stopped, read from its db alone.
//!
//! Owns the status record (its JSON field names are pinned by DESIGN.md's contract) and its
//! human rendering. A run is `running` while its runner's heartbeat is fresh; a runner that
//! vanished without saying goodbye (kill -9, power loss) shows as `stopped`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::clock::unix_ms;
use crate::limiter::BucketUsage;
use crate::session::RunState;
use crate::store::{Store, StoreError};

/// The status of a run (the JSON of `status --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// Items in the run.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items failed permanently.
    pub failed: u64,
    /// Items not finished.
    pub pending: u64,
    /// Requests in flight now (0 unless running).
    pub in_flight: u64,
    /// `running`, `paused`, `stopped` or `finished`.
    pub state: RunState,
    /// Requests sent over the whole run.
    pub requests_sent: u64,
    /// 429 responses over the whole run.
    pub responses_429: u64,
    /// Attempts after an item's first.
    pub retries: u64,
    /// When the run first started, RFC 3339 UTC.
    pub started_at: Option<String>,
    /// Active run time over all sessions, in seconds.
    pub elapsed_s: f64,
    /// Items finished per second of active time.
    pub items_per_s: f64,
    /// Seconds left at that pace (null when unknown or finished).
    pub eta_s: Option<f64>,
    /// Per-limit usage at the last heartbeat.
    pub limits: Vec<BucketUsage>,
    /// The work list of this run.
    pub worklist: Option<String>,
    /// The batch lane's batches with their state and counts (`run --via batch|auto`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<crate::store::BatchRow>,
}

/// Reads the status of the run in `store` as of `now`.
pub fn read(store: &Store, now: SystemTime) -> Result<Status, StoreError> {
    let counts = store.counts()?;
    let requests = store.request_counts()?;
    let progress = store.progress()?;
    let now_ms = unix_ms(now);
    let live = progress.as_ref().is_some_and(|p| p.is_live(now_ms));
    let state = if counts.pending == 0 && counts.total > 0 {
        RunState::Finished
    } else if live
        && progress
            .as_ref()
            .is_some_and(|p| p.state == RunState::Running)
    {
        RunState::Running
    } else if progress
        .as_ref()
        .is_some_and(|p| p.state == RunState::Paused)
    {
        RunState::Paused
    } else {
        RunState::Stopped
    };
    let elapsed_ms = progress.as_ref().map_or(0, |p| {
        let since = if live {
            now_ms.saturating_sub(p.heartbeat_ms)
        } else {
            0
        };
        p.elapsed_ms + since
    });
    let elapsed_s = elapsed_ms as f64 / 1000.0;
    let finished = counts.done + counts.failed;
    let items_per_s = if elapsed_s > 0.0 {
        finished as f64 / elapsed_s
    } else {
        0.0
    };
    let eta_s =
        (counts.pending > 0 && items_per_s > 0.0).then(|| counts.pending as f64 / items_per_s);
    let started_at = store
        .meta("started_at_ms")?
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        });
    Ok(Status {
        total: counts.total,
        done: counts.done,
        failed: counts.failed,
        pending: counts.pending,
        in_flight: if live {
            progress.as_ref().map_or(0, |p| p.in_flight)
        } else {
            0
        },
        state,
        requests_sent: requests.sent,
        responses_429: requests.rate_limited,
        retries: requests.retries,
        started_at,
        elapsed_s,
        items_per_s,
        eta_s,
        limits: progress.map(|p| p.limits).unwrap_or_default(),
        worklist: store.meta("worklist")?,
        // A db written before the batch lane has no batches table.
        batches: store.batches(false).unwrap_or_default(),
    })
}

/// The status of several dbs of one run (one per shard) as one: counts added up, the
/// liveliest state (`running` over `paused` over `stopped`; `finished` only when all are),
/// the earliest start, the longest active time (shards run side by side), and each limit's
/// usage added up by name (each runner's own share of a shared limit). One status is
/// returned as it is.
pub fn aggregate(all: Vec<Status>) -> Status {
    let mut all = all.into_iter();
    let Some(mut sum) = all.next() else {
        return Status {
            total: 0,
            done: 0,
            failed: 0,
            pending: 0,
            in_flight: 0,
            state: RunState::Stopped,
            requests_sent: 0,
            responses_429: 0,
            retries: 0,
            started_at: None,
            elapsed_s: 0.0,
            items_per_s: 0.0,
            eta_s: None,
            limits: Vec::new(),
            worklist: None,
            batches: Vec::new(),
        };
    };
    let rank = |state: RunState| RunState::ALL.iter().position(|s| *s == state);
    let mut more = false;
    for s in all {
        more = true;
        sum.total += s.total;
        sum.done += s.done;
        sum.failed += s.failed;
        sum.pending += s.pending;
        sum.in_flight += s.in_flight;
        sum.requests_sent += s.requests_sent;
        sum.responses_429 += s.responses_429;
        sum.retries += s.retries;
        if rank(s.state) > rank(sum.state) {
            sum.state = s.state;
        }
        sum.started_at = match (sum.started_at.take(), s.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        sum.elapsed_s = sum.elapsed_s.max(s.elapsed_s);
        sum.batches.extend(s.batches);
        for l in s.limits {
            match sum.limits.iter_mut().find(|m| m.name == l.name) {
                Some(m) => m.used += l.used,
                None => sum.limits.push(l),
            }
        }
    }
    if more {
        let finished = sum.done + sum.failed;
        sum.items_per_s = if sum.elapsed_s > 0.0 {
            finished as f64 / sum.elapsed_s
        } else {
            0.0
        };
        sum.eta_s = (sum.pending > 0 && sum.items_per_s > 0.0)
            .then(|| sum.pending as f64 / sum.items_per_s);
    }
    sum
}

/// The status as a few human lines.
pub fn render(s: &Status) -> String {
    let pct = if s.total == 0 {
        0.0
    } else {
        (s.done + s.failed) as f64 * 100.0 / s.total as f64
    };
    let mut out = format!(
        "state:     {}\nitems:     {} done, {} failed, {} pending of {} ({pct:.1}% finished)\nrequests:  {} sent, {} answered 429, {} retries, {} in flight\n",
        s.state,
        s.done,
        s.failed,
        s.pending,
        s.total,
        s.requests_sent,
        s.responses_429,
        s.retries,
        s.in_flight
    );
    out.push_str(&format!(
        "time:      {} active since {}, {:.1} items/s",
        humantime::format_duration(Duration::from_secs(s.elapsed_s.round() as u64)),
        s.started_at.as_deref().unwrap_or("never"),
        s.items_per_s
    ));
    if let Some(eta) = s.eta_s {
        out.push_str(&format!(
            ", about {} left",
            humantime::format_duration(Duration::from_secs(eta.ceil() as u64))
        ));
    }
    out.push('\n');
    for l in &s.limits {
        out.push_str(&format!(
            "limit:     {:<12} {:>10} used of {} {}\n",
            l.name,
            super::amount(l.used, &l.unit),
            super::amount(l.limit, &l.unit),
            super::period(l.window_s)
        ));
    }
    if let Some(line) = super::searching_line(&s.limits) {
        out.push_str(&format!(
            "rate:      {line}
"
        ));
    }
    for b in &s.batches {
        out.push_str(&format!(
            "batch:     {:<3} {:<9} {:<24} {} requests: {} succeeded, {} failed{}\n",
            b.local_id,
            b.state.as_str(),
            b.batch_id.as_deref().unwrap_or("-"),
            b.requests,
            b.completed,
            b.failed,
            b.status
                .as_deref()
                .map(|st| format!(" ({st})"))
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(done: u64, pending: u64, state: &str, started: &str, used: u64) -> Status {
        Status {
            total: done + pending,
            done,
            failed: 0,
            pending,
            in_flight: 0,
            state: state.parse().expect("a run state"),
            requests_sent: done,
            responses_429: 1,
            retries: 0,
            started_at: Some(started.into()),
            elapsed_s: 10.0 + done as f64,
            items_per_s: 0.0,
            eta_s: None,
            limits: vec![BucketUsage {
                name: "rpm".into(),
                unit: "requests".into(),
                used,
                limit: 600,
                window_s: 60.0,
            }],
            worklist: None,
            batches: Vec::new(),
        }
    }

    #[test]
    fn status_says_the_rate_is_searched_and_what_it_is_now() {
        let mut s = shard(10, 5, "running", "2026-11-23T10:00:05Z", 100);
        assert!(!render(&s).contains("searching"), "{}", render(&s));
        s.limits.push(BucketUsage {
            name: crate::limiter::SEARCHED.into(),
            unit: "requests".into(),
            used: 3,
            limit: 4_830,
            window_s: 100.0,
        });
        let text = render(&s);
        assert!(
            text.contains("rate:      searching the rate: 48.3 requests/s now"),
            "{text}"
        );
    }

    #[test]
    fn shards_add_up_into_one_status() {
        let sum = aggregate(vec![
            shard(10, 0, "finished", "2026-11-23T10:00:05Z", 100),
            shard(5, 5, "running", "2026-11-23T10:00:01Z", 200),
        ]);
        assert_eq!((sum.total, sum.done, sum.pending), (20, 15, 5));
        assert_eq!((sum.requests_sent, sum.responses_429), (15, 2));
        assert_eq!(sum.state, RunState::Running, "one shard still runs");
        assert_eq!(sum.started_at.as_deref(), Some("2026-11-23T10:00:01Z"));
        assert_eq!(sum.elapsed_s, 20.0, "shards run side by side");
        assert_eq!(
            sum.limits[0].used, 300,
            "each runner's share of a shared limit"
        );
        assert_eq!(sum.items_per_s, 0.75);
        let done = aggregate(vec![
            shard(1, 0, "finished", "2026-11-23T10:00:00Z", 0),
            shard(2, 0, "finished", "2026-11-23T10:00:00Z", 0),
        ]);
        assert_eq!(done.state, RunState::Finished);
    }
}
