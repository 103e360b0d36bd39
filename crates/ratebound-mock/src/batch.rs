//! Anthropic's Message Batches API in compressed time: create, get, results, cancel.
//!
//! Source: <https://docs.anthropic.com/en/api/creating-message-batches> and the pages next
//! to it. A batch holds `requests` (`custom_id` and `params`); it ends `batch_delay` after
//! its creation (Anthropic's take up to 24 h), and while it is `in_progress` its
//! `request_counts` move from `processing` to `succeeded` (or `errored`) in proportion to
//! the time elapsed, in request order. With `batch_fail_every=N`, every Nth request errors
//! (a partial failure). Cancelling ends the batch at once: the requests processed by then
//! keep their results, the others are `canceled`. Results are JSONL, one line per request
//! in request order, served once the batch has ended. Pure: times come in as arguments.

use std::num::NonZeroU64;

use serde_json::{Value, json};

use crate::clock::Nanos;
use crate::profiles::Reply;
use crate::profiles::openai::{completion, estimate_request_tokens};
use crate::provider::MockRequest;

/// The path of the Message Batches API.
const PATH: &str = "/v1/messages/batches";

/// How long a batch may take before it expires: both providers' 24 h window.
const EXPIRY: Nanos = 24 * 3600 * 1_000_000_000;

/// One batch, of either API.
pub(crate) struct Batch {
    /// `msgbatch_mock_<n>` or `batch_mock_<n>`.
    pub(crate) id: String,
    /// The requests' `custom_id` and body (`params`).
    pub(crate) requests: Vec<(String, Value)>,
    /// Clock reading at creation.
    pub(crate) created: Nanos,
    /// Epoch seconds at creation, for `created_at`.
    pub(crate) created_s: u64,
    /// Clock reading of a cancel, if any.
    pub(crate) canceled: Option<Nanos>,
}

/// Every batch created so far, and how batches behave.
pub(crate) struct Batches {
    batches: Vec<Batch>,
    progress: Progress,
    /// The most tokens the batches in progress may hold (their requests' estimates).
    max_tokens: Option<NonZeroU64>,
}

impl Batches {
    /// No batches yet; each will take `delay` and error every `fail_every`th request, and
    /// those in progress may hold at most `max_tokens` enqueued tokens.
    pub(crate) fn new(
        delay: Nanos,
        fail_every: Option<NonZeroU64>,
        max_tokens: Option<NonZeroU64>,
    ) -> Batches {
        Batches {
            batches: Vec::new(),
            progress: Progress { delay, fail_every },
            max_tokens,
        }
    }

    /// How many batches were created.
    pub(crate) fn created(&self) -> u64 {
        self.batches.len() as u64
    }

    /// The answer to `req` if it is a Message Batches request, at `now` (`wall_s`: epoch
    /// seconds); `None` for any other path.
    pub(crate) fn handle(&mut self, req: &MockRequest, now: Nanos, wall_s: u64) -> Option<Reply> {
        let path = req.path.split('?').next().unwrap_or_default();
        let rest = path.strip_prefix(PATH)?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if req.method == "POST" && parts.is_empty() {
            return Some(self.create(&req.body, now, wall_s));
        }
        let progress = self.progress;
        let Some((id, action)) = parts.split_first() else {
            return Some(error(404, "not_found_error", "Not found"));
        };
        let Some(b) = self.batches.iter_mut().find(|b| b.id == *id) else {
            let message = format!("no message batch `{id}`");
            return Some(error(404, "not_found_error", &message));
        };
        Some(match (req.method.as_str(), action) {
            ("GET", []) => Reply::new(200, Vec::new(), b.view(now, &progress)),
            ("GET", ["results"]) => b.results(now, &progress),
            ("POST", ["cancel"]) => {
                if !b.ended(now, progress.delay) {
                    b.canceled = Some(now);
                }
                Reply::new(200, Vec::new(), b.view(now, &progress))
            }
            _ => error(404, "not_found_error", "Not found"),
        })
    }

