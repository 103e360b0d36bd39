//! The mock's injected faults: which requests fail, lose their connection, crawl, or hit an
//! exhausted quota, so that a client's handling of each can be tested on demand.
//!
//! Owns [`Faults`] (the fault keys of a `mock://` URL and the `ratebound mock` flags),
//! [`Rate`] (a share of requests) and [`Fault`] (what happened to one request). The
//! [`provider`](super::provider) applies them; the wire format of each is the profile's.
//!
//! Invariants: every request draws exactly one number from an RNG seeded with
//! [`Faults::seed`], whatever the rates, so the same seed gives the same sequence of
//! faults. The rates split `[0, 1)` in the order fail, reset, slow (`Faults::pick`), so a
//! request gets at most one drawn fault and each rate is exactly its share; their sum is at
//! most 1 (checked by [`MockSpec::check`](super::MockSpec::check)). The quota fault is not
//! drawn: once the quota's requests were admitted, every request gets it. Nor is the auth
//! fault: with [`Faults::auth`] set, every request without its bearer token gets it, before
//! any other fault.

use std::fmt;
use std::time::Duration;

/// A share of requests, from 0 (none) to 1 (all). Never NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate(f64);

// The constructor refuses NaN, so equality is total.
impl Eq for Rate {}

impl Rate {
    /// No request.
    pub const ZERO: Rate = Rate(0.0);

    /// The share `share`, if it lies in `0..=1`.
    ///
    /// ```
    /// # use ratebound_mock::Rate;
    /// assert_eq!(Rate::new(0.25).map(Rate::get), Some(0.25));
    /// assert_eq!(Rate::new(1.5), None);
    /// assert_eq!(Rate::new(f64::NAN), None);
    /// ```
    pub fn new(share: f64) -> Option<Rate> {
        (0.0..=1.0).contains(&share).then_some(Rate(share))
    }

    /// The share, in `0..=1`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the mock did to one request besides answering it as its profile would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Answered OpenAI's `invalid_api_key` 401: the request did not carry the bearer token
    /// of [`Faults::auth`]. Spends nothing.
    Auth,
    /// Answered OpenAI's `insufficient_quota` 429: the quota's requests were all admitted.
    Quota,
    /// Answered 500 `server_error`, without counting against the limits.
    Fail,
    /// Answered by dropping the connection, without counting against the limits.
    Reset,
    /// Admitted and counted normally, but delayed by [`Faults::slow`] instead of the latency.
    Slow,
}

impl Fault {
    /// The fault's name in records and messages: `auth`, `quota`, `fail`, `reset`, `slow`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Auth => "auth",
            Fault::Quota => "quota",
            Fault::Fail => "fail",
            Fault::Reset => "reset",
            Fault::Slow => "slow",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The seed of the fault RNG when none is given.
pub const DEFAULT_SEED: u64 = 42;

/// How long a slow request takes when `slow` is not given: longer than most clients wait.
pub const DEFAULT_SLOW: Duration = Duration::from_secs(30);

/// Which faults the mock injects, and how often. The default injects none and sends the
/// profile's rate-limit headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Whether responses carry rate-limit headers. Without them a 429 is bare: no
    /// `retry-after` either, as some providers answer.
    pub headers: bool,
    /// Whether a refusal keeps a plain `retry-after` when `headers` is off (or when its
    /// profile sends none, as `x` and `leaky`): the other bare form of a 429.
    pub retry_after: bool,
    /// Once this many requests were answered 200 (in total, since the start), every request
    /// is answered OpenAI's `insufficient_quota` 429, without a `retry-after`. `None`: no
    /// quota. [`Provider::set_quota_requests`](crate::Provider::set_quota_requests) changes
    /// it while serving.
    pub quota_requests: Option<u64>,
    /// The share of requests answered 500, without counting against the limits.
    pub fail_rate: Rate,
    /// The share of requests answered by dropping the connection, without counting against
    /// the limits.
    pub reset_rate: Rate,
    /// The share of requests delayed by [`Faults::slow`] instead of the latency; they are
    /// admitted (or refused) and counted normally.
    pub slow_rate: Rate,
    /// How long a slow request takes.
    pub slow: Duration,
    /// The seed of the RNG that picks the faulty requests.
    pub seed: u64,
    /// The API key the mock accepts: when set, every request whose `Authorization` header
    /// is not exactly `Bearer TOKEN` is answered OpenAI's `invalid_api_key` 401, without
    /// counting against the limits or the quota. `None`: any credentials, or none, pass.
    pub auth: Option<String>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            headers: true,
            retry_after: false,
            quota_requests: None,
            fail_rate: Rate::ZERO,
            reset_rate: Rate::ZERO,
            slow_rate: Rate::ZERO,
            slow: DEFAULT_SLOW,
            seed: DEFAULT_SEED,
            auth: None,
        }
    }
}

