//! The estimate against closed-form answers: request-bound, token-bound, concurrency-bound
//! (Little's law), a daily quota spanning several days, a run budget, deadlines, usage from a
//! previous run and the batch API.

use super::*;
use crate::limiter::budget::Price;
use crate::retry::RetryPolicy;
use std::num::NonZeroU64;
use std::time::{SystemTime, UNIX_EPOCH};

fn items(n: u64, tokens: u64) -> Vec<SimItem> {
    (0..n)
        .map(|seq| SimItem::new(0, seq, Costs::request(tokens), Route::all(2)))
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

/// 2026-11-23T18:00:00Z.
fn evening() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_456_800)
}

fn setup<'a>(items: &[SimItem], limits: &'a [LimitSpec], latency: &'a Latency) -> Setup<'a> {
    Setup {
        items: Box::leak(Box::new(items.iter().cloned().collect())),
        limits,
        jitter: Duration::ZERO,
        start: evening(),
        latency,
        seed: SEED,
        failure_share: 0.0,
        retry: Box::leak(Box::new(RetryPolicy::default())),
        policy: None,
    }
}

fn fixed(ms: u64) -> Latency {
    Latency::Fixed(Duration::from_millis(ms))
}

#[test]
fn a_request_bound_run_matches_the_closed_form() {
    // 3,000 items, 100/s bucket starting full, 50 ms latency: (3000 - 100) / 100 s + 50 ms.
    let (items, limits, latency) = (
        items(3000, 10),
        [limit("rps", Unit::Requests, 100, 1)],
        fixed(50),
    );
    let e = estimate(&setup(&items, &limits, &latency), 64, None).unwrap();
    assert!((e.makespan_s - 29.05).abs() < 0.01, "{}", e.makespan_s);
    assert_eq!(e.binding_limit, "rps");
    // Little's law: 100/s x 50 ms = 5 in flight.
    assert!(
        (5..=8).contains(&e.recommended_workers),
        "{}",
        e.recommended_workers
    );
    assert!(e.limits[0].utilization > 0.99, "{:?}", e.limits[0]);
}

#[test]
fn a_token_bound_run_matches_the_closed_form() {
    // 1,000 items of 1,000 tokens under 60,000 tokens/min: (1e6 - 6e4) / 1000 per s.
    let limits = [
        limit("rpm", Unit::Requests, 5000, 60),
        limit("tpm", Unit::Tokens, 60_000, 60),
    ];
    let (items, latency) = (items(1000, 1000), fixed(10));
    let e = estimate(&setup(&items, &limits, &latency), 16, None).unwrap();
    assert!((e.makespan_s - 940.01).abs() < 0.05, "{}", e.makespan_s);
    assert_eq!(e.binding_limit, "tpm");
    assert_eq!(e.tokens, 1_000_000);
}

#[test]
fn a_concurrency_bound_run_follows_littles_law() {
    // 4 workers, 200 ms each: 20 items/s, far below the 100/s limit -> 1,000 items in 50 s.
    let limits = [limit("rps", Unit::Requests, 100, 1)];
    let (items, latency) = (items(1000, 1), fixed(200));
    let e = estimate(&setup(&items, &limits, &latency), 4, None).unwrap();
    assert!((e.makespan_s - 50.0).abs() < 1e-6, "{}", e.makespan_s);
    assert_eq!(e.binding_limit, "workers");
    // The best is the limit's: (1000 - 100) / 100 + 0.2 s; it takes 100/s x 200 ms = 20
    // workers in flight to get there.
    assert!(
        (e.best_makespan_s - 9.2).abs() < 0.01,
        "{}",
        e.best_makespan_s
    );
    assert!(
        (20..=22).contains(&e.recommended_workers),
        "{}",
        e.recommended_workers
    );
}

#[test]
fn a_lognormal_latency_follows_littles_law_with_its_mean() {
    // 8 workers at a mean of 122 ms pass 66 items/s, below the 100/s limit.
    let latency = Latency::parse("p50=100ms,p95=300ms").unwrap();
    let mean = latency.mean().as_secs_f64();
    let limits = [limit("rps", Unit::Requests, 100, 1)];
    let items = items(5_000, 1);
    let e = estimate(&setup(&items, &limits, &latency), 8, None).unwrap();
    let little = 5_000.0 * mean / 8.0;
    assert!(
        (e.makespan_s / little - 1.0).abs() < 0.03,
        "{} vs {little}",
        e.makespan_s
    );
    assert_eq!(e.binding_limit, "workers");
    assert_eq!(e.latency_model, "lognormal");
    let again = estimate(&setup(&items, &limits, &latency), 8, None).unwrap();
    assert_eq!(e, again, "seeded: the same estimate every time");
}

