//! The X (Twitter) API v2 dialect of the mock: what a request costs, and the bodies and
//! headers X answers with.
//!
//! Pure formatting over values the provider computed; admission and state live in
//! [`provider`](crate::provider), the window in [`window`](crate::window). Sources:
//! <https://docs.x.com/x-api/fundamentals/rate-limits> (limits per 15-minute window; the
//! `x-rate-limit-{limit,remaining,reset}` headers, the reset in epoch seconds) and
//! <https://docs.x.com/x-api/fundamentals/response-codes-and-errors> (v2 error objects;
//! `about:blank` for a generic error named by its status).
//!
//! The mock accepts any method and path. A request stands for as many API calls as its
//! body's top-level `calls` says (a scenario's campaign declares how many it makes), so that
//! one mock request can model a bundle of X calls against the same window.

use serde_json::{Value, json};

use super::{Arrival, Dialect, Reply};
use crate::clock::Nanos;
use crate::limits::Limits;
use crate::provider::MockRequest;
use crate::window::Window;

/// The `x` profile.
pub(crate) struct X;

impl Dialect for X {
    fn name(&self) -> &'static str {
        "x"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        &["window"]
    }

    /// Any method and path is served; the window, if any, must have room for the
    /// request's calls.
    fn reply(&self, limits: &mut Limits, req: &MockRequest, at: Arrival<'_>) -> Reply {
        let calls = calls(&req.body);
        let wait = match limits.windows.first_mut() {
            None => Some(0),
            Some((_, window)) => {
                window.roll(at.wall_ns);
                let wait = window.wait(calls, at.wall_ns);
                if wait == Some(0) {
                    window.take(calls);
                }
                wait
            }
        };
        let headers = self.rate_limit_headers(limits, at.wall_ns);
        if wait != Some(0) {
            return Reply {
                retry: wait,
                ..Reply::new(429, headers, too_many_requests())
            };
        }
        let path = req.path.split('?').next().unwrap_or_default();
        Reply::new(200, headers, created(at.served + 1, path))
    }

    fn rate_limit_headers(&self, limits: &Limits, _wall_ns: u64) -> Vec<(String, String)> {
        rate_limit_headers(limits.windows.first().map(|(_, w)| w))
    }

    fn too_many_requests(&self) -> Value {
        too_many_requests()
    }

    /// X sends no `retry-after`: its reset header says when.
    fn retry_headers(&self, _wait: Nanos) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The calls a request stands for: the body's top-level `calls` when it is a non-negative
/// integer, else 1 (a body that is not JSON, has no `calls`, or a `calls` of another type).
pub(crate) fn calls(body: &[u8]) -> u64 {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("calls").and_then(Value::as_u64))
        .unwrap_or(1)
}

/// The 200 body: the `n`th admitted request's id, and the path it was sent to.
pub(crate) fn created(n: u64, path: &str) -> Value {
    json!({"data": {"id": n.to_string(), "path": path}})
}

/// The 429 body, as X API v2 sends it.
pub(crate) fn too_many_requests() -> Value {
    json!({
        "title": "Too Many Requests",
        "detail": "Too Many Requests",
        "type": "about:blank",
        "status": 429,
    })
}

/// The `x-rate-limit-*` headers of `window` as it stands after this request: its limit,
/// the calls left in it, and its end in epoch seconds. None without a window.
pub(crate) fn rate_limit_headers(window: Option<&Window>) -> Vec<(String, String)> {
    let Some(w) = window else {
        return Vec::new();
    };
    [
        ("limit", w.limit()),
        ("remaining", w.remaining()),
        ("reset", w.reset_epoch_s()),
    ]
    .into_iter()
    .map(|(what, v)| (format!("x-rate-limit-{what}"), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_costs_its_declared_calls_else_one() {
        assert_eq!(calls(br#"{"campaign": "c", "calls": 4}"#), 4);
        assert_eq!(calls(br#"{"calls": 0}"#), 0);
        assert_eq!(calls(br#"{"campaign": "c"}"#), 1);
        assert_eq!(calls(br#"{"calls": "4"}"#), 1, "a string is not a count");
        assert_eq!(calls(br#"{"calls": -2}"#), 1);
        assert_eq!(calls(br#"{"nested": {"calls": 9}}"#), 1, "top level only");
        assert_eq!(calls(b"not json"), 1);
        assert_eq!(calls(b""), 1);
    }
}
