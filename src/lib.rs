//! ratebound: run a bulk work list against a rate-limited HTTP API as fast as the provider
//! allows and no faster, survive every interruption, and tell the truth about progress.
//!
//! Data flows one way:
//! worklist → store → scheduler → limiter → runner (HTTP) → retry → store.
//!
//! Vocabulary, used everywhere: an *item* is one record of the work list; a *job* is an item
//! turned into the request(s) to send; an *attempt* is one *request* sent for a job; a
//! *limit* is configured as a *bucket* (rolling) or a *window*/*quota* (calendar); admission
//! takes a *reservation* that is later *settled* to actual usage; a response yields an
//! *observation* (what the provider says about its limits) and an *outcome*.
//!
//! Modules:
//! - [`cli`]: arguments, each command's pipeline, exit codes.
//! - [`config`]: TOML → validated [`config::Config`] with line:column errors.
//! - [`worklist`]: CSV/JSONL → items, streamed and validated.
//! - [`template`]: `{{field}}` request templates, JSON-escaped where they stand in strings.
//! - [`job`]: an item rendered into its request (or its steps) and estimated cost.
//! - [`store`]: SQLite: items (the queue, paged by an index in scheduler order), results,
//!   attempts, progress, limiter state.
//! - [`queue`]: the work list streamed into the store, paged back out into the scheduler.
//! - [`clock`]: the `Clock` trait; real and manual time.
//! - [`limiter`]: buckets and atomic multi-bucket admission, pure over a clock.
//! - [`headers`]: provider rate-limit headers (every dialect) → observations.
//! - [`retry`]: outcome classes and backoff with jitter.
//! - [`scheduler`]: priority order, classes with shares, fair tenants, in-flight caps, retry timers.
//! - [`shared`]: limits shared with other runners (Redis, in-memory): the network side.
//! - [`shard`]: a deterministic split of the work list by id (`run --shard i/n`).
//! - [`dispatch`]: the pure dispatch core that `run` and `estimate` both drive.
//! - [`session`]: how a session ended and what it did (shared by runner and report).
//! - [`runner`]: the async loop where network, store and clock meet.
//! - [`batch`]: the provider's Batch API as a second, half-price lane, checkpointed.
//! - [`estimate`]: a dry run in virtual time over the limiter and scheduler.
//! - [`mock`]: the built-in rate-limited API.
//! - [`report`]: progress, summary, status, export.

pub mod batch;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dispatch;
pub mod estimate;
pub mod headers;
pub mod job;
pub mod limiter;
pub mod mock;
pub mod queue;
pub mod report;
pub mod retry;
pub mod runner;
pub mod scheduler;
pub mod series;
pub mod session;
pub mod shard;
pub mod shared;
pub mod spill;
pub mod store;
pub mod template;
pub mod worklist;
