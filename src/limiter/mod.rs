//! The limiter: every configured limit as a bucket, and atomic admission across them.
//!
//! Owns the buckets and the decision "may this job start now, and if not, when". It does no
//! I/O and never sleeps: [`Limiter::reserve`] takes `now` and either admits the job across
//! every bucket in scope at once or returns [`NotUntil`], the exact instant at which all of
//! them would fit. [`Limiter::settle`] corrects an estimate to actual usage and
//! [`Limiter::cancel`] refunds a request that was never sent.
//!
//! Invariants: admission is all-or-nothing (no bucket is touched unless every bucket fits);
//! nothing admitted ever exceeds a bucket's rate; state can be saved as wall-clock instants
//! and restored after a restart, so a restart does not grant a fresh burst.

pub mod gcra;
pub mod reservation;

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Nanos};
pub use gcra::Gcra;
pub use reservation::Reservation;

/// What a limit counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// One per HTTP request sent.
    Requests,
    /// Model tokens (estimated before sending, settled to the response's usage).
    Tokens,
    /// Any other unit a job kind declares a cost in.
    Custom(Arc<str>),
}

impl Unit {
    /// Parses a unit name; anything but `requests` and `tokens` is a custom unit.
    pub fn from_name(name: &str) -> Unit {
        match name {
            "requests" => Unit::Requests,
            "tokens" => Unit::Tokens,
            other => Unit::Custom(Arc::from(other)),
        }
    }

    /// The unit's name as written in the config.
    pub fn name(&self) -> &str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
            Unit::Custom(name) => name,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The cost of one job: an amount per unit. Units not listed cost nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs(Vec<(Unit, u64)>);

impl Costs {
    /// The cost of one plain request carrying an estimated `tokens`.
    pub fn request(tokens: u64) -> Costs {
        Costs(vec![(Unit::Requests, 1), (Unit::Tokens, tokens)])
    }

    /// Adds `amount` of `unit` to the cost.
    pub fn add(&mut self, unit: Unit, amount: u64) {
        match self.0.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, have)) => *have += amount,
            None => self.0.push((unit, amount)),
        }
    }

    /// The amount of `unit` in this cost (0 if absent).
    pub fn get(&self, unit: &Unit) -> u64 {
        self.0
            .iter()
            .find(|(u, _)| u == unit)
            .map_or(0, |(_, amount)| *amount)
    }

    /// The same costs with `unit` replaced by `amount`.
    pub fn with(mut self, unit: Unit, amount: u64) -> Costs {
        match self.0.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, have)) => *have = amount,
            None => self.0.push((unit, amount)),
        }
        self
    }
}

/// A configured rolling limit: `rate` units of `unit` per `per`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// The name the user gave it (`rpm`, `tpm`, ...), shown in status and errors.
    pub name: String,
    /// What it counts.
    pub unit: Unit,
    /// Units per period; non-zero by construction.
    pub rate: NonZeroU64,
    /// The period the rate refers to.
    pub per: Duration,
    /// The most units admitted at once (defaults to `rate`: a full bucket).
    pub burst: Option<NonZeroU64>,
}

/// "Not before this instant": the reservation did not fit now but will at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUntil {
    /// The earliest instant at which every bucket fits the job.
    pub at: Nanos,
}

/// A job that no amount of waiting will admit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "a job costing {cost} {unit} can never fit limit `{limit}`, which holds at most {max} {unit}"
)]
pub struct NeverFits {
    /// The limit's name.
    pub limit: String,
    /// The unit of that limit.
    pub unit: Unit,
    /// What the job costs in that unit.
    pub cost: u64,
    /// The most that limit admits at once.
    pub max: u64,
}

/// Why a reservation was not admitted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Wait until the instant given, then try again.
    NotUntil(NotUntil),
    /// Never: the cost exceeds a bucket's burst.
    Never(NeverFits),
}

/// One bucket's usage for status output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// The limit's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Units in use in the current window.
    pub used: u64,
    /// Units the window holds.
    pub limit: u64,
    /// The window's length in seconds.
    pub window_s: f64,
}

/// A bucket's persisted state: the wall-clock instant at which it is full again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    /// The limit's name.
    pub name: String,
    /// Unix time in milliseconds at which the bucket is full again.
    pub full_at_unix_ms: u64,
}

struct Bucket {
    spec: LimitSpec,
    gcra: Gcra,
}

/// Every configured limit, admitting jobs atomically across all of them.
pub struct Limiter {
    buckets: Vec<Bucket>,
}

