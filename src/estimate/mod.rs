//! `ratebound estimate`: a dry run in virtual time over the real limiter and scheduler.
//!
//! Owns the prediction made before anything is sent: makespan, the binding limit and the
//! use of every limit, when calendar quotas run out and how many periods the run spans,
//! cost (and the provider's batch API as the alternative), the workers needed, and whether
//! a deadline is met and what would have to change. [`sim`] drives the same [`Limiter`]
//! and [`Scheduler`] the runner uses, jumping from one event to the next, starting at the
//! run's wall-clock start so calendar windows fall where they will. [`latency`] draws
//! request latencies (fixed, lognormal, or recorded by a previous run: [`recorded`]).
//!
//! With classes, tenants or tiers (`[scheduling]`, `[tiers]`), the items carry their lane
//! and each tier tenant's own limits are among `limits`, set up by the same code as `run`;
//! the simulation then asks a scheduler with that policy for the next item at each instant.
//!
//! The worker search runs two simulations at once on two threads, and skips more workers
//! when the limits alone already rule out finishing sooner (`makespan_floor`).
//!
//! Transient failures (the share a previous run saw, `--from-db`) are retried through the
//! real [`RetryPolicy`](crate::retry::RetryPolicy) and the scheduler's timers.
//!
//! Pure: no I/O, no clock (the start time is an argument). What it does not model: 429s,
//! provider headers and failure storms; it assumes the config states the true limits, and
//! that a run paused by a quota is resumed when the quota resets.
//!
//! [`Limiter`]: crate::limiter::Limiter
//! [`Scheduler`]: crate::scheduler::Scheduler

pub mod latency;
pub mod recorded;
pub mod sim;
pub mod sim_list;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Nanos;
use crate::config::BatchTerms;
use crate::limiter::budget::{Price, Pricing, usd};
use crate::limiter::{Costs, LimitKind, LimitSpec, NeverFits, Route, Unit};
use crate::scheduler::Lane;

pub use latency::Latency;
pub use recorded::RecordedRun;
pub use sim::Setup;
use sim::{Trace, secs, window_index};
pub use sim_list::{SimList, SimListBuilder};

/// Seed of the latency draws: the same inputs always give the same estimate.
pub const SEED: u64 = 0x5eed_2026;

/// One item to simulate: its order, its reserved cost, what it will settle to, its price
/// (as read; a [`SimList`] keeps it compact).
#[derive(Clone, Debug)]
pub struct SimItem {
    /// Higher first.
    pub priority: i64,
    /// File order.
    pub seq: u64,
    /// Estimated cost, reserved at admission.
    pub costs: Costs,
    /// The limits it falls under.
    pub route: Route,
    /// Tokens it is expected to use, settled when its response arrives.
    pub tokens: u64,
    /// Expected price in micro-dollars through the normal API.
    pub usd_micro: u64,
    /// Price in micro-dollars and completion window through the batch API, if offered.
    pub batch: Option<(u64, Duration)>,
    /// Whether `tokens` and the price come from a previous run's usage.
    pub recorded: bool,
    /// Where it queues under [`Setup::policy`] (class, tenant, endpoint group).
    pub lane: Lane,
}

impl SimItem {
    /// An item that will use exactly its estimate and has no price.
    pub fn new(priority: i64, seq: u64, costs: Costs, route: Route) -> SimItem {
        SimItem {
            priority,
            seq,
            tokens: costs.get(&Unit::Tokens),
            costs,
            route,
            usd_micro: 0,
            batch: None,
            recorded: false,
            lane: Lane::default(),
        }
    }

    /// The amount of `unit` the item's reservation settles to.
    pub fn settled(&self, unit: &Unit) -> u64 {
        match unit {
            Unit::Tokens => self.tokens,
            Unit::Usd if self.costs.get(unit) > 0 => self.usd_micro,
            other => self.costs.get(other),
        }
    }

    /// What the item's reservation settles to when its response arrives.
    pub fn settled_costs(&self) -> Costs {
        let mut actual = self.costs.clone();
        if actual.get(&Unit::Tokens) != self.tokens {
            actual = actual.with(Unit::Tokens, self.tokens);
        }
        if actual.get(&Unit::Usd) > 0 {
            actual = actual.with(Unit::Usd, self.usd_micro);
        }
        actual
    }
}

