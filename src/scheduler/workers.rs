//! `workers.max = "auto"`: how many requests to keep in flight, by Little's law.
//!
//! Owns the pool-size decision only; the runner measures latencies and applies the size.
//! In steady state the requests in flight are the rate they are admitted at times how long
//! each takes (L = λ·W). λ is the binding rate: the slowest of the rolling limits that apply
//! to every job, in jobs per second (a limit's rate over the mean cost of a job in its
//! unit). W is a moving average of observed latencies. The pool is sized a quarter above
//! λ·W (plus one) so latency spikes do not leave the rate unused, and never above the cap.
//! Calendar quotas are left out: they admit their whole window at once, so their long-run
//! rate says nothing about the concurrency needed. Until the limiter first says "not yet",
//! the limits' bursts still have room and the pool is what binds: it stays at the cap, so a
//! run that fits in the burst is not held to the long-run rate. Pure.

use std::time::Duration;

use crate::limiter::{LimitKind, LimitSpec, Scope, Unit};

/// Latency assumed before the first response, in seconds.
const FIRST_GUESS_S: f64 = 1.0;

/// Weight of the newest latency in the moving average.
const ALPHA: f64 = 0.2;

/// Headroom over λ·W.
const HEADROOM: f64 = 1.25;

/// The pool size of `workers.max = "auto"`, from the binding rate and observed latency.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoWorkers {
    cap: usize,
    jobs_per_s: Option<f64>,
    latency_s: Option<f64>,
    /// The limiter has held a job back: the bursts are spent and the rate binds.
    saturated: bool,
}

impl AutoWorkers {
    /// A pool of at most `cap` workers for jobs admitted at `jobs_per_s` (`None`: no rolling
    /// limit binds, so the pool is the cap).
    pub fn new(cap: usize, jobs_per_s: Option<f64>) -> AutoWorkers {
        AutoWorkers {
            cap: cap.max(1),
            jobs_per_s: jobs_per_s.filter(|r| r.is_finite() && *r > 0.0),
            latency_s: None,
            saturated: false,
        }
    }

    /// Adds one observed request latency to the moving average.
    pub fn observe(&mut self, latency: Duration) {
        let l = latency.as_secs_f64();
        self.latency_s = Some(match self.latency_s {
            Some(avg) => avg + ALPHA * (l - avg),
            None => l,
        });
    }

    /// The limiter held a job back: from now on the rate, not the burst, binds.
    pub fn on_limited(&mut self) {
        self.saturated = true;
    }

    /// The pool size now: the cap while the bursts last, then `ceil(1.25 · λ · W) + 1`,
    /// between 1 and the cap.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratebound::scheduler::AutoWorkers;
    /// // 10 jobs/s at 2 s each: 20 in flight, 25 with headroom, plus one.
    /// let mut w = AutoWorkers::new(64, Some(10.0));
    /// w.observe(Duration::from_secs(2));
    /// assert_eq!(w.target(), 64, "the burst has room: the cap");
    /// w.on_limited();
    /// assert_eq!(w.target(), 26);
    /// assert_eq!(AutoWorkers::new(64, None).target(), 64, "no rate binds: the cap");
    /// ```
    pub fn target(&self) -> usize {
        let Some(rate) = self.jobs_per_s.filter(|_| self.saturated) else {
            return self.cap;
        };
        let w = self.latency_s.unwrap_or(FIRST_GUESS_S);
        let l = (HEADROOM * rate * w).ceil() + 1.0;
        if l >= self.cap as f64 {
            self.cap
        } else {
            (l as usize).clamp(1, self.cap)
        }
    }
}

/// The binding rate of `limits` in jobs per second: the lowest `rate / mean cost` over the
/// rolling limits that apply to every job. `mean_cost` gives a job's mean cost in a unit;
/// a unit no job spends is not binding. `None` when no rolling limit binds.
pub fn binding_jobs_per_s(limits: &[LimitSpec], mean_cost: impl Fn(&Unit) -> f64) -> Option<f64> {
    limits
        .iter()
        .filter(|l| l.scope == Scope::All && matches!(l.kind, LimitKind::Rolling { .. }))
        .filter_map(|l| {
            let cost = mean_cost(&l.unit);
            (cost > 0.0).then(|| l.rate_per_s() / cost)
        })
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    fn rolling(name: &str, unit: Unit, rate: u64) -> LimitSpec {
        LimitSpec::rolling(
            name,
            unit,
            NonZeroU64::new(rate).expect("non-zero"),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn the_slowest_rolling_limit_over_mean_cost_binds() {
        let limits = [
            rolling("rpm", Unit::Requests, 600),
            rolling("tpm", Unit::Tokens, 60_000),
        ];
        // 10 requests/s; 1,000 tokens/s at 400 tokens a job = 2.5 jobs/s.
        let rate = binding_jobs_per_s(&limits, |u| match u {
            Unit::Tokens => 400.0,
            _ => 1.0,
        });
        assert_eq!(rate, Some(2.5));
        assert_eq!(binding_jobs_per_s(&limits, |_| 0.0), None);
    }

    #[test]
    fn the_pool_follows_latency_up_to_the_cap() {
        let mut w = AutoWorkers::new(50, Some(10.0));
        assert_eq!(w.target(), 50, "the bursts have room");
        w.on_limited();
        assert_eq!(w.target(), 14, "1 s assumed before any response");
        w.observe(Duration::from_millis(100));
        assert_eq!(
            w.target(),
            3,
            "10/s at 100 ms: 1 in flight, 2 with headroom, +1"
        );
        for _ in 0..50 {
            w.observe(Duration::from_secs(10));
        }
        assert_eq!(w.target(), 50, "capped");
    }
}