impl Limiter {
    /// A limiter with one full bucket per spec.
    pub fn new(specs: &[LimitSpec]) -> Limiter {
        let buckets = specs
            .iter()
            .map(|spec| Bucket {
                gcra: Gcra::new(spec.rate, spec.per, spec.burst),
                spec: spec.clone(),
            })
            .collect();
        Limiter { buckets }
    }

    /// Shrinks every bucket's burst by the delay variation `jitter` (see
    /// [`Gcra::with_jitter`]), so that requests bunched up on their way to the provider
    /// still fit its buckets.
    pub fn with_jitter(mut self, jitter: Duration) -> Limiter {
        for b in &mut self.buckets {
            b.gcra = b.gcra.clone().with_jitter(jitter);
        }
        self
    }

    /// Checks that `costs` could ever be admitted.
    pub fn check_fits(&self, costs: &Costs) -> Result<(), NeverFits> {
        for b in &self.buckets {
            let cost = costs.get(&b.spec.unit);
            if cost > b.gcra.max_cost() {
                return Err(NeverFits {
                    limit: b.spec.name.clone(),
                    unit: b.spec.unit.clone(),
                    cost,
                    max: b.gcra.max_cost(),
                });
            }
        }
        Ok(())
    }

    /// Admits `costs` at `now` across every bucket, or says when it would fit.
    ///
    /// All-or-nothing: when any bucket is short, no bucket is charged.
    pub fn reserve(&mut self, costs: &Costs, now: Nanos) -> Result<Reservation, Denied> {
        let mut at = now;
        for b in &self.buckets {
            let cost = costs.get(&b.spec.unit);
            match b.gcra.earliest(cost, now) {
                Some(t) => at = at.max(t),
                None => {
                    return Err(Denied::Never(NeverFits {
                        limit: b.spec.name.clone(),
                        unit: b.spec.unit.clone(),
                        cost,
                        max: b.gcra.max_cost(),
                    }));
                }
            }
        }
        if at > now {
            return Err(Denied::NotUntil(NotUntil { at }));
        }
        for b in &mut self.buckets {
            b.gcra.take(costs.get(&b.spec.unit), now);
        }
        Ok(Reservation {
            costs: costs.clone(),
        })
    }

    /// Corrects a reservation to what the job really used: refunds an over-estimate, charges
    /// an under-estimate.
    pub fn settle(&mut self, reservation: Reservation, actual: &Costs, now: Nanos) {
        for b in &mut self.buckets {
            let reserved = reservation.costs.get(&b.spec.unit);
            let used = actual.get(&b.spec.unit);
            if used < reserved {
                b.gcra.refund(reserved - used, now);
            } else if used > reserved {
                b.gcra.charge(used - reserved, now);
            }
        }
    }

    /// Refunds a reservation whose request was never sent.
    pub fn cancel(&mut self, reservation: Reservation, now: Nanos) {
        self.settle(reservation, &Costs::default(), now);
    }

    /// Each bucket's usage at `now`, in config order.
    pub fn usage(&self, now: Nanos) -> Vec<BucketUsage> {
        self.buckets
            .iter()
            .map(|b| BucketUsage {
                name: b.spec.name.clone(),
                unit: b.spec.unit.name().to_string(),
                used: b.gcra.used(now).min(b.gcra.capacity()),
                limit: b.gcra.capacity(),
                window_s: b.gcra.period().as_secs_f64(),
            })
            .collect()
    }

    /// The buckets' state as wall-clock instants, to be restored after a restart.
    pub fn save(&self, clock: &impl Clock) -> Vec<BucketState> {
        self.buckets
            .iter()
            .map(|b| BucketState {
                name: b.spec.name.clone(),
                full_at_unix_ms: unix_ms(clock.wall_at(b.gcra.full_at())),
            })
            .collect()
    }

    /// Empties every bucket at `now`: the safe start after a session that died without
    /// saving its final state.
    pub fn assume_empty(&mut self, now: Nanos) {
        for b in &mut self.buckets {
            b.gcra.empty(now);
        }
    }

