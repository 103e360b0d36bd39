//! The leaky-bucket profile of the mock: nginx's `limit_req` in front of an API, refusing
//! with a bare 429 or 503 and sending no rate-limit headers.
//!
//! Source: <https://nginx.org/en/docs/http/ngx_http_limit_req_module.html>. nginx keeps,
//! per key, an `excess` that drains at `rate` and grows by one per request; a request that
//! would raise it above `burst` is refused with `limit_req_status` (503 by default; the
//! mock's `status`, 429 by default). Admitted requests are served at once with `nodelay`,
//! else queued until the excess drains: a request arriving with excess `e` waits `e / rate`.
//! The mock counts the same thing as a bucket of `burst + 1` requests refilled at `rate`
//! (excess = `burst` minus the level after the request), so `fill` (a share of `burst + 1`)
//! sets the level at the start: `fill=0` is a queue another client has just filled.
//! Any method and path is served, as the request-limited profiles serve them. nginx sends
//! no `Retry-After`; `retry_after=true` adds one, for a client's bare-429 path.

use std::num::NonZeroU64;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Arrival, Dialect, Reply, any_path};
use crate::MockSpec;
use crate::bucket::Bucket;
use crate::clock::Nanos;
use crate::limits::{Limit, Limits};
use crate::provider::MockRequest;

/// The `leaky` profile.
pub(crate) struct Leaky;

impl Dialect for Leaky {
    fn name(&self) -> &'static str {
        "leaky"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        &["rate", "burst", "nodelay", "status", "fill"]
    }

    /// One bucket of `burst + 1` requests refilled at `rate`; none without a `rate`.
    fn limits(&self, spec: &MockSpec, now: Nanos) -> Limits {
        let mut limits = Limits::windows(Vec::new());
        if let Some((n, per)) = spec.rate {
            let capacity = NonZeroU64::new(spec.burst.saturating_add(1)).unwrap_or(NonZeroU64::MIN);
            // `per * (burst + 1) / n`: the time the bucket takes to refill from empty.
            let period_ns = per.as_nanos() * u128::from(capacity.get()) / u128::from(n.get());
            let period = Duration::from_nanos(u64::try_from(period_ns).unwrap_or(u64::MAX));
            let fill = spec.fill.map_or(1.0, |f| f.get());
            let bucket = Bucket::filled(capacity, period, fill, now);
            limits.buckets.push((Limit::Leaky, bucket));
        }
        limits
    }

    fn reply(&self, limits: &mut Limits, req: &MockRequest, at: Arrival<'_>) -> Reply {
        let mut reply = any_path(self, limits, req, at);
        if reply.status == 429 {
            reply.status = at.spec.status;
            reply.body = refused(at.spec.status);
        } else if reply.status == 200 && !at.spec.nodelay {
            if let Some((_, bucket)) = limits.buckets.first() {
                let excess = at.spec.burst as f64 - bucket.level();
                reply.queued = bucket.time_for(excess);
            }
        }
        reply
    }

    /// None: nginx reports nothing of its limit.
    fn rate_limit_headers(&self, _limits: &Limits, _wall_ns: u64) -> Vec<(String, String)> {
        Vec::new()
    }

    /// None: nginx sends no `Retry-After` (`retry_after=true` adds a plain one).
    fn retry_headers(&self, _wait: Nanos) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The body of a refusal with `status`.
