//! The discrete-event simulation: the real [`Limiter`] and [`Scheduler`] in virtual time.
//!
//! Owns one simulated run. The scheduler puts the items in dispatch order once ([`order`]):
//! that order does not depend on time, so runs with different worker counts share it.
//! Attempts that fail transiently wait in a second [`Scheduler`] for their backoff (from the
//! [`RetryPolicy`]) and rejoin by priority, as in the runner. Time jumps from one event to the next: a "not before" instant
//! from the limiter, or a response arriving. Each response settles its reservation at its
//! arrival, to the usage the item is expected to have, as the runner does. The limiter's
//! time 0 is the run's start on the wall clock, so calendar windows (daily quotas) fall
//! where they will. Pure: no I/O, no clock.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::{Nanos, nanos};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::limiter::{Denied, LimitKind, LimitSpec, Limiter, NeverFits, Reservation, Scope};
use crate::retry::RetryPolicy;
use crate::scheduler::{Policy, Scheduler};

use super::SimItem;
use super::latency::Latency;

/// The inputs of a simulated run that stay the same whatever the worker count.
#[derive(Clone, Copy, Debug)]
pub struct Setup<'a> {
    /// The work list, with costs.
    pub items: &'a [SimItem],
    /// The configured limits.
    pub limits: &'a [LimitSpec],
    /// `[limiter] jitter`.
    pub jitter: Duration,
    /// When the run starts (limiter time 0).
    pub start: SystemTime,
    /// How long requests take.
    pub latency: &'a Latency,
    /// Seed of the latency and failure draws.
    pub seed: u64,
    /// Share of attempts that fail transiently (5xx, timeouts), retried as `retry` says.
    pub failure_share: f64,
    /// `[retry]`: attempts per item and backoff.
    pub retry: &'a RetryPolicy,
    /// The scheduler's classes, tenants and caps (`[scheduling]`); `None` for plain
    /// priority. Items queue in their [`SimItem::lane`].
    pub policy: Option<&'a Policy>,
}

/// What one simulated run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// When the last response arrived.
    pub end: Nanos,
    /// When the last request was admitted.
    pub last_admit: Nanos,
    /// Attempts admitted (requests sent), retries included.
    pub admitted: u64,
    /// Items that failed every attempt the retry policy allows.
    pub failed: u64,
    /// The run budget that was spent before every item was admitted, if any.
    pub spent: Option<String>,
    /// Per configured limit: the units the run charged it, settled to expected usage
    /// (failed attempts keep their whole reservation, as in the runner).
    pub charged: Vec<u64>,
    /// Per configured limit: the instants its calendar window ran out (one per window).
    pub runs_out: Vec<Vec<Nanos>>,
    /// Per configured limit: the time it alone held back a free worker.
    pub held: Vec<Nanos>,
    /// Time every worker was busy while items waited.
    pub workers_full: Nanos,
    /// The latencies of every request admitted, summed (worker-time in use).
    pub busy: Nanos,
}

struct InFlight<'a> {
    at: Nanos,
    item: &'a SimItem,
    /// Transient failures of this item before this attempt.
    failures: u32,
    reservation: Reservation,
}

impl PartialEq for InFlight<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight<'_> {}
impl PartialOrd for InFlight<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Earliest first in a max-heap; file order breaks ties.
        (Reverse(self.at), Reverse(self.item.seq))
            .cmp(&(Reverse(other.at), Reverse(other.item.seq)))
    }
}

/// Unix nanoseconds of a wall time.
fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// The calendar window of a window limit that limiter time `t` falls in (its index since
/// the epoch), or `None` for rolling limits and run budgets.
pub fn window_index(spec: &LimitSpec, start: SystemTime, t: Nanos) -> Option<u128> {
    match &spec.kind {
        LimitKind::Window {
            per: Some(per),
            reset,
            ..
        } => {
            let p = per.as_nanos().max(1);
            let at = unix_ns(start) + u128::from(t);
            // Boundaries fall where unix time - reset is a multiple of the period.
            let r = reset.as_nanos() % p;
            Some((at + p - r) / p)
        }
        _ => None,
    }
}

fn limiter(setup: &Setup<'_>) -> Limiter {
    Limiter::new(setup.limits)
        .with_jitter(setup.jitter)
        .with_origin(setup.start)
}

