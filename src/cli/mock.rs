//! `ratebound mock`: the built-in rate-limited API on 127.0.0.1, until Ctrl-C.
//!
//! Turns the flags into a [`MockSpec`] (each bad flag is a usage error naming it) and
//! serves it; the provider logic lives in the mock itself.

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{EXIT_OK, UsageError};
use crate::clock::SystemClock;
use crate::mock::{MockSpec, Profile};

#[derive(Args, Debug)]
pub(super) struct MockArgs {
    /// Provider to emulate, by its header dialect: openai, anthropic, github, x, generic,
    /// ietf or zendesk; or leaky (nginx's limit_req: --rate, --burst, --nodelay, --status,
    /// no rate-limit headers).
    #[arg(long, default_value = "openai")]
    profile: String,
    /// Port on 127.0.0.1 [default: any free port].
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Requests per minute (a bucket of N refilled continuously).
    #[arg(long)]
    rpm: Option<u64>,
    /// Requests per second (a bucket of N refilled continuously).
    #[arg(long)]
    rps: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// A fixed window, e.g. `180/15m`: at most N requests (for x, calls) in each window of
    /// DURATION, windows aligned to UTC.
    #[arg(long, value_name = "N/DURATION")]
    window: Option<String>,
    /// How full every bucket starts, from 0 (empty, as after another client drained it)
    /// to 1 (full, the default).
    #[arg(long, value_name = "SHARE")]
    fill: Option<f64>,
    /// leaky: the rate the bucket leaks at, nginx's `Nr/s` or `Nr/m`, e.g. `50r/s`.
    #[arg(long, value_name = "Nr/s")]
    rate: Option<String>,
    /// leaky: requests admitted above the rate (nginx's burst).
    #[arg(long, value_name = "N", default_value_t = 0)]
    burst: u64,
    /// leaky: serve the burst at once instead of queueing each request until the excess
    /// drains.
    #[arg(long)]
    nodelay: bool,
    /// leaky: the status of a refusal, 429 or 503 (nginx's default).
    #[arg(long, default_value_t = 429)]
    status: u16,
    /// Latency of every response, e.g. `50ms`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    latency: Duration,
    /// Send no rate-limit headers, and no `retry-after` on a 429 (unless --retry-after).
    #[arg(long)]
    no_headers: bool,
    /// Keep a plain `retry-after` on a 429 under --no-headers (and for the x and leaky
    /// profiles, which send none): the other bare form of a 429.
    #[arg(long)]
    retry_after: bool,
    /// After N requests answered 200, answer every request with OpenAI's
    /// `insufficient_quota` 429 (no `retry-after`).
    #[arg(long, value_name = "N")]
    quota_requests: Option<u64>,
    /// Share of requests (0 to 1) answered 500 `server_error`, without counting against the
    /// limits.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of requests (0 to 1) answered by dropping the connection.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    reset_rate: f64,
    /// Share of requests (0 to 1) delayed by --slow instead of --latency.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    slow_rate: f64,
    /// How long a slow request takes, e.g. `30s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    slow: Duration,
    /// Seed of the choice of faulty requests: the same seed, the same sequence.
    #[arg(long, default_value_t = crate::mock::fault::DEFAULT_SEED)]
    seed: u64,
}

/// Starts the mock on 127.0.0.1 and serves until Ctrl-C.
pub(super) async fn mock(args: MockArgs) -> anyhow::Result<u8> {
    let usage = |e: crate::mock::MockError| {
        let (message, hint) = e.parts();
        UsageError { message, hint }
    };
    let profile = args.profile.parse::<Profile>().map_err(usage)?;
    let positive = |n: Option<u64>, flag: &str| -> anyhow::Result<_> {
        n.map(|n| {
            std::num::NonZeroU64::new(n).ok_or_else(|| UsageError {
                message: format!("--{flag} must be positive, found `0`"),
                hint: format!("leave --{flag} out for no limit"),
            })
        })
        .transpose()
        .map_err(Into::into)
    };
    let rate = |share: f64, flag: &str| -> anyhow::Result<crate::mock::Rate> {
        crate::mock::Rate::new(share).ok_or_else(|| {
            UsageError {
                message: format!("--{flag} must be a share from 0 to 1, found `{share}`"),
                hint: format!("e.g. `--{flag} 0.1` for one request in ten"),
            }
            .into()
        })
    };
    let faults = crate::mock::Faults {
        headers: !args.no_headers,
        quota_requests: args.quota_requests,
        fail_rate: rate(args.fail_rate, "fail-rate")?,
        reset_rate: rate(args.reset_rate, "reset-rate")?,
        slow_rate: rate(args.slow_rate, "slow-rate")?,
        slow: args.slow,
        seed: args.seed,
        auth: None,
        retry_after: args.retry_after,
    };
    let spec = MockSpec {
        profile,
        rpm: positive(args.rpm, "rpm")?,
        rps: positive(args.rps, "rps")?,
        tpm: positive(args.tpm, "tpm")?,
        window: (args.window.as_deref())
            .map(crate::mock::parse_window)
            .transpose()
            .map_err(|_| UsageError {
                message: format!(
                    "--window must be N/DURATION, found `{}`",
                    args.window.as_deref().unwrap_or_default()
                ),
                hint: "e.g. `--window 180/15m`: at most 180 in each UTC-aligned 15-minute window"
                    .into(),
            })?,
        latency: args.latency,
        faults,
        ..MockSpec::new(profile)
    };
    let spec = leaky_args(spec, &args).map_err(usage)?;
    spec.check().map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let addr = listener.local_addr()?;
    let provider = std::sync::Arc::new(crate::mock::provider::Provider::new(
        spec,
        SystemClock::new(),
    ));
    println!(
        "mock: {} listening on http://{addr} (Ctrl-C to stop)",
        args.profile
    );
    crate::mock::server::serve(listener, provider, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(EXIT_OK)
}

/// `spec` with the leaky-bucket and fill flags of `args`, checked as a URL's would be.
fn leaky_args(mut spec: MockSpec, args: &MockArgs) -> Result<MockSpec, crate::mock::MockError> {
    let fill = args.fill.map(|f| format!("fill={f}"));
    let rate = args.rate.as_ref().map(|r| format!("rate={r}"));
    let given = [fill, rate, Some(format!("status={}", args.status))];
    let query = given.into_iter().flatten().collect::<Vec<_>>().join("&");
    let parsed = MockSpec::parse_url(&format!("mock://leaky?{query}"))?;
    (spec.fill, spec.rate, spec.status) = (parsed.fill, parsed.rate, parsed.status);
    (spec.burst, spec.nodelay) = (args.burst, args.nodelay);
    Ok(spec)
}
