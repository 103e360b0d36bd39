//! The OpenAI dialect of the mock: the chat completions path, how a request's tokens are
//! counted, and the bodies and headers OpenAI answers with.
//!
//! Pure formatting over values the provider computed; admission and state live in
//! [`provider`](crate::provider). Sources: <https://platform.openai.com/docs/guides/rate-limits>
//! (headers, counting `max_tokens` at arrival), the chat completion object of
//! <https://platform.openai.com/docs/api-reference/chat/object>, and the error codes of
//! <https://platform.openai.com/docs/guides/error-codes> (`insufficient_quota`, 500
//! `server_error`), which the mock's faults send from every profile.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Arrival, BatchApi, Dialect, Reply, retry_after};
use crate::clock::Nanos;
use crate::limits::{Limit, Limits, Standing};
use crate::provider::MockRequest;

/// The limit keys of the chat completions profiles: requests and tokens.
pub(crate) const TOKEN_KEYS: &[&str] = &[
    "rpm",
    "rps",
    "tpm",
    "window",
    "fill",
    "batch_delay",
    "batch_fail_every",
    "batch_tokens",
];

/// The `openai` profile.
pub(crate) struct OpenAi;

impl Dialect for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        TOKEN_KEYS
    }

    fn reply(&self, limits: &mut Limits, req: &MockRequest, at: Arrival<'_>) -> Reply {
        chat_reply(self, limits, req, at)
    }

    fn batch_api(&self) -> Option<BatchApi> {
        Some(BatchApi::OpenAi)
    }

    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
        let (requests, tokens) = (limits.requests(wall_ns), limits.tokens());
        rate_limit_headers(requests.as_ref(), tokens.as_ref())
    }

    /// `retry-after` in whole seconds and OpenAI's own `retry-after-ms`.
    fn retry_headers(&self, wait: Nanos) -> Vec<(String, String)> {
        let wait_ms = wait.div_ceil(1_000_000);
        vec![
            retry_after(wait),
            ("retry-after-ms".into(), wait_ms.to_string()),
        ]
    }
}

/// The answer of a chat completions profile (OpenAI, Anthropic's headers) to `req`:
/// `POST /v1/chat/completions` admitted on its token estimate and charged its usage, or
/// OpenAI's 429 naming the limit; anything else a 404 or a 400.
pub(crate) fn chat_reply<D: Dialect + ?Sized>(
    dialect: &D,
    limits: &mut Limits,
    req: &MockRequest,
    at: Arrival<'_>,
) -> Reply {
    let path = req.path.split('?').next().unwrap_or_default();
    if req.method != "POST" || path != CHAT_PATH {
        return Reply::new(404, Vec::new(), not_found(&req.method, path));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Reply::new(400, Vec::new(), invalid_json());
    };
    let tokens = estimate_request_tokens(&body);
    match limits.admit(tokens, at.now, at.wall_ns) {
        Ok(()) => {
            let reply = completion(&body, at.served + 1, at.wall_ns / 1_000_000_000);
            // Admission counts the estimate; the limit is then charged what the request
            // really used (the reply's usage), as ratebound's settle assumes. Only an
            // over-estimate is credited back: a usage above the estimate (`max_tokens`
            // 0) is not charged extra.
            let used = reply["usage"]["total_tokens"].as_u64().unwrap_or(tokens);
            limits.settle(tokens, used);
            Reply::new(200, dialect.rate_limit_headers(limits, at.wall_ns), reply)
        }
        Err(refusal) => {
            let headers = dialect.rate_limit_headers(limits, at.wall_ns);
            let requested = refusal.limit.cost(tokens);
            let error = rate_limited(
                &body,
                refusal.limit,
                refusal.capacity,
                refusal.used,
                requested,
                refusal.wait,
            );
            Reply {
                retry: refusal.wait,
                ..Reply::new(429, headers, error)
            }
        }
    }
}

/// The one path the OpenAI profile serves, with `POST`.
pub(crate) const CHAT_PATH: &str = "/v1/chat/completions";

/// Completion tokens a mock reply reports when `max_tokens` does not cap them lower.
const COMPLETION_TOKENS: u64 = 16;

