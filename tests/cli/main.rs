//! Integration tests: the built binary against the mock on loopback, one module per command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod claim;
mod control;
mod errors;
mod estimate;
mod export;
mod feedback;
mod hardening;
mod interplay;
mod kill;
mod pages;
mod queue;
mod redis;
mod report;
mod run;
mod scenarios;
mod secrets;
mod snapshots;
mod store;
mod support;