    fn create(&mut self, body: &[u8], now: Nanos, wall_s: u64) -> Reply {
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let requests = parsed.as_ref().and_then(|b| b["requests"].as_array());
        let Some(requests) = requests.filter(|r| !r.is_empty()) else {
            return error(
                400,
                "invalid_request_error",
                "requests: a non-empty array is required",
            );
        };
        let requests: Vec<(String, Value)> = (requests.iter())
            .map(|r| {
                (
                    r["custom_id"].as_str().unwrap_or_default().to_string(),
                    r["params"].clone(),
                )
            })
            .collect();
        if let Some(max) = self.max_tokens {
            let delay = self.progress.delay;
            let enqueued: u64 = (self.batches.iter())
                .filter(|b| !b.ended(now, delay))
                .map(|b| tokens(&b.requests))
                .sum();
            if enqueued + tokens(&requests) > max.get() {
                let message = format!(
                    "Enqueued token limit reached: the batches in progress hold {enqueued} tokens and this one {}; limit {max}",
                    tokens(&requests)
                );
                return error(429, "rate_limit_error", &message);
            }
        }
        let batch = Batch {
            id: format!("msgbatch_mock_{}", self.batches.len() + 1),
            requests,
            created: now,
            created_s: wall_s,
            canceled: None,
        };
        let view = batch.view(now, &self.progress);
        self.batches.push(batch);
        Reply::new(200, Vec::new(), view)
    }
}

/// How batches progress.
#[derive(Clone, Copy)]
pub(crate) struct Progress {
    /// How long a batch takes to process all its requests.
    pub(crate) delay: Nanos,
    /// Every Nth request errors.
    pub(crate) fail_every: Option<NonZeroU64>,
}

/// What became of one request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not yet processed.
    Processing,
    /// Answered.
    Succeeded,
    /// Failed (`batch_fail_every`).
    Errored,
    /// Not processed before a cancel.
    Canceled,
    /// Not processed before the 24 h expiry.
    Expired,
}

impl Batch {
    /// Whether the batch has ended at `now`: cancelled, processed, or expired.
    pub(crate) fn ended(&self, now: Nanos, delay: Nanos) -> bool {
        self.canceled.is_some() || now.saturating_sub(self.created) >= delay.min(EXPIRY)
    }

    /// Whether it ended by expiring before its requests were processed.
    pub(crate) fn expired(&self, now: Nanos, delay: Nanos) -> bool {
        self.canceled.is_none() && delay > EXPIRY && self.ended(now, delay)
    }

    /// Requests processed by `now`: in proportion to the time elapsed, up to a cancel.
    fn processed(&self, now: Nanos, delay: Nanos) -> usize {
        let until = self.canceled.map_or(now, |c| c.min(now));
        let elapsed = u128::from(until.saturating_sub(self.created).min(delay.min(EXPIRY)));
        let n = self.requests.len() as u128;
        (n * elapsed)
            .checked_div(u128::from(delay))
            .map_or(self.requests.len(), |p| p as usize)
    }

    /// What became of request `i` by `now`.
    pub(crate) fn outcome(&self, i: usize, now: Nanos, progress: &Progress) -> Outcome {
        let fails = (progress.fail_every).is_some_and(|n| (i as u64 + 1) % n.get() == 0);
        match (i < self.processed(now, progress.delay), fails) {
            (true, true) => Outcome::Errored,
            (true, false) => Outcome::Succeeded,
            (false, _) if self.canceled.is_some() => Outcome::Canceled,
            (false, _) if self.expired(now, progress.delay) => Outcome::Expired,
            (false, _) => Outcome::Processing,
        }
    }