/// The tokens OpenAI counts against a TPM limit when a chat completion request arrives:
/// `ceil(chars / 4) + max_tokens`.
///
/// `chars` is the number of Unicode characters of every message's content (the `text` of
/// each part when the content is an array of parts); `max_tokens` is the body's
/// `max_tokens`, else `max_completion_tokens`, else 0. Anything malformed counts as 0.
///
/// ```
/// # use ratebound_mock::provider::estimate_request_tokens;
/// let body = serde_json::json!({"max_tokens": 10, "messages": [{"role": "user", "content": "héllo"}]});
/// assert_eq!(estimate_request_tokens(&body), 2 + 10);
/// ```
pub fn estimate_request_tokens(body: &Value) -> u64 {
    prompt_tokens(body) + max_tokens(body)
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do (Go's duration
/// format), at millisecond precision with sub-millisecond parts rounded up: a reset is a
/// "not before".
///
/// ```
/// # use std::time::Duration;
/// # use ratebound_mock::provider::format_openai_duration;
/// assert_eq!(format_openai_duration(Duration::from_secs(360)), "6m0s");
/// assert_eq!(format_openai_duration(Duration::from_millis(2500)), "2.5s");
/// ```
pub fn format_openai_duration(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms < 1000 {
        return if ms == 0 {
            "0s".into()
        } else {
            format!("{ms}ms")
        };
    }
    let (secs, frac) = (ms / 1000, ms % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h{m}m");
    } else if m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let _ = write!(out, ".{}", format!("{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

fn prompt_tokens(body: &Value) -> u64 {
    let chars: usize = messages(body)
        .map(|m| content_text(m).chars().count())
        .sum();
    (chars as u64).div_ceil(4)
}

fn max_tokens(body: &Value) -> u64 {
    body.get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn messages(body: &Value) -> impl Iterator<Item = &Value> {
    body.get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A message's text: its string content, or the `text` of each part joined.
fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The model named in the body, or `mock`.
pub(crate) fn model(body: &Value) -> &str {
    body.get("model").and_then(Value::as_str).unwrap_or("mock")
}

/// A chat completion whose reply echoes the start of the last message.
pub(crate) fn completion(body: &Value, n: u64, created_unix_s: u64) -> Value {
    let last = messages(body).last().map(content_text).unwrap_or_default();
    let echo: String = last.chars().take(40).collect();
    let prompt = prompt_tokens(body);
    let completion = match max_tokens(body) {
        0 => COMPLETION_TOKENS,
        max => max.min(COMPLETION_TOKENS),
    };
    json!({
        "id": format!("chatcmpl-mock-{n}"),
        "object": "chat.completion",
        "created": created_unix_s,
        "model": model(body),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("mock reply to: {echo}")},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    })
}

/// OpenAI's error object.
pub(crate) fn error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The 404 for anything but `POST /v1/chat/completions`.
pub(crate) fn not_found(method: &str, path: &str) -> Value {
    let message = format!("Invalid URL ({method} {path})");
    error(&message, "invalid_request_error", None)
}

/// The 400 for a body that is not JSON.
pub(crate) fn invalid_json() -> Value {
    let message =
        "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.";
    error(message, "invalid_request_error", None)
}

/// The 429 of an exhausted quota: retrying does not help until the plan changes.
pub(crate) fn insufficient_quota() -> Value {
    let message = "You exceeded your current quota, please check your plan and billing details.";
    error(message, "insufficient_quota", Some("insufficient_quota"))
}

/// The 500 of a failure on the provider's side.
pub(crate) fn server_error() -> Value {
    let message = "The server had an error while processing your request.";
    json!({"error": {"message": message, "type": "server_error"}})
}

/// The 429 for a request refused by `limit`, of `capacity` units with `used` spent;
/// `wait` is `None` when the request exceeds the capacity and can never be admitted.
pub(crate) fn rate_limited(
    body: &Value,
    limit: Limit,
    capacity: u64,
    used: u64,
    requested: u64,
    wait: Option<Nanos>,
) -> Value {
    let model = model(body);
    let on = limit.description();
    let message = match wait {
        Some(wait) => format!(
            "Rate limit reached for {model} in organization org-mock on {on}: Limit {capacity}, Used {used}, Requested {requested}. Please try again in {}.",
            format_openai_duration(Duration::from_nanos(wait)),
        ),
        None => format!(
            "Request too large for {model} in organization org-mock on {on}: Limit {capacity}, Requested {requested}. The input or output tokens must be reduced in order to run successfully."
        ),
    };
    error(&message, limit.unit(), Some("rate_limit_exceeded"))
}

/// The `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers for the request
/// limit and the token limit as they stand after this request. The reset is the time until
/// the limit is whole again, as a Go duration.
pub(crate) fn rate_limit_headers(
    requests: Option<&Standing>,
    tokens: Option<&Standing>,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (unit, standing) in [("requests", requests), ("tokens", tokens)] {
        if let Some(s) = standing {
            let values = [
                ("limit", s.limit.to_string()),
                ("remaining", s.remaining.to_string()),
                (
                    "reset",
                    format_openai_duration(Duration::from_nanos(s.reset)),
                ),
            ];
            headers.extend(values.map(|(what, v)| (format!("x-ratelimit-{what}-{unit}"), v)));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_openai_headers() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ms"),
            (ms(20), "20ms"),
            (ms(999), "999ms"),
            (ms(1000), "1s"),
            (ms(2500), "2.5s"),
            (ms(1050), "1.05s"),
            (ms(59_999), "59.999s"),
            (ms(360_000), "6m0s"),
            (ms(3_723_000), "1h2m3s"),
            (ms(3_600_000), "1h0m0s"),
            (Duration::from_nanos(1_000_000_001), "1.001s"),
        ];
        for (d, text) in cases {
            assert_eq!(format_openai_duration(d), text, "{d:?}");
        }
    }

    #[test]
    fn tokens_count_every_message_and_text_part_plus_max_tokens() {
        let body = json!({
            "max_completion_tokens": 5,
            "messages": [
                {"role": "system", "content": "abcd"},
                {"role": "user", "content": [{"type": "text", "text": "éé"}, {"type": "image_url"}, {"type": "text", "text": "x"}]},
            ],
        });
        assert_eq!(estimate_request_tokens(&body), 2 + 5, "7 chars -> 2 tokens");
        assert_eq!(estimate_request_tokens(&json!({"max_tokens": 3})), 3);
        assert_eq!(estimate_request_tokens(&json!("not an object")), 0);
    }
}
