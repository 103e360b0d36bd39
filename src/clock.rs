//! Time, as the pure parts of ratebound see it.
//!
//! Owns the [`Clock`] trait and its two implementations. Pure logic (limiter, retry, mock
//! provider, estimate) never reads the system clock: it takes a [`Nanos`] reading from a
//! `Clock` as an argument and returns decisions such as "not before T". Only the runner
//! waits, turning a `Nanos` back into a tokio instant with [`SystemClock::instant_at`].
//!
//! Invariant: `now()` never goes backwards, and `wall()` moves with `now()` (both derive
//! from one anchor), so calendar quotas and reset headers agree with rolling buckets even
//! under tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A monotonic reading in nanoseconds since the clock's own start (not since the epoch).
pub type Nanos = u64;

/// Unix milliseconds of a wall time (0 before the epoch), as the store and status keep them.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Converts a duration to [`Nanos`], saturating at about 584 years.
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A source of time: a monotonic `now()` and the matching UTC wall time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic nanoseconds since this clock started.
    fn now(&self) -> Nanos;
    /// The UTC wall time that corresponds to `now()`.
    fn wall(&self) -> SystemTime;
    /// The wall time of an arbitrary monotonic reading `t` of this clock.
    fn wall_at(&self, t: Nanos) -> SystemTime {
        let now = self.now();
        let wall = self.wall();
        if t >= now {
            wall + Duration::from_nanos(t - now)
        } else {
            wall.checked_sub(Duration::from_nanos(now - t))
                .unwrap_or(UNIX_EPOCH)
        }
    }
    /// The monotonic reading at which wall time reaches `wall` (saturating at 0 for the past
    /// before this clock started).
    fn at_wall(&self, wall: SystemTime) -> Nanos {
        let now = self.now();
        match wall.duration_since(self.wall()) {
            Ok(ahead) => now.saturating_add(nanos(ahead)),
            Err(behind) => now.saturating_sub(nanos(behind.duration())),
        }
    }
}

/// Real time through tokio's clock, so `#[tokio::test(start_paused = true)]` drives it.
///
/// Wall time is one anchor taken at construction plus the tokio time elapsed since, so a
/// paused runtime moves both readings together.
#[derive(Clone, Debug)]
pub struct SystemClock {
    start: tokio::time::Instant,
    start_wall: SystemTime,
}

impl SystemClock {
    /// Anchors a new clock at the current tokio instant and system wall time.
    pub fn new() -> Self {
        SystemClock {
            start: tokio::time::Instant::now(),
            start_wall: SystemTime::now(),
        }
    }

    /// The tokio instant of monotonic reading `t`, for `sleep_until`.
    pub fn instant_at(&self, t: Nanos) -> tokio::time::Instant {
        self.start + Duration::from_nanos(t)
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        nanos(self.start.elapsed())
    }
    fn wall(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}

/// A clock that only moves when told to. Clones share one time (like governor's
/// `FakeRelativeClock`), so a test can hand one to the limiter and advance it from outside.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    start_wall: SystemTime,
}

impl ManualClock {
    /// A clock at monotonic 0 whose wall time starts at `start_wall`.
    pub fn new(start_wall: SystemTime) -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(0)),
            start_wall,
        }
    }

    /// A clock at monotonic 0 starting at 2026-01-01T00:00:00Z, a fixed and readable origin.
    pub fn at_2026() -> Self {
        Self::new(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(nanos(d), Ordering::SeqCst);
    }

    /// Moves time to `t` if it lies ahead; never moves backwards.
    pub fn advance_to(&self, t: Nanos) {
        self.nanos.fetch_max(t, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        self.nanos.load(Ordering::SeqCst)
    }
    fn wall(&self) -> SystemTime {
        self.start_wall + Duration::from_nanos(self.now())
    }
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> Nanos {
        (**self).now()
    }
    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time_and_wall_moves_with_now() {
        let clock = ManualClock::at_2026();
        let other = clock.clone();
        clock.advance(Duration::from_millis(1500));
        assert_eq!(other.now(), 1_500_000_000);
        assert_eq!(
            other.wall(),
            UNIX_EPOCH + Duration::from_secs(1_767_225_600) + Duration::from_millis(1500)
        );
        other.advance_to(1_000);
        assert_eq!(clock.now(), 1_500_000_000, "advance_to never goes back");
    }

    #[test]
    fn wall_and_monotonic_readings_convert_both_ways() {
        let clock = ManualClock::at_2026();
        clock.advance(Duration::from_secs(10));
        let later = clock.wall() + Duration::from_secs(5);
        assert_eq!(clock.at_wall(later), 15_000_000_000);
        assert_eq!(clock.wall_at(15_000_000_000), later);
        assert_eq!(clock.at_wall(UNIX_EPOCH), 0, "the far past saturates at 0");
    }

    #[tokio::test(start_paused = true)]
    async fn system_clock_follows_paused_tokio_time() {
        let clock = SystemClock::new();
        let wall0 = clock.wall();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(clock.now() >= 3_600_000_000_000);
        assert!(
            clock.wall().duration_since(wall0).unwrap_or_default() >= Duration::from_secs(3600)
        );
        assert_eq!(
            clock.instant_at(clock.now()),
            tokio::time::Instant::now(),
            "instant_at inverts now"
        );
    }
}
