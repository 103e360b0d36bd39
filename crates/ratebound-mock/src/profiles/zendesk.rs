//! The Zendesk dialect of the mock: the account limit's `ratelimit-*` headers and one
//! endpoint limit, `zendesk-ratelimit-tickets-index`.
//!
//! Pure formatting over values the provider computed. Source:
//! <https://developer.zendesk.com/api-reference/introduction/rate-limits/>:
//! `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` (seconds from now) for the
//! account, `zendesk-ratelimit-<endpoint>: total=..; remaining=..; resets=..` for an
//! endpoint limit, and a 429 with `retry-after`. The mock's one request limit speaks for
//! both, so a client sees the two families agree.

use serde_json::{Value, json};

use super::{Dialect, REQUEST_KEYS};
use crate::limits::{Limits, Standing};

/// The `zendesk` profile.
pub(crate) struct Zendesk;

impl Dialect for Zendesk {
    fn name(&self) -> &'static str {
        "zendesk"
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

/// The account headers and the `tickets-index` endpoint header of the request limit; none
/// without one.
pub(crate) fn rate_limit_headers(requests: Option<&Standing>) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // Whole seconds from now, rounded up: a reset is a "not before".
    let reset = s.reset.div_ceil(1_000_000_000);
    vec![
        ("ratelimit-limit".into(), s.limit.to_string()),
        ("ratelimit-remaining".into(), s.remaining.to_string()),
        ("ratelimit-reset".into(), reset.to_string()),
        (
            "zendesk-ratelimit-tickets-index".into(),
            format!(
                "total={}; remaining={}; resets={reset}",
                s.limit, s.remaining
            ),
        ),
    ]
}

/// The 429 body.
pub(crate) fn too_many_requests() -> Value {
    json!({
        "error": "APIRateLimitExceeded",
        "description": "Number of allowed API requests per minute exceeded",
    })
}
