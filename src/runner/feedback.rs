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
//!
//! X and GitHub count fixed windows and report their end as the reset: nothing comes back
//! before it, which a rolling bucket cannot express (it would trickle requests into a spent
//! window, each one a 429). Their limits are learned as fixed windows whose boundaries
//! follow the reported resets. X's windows are aligned to UTC; GitHub's start with the
//! first request after the previous one expired, which following each reset also covers:
//! a window the limiter opens at the old reset is opened by our own next request.
//!
//! A provider that sends no headers at all, only bare 429s (or 503s), gets a rate search
//! ([`search`], whose doc explains the design). Learned limits and the searched one are
//! saved with the limiter state under stable names (`learned-requests`, `learned-tokens`,
//! `searched-requests`) and learned again by [`Feedback::restore`], so a restart resumes at
//! them. A session with no recent saved state sends one request first and lets its
//! headers size the first wave ([`Feedback::workers_cap`]).

use std::num::NonZeroU64;
use std::time::Duration;

use crate::clock::{Nanos, nanos};
use crate::headers::{Dialect, Observation, Observations, Resource};
use crate::limiter::{BucketState, BucketUsage, Costs, LimitKind, LimitSpec, Limiter, Scope, Unit};

mod search;
use search::Search;
pub use search::{Found, Phase};

/// One limit learned from headers.
#[derive(Clone, Debug)]
struct Learned {
    unit: Unit,
    index: usize,
    limit: u64,
    window: Duration,
    /// Counted in fixed windows ending at each reset, not refilled continuously.
    fixed: bool,
}

/// What one response says of one provider limit, corrected for what it has not seen.
#[derive(Clone, Copy, Debug)]
struct Seen {
    limit: u64,
    window: Duration,
    remaining: u64,
    /// Where the provider's current window ends, for dialects whose reset is not the time
    /// to refill continuously.
    next_start: Option<Nanos>,
}

/// What a response without rate-limit headers tells the rate search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    /// Accepted (2xx).
    Accepted,
    /// Refused for the rate: a 429 (or a status declared a rate limit) with no headers.
    Refused,
    /// Shed under load: a 503 with no `Retry-After`, retried as a failure but also a sign
    /// to slow down.
    SlowDown,
}

/// What the headers (or their absence) have taught so far.
#[derive(Clone, Debug, Default)]
pub struct Feedback {
    learned: Vec<Learned>,
    search: Option<Search>,
    /// What an earlier session's search found, and its bucket (restored), to resume from
    /// instead of searching again.
    resumed: Option<(Found, usize)>,
    /// The first wave waits for one response (see [`Feedback::workers_cap`]).
    look_first: bool,
    /// A response has come back.
    looked: bool,
    /// The most requests one job costs, so the searched limit always admits it (`None`:
    /// [`search::MIN_BURST`]).
    job_requests: Option<u64>,
}

const SECOND: Nanos = 1_000_000_000;

impl Feedback {
    /// Feedback that sends one request first and lets its headers (or their absence) size
    /// the first wave: for a session that knows nothing of the provider's current state.
    pub fn looking_first() -> Feedback {
        Feedback {
            look_first: true,
            ..Feedback::default()
        }
    }

    /// How many workers may send now: one until the first response is in when the session
    /// looks first (the first wave is one request), the search's slow-start window while it
    /// ramps, else `workers`.
    pub fn workers_cap(&self, workers: usize) -> usize {
        if self.look_first && !self.looked {
            return 1;
        }
        let ramp = self.search.as_ref().and_then(Search::in_flight_cap);
        ramp.map_or(workers, |cap| cap.clamp(1, workers))
    }

    /// Whether the rate is being searched for (no headers), and the rate now allowed.
    pub fn searching(&self) -> Option<f64> {
        let resumed = self.resumed.map(|(found, _)| found.rate_per_s);
        (self.search.as_ref().map(Search::rate).or(resumed)).filter(|r| *r < search::UNBOUNDED)
    }

