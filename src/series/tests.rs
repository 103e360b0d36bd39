//! Time-series aggregation: one heartbeat's point, merging, coarsening, percentiles.

use super::*;

fn attempt(latency_ms: u64) -> Attempt {
    Attempt {
        latency_ms,
        http_status: Some(200),
        done: true,
        tokens: 10,
        ..Attempt::default()
    }
}

fn limit(name: &str, unit: &str, used: u64) -> LimitUse {
    LimitUse {
        name: name.into(),
        unit: unit.into(),
        used,
        limit: 100,
        window_s: 60.0,
    }
}

#[test]
fn a_heartbeat_counts_its_attempts_by_kind() {
    let attempts = [
        attempt(100),
        attempt(300),
        Attempt {
            http_status: Some(429),
            rate_limited: true,
            done: false,
            ..attempt(20)
        },
        Attempt {
            http_status: Some(503),
            retry: true,
            done: false,
            failed: true,
            ..attempt(50)
        },
    ];
    let p = Point::observe(
        12_345,
        &attempts,
        7,
        "running",
        vec![limit("rpm", "requests", 40)],
    );
    assert_eq!((p.start_ms, p.width_ms), (12_000, 1_000));
    assert_eq!((p.sent, p.done, p.failed), (4, 2, 1));
    assert_eq!((p.rate_limited, p.server_errors, p.retries), (1, 1, 1));
    assert_eq!(p.tokens, 40);
    assert_eq!((p.latency_p50_ms, p.latency_p95_ms), (Some(50), Some(300)));
    assert_eq!(p.in_flight, 7);
    assert_eq!(p.limits[0].used, 40);
}

#[test]
fn cost_is_the_highest_usd_limit_reading() {
    let limits = vec![
        limit("rpm", "requests", 99),
        limit("budget", "usd", 1_500_000),
    ];
    assert_eq!(
        Point::observe(0, &[], 0, "running", limits).cost_micro_usd,
        1_500_000
    );
}

#[test]
fn no_attempts_means_no_latency() {
    let p = Point::observe(0, &[], 0, "paused", Vec::new());
    assert_eq!((p.latency_p50_ms, p.latency_p95_ms), (None, None));
    assert_eq!(p.state, "paused");
}

#[test]
fn merging_adds_counts_and_keeps_the_highest_gauges() {
    let mut a = Point::observe(
        1_000,
        &[attempt(100)],
        3,
        "running",
        vec![limit("rpm", "requests", 50)],
    );
    let b = Point::observe(
        1_500,
        &[attempt(200), attempt(200), attempt(200)],
        9,
        "paused",
        vec![limit("rpm", "requests", 20), limit("tpm", "tokens", 5)],
    );
    a.merge(&b);
    assert_eq!(a.sent, 4);
    assert_eq!(a.in_flight, 9);
    assert_eq!(a.state, "paused", "the later state");
    assert_eq!(
        a.latency_p50_ms,
        Some(175),
        "request-weighted mean of the medians"
    );
    assert_eq!(a.latency_p95_ms, Some(200));
    assert_eq!(a.limits.len(), 2);
    assert_eq!(a.limits[0].used, 50, "the highest use seen");
}

#[test]
fn coarsening_regroups_into_aligned_wider_intervals() {
    let points: Vec<Point> = (0..10)
        .map(|s| Point::observe(s * 1_000, &[attempt(s)], s, "running", Vec::new()))
        .collect();
    let coarse = coarsen(&points, 4_000);
    let starts: Vec<u64> = coarse.iter().map(|p| p.start_ms).collect();
    assert_eq!(starts, [0, 4_000, 8_000]);
    assert!(coarse.iter().all(|p| p.width_ms == 4_000));
    assert_eq!(
        coarse.iter().map(|p| p.sent).sum::<u64>(),
        10,
        "nothing lost"
    );
    assert_eq!(coarse[1].in_flight, 7);
}

#[test]
fn a_long_run_is_coarsened_to_at_most_max_points() {
    let mut points: Vec<Point> = (0..MAX_POINTS as u64 + 1)
        .map(|s| Point::observe(s * 1_000, &[attempt(1)], 1, "running", Vec::new()))
        .collect();
    assert_eq!(coarser_width(&points[..MAX_POINTS]), None);
    let mut rounds = 0;
    while let Some(width) = coarser_width(&points) {
        points = coarsen(&points, width);
        rounds += 1;
    }
    assert_eq!(rounds, 1);
    assert!(points.len() <= MAX_POINTS, "{}", points.len());
    assert_eq!(
        points.iter().map(|p| p.sent).sum::<u64>(),
        MAX_POINTS as u64 + 1
    );
}

#[test]
fn percentile_is_nearest_rank() {
    let mut v: Vec<u64> = (1..=100).collect();
    assert_eq!(percentile(&mut v, 0.95), Some(95));
    assert_eq!(percentile(&mut v, 0.5), Some(50));
    assert_eq!(percentile(&mut [7], 0.95), Some(7));
}
