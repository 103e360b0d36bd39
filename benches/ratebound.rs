//! Benchmarks of the hot paths at DESIGN.md's scale: limiter admission, scheduler
//! decisions over 100,000 queued items, and the store's writer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::num::NonZeroU64;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ratebound::limiter::{Costs, Denied, LimitSpec, Limiter, Unit};
use ratebound::scheduler::Scheduler;

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

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    const N: u64 = 100_000;
    group.throughput(Throughput::Elements(N));
    group.bench_function("reserve_settle_1_bucket", |b| {
        let specs = [limit("rps", Unit::Requests, 5000, Duration::from_secs(60))];
        let costs = Costs::default().with(Unit::Requests, 1);
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_all(&mut l, &costs, &costs, N)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("reserve_settle_4_buckets", |b| {
        let specs = [
            limit("rpm", Unit::Requests, 5000, Duration::from_secs(60)),
            limit("tpm", Unit::Tokens, 4_000_000, Duration::from_secs(60)),
            limit(
                "rpd",
                Unit::Requests,
                1_000_000,
                Duration::from_secs(86_400),
            ),
            limit(
                "calls",
                Unit::from_name("calls"),
                180,
                Duration::from_secs(900),
            ),
        ];
        let costs = Costs::request(800).with(Unit::from_name("calls"), 1);
        let actual = Costs::request(600).with(Unit::from_name("calls"), 1);
        b.iter_batched(
            || Limiter::new(&specs),
            |mut l| black_box(admit_all(&mut l, &costs, &actual, N)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn scheduler(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    const N: u64 = 100_000;
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
    group.finish();
}

criterion_group!(benches, limiter, scheduler);
criterion_main!(benches);
