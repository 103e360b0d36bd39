//! The IETF dialect of the mock: the `RateLimit-Policy` and `RateLimit` fields of the
//! current drafts.
//!
//! Pure formatting over values the provider computed. Source:
//! <https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/> (-08 on):
//! `RateLimit-Policy: "default";q=100;w=60` (quota `q` per window of `w` seconds) and
//! `RateLimit: "default";r=50;t=30` (`r` left, full again in `t` seconds), paired by the
//! policy's name. A 429 is an RFC 9457 problem with `retry-after`.

use std::time::Duration;

use serde_json::{Value, json};

use super::provider::Standing;

/// The policy's name: the mock has one request policy.
const POLICY: &str = "default";

/// The `ratelimit-policy` and `ratelimit` fields of the request limit; none without one.
pub(super) fn rate_limit_headers(requests: Option<&Standing>) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // `t` in whole seconds, rounded up: a reset is a "not before".
    let t = s.reset.div_ceil(1_000_000_000);
    vec![
        (
            "ratelimit-policy".into(),
            format!("\"{POLICY}\";q={};w={}", s.limit, seconds(s.window)),
        ),
        (
            "ratelimit".into(),
            format!("\"{POLICY}\";r={};t={t}", s.remaining),
        ),
    ]
}

/// A window in seconds as a structured-field number: an integer when whole, else a decimal
/// of at most three fraction digits (RFC 8941 §3.3.2), rounded up.
fn seconds(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    match ms % 1000 {
        0 => (ms / 1000).to_string(),
        frac => format!(
            "{}.{}",
            ms / 1000,
            format!("{frac:03}").trim_end_matches('0')
        ),
    }
}

/// The 429 body, an RFC 9457 problem.
pub(super) fn too_many_requests() -> Value {
    json!({"type": "about:blank", "title": "Too Many Requests", "status": 429})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::headers::{Dialect, Resource, observe};
    use crate::mock::provider::tests::{get, header, provider};

    #[test]
    fn the_client_reads_what_the_ietf_profile_sends() {
        let (p, clock) = provider("mock://ietf?rpm=100");
        let r = p.handle(&get("/v1/things"));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=100;w=60");
        assert_eq!(header(&r, "ratelimit"), "\"default\";r=99;t=1");
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Ietf));
        let o = &seen.limits[0];
        assert_eq!(o.resource, Resource::Requests);
        assert_eq!((o.limit, o.remaining), (Some(100), Some(99)));
        assert_eq!(o.window, Some(Duration::from_secs(60)));
        assert_eq!(o.reset, Some(Duration::from_secs(1)));
    }

    #[test]
    fn an_ietf_window_reports_its_length_and_a_429_its_retry_after() {
        let (p, clock) = provider("mock://ietf?window=2/1500ms");
        p.handle(&get("/"));
        let r = p.handle(&get("/"));
        assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=2;w=1.5");
        let refused = p.handle(&get("/"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "2", "1.5 s, rounded up");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        let o = &seen.limits[0];
        assert_eq!((o.limit, o.remaining), (Some(2), Some(0)));
        assert_eq!(o.window, Some(Duration::from_millis(1500)));
    }
}