    /// Restores saved state for buckets of the same name; others stay full.
    pub fn restore(&mut self, states: &[BucketState], clock: &impl Clock) {
        for b in &mut self.buckets {
            if let Some(s) = states.iter().find(|s| s.name == b.spec.name) {
                let wall = UNIX_EPOCH + Duration::from_millis(s.full_at_unix_ms);
                b.gcra.set_full_at(clock.at_wall(wall));
            }
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SEC: Nanos = 1_000_000_000;

    fn spec(name: &str, unit: Unit, rate: u64, per_s: u64) -> LimitSpec {
        LimitSpec {
            name: name.into(),
            unit,
            rate: NonZeroU64::new(rate).unwrap(),
            per: Duration::from_secs(per_s),
            burst: None,
        }
    }

    fn rpm_tpm() -> Limiter {
        Limiter::new(&[
            spec("rpm", Unit::Requests, 60, 60),
            spec("tpm", Unit::Tokens, 1000, 60),
        ])
    }

    #[test]
    fn admission_is_all_or_nothing_across_buckets() {
        let mut limiter = rpm_tpm();
        let r = limiter.reserve(&Costs::request(900), 0).unwrap();
        assert_eq!(r.costs().get(&Unit::Tokens), 900);
        // Requests fit, tokens do not: nothing may be charged.
        let denied = limiter.reserve(&Costs::request(200), 0).unwrap_err();
        assert_eq!(denied, Denied::NotUntil(NotUntil { at: 6 * SEC }));
        let usage = limiter.usage(0);
        assert_eq!(
            usage[0].used, 1,
            "the denied job took no request: {usage:?}"
        );
        assert_eq!(usage[1].used, 900);
        assert!(limiter.reserve(&Costs::request(200), 6 * SEC).is_ok());
    }

    #[test]
    fn settle_refunds_an_over_estimate_and_charges_an_under_estimate() {
        let mut limiter = rpm_tpm();
        let r = limiter.reserve(&Costs::request(900), 0).unwrap();
        limiter.settle(r, &Costs::request(100), 0);
        assert_eq!(limiter.usage(0)[1].used, 100);
        let r = limiter.reserve(&Costs::request(100), 0).unwrap();
        limiter.settle(r, &Costs::request(400), 0);
        assert_eq!(limiter.usage(0)[1].used, 100 + 400);
    }

    #[test]
    fn cancel_refunds_everything() {
        let mut limiter = rpm_tpm();
        let r = limiter.reserve(&Costs::request(500), 0).unwrap();
        limiter.cancel(r, 0);
        assert!(limiter.usage(0).iter().all(|u| u.used == 0));
    }

    #[test]
    fn a_job_larger_than_a_bucket_never_fits() {
        let mut limiter = rpm_tpm();
        let denied = limiter.reserve(&Costs::request(1001), 0).unwrap_err();
        assert!(
            matches!(denied, Denied::Never(ref n) if n.limit == "tpm"),
            "{denied:?}"
        );
        assert!(limiter.check_fits(&Costs::request(1000)).is_ok());
    }

    #[test]
    fn saved_state_survives_a_restart_without_a_fresh_burst() {
        let clock = ManualClock::at_2026();
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        for _ in 0..10 {
            let _ = limiter.reserve(&Costs::request(0), clock.now()).unwrap();
        }
        let saved = limiter.save(&clock);
        // A new process: its own clock starts at 0 but wall time has moved on by 200 ms.
        let later = ManualClock::new(clock.wall() + Duration::from_millis(200));
        let mut restarted = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        restarted.restore(&saved, &later);
        assert_eq!(restarted.usage(later.now())[0].used, 8);
        for _ in 0..2 {
            let _ = restarted.reserve(&Costs::request(0), later.now()).unwrap();
        }
        assert!(restarted.reserve(&Costs::request(0), later.now()).is_err());
    }

    #[test]
    fn an_emptied_limiter_admits_only_what_refills() {
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        limiter.assume_empty(5 * SEC);
        let denied = limiter.reserve(&Costs::request(0), 5 * SEC).unwrap_err();
        assert_eq!(
            denied,
            Denied::NotUntil(NotUntil {
                at: 5 * SEC + SEC / 10
            })
        );
    }

    #[test]
    fn saturated_limiter_admits_exactly_the_rate() {
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 100, 1)]);
        let mut now = 0;
        let mut admitted = 0u64;
        while now <= 60 * SEC {
            match limiter.reserve(&Costs::request(0), now) {
                Ok(_) => admitted += 1,
                Err(Denied::NotUntil(n)) => now = n.at,
                Err(Denied::Never(n)) => panic!("{n}"),
            }
        }
        // A full bucket of 100, then 100 per second for 60 s.
        assert_eq!(admitted, 100 + 6000);
    }
}
