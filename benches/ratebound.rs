//! Benchmarks of the hot paths at DESIGN.md's scale: limiter admission, scheduler
//! decisions over 100,000 queued items, the store's writer, and `estimate`'s simulation of
//! 1,000,000 items.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Mutex;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use governor::clock::{Clock as _, FakeRelativeClock};
use governor::{Quota, RateLimiter};
use ratebound::estimate::{Latency, Setup, SimItem, SimList, sim};
use ratebound::limiter::{Costs, Denied, LimitSpec, Limiter, Route, Unit};
use ratebound::scheduler::{Lane, Policy, Scheduler, TenantSpec};

fn limit(name: &str, unit: Unit, rate: u64, per: Duration) -> LimitSpec {
    LimitSpec::rolling(name, unit, NonZeroU64::new(rate).unwrap(), per)
}

/// Reserve + settle on a saturated limiter in virtual time: when denied, jump to the
/// "not before" instant, as `estimate` and the runner do.
fn admit_all(limiter: &mut Limiter, costs: &Costs, actual: &Costs, n: u64) -> u64 {
    let mut now = 0u64;
    let mut admitted = 0;
    let route = limiter.route_all();
    while admitted < n {
        match limiter.reserve(&route, costs, now) {
            Ok(r) => {
                limiter.settle(r, actual, now);
                admitted += 1;
            }
            Err(Denied::NotUntil(t)) => now = t.at,
            Err(Denied::Never(e)) => panic!("{e}"),
        }
    }
    now
}

/// Reserve + settle `n` jobs at one instant on a limiter large enough to admit them all.
fn admit_unsaturated(limiter: &mut Limiter, costs: &Costs, actual: &Costs, n: u64) -> u64 {
    let route = limiter.route_all();
    let mut admitted = 0;
    for _ in 0..n {
        match limiter.reserve(&route, costs, 0) {
            Ok(r) => {
                limiter.settle(r, actual, 0);
                admitted += 1;
            }
            Err(e) => panic!("an unsaturated limiter refused a job: {e:?}"),
        }
    }
    admitted
}

/// Governor's `check` on a saturated quota in virtual time: when refused, advance the fake
/// clock to the "not until" instant, like `admit_all`.
fn governor_admit_all(quota: Quota, n: u64) -> u64 {
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::direct_with_clock(quota, clock.clone());
    let mut admitted = 0;
    while admitted < n {
        match limiter.check() {
            Ok(()) => admitted += 1,
            Err(not_until) => clock.advance(not_until.wait_time_from(clock.now())),
        }
    }
    admitted
}

/// `n` calls of governor's `check`, all admitted.
fn governor_check_n<C: governor::clock::Clock>(limiter: &Direct<C>, n: u64) -> u64 {
    let mut admitted = 0;
    for _ in 0..n {
        if limiter.check().is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, n, "an unsaturated governor quota refused a cell");
    admitted
}

/// One bucket of 5,000 requests a minute: saturated at `N` jobs.
fn one_bucket() -> [LimitSpec; 1] {
    [limit("rpm", Unit::Requests, 5000, Duration::from_secs(60))]
}

/// Requests per minute and per day, tokens per minute and a custom unit per 15 minutes,
/// scaled by `scale` (1 saturates at `N` jobs; a large scale never does).
fn four_buckets(scale: u64) -> [LimitSpec; 4] {
    [
        limit("rpm", Unit::Requests, 5000 * scale, Duration::from_secs(60)),
        limit(
            "tpm",
            Unit::Tokens,
            4_000_000 * scale,
            Duration::from_secs(60),
        ),
        limit(
            "rpd",
            Unit::Requests,
            1_000_000 * scale,
            Duration::from_secs(86_400),
        ),
        limit(
            "calls",
            Unit::from_name("calls"),
            180 * scale,
            Duration::from_secs(900),
        ),
    ]
}

