//! Integration tests: the built binary against the mock on loopback, one module per command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod claim;
mod control;
mod errors;
mod estimate;
mod feedback;
mod interplay;
mod kill;
mod pages;
mod redis;
mod run;
mod scenarios;
mod snapshots;
mod store;
mod support;
