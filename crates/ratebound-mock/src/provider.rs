//! The mock's behaviour as a pure type: a request in, a response and a simulated latency
//! out, decided on a [`Clock`].
//!
//! Owns what every profile shares: the injected [`faults`](crate::fault), the quota, the
//! record of every request and the counts, and the headers policy (`headers=false`,
//! `retry_after`). Admission against the limits lives in `limits.rs`, the
//! answer and its wording in the profile's dialect (`profiles/`), Anthropic's message
//! batches in `batch.rs`. No tokio, no sockets: [`server`](crate::server) and
//! ratebound's in-memory transport both wait [`MockResponse::delay`] (the latency, plus a
//! leaky bucket's queueing) and drop the connection on [`MockResponse::drop_connection`]
//! themselves.
//!
//! Faults come first: each request draws one number from the seeded RNG; a request without
//! the `auth` token answers `invalid_api_key` (401), an exhausted
//! quota answers `insufficient_quota`, a failed or dropped request spends nothing, and a
//! slow one is answered by its profile as usual, only later.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::MockSpec;
use crate::batch::Batches;
use crate::clock::{Clock, Nanos, epoch_ns, nanos};
use crate::fault::Fault;
use crate::limits::Limits;
use crate::openai_batch::OpenAiBatches;
use crate::profiles::openai;
use crate::profiles::{Arrival, BatchApi, Reply, retry_after};

pub use crate::profiles::openai::{estimate_request_tokens, format_openai_duration};

/// A request as the mock receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MockRequest {
    /// HTTP method, upper case.
    pub method: String,
    /// Path, possibly with a query string.
    pub path: String,
    /// Headers as sent.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// What the mock answers, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockResponse {
    /// HTTP status code; 0 when the connection is dropped instead.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The JSON body; empty when the connection is dropped.
    pub body: Vec<u8>,
    /// The simulated latency: the caller waits this long before delivering the response.
    pub delay: Duration,
    /// Instead of delivering a response, cut the connection after the delay: the client
    /// must see a connection error, not a status (the `reset_rate` fault).
    pub drop_connection: bool,
}

impl MockRequest {
    /// A `GET` of `path` with no headers and no body, as tests send.
    pub fn get(path: &str) -> MockRequest {
        MockRequest {
            method: "GET".into(),
            path: path.into(),
            ..MockRequest::default()
        }
    }

