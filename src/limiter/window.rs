//! One fixed-window limit: at most `limit` units per window, windows aligned to the calendar.
//!
//! Serves X's "180 calls per 15 minutes", dashboards' "20 requests per 2 s", daily and
//! monthly quotas and per-run budgets. Windows are aligned to UTC: a window of length `per`
//! starts whenever `unix time − reset offset` is a multiple of `per` (so a `1d` quota with
//! reset `00:00` resets at midnight UTC). A window without a period never resets (a budget
//! for the whole run).
//!
//! Invariants: the units admitted in one window never exceed its limit; "not before *t*" is
//! the next window's start, exact; a refund only returns units to the window that was
//! charged; the last `guard` of a window admits nothing, so requests delayed on their way by
//! up to `guard` still arrive inside the window that counted them.

use crate::clock::Nanos;

/// A fixed-window counter over limiter time (nanoseconds since the limiter's origin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedWindow {
    /// Units the window holds (the quota).
    capacity: u64,
    /// Units admission may reach (the quota, or its `pause_at` share).
    admit_up_to: u64,
    /// Window length; `None` never resets.
    period: Option<Nanos>,
    /// Limiter time of a window boundary modulo the period.
    phase: Nanos,
    /// End-of-window time during which nothing is admitted.
    guard: Nanos,
    /// Start of the window `used` counts (may lie before the limiter's origin).
    start: i128,
    /// Units used in that window.
    used: u64,
}

/// The end of each window of `period` kept free when requests may be delayed by up to
/// `jitter`: the jitter, at most a tenth of the window. Unit free (ns here, µs in
/// [`SharedBucket`](super::shared::SharedBucket)): one rule for both.
pub fn window_guard(period: u64, jitter: u64) -> u64 {
    jitter.min(period / 10)
}

impl FixedWindow {
    /// A window limit of `capacity` units per `period`, of which admission may use
    /// `admit_up_to`, with window boundaries at limiter times `≡ phase (mod period)`.
    pub fn new(
        capacity: u64,
        admit_up_to: u64,
        period: Option<Nanos>,
        phase: Nanos,
    ) -> FixedWindow {
        let period = period.map(|p| p.max(1));
        FixedWindow {
            capacity,
            admit_up_to: admit_up_to.min(capacity),
            period,
            phase: period.map_or(0, |p| phase % p),
            guard: 0,
            start: 0,
            used: 0,
        }
    }

    /// Stops admitting `guard` before each window ends (at most a tenth of the window).
    pub fn with_guard(mut self, guard: Nanos) -> FixedWindow {
        self.guard = self.period.map_or(0, |p| window_guard(p, guard));
        self
    }

    /// The start of the window containing `t` (before the origin for the first window).
    fn start_of(&self, t: Nanos) -> i128 {
        match self.period {
            None => 0,
            Some(p) => {
                // Boundaries are at phase + k*p.
                let (t, p, phase) = (i128::from(t), i128::from(p), i128::from(self.phase));
                t - (t - phase).rem_euclid(p)
            }
        }
    }

    /// The start of the window containing `t`, saturating at the origin.
    pub fn window_start(&self, t: Nanos) -> Nanos {
        Nanos::try_from(self.start_of(t).max(0)).unwrap_or(Nanos::MAX)
    }

    /// The start of the window after the one containing `t`, `None` if windows never end.
    pub fn next_start(&self, t: Nanos) -> Option<Nanos> {
        let p = self.period?;
        Nanos::try_from(self.start_of(t) + i128::from(p)).ok()
    }

    fn roll(&mut self, now: Nanos) {
        let start = self.start_of(now);
        if start != self.start {
            self.start = start;
            self.used = 0;
        }
    }

    /// The earliest instant at or after `now` at which `cost` fits: now, the next window's
    /// start, or `None` if it never fits (larger than the window, or the window never
    /// resets and is spent).
    pub fn earliest(&self, cost: u64, now: Nanos) -> Option<Nanos> {
        if cost == 0 {
            return Some(now);
        }
        if cost > self.admit_up_to {
            return None;
        }
        let used = self.used(now);
        let in_guard = self
            .next_start(now)
            .is_some_and(|end| now + self.guard >= end);
        if used + cost <= self.admit_up_to && !in_guard {
            return Some(now);
        }
        let next = self.next_start(now)?;
        // In the next window nothing is used yet; `cost <= admit_up_to` fits there.
        Some(next)
    }

    /// Takes `cost` units at `now`; the caller checked [`FixedWindow::earliest`].
    pub fn take(&mut self, cost: u64, now: Nanos) {
        self.roll(now);
        self.used = self.used.saturating_add(cost);
    }

    /// Returns `amount` units reserved at `reserved_at`, if that window is still current.
    pub fn refund(&mut self, amount: u64, reserved_at: Nanos, now: Nanos) {
        self.roll(now);
        if self.start_of(reserved_at) == self.start {
            self.used = self.used.saturating_sub(amount);
        }
    }

