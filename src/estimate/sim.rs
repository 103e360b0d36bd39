//! The discrete-event simulation: the real [`Limiter`] and [`Scheduler`] in virtual time.
//!
//! Owns one simulated run. The items come in dispatch order ([`SimList`] sorts them once):
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

use crate::dispatch::{Decision, Dispatcher, Idle, Queue, Rules, Ticket};
use crate::limiter::{Costs, LimitKind, LimitSpec, Limiter, NeverFits, Reservation, Route};
use crate::retry::{OnQuota, RetryPolicy};
use crate::scheduler::{Lane, Policy, Popped, Scheduler};

use super::latency::{Latency, Sampler};
use super::sim_list::{Entry, Shape, SimList};
use crate::spill;

/// The inputs of a simulated run that stay the same whatever the worker count.
#[derive(Clone, Copy, Debug)]
pub struct Setup<'a> {
    /// The work list, with costs, in dispatch order.
    pub items: &'a SimList,
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

/// One attempt of an item: where it queues, what it costs, and its failures so far.
#[derive(Clone, Copy, Debug)]
struct SimJob<'a> {
    entry: Entry,
    shape: &'a Shape,
    /// Transient failures of this item before this attempt.
    failures: u32,
}

impl<'a> SimJob<'a> {
    fn fresh(list: &'a SimList, entry: Entry) -> Self {
        SimJob {
            entry,
            shape: list.shape(&entry),
            failures: 0,
        }
    }
}

struct InFlight<'a> {
    at: Nanos,
    job: SimJob<'a>,
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
        (Reverse(self.at), Reverse(self.job.entry.seq))
            .cmp(&(Reverse(other.at), Reverse(other.job.entry.seq)))
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

/// Checks that every item fits every limit it falls under (each shape once, in the order
/// the work list first used them).
///
/// Errors when an item can never be admitted (larger than a limit's burst).
pub fn check(setup: &Setup<'_>) -> Result<(), NeverFits> {
    let limiter = limiter(setup);
    for (shape, _) in setup.items.shapes() {
        limiter.check_fits(&shape.route, &shape.costs)?;
    }
    Ok(())
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
    check(setup)?;
    Ok(run_checked(setup, workers))
}

/// Runs the items (checked by [`check`]) with at most `workers` requests in flight.
pub fn run_checked(setup: &Setup<'_>, workers: usize) -> Trace {
    if let Some(policy) = setup.policy.filter(|p| !p.is_plain()) {
        return run_lanes(setup, policy, workers);
    }
    let list = setup.items;
    let mut rest = list.entries();
    let mut queue = Ordered {
        list,
        fresh: rest.next().map(|e| SimJob::fresh(list, e)),
        rest,
        retries: Scheduler::new(),
    };
    let mut sim = Sim::new(setup, workers);
    loop {
        while let Some(f) = sim.arrived() {
            let job = f.job;
            if let Some((at, failures)) = sim.complete(f) {
                let (priority, seq) = (job.entry.priority, job.entry.seq);
                (queue.retries).push_at(at, priority, seq, SimJob { failures, ..job });
            }
        }
        let round = sim.round(&mut queue);
        // A retry coming due is an event only while a worker is free (due ones were
        // already offered to the limiter above).
        let free = sim.core.in_flight < sim.workers;
        let retry_due = queue.retries.next_at().filter(|&r| r > sim.now && free);
        let next_completion = match (sim.in_flight.peek().map(|f| f.at), retry_due) {
            (Some(c), Some(r)) => Some(c.min(r)),
            (c, r) => c.or(r),
        };
        let waiting = !queue.is_empty() && sim.trace.spent.is_none();
        let next = match (waiting, round.next_admission, next_completion) {
            (false, _, None) => return sim.trace,
            (false, _, Some(c)) => c,
            (true, Some(a), Some(c)) if free => a.min(c),
            (true, Some(a), None) => a,
            (true, _, Some(c)) => c,
            (true, None, None) => return sim.trace,
        };
        sim.advance(waiting, free, round.holder, next);
    }
}

/// The plain run's queue: the fixed dispatch order, and the retries waiting for their
/// backoff, which rejoin by priority (as the runner's scheduler picks them).
struct Ordered<'a> {
    list: &'a SimList,
    /// The next fresh item, with no failures yet.
    fresh: Option<SimJob<'a>>,
    /// The fresh items after it.
    rest: spill::Iter<'a, Entry>,
    retries: Scheduler<SimJob<'a>>,
}