    /// The batch object.
    fn view(&self, now: Nanos, progress: &Progress) -> Value {
        let outcomes: Vec<Outcome> = (0..self.requests.len())
            .map(|i| self.outcome(i, now, progress))
            .collect();
        let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
        let ended = self.ended(now, progress.delay);
        json!({
            "id": self.id,
            "type": "message_batch",
            "processing_status": if ended { "ended" } else { "in_progress" },
            "request_counts": {
                "processing": count(Outcome::Processing),
                "succeeded": count(Outcome::Succeeded),
                "errored": count(Outcome::Errored),
                "canceled": count(Outcome::Canceled),
                "expired": count(Outcome::Expired),
            },
            "created_at": self.created_s,
            "results_url": ended.then(|| format!("{PATH}/{}/results", self.id)),
        })
    }

    /// The results as JSONL, once the batch has ended.
    fn results(&self, now: Nanos, progress: &Progress) -> Reply {
        if !self.ended(now, progress.delay) {
            return error(
                404,
                "not_found_error",
                "results are not ready: the batch is in progress",
            );
        }
        let lines: Vec<String> = (self.requests.iter().enumerate())
            .map(|(i, (custom_id, params))| {
                let result = match self.outcome(i, now, progress) {
                    Outcome::Succeeded => json!({"type": "succeeded", "message": completion(params, i as u64 + 1, 0)}),
                    Outcome::Errored => json!({"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error", "message": "mock: this request fails (batch_fail_every)"}}}),
                    Outcome::Expired => json!({"type": "expired"}),
                    _ => json!({"type": "canceled"}),
                };
                json!({"custom_id": custom_id, "result": result}).to_string()
            })
            .collect();
        Reply {
            text: Some(lines.join("\n") + "\n"),
            ..Reply::new(200, Vec::new(), Value::Null)
        }
    }
}

/// Tokens the requests of a batch would count: what a limit on enqueued tokens charges.
pub(crate) fn tokens(requests: &[(String, Value)]) -> u64 {
    requests
        .iter()
        .map(|(_, p)| estimate_request_tokens(p))
        .sum()
}

