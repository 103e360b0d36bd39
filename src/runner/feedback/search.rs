//! The rate search: the sending rate for a provider that states no limit, found from what
//! it accepts and refuses.
//!
//! The provider is modelled as what nginx's `limit_req`, Envoy's local rate limit and most
//! API gateways are: a bucket of unknown capacity `C` refilled at an unknown rate `r`,
//! answering a bare 429 (or a 503) when it is empty. Times are send times (a response's
//! arrival less its latency), which stand for the provider's arrival times far better
//! than response times do.
//!
//! **Measuring.** A refusal says the provider's bucket was empty when that request arrived.
//! From such an instant `a` on, whatever it accepted it refilled meanwhile, so for every
//! later instant `t`: `r ≥ (accepted in (a, t] − 1) / (t − a)`, however big the burst was
//! (it was spent by `a`). That lower bound is exact when the provider stayed near empty in
//! between (we kept sending at or above `r`) and only weaker otherwise, so the search keeps
//! the refusals of the last [`WINDOW`] as anchors and takes the best bound over them, as BBR
//! takes the windowed maximum of its delivery-rate samples. It is this accepted rate per
//! second while the provider refuses, never the successes of the last second (which count
//! the burst), that the rate drops to.
//!
//! **Deciding.**
//! - *Ramp*: before the first refusal nothing is known. The rate starts at [`INITIAL`] requests
//!   per round trip and grows by [`RAMP`] per [`STEP`] while it binds, and what is in flight is
//!   capped by a slow-start window ([`INITIAL`], plus one per acceptance), so the first waves are
//!   a few requests, not every worker at once.
//! - *First refused waves*: the bucket is empty, so our own limiter is drained, and the rate
//!   halves what was really sent for each new wave of refusals until a measurement holds.
//!   A measurement is *tight* when the provider refused in between too (it stayed empty):
//!   then it is its rate, even over a short stretch, and a rate far above it drops to it
//!   at once.
//! - *Probing*: every [`STEP`] without a refusal in which the rate was binding, it is raised
//!   by a small gain that doubles with each step that passes (1%, 2%, 4% ... at most
//!   [`MAX_GAIN`], and within [`MAX_GAIN`] of a tight measurement for [`FRESH`] after it),
//!   so a rate far below the provider's climbs in seconds and one near it creeps. A refused probe falls back to the measured rate and the next probe waits a
//!   hold that doubles with each refused probe (up to [`MAX_HOLD`]), so at the true rate
//!   the search refuses rarely: it holds.
//! - *One wave, one signal*: the refusals of requests sent before the search last reacted
//!   were in flight when it did: they say nothing new and change nothing but the anchors.
//! - *Burst*: at each refusal, the most accepted in any stretch ending there beyond what
//!   the measured rate refilled is a lower bound on the provider's bucket; the limiter's
//!   burst follows it, so after an idle pause a run sends what the provider allows at once.
//!
//! Pure: time is an argument, the limiter is the caller's.

use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Nanos;
use crate::limiter::{LimitSpec, Limiter, Unit};

const SECOND: Nanos = 1_000_000_000;

/// How far back refusals anchor measurements and outcomes are kept.
pub const WINDOW: Nanos = 10 * SECOND;
/// The shortest stretch a measurement spans: shorter ones are mostly rounding.
const SPAN: Nanos = SECOND / 2;
/// Acceptances after an anchor that make a stretch shorter than [`SPAN`] a measurement.
const SHORT_ACCEPTED: usize = 5;
/// How long a tight measurement caps the probes.
const FRESH: Nanos = WINDOW;
/// How often the rate may step up.
pub const STEP: Nanos = SECOND / 2;
/// Requests per round trip the ramp starts at, and its first slow-start window (as TCP's
/// initial window of a few segments).
const INITIAL: usize = 4;
/// The ramp's growth per step before the first refusal (×1.5 a second).
pub const RAMP: f64 = 1.225;
/// The first probe's gain after a refusal.
const MIN_GAIN: f64 = 0.01;
/// The largest probe gain.
pub const MAX_GAIN: f64 = 0.25;
/// The longest wait before probing again after refused probes.
pub const MAX_HOLD: Nanos = 8 * SECOND;
/// The slowest rate the search goes down to, in requests per second.
const MIN_RATE: f64 = 0.2;

/// The smallest burst the searched limit allows when the caller does not say (see
/// [`Search::start`]): a job costing more requests than the burst could never be admitted.
pub const MIN_BURST: u64 = 16;

