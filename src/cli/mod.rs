//! The command line: arguments, one file per command, and exit codes.
//!
//! Owns the documented exit codes and the single function that maps an error to one
//! ([`exit_code`]). Each command is a short pipeline in its own file; what `run` and
//! `estimate` share (the config, the validated work list, the scheduling plan) is built once
//! by [`prepare`] before anything is sent.

mod batch;
mod control;
mod estimate;
mod export;
mod mock;
pub mod prepare;
mod queueing;
mod report;
mod retry_failed;
mod run;
mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::worklist::WorklistError;

pub use prepare::InputErrors;

/// Every item is done.
pub const EXIT_OK: u8 = 0;
/// Finished with permanent failures, or stopped because the API refused the credentials.
pub const EXIT_FAILURES: u8 = 1;
/// Usage, config or input error; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Paused on a quota or budget; resume later.
pub const EXIT_PAUSED: u8 = 75;
/// The API is unreachable (every attempt failed to connect for `[retry]
/// unreachable_after`); nothing was marked failed, run the same command again when it is
/// back (sysexits' `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Interrupted (Ctrl-C); run the same command again to continue.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Bulk job runner for rate-limited HTTP APIs: uses the whole allowed rate, never more,
/// and survives every interruption.
#[derive(Parser, Debug)]
#[command(name = "ratebound", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start or continue a run of WORKLIST (the same db continues where it stopped).
    Run(run::RunArgs),
    /// Show a run's progress, limits and ETA, live or stopped.
    Status(status::StatusArgs),
    /// Write finished items' results as JSONL or CSV.
    Export(export::ExportArgs),
    /// Write one self-contained HTML file with the run's charts and summary.
    Report(report::ReportArgs),
    /// Predict a run before sending anything: time, cost, binding limit, quota periods,
    /// workers needed and the deadline.
    Estimate(estimate::EstimateArgs),
    /// Pause a live run: no new requests, those in flight finish; the process stays.
    Pause(control::DbArgs),
    /// Resume a paused live run, or continue a stopped one with its work list and config.
    Resume(control::DbArgs),
    /// Put permanently failed items back in the queue; the next `run` sends them again.
    RetryFailed(control::DbArgs),
    /// Run the built-in rate-limited mock API.
    Mock(mock::MockArgs),
    /// Ask the provider to cancel a run's open batches (`run --via batch|auto`) and pause it.
    CancelBatches(batch::CancelArgs),
}

/// A mistake in how ratebound was called.
#[derive(Debug, thiserror::Error)]
#[error("{message}\n  hint: {hint}")]
pub struct UsageError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Maps an error to its documented exit code by walking its chain.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<WorklistError>()
            || cause.is::<InputErrors>()
            || cause.is::<UsageError>()
        {
            return EXIT_USAGE;
        }
        if let Some(e) = cause.downcast_ref::<StoreError>()
            && e.is_usage()
        {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILURES
}

/// Runs the chosen command and returns its exit code.
pub fn main(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => runtime()?.block_on(run::run(args)),
        Command::Status(args) => status::status(&args),
        Command::Export(args) => export::export(&args),
        Command::Report(args) => report::report(&args),
        Command::Estimate(args) => estimate::estimate(&args),
        Command::Pause(args) => control::pause(&args),
        Command::Resume(args) => control::resume(args),
        Command::RetryFailed(args) => retry_failed::retry_failed(&args),
        Command::Mock(args) => runtime()?.block_on(mock::mock(args)),
        Command::CancelBatches(args) => runtime()?.block_on(batch::cancel_batches(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Writes a command's output to stdout. A closed pipe (`| head`) is an io error that
/// `main` turns into a quiet exit 0, where `print!` would panic.
fn out(text: &str) -> std::io::Result<()> {
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
}

/// The config file given, or `ratebound.toml` in the current folder.
fn config_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let local = PathBuf::from("ratebound.toml");
    if local.exists() {
        return Ok(local);
    }
    Err(UsageError {
        message: "no config: --config was not given and there is no ratebound.toml here".into(),
        hint: "pass --config FILE, or copy sample-config.toml to ratebound.toml and edit it".into(),
    }
    .into())
}

/// Refuses `--workers 0`.
fn check_workers(workers: Option<usize>) -> Result<(), UsageError> {
    if workers == Some(0) {
        return Err(UsageError {
            message: "--workers must be at least 1".into(),
            hint: "leave it out to use `[workers] max` from the config".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
