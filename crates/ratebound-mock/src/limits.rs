//! The limits a mock enforces, as one value every profile admits against: continuous
//! buckets and fixed windows, checked together.
//!
//! Owns admission (a request is admitted only if every bucket holds its cost at arrival,
//! for tokens the request's estimate, and every fixed window, read on the clock's wall
//! time, has room for it; then all are debited, else none) and [`Standing`], how one limit
//! stands after a request, which every dialect's headers report in its own names and units.
//! Pure: times come in as arguments.

use std::time::Duration;

use crate::MockSpec;
use crate::bucket::Bucket;
use crate::clock::Nanos;
use crate::window::Window;

/// A minute, the period of `rpm` and `tpm`.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);

/// A configured limit of the mock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Requests per minute.
    Rpm,
    /// Requests per second.
    Rps,
    /// Tokens per minute.
    Tpm,
    /// Requests per fixed window.
    Window,
    /// Requests through a leaky bucket (`rate` and `burst`).
    Leaky,
}

impl Limit {
    /// What it counts, as OpenAI's headers and error types say: `requests` or `tokens`.
    pub(crate) fn unit(self) -> &'static str {
        match self {
            Limit::Tpm => "tokens",
            _ => "requests",
        }
    }

    /// As OpenAI names it in a 429 message.
    pub(crate) fn description(self) -> &'static str {
        match self {
            Limit::Rpm => "requests per min (RPM)",
            Limit::Rps => "requests per sec (RPS)",
            Limit::Tpm => "tokens per min (TPM)",
            Limit::Window => "requests per window",
            Limit::Leaky => "requests per burst",
        }
    }

    /// What a request of `tokens` tokens costs this limit.
    pub(crate) fn cost(self, tokens: u64) -> u64 {
        match self {
            Limit::Tpm => tokens,
            _ => 1,
        }
    }
}

/// How one limit stands after a request: what every dialect's headers report, each in its
/// own names and units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Standing {
    /// The capacity, in units per window (or per bucket period).
    pub(crate) limit: u64,
    /// Whole units left.
    pub(crate) remaining: u64,
    /// Nanoseconds until the limit is whole again: a bucket full, a used window over.
    pub(crate) reset: Nanos,
    /// The limit's period: 60 s for rpm and tpm, 1 s for rps, a fixed window's length.
    pub(crate) window: Duration,
}

/// One limit's view of a request at arrival, before anything is debited; as a refusal, the
/// first limit that refused it, and how long until every limit would admit it.
pub(crate) struct Check {
    /// The limit.
    pub(crate) limit: Limit,
    /// The limit's capacity, in its units.
    pub(crate) capacity: u64,
    /// Units spent, as the limit stood at arrival.
    pub(crate) used: u64,
    /// `Some(0)`: fits now; `None`: never, the request exceeds the capacity.
    pub(crate) wait: Option<Nanos>,
}

/// Every limit of one mock.
pub(crate) struct Limits {
    /// In the order rpm, rps, tpm: requests are checked before tokens, as OpenAI does.
    pub(crate) buckets: Vec<(Limit, Bucket)>,
    /// The fixed request windows, each with the limit it stands for.
    pub(crate) windows: Vec<(Limit, Window)>,
}

impl Limits {
    /// The limits most profiles take: `rpm`, `rps` and `tpm` as buckets filled to the
    /// spec's `fill` at `now`, and `window` as a fixed window aligned to UTC; each only if
    /// `keys` (the profile's keys) has it.
    pub(crate) fn standard(spec: &MockSpec, keys: &[&str], now: Nanos) -> Limits {
        let fill = spec.fill.map_or(1.0, |f| f.get());
        let buckets = [
            (Limit::Rpm, "rpm", spec.rpm, MINUTE),
            (Limit::Rps, "rps", spec.rps, Duration::from_secs(1)),
            (Limit::Tpm, "tpm", spec.tpm, MINUTE),
        ]
        .into_iter()
        .filter(|(_, key, _, _)| keys.contains(key))
        .filter_map(|(limit, _, n, period)| Some((limit, Bucket::filled(n?, period, fill, now))))
        .collect();
        let windows = (spec.window.filter(|_| keys.contains(&"window")))
            .map(|(n, length)| (Limit::Window, Window::new(n, length)))
            .into_iter()
            .collect();
        Limits { buckets, windows }
    }

