//! What to do after an attempt: classify the outcome and compute the backoff.
//!
//! Owns the mapping from "what came back" (a status code, or a transport failure) to an
//! [`Outcome`], and the retry policy's exponential backoff with full jitter
//! (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>). Pure: the
//! jitter's random draw is an argument, so tests are deterministic.
//!
//! Invariants: a provider's `Retry-After` always wins over a computed backoff; a 429 never
//! spends one of the item's attempts (waiting for the limit is not the item's fault); a
//! permanent 4xx fails the item, not the run; 401/403 stop the run; no wait is longer than
//! `max_wait` ([`RetryPolicy::ceiling`]): a provider asking for longer pauses the run like
//! an exhausted quota, saying until when, instead of sleeping silently.

use std::time::Duration;

/// What came back from one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// An HTTP response with this status.
    Status(u16),
    /// No response before the timeout.
    Timeout,
    /// The connection failed or was reset.
    Connection,
    /// No connection could be made at all (refused, DNS): the API was never reached.
    Unreachable,
    /// A response whose body is larger than `[api] max_response_bytes`.
    TooLarge,
}

/// The decision after one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success: store the result and mark the item done.
    Done,
    /// 429: wait (the provider's `Retry-After`, or a backoff) and send again; the item's
    /// attempts are not spent.
    RateLimited,
    /// A transient failure (5xx, 408, timeout, connection): retry with backoff while
    /// attempts remain.
    Transient,
    /// A permanent failure of this item (other 4xx): store the body, mark it failed.
    Failed,
    /// The credentials are refused (401, 403): stop the whole run; items stay pending.
    Fatal,
    /// The account's quota or credit is exhausted (OpenAI's 429 `insufficient_quota`, or a
    /// configured marker): pause the whole run at once; items stay pending.
    QuotaExhausted,
    /// The API was never reached (connection refused, DNS failure): the attempt is not
    /// spent; dispatch waits and probes, and the run stops when it lasts ([`Reachability`]).
    Unreachable,
}

impl Outcome {
    /// The name the store records for an attempt: `done`, `rate_limited`, `transient`,
    /// `failed`, `fatal`, `quota_exhausted` or `unreachable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::RateLimited => "rate_limited",
            Outcome::Transient => "transient",
            Outcome::Failed => "failed",
            Outcome::Fatal => "fatal",
            Outcome::QuotaExhausted => "quota_exhausted",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// Classifies one attempt's response, recognising quota exhaustion by `markers` found in
/// the body of a 4xx response.
pub fn classify_body(response: Response, body: &str, markers: &[String]) -> Outcome {
    if let Response::Status(400..=499) = response
        && markers
            .iter()
            .any(|m| !m.is_empty() && body.contains(m.as_str()))
    {
        return Outcome::QuotaExhausted;
    }
    classify(response)
}

/// Classifies one attempt's response by its status alone.
pub fn classify(response: Response) -> Outcome {
    match response {
        Response::Status(200..=299) => Outcome::Done,
        Response::Status(429) => Outcome::RateLimited,
        Response::Status(401 | 403) => Outcome::Fatal,
        Response::Status(408 | 500..=599) | Response::Timeout | Response::Connection => {
            Outcome::Transient
        }
        Response::Status(_) | Response::TooLarge => Outcome::Failed,
        Response::Unreachable => Outcome::Unreachable,
    }
}

/// How often and how patiently to retry.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per item for transient failures, the first one included.
    pub max_attempts: u32,
    /// The first backoff's upper bound; doubled on each further failure.
    pub base: Duration,
    /// The largest backoff.
    pub max: Duration,
    /// Body fragments of a 4xx response that mean "quota exhausted".
    pub quota_markers: Vec<String>,
    /// What to do when a quota runs out.
    pub on_quota: OnQuota,
    /// Share of recent responses that are errors at which dispatch pauses (a failure storm).
    pub storm_share: f64,
    /// The longest a provider's `Retry-After` or reset is waited for in the run; a longer
    /// one is treated as an exhausted quota.
    pub max_wait: Duration,
    /// How long every attempt may fail to connect before the run stops as unreachable.
    pub unreachable_after: Duration,
    /// Statuses that mean "rate limited" (429 always does): a 503 listed here is waited
    /// for like a 429, spending no attempt.
    pub rate_limit_statuses: Vec<u16>,
}

/// Default `[retry] max_wait`.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5 * 60);