/// A rate so high it never binds: the search watches without pacing.
pub const UNBOUNDED: f64 = 1e6;

/// The name of the searched limit in the limiter, status and the db.
pub const NAME: &str = crate::limiter::SEARCHED;

/// Where a search starts: what an earlier session found (restored from the limiter state).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Found {
    /// The sending rate, in requests per second.
    pub rate_per_s: f64,
    /// The provider's burst as measured (requests), if any.
    pub burst: Option<f64>,
}

/// A measurement of the provider's rate.
#[derive(Clone, Copy, Debug)]
struct Measure {
    /// Accepted per second since an anchor: a lower bound on the provider's rate.
    rate: f64,
    /// The provider refused in the later half of a short stretch too: it stayed empty, so
    /// the bound is its rate, not merely what we sent.
    tight: bool,
}

/// One outcome: when its request was sent, and whether it was accepted.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: Nanos,
    accepted: bool,
}

/// Where the search stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Nothing refused yet: the rate grows by [`RAMP`] a step.
    Ramp,
    /// Searching around the provider's rate.
    Search,
}

/// The rate search's state.
#[derive(Clone, Debug)]
pub struct Search {
    /// The searched bucket's index in the limiter.
    index: usize,
    /// Requests per second now allowed.
    rate: f64,
    phase: Phase,
    /// Outcomes of the last [`WINDOW`], in completion order.
    log: VecDeque<Sample>,
    /// Send times of refusals of the last [`WINDOW`]: the provider was empty then.
    anchors: VecDeque<Nanos>,
    /// Refusals of requests sent before this instant belong to a wave already reacted to.
    reacted_at: Nanos,
    /// When the rate last changed.
    stepped_at: Nanos,
    /// The highest rate held for a whole step without a refusal since the last refusal:
    /// where a refused probe falls back to.
    good: f64,
    /// The rate tightly measured at the last such refusal: probes stay within [`MAX_GAIN`]
    /// of it for [`FRESH`] after.
    known: f64,
    /// When `known` was measured.
    known_at: Nanos,
    /// The next probe's gain.
    gain: f64,
    /// How long after a refusal the first probe waits.
    hold: Nanos,
    /// The rate has stepped up since the last refusal.
    probed: bool,
    /// The provider's burst as measured, in requests.
    burst: Option<f64>,
    /// While ramping, the most requests in flight: [`INITIAL`], plus one for each acceptance
    /// (doubling each round trip, as TCP's slow start), so the first waves are not every
    /// worker at once into a bucket of unknown size.
    window: usize,
    /// The smallest burst allowed: the most requests one job costs.
    min_burst: f64,
}

impl Search {
    /// Starts a search on a new bucket in `limiter` at `now`: ramping from [`INITIAL`] requests per
    /// `latency` if nothing was refused yet, else searching from `found`.
    /// `min_burst` is the most requests one job costs (its steps): the searched limit's
    /// burst never goes below it, so every job can be admitted.
    pub fn start(
        limiter: &mut Limiter,
        now: Nanos,
        latency: Duration,
        found: Option<Found>,
        min_burst: u64,
    ) -> Search {
        let mut spec = LimitSpec::rolling(
            NAME,
            Unit::Requests,
            NonZeroU64::MIN,
            Duration::from_secs(1),
        );
        spec.learn = true;
        let index = limiter.learn(spec);
        Search::on_bucket(index, limiter, now, latency, found, min_burst)
    }

    /// Like [`Search::start`], on the searched bucket at `index`, already in `limiter`.
    pub fn on_bucket(
        index: usize,
        limiter: &mut Limiter,
        now: Nanos,
        latency: Duration,
        found: Option<Found>,
        min_burst: u64,
    ) -> Search {
        let ramp_rate = INITIAL as f64 / latency.as_secs_f64().max(0.001);
        let resumed = found.is_some();
        let search = Search {
            index,
            rate: found.map_or(ramp_rate, |f| f.rate_per_s).max(MIN_RATE),
            phase: if found.is_some() {
                Phase::Search
            } else {
                Phase::Ramp
            },
            log: VecDeque::new(),
            anchors: VecDeque::new(),
            reacted_at: now,
            stepped_at: now,
            good: 0.0,
            known: 0.0,
            known_at: 0,
            gain: MIN_GAIN,
            hold: STEP,
            probed: false,
            burst: found.and_then(|f| f.burst),
            window: INITIAL,
            min_burst: min_burst.max(1) as f64,
        };
        if !resumed || found.is_some_and(|f| f.rate_per_s >= UNBOUNDED) {
            search.apply(limiter, now);
        }
        search
    }

