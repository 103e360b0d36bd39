//! Measures admission through the Redis backend: admissions per second from one process
//! and the latency each admission adds (p50, p99), as the runner's dispatcher sees it (one
//! admission at a time, each a script run on Redis).
//!
//! ```text
//! redis-server --port 6399 --save '' --appendonly no --daemonize yes
//! cargo run --release --example redis_admission -- redis://127.0.0.1:6399/0 20000
//! # three processes sharing one namespace (one set of keys), started together:
//! for i in 1 2 3; do cargo run --release --example redis_admission -- redis://127.0.0.1:6399/0 20000 & done; wait
//! ```
//!
//! The limits (a rolling rate and a fixed window, both far above what is reached) make
//! every admission succeed, so the figure is the backend's cost, not a configured rate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use ratebound::limiter::{Costs, LimitSpec, Limiter, Unit};
use ratebound::shared::redis::RedisLimiter;

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
    let n: usize = args.next().map_or(20_000, |a| a.parse().expect("a count"));
    let specs = [
        LimitSpec::rolling(
            "rps",
            Unit::Requests,
            NonZeroU64::new(1_000_000_000).unwrap(),
            Duration::from_secs(1),
        ),
        LimitSpec::window(
            "per-minute",
            Unit::Tokens,
            NonZeroU64::new(u64::MAX / 4).unwrap(),
            Some(Duration::from_secs(60)),
        ),
    ];
    let route = Limiter::new(&specs).route_all();
    let costs = Costs::request(100);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut shared =
            RedisLimiter::new(&url, "ratebound:{bench}", &specs, Duration::ZERO).unwrap();
        // Warm up: connect and load the script.
        for _ in 0..100 {
            shared.reserve(&route, &costs).await.unwrap().unwrap();
        }
        let mut latencies = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let grant = shared.reserve(&route, &costs).await.unwrap();
            latencies.push(t.elapsed());
            assert!(grant.is_ok(), "the bench's limits admit everything");
        }
        let total = start.elapsed();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "redis admissions: {n} in {:.3} s = {:.0}/s; latency p50 {:?}, p99 {:?}, max {:?}",
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            at(0.50),
            at(0.99),
            at(1.0)
        );
    });
    // The in-memory engine on the same limits, for the added latency.
    let mut memory = Limiter::new(&specs);
    let start = Instant::now();
    let mut now = 0u64;
    for _ in 0..n {
        now += 1;
        let r = memory.reserve(&route, &costs, now).unwrap();
        let _ = std::hint::black_box(r);
    }
    let total = start.elapsed();
    println!(
        "memory admissions: {n} in {:.6} s = {:.0}/s ({:?} each)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        total / u32::try_from(n).unwrap()
    );
}