/// What to do when a quota is exhausted or reaches its `pause_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnQuota {
    /// Stop the run (exit 75), saying when and how to resume.
    Exit,
    /// Keep the process, show a countdown and continue when the quota resets (only when the
    /// reset is known; otherwise exit).
    Wait,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            quota_markers: vec!["insufficient_quota".to_string()],
            on_quota: OnQuota::Exit,
            storm_share: 0.5,
            max_wait: DEFAULT_MAX_WAIT,
            unreachable_after: UNREACHABLE_AFTER,
            rate_limit_statuses: vec![429],
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt after `failures` consecutive failures (1 = the first),
    /// with full jitter: `draw` in `[0, 1)` scales the exponential bound. A provider's
    /// `retry_after` replaces the computed wait.
    pub fn backoff(&self, failures: u32, draw: f64, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let exp = failures.saturating_sub(1).min(30);
        let bound = self.base.saturating_mul(1 << exp).min(self.max);
        bound.mul_f64(draw.clamp(0.0, 1.0))
    }

    /// The outcome once the ceiling on waits applies: a 429 or transient failure whose
    /// response asks to wait (`asked`: its `Retry-After`, or the reset of an exhausted limit)
    /// longer than `max_wait` is [`Outcome::QuotaExhausted`], so the run pauses and says
    /// until when rather than sleeping for days.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratebound::retry::{Outcome, RetryPolicy};
    /// let policy = RetryPolicy::default();
    /// let days = Some(Duration::from_secs(999_999));
    /// assert_eq!(policy.ceiling(Outcome::RateLimited, days), Outcome::QuotaExhausted);
    /// assert_eq!(policy.ceiling(Outcome::RateLimited, Some(Duration::from_secs(2))), Outcome::RateLimited);
    /// ```
    pub fn ceiling(&self, outcome: Outcome, asked: Option<Duration>) -> Outcome {
        match (outcome, asked) {
            (Outcome::RateLimited | Outcome::Transient, Some(wait)) if wait > self.max_wait => {
                Outcome::QuotaExhausted
            }
            _ => outcome,
        }
    }

    /// `outcome` of `response`, or [`Outcome::RateLimited`] when its status is one the
    /// config declares a rate limit (`[retry] rate_limit_statuses`).
    pub fn declared_rate_limit(&self, response: Response, outcome: Outcome) -> Outcome {
        match response {
            Response::Status(status)
                if outcome == Outcome::Transient && self.rate_limit_statuses.contains(&status) =>
            {
                Outcome::RateLimited
            }
            _ => outcome,
        }
    }

    /// Whether an item that has failed transiently `failures` times may be tried again.
    pub fn allows_another(&self, failures: u32) -> bool {
        failures < self.max_attempts
    }
}

/// How a transport error that never reached the API begins (connection refused, DNS
/// failure): the transport writes it, [`is_unreachable`] reads it.
pub const UNREACHABLE: &str = "cannot connect: ";

/// Whether a transport error's text says the API was never reached.
pub fn is_unreachable(error: &str) -> bool {
    error.starts_with(UNREACHABLE)
}

/// How long every attempt may fail to connect before the API counts as unreachable.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(60);

/// Notices an API that cannot be reached at all: every attempt since the last response
/// failed to connect, for at least [`UNREACHABLE_AFTER`]. Then the run should stop (exit
/// 69, "the API is unreachable: ...") with its items pending and their attempts unspent,
/// rather than fail items one by one. Times are offsets on the run's monotonic clock.
#[derive(Clone, Debug, Default)]
pub struct Reachability {
    /// When the current run of connect failures began.
    since: Option<Duration>,
}

impl Reachability {
    /// Records one attempt (`unreachable`: it failed to connect) at `now`; true when the
    /// API has been unreachable for [`UNREACHABLE_AFTER`].
    pub fn record(&mut self, unreachable: bool, now: Duration) -> bool {
        self.record_for(unreachable, now, UNREACHABLE_AFTER)
    }

