//! Property tests of the limiter in virtual time.
//!
//! Random sets of one to four limits (rolling buckets with random rate, period and burst;
//! fixed windows with random limit, period, reset offset, `pause_at` and origin, or run
//! budgets) over requests, tokens and a custom unit, fed random job streams: random costs
//! within what fits, random arrival gaps, jobs that wait for their "not before" instant,
//! settles to random actual usage and cancels. Time is plain nanoseconds; nothing sleeps.
//!
//! Each property replays the stream through [`run`] and checks one promise of the limiter
//! against an independent model built from the history of admissions (window boundaries
//! are recomputed from the origin and reset offset, not taken from the limiter). Failure
//! messages print the time and the state; proptest prints the minimal case and saves it to
//! `proptest-regressions/limiter/proptests.txt`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

use super::*;

const MS: Nanos = 1_000_000;
const SEC: Nanos = 1_000 * MS;
const DAY: Nanos = 86_400 * SEC;
/// 2026-01-01T00:00:00Z in unix seconds: the origins are random instants of that day.
const Y2026_S: u64 = 1_767_225_600;

fn nz(n: u64) -> NonZeroU64 {
    NonZeroU64::new(n.max(1)).unwrap_or(NonZeroU64::MIN)
}

/// The units limits count in: requests, tokens and a custom unit.
fn units() -> [Unit; 3] {
    [
        Unit::Requests,
        Unit::Tokens,
        Unit::Custom(Arc::from("calls")),
    ]
}

fn unit() -> impl Strategy<Value = Unit> {
    (0usize..3).prop_map(|i| units()[i].clone())
}

/// A rolling limit: 1..=1000 units per 1 ms..=60 s, with a random burst or the default.
///
/// A unit's refill interval is at least 1 µs, so rounding intervals up to whole
/// nanoseconds costs at most 0.1% of the rate.
fn rolling() -> impl Strategy<Value = LimitSpec> {
    (
        unit(),
        1u64..=1000,
        MS..=60 * SEC,
        prop::option::of(1u64..=2000),
    )
        .prop_map(|(unit, rate, per, burst)| LimitSpec {
            kind: LimitKind::Rolling {
                rate: nz(rate),
                per: Duration::from_nanos(per),
                burst: burst.map(nz),
            },
            ..LimitSpec::rolling("rolling", unit, nz(rate), Duration::from_nanos(per))
        })
}

/// A fixed window of 1..=1000 units per 1 ms..=60 s (mostly), a day (a quota) or the
/// whole run (a budget), with a random reset offset and sometimes a `pause_at`.
fn window() -> impl Strategy<Value = LimitSpec> {
    let per = prop_oneof![
        8 => (MS..=60 * SEC).prop_map(|p| Some(Duration::from_nanos(p))),
        1 => Just(Some(Duration::from_nanos(DAY))),
        1 => Just(None),
    ];
    let pause_at = prop_oneof![
        3 => Just(None),
        1 => (5u32..=9).prop_map(|tenths| Some(f64::from(tenths) / 10.0)),
    ];
    (unit(), 1u64..=1000, per, 0..2 * DAY, pause_at).prop_map(
        |(unit, limit, per, reset, pause_at)| LimitSpec {
            kind: LimitKind::Window {
                limit: nz(limit),
                per,
                reset: Duration::from_nanos(reset),
                pause_at,
            },
            ..LimitSpec::window("window", unit, nz(limit), per)
        },
    )
}

/// One to four limits, named by position, each also reachable alone through the path
/// `/bucket/{i}` (the main stream routes through all of them).
fn limits() -> impl Strategy<Value = Vec<LimitSpec>> {
    prop::collection::vec(prop_oneof![rolling(), window()], 1..=4).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, mut spec)| {
                spec.name = format!("{}{i}", spec.name);
                spec.scope = Scope::Path(format!("/bucket/{i}"));
                spec
            })
            .collect()
    })
}

/// The period of the fastest limit: arrival gaps are drawn on this scale.
fn time_scale(specs: &[LimitSpec]) -> Nanos {
    specs
        .iter()
        .filter_map(|s| match &s.kind {
            LimitKind::Rolling { per, .. } => Some(nanos(*per)),
            LimitKind::Window { per, .. } => per.map(nanos),
        })
        .min()
        .unwrap_or(SEC)
}

