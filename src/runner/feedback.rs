//! Provider feedback: what the rate-limit headers of each response teach the limiter.
//!
//! Owns the mapping from [`Observations`] to limiter buckets. A configured limit whose size
//! matches what the provider reports is resynced to the provider's `remaining` (which can
//! only lower what is available, unless the limit says `learn = true`). A bucket the
//! provider reports that the config does not state, or states more generously (a
//! "3,600 per minute" that is really enforced as 600 per 10 s), is learned: it becomes an
//! extra limit on every job, kept in sync with each response, so a user who knows only the
//! per-minute figure, or no figure at all, still stays under the provider's real limit.
//!
//! Windows are inferred per dialect: OpenAI and Anthropic refill continuously and report
//! the time until the bucket is full, so `window = reset × limit / used`; other dialects
//! use fixed windows and report the time to the window's end, so the longest reset seen is
//! the window (it only grows, so the learned rate only becomes more careful).

use std::num::NonZeroU64;
use std::time::Duration;

use crate::clock::Nanos;
use crate::headers::{Dialect, Observation, Observations, Resource};
use crate::limiter::{LimitKind, LimitSpec, Limiter, Scope, Unit};

/// One limit learned from headers.
#[derive(Clone, Debug)]
struct Learned {
    unit: Unit,
    index: usize,
    limit: u64,
    window: Duration,
}

/// What the headers have taught so far.
#[derive(Clone, Debug, Default)]
pub struct Feedback {
    learned: Vec<Learned>,
}

impl Feedback {
    /// Applies one response's observations to `limiter` at `now`.
    pub fn apply(&mut self, observed: &Observations, limiter: &mut Limiter, now: Nanos) {
        let continuous = matches!(observed.dialect, Some(Dialect::OpenAi | Dialect::Anthropic));
        for obs in &observed.limits {
            let Some(unit) = unit_of(&obs.resource) else {
                continue;
            };
            let Some(remaining) = obs.remaining else {
                continue;
            };
            self.resync_configured(limiter, &unit, obs, remaining, now);
            if let (Some(limit), Some(window)) = (obs.limit, self.window_of(&unit, obs, continuous))
            {
                self.learn(limiter, unit, limit, window, remaining, now);
            }
        }
    }

    /// Resyncs configured, unscoped limits of `unit` whose capacity is what the provider
    /// reports (or that the provider does not size).
    fn resync_configured(
        &self,
        limiter: &mut Limiter,
        unit: &Unit,
        obs: &Observation,
        remaining: u64,
        now: Nanos,
    ) {
        let names: Vec<String> = limiter
            .specs()
            .filter(|s| s.unit == *unit && s.scope == Scope::All)
            .filter(|s| !self.learned.iter().any(|l| limiter_name(l) == s.name))
            .filter(|s| obs.limit.is_none_or(|limit| limit == s.initial()))
            .map(|s| s.name.clone())
            .collect();
        for name in names {
            limiter.observe(&name, remaining, now);
        }
    }

    fn window_of(&self, unit: &Unit, obs: &Observation, continuous: bool) -> Option<Duration> {
        if let Some(window) = obs.window.filter(|w| !w.is_zero()) {
            return Some(window);
        }
        let reset = obs.reset.filter(|r| !r.is_zero())?;
        let (limit, remaining) = (obs.limit?, obs.remaining?);
        let window = if continuous {
            let used = limit.checked_sub(remaining).filter(|u| *u > 0)?;
            reset.mul_f64(limit as f64 / used as f64)
        } else {
            reset
        };
        let known = self
            .learned
            .iter()
            .find(|l| l.unit == *unit)
            .map(|l| l.window);
        Some(known.map_or(window, |k| k.max(window)))
    }