    /// Where the search stands.
    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The most requests in flight now: the slow-start window while ramping, else any.
    pub fn in_flight_cap(&self) -> Option<usize> {
        (self.phase == Phase::Ramp).then_some(self.window)
    }

    /// Requests per second now allowed.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The rate to resume at after a restart: the rate now, but no more than the provider
    /// accepted per second over the last [`WINDOW`] (a probe in progress is not a rate
    /// that held).
    pub fn held(&self, now: Nanos) -> f64 {
        let first = self.log.iter().map(|s| s.sent).min().unwrap_or(now);
        let span = now.saturating_sub(first).max(SECOND);
        let accepted = self.log.iter().filter(|s| s.accepted).count();
        self.rate
            .min(accepted as f64 / (span as f64 / SECOND as f64))
            .max(MIN_RATE)
    }

    /// How long a refused request waits before it is sent again: about two sending
    /// intervals at the searched rate, scaled by `draw` in `[0, 1)` (from 0.5× to 1.5×) so
    /// that refused requests do not come back together.
    pub fn retry_delay(&self, draw: f64) -> Duration {
        let interval = 2.0 / self.rate.max(MIN_RATE);
        Duration::from_secs_f64((interval * (0.5 + draw.clamp(0.0, 1.0))).clamp(0.01, 10.0))
    }

    /// An accepted request sent at `sent`, seen at `now`: the rate steps up if a step has
    /// passed in which it was binding.
    pub fn accepted(&mut self, limiter: &mut Limiter, now: Nanos, sent: Nanos) {
        self.record(now, sent, true);
        self.window = self.window.saturating_add(1);
        // The hold delays only the first probe after a refusal; once one has held, the
        // next follow a step apart, so a rate dropped far below climbs back in seconds.
        let wait = if self.phase == Phase::Ramp || self.probed {
            STEP
        } else {
            self.hold.max(STEP)
        };
        if now.saturating_sub(self.stepped_at) < wait || !self.was_binding(now) {
            return;
        }
        self.good = self.rate;
        match self.phase {
            Phase::Ramp => self.rate *= RAMP,
            Phase::Search => {
                // Never far above what a recent refusal measured the provider to sustain:
                // a big bucket absorbs probes for a while, and the wave that ends it costs
                // refusals. No recent measured refusal: nothing to stay near (a measurement
                // since an old refusal only averages what we sent).
                self.rate *= 1.0 + self.gain;
                if self.known > 0.0 && now.saturating_sub(self.known_at) <= FRESH {
                    self.rate = self.rate.min(self.known * (1.0 + MAX_GAIN));
                }
                self.gain = (self.gain * 2.0).min(MAX_GAIN);
                // Steps up until the gain is the largest without a refusal (the rate is a
                // third above where it was refused): far from the limit, probe freely. A
                // shorter run of good probes says little: the probe that is refused next
                // is a few per cent above, so its hold keeps doubling.
                if self.gain >= MAX_GAIN {
                    self.hold = STEP;
                }
            }
        }
        self.stepped_at = now;
        self.probed = true;
        tracing::debug!(
            rate = self.rate,
            gain = self.gain,
            "searched rate stepped up"
        );
        self.apply(limiter, now);
    }

