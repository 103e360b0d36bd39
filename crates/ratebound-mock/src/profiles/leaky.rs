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
