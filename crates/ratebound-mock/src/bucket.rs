//! One limit of the mock: a bucket refilled continuously, in the oracle's own arithmetic.
//!
//! Kept apart from [`limiter`](crate::limiter) on purpose, so that a bug shared by both
//! cannot hide. The level is an `f64` in units (requests or tokens), refilled at
//! `capacity / period` and never above `capacity`. An amount fits when the level reaches it
//! within [`TOLERANCE`], so a client that waits exactly the time [`Bucket::wait`] returned
//! is admitted despite float rounding; a debit therefore leaves the level at worst
//! `-TOLERANCE`, never lower. Times are computed to half the tolerance, so that they are
//! never late by a rounding error (a whole 1 s must not print as 1001 ms).

use std::num::NonZeroU64;
use std::time::Duration;

use crate::clock::{Nanos, nanos};

/// How far below an amount the level may be and still fit it, in units.
const TOLERANCE: f64 = 1e-6;

/// A bucket of `capacity` units refilled continuously over `period`.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    capacity: f64,
    period_ns: f64,
    level: f64,
    /// The clock reading the level was computed at.
    updated: Nanos,
}

impl Bucket {
    /// A full bucket at `now`.
    #[cfg(test)]
    pub(crate) fn full(capacity: NonZeroU64, period: Duration, now: Nanos) -> Bucket {
        Bucket::filled(capacity, period, 1.0, now)
    }

    /// A bucket holding `fill` (a share from 0 to 1) of its capacity at `now`: 0 starts
    /// empty, as after another client drained it.
    pub(crate) fn filled(capacity: NonZeroU64, period: Duration, fill: f64, now: Nanos) -> Bucket {
        let capacity = capacity.get() as f64;
        Bucket {
            capacity,
            period_ns: nanos(period) as f64,
            level: capacity * fill.clamp(0.0, 1.0),
            updated: now,
        }
    }

    /// The level, in fractional units: what a leaky bucket's queue is measured against.
    pub(crate) fn level(&self) -> f64 {
        self.level
    }

    /// Nanoseconds the bucket takes to gain `units`.
    pub(crate) fn time_for(&self, units: f64) -> Nanos {
        (units.max(0.0) * self.period_ns / self.capacity).ceil() as Nanos
    }

    /// The capacity, in units.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    /// The time the bucket takes to refill from empty.
    pub(crate) fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns as u64)
    }

    /// Adds what flowed in since the last update, up to capacity.
    pub(crate) fn refill(&mut self, now: Nanos) {
        let elapsed = now.saturating_sub(self.updated) as f64;
        self.level = (self.level + elapsed * self.capacity / self.period_ns).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Nanoseconds from the last refill until `amount` fits: `Some(0)` if it fits now,
    /// `None` if it never will because it exceeds the capacity.
    pub(crate) fn wait(&self, amount: u64) -> Option<Nanos> {
        let amount = amount as f64;
        if amount > self.capacity {
            None
        } else if self.level + TOLERANCE >= amount {
            Some(0)
        } else {
            Some(self.time_to_gain(amount - self.level))
        }
    }

    /// Debits `amount`; the caller checked that it fits.
    pub(crate) fn take(&mut self, amount: u64) {
        self.level -= amount as f64;
    }

    /// Credits `amount` back (an estimate above actual usage), up to capacity.
    pub(crate) fn give(&mut self, amount: u64) {
        self.level = (self.level + amount as f64).min(self.capacity);
    }

    /// Whole units left, as a remaining header reports them.
    pub(crate) fn remaining(&self) -> u64 {
        (self.level + TOLERANCE).floor().max(0.0) as u64
    }

    /// Nanoseconds until the bucket is full again.
    pub(crate) fn until_full(&self) -> Nanos {
        self.time_to_gain(self.capacity - self.level)
    }

    /// The first nanosecond at which the level has gained `units` within half the
    /// tolerance: never late, and early by less than the tolerance allows.
    fn time_to_gain(&self, units: f64) -> Nanos {
        let units = (units - TOLERANCE / 2.0).max(0.0);
        (units * self.period_ns / self.capacity).ceil() as Nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Nanos = 1_000_000_000;

    fn per_minute(n: u64) -> Bucket {
        Bucket::full(NonZeroU64::new(n).unwrap(), Duration::from_secs(60), 0)
    }

    #[test]
    fn the_wait_admits_at_that_instant_and_not_a_tolerance_before() {
        let mut b = per_minute(7);
        b.take(7);
        let wait = b.wait(3).unwrap();
        let exact = (3 * 60 * SECOND).div_ceil(7);
        assert!(wait <= exact && wait > exact - 5_000, "{wait} vs {exact}");
        b.refill(wait - 10_000);
        assert!(
            b.wait(3).unwrap() > 0,
            "not yet 10 µs before, level {}",
            b.level
        );
        b.refill(wait);
        assert_eq!(b.wait(3), Some(0), "level {} at {wait}", b.level);
    }

    #[test]
    fn a_client_early_by_a_rounding_error_is_admitted() {
        // Three per second: a unit refills at 333_333_333.3 ns; a client that truncates to
        // whole nanoseconds arrives a third of a nanosecond early and must still get in.
        let mut b = Bucket::full(NonZeroU64::new(3).unwrap(), Duration::from_secs(1), 0);
        b.take(3);
        b.refill(333_330_000);
        assert!(b.wait(1).unwrap() > 0, "3.3 µs early is too early");
        b.refill(333_333_333);
        assert_eq!(b.wait(1), Some(0), "level {}", b.level);
        assert_eq!(b.remaining(), 1);
    }

    #[test]
    fn the_level_never_exceeds_capacity_and_oversized_amounts_never_fit() {
        let mut b = per_minute(10);
        b.take(4);
        b.refill(3600 * SECOND);
        assert_eq!((b.remaining(), b.until_full()), (10, 0));
        assert_eq!(b.wait(11), None);
    }
}
