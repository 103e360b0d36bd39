//! The built-in mock of a rate-limited API: ratebound's test oracle and zero-setup demo.
//!
//! A [`MockSpec`] (parsed from `mock://PROFILE?rpm=..&rps=..&tpm=..&window=..&latency=..`,
//! with the fault keys of every profile: [`Faults`]) names a profile and its limits; a
//! [`Provider`] is the mock's behaviour, a pure type over a [`Clock`](clock::Clock) that
//! tests drive in virtual time; [`server`] is the thin axum shell that puts it on a socket.
//! The mock keeps its own buckets and windows (`bucket`, `window`, gathered in
//! `limits`), independent of ratebound's limiter, so that it can judge the limiter
//! instead of agreeing with it. It does not depend on ratebound (ratebound depends on it),
//! so it names the little it needs of a clock in [`clock`].
//!
//! Each profile is one file of `profiles/` implementing one trait (its limit keys, its
//! limits, its answer, its headers, its 429 and its `retry-after`): `openai`, `anthropic`,
//! `github`, `x`, `generic`, `ietf`, `zendesk` (one per header dialect ratebound reads) and
//! `leaky` (nginx's `limit_req`: bare 429 or 503). The request-limited profiles also serve
//! paginated [`listing`]s (a query with `total=N`) and answer anything else with a fresh
//! `id`, for multi-request jobs to chain on; `openai` and `anthropic` also serve their batch
//! APIs (`openai_batch.rs`, `batch.rs`) in compressed time.

mod batch;
mod bucket;
pub mod clock;
pub mod fault;
mod limits;
pub mod listing;
mod openai_batch;
mod profiles;
pub mod provider;
pub mod server;
mod spec;
mod window;

pub use fault::{Fault, Faults, Rate};
pub use provider::{MockRequest, MockResponse, MockStats, Provider, Record};
pub use server::{MockHandle, MockServer};
pub use spec::{MockError, MockSpec, Profile, parse_window};