/// Prices items and sets the usage they settle to, from the config and a previous run.
#[derive(Clone, Copy, Debug)]
pub struct Pricer<'a> {
    /// `[pricing."MODEL"]`.
    pub pricing: &'a Pricing,
    /// Batch terms of the models that offer them.
    pub batch: &'a BTreeMap<String, BatchTerms>,
    /// A previous run's usage (`--from-db`).
    pub recorded: Option<&'a RecordedRun>,
}

impl Pricer<'_> {
    /// Sets `item`'s expected tokens and price: the previous run's usage when it has one,
    /// else the estimated prompt and every allowed output token (`max_tokens`).
    pub fn apply(
        &self,
        item: &mut SimItem,
        id: &str,
        model: Option<&str>,
        prompt_tokens: u64,
        max_tokens: u64,
    ) {
        let (input, output) = match self
            .recorded
            .and_then(|r| r.usage_of(id, prompt_tokens, max_tokens))
        {
            Some(u) => {
                item.tokens = u.input + u.output;
                item.recorded = true;
                (u.input, u.output)
            }
            None => (prompt_tokens, max_tokens),
        };
        let Some((model, price)) = model.and_then(|m| self.pricing.get(m).map(|p| (m, p))) else {
            return;
        };
        item.usd_micro = price.cost(input, output);
        item.batch = self.batch.get(model).map(|terms| {
            let off = 1.0 - terms.discount;
            let discounted = Price {
                input: price.input * off,
                output: price.output * off,
            };
            (discounted.cost(input, output), terms.window)
        });
    }
}

/// One limit's share of the prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitUse {
    /// The limit's name.
    pub name: String,
    /// Its unit (`usd` amounts are micro-dollars).
    pub unit: String,
    /// Units the whole run needs.
    pub needed: u64,
    /// The shortest time this limit alone allows for the run, in seconds.
    pub bound_s: f64,
    /// Average use of the limit over the predicted makespan (0..1).
    pub utilization: f64,
    /// Share of the waiting time this limit caused (0..1).
    pub held_share: f64,
    /// Calendar windows: how many the run's requests span (`None` for other limits).
    pub periods: Option<u64>,
    /// Calendar windows: the length of one, in seconds.
    pub period_s: Option<f64>,
    /// Calendar windows: when each window the run used up ran out (RFC 3339, UTC).
    pub runs_out: Vec<String>,
}

/// What the provider's batch API would do with the same work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchOption {
    /// Cost of the whole work list through the batch API, in dollars.
    pub cost_usd: f64,
    /// What that saves against the normal API, in dollars.
    pub saving_usd: f64,
    /// The longest the batch may take (the provider's completion window), in seconds.
    pub window_s: f64,
    /// Whether that window ends before the deadline (`None` without `--deadline`).
    pub meets_deadline: Option<bool>,
}

/// One change that would make the run meet its deadline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// A limit's name, or `workers`.
    pub name: String,
    /// Its unit (`workers` for workers).
    pub unit: String,
    /// What it is now, per `per_s`.
    pub current: f64,
    /// What it would need to be, per `per_s`.
    pub needed: f64,
    /// The period of the figures in seconds (0 for workers and run budgets).
    pub per_s: f64,
}

/// The run against `--deadline`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadlineCheck {
    /// The deadline, in seconds from the start.
    pub deadline_s: f64,
    /// Whether the predicted makespan meets it.
    pub fits: bool,
    /// Deadline minus makespan, in seconds (negative when late).
    pub margin_s: f64,
    /// When late: what would have to change (each alone, or together where noted).
    pub changes: Vec<Change>,
}