/// The items in the order the scheduler sends them (priority, then file order), each
/// checked to fit every limit it falls under.
///
/// Errors when an item can never be admitted (larger than a limit's burst).
pub fn order<'a>(setup: &Setup<'a>) -> Result<Vec<&'a SimItem>, NeverFits> {
    let limiter = limiter(setup);
    let mut scheduler = Scheduler::new();
    for item in setup.items {
        limiter.check_fits(&item.route, &item.costs)?;
        scheduler.push(item.priority, item.seq, item);
    }
    Ok(std::iter::from_fn(|| scheduler.pop(0)).collect())
}

/// Limiter time from `start` to the next calendar window boundary of a window limit, or
/// `None` for rolling limits and run budgets.
pub fn next_boundary(spec: &LimitSpec, start: SystemTime) -> Option<Nanos> {
    match &spec.kind {
        LimitKind::Window {
            per: Some(per),
            reset,
            ..
        } => {
            let p = per.as_nanos().max(1);
            let into = (unix_ns(start) + p - reset.as_nanos() % p) % p;
            Nanos::try_from(p - into).ok()
        }
        _ => None,
    }
}

/// Runs the work list with at most `workers` requests in flight.
///
/// Errors when an item can never be admitted (larger than a limit's burst).
pub fn run(setup: &Setup<'_>, workers: usize) -> Result<Trace, NeverFits> {
    run_ordered(setup, &order(setup)?, workers)
}

/// Runs the items of `order` (from [`order`]) with at most `workers` requests in flight.
pub fn run_ordered(
    setup: &Setup<'_>,
    order: &[&SimItem],
    workers: usize,
) -> Result<Trace, NeverFits> {
    if let Some(policy) = setup.policy.filter(|p| !p.is_plain()) {
        return run_lanes(setup, policy, workers);
    }
    let mut limiter = limiter(setup);
    let mut queue = order.iter().copied().peekable();
    // Items waiting for a retry, with their failures so far; they rejoin by priority.
    let mut retries: Scheduler<(&SimItem, u32)> = Scheduler::new();
    let mut fate = StdRng::seed_from_u64(setup.seed ^ 0xfa11);
    let n_limits = setup.limits.len();
    let mut trace = empty_trace(n_limits);
    let mut out_window: Vec<Option<u128>> = vec![None; n_limits];
    let mut latency = setup.latency.sampler(setup.seed);
    let workers = workers.max(1);
    let mut in_flight: BinaryHeap<InFlight<'_>> = BinaryHeap::with_capacity(workers.min(1 << 20));
    let mut now: Nanos = 0;
    loop {
        while in_flight.peek().is_some_and(|f| f.at <= now) {
            let Some(f) = in_flight.pop() else {
                break;
            };
            let item = f.item;
            if let Some((at, failures)) = trace.complete(setup, &mut limiter, &mut fate, f) {
                retries.push_at(at, item.priority, item.seq, (item, failures));
            }
        }
        let mut next_admission = None;
        let mut holder = None;
        while in_flight.len() < workers && trace.spent.is_none() {
            // The next item as the runner's scheduler picks it: a due retry goes first when
            // it outranks the next fresh item (higher priority, then file order).
            let retry = retries.peek(now).map(|(i, f)| (*i, *f));
            let fresh = queue.peek().copied();
            let (item, failures, is_retry) = match (retry, fresh) {
                (Some((r, f)), Some(i))
                    if (r.priority, Reverse(r.seq)) > (i.priority, Reverse(i.seq)) =>
                {
                    (r, f, true)
                }
                (_, Some(i)) => (i, 0, false),
                (Some((r, f)), None) => (r, f, true),
                (None, None) => break,
            };
            match limiter.reserve(&item.route, &item.costs, now) {
                Ok(reservation) => {
                    if is_retry {
                        retries.pop(now);
                    } else {
                        queue.next();
                    }
                    let at = trace.admit(setup, item, now, latency.next_latency());
                    in_flight.push(InFlight {
                        at,
                        item,
                        failures,
                        reservation,
                    });
                }
                Err(Denied::NotUntil(n)) => {
                    next_admission = Some(n.at);
                    let binding = limiter.binding(&item.route, &item.costs, now);
                    if let Some(i) = trace.held_by(setup, binding, now, &mut out_window) {
                        holder = Some(i);
                    }
                    break;
                }
                Err(Denied::Never(e)) => {
                    // Only a spent run budget refuses for good after `check_fits`.
                    trace.spent = Some(e.limit.clone());
                }
            }
        }
        // A retry coming due is an event only while a worker is free (due ones were
        // already offered to the limiter above).
        let retry_due = retries
            .next_at()
            .filter(|&r| r > now && in_flight.len() < workers);
        let next_completion = match (in_flight.peek().map(|f| f.at), retry_due) {
            (Some(c), Some(r)) => Some(c.min(r)),
            (c, r) => c.or(r),
        };
        let waiting = (queue.peek().is_some() || !retries.is_empty()) && trace.spent.is_none();
        let next = match (waiting, next_admission, next_completion) {
            (false, _, None) => return Ok(trace),
            (false, _, Some(c)) => c,
            (true, Some(a), Some(c)) if in_flight.len() < workers => a.min(c),
            (true, Some(a), None) => a,
            (true, _, Some(c)) => c,
            (true, None, None) => return Ok(trace),
        };
        if waiting {
            let span = next.saturating_sub(now);
            if in_flight.len() >= workers {
                trace.workers_full += span;
            } else if let Some(i) = holder
                && let Some(h) = trace.held.get_mut(i)
            {
                *h += span;
            }
        }
        now = next;
    }
}

