//! `ratebound estimate`: a dry run in virtual time over the real limiter and scheduler.
//!
//! Owns the discrete-event simulation that predicts a run before anything is sent. It drives
//! the same [`Limiter`] and [`Scheduler`] the runner uses, jumping time from one event (a
//! "not before" instant, a completion) to the next, so a million items simulate in well under
//! a second. Pure: no I/O, no clock; every request takes the given latency.
//!
//! What it does not model yet: retries, 429s and provider headers (it assumes the config
//! states the true limits), and calendar quotas.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Nanos, nanos};
use crate::limiter::{Costs, Denied, LimitSpec, Limiter, NeverFits, Route, Unit};
use crate::scheduler::Scheduler;

/// One item to simulate: its priority, file order and estimated cost.
#[derive(Clone, Debug)]
pub struct SimItem {
    /// Higher first.
    pub priority: i64,
    /// File order.
    pub seq: u64,
    /// Estimated cost.
    pub costs: Costs,
    /// The limits it falls under.
    pub route: Route,
}

/// One limit's share of the prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitUse {
    /// The limit's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Units the whole run needs.
    pub needed: u64,
    /// The shortest time this limit alone allows for the run, in seconds.
    pub bound_s: f64,
    /// Average use of the limit's rate over the predicted makespan (0..1).
    pub utilization: f64,
}

/// The prediction (the JSON of `estimate --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Items in the work list.
    pub items: u64,
    /// Requests to send (one per item for now).
    pub requests: u64,
    /// Estimated tokens.
    pub tokens: u64,
    /// Predicted wall time of the run, in seconds.
    pub makespan_s: f64,
    /// What limits the run: a limit's name, or `workers` when concurrency binds.
    pub binding_limit: String,
    /// Per-limit needs, bounds and utilization.
    pub limits: Vec<LimitUse>,
    /// Workers used in the simulation.
    pub workers: usize,
    /// The smallest worker count reaching 99% of the throughput of `workers`.
    pub recommended_workers: usize,
    /// Latency assumed per request, in milliseconds.
    pub latency_ms: f64,
}

/// Simulates `items` under `limits` (bursts shrunk by `jitter` as the runner does) with
/// `workers` in flight at most and every request
/// taking `latency`; returns the instant the last response arrives.
pub fn simulate(
    items: &[SimItem],
    limits: &[LimitSpec],
    jitter: Duration,
    workers: usize,
    latency: Duration,
) -> Result<Nanos, NeverFits> {
    let mut limiter = Limiter::new(limits).with_jitter(jitter);
    let mut scheduler = Scheduler::new();
    for item in items {
        limiter.check_fits(&item.route, &item.costs)?;
        scheduler.push(item.priority, item.seq, item);
    }
    let latency = nanos(latency);
    let workers = workers.max(1);
    let mut in_flight: BinaryHeap<Reverse<Nanos>> = BinaryHeap::new();
    let mut now: Nanos = 0;
    let mut end: Nanos = 0;
    loop {
        while in_flight.peek().is_some_and(|Reverse(t)| *t <= now) {
            in_flight.pop();
        }
        let mut next_admission = None;
        while in_flight.len() < workers {
            let Some(item) = scheduler.peek(now) else {
                break;
            };
            match limiter.reserve(&item.route, &item.costs, now) {
                Ok(reservation) => {
                    limiter.settle(reservation, &item.costs, now);
                    scheduler.pop(now);
                    in_flight.push(Reverse(now + latency));
                    end = end.max(now + latency);
                }
                Err(Denied::NotUntil(n)) => {
                    next_admission = Some(n.at);
                    break;
                }
                Err(Denied::Never(e)) => return Err(*e),
            }
        }
        let next_completion = in_flight.peek().map(|Reverse(t)| *t);
        now = match (scheduler.is_empty(), next_admission, next_completion) {
            (true, _, None) => return Ok(end),
            (true, _, Some(c)) => c,
            (false, Some(a), Some(c)) if in_flight.len() < workers => a.min(c),
            (false, Some(a), None) => a,
            (false, _, Some(c)) => c,
            (false, None, None) => return Ok(end),
        };
    }
}

