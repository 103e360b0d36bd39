//! Limits shared with other runners: the [`SharedLimiter`] trait and its backends.
//!
//! Owns the network side of shared admission, kept out of the pure `limiter`: [`redis`]
//! (atomic Lua scripts on a Redis server, for runners in several processes) and [`memory`]
//! (one in-process limiter, for paused-time tests of the runner's shared paths). The numbers
//! a backend evaluates come from [`limiter::shared`](crate::limiter::shared).
//!
//! Invariants: an admission is all-or-nothing across the job's buckets; any answer but a
//! grant admits nothing (fail closed); a grant never settled stays charged (the safe side).
//! Admission futures own what they need (`'static`), so the runner awaits them inside its
//! `select!` and goes on handling completions, heartbeats and Ctrl-C meanwhile.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limiter::{BucketState, Costs, NeverFits, Route};

/// Why a shared limiter did not admit a job now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedDenial {
    /// Every bucket fits after `wait` (measured on the backend's clock, so it holds on any
    /// runner's clock); `limit` (an index in config order) holds the job back longest.
    Wait {
        /// How long until every bucket fits.
        wait: Duration,
        /// The binding limit's index among the configured limits.
        limit: usize,
    },
    /// Never: the job exceeds a bucket's burst, or a shared run budget is spent.
    Never(Box<NeverFits>),
}

/// The answer to [`SharedLimiter::admit`].
#[derive(Debug)]
pub enum Admission {
    /// Admitted; `recovered` says the backend had been unreachable until now.
    Granted {
        /// The backend answered again after an outage.
        recovered: bool,
    },
    /// Not now, or never.
    Denied(SharedDenial),
    /// The backend did not answer (why, without secrets): nothing was admitted.
    Unreachable(String),
}

/// A pending admission: owns everything it needs, so it can wait in a `select!`.
pub type AdmitFuture = Pin<Box<dyn Future<Output = Admission> + Send + 'static>>;

/// What the runners sharing a limit have learned of the provider: the limits learned from
/// its headers and the searched rate, as one runner last published them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    /// Unix ms at which it was published.
    pub at_unix_ms: u64,
    /// The learned limits' states (each with its [`BucketState::learned`] definition).
    pub states: Vec<BucketState>,
}

/// A pending read of what was learned: `None` when nothing was published (or the backend
/// did not answer).
pub type LearnedFuture = Pin<Box<dyn Future<Output = Option<Learned>> + Send + 'static>>;

/// Limits shared by every runner that calls the same API with the same credentials.
pub trait SharedLimiter: Send + Sync {
    /// Admits job `seq` (already admitted by the local limiter) with `costs` on `route`;
    /// a grant is kept until [`SharedLimiter::settle_later`].
    fn admit(self: Arc<Self>, seq: u64, route: Route, costs: Costs) -> AdmitFuture;
    /// Settles job `seq`'s grant to `actual` in the background (the caller never waits).
    /// Must be called inside a tokio runtime.
    fn settle_later(&self, seq: u64, actual: &Costs);
    /// Publishes what this runner has learned of the provider, in the background (a
    /// failure is only logged), so that a runner starting later begins at it. Must be
    /// called inside a tokio runtime.
    fn publish_learned(&self, learned: Learned);
    /// What a runner published last.
    fn learned(self: Arc<Self>) -> LearnedFuture;
}
