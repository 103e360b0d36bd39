//! What the limiter hands out when it admits a job, and what it needs back to settle it.
//!
//! A [`Reservation`] records the estimated cost that was taken from each bucket. It is a
//! plain value: the runner carries it with the request and gives it back to
//! [`Limiter::settle`](super::Limiter::settle) (actual usage) or
//! [`Limiter::cancel`](super::Limiter::cancel) (never sent). Dropping it without either
//! keeps the estimate charged, which errs on the safe side.

use super::{Costs, Route};
use crate::clock::Nanos;

/// Proof of admission: the estimated costs taken from every bucket in scope.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "settle or cancel the reservation so the buckets reflect what was really used"]
pub struct Reservation {
    pub(super) costs: Costs,
    pub(super) route: Route,
    pub(super) at: Nanos,
    /// Per bucket on the route: for rolling buckets, the instant the bucket was full again
    /// right after this reservation (the end of its slot), so a refund returns only what is
    /// still ahead of the clock.
    pub(super) slot_ends: Vec<Nanos>,
}

impl Reservation {
    /// The estimated costs that were reserved.
    pub fn costs(&self) -> &Costs {
        &self.costs
    }
}