/// The prediction (the JSON of `estimate --json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Items in the work list.
    pub items: u64,
    /// Requests to send: one per item, plus retries of transient failures (`--from-db`).
    pub requests: u64,
    /// Tokens the run is expected to use.
    pub tokens: u64,
    /// Expected cost through the normal API, in dollars (0 without pricing).
    pub cost_usd: f64,
    /// What the tokens and cost assume: `max_tokens` (every allowed output token: an upper
    /// bound) or `recorded usage` (a previous run's).
    pub usage_basis: String,
    /// When the run starts (RFC 3339, UTC).
    pub start: String,
    /// When the last response arrives (RFC 3339, UTC).
    pub end: String,
    /// Predicted wall time of the run, in seconds.
    pub makespan_s: f64,
    /// What limits the run: the limit that held requests back longest, `workers` when
    /// every worker was busy most, or `none` when nothing waited.
    pub binding_limit: String,
    /// Per-limit needs, bounds, utilization and calendar periods.
    pub limits: Vec<LimitUse>,
    /// Workers used in the simulation.
    pub workers: usize,
    /// The smallest worker count reaching 99% of the best throughput.
    pub recommended_workers: usize,
    /// The makespan with as many workers as help, in seconds.
    pub best_makespan_s: f64,
    /// How latencies were drawn: `fixed`, `lognormal` or `recorded`.
    pub latency_model: String,
    /// Mean latency per request, in milliseconds.
    pub latency_ms: f64,
    /// A run budget spent before the end: the run stops there with items left.
    pub stopped_by: Option<String>,
    /// Items that would fail every attempt `[retry]` allows (`--from-db` failure share).
    pub items_failed: u64,
    /// Share of attempts assumed to fail transiently and be retried (0 unless `--from-db`).
    pub failure_share: f64,
    /// The provider's batch API, where the pricing offers a discount.
    pub batch: Option<BatchOption>,
    /// The run against `--deadline`, if given.
    pub deadline: Option<DeadlineCheck>,
}

/// Most runs made to find the worker count beyond which more workers stop helping.
const MAX_DOUBLINGS: usize = 4;

/// Predicts the run of `setup` with `workers`, checked against `deadline` if given.
pub fn estimate(
    setup: &Setup<'_>,
    workers: usize,
    deadline: Option<Duration>,
) -> Result<Estimate, NeverFits> {
    let workers = workers.max(1);
    let items = setup.items;
    sim::check(setup)?;
    let mean_latency = setup.latency.mean().as_secs_f64();
    let listed = listed_charges(setup);
    let runs = simulate_runs(setup, workers, &listed, mean_latency);
    let Runs {
        trace,
        best,
        hi,
        needs,
    } = &runs;
    let target = (best.end as f64 / 0.99) as Nanos;
    // Little's law: a run of `target` keeps busy / target requests in flight on average,
    // so fewer workers than that cannot make it.
    let lo = usize::try_from(trace.busy / target.max(1)).unwrap_or(1);
    let recommended = smallest_workers(setup, lo, *hi, |t| t.end <= target);

    let makespan_s = secs(trace.end);
    let limits = limit_uses(setup, trace, needs, makespan_s);
    let cost_micro = items.sum(|s| s.usd_micro);
    let check = deadline.map(|d| check_deadline(setup, d, trace, best, *hi, workers, needs));
    let clock = |t: Nanos| {
        humantime::format_rfc3339_seconds(setup.start + Duration::from_nanos(t)).to_string()
    };
    Ok(Estimate {
        items: items.len() as u64,
        requests: trace.admitted,
        tokens: items.sum(|s| s.tokens),
        cost_usd: usd(cost_micro),
        usage_basis: if items.shapes().any(|(s, _)| s.recorded) {
            "recorded usage".into()
        } else {
            "max_tokens".into()
        },
        start: clock(0),
        end: clock(trace.end),
        makespan_s,
        binding_limit: binding_limit(setup, trace),
        limits,
        workers,
        recommended_workers: recommended,
        best_makespan_s: secs(best.end),
        latency_model: setup.latency.model().to_string(),
        latency_ms: mean_latency * 1000.0,
        stopped_by: trace.spent.clone(),
        items_failed: trace.failed,
        failure_share: setup.failure_share,
        batch: batch_option(items, cost_micro, deadline),
        deadline: check,
    })
}

/// What each limit is charged by the whole work list, each item once at its settled use
/// (only the items in the limit's scope count against it).
fn listed_charges(setup: &Setup<'_>) -> Vec<u64> {
    setup
        .limits
        .iter()
        .enumerate()
        .map(|(index, l)| {
            (setup.items).sum(|s| {
                if s.route.contains(index) {
                    s.settled(&l.unit)
                } else {
                    0
                }
            })
        })
        .collect()
}

/// The simulated runs an estimate compares: the asked one and the fastest found.
struct Runs {
    /// The run with the asked worker count.
    trace: Trace,
    /// The fastest run found (the asked one when nothing beats it).
    best: Trace,
    /// The worker count of `best`.
    hi: usize,
    /// What each limit is charged: by the simulated run (retries included), or, when a run
    /// budget stops it early, by the whole work list.
    needs: Vec<u64>,
}

