//! What one session of a run is and how it ended: the types `runner` produces and `report`
//! renders, kept here so neither imports the other.
//!
//! Owns [`Before`] (counts carried over from earlier sessions), [`End`] (why a session
//! stopped), [`Summary`] (what it did), [`Snapshot`] (the run's totals at one instant) and
//! [`RunState`] (the state the heartbeat records).
//! Pure data: no I/O, no clock.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::limiter::BucketUsage;

/// Counts carried over from earlier sessions of the same run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Before {
    /// Items in the run.
    pub total: u64,
    /// Items already done.
    pub done: u64,
    /// Items already failed.
    pub failed: u64,
    /// Requests sent in earlier sessions.
    pub sent: u64,
    /// 429s seen in earlier sessions.
    pub rate_limited: u64,
    /// Retries in earlier sessions.
    pub retries: u64,
    /// Active time of earlier sessions.
    pub elapsed: Duration,
}

/// The run's state at one instant, totals over every session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Items in the run.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items failed permanently.
    pub failed: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent.
    pub sent: u64,
    /// 429 responses.
    pub rate_limited: u64,
    /// Attempts after an item's first.
    pub retries: u64,
    /// Active run time.
    pub elapsed: Duration,
    /// Per-limit usage.
    pub limits: Vec<BucketUsage>,
    /// What the run is waiting for, if anything unusual (a quota's reset).
    pub note: Option<String>,
}

impl Snapshot {
    /// Items finished, done or failed.
    pub fn finished(&self) -> u64 {
        self.done + self.failed
    }
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Every item is done or failed.
    Finished,
    /// A stop was requested; unfinished items stay pending.
    Interrupted,
    /// A budget is spent, a quota is used up (or reached its `pause_at`), or the provider
    /// says the account's quota is exhausted; items stay pending.
    Paused {
        /// What ran out, for the user.
        reason: String,
        /// When it resets, if known.
        until: Option<SystemTime>,
    },
    /// No attempt reached the API for `[retry] unreachable_after` (connection refused, DNS
    /// failure); items stay pending, with no attempt spent.
    Unreachable {
        /// The last connect failure (without secrets).
        error: String,
        /// How long every attempt failed to connect.
        after: Duration,
    },
    /// The API refused the credentials (401/403); items stay pending.
    AuthRefused {
        /// The status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

/// What a session did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// How it ended.
    pub end: End,
    /// Totals, including earlier sessions.
    pub snapshot: Snapshot,
    /// This session's time, read from the runner's clock.
    pub session: Duration,
    /// Requests sent in this session.
    pub session_sent: u64,
}

/// The state of a run as its heartbeat records it (`status` shows it as `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A runner is dispatching.
    Running,
    /// A runner is alive but dispatches nothing (`ratebound pause`, or a quota wait).
    Paused,
    /// The last session stopped with items left (interrupted, refused, paused on a quota).
    Stopped,
    /// Every item is done or failed.
    Finished,
}

impl RunState {
    /// The name the store and `status --json` use: `running|paused|stopped|finished`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Stopped => "stopped",
            RunState::Finished => "finished",
        }
    }

    /// Every state, in the order `status` ranks them when shards disagree (lowest first).
    pub const ALL: [RunState; 4] = [
        RunState::Finished,
        RunState::Stopped,
        RunState::Paused,
        RunState::Running,
    ];

    /// The state a session's last heartbeat records for how it ended: `finished` only when
    /// nothing is left, `paused` for a quota or budget, else `stopped`.
    pub fn of_end(end: &End, nothing_left: bool) -> RunState {
        match end {
            End::Finished if nothing_left => RunState::Finished,
            End::Paused { .. } => RunState::Paused,
            _ => RunState::Stopped,
        }
    }
}

/// A state name that is none of `running|paused|stopped|finished`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown run state `{0}` (expected running, paused, stopped or finished)")]
pub struct UnknownRunState(pub String);

impl FromStr for RunState {
    type Err = UnknownRunState;

    /// Parses the name [`RunState::as_str`] gives.
    fn from_str(name: &str) -> Result<RunState, UnknownRunState> {
        RunState::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| UnknownRunState(name.to_string()))
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_state_names_are_the_status_contract() {
        let names: Vec<&str> = [
            RunState::Running,
            RunState::Paused,
            RunState::Stopped,
            RunState::Finished,
        ]
        .into_iter()
        .map(RunState::as_str)
        .collect();
        assert_eq!(names, ["running", "paused", "stopped", "finished"]);
    }

    #[test]
    fn run_states_parse_back_and_an_unknown_name_is_an_error() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse::<RunState>(), Ok(state));
        }
        let err = "runing".parse::<RunState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown run state `runing` (expected running, paused, stopped or finished)"
        );
    }

    #[test]
    fn a_finished_end_with_items_left_is_stopped() {
        assert_eq!(RunState::of_end(&End::Finished, false), RunState::Stopped);
        assert_eq!(RunState::of_end(&End::Finished, true), RunState::Finished);
        assert_eq!(RunState::of_end(&End::Interrupted, true), RunState::Stopped);
    }
}
