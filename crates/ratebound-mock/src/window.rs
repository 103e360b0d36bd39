//! One fixed-window limit of the mock: at most N units in each window of a given length,
//! windows aligned to the UNIX epoch (UTC), the way X counts its 15-minute limits, or
//! anchored at the first request after the previous window expired, the way GitHub counts
//! its hourly primary limit.
//!
//! Kept apart from [`limiter`](crate::limiter) on purpose, so that a bug shared by both
//! cannot hide. Integer arithmetic on wall-clock nanoseconds since the epoch: a window
//! starts whenever that reading is a multiple of the length, so the count drops to 0 at
//! exactly the boundary, not a nanosecond before. Invariants: `used <= limit`, and a
//! refused amount changes nothing (the caller takes only what [`Window::wait`] admitted).

use std::num::NonZeroU64;
use std::time::Duration;

use crate::clock::{Nanos, nanos};

const SECOND: u64 = 1_000_000_000;

/// A fixed window of `limit` units per `length`, in epoch-aligned or anchored windows.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    limit: u64,
    /// Never 0: a zero length counts as 1 ns.
    length_ns: u64,
    /// Whether a window starts at the first request after the previous one ended, not at
    /// a multiple of the length.
    anchored: bool,
    /// The epoch nanoseconds at which the window `used` counts started.
    start_ns: u64,
    used: u64,
}

impl Window {
    /// An unused window of `limit` units per `length`; [`Window::roll`] places it.
    pub(crate) fn new(limit: NonZeroU64, length: Duration) -> Window {
        Window {
            limit: limit.get(),
            length_ns: nanos(length).max(1),
            anchored: false,
            start_ns: 0,
            used: 0,
        }
    }

    /// An unused window of `limit` units per `length` whose windows are anchored, as
    /// GitHub's are: a window starts with the first request after the previous one ended,
    /// at that request's whole epoch second (GitHub reports the end in whole epoch seconds,
    /// so a window of whole seconds starts on one), or at the request itself for a window
    /// shorter than the rest of that second.
    pub(crate) fn anchored(limit: NonZeroU64, length: Duration) -> Window {
        Window {
            anchored: true,
            ..Window::new(limit, length)
        }
    }

    /// Moves to the window holding `wall_ns` (epoch nanoseconds), empty if it is a new one.
    /// An anchored window that has ended starts a new one at `wall_ns`.
    pub(crate) fn roll(&mut self, wall_ns: u64) {
        let start = if !self.anchored {
            wall_ns - wall_ns % self.length_ns
        } else if self.used > 0 && wall_ns < self.end_ns() {
            self.start_ns
        } else {
            let second = wall_ns - wall_ns % SECOND;
            match second.saturating_add(self.length_ns) > wall_ns {
                true => second,
                false => wall_ns,
            }
        };
        if start != self.start_ns {
            self.start_ns = start;
            self.used = 0;
        }
    }

    /// Nanoseconds from `wall_ns` until `amount` fits: `Some(0)` if it fits now, the time
    /// to the window's end if not, `None` if it never will because it exceeds the limit.
    /// Call [`Window::roll`] with the same `wall_ns` first.
    pub(crate) fn wait(&self, amount: u64, wall_ns: u64) -> Option<Nanos> {
        if amount > self.limit {
            None
        } else if amount <= self.remaining() {
            Some(0)
        } else {
            Some(self.end_ns().saturating_sub(wall_ns))
        }
    }

    /// Counts `amount` against this window; the caller checked that it fits.
    pub(crate) fn take(&mut self, amount: u64) {
        self.used = (self.used + amount).min(self.limit);
    }

    /// The limit, in units per window.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The window's length.
    pub(crate) fn length(&self) -> Duration {
        Duration::from_nanos(self.length_ns)
    }

    /// Units counted in this window.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Units left in this window.
    pub(crate) fn remaining(&self) -> u64 {
        self.limit - self.used
    }

    /// The epoch nanoseconds at which this window ends and the next starts.
    pub(crate) fn end_ns(&self) -> u64 {
        self.start_ns.saturating_add(self.length_ns)
    }