/// One step of a job stream; `gap` permille of the case's time scale (the period of its
/// fastest limit) passes before it. Gaps are relative so that cases shrink well.
#[derive(Clone, Debug)]
enum Op {
    /// A job arrives costing `share` permille of the most that fits in each unit (requests,
    /// tokens, calls). When denied and `wait`, it waits for its "not before" instant.
    Arrive {
        gap: Nanos,
        share: [u64; 3],
        wait: bool,
    },
    /// An admitted job finishes having used `permille` of its reservation.
    Settle {
        gap: Nanos,
        pick: Index,
        permille: u64,
    },
    /// An admitted job is cancelled before it was sent.
    Cancel { gap: Nanos, pick: Index },
}

fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0),
        4 => 0..=100u64,
        2 => 0..=1000u64,
        1 => 0..=3000u64,
    ]
}

fn share() -> impl Strategy<Value = u64> {
    prop_oneof![1 => Just(0u64), 2 => 0..=100u64, 3 => 0..=1000u64]
}

fn op(max_permille: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (gap(), [share(), share(), share()], prop::bool::weighted(0.8))
            .prop_map(|(gap, share, wait)| Op::Arrive { gap, share, wait }),
        3 => (gap(), any::<Index>(), 0..=max_permille)
            .prop_map(|(gap, pick, permille)| Op::Settle { gap, pick, permille }),
        1 => (gap(), any::<Index>()).prop_map(|(gap, pick)| Op::Cancel { gap, pick }),
    ]
}

/// A random limiter and a random job stream through it.
#[derive(Clone, Debug)]
struct Case {
    specs: Vec<LimitSpec>,
    /// Nanoseconds after 2026-01-01T00:00:00Z of limiter time 0.
    origin_ns: Nanos,
    jitter_ns: Nanos,
    ops: Vec<Op>,
}

/// Cases with the given jitter; settles use up to `max_permille` of the reservation (above
/// 1000 settles some jobs higher than estimated).
fn case(jitter: BoxedStrategy<Nanos>, max_permille: u64) -> impl Strategy<Value = Case> {
    let ops = prop::collection::vec(op(max_permille), 1..=120);
    (limits(), 0..DAY, jitter, ops).prop_map(|(specs, origin_ns, jitter_ns, ops)| Case {
        specs,
        origin_ns,
        jitter_ns,
        ops,
    })
}

fn no_jitter() -> BoxedStrategy<Nanos> {
    Just(0).boxed()
}

/// One admitted job, as the model sees it.
#[derive(Clone, Debug)]
struct Admission {
    at: Nanos,
    reserved: Costs,
    /// What the job really used: the reservation until settled, nothing once cancelled.
    actual: Costs,
    settled_at: Option<Nanos>,
}

/// What a property is shown after each step.
enum Event<'a> {
    /// The job `admissions[i]` was just admitted at `now`.
    Admitted(usize),
    /// `costs` were just refused at `now` with "not before `at`".
    Denied { costs: &'a Costs, at: Nanos },
    /// The job `admissions[idx]` was just settled or cancelled at `now`; `before` is the
    /// usage just before that.
    Settled {
        idx: usize,
        before: &'a [BucketUsage],
    },
}

/// A job stream being replayed.
struct Sim {
    specs: Vec<LimitSpec>,
    origin_unix_ns: i128,
    limiter: Limiter,
    now: Nanos,
    /// Nanoseconds per permille of a gap.
    scale: Nanos,
    /// The most one admission may take from each bucket.
    bucket_max: Vec<u64>,
    admissions: Vec<Admission>,
    open: Vec<(usize, Reservation)>,
}

/// The route through bucket `i` alone.
fn only(limiter: &Limiter, i: usize) -> Route {
    let path = format!("/bucket/{i}");
    limiter.route(&JobAttrs {
        kind: None,
        tenant: None,
        path: &path,
    })
}