fn refused(status: u16) -> Value {
    let text = match status {
        503 => "503 Service Temporarily Unavailable",
        _ => "429 Too Many Requests",
    };
    json!({"error": text})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::provider::tests::{get, header, provider};

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nodelay_admits_the_burst_at_once_then_one_request_per_interval() {
        let (p, clock) = provider("mock://leaky?rate=10r/s&burst=4&nodelay");
        let statuses: Vec<u16> = (0..6).map(|_| p.handle(&get("/")).status).collect();
        assert_eq!(
            statuses,
            [200, 200, 200, 200, 200, 429],
            "burst + 1, then refused"
        );
        clock.advance(99 * MS);
        assert_eq!(p.handle(&get("/")).status, 429, "not before 100 ms");
        clock.advance(MS);
        let r = p.handle(&get("/"));
        assert_eq!(r.status, 200);
        assert_eq!(r.delay, Duration::ZERO, "nodelay: served at once");
        assert_eq!(p.handle(&get("/")).status, 429);
    }

    #[test]
    fn over_ten_seconds_it_admits_the_burst_plus_the_rate() {
        let (p, clock) = provider("mock://leaky?rate=50r/s&burst=10&nodelay");
        let mut admitted = 0;
        for _ in 0..10_000 {
            admitted += u32::from(p.handle(&get("/")).status == 200);
            clock.advance(MS);
        }
        // 11 at once, then one every 20 ms for the remaining 9.999 s.
        assert_eq!(admitted, 11 + 499);
        assert_eq!(p.stats().rate_limited, 10_000 - 510);
    }

    #[test]
    fn without_nodelay_admitted_requests_queue_until_the_excess_drains() {
        let (p, clock) = provider("mock://leaky?rate=10r/s&burst=4&latency=5ms");
        let delays: Vec<Duration> = (0..5).map(|_| p.handle(&get("/")).delay).collect();
        let queued: Vec<u64> = (delays.iter())
            .map(|d| (d.as_millis() - 5) as u64)
            .collect();
        assert_eq!(
            queued,
            [0, 100, 200, 300, 400],
            "each waits its place in the queue"
        );
        assert_eq!(p.handle(&get("/")).status, 429, "the queue is full");
        clock.advance(Duration::from_millis(250));
        let r = p.handle(&get("/"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.delay,
            Duration::from_millis(5 + 250),
            "2.5 requests drained"
        );
    }

    #[test]
    fn refusals_are_bare_429s_or_503s() {
        for (url, status) in [
            ("mock://leaky?rate=1r/m&nodelay", 429),
            ("mock://leaky?rate=1r/m&nodelay&status=503", 503),
            ("mock://leaky?rate=1r/m&nodelay=true&status=429", 429),
        ] {
            let (p, _) = provider(url);
            let admitted = p.handle(&get("/"));
            let refused = p.handle(&get("/"));
            assert_eq!((admitted.status, refused.status), (200, status), "{url}");
            for r in [&admitted, &refused] {
                let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names, ["content-type"], "{url}: no rate-limit headers");
            }
            assert_eq!(p.stats().rate_limited, 1, "{url}: a refusal by the limit");
        }
    }

    #[test]
    fn retry_after_adds_a_plain_retry_after_to_a_refusal() {
        let (p, _) = provider("mock://leaky?rate=10r/s&nodelay&retry_after=true");
        p.handle(&get("/"));
        let refused = p.handle(&get("/"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "1", "100 ms, rounded up");
        assert_eq!(refused.headers.len(), 2, "{:?}", refused.headers);
    }

    #[test]
    fn fill_zero_starts_with_a_full_queue() {
        let (p, clock) = provider("mock://leaky?rate=10r/s&burst=4&nodelay&fill=0");
        assert_eq!(p.handle(&get("/")).status, 429, "another client filled it");
        clock.advance(100 * MS);
        assert_eq!(p.handle(&get("/")).status, 200);
        assert_eq!(p.handle(&get("/")).status, 429);
        let (p, _) = provider("mock://leaky?rate=10r/s&burst=3&nodelay&fill=0.5");
        let admitted = (0..6).filter(|_| p.handle(&get("/")).status == 200).count();
        assert_eq!(admitted, 2, "half of burst + 1");
    }

    #[test]
    fn without_a_rate_it_is_unlimited() {
        let (p, _) = provider("mock://leaky");
        assert!((0..100).all(|_| p.handle(&get("/x")).status == 200));
    }
}
