//! Time, as the mock sees it: the small [`Clock`] the provider is pure over.
//!
//! The mock cannot depend on ratebound (ratebound depends on it, for `mock://` and
//! `ratebound mock`), so it names what it needs of a clock here: a monotonic `now()` and the
//! matching UTC `wall()`. ratebound's own clocks implement this trait (see its `mock`
//! module), so a runner test and the mock it drives can share one clock. [`TokioClock`]
//! serves the mock's own sockets; [`ManualClock`] drives tests in virtual time.
//!
//! Invariant: `now()` never goes backwards, and `wall()` moves with `now()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A monotonic reading in nanoseconds since the clock's own start (not since the epoch).
pub type Nanos = u64;

/// Converts a duration to [`Nanos`], saturating at about 584 years.
pub fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the UNIX epoch of a wall time (0 before the epoch).
pub fn epoch_ns(wall: SystemTime) -> u64 {
    nanos(wall.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A source of time: a monotonic `now()` and the matching UTC wall time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic nanoseconds since this clock started.
    fn now(&self) -> Nanos;
    /// The UTC wall time that corresponds to `now()`.
    fn wall(&self) -> SystemTime;
}

impl<C: Clock> Clock for Arc<C> {
    fn now(&self) -> Nanos {
        (**self).now()
    }
    fn wall(&self) -> SystemTime {
        (**self).wall()
    }
}

/// Real time through tokio's clock, anchored once: the clock of the mock's own servers.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
    start_wall: SystemTime,
}

impl TokioClock {
    /// Anchors a new clock at the current tokio instant and system wall time.
    pub fn new() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
            start_wall: SystemTime::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Nanos {
        nanos(self.start.elapsed())
    }
    fn wall(&self) -> SystemTime {
        self.start_wall + self.start.elapsed()
    }
}

/// A clock that moves only when told to; clones share one time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    start_wall: SystemTime,
}

impl ManualClock {
    /// A clock at monotonic 0 starting at 2026-01-01T00:00:00Z, a fixed and readable origin.
    pub fn at_2026() -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(0)),
            start_wall: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        }
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(nanos(d), Ordering::SeqCst);
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