/// The largest cost bucket `i` can ever admit at once (found with `check_fits`).
fn max_fit(limiter: &Limiter, spec: &LimitSpec, i: usize) -> u64 {
    let route = only(limiter, i);
    let fits = |n: u64| {
        limiter
            .check_fits(&route, &Costs::default().with(spec.unit.clone(), n))
            .is_ok()
    };
    let (mut lo, mut hi) = (0, spec.initial());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

impl Sim {
    fn new(case: &Case) -> Sim {
        let origin =
            UNIX_EPOCH + Duration::from_secs(Y2026_S) + Duration::from_nanos(case.origin_ns);
        let limiter = Limiter::new(&case.specs)
            .with_jitter(Duration::from_nanos(case.jitter_ns))
            .with_origin(origin);
        let bucket_max = case
            .specs
            .iter()
            .enumerate()
            .map(|(i, s)| max_fit(&limiter, s, i))
            .collect();
        Sim {
            specs: case.specs.clone(),
            origin_unix_ns: i128::from(Y2026_S) * 1_000_000_000 + i128::from(case.origin_ns),
            limiter,
            now: 0,
            scale: time_scale(&case.specs),
            bucket_max,
            admissions: Vec::new(),
            open: Vec::new(),
        }
    }

    /// The costs of a job taking `share` permille of what fits in each unit.
    fn costs(&self, share: &[u64; 3]) -> Costs {
        let mut costs = Costs::default();
        for (unit, share) in units().into_iter().zip(share) {
            let fit = self
                .specs
                .iter()
                .zip(&self.bucket_max)
                .filter(|(s, _)| s.unit == unit)
                .map(|(_, &max)| max)
                .min();
            if let Some(fit) = fit {
                costs = costs.with(unit, fit * share / 1000);
            }
        }
        costs
    }

    /// The index of the window of limit `spec` containing limiter time `t`, computed from
    /// the origin and the reset offset (0 for a rolling limit or a run budget).
    fn window_of(&self, spec: &LimitSpec, t: Nanos) -> i128 {
        match &spec.kind {
            LimitKind::Window {
                per: Some(per),
                reset,
                ..
            } => {
                let unix = self.origin_unix_ns + i128::from(t) - i128::from(nanos(*reset));
                unix.div_euclid(i128::from(nanos(*per)))
            }
            _ => 0,
        }
    }

    /// The model of window limit `i` at `now`: units admitted in the current window net of
    /// refunds settled in it, and units charged to it by jobs settled above their estimate.
    fn window_count(&self, i: usize) -> (u64, u64) {
        let spec = &self.specs[i];
        let k = self.window_of(spec, self.now);
        let (mut admitted, mut charged) = (0, 0);
        for a in &self.admissions {
            let (reserved, used) = (a.reserved.get(&spec.unit), a.actual.get(&spec.unit));
            let settled_here = a.settled_at.is_some_and(|s| self.window_of(spec, s) == k);
            if self.window_of(spec, a.at) == k {
                admitted += reserved;
                if settled_here && used < reserved {
                    admitted -= reserved - used;
                }
            }
            if settled_here && used > reserved {
                charged += used - reserved;
            }
        }
        (admitted, charged)
    }

    /// Admissions of window limit `i` in the current window, for failure messages.
    fn window_history(&self, i: usize) -> Vec<&Admission> {
        let spec = &self.specs[i];
        let k = self.window_of(spec, self.now);
        self.admissions
            .iter()
            .filter(|a| self.window_of(spec, a.at) == k)
            .collect()
    }
}

/// Replays `case`, showing `observe` every admission, denial and settle.
fn run(
    case: &Case,
    mut observe: impl FnMut(&Sim, Event<'_>) -> Result<(), TestCaseError>,
) -> Result<Sim, TestCaseError> {
    let mut sim = Sim::new(case);
    let route = sim.limiter.route_all();
    for op in &case.ops {
        match op {
            Op::Arrive { gap, share, wait } => {
                sim.now += gap * sim.scale / 1000;
                let costs = sim.costs(share);
                // A job that waits tries again at each "not before" (a few times at most:
                // whether the first one was exact is `not_until_is_exact`'s business).
                for _ in 0..4 {
                    match sim.limiter.reserve(&route, &costs, sim.now) {
                        Ok(r) => {
                            sim.admissions.push(Admission {
                                at: sim.now,
                                reserved: costs.clone(),
                                actual: costs.clone(),
                                settled_at: None,
                            });
                            let idx = sim.admissions.len() - 1;
                            sim.open.push((idx, r));
                            observe(&sim, Event::Admitted(idx))?;
                            break;
                        }
                        Err(Denied::NotUntil(NotUntil { at })) => {
                            prop_assert!(
                                at > sim.now,
                                "t={} ns: denied with \"not before {at}\", which is not later; \
                                 costs {costs:?}, usage {:?}",
                                sim.now,
                                sim.limiter.usage(sim.now)
                            );
                            observe(&sim, Event::Denied { costs: &costs, at })?;
                            if !wait {
                                break;
                            }
                            sim.now = at;
                        }
                        Err(Denied::Never(never)) => {
                            prop_assert!(
                                never.spent,
                                "t={} ns: a job within every limit's maximum ({:?}) was refused \
                                 for good: {never}; costs {costs:?}, usage {:?}",
                                sim.now,
                                sim.bucket_max,
                                sim.limiter.usage(sim.now)
                            );
                            break;
                        }
                    }
                }
            }
            Op::Settle {
                gap,
                pick,
                permille,
            } => {
                sim.now += gap * sim.scale / 1000;
                if sim.open.is_empty() {
                    continue;
                }
                let (idx, r) = sim.open.swap_remove(pick.index(sim.open.len()));
                let mut actual = Costs::default();
                for (unit, reserved) in sim.admissions[idx].reserved.iter() {
                    actual = actual.with(unit.clone(), reserved * permille / 1000);
                }
                let before = sim.limiter.usage(sim.now);
                sim.limiter.settle(r, &actual, sim.now);
                sim.admissions[idx].actual = actual;
                sim.admissions[idx].settled_at = Some(sim.now);
                observe(
                    &sim,
                    Event::Settled {
                        idx,
                        before: &before,
                    },
                )?;
            }
            Op::Cancel { gap, pick } => {
                sim.now += gap * sim.scale / 1000;
                if sim.open.is_empty() {
                    continue;
                }
                let (idx, r) = sim.open.swap_remove(pick.index(sim.open.len()));
                let before = sim.limiter.usage(sim.now);
                sim.limiter.cancel(r, sim.now);
                sim.admissions[idx].actual = Costs::default();
                sim.admissions[idx].settled_at = Some(sim.now);
                observe(
                    &sim,
                    Event::Settled {
                        idx,
                        before: &before,
                    },
                )?;
            }
        }
    }
    Ok(sim)
}

/// Checks that rolling limit `i` never admitted more than `burst + rate * (t2 - t1) / per`
/// units (counted as what the jobs really used) between any two admission instants.
///
/// Exact integer arithmetic, scaled by `per`, with a tolerance of one unit: the limiter
/// rounds each interval `n * per / rate` up to whole nanoseconds, including the burst's
/// tolerance `tau = ceil(burst * per / rate)`, which may exceed the exact burst time by less
/// than 1 ns, worth less than `rate / per` units; a refund subtracts a rounded-up interval
/// too and may give back less than 1 ns more than its exact share. Rates here are at most
/// 1000 units per 1 ms (1 unit per µs), so even a hundred such nanoseconds stay below one
/// unit; anything beyond it is a real over-admission.
fn check_rolling(sim: &Sim, i: usize) -> Result<(), TestCaseError> {
    let spec = &sim.specs[i];
    let LimitKind::Rolling { rate, per, burst } = &spec.kind else {
        return Ok(());
    };
    let burst = u128::from(burst.unwrap_or(*rate).get());
    let (rate, per) = (u128::from(rate.get()), u128::from(nanos(*per)));
    // Units actually used per distinct admission instant, in time order.
    let mut points: Vec<(Nanos, u128)> = Vec::new();
    for a in &sim.admissions {
        let units = u128::from(a.actual.get(&spec.unit));
        match points.last_mut() {
            Some((t, sum)) if *t == a.at => *sum += units,
            _ => points.push((a.at, units)),
        }
    }
    let mut prefix = vec![0u128];
    for (_, units) in &points {
        prefix.push(prefix[prefix.len() - 1] + units);
    }
    for first in 0..points.len() {
        for last in first..points.len() {
            let (t1, t2) = (points[first].0, points[last].0);
            let units = prefix[last + 1] - prefix[first];
            let allowed = burst * per + rate * u128::from(t2 - t1) + per;
            if units * per > allowed {
                let history: Vec<&Admission> =
                    sim.admissions.iter().filter(|a| a.at <= t2).collect();
                return Err(TestCaseError::fail(format!(
                    "limit `{}` ({} per {} ns, burst {burst}) admitted {units} {} in \
                     [t1={t1} ns, t2={t2} ns], more than burst + rate * (t2 - t1) / per + 1 \
                     = {:.3}; admissions up to t2: {history:#?}",
                    spec.name,
                    rate,
                    per,
                    spec.unit,
                    allowed as f64 / per as f64,
                )));
            }
        }
    }
    Ok(())
}

/// 64 cases keep the file to about a second in debug; on failure, shrink far (proptest's
/// default of 4 shrink steps per case leaves job streams long).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// In every fixed window, the units admitted (net of refunds settled in that window)
    /// never exceed the limit, nor its `pause_at` share.
    #[test]
    fn fixed_windows_never_admit_more_than_their_limit(case in case(no_jitter(), 1000)) {
        run(&case, |sim, event| {
            let Event::Admitted(idx) = event else { return Ok(()) };
            for (i, spec) in sim.specs.iter().enumerate() {
                let LimitKind::Window { limit, .. } = &spec.kind else { continue };
                let (admitted, _) = sim.window_count(i);
                prop_assert!(
                    admitted <= sim.bucket_max[i] && admitted <= limit.get(),
                    "t={} ns: admitting {:?} brought limit `{}` to {admitted} {} in window \
                     #{} (limit {}, pause share {}); usage {:?}; admissions in this window: \
                     {:#?}",
                    sim.now, sim.admissions[idx].reserved, spec.name, spec.unit,
                    sim.window_of(spec, sim.now), limit, sim.bucket_max[i],
                    sim.limiter.usage(sim.now), sim.window_history(i)
                );
            }
            Ok(())
        })?;
    }

    /// Between any two admission instants t1 <= t2, a rolling limit admits at most
    /// `burst + rate * (t2 - t1) / per` units of what jobs really used (see
    /// [`check_rolling`] for the one-unit rounding tolerance).
    #[test]
    fn rolling_limits_never_admit_more_than_their_rate(case in case(no_jitter(), 1000)) {
        let sim = run(&case, |_, _| Ok(()))?;
        for i in 0..sim.specs.len() {
            check_rolling(&sim, i)?;
        }
    }

    /// A "not before T" is exact: the same reservation is still refused at T - 1 ns (with
    /// the same T) and admitted at T, when nothing else happens in between.
    #[test]
    fn not_until_is_exact(case in case(no_jitter(), 1000)) {
        run(&case, check_not_until)?;
    }

    /// The same with a jitter allowance of 1 ms..=10 s, which shrinks rolling bursts and
    /// keeps the last jitter (at most a tenth) of every window free.
    #[test]
    fn not_until_is_exact_with_jitter(case in case((MS..=10 * SEC).boxed(), 1000)) {
        run(&case, check_not_until)?;
    }

    /// Settling never frees more than was reserved nor makes a bucket more than full, and a
    /// window's usage is exactly what its jobs used in it: refunds return units only to the
    /// window that was charged, and jobs settled above their estimate are charged to the
    /// current window, which may then show more than its limit (debt). A rolling bucket's
    /// usage is reported capped at its limit; its debt shows in later "not before"s.
    #[test]
    fn settling_keeps_every_bucket_between_empty_and_full(case in case(no_jitter(), 2000)) {
        run(&case, |sim, event| {
            let Event::Settled { idx, before } = event else { return Ok(()) };
            let job = &sim.admissions[idx];
            let after = sim.limiter.usage(sim.now);
            for (i, spec) in sim.specs.iter().enumerate() {
                let (reserved, used) = (job.reserved.get(&spec.unit), job.actual.get(&spec.unit));
                let (b, a) = (&before[i], &after[i]);
                let state = format!(
                    "t={} ns, limit `{}`, job reserved {reserved} {} at t={} ns and used {used}; \
                     usage before {b:?}, after {a:?}",
                    sim.now, spec.name, spec.unit, job.at
                );
                if used <= reserved {
                    prop_assert!(a.used <= b.used, "a refund raised usage: {state}");
                } else {
                    prop_assert!(a.used >= b.used, "a charge lowered usage: {state}");
                }
                match &spec.kind {
                    LimitKind::Window { .. } => {
                        let (admitted, charged) = sim.window_count(i);
                        prop_assert_eq!(
                            a.used, admitted + charged,
                            "window usage differs from the model (admitted {} + charged {}): \
                             {}; admissions in this window: {:#?}",
                            admitted, charged, state, sim.window_history(i)
                        );
                        prop_assert!(
                            charged > 0 || a.used <= a.limit,
                            "over the limit without debt: {state}"
                        );
                    }
                    LimitKind::Rolling { .. } => {
                        prop_assert!(a.used <= a.limit, "{state}");
                        // Never more than full: a whole burst and one more unit never both
                        // fit at one instant.
                        let mut probe = sim.limiter.clone();
                        let route = only(&probe, i);
                        let full = Costs::default().with(spec.unit.clone(), sim.bucket_max[i]);
                        let one = Costs::default().with(spec.unit.clone(), 1);
                        let both = probe.reserve(&route, &full, sim.now).is_ok()
                            && probe.reserve(&route, &one, sim.now).is_ok();
                        prop_assert!(
                            !both,
                            "more than a full bucket ({} {}) available after settling: {state}",
                            sim.bucket_max[i], spec.unit
                        );
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// The observer of `not_until_is_exact`: replays each denial on copies of the limiter at
/// T - 1 ns and at T.
fn check_not_until(sim: &Sim, event: Event<'_>) -> Result<(), TestCaseError> {
    let Event::Denied { costs, at } = event else {
        return Ok(());
    };
    let route = sim.limiter.route_all();
    let state = format!(
        "denied at t={} ns with \"not before {at}\"; costs {costs:?}; max per bucket {:?}; \
         usage at T-1 {:?}, at T {:?}",
        sim.now,
        sim.bucket_max,
        sim.limiter.usage(at - 1),
        sim.limiter.usage(at)
    );
    let mut before = sim.limiter.clone();
    let early = before.reserve(&route, costs, at - 1).err();
    prop_assert_eq!(
        early,
        Some(Denied::NotUntil(NotUntil { at })),
        "at T - 1 ns: {}",
        state
    );
    let mut exact = sim.limiter.clone();
    let on_time = exact.reserve(&route, costs, at).err();
    prop_assert_eq!(on_time, None, "at T: {}", state);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Jobs always waiting on one or two rolling limits, jumping to each "not before":
    /// over 1,000 periods of the binding limit, admitted throughput (after the initial
    /// burst) is at least 99% of the binding rate.
    #[test]
    fn saturated_rolling_limits_admit_at_least_99_percent_of_the_rate(
        limits in prop::collection::vec(
            (1u64..=100, MS..=10 * SEC, prop::option::of(1u64..=200)), 1..=2),
        shares in prop::collection::vec(1u64..=1000, 1..=8),
    ) {
        let specs: Vec<LimitSpec> = limits
            .iter()
            .enumerate()
            .map(|(i, &(rate, per, burst))| LimitSpec {
                kind: LimitKind::Rolling {
                    rate: nz(rate),
                    per: Duration::from_nanos(per),
                    burst: burst.map(nz),
                },
                ..LimitSpec::rolling(&format!("rolling{i}"), Unit::Tokens, nz(rate),
                    Duration::from_nanos(per))
            })
            .collect();
        let mut limiter = Limiter::new(&specs);
        let route = limiter.route_all();
        let fit = specs.iter().map(LimitSpec::initial).min().unwrap_or(1);
        // The binding limit has the lowest rate: rate_a / per_a <= rate_b / per_b.
        let &(rate, per, _) = limits
            .iter()
            .min_by(|a, b| (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1))))
            .unwrap_or(&limits[0]);
        let span = 1000 * per;
        let (mut now, mut last, mut after_start, mut jobs) = (0, 0, 0u64, 0usize);
        loop {
            let cost = (fit * shares[jobs % shares.len()] / 1000).max(1);
            let costs = Costs::default().with(Unit::Tokens, cost);
            match limiter.reserve(&route, &costs, now) {
                Ok(r) => {
                    limiter.settle(r, &costs, now);
                    if now > 0 {
                        after_start += cost;
                    }
                    last = now;
                    jobs += 1;
                }
                Err(Denied::NotUntil(t)) => {
                    prop_assert!(t.at > now, "t={now} ns: not before {} is not later", t.at);
                    if t.at > span {
                        break;
                    }
                    now = t.at;
                }
                Err(Denied::Never(n)) => {
                    return Err(TestCaseError::fail(format!("t={now} ns: {n}")));
                }
            }
        }
        // Units admitted in (0, last admission], after the initial burst, versus
        // rate * last / per, in integers. (Up to `last` rather than `span`, since the job
        // still waiting at the end may be worth many periods.)
        prop_assert!(last >= span / 2, "the last admission was at {last} ns of {span}");
        prop_assert!(
            u128::from(after_start) * u128::from(per) * 100
                >= u128::from(rate) * u128::from(last) * 99,
            "admitted {after_start} tokens in (0, {last} ns] after the burst, below 99% of \
             {rate} per {per} ns = {:.1}; {jobs} jobs; usage {:?}",
            rate as f64 * last as f64 / per as f64,
            limiter.usage(now)
        );
    }

    /// A fixed window or quota filled at a random instant refuses even one unit 1 ns before
    /// its next boundary (computed here from the origin and reset offset), with "not before"
    /// that boundary, and admits a whole window's worth exactly at it. A run budget never
    /// resets.
    #[test]
    fn windows_reset_exactly_at_their_boundaries(
        unit in unit(),
        limit in 1u64..=1000,
        per in prop_oneof![
            3 => (1u64..=60 * SEC).prop_map(Some),
            1 => Just(Some(15 * 60 * SEC)),
            1 => Just(Some(DAY)),
            1 => Just(Some(30 * DAY)),
            1 => Just(None),
        ],
        reset in 0..DAY,
        pause_at in prop::option::of((5u32..=9).prop_map(|t| f64::from(t) / 10.0)),
        origin_ns in 0..DAY,
        fill_after in 0u64..=3,
        fill_at_permille in 0u64..=1000,
        pieces in 1u64..=4,
    ) {
        let spec = LimitSpec {
            kind: LimitKind::Window {
                limit: nz(limit),
                per: per.map(Duration::from_nanos),
                reset: Duration::from_nanos(reset),
                pause_at,
            },
            ..LimitSpec::window("quota", unit.clone(), nz(limit), per.map(Duration::from_nanos))
        };
        let origin = UNIX_EPOCH + Duration::from_secs(Y2026_S) + Duration::from_nanos(origin_ns);
        let mut limiter = Limiter::new(std::slice::from_ref(&spec)).with_origin(origin);
        let route = limiter.route_all();
        let share = max_fit(&limiter, &spec, 0);
        prop_assume!(share > 0);
        let costs = |n: u64| Costs::default().with(unit.clone(), n);
        let t0 = per.map_or(0, |p| fill_after * p + p / 1000 * fill_at_permille);
        // Fill the window at t0, in a few pieces.
        let mut left = share;
        for piece in 0..pieces {
            let n = if piece + 1 == pieces { left } else { left / 2 };
            left -= n;
            let r = limiter.reserve(&route, &costs(n), t0);
            prop_assert!(r.is_ok(), "t={t0} ns: filling piece {n} of {share}: {r:?}");
        }
        let Some(per) = per else {
            let later = limiter.reserve(&route, &costs(1), t0 + 365 * DAY).err();
            prop_assert!(
                matches!(later, Some(Denied::Never(ref n)) if n.spent),
                "a spent run budget admitted or waited: {later:?}"
            );
            return Ok(());
        };
        // Boundaries are where unix time - reset is a multiple of `per`.
        let unix0 = i128::from(Y2026_S) * 1_000_000_000 + i128::from(origin_ns);
        let (per_i, reset_i) = (i128::from(per), i128::from(reset));
        let k = (unix0 + i128::from(t0) - reset_i).div_euclid(per_i);
        let boundary = Nanos::try_from((k + 1) * per_i + reset_i - unix0).unwrap_or(Nanos::MAX);
        prop_assert!(boundary > t0 && boundary - t0 <= per);
        let state = format!(
            "filled {share} {unit} (limit {limit}) at t0={t0} ns, boundary at {boundary} ns; \
             usage at boundary-1 {:?}, at boundary {:?}",
            limiter.usage(boundary - 1),
            limiter.usage(boundary)
        );
        prop_assert_eq!(limiter.usage(boundary - 1)[0].used, share, "{}", state);
        prop_assert_eq!(limiter.usage(boundary)[0].used, 0, "{}", state);
        let early = limiter.reserve(&route, &costs(1), boundary - 1).err();
        prop_assert_eq!(
            early,
            Some(Denied::NotUntil(NotUntil { at: boundary })),
            "1 ns before the boundary: {}",
            state
        );
        let on_time = limiter.reserve(&route, &costs(share), boundary).err();
        prop_assert_eq!(on_time, None, "at the boundary: {}", state);
        let next = limiter.reserve(&route, &costs(1), boundary).err();
        prop_assert_eq!(
            next,
            Some(Denied::NotUntil(NotUntil { at: boundary + per })),
            "after refilling at the boundary: {}",
            state
        );
    }
}

// The smallest cases of the two failures the properties above found, as scripts.

/// A refund gives back only the part of a reservation still in the bucket. Found by
/// `rolling_limits_never_admit_more_than_their_rate`.
///
/// 10 tokens per second: A takes 10 at 0; by 0.5 s five have drained and B takes 5; A is
/// then cancelled. The bucket holds B's 5 tokens, so at most 5 more fit at 0.5 s; the
/// limiter refunds A's whole 10, reports the bucket empty and admits 10 more, sending 15
/// tokens at one instant against a burst of 10.
#[test]
fn a_refund_returns_only_what_is_still_in_the_bucket() {
    let tps = LimitSpec::rolling("tps", Unit::Tokens, nz(10), Duration::from_secs(1));
    let mut limiter = Limiter::new(&[tps]);
    let route = limiter.route_all();
    let tokens = |n| Costs::default().with(Unit::Tokens, n);
    let a = limiter
        .reserve(&route, &tokens(10), 0)
        .expect("a full bucket admits A");
    let half = SEC / 2;
    let b = limiter.reserve(&route, &tokens(5), half);
    assert!(b.is_ok(), "five tokens refilled by 0.5 s: {b:?}");
    limiter.cancel(a, half);
    let usage = limiter.usage(half);
    assert_eq!(
        usage[0].used, 5,
        "t={half} ns: B's tokens are still in use: {usage:?}"
    );
    let c = limiter.reserve(&route, &tokens(10), half);
    assert!(
        c.is_err(),
        "t={half} ns: 10 more tokens admitted next to B's 5 (burst 10): {c:?}, usage {usage:?}"
    );
}

/// "Not before T" accounts for every bucket at T, including a window's guard. Found by
/// `not_until_is_exact_with_jitter`.
///
/// Two 10 s windows with a 100 ms jitter allowance (so each refuses the last 100 ms of
/// its windows): requests reset on multiples of 10 s, tokens 50 ms earlier. Once the
/// token window is spent, a job costing 1 request and 1 token is told "not before 9.95 s",
/// the token window's boundary; but 9.95 s lies in the request window's guard
/// [9.9 s, 10 s), so at 9.95 s it is refused again with "not before 10 s".
#[test]
fn not_until_accounts_for_the_guard_of_every_window() {
    let requests = LimitSpec::window(
        "r10s",
        Unit::Requests,
        nz(10),
        Some(Duration::from_secs(10)),
    );
    let mut tokens = LimitSpec::window("t10s", Unit::Tokens, nz(1), Some(Duration::from_secs(10)));
    tokens.kind = LimitKind::Window {
        limit: nz(1),
        per: Some(Duration::from_secs(10)),
        reset: Duration::from_millis(9_950),
        pause_at: None,
    };
    let mut limiter = Limiter::new(&[requests, tokens]).with_jitter(Duration::from_millis(100));
    let route = limiter.route_all();
    let job = Costs::request(1);
    let first = limiter.reserve(&route, &job, 0);
    assert!(first.is_ok(), "{first:?}");
    let denied = limiter.reserve(&route, &job, SEC).err();
    let Some(Denied::NotUntil(NotUntil { at })) = denied else {
        panic!("t={SEC} ns: expected a \"not before\", got {denied:?}");
    };
    let usage = limiter.usage(at);
    let on_time = limiter.reserve(&route, &job, at).err();
    assert_eq!(
        on_time, None,
        "t={at} ns, the promised instant: usage {usage:?}"
    );
}
