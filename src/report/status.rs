//! `ratebound status`: where a run stands, live or stopped, read from its db alone.
//!
//! Owns the status record (its JSON field names are pinned by DESIGN.md's contract) and its
//! human rendering. A run is `running` while its runner's heartbeat is fresh; a runner that
//! vanished without saying goodbye (kill -9, power loss) shows as `stopped`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::limiter::BucketUsage;
use crate::store::{Store, StoreError, unix_ms};

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
    pub state: String,
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
}

/// Reads the status of the run in `store` as of `now`.
pub fn read(store: &Store, now: SystemTime) -> Result<Status, StoreError> {
    let counts = store.counts()?;
    let requests = store.request_counts()?;
    let progress = store.progress()?;
    let now_ms = unix_ms(now);
    let live = progress.as_ref().is_some_and(|p| p.is_live(now_ms));
    let state = if counts.pending == 0 && counts.total > 0 {
        "finished"
    } else if live && progress.as_ref().is_some_and(|p| p.state == "running") {
        "running"
    } else if progress.as_ref().is_some_and(|p| p.state == "paused") {
        "paused"
    } else {
        "stopped"
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
        state: state.to_string(),
        requests_sent: requests.sent,
        responses_429: requests.rate_limited,
        retries: requests.retries,
        started_at,
        elapsed_s,
        items_per_s,
        eta_s,
        limits: progress.map(|p| p.limits).unwrap_or_default(),
        worklist: store.meta("worklist")?,
    })
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
    out
}