/// Simulates the asked run and searches for the fastest worker count, doubling until more
/// workers stop gaining 0.5%.
fn simulate_runs(setup: &Setup<'_>, workers: usize, listed: &[u64], mean_latency: f64) -> Runs {
    let n = setup.items.len();
    // The run with as many workers as could help is simulated next to the asked one. Its
    // worker count depends on what the asked run charges, which is the list's own charge
    // unless retries or a spent budget change it: guess that, and redo it if wrong.
    let guess = workers_to_saturate(setup, listed, workers, mean_latency);
    let (trace, guessed) = both(
        || sim::run_checked(setup, workers),
        || (guess != workers).then(|| sim::run_checked(setup, guess)),
    );
    let needs: Vec<u64> = if trace.spent.is_none() {
        trace.charged.clone()
    } else {
        listed.to_vec()
    };
    let mut hi = workers_to_saturate(setup, &needs, workers, mean_latency);
    let mut best = match guessed {
        _ if hi == workers => trace.clone(),
        Some(t) if hi == guess => t,
        _ => sim::run_checked(setup, hi),
    };
    // No worker count finishes before the limits allow: when `best` is that close to the
    // bound already, doubling the workers cannot gain the 0.5% it has to.
    let floor = makespan_floor(setup);
    for _ in 0..MAX_DOUBLINGS {
        if hi >= n || floor.is_some_and(|f| f as f64 >= best.end as f64 * 0.995) {
            break;
        }
        let more = n.min(hi * 2);
        let t = sim::run_checked(setup, more);
        if (t.end as f64) < best.end as f64 * 0.995 {
            (hi, best) = (more, t);
        } else {
            break;
        }
    }
    if trace.end < best.end {
        (hi, best) = (workers, trace.clone());
    }
    Runs {
        trace,
        best,
        hi,
        needs,
    }
}

/// The limit (or "workers") that held the run back longest, "none" when nothing waited.
fn binding_limit(setup: &Setup<'_>, trace: &Trace) -> String {
    let waited: Nanos = trace.held.iter().sum::<Nanos>() + trace.workers_full;
    if waited == 0 {
        return "none".to_string();
    }
    setup
        .limits
        .iter()
        .zip(&trace.held)
        .map(|(l, h)| (l.name.as_str(), *h))
        .chain([("workers", trace.workers_full)])
        .max_by_key(|(_, h)| *h)
        .map_or_else(|| "none".to_string(), |(name, _)| name.to_string())
}

/// The provider's batch API as an option, when any item's pricing offers one.
fn batch_option(
    items: &SimList,
    cost_micro: u64,
    deadline: Option<Duration>,
) -> Option<BatchOption> {
    items.shapes().any(|(s, _)| s.batch.is_some()).then(|| {
        let micro = items.sum(|s| s.batch.map_or(s.usd_micro, |(b, _)| b));
        let window = (items.shapes())
            .filter_map(|(s, _)| s.batch.map(|(_, w)| w))
            .max()
            .unwrap_or_default();
        BatchOption {
            cost_usd: usd(micro),
            saving_usd: usd(cost_micro.saturating_sub(micro)),
            window_s: window.as_secs_f64(),
            meets_deadline: deadline.map(|d| window <= d),
        }
    })
}

/// Workers that keep the limits saturated when each limit is charged `needs`: twice the
/// in-flight count the binding limit sustains (Little's law), at least `workers`, at most
/// one per item.
fn workers_to_saturate(
    setup: &Setup<'_>,
    needs: &[u64],
    workers: usize,
    mean_latency: f64,
) -> usize {
    let n = setup.items.len();
    // Items per second the limits sustain in the long run (infinite without limits).
    let sustained = setup
        .limits
        .iter()
        .zip(needs)
        .filter(|(l, need)| **need > 0 && l.rate_per_s() > 0.0)
        .map(|(l, need)| l.rate_per_s() * n as f64 / *need as f64)
        .fold(f64::INFINITY, f64::min);
    if sustained.is_finite() {
        n.min(workers.max((2.0 * sustained * mean_latency).ceil() as usize + 1))
    } else {
        n
    }
    .max(1)
}

