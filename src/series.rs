//! The run's time series: what happened in each interval, for the HTML report.
//!
//! Owns the pure aggregation: turning one heartbeat's worth of observations (the attempts
//! recorded since the last one, in flight, each limit's use, the run's state) into a
//! [`Point`], merging points that fall into the same interval, coarsening a long run's
//! points so one run keeps at most [`MAX_POINTS`], and latency percentiles. The store
//! (`store::series`) feeds it from the writer thread at each progress write and keeps the
//! points; the runner does not call it. No I/O, no clock: times are unix ms given in.

use serde::{Deserialize, Serialize};

/// The finest interval, in ms.
pub const INTERVAL_MS: u64 = 1_000;

/// Most points one run keeps; past it, intervals double in width.
pub const MAX_POINTS: usize = 10_000;

/// One limit's use at the end of an interval (the highest seen in it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitUse {
    /// The limit's name.
    pub name: String,
    /// Its unit (`requests`, `tokens`, `usd` in micro-dollars, ...).
    pub unit: String,
    /// Units in use in its current window (for a run budget: spent so far).
    pub used: u64,
    /// Units its window holds.
    pub limit: u64,
    /// Window length in seconds, 0 for a budget on the whole run, a day or more for a
    /// calendar quota.
    pub window_s: f64,
}

/// What one attempt contributes to its interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempt {
    /// Time to response or failure, ms.
    pub latency_ms: u64,
    /// The HTTP status, if a response came back.
    pub http_status: Option<u16>,
    /// Answered 429 (or reported rate-limited).
    pub rate_limited: bool,
    /// Not the item's first attempt.
    pub retry: bool,
    /// Finished its item as done.
    pub done: bool,
    /// Finished its item as failed for good.
    pub failed: bool,
    /// Tokens its response's `usage` reports (0 when none).
    pub tokens: u64,
}

/// One interval of the run. Counts are of attempts that completed in it; gauges are the
/// highest seen in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Unix ms where the interval starts (a multiple of `width_ms`).
    pub start_ms: u64,
    /// The interval's length, ms.
    pub width_ms: u64,
    /// Requests completed (answered or failed in transport).
    pub sent: u64,
    /// Items finished done.
    pub done: u64,
    /// Items finished failed.
    pub failed: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Attempts after an item's first.
    pub retries: u64,
    /// Tokens the responses reported.
    pub tokens: u64,
    /// Spent so far on `usd` limits, micro-dollars (a cumulative reading, not a count).
    pub cost_micro_usd: u64,
    /// Median latency, ms (for merged intervals: their request-weighted mean).
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile latency, ms (for merged intervals: the highest).
    pub latency_p95_ms: Option<u64>,
    /// Most requests in flight at once.
    pub in_flight: u64,
    /// `running`, `paused`, `stopped` or `finished`, as last reported in the interval.
    pub state: String,
    /// Each limit's use.
    pub limits: Vec<LimitUse>,
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty. Sorts `values`.
///
/// ```
/// use ratebound::series::percentile;
/// assert_eq!(percentile(&mut [30, 10, 20, 40], 0.5), Some(20));
/// assert_eq!(percentile(&mut [], 0.5), None);
/// ```
pub fn percentile(values: &mut [u64], q: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (q * values.len() as f64).ceil().max(1.0) as usize;
    values.get(rank.min(values.len()) - 1).copied()
}

/// The start of the `width_ms` interval holding unix ms `at_ms`.
pub fn interval_start(at_ms: u64, width_ms: u64) -> u64 {
    at_ms - at_ms % width_ms.max(1)
}

impl Point {
    /// The 1-second point for a heartbeat at `at_ms` that saw `attempts` complete since the
    /// last one, `in_flight` requests out, `limits` in use and the run in `state`.
    pub fn observe(
        at_ms: u64,
        attempts: &[Attempt],
        in_flight: u64,
        state: &str,
        limits: Vec<LimitUse>,
    ) -> Point {
        let mut latencies: Vec<u64> = attempts.iter().map(|a| a.latency_ms).collect();
        let count = |f: fn(&Attempt) -> bool| attempts.iter().filter(|a| f(a)).count() as u64;
        let cost_micro_usd = (limits.iter())
            .filter(|l| l.unit == "usd")
            .map(|l| l.used)
            .max()
            .unwrap_or(0);
        Point {
            start_ms: interval_start(at_ms, INTERVAL_MS),
            width_ms: INTERVAL_MS,
            sent: attempts.len() as u64,
            done: count(|a| a.done),
            failed: count(|a| a.failed),
            rate_limited: count(|a| a.rate_limited),
            server_errors: count(|a| a.http_status.is_some_and(|s| s >= 500)),
            retries: count(|a| a.retry),
            tokens: attempts.iter().map(|a| a.tokens).sum(),
            cost_micro_usd,
            latency_p95_ms: percentile(&mut latencies, 0.95),
            latency_p50_ms: percentile(&mut latencies, 0.5),
            in_flight,
            state: state.to_string(),
            limits,
        }
    }

    /// Adds `later` (an observation of the same or a later time) into this point, keeping
    /// this point's start and the wider of the two widths.
    pub fn merge(&mut self, later: &Point) {
        let p50 = match (self.latency_p50_ms, later.latency_p50_ms) {
            (Some(a), Some(b)) => {
                let total = (self.sent + later.sent).max(1);
                Some((a * self.sent + b * later.sent).div_ceil(total))
            }
            (a, b) => a.or(b),
        };
        self.latency_p50_ms = p50;
        self.latency_p95_ms = self.latency_p95_ms.max(later.latency_p95_ms);
        self.width_ms = self.width_ms.max(later.width_ms);
        self.sent += later.sent;
        self.done += later.done;
        self.failed += later.failed;
        self.rate_limited += later.rate_limited;
        self.server_errors += later.server_errors;
        self.retries += later.retries;
        self.tokens += later.tokens;
        self.cost_micro_usd = self.cost_micro_usd.max(later.cost_micro_usd);
        self.in_flight = self.in_flight.max(later.in_flight);
        self.state.clone_from(&later.state);
        for l in &later.limits {
            match self.limits.iter_mut().find(|m| m.name == l.name) {
                Some(m) if l.used >= m.used => *m = l.clone(),
                Some(_) => {}
                None => self.limits.push(l.clone()),
            }
        }
    }
}

/// `points` (in time order) regrouped into intervals of `width_ms`, each starting at a
/// multiple of it.
pub fn coarsen(points: &[Point], width_ms: u64) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    for p in points {
        let start = interval_start(p.start_ms, width_ms);
        match out.last_mut() {
            Some(last) if last.start_ms == start => last.merge(p),
            _ => {
                let mut first = p.clone();
                first.start_ms = start;
                first.width_ms = width_ms;
                out.push(first);
            }
        }
    }
    out
}

/// The width to coarsen `points` to so they fit [`MAX_POINTS`], or `None` when they fit.
/// Widths double, so intervals of every session line up.
pub fn coarser_width(points: &[Point]) -> Option<u64> {
    if points.len() <= MAX_POINTS {
        return None;
    }
    let widest = points
        .iter()
        .map(|p| p.width_ms)
        .max()
        .unwrap_or(INTERVAL_MS);
    Some(widest.max(INTERVAL_MS) * 2)
}

#[cfg(test)]
mod tests;
