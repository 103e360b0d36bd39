//! The limits as a shared backend stores them: plain numbers in microseconds of the
//! backend's clock, and the namespace their state lives under.
//!
//! Owns the translation of a [`LimitSpec`] (with the run's jitter allowance) into what the
//! atomic scripts of a shared backend evaluate ([`SharedBucket`]), and the namespace derived
//! from the API and its credentials ([`namespace`]). Leaves the I/O to
//! [`redis`](super::redis), the only file under `limiter/` that talks to the network.
//!
//! Invariants: the numbers mean exactly what the in-memory [`Gcra`](super::Gcra) and
//! [`FixedWindow`](super::FixedWindow) mean (a bucket's tolerance shrunk by the jitter, a
//! window's guard at its end, a quota's `pause_at`), with every interval rounded *up* to
//! whole microseconds, so the shared limit is never looser than the configured one; a
//! namespace never contains a credential, only a hash of it.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::gcra::jittered_tolerance;
use super::window::window_guard;
use super::{LimitKind, LimitSpec};

/// Microseconds: the unit of time in a shared backend (unix microseconds stay exact in a
/// Lua number, unix nanoseconds would not).
pub type Micros = u64;

fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One configured limit as a shared backend evaluates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedBucket {
    /// A rolling rate in GCRA form (see [`Gcra`](super::Gcra)).
    Rolling {
        /// Units per period.
        capacity: u64,
        /// The period, in µs.
        period_us: Micros,
        /// How far ahead of now the bucket may run: the burst's interval less the jitter,
        /// at least one unit's interval.
        tau_us: Micros,
    },
    /// A fixed calendar window (see [`FixedWindow`](super::FixedWindow)).
    Window {
        /// Units admission may reach in one window (the limit, or its `pause_at` share).
        admit_up_to: u64,
        /// Window length in µs; 0 for a window that never resets (a run budget).
        period_us: Micros,
        /// Unix µs of a window boundary modulo the period (the `reset` offset).
        phase_us: Micros,
        /// The end of each window during which nothing is admitted, in µs.
        guard_us: Micros,
    },
}

impl SharedBucket {
    /// The bucket for `spec` when requests may be delayed unevenly by up to `jitter`.
    pub fn from_spec(spec: &LimitSpec, jitter: Duration) -> SharedBucket {
        let jitter_us = micros(jitter);
        match &spec.kind {
            LimitKind::Rolling { rate, per, burst } => {
                let capacity = rate.get();
                let period_us = micros(*per).max(1);
                let mut bucket = SharedBucket::Rolling {
                    capacity,
                    period_us,
                    tau_us: 0,
                };
                let burst = burst.unwrap_or(*rate).get();
                let tau = jittered_tolerance(bucket.step_us(burst), jitter_us, bucket.step_us(1));
                if let SharedBucket::Rolling { tau_us, .. } = &mut bucket {
                    *tau_us = tau;
                }
                bucket
            }
            LimitKind::Window {
                limit,
                per,
                reset,
                pause_at,
            } => {
                let period_us = per.map_or(0, |p| micros(p).max(1));
                SharedBucket::Window {
                    admit_up_to: super::admit_up_to(*limit, *pause_at),
                    period_us,
                    phase_us: if period_us == 0 {
                        0
                    } else {
                        micros(*reset) % period_us
                    },
                    guard_us: if period_us == 0 {
                        0
                    } else {
                        window_guard(period_us, jitter_us)
                    },
                }
            }
        }
    }

    /// What `cost` units weigh in this bucket: for a rolling bucket the time they take to
    /// refill in µs, rounded up; for a window the units themselves.
    pub fn step_us(&self, cost: u64) -> u64 {
        match self {
            SharedBucket::Rolling {
                capacity,
                period_us,
                ..
            } => {
                let num = u128::from(cost) * u128::from(*period_us);
                num.div_ceil(u128::from(*capacity))
                    .try_into()
                    .unwrap_or(u64::MAX)
            }
            SharedBucket::Window { .. } => cost,
        }
    }

    /// The most units one admission can take (as [`Gcra::max_cost`](super::Gcra::max_cost)
    /// and a window's admission limit): larger costs can never fit.
    pub fn max_cost(&self) -> u64 {
        match self {
            SharedBucket::Rolling {
                capacity,
                period_us,
                tau_us,
            } => {
                u64::try_from(u128::from(*tau_us) * u128::from(*capacity) / u128::from(*period_us))
                    .unwrap_or(u64::MAX)
            }
            SharedBucket::Window { admit_up_to, .. } => *admit_up_to,
        }
    }