/// A trace with nothing recorded yet.
fn empty_trace(n_limits: usize) -> Trace {
    Trace {
        end: 0,
        last_admit: 0,
        admitted: 0,
        failed: 0,
        spent: None,
        charged: vec![0; n_limits],
        runs_out: vec![Vec::new(); n_limits],
        held: vec![0; n_limits],
        workers_full: 0,
        busy: 0,
    }
}

impl Trace {
    /// Records `item` admitted at `now`, answered after `took`: returns when.
    fn admit(&mut self, setup: &Setup<'_>, item: &SimItem, now: Nanos, took: Nanos) -> Nanos {
        self.busy = self.busy.saturating_add(took);
        let at = now.saturating_add(took);
        for (i, l) in setup.limits.iter().enumerate() {
            if item.route.contains(i) {
                self.charged[i] += item.costs.get(&l.unit);
            }
        }
        self.end = self.end.max(at);
        self.last_admit = now;
        self.admitted += 1;
        at
    }

    /// A response arrives: settled to its usage, or, drawn as a transient failure (as the
    /// runner does, keeping its whole reservation), retried later. Returns the retry's
    /// instant and failures so far, for the caller's queue.
    fn complete(
        &mut self,
        setup: &Setup<'_>,
        limiter: &mut Limiter,
        fate: &mut StdRng,
        f: InFlight<'_>,
    ) -> Option<(Nanos, u32)> {
        if setup.failure_share > 0.0 && fate.random::<f64>() < setup.failure_share {
            drop(f.reservation);
            let failures = f.failures + 1;
            if setup.retry.allows_another(failures) {
                let wait = setup.retry.backoff(failures, fate.random::<f64>(), None);
                return Some((f.at.saturating_add(nanos(wait)), failures));
            }
            self.failed += 1;
            return None;
        }
        limiter.settle(f.reservation, &f.item.settled_costs(), f.at);
        for (i, l) in setup.limits.iter().enumerate() {
            if f.item.route.contains(i) {
                self.charged[i] = (self.charged[i] + f.item.settled(&l.unit))
                    .saturating_sub(f.item.costs.get(&l.unit));
            }
        }
        None
    }

    /// The limit `binding` names, which holds the next item back at `now`; a calendar
    /// window first seen binding is noted as run out.
    fn held_by(
        &mut self,
        setup: &Setup<'_>,
        binding: Option<(&LimitSpec, Nanos)>,
        now: Nanos,
        out_window: &mut [Option<u128>],
    ) -> Option<usize> {
        let (spec, _) = binding?;
        let i = setup.limits.iter().position(|l| l.name == spec.name)?;
        let window = window_index(spec, setup.start, now);
        if window.is_some() && out_window[i] != window {
            out_window[i] = window;
            self.runs_out[i].push(now);
        }
        Some(i)
    }
}