    fn learn(
        &mut self,
        limiter: &mut Limiter,
        unit: Unit,
        limit: u64,
        window: Duration,
        remaining: u64,
        now: Nanos,
    ) {
        let Some(rate) = NonZeroU64::new(limit) else {
            return;
        };
        // Round the window up to whole milliseconds: header resets are coarse.
        let window =
            Duration::from_millis(u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1) + 1);
        match self.learned.iter_mut().find(|l| l.unit == unit) {
            Some(l) => {
                if l.limit != limit || l.window != window {
                    limiter.relearn(l.index, rate, window, now);
                    l.limit = limit;
                    l.window = window;
                }
                limiter.observe_at(l.index, remaining, now);
            }
            None => {
                let configured_covers = limiter.specs().any(|s| {
                    s.unit == unit
                        && s.scope == Scope::All
                        && matches!(s.kind, LimitKind::Rolling { .. })
                        && s.initial() <= limit
                        // Within 1%: header resets are rounded, so equal rates differ slightly.
                        && s.rate_per_s() <= 1.01 * limit as f64 / window.as_secs_f64()
                });
                if configured_covers {
                    return;
                }
                let mut spec =
                    LimitSpec::rolling(&format!("learned-{unit}"), unit.clone(), rate, window);
                spec.learn = true;
                let index = limiter.learn(spec);
                limiter.observe_at(index, remaining, now);
                tracing::info!(%unit, limit, window_s = window.as_secs_f64(), "learned a limit from the provider's headers");
                self.learned.push(Learned {
                    unit,
                    index,
                    limit,
                    window,
                });
            }
        }
    }
}

fn limiter_name(l: &Learned) -> String {
    format!("learned-{}", l.unit)
}

fn unit_of(resource: &Resource) -> Option<Unit> {
    match resource {
        Resource::Requests => Some(Unit::Requests),
        Resource::Tokens => Some(Unit::Tokens),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Costs;
    use std::time::UNIX_EPOCH;

    fn openai(limit: u64, remaining: u64, reset: &str) -> Observations {
        let headers = vec![
            ("x-ratelimit-limit-requests".to_string(), limit.to_string()),
            (
                "x-ratelimit-remaining-requests".to_string(),
                remaining.to_string(),
            ),
            ("x-ratelimit-reset-requests".to_string(), reset.to_string()),
        ];
        crate::headers::observe(&headers, UNIX_EPOCH, Dialect::Auto)
    }

    #[test]
    fn with_no_configured_limit_the_providers_bucket_is_learned() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        // 600 per minute, continuous: 1 used, full again in 100 ms.
        let o = openai(600, 599, "100ms");
        feedback.apply(&o, &mut limiter, 0);
        let usage = limiter.usage(0);
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0].limit, 600);
        assert!((usage[0].window_s - 60.0).abs() < 0.01, "{usage:?}");
        assert_eq!(usage[0].used, 1);
    }

    #[test]
    fn a_stricter_provider_bucket_is_adopted_next_to_the_configured_one() {
        // The user configured 3,600 per minute; the provider enforces 600 per 10 s.
        let rpm = LimitSpec::rolling(
            "rpm",
            Unit::Requests,
            NonZeroU64::new(3600).unwrap(),
            Duration::from_secs(60),
        );
        let mut limiter = Limiter::new(&[rpm]);
        let mut feedback = Feedback::default();
        feedback.apply(&openai(600, 300, "5s"), &mut limiter, 0);
        let route = limiter.route_all();
        let mut admitted = 0;
        while limiter.reserve(&route, &Costs::request(0), 0).is_ok() {
            admitted += 1;
        }
        // Nanosecond rounding of the learned bucket may keep one more unit back, never less.
        assert!(
            (299..=300).contains(&admitted),
            "only what the provider says is left: {admitted}"
        );
    }

    #[test]
    fn a_generous_provider_report_adds_nothing_and_resyncs_a_matching_limit() {
        let rpm = LimitSpec::rolling(
            "rpm",
            Unit::Requests,
            NonZeroU64::new(600).unwrap(),
            Duration::from_secs(60),
        );
        let mut limiter = Limiter::new(&[rpm]);
        let mut feedback = Feedback::default();
        feedback.apply(&openai(600, 500, "10s"), &mut limiter, 0);
        let usage = limiter.usage(0);
        assert_eq!(
            usage.len(),
            1,
            "nothing learned: the config already says 600/min"
        );
        assert_eq!(usage[0].used, 100, "resynced to the provider's remaining");
    }
}