    /// A refused request (a bare 429, or a 503 taken as "slow down") sent at `sent`, seen at
    /// `now`. Returns whether it was a new signal (not one more refusal of a wave already
    /// reacted to).
    pub fn refused(&mut self, limiter: &mut Limiter, now: Nanos, sent: Nanos) -> bool {
        self.record(now, sent, false);
        // Refusals bunched together anchor the same measurement: keep one.
        if self
            .anchors
            .back()
            .is_none_or(|&a| sent.abs_diff(a) >= SECOND / 20)
        {
            self.anchors.push_back(sent);
        }
        if sent < self.reacted_at {
            return false;
        }
        let measure = self.measured(sent, true);
        let measured = measure.map(|m| m.rate);
        let probing = self.phase == Phase::Search && self.good > 0.0 && self.good < self.rate;
        let fallback = match (measure, probing) {
            // A refused probe: back to the last rate that held, or to what was measured
            // when that is close (the provider's burst absorbs a step a little above its
            // rate, so the rate that held may be a little too high).
            (Some(m), true) if m.rate >= 0.9 * self.good => m.rate.min(self.good),
            (_, true) => measured.unwrap_or(0.0).max(self.good),
            // Refused on and on, well above what was measured: that bound is the
            // provider's rate, so drop to it.
            (Some(m), false) if m.tight && self.rate > 1.1 * m.rate => m.rate,
            // Refused at a rate that held: a hair under the measured rate (sitting exactly
            // on it, jitter is refused now and then), unless that bound is weak (we sent
            // below the provider's rate since every anchor): then a tenth less.
            (Some(m), false) => (0.99 * m.rate).max(0.9 * self.rate),
            // Nothing ever measured (the ramp has just run into the end of the burst): half
            // what was really sent, for each wave of refusals, until a measurement holds.
            // A gentler step would send a wave of workers into the empty bucket for each.
            (None, false) if self.known == 0.0 => self.rate.min(self.sending(sent)) / 2.0,
            // Nothing measured lately: a tenth less.
            (None, false) => 0.9 * self.rate,
        };
        self.rate = fallback.min(self.rate).max(MIN_RATE);
        if let Some(m) = measure.filter(|m| m.tight) {
            self.known = m.rate;
            self.known_at = now;
        }
        // The burst from long stretches only: a short one's rate may be a quarter low,
        // which would credit the burst with what the provider refilled.
        if let Some(m) = self.measured(sent, false) {
            self.learn_burst(sent, m.rate);
        }
        // A refused probe: wait longer before the next one.
        if probing {
            self.hold = (self.hold * 2).min(MAX_HOLD);
        }
        self.phase = Phase::Search;
        self.good = 0.0;
        self.gain = MIN_GAIN;
        self.probed = false;
        self.reacted_at = now;
        self.stepped_at = now;
        self.apply(limiter, now);
        // The provider is empty: so is our bucket, until it refills at the new rate.
        limiter.drain(self.index, now);
        tracing::debug!(rate = self.rate, ?measured, "refused: searched rate");
        true
    }

    fn record(&mut self, now: Nanos, sent: Nanos, accepted: bool) {
        self.log.push_back(Sample { sent, accepted });
        let old = now.saturating_sub(WINDOW);
        while self.log.front().is_some_and(|s| s.sent < old) {
            self.log.pop_front();
        }
        while self.anchors.front().is_some_and(|&a| a < old) {
            self.anchors.pop_front();
        }
    }

    /// The best lower bound on the provider's rate over every anchor at least [`SPAN`]
    /// before `until`: `(accepted in (anchor, until] − 1) / span`. With `short`, stretches
    /// from a fifth of [`SPAN`] count too when they hold [`SHORT_ACCEPTED`] acceptances and
    /// are tight (the bound is then at worst a fifth low), so a wave far above the rate
    /// drops to it at once.
    fn measured(&self, until: Nanos, short: bool) -> Option<Measure> {
        let shortest = if short { SPAN / 5 } else { SPAN };
        self.anchors
            .iter()
            .filter(|&&a| until.saturating_sub(a) >= shortest)
            .filter_map(|&a| {
                let within = || (self.log.iter()).filter(move |s| s.sent > a && s.sent <= until);
                let accepted = within().filter(|s| s.accepted).count();
                // A short stretch refused in its later half too: the provider stayed empty
                // throughout, not only at the ends of a stretch in which we sent below its
                // rate (a long one may well hide that).
                let span = until - a;
                let half = a + span / 2;
                let tight = span <= 2 * SPAN
                    && within().any(|s| !s.accepted && s.sent > half && s.sent < until);
                let rate = (accepted as f64 - 1.0) / (span as f64 / SECOND as f64);
                (span >= SPAN || (tight && accepted >= SHORT_ACCEPTED))
                    .then_some(Measure { rate, tight })
            })
            .fold(None, |best: Option<Measure>, m| match best {
                Some(b) if b.rate >= m.rate => Some(b),
                _ => Some(m),
            })
            .filter(|m| m.rate > 0.0)
    }

    /// Requests sent per second over the second before `until` (by send time), or since
    /// the first request if that is more recent (but over at least a tenth of a second):
    /// what really went out, which the allowed rate may be far above.
    fn sending(&self, until: Nanos) -> f64 {
        let first = self.log.iter().map(|s| s.sent).min().unwrap_or(until);
        let from = until.saturating_sub(SECOND).max(first);
        let sent = (self.log.iter())
            .filter(|s| s.sent >= from && s.sent <= until)
            .count();
        sent as f64 / ((until - from).max(SECOND / 10) as f64 / SECOND as f64)
    }

