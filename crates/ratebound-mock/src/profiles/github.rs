//! The GitHub dialect of the mock: the REST API's primary rate-limit headers.
//!
//! Pure formatting over values the provider computed; the provider counts GitHub's request
//! limits in fixed windows anchored at the first request after the previous window expired
//! (`rpm=N`: N per 60 s window, `rps=N`: N per 1 s window, `window=N/D`: N per D), so the
//! reset is the window's end, not a bucket's time to refill. Source:
//! <https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit>:
//! `x-ratelimit-{limit,remaining,used,reset,resource}`, the reset in epoch seconds and the
//! resource `core` for the REST API. A limit exceeded answers 429 with `retry-after`, and a
//! JSON `message` with a `documentation_url`
//! (<https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#rate-limit-errors>).

use serde_json::{Value, json};

use std::time::Duration;

use super::Dialect;
use crate::MockSpec;
use crate::clock::Nanos;
use crate::limits::{Limit, Limits, MINUTE, Standing};
use crate::window::Window;

/// The `github` profile.
pub(crate) struct GitHub;

impl Dialect for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        &["rpm", "rps", "window"]
    }

    /// GitHub counts its request limits in fixed windows anchored at the first request
    /// after the previous one expired
    /// (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>),
    /// so `rpm=N` is N per 60 s window, `rps=N` N per 1 s window and `window=N/D` N per D,
    /// all anchored, in that order.
    fn limits(&self, spec: &MockSpec, _now: Nanos) -> Limits {
        let one_second = Duration::from_secs(1);
        let windows = [
            (Limit::Rpm, spec.rpm.map(|n| (n, MINUTE))),
            (Limit::Rps, spec.rps.map(|n| (n, one_second))),
            (Limit::Window, spec.window),
        ]
        .into_iter()
        .filter_map(|(limit, w)| w.map(|(n, length)| (limit, Window::anchored(n, length))))
        .collect();
        Limits::windows(windows)
    }

    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
        rate_limit_headers(limits.requests(wall_ns).as_ref(), wall_ns)
    }

    fn too_many_requests(&self) -> Value {
        too_many_requests()
    }
}

/// The `x-ratelimit-*` headers of the request limit as it stands at `wall_ns` (epoch
/// nanoseconds); none without a request limit.
pub(crate) fn rate_limit_headers(
    requests: Option<&Standing>,
    wall_ns: u64,
) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // Epoch seconds, rounded up: a reset is a "not before".
    let reset = wall_ns.saturating_add(s.reset).div_ceil(1_000_000_000);
    [
        ("limit", s.limit.to_string()),
        ("remaining", s.remaining.to_string()),
        ("used", s.limit.saturating_sub(s.remaining).to_string()),
        ("reset", reset.to_string()),
        ("resource", "core".to_string()),
    ]
    .into_iter()
    .map(|(what, v)| (format!("x-ratelimit-{what}"), v))
    .collect()
}

/// The 429 body.
pub(crate) fn too_many_requests() -> Value {
    json!({
        "message": "API rate limit exceeded for installation ID 1.",
        "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
    })
}
