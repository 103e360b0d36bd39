//! An API that cannot be reached: a run condition, not item failures.
//!
//! Owns the core's reaction to attempts that never reached the API (connection refused,
//! DNS failure): the attempt is not spent, dispatch holds for a growing backoff and then
//! probes with one request at a time, and when every attempt has failed to connect for
//! `[retry] unreachable_after` the session ends as [`End::Unreachable`] with its items
//! pending. Any response from the API ends the outage. Pure: times come in as arguments.

use std::time::Duration;

use super::Dispatcher;
use crate::clock::{Nanos, nanos};
use crate::retry::Reachability;
use crate::session::End;

/// The state of an outage: how long it lasts and how far its backoff has grown.
#[derive(Debug, Default)]
pub(super) struct Outage {
    reach: Reachability,
    /// Fresh connect failures in a row (one per probe, not per request of a wave).
    pub(super) streak: u32,
    /// Dispatch holds until this instant; failures before it are the same signal.
    held_until: Nanos,
}

impl Dispatcher {
    /// A response came back from the API (any status): it is reachable.
    pub fn reached(&mut self) {
        if self.outage.streak > 0 {
            self.note = None;
        }
        self.outage.reach.record(false, Duration::ZERO);
        self.outage.streak = 0;
    }

    /// An attempt at `now` never reached the API (`error`, without secrets). Dispatch holds
    /// for `backoff(streak)` (the streak counts probes that failed, from 1), capped so that
    /// a probe goes out when the outage reaches `unreachable_after`; the session ends as
    /// [`End::Unreachable`] once it has lasted that long. Call it after
    /// [`Dispatcher::completed`]: nothing goes to the writer for such an attempt.
    pub fn unreachable(&mut self, now: Nanos, error: &str, backoff: impl FnOnce(u32) -> Duration) {
        // Nothing is written for an attempt that reached nothing: its slot is free at once.
        self.uncommitted = self.uncommitted.saturating_sub(1);
        let after = self.rules.unreachable_after;
        let at = Duration::from_nanos(now);
        if self.outage.reach.record_for(true, at, after) {
            self.stop(End::Unreachable {
                error: error.to_string(),
                after,
            });
            return;
        }
        if now < self.outage.held_until {
            // A request of the wave already refused: the same signal.
            return;
        }
        self.outage.streak += 1;
        let since = self.outage.reach.since().unwrap_or(at);
        let deadline = nanos(since.saturating_add(after));
        let until = (now + nanos(backoff(self.outage.streak))).min(deadline);
        self.outage.held_until = until.max(now + 1);
        self.hold(self.outage.held_until);
        self.wake_at(self.outage.held_until);
        let wait = humantime::format_duration(Duration::from_millis(
            self.outage.held_until.saturating_sub(now) / 1_000_000,
        ));
        let left = humantime::format_duration(Duration::from_secs(
            deadline.saturating_sub(now) / 1_000_000_000,
        ));
        self.note = Some(format!(
            "cannot reach the API: {error}; trying again in {wait} (the run stops if it lasts {left} more)"
        ));
    }

    /// Worker slots allowed now: one probe at a time while the API cannot be reached.
    pub(super) fn probing(&self, workers: usize) -> usize {
        if self.outage.streak > 0 {
            workers.min(1)
        } else {
            workers
        }
    }
}
