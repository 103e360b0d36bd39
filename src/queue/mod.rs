//! The store is the queue: the work list streamed into the store once, and pending items
//! paged out of it into the scheduler, built into jobs as they are needed.
//!
//! Owns the I/O around the pure [`Scheduler`](crate::scheduler::Scheduler): the
//! [`Inserter`] that writes validated items on a thread of its own while the next ones are
//! read and checked, the [`StoreFeed`] that hands the scheduler a lane's next page of jobs
//! from the store, and the work list's [`Fingerprint`] that lets a rerun of an unchanged
//! list start without reading it again. Memory stays bounded by the page size and the
//! worker count, never by the list's size.

pub mod feed;
pub mod fingerprint;
pub mod import;

pub use feed::StoreFeed;
pub use fingerprint::Fingerprint;
pub use import::{Imported, Inserter};