    /// A response without rate-limit headers, of a request sent at `sent`, seen at `now`. When the config states no request limit, the rate ramps up from the first
    /// round trip until the first refusal; otherwise the configured limits pace dispatch
    /// and the search only watches until then. Returns whether a refusal was a new signal.
    pub fn on_bare(&mut self, limiter: &mut Limiter, now: Nanos, sent: Nanos, bare: Bare) -> bool {
        let search = self.search.get_or_insert_with(|| {
            let latency = Duration::from_nanos(now.saturating_sub(sent));
            let min_burst = self.job_requests.unwrap_or(search::MIN_BURST);
            match self.resumed {
                Some((found, index)) => {
                    Search::on_bucket(index, limiter, now, latency, Some(found), min_burst)
                }
                None => {
                    let watch = Found {
                        rate_per_s: search::UNBOUNDED,
                        burst: None,
                    };
                    let ramp = !states_request_limit(limiter);
                    Search::start(limiter, now, latency, (!ramp).then_some(watch), min_burst)
                }
            }
        });
        match bare {
            Bare::Accepted => {
                search.accepted(limiter, now, sent);
                false
            }
            Bare::Refused | Bare::SlowDown => search.refused(limiter, now, sent),
        }
    }

    /// Feedback that resumes what an earlier session learned: every learned limit saved in
    /// `states` is learned again in `limiter` (call [`Limiter::restore`] after this, to
    /// restore how full each one was), and the search resumes at the rate it found. When
    /// `recent` is false (the saved state is too old to say how full the provider's
    /// buckets are now), the first wave looks first.
    pub fn restore(limiter: &mut Limiter, states: &[BucketState], recent: bool) -> Feedback {
        let mut feedback = Feedback {
            look_first: !recent,
            ..Feedback::default()
        };
        for state in states {
            let Some(saved) = state.learned.as_ref() else {
                continue;
            };
            let Some(spec) = saved.to_spec(&state.name) else {
                continue;
            };
            let index = limiter.learn(spec.clone());
            let per = Duration::from_millis(saved.per_ms.max(1));
            if state.name == search::NAME {
                let found = Found {
                    rate_per_s: saved.rate as f64 / per.as_secs_f64(),
                    burst: saved.burst.map(|b| b as f64 + 1.0),
                };
                feedback.resumed = Some((found, index));
            } else {
                feedback.learned.push(Learned {
                    unit: spec.unit,
                    index,
                    limit: saved.rate,
                    window: per,
                    fixed: saved.window,
                });
            }
        }
        feedback
    }

    /// Corrects the searched limit in `states` (as [`Limiter::save`] wrote them at `now`)
    /// to the rate that held, so that a restart resumes there and not in a probe.
    pub fn save(&self, states: &mut [BucketState], now: Nanos) {
        let Some(search) = &self.search else {
            return;
        };
        let held = search.held(now);
        for state in states.iter_mut().filter(|s| s.name == search::NAME) {
            if let Some(learned) = &mut state.learned {
                let per_s = learned.per_ms as f64 / 1000.0;
                learned.rate = ((held * per_s).round() as u64).clamp(1, learned.rate.max(1));
            }
        }
    }

    /// `limits` as status shows them: without the searched limit while it only watches (a
    /// limit stated in the config paces dispatch and nothing was refused yet).
    pub fn shown(&self, mut limits: Vec<BucketUsage>) -> Vec<BucketUsage> {
        if self.searching().is_none() {
            limits.retain(|l| l.name != search::NAME);
        }
        limits
    }

    /// Says that no job costs more than `requests` requests (the most steps of any kind),
    /// so the searched limit's burst may be as small as the provider's.
    pub fn with_job_requests(mut self, requests: u64) -> Feedback {
        self.job_requests = Some(requests.max(1));
        self
    }

    /// A response came back (any outcome): the first wave may go.
    pub fn on_response(&mut self) {
        self.looked = true;
    }

