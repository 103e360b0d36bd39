//! What the limiter hands out when it admits a job, and what it needs back to settle it.
//!
//! A [`Reservation`] records what was taken from each bucket (kept small: it travels with
//! every request, and moving it is on the limiter's hot path). It is a
//! plain value: the runner carries it with the request and gives it back to
//! [`Limiter::settle`](super::Limiter::settle) (actual usage) or
//! [`Limiter::cancel`](super::Limiter::cancel) (never sent). Dropping it without either
//! keeps the estimate charged, which errs on the safe side.

use smallvec::SmallVec;

use crate::clock::Nanos;

/// Proof of admission: what was taken from each bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "settle or cancel the reservation so the buckets reflect what was really used"]
pub struct Reservation {
    pub(super) at: Nanos,
    pub(super) taken: SmallVec<[Taken; 2]>,
}

/// What one bucket gave a reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Taken {
    /// The bucket's index in the limiter.
    pub(super) bucket: u16,
    /// Units taken (the estimate).
    pub(super) amount: u64,
    /// For rolling buckets, the instant the bucket was full again right after this
    /// reservation (the end of its slot), so a refund returns only what is still ahead of
    /// the clock.
    pub(super) slot_end: Nanos,
    /// The rolling bucket's total refunds when this reservation was taken.
    pub(super) mark: Nanos,
}

impl Reservation {
    /// When the reservation was admitted.
    pub fn at(&self) -> Nanos {
        self.at
    }
}