    /// Limits of fixed windows only.
    pub(crate) fn windows(windows: Vec<(Limit, Window)>) -> Limits {
        Limits {
            buckets: Vec::new(),
            windows,
        }
    }

    /// The request limit as every dialect reports it (one request limit per response, as
    /// OpenAI has): the first request bucket (rpm before rps), else the first fixed window
    /// (rpm, rps, then `window`), which is whole again at its end.
    pub(crate) fn requests(&self, wall_ns: u64) -> Option<Standing> {
        self.bucket("requests").or_else(|| {
            self.windows.first().map(|(_, w)| Standing {
                limit: w.limit(),
                remaining: w.remaining(),
                reset: match w.used() {
                    0 => 0,
                    _ => w.end_ns().saturating_sub(wall_ns),
                },
                window: w.length(),
            })
        })
    }

    /// The token limit, for the dialects that report one.
    pub(crate) fn tokens(&self) -> Option<Standing> {
        self.bucket("tokens")
    }

    fn bucket(&self, unit: &str) -> Option<Standing> {
        let (_, b) = self.buckets.iter().find(|(l, _)| l.unit() == unit)?;
        Some(Standing {
            limit: b.capacity(),
            remaining: b.remaining(),
            reset: b.until_full(),
            window: b.period(),
        })
    }

    /// Credits back what an admitted request of `estimate` tokens did not use of its
    /// estimate (`used` tokens): a usage above the estimate is not charged extra.
    pub(crate) fn settle(&mut self, estimate: u64, used: u64) {
        for (limit, bucket) in &mut self.buckets {
            bucket.give(limit.cost(estimate).saturating_sub(limit.cost(used)));
        }
    }

    /// Debits every bucket and window if one request of `tokens` tokens fits all of them
    /// (buckets at `now`, windows at `wall_ns`); otherwise debits none and says why.
    pub(crate) fn admit(&mut self, tokens: u64, now: Nanos, wall_ns: u64) -> Result<(), Check> {
        let mut checks: Vec<Check> = (self.buckets.iter_mut())
            .map(|(limit, bucket)| {
                bucket.refill(now);
                Check {
                    limit: *limit,
                    capacity: bucket.capacity(),
                    used: bucket.capacity().saturating_sub(bucket.remaining()),
                    wait: bucket.wait(limit.cost(tokens)),
                }
            })
            .collect();
        // Request limits: checked after the request buckets, before tokens.
        let at = (checks.iter().position(|c| c.limit == Limit::Tpm)).unwrap_or(checks.len());
        let fixed: Vec<Check> = (self.windows.iter_mut())
            .map(|(limit, window)| {
                window.roll(wall_ns);
                Check {
                    limit: *limit,
                    capacity: window.limit(),
                    used: window.used(),
                    wait: window.wait(limit.cost(tokens), wall_ns),
                }
            })
            .collect();
        checks.splice(at..at, fixed);
        // A request over a capacity can never be admitted: that limit speaks first.
        let refused = (checks.iter().position(|c| c.wait.is_none()))
            .or_else(|| checks.iter().position(|c| c.wait != Some(0)));
        let Some(i) = refused else {
            for (limit, bucket) in &mut self.buckets {
                bucket.take(limit.cost(tokens));
            }
            for (limit, window) in &mut self.windows {
                window.take(limit.cost(tokens));
            }
            return Ok(());
        };
        let wait = checks
            .iter()
            .try_fold(0, |max, c| c.wait.map(|w| max.max(w)));
        Err(Check {
            wait,
            ..checks.swap_remove(i)
        })
    }
}