    /// The bucket's kind and parameters as script arguments: `r, tau_us, 0, 0` or
    /// `w, admit_up_to, period_us, phase_us, guard_us` padded to the same width.
    pub fn script_params(&self) -> [String; 5] {
        match self {
            SharedBucket::Rolling { tau_us, .. } => [
                "r".into(),
                tau_us.to_string(),
                "0".into(),
                "0".into(),
                "0".into(),
            ],
            SharedBucket::Window {
                admit_up_to,
                period_us,
                phase_us,
                guard_us,
            } => [
                "w".into(),
                admit_up_to.to_string(),
                period_us.to_string(),
                phase_us.to_string(),
                guard_us.to_string(),
            ],
        }
    }
}

/// The key prefix for limits shared by every runner calling `base_url` with the same
/// credentials: `ratebound:{<hash>}` where the hash covers the base URL and every header
/// (name and resolved value). Only the hash is kept, never a value; the braces make it a
/// Redis Cluster hash tag, so a script's keys share one slot.
///
/// ```
/// # use ratebound::limiter::shared::namespace;
/// let headers = vec![("Authorization".to_string(), "Bearer sk-secret".to_string())];
/// let ns = namespace("https://api.openai.com", &headers);
/// assert!(ns.starts_with("ratebound:{") && !ns.contains("sk-secret"));
/// assert_ne!(ns, namespace("https://api.openai.com", &[]));
/// ```
pub fn namespace(base_url: &str, headers: &[(String, String)]) -> String {
    let mut sorted: Vec<(String, &str)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    hasher.update(base_url.trim_end_matches('/').as_bytes());
    for (name, value) in sorted {
        hasher.update(b"\n");
        hasher.update(name.as_bytes());
        hasher.update(b":");
        hasher.update(value.as_bytes());
    }
    let hash: String = hasher.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("ratebound:{{{hash}}}")
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::limiter::{Gcra, Unit};

    #[test]
    fn a_rolling_bucket_has_the_memory_limiters_tolerance_in_micros() {
        let spec = LimitSpec::rolling(
            "rpm",
            Unit::Requests,
            NonZeroU64::new(600).unwrap(),
            Duration::from_secs(10),
        );
        let shared = SharedBucket::from_spec(&spec, Duration::from_millis(50));
        assert_eq!(
            shared,
            SharedBucket::Rolling {
                capacity: 600,
                period_us: 10_000_000,
                tau_us: 9_950_000
            }
        );
        let memory = Gcra::new(NonZeroU64::new(600).unwrap(), Duration::from_secs(10), None)
            .with_jitter(Duration::from_millis(50));
        assert_eq!(
            memory.max_cost(),
            597,
            "the same burst as the memory bucket"
        );
        assert_eq!(shared.step_us(597), 9_950_000);
        assert_eq!(shared.step_us(1), 16_667, "rounded up, never looser");
    }

    #[test]
    fn a_window_keeps_its_guard_reset_and_pause_at() {
        let mut spec = LimitSpec::window(
            "daily",
            Unit::Requests,
            NonZeroU64::new(1000).unwrap(),
            Some(Duration::from_secs(86_400)),
        );
        if let LimitKind::Window {
            reset, pause_at, ..
        } = &mut spec.kind
        {
            *reset = Duration::from_secs(7 * 3600);
            *pause_at = Some(0.8);
        }
        let shared = SharedBucket::from_spec(&spec, Duration::from_millis(50));
        assert_eq!(
            shared,
            SharedBucket::Window {
                admit_up_to: 800,
                period_us: 86_400_000_000,
                phase_us: 7 * 3_600_000_000,
                guard_us: 50_000
            }
        );
        let budget = LimitSpec::window("budget", Unit::Usd, NonZeroU64::new(5).unwrap(), None);
        assert_eq!(
            SharedBucket::from_spec(&budget, Duration::from_millis(50)).script_params(),
            ["w", "5", "0", "0", "0"].map(String::from)
        );
    }

    #[test]
    fn the_namespace_hashes_credentials_and_never_contains_them() {
        let key = |v: &str| vec![("Authorization".to_string(), format!("Bearer {v}"))];
        let a = namespace("https://api.example.com", &key("sk-one"));
        assert!(!a.contains("sk-one") && !a.contains("example"), "{a}");
        assert_eq!(a, namespace("https://api.example.com/", &key("sk-one")));
        assert_ne!(a, namespace("https://api.example.com", &key("sk-two")));
        assert_ne!(a, namespace("https://other.example.com", &key("sk-one")));
    }
}
