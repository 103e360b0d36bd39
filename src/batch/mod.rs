//! The provider's Batch API as a second lane: the same requests at the batch price, within
//! the provider's completion window.
//!
//! Pending items are cut into batches in scheduler order, uploaded (OpenAI) and created
//! within the enqueued-token limit, polled, and their results mapped back by `custom_id`
//! into the same results table the online lane writes, so `status` and `export` see one
//! run. [`lifecycle`] holds the pure decisions, [`dialect`] the two providers' formats,
//! [`client`] the HTTP calls and [`driver`] the checkpointed loop. The online runner is
//! untouched: `run --via auto` runs it and this lane side by side over disjoint items.

pub mod client;
pub mod dialect;
pub mod driver;
pub mod lifecycle;
pub mod plan;

pub use client::BatchClient;
pub use driver::{BatchLane, LaneEnd, LaneError, LaneSummary, Rendered, Renderer, Scope};