    /// Charges `amount` more units than were reserved, to the current window.
    pub fn charge(&mut self, amount: u64, now: Nanos) {
        self.take(amount, now);
    }

    /// Units used in the window containing `now`.
    pub fn used(&self, now: Nanos) -> u64 {
        if self.start_of(now) == self.start {
            self.used
        } else {
            0
        }
    }

    /// Units the window holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The window's length, `None` for a window that never resets.
    pub fn period(&self) -> Option<Nanos> {
        self.period
    }

    /// Marks the current window as used up to at least `used` (provider feedback, or a
    /// conservative restart); `exact` replaces the count instead.
    pub fn set_used(&mut self, used: u64, now: Nanos, exact: bool) {
        self.roll(now);
        self.used = if exact { used } else { self.used.max(used) };
    }

    /// Provider feedback on a window it counts itself: `capacity` units per `period`, the
    /// next window starting at `next_start`, `used` units counted in the current one. The
    /// boundaries move to the provider's, with a new `guard`.
    pub fn realign(
        &mut self,
        capacity: u64,
        period: Nanos,
        next_start: Nanos,
        used: u64,
        guard: Nanos,
        now: Nanos,
    ) {
        *self = FixedWindow::new(capacity, capacity, Some(period), next_start).with_guard(guard);
        self.start = self.start_of(now);
        self.used = used;
    }

    /// The limiter time within the counted window and the units used in it, for
    /// persistence.
    pub fn state(&self) -> (i128, u64) {
        (self.start, self.used)
    }

    /// Restores a count saved `age` ago; ignored unless it was saved in the window that
    /// contains `now`.
    pub fn restore(&mut self, age: Nanos, used: u64, now: Nanos) {
        let start = self.start_of(now);
        if i128::from(now) - i128::from(age) >= start {
            self.start = start;
            self.used = used;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    #[test]
    fn a_window_admits_its_limit_then_waits_for_the_next_boundary() {
        let mut w = FixedWindow::new(180, 180, Some(15 * SEC), 0);
        for _ in 0..90 {
            assert_eq!(w.earliest(2, 3 * SEC), Some(3 * SEC));
            w.take(2, 3 * SEC);
        }
        assert_eq!(
            w.earliest(1, 3 * SEC),
            Some(15 * SEC),
            "full until the boundary"
        );
        assert_eq!(
            w.earliest(1, 15 * SEC - 1),
            Some(15 * SEC),
            "rejected 1 ns before"
        );
        assert_eq!(
            w.earliest(4, 15 * SEC),
            Some(15 * SEC),
            "admitted at the boundary"
        );
        assert_eq!(w.used(15 * SEC), 0);
    }

    #[test]
    fn a_job_needing_more_than_what_remains_waits_even_if_part_would_fit() {
        let mut w = FixedWindow::new(180, 180, Some(15 * SEC), 0);
        w.take(178, 0);
        assert_eq!(w.earliest(2, SEC), Some(SEC), "a quest of 2 fits");
        assert_eq!(w.earliest(4, SEC), Some(15 * SEC), "a reward of 4 waits");
    }

    #[test]
    fn windows_align_to_the_phase() {
        // Limiter time 0 is 10 s into a 15 s window: the first boundary is at 5 s.
        let w = FixedWindow::new(10, 10, Some(15 * SEC), 5 * SEC);
        assert_eq!(w.window_start(0), 0);
        assert_eq!(w.next_start(0), Some(5 * SEC));
        assert_eq!(w.window_start(5 * SEC), 5 * SEC);
        assert_eq!(w.next_start(19 * SEC), Some(20 * SEC));
    }

    #[test]
    fn pause_at_stops_admission_early_and_a_run_budget_never_resets() {
        let mut quota = FixedWindow::new(100, 80, Some(86_400 * SEC), 0);
        quota.take(80, 0);
        assert_eq!(quota.earliest(1, SEC), Some(86_400 * SEC));
        let mut budget = FixedWindow::new(1_000, 1_000, None, 0);
        budget.take(999, 0);
        assert_eq!(budget.earliest(1, 5), Some(5));
        budget.take(1, 5);
        assert_eq!(budget.earliest(1, 10), None, "spent for good");
    }

    #[test]
    fn refunds_only_return_units_to_the_window_that_was_charged() {
        let mut w = FixedWindow::new(10, 10, Some(SEC), 0);
        w.take(5, 0);
        w.refund(3, 0, SEC / 2);
        assert_eq!(w.used(SEC / 2), 2);
        w.take(2, SEC / 2);
        w.refund(4, SEC / 2, SEC + 1);
        assert_eq!(w.used(SEC + 1), 0, "a new window is not credited");
    }

    #[test]
    fn the_guard_keeps_the_end_of_a_window_free() {
        let w = FixedWindow::new(20, 20, Some(2 * SEC), 0).with_guard(50_000_000);
        assert_eq!(w.earliest(1, 1_949_999_999), Some(1_949_999_999));
        assert_eq!(w.earliest(1, 1_950_000_000), Some(2 * SEC));
    }
}