/// Predicts the run of `items` and finds the binding limit and the workers it needs.
pub fn estimate(
    items: &[SimItem],
    limits: &[LimitSpec],
    jitter: Duration,
    workers: usize,
    latency: Duration,
) -> Result<Estimate, NeverFits> {
    let makespan = simulate(items, limits, jitter, workers, latency)?;
    let makespan_s = makespan as f64 / 1e9;
    let total = |unit: &Unit| items.iter().map(|i| i.costs.get(unit)).sum::<u64>();
    let uses: Vec<LimitUse> = limits
        .iter()
        .enumerate()
        .map(|(index, l)| {
            // Only the items this limit applies to (its scope) count against it.
            let needed = items
                .iter()
                .filter(|i| i.route.contains(index))
                .map(|i| i.costs.get(&l.unit))
                .sum::<u64>();
            let rate_per_s = l.rate_per_s();
            let burst = l.initial();
            let bound_s = if rate_per_s > 0.0 {
                needed.saturating_sub(burst) as f64 / rate_per_s
            } else {
                0.0
            };
            LimitUse {
                name: l.name.clone(),
                unit: l.unit.name().to_string(),
                needed,
                bound_s,
                utilization: if makespan_s > 0.0 && rate_per_s > 0.0 {
                    (needed as f64 / (rate_per_s * makespan_s + burst as f64)).min(1.0)
                } else {
                    0.0
                },
            }
        })
        .collect();
    let concurrency_bound_s = items.len() as f64 * latency.as_secs_f64() / workers.max(1) as f64;
    let binding_limit = uses
        .iter()
        .filter(|u| u.bound_s > concurrency_bound_s)
        .max_by(|a, b| a.bound_s.total_cmp(&b.bound_s))
        .map_or_else(|| "workers".to_string(), |u| u.name.clone());
    let target = makespan as f64 / 0.99;
    let (mut lo, mut hi) = (1usize, workers.max(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if simulate(items, limits, jitter, mid, latency)? as f64 <= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Estimate {
        items: items.len() as u64,
        requests: total(&Unit::Requests),
        tokens: total(&Unit::Tokens),
        makespan_s,
        binding_limit,
        limits: uses,
        workers,
        recommended_workers: lo,
        latency_ms: latency.as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU64;

    fn items(n: u64, tokens: u64) -> Vec<SimItem> {
        (0..n)
            .map(|seq| SimItem {
                priority: 0,
                seq,
                costs: Costs::request(tokens),
                route: Route::all(2),
            })
            .collect()
    }

    fn limit(name: &str, unit: Unit, rate: u64, per_s: u64) -> LimitSpec {
        LimitSpec::rolling(
            name,
            unit,
            NonZeroU64::new(rate).unwrap(),
            Duration::from_secs(per_s),
        )
    }

    #[test]
    fn a_request_bound_run_matches_the_closed_form() {
        // 3,000 items, 100/s bucket starting full, 50 ms latency: (3000 - 100) / 100 s + 50 ms.
        let e = estimate(
            &items(3000, 10),
            &[limit("rps", Unit::Requests, 100, 1)],
            Duration::ZERO,
            64,
            Duration::from_millis(50),
        )
        .unwrap();
        assert!((e.makespan_s - 29.05).abs() < 0.01, "{}", e.makespan_s);
        assert_eq!(e.binding_limit, "rps");
        assert!(
            e.recommended_workers >= 5 && e.recommended_workers <= 8,
            "{}",
            e.recommended_workers
        );
    }

    #[test]
    fn a_token_bound_run_matches_the_closed_form() {
        // 1,000 items of 1,000 tokens under 60,000 tokens/min: (1e6 - 6e4) / 1000 per s.
        let limits = [
            limit("rpm", Unit::Requests, 5000, 60),
            limit("tpm", Unit::Tokens, 60_000, 60),
        ];
        let e = estimate(
            &items(1000, 1000),
            &limits,
            Duration::ZERO,
            16,
            Duration::from_millis(10),
        )
        .unwrap();
        assert!((e.makespan_s - 940.01).abs() < 0.05, "{}", e.makespan_s);
        assert_eq!(e.binding_limit, "tpm");
        assert_eq!(e.tokens, 1_000_000);
    }

    #[test]
    fn a_concurrency_bound_run_follows_littles_law() {
        // No limits: 1,000 items, 4 workers, 200 ms each -> 250 waves of 200 ms.
        let e = estimate(
            &items(1000, 1),
            &[],
            Duration::ZERO,
            4,
            Duration::from_millis(200),
        )
        .unwrap();
        assert!((e.makespan_s - 50.0).abs() < 1e-6, "{}", e.makespan_s);
        assert_eq!(e.binding_limit, "workers");
        assert_eq!(e.recommended_workers, 4);
    }
}