/// Runs the work list through a scheduler with `policy`, as the runner does with classes
/// and tenants: the next item is the one the scheduler picks at that instant, and a lane
/// held back by one of its own limits (a tenant's tier, a kind, a path) is deferred
/// until that limit admits it while the other lanes go on. Slower than the fixed order of
/// a plain run, since the choice depends on time.
fn run_lanes(setup: &Setup<'_>, policy: &Policy, workers: usize) -> Result<Trace, NeverFits> {
    let mut limiter = limiter(setup);
    let mut scheduler: Scheduler<(&SimItem, u32)> = Scheduler::with_policy(policy.clone());
    for item in setup.items {
        scheduler.enqueue(0, item.lane, item.priority, item.seq, (item, 0));
    }
    let mut fate = StdRng::seed_from_u64(setup.seed ^ 0xfa11);
    let n_limits = setup.limits.len();
    let mut trace = empty_trace(n_limits);
    let mut out_window: Vec<Option<u128>> = vec![None; n_limits];
    let mut latency = setup.latency.sampler(setup.seed);
    let workers = workers.max(1);
    let mut in_flight: BinaryHeap<InFlight<'_>> = BinaryHeap::with_capacity(workers.min(1 << 20));
    let mut now: Nanos = 0;
    // The limit that last deferred a lane: it holds back the items that wait while no
    // lane is ready.
    let mut deferred_by = None;
    loop {
        while in_flight.peek().is_some_and(|f| f.at <= now) {
            let Some(f) = in_flight.pop() else {
                break;
            };
            scheduler.finished(f.item.lane);
            let item = f.item;
            if let Some((at, failures)) = trace.complete(setup, &mut limiter, &mut fate, f) {
                scheduler.enqueue_at(at, item.lane, item.priority, item.seq, (item, failures));
            }
        }
        let mut next_admission = None;
        let mut holder = None;
        while in_flight.len() < workers && trace.spent.is_none() {
            let Some(&(item, failures)) = scheduler.peek(now) else {
                break;
            };
            match limiter.reserve(&item.route, &item.costs, now) {
                Ok(reservation) => {
                    scheduler.pop(now);
                    let at = trace.admit(setup, item, now, latency.next_latency());
                    in_flight.push(InFlight {
                        at,
                        item,
                        failures,
                        reservation,
                    });
                }
                Err(Denied::NotUntil(n)) => {
                    let binding = limiter.binding(&item.route, &item.costs, now);
                    if let Some(i) = trace.held_by(setup, binding, now, &mut out_window) {
                        holder = Some(i);
                    }
                    if n.at > now && binding.is_some_and(|(spec, _)| spec.scope != Scope::All) {
                        // The lane's own limit: its tenant waits, the others go on.
                        deferred_by = holder;
                        scheduler.defer(now, n.at);
                        continue;
                    }
                    next_admission = Some(n.at);
                    break;
                }
                Err(Denied::Never(e)) => {
                    trace.spent = Some(e.limit.clone());
                }
            }
        }
        // Deferred lanes and retries come back at the scheduler's next instant.
        let wakeup = scheduler
            .next_at()
            .filter(|&t| t > now && in_flight.len() < workers);
        let next_completion = in_flight.peek().map(|f| f.at);
        let waiting = !scheduler.is_empty() && trace.spent.is_none();
        let free = in_flight.len() < workers;
        let next = [
            next_completion,
            next_admission.filter(|_| waiting && free),
            wakeup.filter(|_| waiting),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return Ok(trace);
        };
        if waiting {
            let span = next.saturating_sub(now);
            if !free {
                trace.workers_full += span;
            } else if let Some(i) = holder.or(deferred_by)
                && let Some(h) = trace.held.get_mut(i)
            {
                *h += span;
            }
        }
        now = next;
    }
}

/// Nanoseconds of a duration in seconds, for tests and reports.
pub fn secs(t: Nanos) -> f64 {
    t as f64 / 1e9
}

/// The duration of `s` seconds as limiter time.
pub fn from_secs(s: f64) -> Nanos {
    nanos(Duration::from_secs_f64(s.max(0.0)))
}