    /// Whether the rate held dispatch back in the step ending at `now`: most of what it
    /// allowed was sent (else workers or the work list are the bound, and raising the rate
    /// would only let it run away from what is really sent).
    fn was_binding(&self, now: Nanos) -> bool {
        let span = now.saturating_sub(self.stepped_at);
        let sent = self
            .log
            .iter()
            .filter(|s| s.sent >= self.stepped_at)
            .count();
        sent as f64 >= 0.7 * self.rate * span as f64 / SECOND as f64
    }

    /// The provider's burst as seen at the refusal sent at `at`: the most accepted in a
    /// stretch ending there beyond what `rate` refilled in it.
    fn learn_burst(&mut self, at: Nanos, rate: f64) {
        let mut sent: Vec<Nanos> = (self.log.iter())
            .filter(|s| s.accepted && s.sent <= at)
            .map(|s| s.sent)
            .collect();
        sent.sort_unstable();
        let mut best: f64 = 0.0;
        for (k, &from) in sent.iter().rev().enumerate() {
            let refilled = rate * (at - from) as f64 / SECOND as f64;
            best = best.max((k + 1) as f64 - refilled);
        }
        if best >= 1.0 {
            self.burst = Some(self.burst.map_or(best, |b| b.max(best)));
        }
    }

    /// Sets the searched bucket to the rate and burst.
    fn apply(&self, limiter: &mut Limiter, now: Nanos) {
        // Hundredths of a request per second over 100 s, so slow rates stay exact.
        let hundredths =
            NonZeroU64::new((self.rate * 100.0).round() as u64).unwrap_or(NonZeroU64::MIN);
        // The measured burst, less one for the provider's own rounding, else a tenth of a
        // second's worth, so dispatch is paced, not bunched; at least `min_burst`, so a
        // multi-request job always fits.
        // The limiter shrinks every burst by its jitter allowance: a job of `min_burst`
        // must still fit once that is taken off.
        let floor = self.min_burst + (self.rate * limiter.jitter().as_secs_f64()).ceil();
        let burst = self.burst.map_or(self.rate / 10.0, |b| b - 1.0).max(floor);
        let burst = NonZeroU64::new(burst.floor() as u64).unwrap_or(NonZeroU64::MIN);
        limiter.relearn(
            self.index,
            hundredths,
            Duration::from_secs(100),
            Some(burst),
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn the_ramp_grows_while_it_binds_and_a_refusal_ends_it() {
        let mut limiter = Limiter::new(&[]);
        let mut search =
            Search::start(&mut limiter, 0, Duration::from_millis(100), None, MIN_BURST);
        assert!((search.rate() - 40.0).abs() < 1e-9, "four per round trip");
        assert_eq!(search.in_flight_cap(), Some(INITIAL));
        // Every request the rate allows is sent and accepted, for 2 s.
        let mut now = 0;
        while now < 2_000 * MS {
            let gap = (SECOND as f64 / search.rate()) as Nanos;
            now += gap;
            search.accepted(&mut limiter, now + 100 * MS, now);
        }
        assert!(search.rate() > 80.0, "×1.5 a second: {}", search.rate());
        assert!(
            search.in_flight_cap() > Some(INITIAL),
            "one more per acceptance"
        );
        let before = search.rate();
        assert!(search.refused(&mut limiter, now + 100 * MS, now));
        assert_eq!(search.phase(), Phase::Search);
        assert!(search.rate() < before, "{} -> {}", before, search.rate());
        // Refusals of requests sent before the reaction are the same wave.
        let after = search.rate();
        assert!(!search.refused(&mut limiter, now + 101 * MS, now + MS));
        assert_eq!(search.rate(), after);
    }

    #[test]
    fn a_stretch_of_refusals_measures_the_providers_rate_whatever_we_send() {
        let mut limiter = Limiter::new(&[]);
        let found = Found {
            rate_per_s: 100.0,
            burst: None,
        };
        let mut search = Search::start(
            &mut limiter,
            0,
            Duration::from_millis(10),
            Some(found),
            MIN_BURST,
        );
        // We send 100/s; the provider accepts every other one (50/s) and refuses the rest.
        for k in 0..200u64 {
            let sent = k * 10 * MS;
            let now = sent + 10 * MS;
            if k % 2 == 0 {
                search.accepted(&mut limiter, now, sent);
            } else {
                search.refused(&mut limiter, now, sent);
            }
        }
        let measured = search.measured(199 * 10 * MS, false).unwrap().rate;
        assert!((48.0..=50.0).contains(&measured), "{measured}");
        assert!(search.rate() < 55.0, "{}", search.rate());
    }
}
