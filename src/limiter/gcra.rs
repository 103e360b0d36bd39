//! One rolling-rate bucket: `rate` units per `per`, refilled continuously, starting full.
//!
//! Implemented as GCRA (the generic cell rate algorithm): the whole state is one number, the
//! theoretical arrival time `tat` at which the bucket would be full again. A bucket of
//! capacity `C` per period `P` has an emission interval `T = P / C` per unit and a tolerance
//! `tau = burst * T` (by default `burst = C`, so `tau = P`). A cost of `n` units is admitted
//! at `now` when `max(tat, now) + n*T - tau <= now`.
//!
//! Invariants: `n*T` is rounded up to whole nanoseconds, so rounding can only make the bucket
//! stricter than the configured rate, never looser; a decision is exact: "not before *t*"
//! means rejected at *t − 1 ns* and admitted at *t*; refunds never fill the bucket beyond
//! full.

use std::num::NonZeroU64;
use std::time::Duration;

use crate::clock::{Nanos, nanos};

/// The tolerance of a bucket whose burst takes `tau` to refill when requests may be delayed
/// unevenly by up to `jitter`: `tau` less the jitter, at least one unit's `interval`. Unit
/// free (ns here, µs in [`SharedBucket`](super::shared::SharedBucket)): one rule for both.
pub fn jittered_tolerance(tau: u64, jitter: u64, interval: u64) -> u64 {
    tau.saturating_sub(jitter).max(interval)
}

/// A rolling-rate bucket in GCRA form. Pure: time is passed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gcra {
    capacity: u64,
    period: Nanos,
    /// How far ahead of `now` the bucket may run: `burst * T`.
    tau: Nanos,
    /// Theoretical arrival time: the instant at which the bucket is full again.
    tat: Nanos,
    /// Total time refunded so far. A reservation remembers it, so a later refund knows how
    /// far refunds since then may have moved its slot earlier.
    refunded: Nanos,
    /// `ceil(period / capacity)` when one unit takes at least a microsecond: then
    /// `n * unit_ns` overestimates the exact interval by under a millionth (never
    /// underestimates it) and spares the hot path a 128-bit division.
    unit_ns: Option<u64>,
}

impl Gcra {
    /// A full bucket of `rate` units per `per`, holding at most `burst` units (default `rate`).
    pub fn new(rate: NonZeroU64, per: Duration, burst: Option<NonZeroU64>) -> Gcra {
        let capacity = rate.get();
        let period = nanos(per).max(1);
        let burst = burst.map_or(capacity, NonZeroU64::get);
        let unit_ns = (period / capacity >= 1_000).then(|| period.div_ceil(capacity));
        let mut bucket = Gcra {
            capacity,
            period,
            tau: 0,
            tat: 0,
            refunded: 0,
            unit_ns,
        };
        bucket.tau = bucket.interval(burst);
        bucket
    }

    /// Admits a little less at once so that requests delayed unevenly on their way (by up to
    /// `jitter`) still conform at the provider: the tolerance shrinks by `jitter`, which is
    /// GCRA's cell delay variation tolerance seen from the sender's side. The long-run rate
    /// is unchanged; at least one unit always fits.
    pub fn with_jitter(mut self, jitter: Duration) -> Gcra {
        self.tau = jittered_tolerance(self.tau, nanos(jitter), self.interval(1));
        self
    }

    /// The most units one admission can take: larger costs can never fit.
    pub fn max_cost(&self) -> u64 {
        // `interval(n) <= tau` for every n up to the burst; the burst is that largest n.
        (u128::from(self.tau) * u128::from(self.capacity) / u128::from(self.period))
            .try_into()
            .unwrap_or(u64::MAX)
    }

    /// The time `n` units take to refill, rounded up to whole nanoseconds.
    fn interval(&self, n: u64) -> Nanos {
        if let Some(unit) = self.unit_ns {
            return n.saturating_mul(unit);
        }
        let num = u128::from(n) * u128::from(self.period);
        let den = u128::from(self.capacity);
        num.div_ceil(den).try_into().unwrap_or(u64::MAX)
    }

    /// The earliest instant at or after `now` at which `cost` units fit, or `None` if they
    /// never can (the cost exceeds the burst).
    pub fn earliest(&self, cost: u64, now: Nanos) -> Option<Nanos> {
        if cost == 0 {
            return Some(now);
        }
        let step = self.interval(cost);
        if step > self.tau {
            return None;
        }
        let start = self.tat.max(now);
        Some((start + step).saturating_sub(self.tau).max(now))
    }

    /// Takes `cost` units at `now`. The caller has checked [`Gcra::earliest`] `<= now`.
    pub fn take(&mut self, cost: u64, now: Nanos) {
        self.tat = self.tat.max(now).saturating_add(self.interval(cost));
    }

    /// Total time refunded so far (see [`Gcra::refund`]).
    pub fn refunded(&self) -> Nanos {
        self.refunded
    }

    /// Gives back `amount` units (an estimate that turned out too high, or a request never
    /// sent) of a reservation whose slot ended at `slot_end` when [`Gcra::refunded`] read
    /// `mark`. Only the part of the slot still ahead of `now` can come back: what has
    /// drained was refilled for everyone, and returning it again would admit more than the
    /// rate. Refunds since the reservation may have moved its slot earlier by up to
    /// `refunded − mark`, so that much is assumed to have drained too: a refund may come out
    /// smaller than it could, never larger. The bucket never becomes more than full.
    pub fn refund(&mut self, amount: u64, slot_end: Nanos, mark: Nanos, now: Nanos) {
        let moved = self.refunded.saturating_sub(mark);
        let ahead = slot_end.saturating_sub(moved).saturating_sub(now);
        let back = self.interval(amount).min(ahead);
        let floor = self.tat.min(now);
        let tat = self.tat.saturating_sub(back).max(floor);
        self.refunded = self.refunded.saturating_add(self.tat - tat);
        self.tat = tat;
    }

