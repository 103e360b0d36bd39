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

use super::{Dialect, REQUEST_KEYS};
use crate::limits::{Limits, Standing};

/// The `ietf` profile.
pub(crate) struct Ietf;

impl Dialect for Ietf {
    fn name(&self) -> &'static str {
        "ietf"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        REQUEST_KEYS
    }

    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
        rate_limit_headers(limits.requests(wall_ns).as_ref())
    }

    fn too_many_requests(&self) -> Value {
        too_many_requests()
    }
}

/// The policy's name: the mock has one request policy.
const POLICY: &str = "default";

/// The `ratelimit-policy` and `ratelimit` fields of the request limit; none without one.
pub(crate) fn rate_limit_headers(requests: Option<&Standing>) -> Vec<(String, String)> {
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
pub(crate) fn too_many_requests() -> Value {
    json!({"type": "about:blank", "title": "Too Many Requests", "status": 429})
}