#[test]
fn a_daily_quota_spans_days_and_says_when_it_runs_out() {
    // 2,500 items, 1,000 a day, 10/s; the run starts at 18:00 UTC. Day 1 runs out after
    // 99 s; day 2 starts at midnight and runs out at 00:01:39; day 3 sends the last 500,
    // the last one at 00:00:49 and back 100 ms later.
    let mut daily = LimitSpec::window(
        "daily",
        Unit::Requests,
        NonZeroU64::new(1000).unwrap(),
        Some(Duration::from_secs(86_400)),
    );
    daily.scope = crate::limiter::Scope::All;
    let limits = [limit("rps", Unit::Requests, 10, 1), daily];
    let (items, latency) = (items(2500, 1), fixed(100));
    let e = estimate(&setup(&items, &limits, &latency), 8, None).unwrap();
    let closed = 6.0 * 3600.0 + 86_400.0 + 49.1;
    assert!((e.makespan_s - closed).abs() < 0.01, "{}", e.makespan_s);
    assert_eq!(e.binding_limit, "daily");
    let q = &e.limits[1];
    assert_eq!(q.periods, Some(3));
    assert_eq!(q.period_s, Some(86_400.0));
    assert_eq!(
        q.bound_s, 108_000.0,
        "the third window opens 30 h after 18:00"
    );
    assert_eq!(q.runs_out, ["2026-11-23T18:01:39Z", "2026-11-24T00:01:39Z"]);
    assert_eq!(e.end, "2026-11-25T00:00:49Z");
    assert_eq!(e.limits[0].periods, None);
}