impl Faults {
    /// Whether `headers` carry the credentials [`Faults::auth`] asks for: an `Authorization`
    /// header (any case) of exactly `Bearer TOKEN`. Always true without `auth`.
    pub(crate) fn authorized(&self, headers: &[(String, String)]) -> bool {
        let Some(token) = &self.auth else {
            return true;
        };
        let sent = (headers.iter()).find(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        sent.is_some_and(|(_, value)| value.strip_prefix("Bearer ") == Some(token.as_str()))
    }

    /// Whether the drawn rates add up to at most 1 (within float rounding: `0.1 + 0.2 +
    /// 0.7` is fine).
    pub(crate) fn rates_fit(&self) -> bool {
        self.fail_rate.get() + self.reset_rate.get() + self.slow_rate.get() <= 1.0 + 1e-9
    }

    /// The fault a request gets for its draw `u` in `[0, 1)`: `[0, fail)` fails, the next
    /// `reset` is dropped, the next `slow` is slow, the rest get none.
    pub(crate) fn pick(&self, u: f64) -> Option<Fault> {
        let fail = self.fail_rate.get();
        let reset = fail + self.reset_rate.get();
        let slow = reset + self.slow_rate.get();
        if u < fail {
            Some(Fault::Fail)
        } else if u < reset {
            Some(Fault::Reset)
        } else if u < slow {
            Some(Fault::Slow)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(share: f64) -> Rate {
        Rate::new(share).unwrap()
    }

    #[test]
    fn rates_split_the_unit_interval_in_order() {
        // Binary fractions, so that the sums are exact.
        let faults = Faults {
            fail_rate: rate(0.125),
            reset_rate: rate(0.25),
            slow_rate: rate(0.375),
            ..Faults::default()
        };
        let cases = [
            (0.0, Some(Fault::Fail)),
            (0.124, Some(Fault::Fail)),
            (0.125, Some(Fault::Reset)),
            (0.374, Some(Fault::Reset)),
            (0.375, Some(Fault::Slow)),
            (0.749, Some(Fault::Slow)),
            (0.75, None),
            (0.999, None),
        ];
        for (u, fault) in cases {
            assert_eq!(faults.pick(u), fault, "draw {u}");
        }
        assert_eq!(Faults::default().pick(0.0), None, "no rates, no faults");
    }

    #[test]
    fn rates_must_add_up_to_at_most_one() {
        let faults = |f, r, s| Faults {
            fail_rate: rate(f),
            reset_rate: rate(r),
            slow_rate: rate(s),
            ..Faults::default()
        };
        assert!(faults(0.1, 0.2, 0.7).rates_fit(), "1 up to float rounding");
        assert!(faults(1.0, 0.0, 0.0).rates_fit());
        assert!(!faults(0.5, 0.5, 0.01).rates_fit());
        assert_eq!(faults(1.0, 0.0, 0.0).pick(0.999_999), Some(Fault::Fail));
    }

    #[test]
    fn rates_outside_zero_to_one_do_not_exist() {
        for share in [-0.1, 1.000_001, f64::NAN, f64::INFINITY] {
            assert_eq!(Rate::new(share), None, "{share}");
        }
        assert_eq!(rate(0.5).to_string(), "0.5");
        assert_eq!(Fault::Reset.to_string(), "reset");
    }
}