    /// A chat completion of model `gpt-test` whose one message is `prompt`, asking for at
    /// most `max_tokens`, with header `x-item: i1`, as tests send.
    pub fn chat(prompt: &str, max_tokens: u64) -> MockRequest {
        let body = serde_json::json!({
            "model": "gpt-test",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}],
        });
        MockRequest {
            method: "POST".into(),
            path: openai::CHAT_PATH.into(),
            headers: vec![("x-item".into(), "i1".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

impl MockResponse {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        (self.headers.iter())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request the mock received, kept for tests to inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Arrival, in the provider clock's nanoseconds.
    pub at: Nanos,
    /// Arrival, in the provider clock's wall time: which UTC-aligned window it counted in.
    pub wall: SystemTime,
    /// HTTP method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Headers as sent (a mock keeps them all; it is never pointed at real credentials).
    pub headers: Vec<(String, String)>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// The status the mock answered; 0 when it dropped the connection.
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

/// Counts of the requests received so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MockStats {
    /// Every request, whatever its answer.
    pub requests: u64,
    /// Answered 200 (slow ones included).
    pub ok: u64,
    /// Answered 429 by a rate limit (slow ones included; not the quota's 429s).
    pub rate_limited: u64,
    /// Answered 429 `insufficient_quota`: the quota's requests were all admitted.
    pub quota_exceeded: u64,
    /// Answered 401 `invalid_api_key`: without the bearer token of `auth`.
    pub unauthorized: u64,
    /// Answered 500 by the `fail_rate` fault.
    pub failed: u64,
    /// Connections dropped by the `reset_rate` fault.
    pub dropped: u64,
    /// Delayed by the `slow_rate` fault (and also counted as `ok` or `rate_limited`).
    pub slow: u64,
}

struct State {
    /// The limits, as the profile built them.
    limits: Limits,
    /// Anthropic's message batches, for the profile that serves them.
    batches: Batches,
    /// OpenAI's files and batches, for the profile that serves them.
    openai_batches: OpenAiBatches,
    /// Picks the faulty requests; seeded, so runs repeat.
    rng: StdRng,
    /// The quota in force: the spec's, or what [`Provider::set_quota_requests`] set.
    quota_requests: Option<u64>,
    records: Vec<Record>,
    stats: MockStats,
}

/// The mock API: answers requests as the spec's profile would, enforcing its limits on
/// `clock` and injecting the spec's faults. Shared by reference; state sits behind a mutex.
pub struct Provider<C: Clock> {
    spec: MockSpec,
    clock: C,
    state: Mutex<State>,
}

impl<C: Clock> Provider<C> {
    /// A provider whose buckets start full at `clock.now()`, whose window starts empty, and
    /// whose fault RNG starts from the spec's seed.
    ///
    /// A limit the profile does not take (see [`MockSpec::check`]) is ignored.
    pub fn new(spec: MockSpec, clock: C) -> Provider<C> {
        let limits = spec.profile.dialect().limits(&spec, clock.now());
        let state = State {
            limits,
            batches: Batches::new(
                nanos(spec.batch_delay),
                spec.batch_fail_every,
                spec.batch_tokens,
            ),
            openai_batches: OpenAiBatches::new(
                nanos(spec.batch_delay),
                spec.batch_fail_every,
                spec.batch_tokens,
            ),
            rng: StdRng::seed_from_u64(spec.faults.seed),
            quota_requests: spec.faults.quota_requests,
            records: Vec::new(),
            stats: MockStats::default(),
        };
        Provider {
            spec,
            clock,
            state: Mutex::new(state),
        }
    }

    /// Answers `req` at the clock's current time and records it.
    pub fn handle(&self, req: &MockRequest) -> MockResponse {
        let now = self.clock.now();
        let wall = self.clock.wall();
        let faults = &self.spec.faults;
        let mut state = self.lock();
        // One draw per request whatever the rates, so that a seed fixes the whole sequence.
        let draw: f64 = state.rng.random();
        let exhausted = (state.quota_requests).is_some_and(|quota| state.stats.ok >= quota);
        let fault = if !faults.authorized(&req.headers) {
            Some(Fault::Auth)
        } else if exhausted {
            Some(Fault::Quota)
        } else {
            faults.pick(draw)
        };
        let at = Arrival {
            spec: &self.spec,
            now,
            wall_ns: epoch_ns(wall),
            served: state.stats.ok,
        };
        let reply = self.answer(&mut state, fault, req, at);
        let status = reply.status;
        count(&mut state.stats, status, fault);
        state.records.push(Record {
            at: now,
            wall,
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            status,
            fault,
        });
        let dropped = fault == Some(Fault::Reset);
        let delay = match fault {
            Some(Fault::Slow) => faults.slow,
            _ => self.spec.latency,
        };
        MockResponse {
            status,
            body: match dropped {
                true => Vec::new(),
                false => match &reply.text {
                    Some(text) => text.clone().into_bytes(),
                    None => reply.body.to_string().into_bytes(),
                },
            },
            headers: self.headers(reply.headers, reply.retry, dropped, reply.text.is_some()),
            delay: delay + Duration::from_nanos(reply.queued),
            drop_connection: dropped,
        }
    }

    /// The answer to `req` given its fault: the fault's, or the profile's.
    fn answer(
        &self,
        state: &mut State,
        fault: Option<Fault>,
        req: &MockRequest,
        at: Arrival<'_>,
    ) -> Reply {
        match fault {
            Some(Fault::Auth) => Reply::new(401, Vec::new(), invalid_api_key()),
            Some(Fault::Quota) => Reply::new(429, Vec::new(), openai::insufficient_quota()),
            Some(Fault::Fail) => Reply::new(500, Vec::new(), openai::server_error()),
            Some(Fault::Reset) => Reply::new(0, Vec::new(), Value::Null),
            None | Some(Fault::Slow) => {
                let dialect = self.spec.profile.dialect();
                let wall_s = at.wall_ns / 1_000_000_000;
                let batch = match dialect.batch_api() {
                    Some(BatchApi::Anthropic) => state.batches.handle(req, at.now, wall_s),
                    Some(BatchApi::OpenAi) => state.openai_batches.handle(req, at.now, wall_s),
                    None => None,
                };
                batch.unwrap_or_else(|| dialect.reply(&mut state.limits, req, at))
            }
        }
    }

    /// The headers sent: the profile's rate-limit headers and its words for a refusal
    /// retriable in `retry`, unless `headers=false` (then a bare `retry-after` only with
    /// `retry_after=true`), and the content type, unless the connection is dropped.
    fn headers(
        &self,
        mut headers: Vec<(String, String)>,
        retry: Option<Nanos>,
        dropped: bool,
        jsonl: bool,
    ) -> Vec<(String, String)> {
        let faults = &self.spec.faults;
        if !faults.headers {
            // Some providers send bare 429s: without rate-limit headers.
            headers.clear();
        }
        if let Some(wait) = retry {
            if faults.headers {
                headers.extend(self.spec.profile.dialect().retry_headers(wait));
            }
            if faults.retry_after && !headers.iter().any(|(n, _)| n == "retry-after") {
                headers.push(retry_after(wait));
            }
        }
        if !dropped {
            let kind = if jsonl {
                "application/x-jsonl"
            } else {
                "application/json"
            };
            headers.push(("content-type".into(), kind.into()));
        }
        headers
    }

    /// How many message batches were created.
    pub fn batches_created(&self) -> u64 {
        let state = self.lock();
        state.batches.created() + state.openai_batches.created()
    }

    /// Every request received so far, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Counts of the requests received so far.
    pub fn stats(&self) -> MockStats {
        self.lock().stats
    }

    /// Sets the quota while serving: once `quota` requests in total were answered 200
    /// (counting those before this call), every request gets the `insufficient_quota` 429.
    /// `None` lifts the quota, so a test can restore it and rerun.
    pub fn set_quota_requests(&self, quota: Option<u64>) {
        self.lock().quota_requests = quota;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-updated in a way that matters to a
        // mock: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// OpenAI's 401 for a missing or wrong API key, which every profile answers under `auth`.
fn invalid_api_key() -> Value {
    let message = "Incorrect API key provided.";
    openai::error(message, "invalid_request_error", Some("invalid_api_key"))
}

/// Counts one answered request.
fn count(stats: &mut MockStats, status: u16, fault: Option<Fault>) {
    stats.requests += 1;
    match fault {
        Some(Fault::Auth) => stats.unauthorized += 1,
        Some(Fault::Quota) => stats.quota_exceeded += 1,
        Some(Fault::Fail) => stats.failed += 1,
        Some(Fault::Reset) => stats.dropped += 1,
        Some(Fault::Slow) | None => {
            stats.slow += u64::from(fault.is_some());
            match status {
                200 => stats.ok += 1,
                429 | 503 => stats.rate_limited += 1,
                _ => {}
            }
        }
    }
}

/// Helpers shared with the dialects' tests, which check that the client reads what each
/// profile sends.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Profile;
    use crate::clock::ManualClock;
    use std::time::UNIX_EPOCH;

    /// The request `profile` serves: a chat completion, or a `GET /`.
    fn request_for(profile: Profile) -> MockRequest {
        match profile.keys().contains(&"tpm") {
            true => chat("", 1),
            false => get("/"),
        }
    }

    /// A provider of `url` on a [`ManualClock`] at 2026-01-01T00:00:00Z, and the clock.
    pub(crate) fn provider(url: &str) -> (Provider<ManualClock>, ManualClock) {
        let clock = ManualClock::at_2026();
        let spec = MockSpec::parse_url(url).unwrap();
        (Provider::new(spec, clock.clone()), clock)
    }

    /// A `GET` of `path` with no body.
    pub(crate) fn get(path: &str) -> MockRequest {
        MockRequest::get(path)
    }

    /// A chat completion of `prompt` asking for at most `max_tokens`.
    pub(crate) fn chat(prompt: &str, max_tokens: u64) -> MockRequest {
        MockRequest::chat(prompt, max_tokens)
    }

    /// The value of header `name`; panics, listing the headers, if there is none.
    pub(crate) fn header<'a>(r: &'a MockResponse, name: &str) -> &'a str {
        r.header(name)
            .unwrap_or_else(|| panic!("no `{name}` in {:?}", r.headers))
    }

    /// The JSON body of `r`.
    pub(crate) fn json(r: &MockResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    /// A `method` request of `path` with `body` as JSON.
    pub(crate) fn send(method: &str, path: &str, body: Value) -> MockRequest {
        MockRequest {
            method: method.into(),
            path: path.into(),
            body: body.to_string().into_bytes(),
            ..MockRequest::default()
        }
    }

    #[test]
    fn rpm_bucket_starts_full_then_refills_one_request_per_second() {
        let (p, clock) = provider("mock://openai?rpm=60");
        for i in 0..60 {
            assert_eq!(p.handle(&chat("hi", 1)).status, 200, "request {i} at t=0");
        }
        let refused = p.handle(&chat("hi", 1));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after-ms"), "1000");
        assert_eq!(header(&refused, "retry-after"), "1");
        assert_eq!(json(&refused)["error"]["type"], "requests");
        assert_eq!(json(&refused)["error"]["code"], "rate_limit_exceeded");

        clock.advance(Duration::from_millis(999));
        assert_eq!(p.handle(&chat("hi", 1)).status, 429, "not before 1 s");
        clock.advance(Duration::from_millis(1));
        assert_eq!(p.handle(&chat("hi", 1)).status, 200, "at exactly 1 s");
        assert_eq!(p.handle(&chat("hi", 1)).status, 429, "and only one");
    }

    #[test]
    fn rejected_requests_are_recorded_and_consume_nothing() {
        let (p, _) = provider("mock://openai?rps=2&tpm=600");
        // 500 estimated, 16 used: 584 left.
        let first = p.handle(&chat("", 500));
        assert_eq!(first.status, 200);
        assert_eq!(header(&first, "x-ratelimit-remaining-tokens"), "584");
        // 590 tokens wanted, 584 left: refused on tokens, and neither bucket pays.
        let refused = p.handle(&chat("", 590));
        assert_eq!(refused.status, 429);
        assert_eq!(json(&refused)["error"]["type"], "tokens");
        assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "1");
        assert_eq!(header(&refused, "x-ratelimit-remaining-tokens"), "584");
        assert_eq!(
            p.handle(&chat("", 584)).status,
            200,
            "the refusal took nothing"
        );
        let stats = p.stats();
        assert_eq!((stats.requests, stats.ok, stats.rate_limited), (3, 2, 1));
        let statuses: Vec<u16> = p.records().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 429, 200]);
        assert_eq!(
            p.records()[1].headers,
            [("x-item".to_string(), "i1".to_string())]
        );
    }

    #[test]
    fn admitted_requests_are_charged_their_actual_usage() {
        let (p, _) = provider("mock://openai?tpm=1000");
        // 40 chars -> 10 prompt tokens: 10 + 590 = 600 estimated, 10 + 16 = 26 used.
        let r = p.handle(&chat(&"x".repeat(40), 590));
        assert_eq!(r.status, 200);
        let used = json(&r)["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(used, 26);
        let remaining = header(&r, "x-ratelimit-remaining-tokens");
        assert_eq!(remaining, (1000 - used).to_string(), "not 1000 - 600");
        assert_eq!(header(&r, "x-ratelimit-reset-tokens"), "1.56s", "26 tokens");

        // 975 estimated, 974 left: refused, though its usage (16) would fit.
        let refused = p.handle(&chat("", 975));
        assert_eq!(refused.status, 429);
        assert_eq!(json(&refused)["error"]["type"], "tokens");
        assert_eq!(header(&refused, "x-ratelimit-remaining-tokens"), "974");
        let message = json(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains("Limit 1000, Used 26, Requested 975"),
            "{message}"
        );

        // 974 estimated fits exactly; then 16 used of it.
        let r = p.handle(&chat("", 974));
        assert_eq!(r.status, 200);
        assert_eq!(json(&r)["usage"]["total_tokens"], 16);
        assert_eq!(header(&r, "x-ratelimit-remaining-tokens"), "958");
    }

    #[test]
    fn a_token_refusal_waits_for_the_token_refill() {
        let (p, clock) = provider("mock://openai?tpm=600&rpm=1000");
        // 40 chars -> 10 prompt tokens + 290 = 300 estimated, 10 + 16 = 26 used;
        // 600 per minute = 10 per s.
        let prompt = "x".repeat(40);
        assert_eq!(p.handle(&chat(&prompt, 290)).status, 200);
        clock.advance(Duration::from_secs(1));
        // 574 + 10 refilled = 584 left; 10 + 590 = 600 wanted: 16 short = 1.6 s.
        let refused = p.handle(&chat(&prompt, 590));
        assert_eq!(
            refused.status,
            429,
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(json(&refused)["error"]["type"], "tokens");
        assert_eq!(header(&refused, "retry-after-ms"), "1600");
        assert_eq!(header(&refused, "retry-after"), "2");
        let message = json(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.starts_with("Rate limit reached for gpt-test"),
            "{message}"
        );
        assert!(
            message.contains("Limit 600, Used 16, Requested 600"),
            "{message}"
        );
        clock.advance(Duration::from_millis(1599));
        assert_eq!(
            p.handle(&chat(&prompt, 590)).status,
            429,
            "not before 1.6 s"
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            p.handle(&chat(&prompt, 590)).status,
            200,
            "at exactly 1.6 s"
        );
    }

    #[test]
    fn the_wait_is_the_longest_of_every_short_bucket() {
        let (p, clock) = provider("mock://openai?rps=1&tpm=60");
        assert_eq!(p.handle(&chat("", 30)).status, 200);
        clock.advance(Duration::from_millis(500));
        // 30 estimated, 16 used. Requests short for 0.5 s, tokens (44 + 0.5 = 44.5 left,
        // 60 wanted) for 15.5 s.
        let refused = p.handle(&chat("", 60));
        assert_eq!(
            json(&refused)["error"]["type"],
            "requests",
            "requests are checked first"
        );
        assert_eq!(header(&refused, "retry-after-ms"), "15500");
        assert_eq!(header(&refused, "retry-after"), "16");
    }

    #[test]
    fn a_request_larger_than_the_token_limit_is_refused_without_a_retry_time() {
        let (p, _) = provider("mock://openai?rpm=1&tpm=100");
        assert_eq!(p.handle(&chat("", 1)).status, 200);
        let refused = p.handle(&chat("", 101));
        assert_eq!(refused.status, 429);
        assert_eq!(
            json(&refused)["error"]["type"],
            "tokens",
            "not the empty rpm bucket"
        );
        let message = json(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.starts_with("Request too large"), "{message}");
        assert!(
            !refused
                .headers
                .iter()
                .any(|(n, _)| n.starts_with("retry-after"))
        );
    }

    #[test]
    fn rate_limit_headers_show_limit_remaining_and_time_to_full() {
        let (p, clock) = provider("mock://openai?rpm=600&tpm=100000&latency=50ms");
        // 2 + 998 = 1000 estimated, 2 + 16 = 18 used; 100000 per minute = 1666.7 per s.
        let r = p.handle(&chat("abcdefgh", 998));
        clock.advance(Duration::from_millis(10));
        assert_eq!(r.delay, Duration::from_millis(50));
        let expect = [
            ("x-ratelimit-limit-requests", "600"),
            ("x-ratelimit-remaining-requests", "599"),
            ("x-ratelimit-reset-requests", "100ms"),
            ("x-ratelimit-limit-tokens", "100000"),
            ("x-ratelimit-remaining-tokens", "99982"),
            ("x-ratelimit-reset-tokens", "11ms"), // 10.8 ms, rounded up
            ("content-type", "application/json"),
        ];
        for (name, value) in expect {
            assert_eq!(header(&r, name), value, "{name}");
        }
        let r = p.handle(&chat("", 8));
        assert_eq!(
            header(&r, "x-ratelimit-reset-requests"),
            "190ms",
            "1.9 requests short at 10 ms"
        );
        assert_eq!(
            header(&r, "x-ratelimit-remaining-tokens"),
            "99990",
            "18 spent, 16.7 refilled, 8 more spent"
        );

        // OpenAI has one request limit: with rpm and rps both set, rpm speaks for requests.
        let (p, _) = provider("mock://openai?rps=5&rpm=100");
        let r = p.handle(&chat("", 0));
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "100");
        assert!(
            !r.headers.iter().any(|(n, _)| n.ends_with("-tokens")),
            "no tpm, no token headers"
        );
    }

    #[test]
    fn a_completion_echoes_the_prompt_and_reports_usage_by_the_formula() {
        let (p, clock) = provider("mock://openai");
        clock.advance(Duration::from_secs(5));
        let prompt = "Write a short biography of Ella Fitzgerald, the First Lady of Song.";
        let r = p.handle(&chat(prompt, 200));
        assert_eq!(r.status, 200);
        let body = json(&r);
        assert_eq!(body["id"], "chatcmpl-mock-1");
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["created"], 1_767_225_605);
        assert_eq!(body["model"], "gpt-test");
        let reply = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(
            reply,
            "mock reply to: Write a short biography of Ella Fitzgera"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        // 67 chars -> 17 prompt tokens; 200 max_tokens caps nothing below 16.
        let usage = &body["usage"];
        assert_eq!(
            (
                usage["prompt_tokens"].as_u64(),
                usage["completion_tokens"].as_u64()
            ),
            (Some(17), Some(16))
        );
        assert_eq!(usage["total_tokens"], 33);
        let small = json(&p.handle(&chat("", 3)));
        assert_eq!(
            small["usage"]["completion_tokens"], 3,
            "max_tokens below 16 caps it"
        );
        assert_eq!(small["id"], "chatcmpl-mock-2");
    }

    #[test]
    fn unknown_paths_and_bad_json_get_openai_errors_and_spend_nothing() {
        let (p, _) = provider("mock://openai?rpm=1");
        let mut req = chat("", 0);
        req.path = "/v1/completions".into();
        let r = p.handle(&req);
        assert_eq!(r.status, 404);
        assert_eq!(json(&r)["error"]["type"], "invalid_request_error");
        assert_eq!(
            json(&r)["error"]["message"],
            "Invalid URL (POST /v1/completions)"
        );

        let mut req = chat("", 0);
        req.body = b"{not json".to_vec();
        let r = p.handle(&req);
        assert_eq!(r.status, 400);
        assert_eq!(json(&r)["error"]["param"], Value::Null);

        let mut req = chat("", 0);
        req.path = "/v1/chat/completions?trace=1".into();
        assert_eq!(
            p.handle(&req).status,
            200,
            "the query string is not part of the route"
        );
        assert_eq!(p.stats().requests, 3);
        assert_eq!(p.records()[2].path, "/v1/chat/completions?trace=1");
    }

    /// 2026-01-01T00:00:00Z, where [`ManualClock::at_2026`] starts, in epoch seconds.
    const MIDNIGHT_S: u64 = 1_767_225_600;

    fn campaign(kind: &str, calls: u64) -> MockRequest {
        let body = serde_json::json!({"campaign": "Campaign 1", "tweet_id": "186", "calls": calls});
        MockRequest {
            method: "POST".into(),
            path: format!("/2/campaigns/{kind}"),
            headers: vec![("x-item".into(), "c1".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn quest() -> MockRequest {
        campaign("quest", 2)
    }

    fn reward() -> MockRequest {
        campaign("reward", 4)
    }

    #[test]
    fn x_window_refuses_a_reward_with_two_calls_left_but_admits_a_quest() {
        let (p, _) = provider("mock://x?window=180/15s");
        for i in 0..89 {
            let r = p.handle(&quest());
            assert_eq!(r.status, 200, "quest {i}");
            assert_eq!(
                header(&r, "x-rate-limit-remaining"),
                (178 - 2 * i).to_string()
            );
        }
        let refused = p.handle(&reward());
        assert_eq!(refused.status, 429, "4 calls wanted, 2 left");
        assert_eq!(
            header(&refused, "x-rate-limit-remaining"),
            "2",
            "nothing spent"
        );
        let r = p.handle(&quest());
        assert_eq!(r.status, 200, "the 90th quest fits the last 2 calls");
        assert_eq!(header(&r, "x-rate-limit-remaining"), "0");
        assert_eq!(p.handle(&quest()).status, 429, "the window is spent");
        let stats = p.stats();
        assert_eq!((stats.requests, stats.ok, stats.rate_limited), (92, 90, 2));
    }

    #[test]
    fn x_window_resets_exactly_at_the_utc_boundary() {
        let (p, clock) = provider("mock://x?window=180/15s");
        for _ in 0..45 {
            assert_eq!(p.handle(&reward()).status, 200);
        }
        clock.advance(Duration::from_secs(15) - Duration::from_nanos(1));
        let refused = p.handle(&quest());
        assert_eq!(refused.status, 429, "1 ns before 00:00:15");
        assert_eq!(
            header(&refused, "x-rate-limit-reset"),
            (MIDNIGHT_S + 15).to_string()
        );
        clock.advance(Duration::from_nanos(1));
        let r = p.handle(&quest());
        assert_eq!(r.status, 200, "at 00:00:15 exactly");
        assert_eq!(header(&r, "x-rate-limit-remaining"), "178");
        assert_eq!(
            header(&r, "x-rate-limit-reset"),
            (MIDNIGHT_S + 30).to_string()
        );
    }

    #[test]
    fn x_windows_align_to_utc_not_to_the_first_request() {
        let (p, clock) = provider("mock://x?window=4/15s");
        clock.advance(Duration::from_secs(14));
        assert_eq!(p.handle(&reward()).status, 200, "at 00:00:14");
        clock.advance(Duration::from_secs(1));
        let r = p.handle(&reward());
        assert_eq!(r.status, 200, "00:00:15 opens a new window, 1 s later");
        assert_eq!(
            header(&r, "x-rate-limit-reset"),
            (MIDNIGHT_S + 30).to_string()
        );
    }

    #[test]
    fn x_answers_with_its_headers_and_bodies() {
        let (p, clock) = provider("mock://x?window=180/15s&latency=20ms");
        clock.advance(Duration::from_secs(3));
        let mut req = quest();
        req.path = "/2/campaigns/quest?dry_run=1".into();
        let r = p.handle(&req);
        assert_eq!(r.status, 200);
        assert_eq!(r.delay, Duration::from_millis(20));
        let expect = [
            ("x-rate-limit-limit", "180"),
            ("x-rate-limit-remaining", "178"),
            ("x-rate-limit-reset", "1767225615"),
            ("content-type", "application/json"),
        ];
        for (name, value) in expect {
            assert_eq!(header(&r, name), value, "{name}");
        }
        assert_eq!(
            json(&r),
            serde_json::json!({"data": {"id": "1", "path": "/2/campaigns/quest"}})
        );
        assert_eq!(json(&p.handle(&reward()))["data"]["id"], "2");

        let refused = p.handle(&campaign("bundle", 181));
        assert_eq!(refused.status, 429, "more calls than the window holds");
        assert_eq!(
            json(&refused),
            serde_json::json!({
                "title": "Too Many Requests",
                "detail": "Too Many Requests",
                "type": "about:blank",
                "status": 429,
            })
        );
        let expect = [
            ("x-rate-limit-limit", "180"),
            ("x-rate-limit-remaining", "174"),
            ("x-rate-limit-reset", "1767225615"),
        ];
        for (name, value) in expect {
            assert_eq!(header(&refused, name), value, "{name} on a 429");
        }
        assert!(
            !refused
                .headers
                .iter()
                .any(|(n, _)| n.starts_with("retry-after")),
            "X sends no retry-after"
        );
    }

    #[test]
    fn x_takes_any_method_path_and_body_and_without_a_window_is_unlimited() {
        let (p, _) = provider("mock://x");
        let requests = [
            ("GET", "/2/users/me", &b""[..]),
            ("DELETE", "/2/tweets/1", b"not json"),
            ("POST", "/2/tweets", br#"{"text": "hi"}"#),
        ];
        for (method, path, body) in requests {
            let r = p.handle(&MockRequest {
                method: method.into(),
                path: path.into(),
                headers: Vec::new(),
                body: body.to_vec(),
            });
            assert_eq!(r.status, 200, "{method} {path}");
            assert_eq!(json(&r)["data"]["path"], path);
            assert!(
                !r.headers.iter().any(|(n, _)| n.starts_with("x-rate-limit")),
                "no window, no rate-limit headers"
            );
        }
        // Without `calls`, a request is one call.
        let (p, _) = provider("mock://x?window=2/1m");
        let get = MockRequest {
            method: "GET".into(),
            path: "/2/users/me".into(),
            ..MockRequest::default()
        };
        assert_eq!(header(&p.handle(&get), "x-rate-limit-remaining"), "1");
        assert_eq!(header(&p.handle(&get), "x-rate-limit-remaining"), "0");
        assert_eq!(p.handle(&get).status, 429);
    }

    #[test]
    fn records_carry_the_wall_time_of_arrival() {
        let (p, clock) = provider("mock://x?window=180/15s");
        p.handle(&quest());
        clock.advance(Duration::from_millis(15_250));
        p.handle(&reward());
        let midnight = UNIX_EPOCH + Duration::from_secs(MIDNIGHT_S);
        let records = p.records();
        assert_eq!(records[0].wall, midnight);
        assert_eq!(records[1].wall, midnight + Duration::from_millis(15_250));
        assert_eq!(records[1].at, 15_250_000_000);
        assert_eq!(records[1].path, "/2/campaigns/reward");
        assert_eq!(
            records[1].body,
            r#"{"calls":4,"campaign":"Campaign 1","tweet_id":"186"}"#
        );

        let (p, _) = provider("mock://openai");
        p.handle(&chat("hi", 1));
        assert_eq!(p.records()[0].wall, midnight, "every profile records it");
    }

    #[test]
    fn openai_window_adds_a_fixed_window_of_requests() {
        let (p, clock) = provider("mock://openai?window=2/10s&tpm=1000");
        clock.advance(Duration::from_millis(2500));
        let r = p.handle(&chat("", 4));
        assert_eq!(
            header(&r, "x-ratelimit-limit-requests"),
            "2",
            "the window speaks"
        );
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");
        assert_eq!(
            header(&r, "x-ratelimit-reset-requests"),
            "7.5s",
            "until 00:00:10"
        );
        assert_eq!(p.handle(&chat("", 4)).status, 200);
        let refused = p.handle(&chat("", 4));
        assert_eq!(refused.status, 429);
        assert_eq!(json(&refused)["error"]["type"], "requests");
        let message = json(&refused)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            message.contains("on requests per window: Limit 2, Used 2, Requested 1"),
            "{message}"
        );
        assert_eq!(header(&refused, "retry-after-ms"), "7500");
        assert_eq!(header(&refused, "retry-after"), "8");
        assert_eq!(
            header(&refused, "x-ratelimit-remaining-tokens"),
            "992",
            "4 + 4 used, the refusal took none"
        );
        clock.advance(Duration::from_nanos(7_500_000_000 - 1));
        assert_eq!(p.handle(&chat("", 4)).status, 429, "1 ns before 00:00:10");
        clock.advance(Duration::from_nanos(1));
        let r = p.handle(&chat("", 4));
        assert_eq!(r.status, 200, "at 00:00:10");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");

        // With a request bucket too, the bucket speaks in the headers; both limit.
        let (p, _) = provider("mock://openai?rpm=100&window=1/1m");
        let r = p.handle(&chat("", 0));
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "100");
        let refused = p.handle(&chat("", 0));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "60");
    }

    #[test]
    fn a_window_refusal_waits_for_the_longest_short_limit() {
        // The window refuses first (requests before tokens); the wait covers tokens too.
        let (p, _) = provider("mock://openai?window=1/1s&tpm=60");
        assert_eq!(p.handle(&chat("", 30)).status, 200);
        // 44 tokens left, 60 wanted: 16 short at 1 per s.
        let refused = p.handle(&chat("", 60));
        assert_eq!(json(&refused)["error"]["type"], "requests");
        assert_eq!(header(&refused, "retry-after-ms"), "16000");
    }

    fn faults_of(p: &Provider<ManualClock>) -> Vec<Option<Fault>> {
        p.records().iter().map(|r| r.fault).collect()
    }

    #[test]
    fn fail_rate_answers_500_to_its_share_and_spends_nothing() {
        let (p, _) = provider("mock://openai?rpm=1000&fail_rate=0.5");
        let server_error = serde_json::json!({"error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
        }});
        let bare = [("content-type".to_string(), "application/json".to_string())];
        let (mut failed, mut last_ok) = (0, None);
        for i in 0..1000 {
            let r = p.handle(&chat("", 1));
            match r.status {
                500 => {
                    failed += 1;
                    assert_eq!(
                        (json(&r), &r.headers[..]),
                        (server_error.clone(), &bare[..])
                    );
                }
                200 => last_ok = Some(r),
                status => panic!("request {i}: {status}; failures spend nothing, so no 429"),
            }
        }
        assert!((450..=550).contains(&failed), "{failed} of 1000 failed");
        let stats = p.stats();
        assert_eq!(
            (stats.requests, stats.failed, stats.ok, stats.rate_limited),
            (1000, failed, 1000 - failed, 0)
        );
        let left = header(last_ok.as_ref().unwrap(), "x-ratelimit-remaining-requests");
        assert_eq!(
            left,
            failed.to_string(),
            "the bucket paid for the 200s alone"
        );
        let records = p.records();
        assert!(
            (records.iter()).all(|r| (r.status == 500) == (r.fault == Some(Fault::Fail))),
            "every 500 is recorded as the fail fault"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let url = |seed: u64| {
            format!("mock://github?fail_rate=0.25&reset_rate=0.25&slow_rate=0.25&seed={seed}")
        };
        let run = |seed| {
            let (p, _) = provider(&url(seed));
            for _ in 0..200 {
                p.handle(&get("/"));
            }
            faults_of(&p)
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        for fault in [
            None,
            Some(Fault::Fail),
            Some(Fault::Reset),
            Some(Fault::Slow),
        ] {
            let n = first.iter().filter(|f| **f == fault).count();
            assert!((25..=75).contains(&n), "{fault:?}: {n} of 200");
        }
        // The default seed is 42: the URL without a seed is the URL with seed=42.
        let (p, _) = provider("mock://github?fail_rate=0.25&reset_rate=0.25&slow_rate=0.25");
        for _ in 0..200 {
            p.handle(&get("/"));
        }
        assert_eq!(faults_of(&p), run(42));
    }

    #[test]
    fn the_fault_sequence_does_not_depend_on_the_answers() {
        // One draw per request, refused or not: a limit does not shift the sequence.
        let (limited, _) = provider("mock://openai?rpm=3&fail_rate=0.5&seed=3");
        let (free, _) = provider("mock://openai?fail_rate=0.5&seed=3");
        for _ in 0..50 {
            limited.handle(&chat("", 1));
            free.handle(&chat("", 1));
        }
        assert_eq!(faults_of(&limited), faults_of(&free));
        assert_eq!(limited.stats().ok, 3);
    }

    #[test]
    fn reset_rate_drops_connections_without_spending() {
        let (p, _) = provider("mock://openai?rpm=1&reset_rate=1&latency=20ms");
        for _ in 0..3 {
            let r = p.handle(&chat("", 1));
            assert!(r.drop_connection);
            assert_eq!((r.status, r.body.len(), r.headers.len()), (0, 0, 0));
            assert_eq!(
                r.delay,
                Duration::from_millis(20),
                "dropped after the latency"
            );
        }
        let stats = p.stats();
        assert_eq!((stats.requests, stats.dropped, stats.ok), (3, 3, 0));
        assert_eq!(p.records()[2].status, 0);
        assert_eq!(p.records()[2].fault, Some(Fault::Reset));

        // Half dropped: the bucket of 10 admits exactly 10 of the rest.
        let (p, _) = provider("mock://zendesk?rpm=10&reset_rate=0.5");
        for _ in 0..60 {
            let r = p.handle(&get("/api/v2/tickets"));
            assert_eq!(r.drop_connection, r.status == 0);
        }
        let stats = p.stats();
        assert!((20..=40).contains(&stats.dropped), "{stats:?}");
        assert_eq!(stats.ok, 10, "{stats:?}");
        assert_eq!(stats.rate_limited, 60 - 10 - stats.dropped);
    }

    #[test]
    fn slow_requests_take_slow_instead_of_the_latency_and_count_normally() {
        let (p, _) = provider("mock://openai?rpm=2&slow_rate=1&slow=10s&latency=50ms");
        let answers: Vec<_> = (0..3).map(|_| p.handle(&chat("", 1))).collect();
        let statuses: Vec<_> = answers.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [200, 200, 429],
            "slow requests are admitted as usual"
        );
        for r in &answers {
            assert_eq!(r.delay, Duration::from_secs(10));
            assert!(!r.drop_connection);
        }
        assert_eq!(header(&answers[1], "x-ratelimit-remaining-requests"), "0");
        let stats = p.stats();
        assert_eq!(
            (stats.slow, stats.ok, stats.rate_limited),
            (3, 2, 1),
            "{stats:?}"
        );
        assert!(faults_of(&p).iter().all(|f| *f == Some(Fault::Slow)));

        let (p, _) = provider("mock://x?slow_rate=0.5&latency=5ms");
        for _ in 0..40 {
            let r = p.handle(&get("/2/users/me"));
            let slow = p.records().last().unwrap().fault == Some(Fault::Slow);
            let expected = if slow {
                Duration::from_secs(30)
            } else {
                Duration::from_millis(5)
            };
            assert_eq!(r.delay, expected, "30 s by default");
        }
        assert!((10..=30).contains(&p.stats().slow), "{:?}", p.stats());
    }

    #[test]
    fn after_quota_requests_every_request_gets_insufficient_quota_until_restored() {
        let (p, _) = provider("mock://openai?rpm=100&quota_requests=3");
        for i in 0..3 {
            assert_eq!(p.handle(&chat("", 1)).status, 200, "request {i}");
        }
        let quota_error = serde_json::json!({"error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota",
            "param": null,
            "code": "insufficient_quota",
        }});
        for _ in 0..2 {
            let refused = p.handle(&chat("", 1));
            assert_eq!(refused.status, 429);
            assert_eq!(json(&refused), quota_error);
            assert_eq!(
                refused.headers,
                [("content-type".into(), "application/json".into())],
                "no retry-after: waiting does not help"
            );
        }
        let mut unrouted = chat("", 1);
        unrouted.path = "/v1/nowhere".into();
        assert_eq!(p.handle(&unrouted).status, 429, "every request");
        let stats = p.stats();
        assert_eq!(
            (stats.ok, stats.quota_exceeded, stats.rate_limited),
            (3, 3, 0),
            "{stats:?}"
        );
        assert_eq!(p.records()[3].fault, Some(Fault::Quota));

        p.set_quota_requests(None);
        let r = p.handle(&chat("", 1));
        assert_eq!(r.status, 200, "restored");
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests"),
            "96",
            "the quota's 429s spent nothing"
        );
        p.set_quota_requests(Some(5));
        assert_eq!(p.handle(&chat("", 1)).status, 200, "the fifth");
        assert_eq!(
            p.handle(&chat("", 1)).status,
            429,
            "counted since the start"
        );

        // Every profile answers OpenAI's quota error; 0 refuses every request.
        for url in [
            "mock://x?quota_requests=0",
            "mock://github?quota_requests=0",
        ] {
            let (p, _) = provider(url);
            let refused = p.handle(&get("/"));
            assert_eq!(
                (refused.status, json(&refused)),
                (429, quota_error.clone()),
                "{url}"
            );
        }
    }

    #[test]
    fn auth_refuses_a_missing_or_wrong_bearer_token_with_401_and_spends_nothing() {
        let (p, _) = provider("mock://openai?rpm=2&quota_requests=2&auth=s3cret");
        let with = |auth: Option<(&str, &str)>| {
            let mut req = chat("", 1);
            req.headers
                .extend(auth.map(|(n, v)| (n.to_string(), v.to_string())));
            req
        };
        let invalid_key = serde_json::json!({"error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }});
        let refusals = [
            None,
            Some(("Authorization", "Bearer wrong")),
            Some(("Authorization", "Bearer s3cret ")),
            Some(("Authorization", "bearer s3cret")),
            Some(("Authorization", "s3cret")),
            Some(("X-Api-Key", "s3cret")),
        ];
        for auth in refusals {
            let refused = p.handle(&with(auth));
            assert_eq!(refused.status, 401, "{auth:?}");
            assert_eq!(json(&refused), invalid_key, "{auth:?}");
            assert_eq!(
                refused.headers,
                [("content-type".into(), "application/json".into())],
                "{auth:?}"
            );
        }
        // The right token passes, whatever the header name's case; the 401s spent none of
        // the 2 requests of the rpm bucket nor of the quota.
        let r = p.handle(&with(Some(("Authorization", "Bearer s3cret"))));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");
        let r = p.handle(&with(Some(("authorization", "Bearer s3cret"))));
        assert_eq!(r.status, 200);
        assert_eq!(p.handle(&with(None)).status, 401, "auth before the quota");
        let stats = p.stats();
        assert_eq!(
            (
                stats.requests,
                stats.unauthorized,
                stats.ok,
                stats.rate_limited
            ),
            (9, 7, 2, 0),
            "{stats:?}"
        );
        let records = p.records();
        assert_eq!(records.len(), 9);
        assert!(
            (records.iter()).all(|r| (r.status == 401) == (r.fault == Some(Fault::Auth))),
            "every 401 is recorded as the auth fault"
        );
        assert_eq!(records[1].headers[1].1, "Bearer wrong", "recorded as sent");

        // Every profile refuses, and without `auth` anything passes.
        for profile in Profile::all() {
            let (p, _) = provider(&format!("mock://{profile}?auth=t"));
            let request = request_for(profile);
            assert_eq!(p.handle(&request).status, 401, "{profile}");
            let mut authorized = request.clone();
            authorized
                .headers
                .push(("Authorization".into(), "Bearer t".into()));
            assert_eq!(p.handle(&authorized).status, 200, "{profile}");
            let (p, _) = provider(&format!("mock://{profile}"));
            assert_eq!(p.handle(&request).status, 200, "{profile}");
        }
    }

    #[test]
    fn failed_and_dropped_requests_do_not_count_toward_the_quota() {
        let (p, _) = provider("mock://generic?quota_requests=5&fail_rate=0.3&reset_rate=0.3");
        for _ in 0..40 {
            p.handle(&get("/"));
        }
        let stats = p.stats();
        assert_eq!(stats.ok, 5, "{stats:?}");
        assert_eq!(
            stats.failed + stats.dropped + stats.ok + stats.quota_exceeded,
            40,
            "{stats:?}"
        );
        let first_quota = (p.records().iter())
            .position(|r| r.fault == Some(Fault::Quota))
            .unwrap();
        let before = &p.records()[..first_quota];
        assert_eq!(before.iter().filter(|r| r.status == 200).count(), 5);
    }

    #[test]
    fn without_headers_every_profile_answers_bare_and_429s_carry_no_retry_after() {
        for profile in Profile::all().filter(|p| p.keys().contains(&"window")) {
            let url = format!("mock://{profile}?window=1/1m&tpm=1000&headers=false");
            // tpm only where the profile takes it.
            let url = match profile.keys().contains(&"tpm") {
                true => url,
                false => url.replace("&tpm=1000", ""),
            };
            let (p, _) = provider(&url);
            let request = request_for(profile);
            let admitted = p.handle(&request);
            let refused = p.handle(&request);
            assert_eq!((admitted.status, refused.status), (200, 429), "{url}");
            for r in [&admitted, &refused] {
                assert_eq!(
                    r.headers,
                    [("content-type".into(), "application/json".into())],
                    "{url}"
                );
            }
            // With headers, the same two answers carry some.
            let (p, _) = provider(&url.replace("&headers=false", ""));
            assert!(p.handle(&request).headers.len() > 1, "{profile}");
        }
    }

    #[test]
    fn fill_zero_starts_every_bucket_empty_and_a_share_part_full() {
        let (p, clock) = provider("mock://openai?rpm=60&tpm=1000&fill=0");
        let refused = p.handle(&chat("", 1));
        assert_eq!(refused.status, 429, "drained by another client");
        assert_eq!(
            header(&refused, "retry-after"),
            "1",
            "one request per second"
        );
        assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
        clock.advance(Duration::from_secs(1));
        assert_eq!(p.handle(&chat("", 1)).status, 200);
        for (url, admitted) in [
            ("mock://generic?rps=10&fill=0.5", 5),
            ("mock://zendesk?rpm=10&fill=1", 10),
            ("mock://ietf?rps=10&fill=0", 0),
            ("mock://generic?rps=10", 10),
        ] {
            let (p, _) = provider(url);
            let n = (0..20)
                .filter(|_| p.handle(&get("/")).status == 200)
                .count();
            assert_eq!(n, admitted, "{url}");
        }
    }

    #[test]
    fn retry_after_keeps_a_plain_retry_after_without_the_other_headers() {
        let (p, _) = provider("mock://openai?rpm=1&headers=false&retry_after=true");
        assert_eq!(p.handle(&chat("", 1)).status, 200);
        let refused = p.handle(&chat("", 1));
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.headers,
            [
                ("retry-after".to_string(), "60".to_string()),
                ("content-type".into(), "application/json".into())
            ]
        );
        let (p, _) = provider("mock://x?window=1/1m&headers=false&retry_after=true");
        p.handle(&get("/"));
        let refused = p.handle(&get("/"));
        assert_eq!(
            (refused.status, header(&refused, "retry-after")),
            (429, "60")
        );
    }

    #[test]
    fn bad_leaky_and_fill_values_are_refused_with_their_form() {
        let cases = [
            (
                "mock://leaky?rate=50",
                "`rate` has a bad value `50`",
                "`Nr/s` or `Nr/m`",
            ),
            ("mock://leaky?rate=0r/s", "bad value `0r/s`", "e.g. `50r/s`"),
            (
                "mock://leaky?rate=5r/h",
                "bad value `5r/h`",
                "per second or minute",
            ),
            (
                "mock://leaky?burst=-1",
                "`burst` has a bad value",
                "e.g. `10`",
            ),
            (
                "mock://leaky?status=500",
                "`status` has a bad value `500`",
                "`429` or `503`",
            ),
            (
                "mock://leaky?nodelay=yes",
                "`nodelay` has a bad value",
                "`true` or `false`",
            ),
            (
                "mock://openai?fill=2",
                "`fill` has a bad value `2`",
                "from 0 (empty) to 1",
            ),
            (
                "mock://openai?rate=5r/s",
                "`rate` does not apply to the `openai`",
                "takes:",
            ),
            (
                "mock://github?fill=0",
                "`fill` does not apply to the `github`",
                "rpm, rps",
            ),
            (
                "mock://leaky?rpm=5",
                "`rpm` does not apply to the `leaky`",
                "rate, burst",
            ),
            (
                "mock://openai?retry_after=1",
                "`retry_after` has a bad value",
                "`true` or `false`",
            ),
        ];
        for (url, problem, hint) in cases {
            let message = MockSpec::parse_url(url).unwrap_err().to_string();
            let (first, rest) = message.split_once("\n  hint: ").unwrap();
            assert!(first.contains(problem), "{url}: {message}");
            assert!(rest.contains(hint), "{url}: {message}");
        }
        let spec = MockSpec::parse_url("mock://leaky?rate=3000r/m&burst=10&status=503").unwrap();
        assert_eq!(
            spec.rate.map(|(n, per)| (n.get(), per)),
            Some((3000, Duration::from_secs(60)))
        );
        assert_eq!((spec.burst, spec.nodelay, spec.status), (10, false, 503));
        let spec = MockSpec::parse_url("mock://leaky?rate=50/s&nodelay=false").unwrap();
        assert_eq!(
            spec.rate.map(|(n, _)| n.get()),
            Some(50),
            "the `r` may be left out"
        );
        assert!(!spec.nodelay);
    }
}