#[test]
fn a_spent_run_budget_stops_the_run() {
    let budget = LimitSpec::window(
        "budget",
        Unit::Usd,
        NonZeroU64::new(1_000_000).unwrap(),
        None,
    );
    let items: Vec<SimItem> = (0..10)
        .map(|seq| {
            let mut costs = Costs::request(10);
            costs.add(Unit::Usd, 300_000);
            let mut item = SimItem::new(0, seq, costs, Route::all(1));
            item.usd_micro = 300_000;
            item
        })
        .collect();
    let limits = [budget];
    let latency = fixed(10);
    let e = estimate(
        &setup(&items, &limits, &latency),
        4,
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(e.stopped_by.as_deref(), Some("budget"));
    assert_eq!(e.requests, 3, "$0.30 each under $1");
    let d = e.deadline.unwrap();
    assert!(!d.fits);
    assert_eq!(d.changes[0].name, "budget");
    assert_eq!(d.changes[0].needed, 3_000_000.0, "$3 in micro-dollars");
}

#[test]
fn a_late_limit_bound_run_says_what_rate_would_make_it() {
    let (items, limits, latency) = (
        items(3000, 10),
        [limit("rps", Unit::Requests, 100, 1)],
        fixed(50),
    );
    let e = estimate(
        &setup(&items, &limits, &latency),
        64,
        Some(Duration::from_secs(20)),
    )
    .unwrap();
    let d = e.deadline.unwrap();
    assert!(!d.fits && d.margin_s < -9.0, "{d:?}");
    // (3000 - 100) / (20 - 0.05) s = 145.4/s.
    assert_eq!(d.changes[0].name, "rps");
    assert_eq!(d.changes[0].needed, 146.0);
    let late = estimate(
        &setup(&items, &[limit("rps", Unit::Requests, 146, 1)], &latency),
        64,
        None,
    )
    .unwrap();
    assert!(
        late.makespan_s <= 20.0,
        "the advice works: {}",
        late.makespan_s
    );
}

#[test]
fn a_late_worker_bound_run_says_how_many_workers_would_make_it() {
    let limits = [limit("rps", Unit::Requests, 100, 1)];
    let (items, latency) = (items(1000, 1), fixed(200));
    let e = estimate(
        &setup(&items, &limits, &latency),
        4,
        Some(Duration::from_secs(20)),
    )
    .unwrap();
    let d = e.deadline.unwrap();
    assert!(!d.fits);
    assert_eq!(d.changes.len(), 1, "{d:?}");
    assert_eq!(d.changes[0].name, "workers");
    let w = d.changes[0].needed as usize;
    let fits = estimate(&setup(&items, &limits, &latency), w, None).unwrap();
    let short = estimate(&setup(&items, &limits, &latency), w - 1, None).unwrap();
    assert!(fits.makespan_s <= 20.0 && short.makespan_s > 20.0, "{w}");
    let e = estimate(
        &setup(&items, &limits, &latency),
        4,
        Some(Duration::from_secs(60)),
    )
    .unwrap();
    assert!(e.deadline.unwrap().fits);
}

#[test]
fn recorded_usage_settles_tokens_and_prices_the_run() {
    // Reserved 1,000 tokens each, recorded 300 in + 200 out: a 60,000/min bucket passes
    // 500-token items, so (500,000 - 60,000) / 1,000 per s, give or take one item.
    let usage: Vec<(String, String)> = (0..1000)
        .map(|i| {
            (
                format!("i{i}"),
                r#"{"prompt_tokens":300,"completion_tokens":200}"#.to_string(),
            )
        })
        .collect();
    let recorded = RecordedRun::new(&[10], &usage, 0, 1000).unwrap();
    let pricing = Pricing::new([(
        "m".to_string(),
        Price {
            input: 1.0,
            output: 2.0,
        },
    )]);
    let batch = BTreeMap::from([(
        "m".to_string(),
        BatchTerms {
            discount: 0.5,
            window: Duration::from_secs(86_400),
        },
    )]);
    let pricer = Pricer {
        pricing: &pricing,
        batch: &batch,
        recorded: Some(&recorded),
    };
    let mut items = items(1000, 1000);
    for item in &mut items {
        pricer.apply(item, &format!("i{}", item.seq), Some("m"), 800, 200);
    }
    let limits = [
        limit("rpm", Unit::Requests, 5000, 60),
        limit("tpm", Unit::Tokens, 60_000, 60),
    ];
    let latency = fixed(10);
    let e = estimate(
        &setup(&items, &limits, &latency),
        16,
        Some(Duration::from_secs(3600)),
    )
    .unwrap();
    assert!((e.makespan_s - 440.5).abs() < 1.0, "{}", e.makespan_s);
    assert_eq!(e.tokens, 500_000);
    assert_eq!(e.usage_basis, "recorded usage");
    // 1,000 x (300 x $1 + 200 x $2) / 1M = $0.70; half through the batch API.
    assert!((e.cost_usd - 0.70).abs() < 1e-9, "{}", e.cost_usd);
    let b = e.batch.unwrap();
    assert!((b.cost_usd - 0.35).abs() < 1e-9 && (b.saving_usd - 0.35).abs() < 1e-9);
    assert_eq!(b.meets_deadline, Some(false), "24 h window, 1 h deadline");
}

#[test]
fn transient_failures_are_retried_by_the_retry_policy() {
    // A fifth of attempts fail: 1,000 items take 1,000 / (1 - 0.2) = 1,250 requests on
    // average; with at most 2 attempts, 0.2^2 = 4% of the items fail twice and give up.
    let (items, latency) = (items(1000, 1), fixed(100));
    let retry = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let limits = [limit("rps", Unit::Requests, 50, 1)];
    let mut s = setup(&items, &limits, &latency);
    s.failure_share = 0.2;
    s.retry = &retry;
    let e = estimate(&s, 16, None).unwrap();
    // 1,000 first attempts and about 200 retries, of which about 40 fail again.
    assert!((1150..=1250).contains(&e.requests), "{}", e.requests);
    assert!((20..=60).contains(&e.items_failed), "{}", e.items_failed);
    assert_eq!(
        e.limits[0].needed, e.requests,
        "retries count against the limit"
    );
    // Request-bound: every request, retries included, at 50/s after a burst of 50.
    let closed = (e.requests - 50) as f64 / 50.0;
    assert!(
        (e.makespan_s - closed).abs() < 1.0,
        "{} vs {closed}",
        e.makespan_s
    );
}

#[test]
fn no_worker_count_beats_the_makespan_floor() {
    // 2,000 items under 100/s (burst 100) and 300 tokens each under 20,000 tokens/s
    // (burst 20,000): floors of (2000 - 100) / 100 s = 19 s and (600,000 - 20,000) /
    // 20,000 s = 29 s; the tokens' is the run's.
    let limits = [
        limit("rps", Unit::Requests, 100, 1),
        limit("tps", Unit::Tokens, 20_000, 1),
    ];
    let items: Vec<SimItem> = (0..2000)
        .map(|seq| SimItem::new(0, seq, Costs::request(300), Route::all(2)))
        .collect();
    let latency = fixed(50);
    let s = setup(&items, &limits, &latency);
    let floor = super::makespan_floor(&s).expect("no run budget");
    assert_eq!(floor, sim::from_secs(29.0));
    for workers in [1, 4, 64, 2000] {
        let end = sim::run(&s, workers).unwrap().end;
        assert!(
            end >= floor,
            "{workers} workers end at {end}, before the floor {floor}"
        );
    }
}

#[test]
fn a_tenant_held_by_its_own_limit_does_not_hold_back_the_others() {
    // One worker, 100 ms latency. Tenant `a` (5 items first in file order) has its own
    // 1/s with a burst of 1: its admissions fall at 0, 1, 2, 3 and 4 s. Tenant `b` has 20
    // items and no limit of its own. In one fixed order `b` would wait behind `a` (and end
    // at 4.1 s + 20 x 100 ms); with lanes `b` fills `a`'s gaps, and the run ends with `a`'s
    // last response, each `a` admission late by at most the one `b` request in flight.
    let mut own = limit("rps@a", Unit::Requests, 1, 1);
    if let LimitKind::Rolling { burst, .. } = &mut own.kind {
        *burst = NonZeroU64::new(1);
    }
    own.scope = crate::limiter::Scope::Tenant("a".into());
    let limits = [limit("rps", Unit::Requests, 1000, 1), own];
    let limiter = crate::limiter::Limiter::new(&limits);
    let route = |tenant: &str| {
        limiter.route(&crate::limiter::JobAttrs {
            kind: None,
            tenant: Some(tenant),
            path: "/",
        })
    };
    let items: Vec<SimItem> = (0..25)
        .map(|seq| {
            let tenant = if seq < 5 { "a" } else { "b" };
            let mut item = SimItem::new(0, seq, Costs::request(10), route(tenant));
            item.lane = Lane {
                tenant: u32::from(seq >= 5),
                ..Lane::default()
            };
            item
        })
        .collect();
    let mut policy = crate::scheduler::Policy::default();
    policy.tenants.push(crate::scheduler::TenantSpec {
        name: "b".into(),
        weight: std::num::NonZeroU32::MIN,
        max_in_flight: None,
    });
    policy.tenants[0].name = "a".into();
    let latency = fixed(100);
    let plain = setup(&items, &limits, &latency);
    let fixed_order = sim::run(&plain, 1).unwrap();
    assert_eq!(fixed_order.end, sim::from_secs(6.1), "b waits behind a");
    let lanes = Setup {
        policy: Some(&policy),
        ..plain
    };
    let t = sim::run(&lanes, 1).unwrap();
    assert_eq!(t.admitted, 25);
    assert!(
        t.end >= sim::from_secs(4.1) && t.end <= sim::from_secs(4.2),
        "ends at {} s",
        sim::secs(t.end)
    );
    let e = estimate(&lanes, 1, None).unwrap();
    assert_eq!(e.makespan_s, sim::secs(t.end));
    assert!(e.limits[1].held_share > 0.0, "{e:?}");
}

#[test]
fn a_list_sorted_on_disk_estimates_exactly_as_one_held_in_memory() {
    // Mixed priorities and sizes, transient failures (retries rejoin by priority), several
    // limits: the spilled list (runs of 97 entries, merged) must give the same figures.
    let mut x = 11u64;
    let listed: Vec<SimItem> = (0..2_000)
        .map(|seq| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let tokens = 50 + (x >> 40) % 400;
            SimItem::new(
                ((x >> 20) % 4) as i64,
                seq,
                Costs::request(tokens),
                Route::all(2),
            )
        })
        .collect();
    let limits = [
        limit("rps", Unit::Requests, 40, 1),
        limit("tpm", Unit::Tokens, 600_000, 60),
    ];
    let latency = fixed(120);
    let mut spilled = sim_list::SimListBuilder::spilling_every(97);
    listed.iter().cloned().for_each(|i| spilled.push(i));
    let spilled = spilled.build().unwrap();
    let held = setup(&listed, &limits, &latency);
    let on_disk = Setup {
        items: &spilled,
        failure_share: 0.1,
        ..held
    };
    let held = Setup {
        failure_share: 0.1,
        ..held
    };
    let a = serde_json::to_value(estimate(&held, 8, None).unwrap()).unwrap();
    let b = serde_json::to_value(estimate(&on_disk, 8, None).unwrap()).unwrap();
    assert!(spilled.read_error().is_none());
    let order = |l: &SimList| l.entries().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(order(&spilled), order(held.items));
    assert_eq!(a, b);
}
