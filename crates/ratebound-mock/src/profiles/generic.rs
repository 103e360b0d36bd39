//! The generic dialect of the mock: the de facto `X-RateLimit-{Limit,Remaining,Reset}`.
//!
//! Pure formatting over values the provider computed. No spec defines these names; the mock
//! sends the reset in epoch seconds, the form most APIs use (see `headers/generic.rs` for
//! the others a client must read), and a bare JSON message on a 429, with `retry-after`.

use serde_json::{Value, json};

use super::{Dialect, REQUEST_KEYS};
use crate::limits::Limits;

/// The generic profile.
pub(crate) struct Generic;

impl Dialect for Generic {
    fn name(&self) -> &'static str {
        "generic"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        REQUEST_KEYS
    }

    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
        headers(limits, wall_ns)
    }

    fn too_many_requests(&self) -> Value {
        json!({"message": "Too Many Requests"})
    }
}

/// The `x-ratelimit-{limit,remaining,reset}` headers of the request limit as it stands at
/// `wall_ns` (epoch nanoseconds); none without a request limit.
fn headers(limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
    let Some(s) = limits.requests(wall_ns) else {
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
