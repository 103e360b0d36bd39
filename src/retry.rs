//! What to do after an attempt: classify the outcome and compute the backoff.
//!
//! Owns the mapping from "what came back" (a status code, or a transport failure) to an
//! [`Outcome`], and the retry policy's exponential backoff with full jitter
//! (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>). Pure: the
//! jitter's random draw is an argument, so tests are deterministic.
//!
//! Invariants: a provider's `Retry-After` always wins over a computed backoff; a 429 never
//! spends one of the item's attempts (waiting for the limit is not the item's fault); a
//! permanent 4xx fails the item, not the run; 401/403 stop the run.

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
}

/// Classifies one attempt's response.
pub fn classify(response: Response) -> Outcome {
    match response {
        Response::Status(200..=299) => Outcome::Done,
        Response::Status(429) => Outcome::RateLimited,
        Response::Status(401 | 403) => Outcome::Fatal,
        Response::Status(408 | 500..=599) | Response::Timeout | Response::Connection => {
            Outcome::Transient
        }
        Response::Status(_) => Outcome::Failed,
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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
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

    /// Whether an item that has failed transiently `failures` times may be tried again.
    pub fn allows_another(&self, failures: u32) -> bool {
        failures < self.max_attempts
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
            (Response::Status(408), Transient),
            (Response::Status(500), Transient),
            (Response::Status(503), Transient),
            (Response::Timeout, Transient),
            (Response::Connection, Transient),
        ];
        for (response, want) in cases {
            assert_eq!(classify(response), want, "{response:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_scales_it() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
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
    fn attempts_run_out_at_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(policy.allows_another(2));
        assert!(!policy.allows_another(3));
    }
}