/// Anthropic's error object.
fn error(status: u16, kind: &str, message: &str) -> Reply {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    Reply::new(status, Vec::new(), body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::provider::MockRequest;
    use crate::provider::tests::{json, provider, send};

    fn create(n: usize, content: &str) -> MockRequest {
        let requests: Vec<Value> = (0..n)
            .map(|i| {
                json!({"custom_id": format!("r{i}"), "params": {"model": "claude-test", "max_tokens": 10,
                    "messages": [{"role": "user", "content": content}]}})
            })
            .collect();
        send(
            "POST",
            "/v1/messages/batches",
            json!({ "requests": requests }),
        )
    }

    #[test]
    fn a_batch_progresses_with_time_and_ends_after_its_delay_with_partial_failures() {
        let (p, clock) = provider("mock://anthropic?batch_delay=10s&batch_fail_every=4");
        let created = json(&p.handle(&create(8, "hi")));
        assert_eq!(created["id"], "msgbatch_mock_1");
        assert_eq!(created["processing_status"], "in_progress");
        assert_eq!(created["request_counts"]["processing"], 8);
        assert_eq!(created["results_url"], Value::Null);
        let get = send("GET", "/v1/messages/batches/msgbatch_mock_1", Value::Null);
        clock.advance(Duration::from_secs(5));
        let half = json(&p.handle(&get));
        let counts = &half["request_counts"];
        assert_eq!(
            (counts["processing"].as_u64(), counts["succeeded"].as_u64()),
            (Some(4), Some(3))
        );
        assert_eq!(counts["errored"], 1, "the 4th request fails");
        let results = send(
            "GET",
            "/v1/messages/batches/msgbatch_mock_1/results",
            Value::Null,
        );
        assert_eq!(p.handle(&results).status, 404, "not before the end");
        clock.advance(Duration::from_secs(5));
        let ended = json(&p.handle(&get));
        assert_eq!(ended["processing_status"], "ended");
        assert_eq!(ended["request_counts"]["succeeded"], 6);
        assert_eq!(ended["request_counts"]["errored"], 2);
        let r = p.handle(&results);
        assert_eq!(r.header("content-type"), Some("application/x-jsonl"));
        let lines: Vec<Value> = (String::from_utf8(r.body).unwrap().lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines
            .iter()
            .map(|l| l["result"]["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "succeeded",
                "succeeded",
                "succeeded",
                "errored",
                "succeeded",
                "succeeded",
                "succeeded",
                "errored"
            ]
        );
        assert_eq!(lines[0]["custom_id"], "r0");
        assert_eq!(lines[0]["result"]["message"]["usage"]["total_tokens"], 11);
        assert_eq!(p.batches_created(), 1);
    }

    #[test]
    fn cancelling_ends_a_batch_and_cancels_what_was_not_processed() {
        let (p, clock) = provider("mock://anthropic?batch_delay=4s");
        p.handle(&create(4, "hi"));
        clock.advance(Duration::from_secs(1));
        let cancel = send(
            "POST",
            "/v1/messages/batches/msgbatch_mock_1/cancel",
            Value::Null,
        );
        let canceled = json(&p.handle(&cancel));
        assert_eq!(canceled["processing_status"], "ended");
        let counts = &canceled["request_counts"];
        assert_eq!(
            (counts["succeeded"].as_u64(), counts["canceled"].as_u64()),
            (Some(1), Some(3))
        );
        clock.advance(Duration::from_secs(10));
        let later = json(&p.handle(&send(
            "GET",
            "/v1/messages/batches/msgbatch_mock_1",
            Value::Null,
        )));
        assert_eq!(
            later["request_counts"], *counts,
            "nothing moves after a cancel"
        );
        let missing = p.handle(&send(
            "GET",
            "/v1/messages/batches/msgbatch_nope",
            Value::Null,
        ));
        assert_eq!(missing.status, 404);
    }

    #[test]
    fn batches_over_the_enqueued_token_limit_are_refused_until_others_end() {
        // Each request: 1 token of prompt + 10 of max_tokens; 4 requests = 44 tokens.
        let (p, clock) = provider("mock://anthropic?batch_delay=1s&batch_tokens=100");
        assert_eq!(p.handle(&create(4, "hi")).status, 200);
        assert_eq!(p.handle(&create(4, "hi")).status, 200, "88 of 100");
        let refused = p.handle(&create(4, "hi"));
        assert_eq!(refused.status, 429);
        assert_eq!(json(&refused)["error"]["type"], "rate_limit_error");
        assert!(
            json(&refused)["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Enqueued token limit")
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            p.handle(&create(4, "hi")).status,
            200,
            "the first two ended"
        );
        assert_eq!(p.batches_created(), 3);
        let bad = p.handle(&send(
            "POST",
            "/v1/messages/batches",
            json!({"requests": []}),
        ));
        assert_eq!(bad.status, 400);
    }

    #[test]
    fn only_the_chat_profiles_serve_batches() {
        let (p, _) = provider("mock://openai");
        assert_eq!(
            p.handle(&create(1, "hi")).status,
            404,
            "OpenAI's own API only"
        );
        assert_eq!(p.batches_created(), 0);
        assert!(crate::MockSpec::parse_url("mock://generic?batch_delay=1s").is_err());
    }

    #[test]
    fn a_batch_slower_than_24_hours_expires_with_what_was_processed() {
        let (p, clock) = provider("mock://anthropic?batch_delay=48h");
        p.handle(&create(4, "hi"));
        clock.advance(Duration::from_secs(24 * 3600));
        let get = send("GET", "/v1/messages/batches/msgbatch_mock_1", Value::Null);
        let expired = json(&p.handle(&get));
        assert_eq!(expired["processing_status"], "ended");
        let counts = &expired["request_counts"];
        assert_eq!(
            (counts["succeeded"].as_u64(), counts["expired"].as_u64()),
            (Some(2), Some(2))
        );
    }
}