    /// [`Reachability::record`] with the span `after` (`[retry] unreachable_after`).
    pub fn record_for(&mut self, unreachable: bool, now: Duration, after: Duration) -> bool {
        if !unreachable {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.saturating_sub(since) >= after
    }

    /// When the current run of connect failures began, if one is going on.
    pub fn since(&self) -> Option<Duration> {
        self.since
    }
}

/// Recent outcomes, to notice a failure storm: most of the last responses being errors.
#[derive(Clone, Debug, Default)]
pub struct Storm {
    recent: std::collections::VecDeque<bool>,
    /// Consecutive storm pauses, for the backoff.
    pub pauses: u32,
}

/// Responses the storm detector looks back over.
const STORM_WINDOW: usize = 20;

impl Storm {
    /// Records one response (`failed`: a 5xx, timeout or connection error) and says whether
    /// at least `share` of the last responses failed (with a full window).
    pub fn record(&mut self, failed: bool, share: f64) -> bool {
        if self.recent.len() == STORM_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        let failures = self.recent.iter().filter(|f| **f).count();
        let storm =
            self.recent.len() == STORM_WINDOW && failures as f64 >= share * STORM_WINDOW as f64;
        if storm {
            self.pauses += 1;
            // Start afresh after the pause, so one pause per storm.
            self.recent.clear();
        } else if !failed {
            self.pauses = 0;
        }
        storm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_status_codes() {
        use Outcome::*;
        let cases = [
            (Response::Status(200), Done),
            (Response::Status(201), Done),
            (Response::Status(429), RateLimited),
            (Response::Status(401), Fatal),
            (Response::Status(403), Fatal),
            (Response::Status(400), Failed),
            (Response::Status(404), Failed),
            // Redirects are not followed (see runner::transport): the item fails.
            (Response::Status(301), Failed),
            (Response::Status(307), Failed),
            (Response::Status(408), Transient),
            (Response::Status(500), Transient),
            (Response::Status(503), Transient),
            (Response::Timeout, Transient),
            (Response::Connection, Transient),
            (Response::Unreachable, Unreachable),
            (Response::TooLarge, Failed),
        ];
        for (response, want) in cases {
            assert_eq!(classify(response), want, "{response:?}");
        }
    }

    #[test]
    fn issue_12_a_wait_beyond_the_ceiling_is_a_quota_and_far_future_dates_stay_far() {
        use crate::headers::{Dialect, observe};
        use std::time::UNIX_EPOCH;
        let policy = RetryPolicy::default();
        // 2026-12-04T00:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_342_400);
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        let long = [
            h(&[("retry-after", "999999")]),
            h(&[("retry-after", "Thu, 01 Jan 2099 00:00:00 GMT")]),
            h(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            h(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "300h"),
            ]),
        ];
        for headers in long {
            let wait = observe(&headers, now, Dialect::Auto).longest_wait();
            assert!(
                wait.is_some_and(|w| w > policy.max_wait),
                "{headers:?}: {wait:?}"
            );
            assert!(
                now.checked_add(wait.unwrap_or_default()).is_some(),
                "{headers:?}"
            );
            for outcome in [Outcome::RateLimited, Outcome::Transient] {
                assert_eq!(
                    policy.ceiling(outcome, wait),
                    Outcome::QuotaExhausted,
                    "{headers:?}"
                );
            }
        }
        let short = observe(&h(&[("retry-after", "20")]), now, Dialect::Auto).longest_wait();
        assert_eq!(
            policy.ceiling(Outcome::RateLimited, short),
            Outcome::RateLimited
        );
        assert_eq!(
            policy.ceiling(Outcome::Done, Some(Duration::MAX)),
            Outcome::Done
        );
    }

    #[test]
    fn issue_12_an_api_refusing_every_connection_for_a_minute_is_unreachable() {
        let mut r = Reachability::default();
        let s = Duration::from_secs;
        assert!(!r.record(true, s(0)));
        assert!(!r.record(true, s(59)));
        assert!(r.record(true, s(60)), "a minute of connect failures");
        let mut r = Reachability::default();
        assert!(!r.record(true, s(0)));
        assert!(!r.record(false, s(30)), "a response resets it");
        assert!(!r.record(true, s(61)));
        assert!(is_unreachable(
            "cannot connect: error sending request: tcp connect error"
        ));
        assert!(!is_unreachable("timed out"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_scales_it() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.backoff(1, 1.0, None), Duration::from_millis(100));
        assert_eq!(policy.backoff(3, 1.0, None), Duration::from_millis(400));
        assert_eq!(policy.backoff(10, 1.0, None), Duration::from_secs(1));
        assert_eq!(policy.backoff(3, 0.5, None), Duration::from_millis(200));
        assert_eq!(policy.backoff(3, 0.0, None), Duration::ZERO);
    }

    #[test]
    fn retry_after_wins_over_backoff() {
        let policy = RetryPolicy::default();
        let wait = Some(Duration::from_secs(7));
        assert_eq!(policy.backoff(1, 0.1, wait), Duration::from_secs(7));
    }

    #[test]
    fn quota_markers_turn_a_4xx_into_quota_exhaustion() {
        let markers = vec!["insufficient_quota".to_string()];
        let body = r#"{"error": {"type": "insufficient_quota", "code": "insufficient_quota"}}"#;
        assert_eq!(
            classify_body(Response::Status(429), body, &markers),
            Outcome::QuotaExhausted
        );
        assert_eq!(
            classify_body(Response::Status(429), "slow down", &markers),
            Outcome::RateLimited
        );
        assert_eq!(
            classify_body(Response::Status(500), body, &markers),
            Outcome::Transient,
            "5xx is never a quota"
        );
    }

    #[test]
    fn a_storm_is_most_of_the_last_responses_failing() {
        let mut storm = Storm::default();
        for i in 0..19 {
            assert!(
                !storm.record(i % 2 == 0, 0.5),
                "no verdict before a full window"
            );
        }
        assert!(storm.record(true, 0.5), "11 of 20 failed");
        assert_eq!(storm.pauses, 1);
        for _ in 0..20 {
            assert!(!storm.record(false, 0.5));
        }
        assert_eq!(storm.pauses, 0, "successes end the storm");
    }

    #[test]
    fn attempts_run_out_at_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.allows_another(2));
        assert!(!policy.allows_another(3));
    }
}