    /// How long a refused request waits before it is sent again (`draw` in `[0, 1)`): a
    /// jittered interval at the searched rate; only the refused item waits.
    pub fn retry_delay(&self, draw: f64) -> Duration {
        self.search
            .as_ref()
            .map_or(Duration::from_secs(1), |s| s.retry_delay(draw))
    }
}

impl Feedback {
    /// Applies one response's observations to `limiter` at `now`. `unseen` is what we sent
    /// that the provider may not have counted when it answered (everything dispatched
    /// since this request's wave): it is taken off what the provider says remains, so a
    /// stale response, overtaken by later ones, can never make more available than there is.
    pub fn apply(
        &mut self,
        observed: &Observations,
        limiter: &mut Limiter,
        now: Nanos,
        unseen: &Costs,
    ) {
        let continuous = matches!(observed.dialect, Some(Dialect::OpenAi | Dialect::Anthropic));
        for obs in &observed.limits {
            let Some(unit) = unit_of(&obs.resource) else {
                continue;
            };
            let Some(remaining) = obs.remaining else {
                continue;
            };
            let unseen = unseen.get(&unit);
            self.resync_configured(limiter, &unit, obs, remaining, unseen, now);
            let remaining = remaining.saturating_sub(unseen);
            if let (Some(limit), Some(window)) = (obs.limit, self.window_of(&unit, obs, continuous))
            {
                // X and GitHub document fixed windows whose reset is their end: nothing
                // refills before it. Other dialects' resets may be the time until a
                // continuously refilling bucket is full (Zendesk's per-minute limit), so
                // they are learned as rolling limits, resynced by every response.
                let next_start = fixed_windows(observed.dialect)
                    .then_some(obs.reset)
                    .flatten()
                    .filter(|r| !r.is_zero())
                    .map(|r| now.saturating_add(nanos(r) + boundary_margin(window)));
                // The window reported ends at `next_start`: it is at least that long.
                let window = next_start.map_or(window, |at| {
                    window.max(Duration::from_nanos(at.saturating_sub(now)))
                });
                let seen = Seen {
                    limit,
                    window,
                    remaining,
                    next_start,
                };
                self.learn(limiter, unit, seen, now);
            }
        }
    }