/// A time no run of the work list can end before, whatever its workers: the last item
/// can only be admitted once each rolling limit has refilled what the items take beyond
/// its burst (each item takes at least the smaller of its estimate and its settled use).
/// `None` when a run budget could stop a run early.
fn makespan_floor(setup: &Setup<'_>) -> Option<Nanos> {
    let mut floor: Nanos = 0;
    for (index, l) in setup.limits.iter().enumerate() {
        match l.kind {
            LimitKind::Window { per: None, .. } => return None,
            LimitKind::Window { .. } => {}
            LimitKind::Rolling { .. } => {
                let took = (setup.items).sum(|s| {
                    if s.route.contains(index) {
                        s.costs.get(&l.unit).min(s.settled(&l.unit))
                    } else {
                        0
                    }
                });
                let s = took.saturating_sub(l.initial()) as f64 / l.rate_per_s();
                floor = floor.max(sim::from_secs(s));
            }
        }
    }
    Some(floor)
}

/// Runs `a` and `b` at once, `b` on a second thread (simulations are pure and share
/// nothing mutable, so two of them use both cores).
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|scope| {
        let b = scope.spawn(b);
        let a = a();
        // A panic in `b` is a bug in the simulation: pass it on as it is.
        let b = b
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (a, b)
    })
}

/// The smallest worker count in `lo..=hi` whose run passes `ok` (assumed monotone; `hi`
/// passes, and no count below `lo` does). Gallops up from `lo`, where the answer usually
/// lies close, then bisects the last step.
fn smallest_workers(
    setup: &Setup<'_>,
    lo: usize,
    hi: usize,
    ok: impl Fn(&Trace) -> bool + Sync,
) -> usize {
    let hi = hi.max(1);
    let lo = lo.clamp(1, hi);
    let passes = |w: usize| ok(&sim::run_checked(setup, w));
    // Invariant: `failing` fails (or is below `lo`) and `passing` passes. Each round also
    // runs, on the second core, the count the next round tries when this one fails
    // (galloping) or passes (bisecting), so the counts tried are those of one at a time.
    let (mut failing, mut passing) = (lo - 1, hi);
    let mut step = 1;
    let mut w = lo;
    while w < hi {
        let next = lo.saturating_add(step).min(hi);
        let (now, then) = both(|| passes(w), || (next < hi).then(|| passes(next)));
        if now {
            passing = w;
            break;
        }
        failing = w;
        w = next;
        step = step.saturating_mul(2);
        if let Some(then) = then {
            if then {
                passing = w;
                break;
            }
            failing = w;
            w = lo.saturating_add(step).min(hi);
            step = step.saturating_mul(2);
        }
    }
    while passing - failing > 1 {
        let mid = failing + (passing - failing) / 2;
        let lower = failing + (mid - failing) / 2;
        let (now, then) = both(|| passes(mid), || (lower > failing).then(|| passes(lower)));
        if now {
            passing = mid;
            if let Some(then) = then {
                if then {
                    passing = lower;
                } else {
                    failing = lower;
                }
            }
        } else {
            failing = mid;
        }
    }
    passing
}

