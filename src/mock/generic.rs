//! The generic dialect of the mock: the de facto `X-RateLimit-{Limit,Remaining,Reset}`.
//!
//! Pure formatting over values the provider computed. No spec defines these names; the mock
//! sends the reset in epoch seconds, the form most APIs use (see `headers/generic.rs` for
//! the others a client must read), and a bare JSON message on a 429, with `retry-after`.

use serde_json::{Value, json};

use super::provider::Standing;

/// The `x-ratelimit-{limit,remaining,reset}` headers of the request limit as it stands at
/// `wall_ns` (epoch nanoseconds); none without a request limit.
pub(super) fn rate_limit_headers(
    requests: Option<&Standing>,
    wall_ns: u64,
) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // Epoch seconds, rounded up: a reset is a "not before".
    let reset = wall_ns.saturating_add(s.reset).div_ceil(1_000_000_000);
    vec![
        ("x-ratelimit-limit".into(), s.limit.to_string()),
        ("x-ratelimit-remaining".into(), s.remaining.to_string()),
        ("x-ratelimit-reset".into(), reset.to_string()),
    ]
}

/// The 429 body.
pub(super) fn too_many_requests() -> Value {
    json!({"message": "Too Many Requests"})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::clock::Clock;
    use crate::headers::{Dialect, Resource, observe};
    use crate::mock::provider::tests::{get, header, provider};

    #[test]
    fn the_client_reads_what_the_generic_profile_sends() {
        let (p, clock) = provider("mock://generic?rps=10");
        let r = p.handle(&get("/anything"));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-reset"), "1767225601");
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Generic));
        let o = &seen.limits[0];
        assert_eq!(o.resource, Resource::Requests);
        assert_eq!((o.limit, o.remaining), (Some(10), Some(9)));
        assert_eq!(o.reset, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_generic_429_carries_retry_after() {
        let (p, clock) = provider("mock://generic?rpm=1");
        p.handle(&get("/a"));
        let refused = p.handle(&get("/a"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "60");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.retry_after, Some(Duration::from_secs(60)));
    }
}