    /// Charges `amount` more units than were reserved. Usage beyond the burst is kept as debt
    /// that delays later admissions, because the provider counted it too.
    pub fn charge(&mut self, amount: u64, now: Nanos) {
        self.take(amount, now);
    }

    /// Empties the bucket at `now`: nothing more fits until it refills.
    pub fn empty(&mut self, now: Nanos) {
        self.tat = self.tat.max(now + self.tau);
    }

    /// Provider feedback: `remaining` units are available at `now`. Lowers availability to
    /// match; raises it too when `learn` is set.
    pub fn observe(&mut self, remaining: u64, now: Nanos, learn: bool) {
        let used = self.capacity.saturating_sub(remaining);
        let tat = now.saturating_add(self.interval(used));
        self.tat = if learn { tat } else { self.tat.max(tat) };
    }

    /// Units in use at `now` (0 = full bucket, capacity = empty), to the nearest unit.
    pub fn used(&self, now: Nanos) -> u64 {
        let ahead = u128::from(self.tat.saturating_sub(now));
        // Nearest, not up: intervals are already rounded up to whole nanoseconds.
        let period = u128::from(self.period);
        let units = (ahead * u128::from(self.capacity) + period / 2) / period;
        units.try_into().unwrap_or(u64::MAX)
    }

    /// Units admitted per period.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The period the capacity refers to.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// The instant at which the bucket is full again (for persistence).
    pub fn full_at(&self) -> Nanos {
        self.tat
    }

    /// Restores the instant at which the bucket is full again (from persistence).
    pub fn set_full_at(&mut self, tat: Nanos) {
        self.tat = tat;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn per_second(rate: u64) -> Gcra {
        Gcra::new(NonZeroU64::new(rate).unwrap(), Duration::from_secs(1), None)
    }

    #[test]
    fn starts_full_and_admits_a_whole_burst_at_once() {
        let mut b = per_second(100);
        for i in 0..100 {
            assert_eq!(b.earliest(1, 0), Some(0), "unit {i} of the burst");
            b.take(1, 0);
        }
        assert_eq!(
            b.earliest(1, 0),
            Some(SEC / 100),
            "the 101st waits one interval"
        );
        assert_eq!(b.used(0), 100);
    }

    #[test]
    fn not_until_is_exact() {
        let mut b = per_second(3);
        b.take(3, 0);
        let t = b.earliest(1, 0).unwrap();
        assert_eq!(t, 333_333_334, "interval rounded up");
        assert_eq!(b.earliest(1, t - 1), Some(t), "rejected 1 ns before");
        assert_eq!(b.earliest(1, t), Some(t), "admitted at t");
    }

    #[test]
    fn cost_above_burst_never_fits() {
        let b = Gcra::new(
            NonZeroU64::new(10).unwrap(),
            Duration::from_secs(1),
            NonZeroU64::new(4),
        );
        assert_eq!(b.max_cost(), 4);
        assert_eq!(b.earliest(5, 0), None);
        assert_eq!(b.earliest(4, 0), Some(0));
    }

    #[test]
    fn jitter_allowance_shrinks_the_burst_not_the_rate() {
        let mut b = per_second(100).with_jitter(Duration::from_millis(50));
        assert_eq!(b.max_cost(), 95);
        for _ in 0..95 {
            assert_eq!(b.earliest(1, 0), Some(0));
            b.take(1, 0);
        }
        assert_eq!(b.earliest(1, 0), Some(SEC / 100));
        let tiny = per_second(1).with_jitter(Duration::from_secs(5));
        assert_eq!(tiny.max_cost(), 1, "one unit always fits");
    }

    #[test]
    fn a_refund_counts_slots_moved_by_earlier_refunds_as_drained() {
        // A, B and C take one unit each at 0: slots end at 100, 200 and 300 ms.
        let mut b = per_second(10);
        let mut slots = Vec::new();
        for _ in 0..3 {
            b.take(1, 0);
            slots.push((b.full_at(), b.refunded()));
        }
        // A is refunded at once: B and C move 100 ms earlier.
        b.refund(1, slots[0].0, slots[0].1, 0);
        // At 150 ms, B (really [0, 100] now) has drained: nothing comes back, and C's half
        // unit is still in use.
        b.refund(1, slots[1].0, slots[1].1, 150_000_000);
        assert_eq!(b.used(150_000_000), 1, "C is still half in the bucket");
        assert_eq!(b.earliest(10, 150_000_000), Some(200_000_000));
    }

    #[test]
    fn refund_never_fills_beyond_full() {
        let mut b = per_second(10);
        b.take(5, 0);
        b.refund(100, b.full_at(), 0, 0);
        assert_eq!(b.used(0), 0);
        assert_eq!(b.earliest(10, 0), Some(0));
        b.take(10, 0);
        assert_eq!(b.earliest(10, 0), Some(SEC));
    }

    #[test]
    fn charge_beyond_capacity_is_debt_repaid_over_time() {
        let mut b = per_second(10);
        b.take(10, 0);
        b.charge(10, 0);
        assert_eq!(b.used(0), 20);
        assert_eq!(b.earliest(1, 0), Some(SEC + SEC / 10));
    }
}