    /// The window's end in whole epoch seconds, rounded up (a reset is a "not before"), as
    /// X's `x-rate-limit-reset` and GitHub's `x-ratelimit-reset` give it.
    pub(crate) fn reset_epoch_s(&self) -> u64 {
        self.end_ns().div_ceil(1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z, a multiple of every whole-minute length.
    const MIDNIGHT: u64 = 1_767_225_600 * SECOND;

    fn window(limit: u64, length: Duration) -> Window {
        Window::new(NonZeroU64::new(limit).unwrap(), length)
    }

    #[test]
    fn a_window_counts_until_its_limit_then_waits_for_its_end() {
        let mut w = window(10, Duration::from_secs(15));
        let t = MIDNIGHT + 4 * SECOND;
        w.roll(t);
        assert_eq!(w.wait(10, t), Some(0));
        w.take(7);
        assert_eq!((w.used(), w.remaining()), (7, 3));
        assert_eq!(w.wait(3, t), Some(0));
        assert_eq!(w.wait(4, t), Some(11 * SECOND), "until 00:00:15");
        assert_eq!(w.wait(11, t), None, "more than the limit never fits");
        assert_eq!(w.end_ns(), MIDNIGHT + 15 * SECOND);
        assert_eq!(w.reset_epoch_s(), 1_767_225_615);
    }

    #[test]
    fn the_count_drops_exactly_at_the_utc_boundary() {
        let mut w = window(2, Duration::from_secs(15));
        w.roll(MIDNIGHT);
        w.take(2);
        let boundary = MIDNIGHT + 15 * SECOND;
        w.roll(boundary - 1);
        assert_eq!(w.wait(1, boundary - 1), Some(1), "1 ns before");
        w.roll(boundary);
        assert_eq!(
            (w.used(), w.wait(1, boundary)),
            (0, Some(0)),
            "at the boundary"
        );
        assert_eq!(w.end_ns(), boundary + 15 * SECOND);
    }

    #[test]
    fn windows_align_to_the_epoch_not_to_the_first_request() {
        let mut w = window(5, Duration::from_secs(60));
        let t = MIDNIGHT + 59 * SECOND;
        w.roll(t);
        w.take(5);
        assert_eq!(w.wait(1, t), Some(SECOND), "the minute ends at 00:01:00");
    }

    #[test]
    fn a_reset_between_whole_seconds_rounds_up() {
        let mut w = window(1, Duration::from_millis(1500));
        w.roll(MIDNIGHT + 2 * SECOND);
        // 2026 midnight is a multiple of 1.5 s; this window runs 1.5 s to 3 s past it.
        assert_eq!(w.end_ns(), MIDNIGHT + 3 * SECOND);
        w.roll(MIDNIGHT + 3 * SECOND);
        assert_eq!(w.end_ns(), MIDNIGHT + 4 * SECOND + SECOND / 2);
        assert_eq!(w.reset_epoch_s(), 1_767_225_605, "4.5 s rounds up to 5");
    }

    fn anchored(limit: u64, length: Duration) -> Window {
        Window::anchored(NonZeroU64::new(limit).unwrap(), length)
    }

    #[test]
    fn an_anchored_window_starts_at_the_first_requests_second_and_lasts_its_length() {
        let mut w = anchored(3, Duration::from_secs(60));
        let first = MIDNIGHT + 10 * SECOND + SECOND / 4;
        w.roll(first);
        w.take(1);
        assert_eq!(w.end_ns(), MIDNIGHT + 70 * SECOND, "00:00:10 + 1 min");
        assert_eq!(w.reset_epoch_s(), 1_767_225_670);
        let later = MIDNIGHT + 65 * SECOND;
        w.roll(later);
        w.take(2);
        assert_eq!(w.wait(1, later), Some(5 * SECOND), "spent until 00:01:10");
        let boundary = MIDNIGHT + 70 * SECOND;
        w.roll(boundary - 1);
        assert_eq!(w.wait(1, boundary - 1), Some(1), "not a nanosecond early");
        w.roll(boundary);
        assert_eq!((w.used(), w.wait(1, boundary)), (0, Some(0)), "at the end");
    }

    #[test]
    fn an_idle_gap_moves_the_next_anchored_window_to_the_next_request() {
        let mut w = anchored(5, Duration::from_secs(60));
        w.roll(MIDNIGHT);
        w.take(5);
        // Nothing for 90 s: no window runs in between; the request at 00:01:30 starts one.
        let next = MIDNIGHT + 90 * SECOND + SECOND / 2;
        w.roll(next);
        assert_eq!(w.used(), 0);
        w.take(1);
        assert_eq!(
            w.end_ns(),
            MIDNIGHT + 150 * SECOND,
            "not 00:02:00, as UTC would"
        );
        let aligned_would_roll = MIDNIGHT + 120 * SECOND;
        w.roll(aligned_would_roll);
        assert_eq!(w.used(), 1, "still the window that started at 00:01:30");
    }

    #[test]
    fn an_unused_anchored_window_does_not_start() {
        let mut w = anchored(2, Duration::from_secs(1));
        w.roll(MIDNIGHT + SECOND / 2);
        // Nothing taken: the next request, not this probe, starts the window.
        w.roll(MIDNIGHT + 3 * SECOND + SECOND / 3);
        w.take(2);
        assert_eq!(w.end_ns(), MIDNIGHT + 4 * SECOND);
    }

    #[test]
    fn an_anchored_window_shorter_than_the_rest_of_its_second_starts_at_the_request() {
        let mut w = anchored(1, Duration::from_millis(200));
        let t = MIDNIGHT + 900 * (SECOND / 1000);
        w.roll(t);
        w.take(1);
        assert_eq!(w.end_ns(), t + SECOND / 5);
    }
}