/// Large enough that `N` jobs at one instant all fit (and governor's largest burst).
const UNSATURATED: u64 = 1_000_000;
const N: u64 = 100_000;
const THREADS: u64 = 8;

/// A governor limiter without keys, on clock `C`.
type Direct<C> = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    C,
    governor::middleware::NoOpMiddleware<<C as governor::clock::Clock>::Instant>,
>;

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(N));
    let one = Costs::default().with(Unit::Requests, 1);
    let costs = Costs::request(800).with(Unit::from_name("calls"), 1);
    let actual = Costs::request(600).with(Unit::from_name("calls"), 1);
    group.bench_function("reserve_settle_1_bucket", |b| {
        let specs = one_bucket();
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_all(&mut l, &one, &one, N)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("reserve_settle_4_buckets", |b| {
        let specs = four_buckets(1);
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_all(&mut l, &costs, &actual, N)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("governor_check_saturated", |b| {
        let quota = Quota::per_minute(NonZeroU32::new(5000).unwrap());
        b.iter(|| black_box(governor_admit_all(quota, N)));
    });
    group.bench_function("reserve_settle_1_bucket_unsaturated", |b| {
        let specs = [limit(
            "rps",
            Unit::Requests,
            UNSATURATED,
            Duration::from_secs(1),
        )];
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_unsaturated(&mut l, &one, &one, N)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("reserve_settle_4_buckets_unsaturated", |b| {
        let specs = four_buckets(UNSATURATED);
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_unsaturated(&mut l, &costs, &actual, N)),
            BatchSize::LargeInput,
        );
    });
    let big = Quota::per_second(NonZeroU32::new(UNSATURATED as u32).unwrap());
    group.bench_function("governor_check_unsaturated_fake_clock", |b| {
        b.iter_batched(
            || RateLimiter::direct_with_clock(big, FakeRelativeClock::default()),
            |l| black_box(governor_check_n(&l, N)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("governor_check_unsaturated_default_clock", |b| {
        b.iter_batched(
            || RateLimiter::direct(big),
            |l| black_box(governor_check_n(&l, N)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// Reserve + settle from 8 OS threads sharing one `Mutex<Limiter>`, `N` jobs in all.
fn contend(limiter: &Mutex<Limiter>, costs: &Costs, actual: &Costs) -> u64 {
    let route = limiter.lock().unwrap().route_all();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let route = &route;
                s.spawn(move || {
                    let mut admitted = 0;
                    for _ in 0..N / THREADS {
                        let mut l = limiter.lock().unwrap();
                        if let Ok(r) = l.reserve(route, costs, 0) {
                            l.settle(r, actual, 0);
                            admitted += 1;
                        }
                    }
                    admitted
                })
            })
            .collect();
        let admitted = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(admitted, N, "an unsaturated limiter refused a job");
        admitted
    })
}

/// Governor's `check` from 8 OS threads sharing one (lock-free) limiter, `N` cells in all.
fn governor_contend<C: governor::clock::Clock + Sync>(limiter: &Direct<C>) -> u64 {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| s.spawn(|| governor_check_n(limiter, N / THREADS)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

fn limiter_contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_8_threads");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(N));
    let one = Costs::default().with(Unit::Requests, 1);
    let costs = Costs::request(800).with(Unit::from_name("calls"), 1);
    let actual = Costs::request(600).with(Unit::from_name("calls"), 1);
    group.bench_function("mutex_reserve_settle_1_bucket", |b| {
        let specs = [limit(
            "rps",
            Unit::Requests,
            UNSATURATED,
            Duration::from_secs(1),
        )];
        b.iter_batched(
            || Mutex::new(Limiter::new(&specs)),
            |l| black_box(contend(&l, &one, &one)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("mutex_reserve_settle_4_buckets", |b| {
        let specs = four_buckets(UNSATURATED);
        b.iter_batched(
            || Mutex::new(Limiter::new(&specs)),
            |l| black_box(contend(&l, &costs, &actual)),
            BatchSize::LargeInput,
        );
    });
    let big = Quota::per_second(NonZeroU32::new(UNSATURATED as u32).unwrap());
    group.bench_function("governor_check_fake_clock", |b| {
        b.iter_batched(
            || RateLimiter::direct_with_clock(big, FakeRelativeClock::default()),
            |l| black_box(governor_contend(&l)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("governor_check_default_clock", |b| {
        b.iter_batched(
            || RateLimiter::direct(big),
            |l| black_box(governor_contend(&l)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(N));
    group.bench_function("push_pop_100k_priority", |b| {
        b.iter(|| {
            let mut s = Scheduler::new();
            for seq in 0..N {
                s.push((seq % 7) as i64, seq, seq);
            }
            let mut sum = 0u64;
            while let Some(j) = s.pop(0) {
                sum += j;
            }
            black_box(sum)
        });
    });
    // 100,000 items across 1,000 tenants (weights 1..4, the first 100 capped at 2 in
    // flight), each popped job finishing at once: one decision = a pop and its finish.
    group.bench_function("push_pop_100k_1000_tenants", |b| {
        let tenants = 1_000u32;
        let policy = Policy {
            tenants: (0..tenants)
                .map(|t| TenantSpec {
                    name: format!("t{t}"),
                    weight: NonZeroU32::new(1 + t % 4).unwrap(),
                    max_in_flight: (t < 100).then(|| NonZeroU32::new(2).unwrap()),
                })
                .collect(),
            starvation_after: Some(60_000_000_000),
            ..Policy::default()
        };
        b.iter_batched(
            || {
                let mut s = Scheduler::with_policy(policy.clone());
                for seq in 0..N {
                    let lane = Lane {
                        tenant: (seq.wrapping_mul(2_654_435_761) % u64::from(tenants)) as u32,
                        ..Lane::default()
                    };
                    s.enqueue(0, lane, (seq % 7) as i64, seq, seq);
                }
                s
            },
            |mut s| {
                let mut sum = 0u64;
                let mut now = 0;
                while let Some(p) = s.pop_timed(now) {
                    s.finished(p.lane);
                    sum += p.job;
                    now += 1_000;
                }
                black_box(sum)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// One simulated run of 1,000,000 items under an RPM and a TPM limit with 64 workers and a
/// lognormal latency: the core of `ratebound estimate` (issue 6's goal: under 2 s).
fn estimate(c: &mut Criterion) {
    const ITEMS: u64 = 1_000_000;
    let limits = [
        limit("rpm", Unit::Requests, 30_000, Duration::from_secs(60)),
        limit("tpm", Unit::Tokens, 10_000_000, Duration::from_secs(60)),
    ];
    let items: SimList = (0..ITEMS)
        .map(|seq| {
            let mut item = SimItem::new(
                (seq % 3) as i64,
                seq,
                Costs::request(300 + seq % 200),
                Route::all(2),
            );
            item.tokens = 250 + seq % 100;
            item
        })
        .collect();
    let latency = Latency::parse("p50=800ms,p95=3s").unwrap();
    let setup = Setup {
        items: &items,
        limits: &limits,
        jitter: Duration::from_millis(50),
        start: std::time::UNIX_EPOCH + Duration::from_secs(1_795_456_800),
        latency: &latency,
        seed: ratebound::estimate::SEED,
        failure_share: 0.0,
        retry: &ratebound::retry::RetryPolicy::default(),
        policy: None,
    };
    let mut group = c.benchmark_group("estimate");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("simulate_1m_items_rpm_tpm_64_workers", |b| {
        b.iter(|| black_box(sim::run(&setup, 64).unwrap().end));
    });
    group.finish();
}

criterion_group!(benches, limiter, limiter_contended, scheduler, estimate);
criterion_main!(benches);