fn limit_uses(setup: &Setup<'_>, trace: &Trace, needs: &[u64], makespan_s: f64) -> Vec<LimitUse> {
    let waited = (trace.held.iter().sum::<Nanos>() + trace.workers_full).max(1) as f64;
    setup
        .limits
        .iter()
        .zip(needs)
        .enumerate()
        .map(|(i, (l, &needed))| {
            let rate_per_s = l.rate_per_s();
            let burst = l.initial();
            let periods = match (
                window_index(l, setup.start, 0),
                window_index(l, setup.start, trace.last_admit),
            ) {
                (Some(first), Some(last)) => Some(u64::try_from(last - first + 1).unwrap_or(0)),
                _ => None,
            };
            let bound_s = match (&l.kind, periods) {
                (LimitKind::Window { .. }, _) if rate_per_s > 0.0 => {
                    // The run's needs fill this many windows; the last one starts after the
                    // rest of the first and the whole of those between.
                    let per = burst as f64 / rate_per_s;
                    let windows = needed.div_ceil(admit_per_window(l).max(1));
                    let first = sim::next_boundary(l, setup.start).map_or(per, secs);
                    if windows > 1 {
                        first + (windows - 2) as f64 * per
                    } else {
                        0.0
                    }
                }
                _ if rate_per_s > 0.0 => needed.saturating_sub(burst) as f64 / rate_per_s,
                _ => 0.0,
            };
            let capacity = match periods {
                Some(p) => (burst * p) as f64,
                None if rate_per_s > 0.0 => rate_per_s * makespan_s + burst as f64,
                None => burst as f64,
            };
            LimitUse {
                name: l.name.clone(),
                unit: l.unit.name().to_string(),
                needed,
                bound_s,
                utilization: if capacity > 0.0 {
                    (needed as f64 / capacity).min(1.0)
                } else {
                    0.0
                },
                held_share: trace.held.get(i).copied().unwrap_or(0) as f64 / waited,
                periods,
                period_s: periods.map(|_| burst as f64 / rate_per_s),
                runs_out: trace.runs_out.get(i).map_or_else(Vec::new, |v| {
                    v.iter()
                        .map(|t| {
                            humantime::format_rfc3339_seconds(
                                setup.start + Duration::from_nanos(*t),
                            )
                            .to_string()
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

/// Units a window limit admits per window (its quota, or its `pause_at` share).
fn admit_per_window(l: &LimitSpec) -> u64 {
    match &l.kind {
        LimitKind::Window {
            limit, pause_at, ..
        } => pause_at.map_or(limit.get(), |f| (limit.get() as f64 * f).floor() as u64),
        LimitKind::Rolling { .. } => l.initial(),
    }
}

/// Checks the run against `deadline` and, when late, works out what would have to change.
fn check_deadline(
    setup: &Setup<'_>,
    deadline: Duration,
    trace: &Trace,
    best: &Trace,
    hi: usize,
    workers: usize,
    needs: &[u64],
) -> DeadlineCheck {
    let d = sim::from_secs(deadline.as_secs_f64());
    let fits = trace.end <= d && trace.spent.is_none();
    let mut changes = Vec::new();
    if !fits {
        if best.end <= d && best.spent.is_none() {
            // More workers alone are enough.
            let lo = usize::try_from(trace.busy / d.max(1)).unwrap_or(1);
            let w = smallest_workers(setup, lo, hi, |t| t.end <= d);
            changes.push(Change {
                name: "workers".into(),
                unit: "workers".into(),
                current: workers as f64,
                needed: w.max(workers + 1) as f64,
                per_s: 0.0,
            });
        } else {
            // The limits have to give more: the rate each would need to finish in time.
            let mean_latency = setup.latency.mean().as_secs_f64();
            let usable_s = (deadline.as_secs_f64() - mean_latency).max(1e-3);
            for (l, &needed) in setup.limits.iter().zip(needs) {
                if let Some(c) = needed_change(setup, l, needed, usable_s, trace) {
                    changes.push(c);
                }
            }
            let n = setup.items.len() as f64;
            let little = (n / usable_s * mean_latency).ceil() as usize;
            if little > workers {
                changes.push(Change {
                    name: "workers".into(),
                    unit: "workers".into(),
                    current: workers as f64,
                    needed: little as f64,
                    per_s: 0.0,
                });
            }
        }
    }
    DeadlineCheck {
        deadline_s: deadline.as_secs_f64(),
        fits,
        margin_s: deadline.as_secs_f64() - secs(trace.end),
        changes,
    }
}

/// What limit `l` would have to allow for `needed` units to pass within `usable_s`.
fn needed_change(
    setup: &Setup<'_>,
    l: &LimitSpec,
    needed: u64,
    usable_s: f64,
    trace: &Trace,
) -> Option<Change> {
    let unit = l.unit.name().to_string();
    match &l.kind {
        LimitKind::Rolling { rate, per, .. } => {
            let per_s = per.as_secs_f64();
            let want = (needed.saturating_sub(l.initial()) as f64 / usable_s * per_s).ceil();
            (want > rate.get() as f64).then(|| Change {
                name: l.name.clone(),
                unit,
                current: rate.get() as f64,
                needed: want,
                per_s,
            })
        }
        LimitKind::Window {
            limit,
            per: Some(per),
            pause_at,
            ..
        } => {
            let first = window_index(l, setup.start, 0)?;
            let last = window_index(l, setup.start, sim::from_secs(usable_s))?;
            let windows = u64::try_from(last - first + 1).unwrap_or(1).max(1);
            let share = pause_at.unwrap_or(1.0).max(1e-9);
            let want = (needed.div_ceil(windows) as f64 / share).ceil();
            (want > limit.get() as f64).then(|| Change {
                name: l.name.clone(),
                unit,
                current: limit.get() as f64,
                needed: want,
                per_s: per.as_secs_f64(),
            })
        }
        LimitKind::Window {
            limit, per: None, ..
        } => (trace.spent.as_deref() == Some(l.name.as_str())).then(|| Change {
            name: l.name.clone(),
            unit,
            current: limit.get() as f64,
            needed: needed as f64,
            per_s: 0.0,
        }),
    }
}