impl Ordered<'_> {
    /// Whether the next job at `now` is a due retry: one that outranks the next fresh item
    /// (higher priority, then file order).
    fn retry_first(&mut self, now: Nanos) -> bool {
        match (self.retries.peek(now), &self.fresh) {
            (Some(r), Some(i)) => {
                let (r, i) = (r.entry, i.entry);
                (r.priority, Reverse(r.seq)) > (i.priority, Reverse(i.seq))
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

impl<'a> Queue for Ordered<'a> {
    type Job = SimJob<'a>;
    fn peek(&mut self, now: Nanos) -> Option<&Self::Job> {
        if self.retry_first(now) {
            return self.retries.peek(now);
        }
        self.fresh.as_ref()
    }
    fn take(&mut self, now: Nanos) -> Option<Popped<Self::Job>> {
        let job = if self.retry_first(now) {
            self.retries.pop(now)?
        } else {
            let job = self.fresh.take()?;
            let list = self.list;
            self.fresh = self.rest.next().map(|e| SimJob::fresh(list, e));
            job
        };
        Some(Popped {
            job,
            lane: Lane::default(),
            waited: 0,
            starved: false,
        })
    }
    fn defer(&mut self, _now: Nanos, _until: Nanos) {}
    fn next_at(&self) -> Option<Nanos> {
        self.retries.next_at()
    }
    fn is_empty(&self) -> bool {
        self.fresh.is_none() && self.retries.is_empty()
    }
    fn has_lanes(&self) -> bool {
        false
    }
}

impl Ticket for SimJob<'_> {
    fn route(&self) -> &Route {
        &self.shape.route
    }
    fn costs(&self) -> &Costs {
        &self.shape.costs
    }
    fn seq(&self) -> u64 {
        self.entry.seq
    }
    /// The simulation models an item as one request.
    fn slots(&self, _workers: usize) -> usize {
        1
    }
}

/// One simulated run in progress: the dispatch core, the limiter, the requests in flight
/// and what the run did so far.
struct Sim<'a, 's> {
    setup: &'s Setup<'a>,
    core: Dispatcher,
    limiter: Limiter,
    workers: usize,
    in_flight: BinaryHeap<InFlight<'a>>,
    trace: Trace,
    fate: StdRng,
    latency: Sampler<'a>,
    out_window: Vec<Option<u128>>,
    now: Nanos,
}

/// What one round of dispatch decisions left: when the next item fits, and which limit
/// held it back (or last deferred a lane).
struct Round {
    next_admission: Option<Nanos>,
    holder: Option<usize>,
    /// Set when a lane was deferred: the limit that did it, if known.
    deferred: Option<Option<usize>>,
}

impl<'a, 's> Sim<'a, 's> {
    fn new(setup: &'s Setup<'a>, workers: usize) -> Self {
        let n_limits = setup.limits.len();
        let workers = workers.max(1);
        Sim {
            setup,
            core: Dispatcher::new(Rules {
                // The estimate assumes a run paused by a quota is resumed when it resets.
                on_quota: OnQuota::Wait,
                refunds_reopen_budget: false,
                shared: false,
                wall_origin: setup.start,
                max_wait: Duration::MAX,
                unreachable_after: crate::retry::UNREACHABLE_AFTER,
            }),
            limiter: limiter(setup),
            workers,
            in_flight: BinaryHeap::with_capacity(workers.min(1 << 20)),
            trace: empty_trace(n_limits),
            fate: StdRng::seed_from_u64(setup.seed ^ 0xfa11),
            latency: setup.latency.sampler(setup.seed),
            out_window: vec![None; n_limits],
            now: 0,
        }
    }

    /// The next request in flight whose response has arrived by now.
    fn arrived(&mut self) -> Option<InFlight<'a>> {
        if self.in_flight.peek().is_some_and(|f| f.at <= self.now) {
            let f = self.in_flight.pop()?;
            self.core.released(1);
            return Some(f);
        }
        None
    }

    /// A response arrives: see [`Trace::complete`].
    fn complete(&mut self, f: InFlight<'a>) -> Option<(Nanos, u32)> {
        (self.trace).complete(self.setup, &mut self.limiter, &mut self.fate, f)
    }

    /// Admits what the core lets through now, as `run` would.
    fn round<Q: Queue<Job = SimJob<'a>>>(&mut self, queue: &mut Q) -> Round {
        let mut round = Round {
            next_admission: None,
            holder: None,
            deferred: None,
        };
        let now = self.now;
        loop {
            match (self.core).next(now, self.workers, &mut self.limiter, queue) {
                Decision::Dispatch {
                    popped,
                    reservation,
                    ..
                } => {
                    let job = popped.job;
                    let took = self.latency.next_latency();
                    let at = self.trace.admit(self.setup, job.shape, now, took);
                    self.in_flight.push(InFlight {
                        at,
                        job,
                        reservation,
                    });
                }
                Decision::Deferred { binding } => {
                    self.hold(binding, &mut round);
                    round.deferred = Some(round.holder);
                }
                Decision::Idle(Idle::Limited { at, binding }) => {
                    self.hold(binding, &mut round);
                    round.next_admission = Some(at);
                    return round;
                }
                Decision::Unsendable { .. } => {
                    // `check` found that every item fits: only a bug gets here.
                    self.trace.failed += 1;
                }
                Decision::Idle(Idle::Spent) => {
                    self.trace.spent = self.core.spent().map(str::to_string);
                    return round;
                }
                Decision::AskShared { .. } | Decision::ReturnShared { .. } | Decision::Idle(_) => {
                    return round;
                }
            }
        }
    }

    /// Notes the limit `binding` as holding the next item back now.
    fn hold(&mut self, binding: Option<usize>, round: &mut Round) {
        let spec = binding.and_then(|i| self.limiter.specs().nth(i));
        let now = self.now;
        if let Some(i) = (self.trace).held_by(self.setup, spec, now, &mut self.out_window) {
            round.holder = Some(i);
        }
    }

    /// Moves time to `next`, charging the span to whatever held a free worker back.
    fn advance(&mut self, waiting: bool, free: bool, holder: Option<usize>, next: Nanos) {
        if waiting {
            let span = next.saturating_sub(self.now);
            if !free {
                self.trace.workers_full += span;
            } else if let Some(i) = holder
                && let Some(h) = self.trace.held.get_mut(i)
            {
                *h += span;
            }
        }
        self.now = next;
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
    fn admit(&mut self, setup: &Setup<'_>, item: &Shape, now: Nanos, took: Nanos) -> Nanos {
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
            let failures = f.job.failures + 1;
            if setup.retry.allows_another(failures) {
                let wait = setup.retry.backoff(failures, fate.random::<f64>(), None);
                return Some((f.at.saturating_add(nanos(wait)), failures));
            }
            self.failed += 1;
            return None;
        }
        let shape = f.job.shape;
        limiter.settle(f.reservation, &shape.settled, f.at);
        for (i, l) in setup.limits.iter().enumerate() {
            if shape.route.contains(i) {
                self.charged[i] = (self.charged[i] + shape.settled(&l.unit))
                    .saturating_sub(shape.costs.get(&l.unit));
            }
        }
        None
    }

    /// The limit `binding` names, which holds the next item back at `now`; a calendar
    /// window first seen binding is noted as run out.
    fn held_by(
        &mut self,
        setup: &Setup<'_>,
        binding: Option<&LimitSpec>,
        now: Nanos,
        out_window: &mut [Option<u128>],
    ) -> Option<usize> {
        let spec = binding?;
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
fn run_lanes(setup: &Setup<'_>, policy: &Policy, workers: usize) -> Trace {
    let list = setup.items;
    let mut scheduler: Scheduler<SimJob<'_>> = Scheduler::with_policy(policy.clone());
    // Queued in file order, as the runner reads them (every item is in the scheduler
    // here: lanes keep the whole list in memory).
    let mut by_file: Vec<Entry> = list.entries().collect();
    by_file.sort_unstable_by_key(|e| e.seq);
    for e in by_file {
        let job = SimJob::fresh(list, e);
        scheduler.enqueue(0, job.shape.lane, e.priority, e.seq, job);
    }
    let mut sim = Sim::new(setup, workers);
    // The limit that last deferred a lane: it holds back the items that wait while no
    // lane is ready.
    let mut deferred_by = None;
    loop {
        while let Some(f) = sim.arrived() {
            let job = f.job;
            scheduler.finished(job.shape.lane);
            if let Some((at, failures)) = sim.complete(f) {
                let (priority, seq) = (job.entry.priority, job.entry.seq);
                let retry = SimJob { failures, ..job };
                scheduler.enqueue_at(at, job.shape.lane, priority, seq, retry);
            }
        }
        let round = sim.round(&mut scheduler);
        if let Some(by) = round.deferred {
            deferred_by = by;
        }
        let free = sim.core.in_flight < sim.workers;
        // Deferred lanes and retries come back at the scheduler's next instant.
        let wakeup = scheduler.next_at().filter(|&t| t > sim.now && free);
        let next_completion = sim.in_flight.peek().map(|f| f.at);
        let waiting = !scheduler.is_empty() && sim.trace.spent.is_none();
        let next = [
            next_completion,
            round.next_admission.filter(|_| waiting && free),
            wakeup.filter(|_| waiting),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return sim.trace;
        };
        sim.advance(waiting, free, round.holder.or(deferred_by), next);
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