    /// Resyncs configured, unscoped limits of `unit` whose capacity is what the provider
    /// reports (or that the provider does not size). `remaining` is the provider's count,
    /// `unseen` what we sent that it may not have counted yet.
    ///
    /// A limit with `learn = true` follows the provider both ways, so it takes the safe
    /// bound, `remaining - unseen`: an over-count (a wave's requests the provider had
    /// counted after all) lasts until the next response. A configured limit only ever
    /// loses availability to a header, so an over-count would stay for the rest of the run
    /// (16 workers of 516 tokens held 7,740 tokens back, 7.7 s at 60,000 per minute): it
    /// takes only what the header proves is used. Its own count already holds everything
    /// we sent, counted by the provider or not.
    fn resync_configured(
        &self,
        limiter: &mut Limiter,
        unit: &Unit,
        obs: &Observation,
        remaining: u64,
        unseen: u64,
        now: Nanos,
    ) {
        let specs: Vec<(String, bool)> = limiter
            .specs()
            .filter(|s| s.unit == *unit && s.scope == Scope::All)
            .filter(|s| !self.learned.iter().any(|l| limiter_name(l) == s.name))
            .filter(|s| obs.limit.is_none_or(|limit| limit == s.initial()))
            .map(|s| (s.name.clone(), s.learn))
            .collect();
        for (name, learn) in specs {
            let left = if learn {
                remaining.saturating_sub(unseen)
            } else {
                remaining
            };
            limiter.observe(&name, left, now);
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

    fn learn(&mut self, limiter: &mut Limiter, unit: Unit, seen: Seen, now: Nanos) {
        let Seen {
            limit,
            window,
            remaining,
            next_start,
        } = seen;
        let Some(rate) = NonZeroU64::new(limit) else {
            return;
        };
        // Round the window up to whole milliseconds: header resets are coarse. A window
        // already whole stays as it is, so a learned window does not creep with each response.
        let window = Duration::from_millis(
            u64::try_from(window.as_nanos().div_ceil(1_000_000))
                .unwrap_or(u64::MAX)
                .max(1),
        );
        match self.learned.iter_mut().find(|l| l.unit == unit) {
            Some(l) if l.fixed => {
                l.limit = limit;
                l.window = window;
                match next_start {
                    Some(at) => limiter.observe_window(l.index, rate, window, at, remaining, now),
                    // No reset this time: the count alone is still news.
                    None => limiter.observe_at(l.index, remaining, now),
                }
            }
            Some(l) => {
                if l.limit != limit || l.window != window {
                    limiter.relearn(l.index, rate, window, None, now);
                    l.limit = limit;
                    l.window = window;
                }
                limiter.observe_at(l.index, remaining, now);
            }
            None => {
                let configured_covers = limiter.specs().any(|s| {
                    let rolling = matches!(s.kind, LimitKind::Rolling { .. });
                    let periodic =
                        rolling || matches!(s.kind, LimitKind::Window { per: Some(_), .. });
                    s.unit == unit
                        && s.scope == Scope::All
                        && periodic
                        && (s.initial() == limit
                            // The user sized it as the provider does: it is resynced by
                            // every response already, and its period is the user's word
                            // (a dialect's documented window may be scaled in a test).
                            || (rolling
                                && s.initial() <= limit
                                // Within 1%: header resets are rounded, so equal rates
                                // differ slightly.
                                && s.rate_per_s() <= 1.01 * limit as f64 / window.as_secs_f64()))
                });
                if configured_covers {
                    return;
                }
                let name = format!("learned-{unit}");
                let mut spec = match next_start {
                    Some(_) => LimitSpec::window(&name, unit.clone(), rate, Some(window)),
                    None => LimitSpec::rolling(&name, unit.clone(), rate, window),
                };
                // It follows the provider both ways; `apply` counts what we sent since the
                // response's wave as used, since the provider may not have seen it yet.
                spec.learn = true;
                let index = limiter.learn(spec);
                match next_start {
                    Some(at) => limiter.observe_window(index, rate, window, at, remaining, now),
                    None => limiter.observe_at(index, remaining, now),
                }
                tracing::info!(%unit, limit, window_s = window.as_secs_f64(), "learned a limit from the provider's headers");
                self.learned.push(Learned {
                    unit,
                    index,
                    limit,
                    window,
                    fixed: next_start.is_some(),
                });
            }
        }
    }
}

/// Whether the config states a limit on the requests of every job.
fn states_request_limit(limiter: &Limiter) -> bool {
    let configured = limiter.route_all();
    limiter
        .specs()
        .enumerate()
        .any(|(i, s)| configured.contains(i) && s.unit == Unit::Requests && s.scope == Scope::All)
}

/// Whether `dialect` documents fixed windows whose reset is the window's end: X
/// (<https://docs.x.com/x-api/fundamentals/rate-limits>) and GitHub, whose
/// `x-ratelimit-reset` is "the time at which the current rate limit window resets"
/// (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>).
fn fixed_windows(dialect: Option<Dialect>) -> bool {
    matches!(dialect, Some(Dialect::X | Dialect::GitHub))
}

/// How long after a fixed window's reported end the next one is taken to open: a
/// hundredth of the window, at most a second. The reset is read on the provider's clock,
/// in whole seconds; a request that arrives there a hair before it is counted in the spent
/// window and refused, and a whole wave sent at the reset would be refused together.
fn boundary_margin(window: Duration) -> Nanos {
    nanos(window / 100).min(SECOND)
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

    /// GitHub's core headers as a response at `now_s` seconds (limiter time = epoch
    /// seconds here) reports them: `used` of `limit`, the window ending at `reset_s`.
    fn github(now_s: u64, limit: u64, used: u64, reset_s: u64) -> Observations {
        let headers: Vec<(String, String)> = [
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", (limit - used).to_string()),
            ("x-ratelimit-used", used.to_string()),
            ("x-ratelimit-reset", reset_s.to_string()),
            ("x-ratelimit-resource", "core".to_string()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        let wall = UNIX_EPOCH + Duration::from_secs(now_s);
        crate::headers::observe(&headers, wall, Dialect::Auto)
    }

    /// When `limiter` would next admit one request, asked at `now`.
    fn next_admission(limiter: &mut Limiter, now: Nanos) -> Nanos {
        let route = limiter.route_all();
        match limiter.reserve(&route, &Costs::request(0), now) {
            Ok(_) => now,
            Err(crate::limiter::Denied::NotUntil(n)) => n.at,
            Err(never) => panic!("{never:?}"),
        }
    }

    #[test]
    fn githubs_hourly_limit_is_learned_as_a_window_nothing_trickles_into() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        let none = Costs::default();
        // The first request of the hour opened the window; it ends at 3,600 s.
        feedback.apply(&github(0, 5000, 1, 3600), &mut limiter, 0, &none);
        let usage = limiter.usage(0);
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!((usage[0].limit, usage[0].used), (5000, 1));
        // The hour, and a second's margin for the provider's clock (see boundary_margin).
        assert!((usage[0].window_s - 3601.0).abs() < 0.01, "{usage:?}");
        // Half an hour in, the hour's 5,000 are spent.
        let half = 1800 * SECOND;
        feedback.apply(&github(1800, 5000, 5000, 3600), &mut limiter, half, &none);
        // A bucket refilling 5,000 per hour would admit one every 0.72 s from here, each
        // a 429; the window admits nothing before GitHub's reset.
        for asked in [half, half + SECOND, 3000 * SECOND, 3599 * SECOND] {
            let at = next_admission(&mut limiter, asked);
            assert!(at >= 3600 * SECOND, "asked at {asked}: admitted at {at}");
        }
        let at = next_admission(&mut limiter, 3601 * SECOND);
        assert_eq!(
            at,
            3601 * SECOND,
            "the next window opens at the reset, plus 1 s"
        );
    }

    #[test]
    fn githubs_next_window_follows_the_reset_it_reports_not_the_hour_before() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        let none = Costs::default();
        feedback.apply(&github(0, 5000, 5000, 3600), &mut limiter, 0, &none);
        // Idle until 5,000 s: GitHub's next window starts with that request, not at
        // 3,600 s, and ends at 8,600 s. Its 5,000 go by 6,000 s.
        let t = 5000 * SECOND;
        feedback.apply(&github(5000, 5000, 1, 8600), &mut limiter, t, &none);
        let t = 6000 * SECOND;
        feedback.apply(&github(6000, 5000, 5000, 8600), &mut limiter, t, &none);
        // Windows counted on from the first reset would open one at 7,200 s.
        let at = next_admission(&mut limiter, 7200 * SECOND);
        assert!(at >= 8600 * SECOND, "admitted at {at}, before the reset");
        assert!(at <= 8601 * SECOND, "{at}");
    }

    #[test]
    fn github_counts_what_it_has_not_seen_yet_as_used() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        // 10 per window; 4 used, but 6 more were sent since this response's wave.
        let unseen = Costs::request(0).with(Unit::Requests, 6);
        feedback.apply(&github(0, 10, 4, 60), &mut limiter, 0, &unseen);
        let at = next_admission(&mut limiter, 0);
        assert!(at >= 60 * SECOND, "the window is spent: admitted at {at}");
    }

    /// OpenAI's token headers: `remaining` of 60,000 per minute.
    fn openai_tokens(remaining: u64) -> Observations {
        let headers = [
            ("x-ratelimit-limit-tokens", "60000".to_string()),
            ("x-ratelimit-remaining-tokens", remaining.to_string()),
        ]
        .map(|(name, value)| (name.to_string(), value));
        crate::headers::observe(&headers, UNIX_EPOCH, Dialect::Auto)
    }

    #[test]
    fn a_waves_own_tokens_are_not_counted_twice_on_a_configured_limit() {
        // The user configured the provider's 60,000 tokens per minute; a wave of 4 requests
        // of 500 tokens went out at once and the provider counted them in some order.
        let tpm = LimitSpec::rolling(
            "tpm",
            Unit::Tokens,
            NonZeroU64::new(60_000).unwrap(),
            Duration::from_secs(60),
        );
        let mut limiter = Limiter::new(&[tpm]);
        let route = limiter.route_all();
        for _ in 0..4 {
            let wave = Costs::request(0).with(Unit::Tokens, 500);
            assert!(limiter.reserve(&route, &wave, 0).is_ok());
        }
        let mut feedback = Feedback::default();
        // Each response may not have seen the other 3: 1,500 tokens unseen. The last one
        // the provider counted says all 2,000 are used.
        let unseen = Costs::default().with(Unit::Tokens, 1500);
        for remaining in [59_500, 58_500, 59_000, 58_000] {
            feedback.apply(&openai_tokens(remaining), &mut limiter, 0, &unseen);
        }
        assert_eq!(
            limiter.usage(0)[0].used,
            2000,
            "3,500 would hold 1,500 back for good"
        );
        // Tokens someone else spent on the key are still taken off.
        feedback.apply(&openai_tokens(50_000), &mut limiter, 0, &unseen);
        assert_eq!(limiter.usage(0)[0].used, 10_000);
    }

    #[test]
    fn a_limit_that_learns_takes_the_unseen_tokens_as_used() {
        // With `learn = true` the limit follows the provider both ways: a stale header must
        // not make more available than there is, so unseen tokens count as used.
        let mut tpm = LimitSpec::rolling(
            "tpm",
            Unit::Tokens,
            NonZeroU64::new(60_000).unwrap(),
            Duration::from_secs(60),
        );
        tpm.learn = true;
        let mut limiter = Limiter::new(&[tpm]);
        let mut feedback = Feedback::default();
        let unseen = Costs::default().with(Unit::Tokens, 1500);
        feedback.apply(&openai_tokens(59_500), &mut limiter, 0, &unseen);
        assert_eq!(limiter.usage(0)[0].used, 2000);
    }

    #[test]
    fn with_no_configured_limit_the_providers_bucket_is_learned() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        // 600 per minute, continuous: 1 used, full again in 100 ms.
        let o = openai(600, 599, "100ms");
        feedback.apply(&o, &mut limiter, 0, &Costs::default());
        let usage = limiter.usage(0);
        assert_eq!(usage.len(), 1, "{usage:?}");
        assert_eq!(usage[0].limit, 600);
        assert!((usage[0].window_s - 60.0).abs() < 0.01, "{usage:?}");
        assert_eq!(usage[0].used, 1);
    }

    #[test]
    fn a_learned_window_does_not_creep_with_each_response() {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        let o = openai(600, 599, "100ms");
        for _ in 0..100 {
            feedback.apply(&o, &mut limiter, 0, &Costs::default());
        }
        let usage = limiter.usage(0);
        assert_eq!(usage[0].window_s, 60.0, "{usage:?}");
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
        feedback.apply(&openai(600, 300, "5s"), &mut limiter, 0, &Costs::default());
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
        feedback.apply(&openai(600, 500, "10s"), &mut limiter, 0, &Costs::default());
        let usage = limiter.usage(0);
        assert_eq!(
            usage.len(),
            1,
            "nothing learned: the config already says 600/min"
        );
        assert_eq!(usage[0].used, 100, "resynced to the provider's remaining");
    }
}
