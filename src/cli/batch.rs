//! The batch lane's commands: `run --via batch` (and the batch half of `--via auto`), and
//! `ratebound cancel-batches`.
//!
//! Builds the lane from the prepared config (`[batch]`, the API's headers, the request
//! template) and runs it on the run's db; the lane itself lives in `crate::batch`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::prepare::{Prepared, Validated};
use super::{EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, UsageError, out};
use crate::batch::{BatchClient, BatchLane, LaneEnd, LaneSummary, Rendered, Renderer, Scope};
use crate::config::{BatchApi, Config};
use crate::job::{CostModel, from_stored};
use crate::store::Store;

/// Which lane `run` sends items through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(super) enum Via {
    /// Requests one by one, as fast as the limits allow (the default).
    #[default]
    Online,
    /// The provider's Batch API (`[batch]`): half price, within its completion window.
    Batch,
    /// Online what `--deadline` needs, the rest through batches.
    Auto,
}

/// `[batch]` of `config`, or a usage error saying how to add it.
pub(super) fn batch_api(config: &Config) -> Result<BatchApi, UsageError> {
    config.batch_api.clone().ok_or_else(|| UsageError {
        message: format!(
            "{}: `--via batch` needs a `[batch]` table in the config",
            config.path.display()
        ),
        hint: "add `[batch]` with `provider = \"openai\"` (or \"anthropic\"); sample-config.toml documents its keys".into(),
    })
}

/// Renders stored items with the config's request template, as the online lane does.
fn renderer(config: &Config) -> Renderer {
    let spec = config.request.clone();
    let model = CostModel::from_config(config);
    Box::new(move |row| {
        let built =
            from_stored(&spec, &row.payload, row.tokens, &model).map_err(|e| e.to_string())?;
        if built.steps.is_some() {
            return Err(
                "multi-request jobs (`[[kinds.NAME.steps]]`) cannot go through a batch".into(),
            );
        }
        Ok(Rendered {
            method: built.request.method,
            body: built.request.body.unwrap_or_else(|| "{}".into()),
            path: built.request.path,
            tokens: row.tokens.unwrap_or(built.prompt_tokens + built.max_tokens),
        })
    })
}

/// The key prefix of the run's batches: the work list's fingerprint and the run's start, so
/// two runs on one account never claim each other's batches.
fn key_prefix(store: &Store, validated: &Validated) -> anyhow::Result<String> {
    let started = store.meta("started_at_ms")?.unwrap_or_default();
    let fp: String = (validated.fingerprint.chars())
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    Ok(format!("rb-{fp}-{started}"))
}

/// The batch lane of this run over the db at `db`.
pub(super) fn lane(
    prepared: &Prepared,
    validated: &Validated,
    db: &std::path::Path,
    base_url: &str,
    headers: &[(String, String)],
    scope: Scope,
    quiet: bool,
) -> anyhow::Result<BatchLane> {
    let config = &prepared.config;
    let api = batch_api(config)?;
    let store = Store::open(db)?;
    let client = BatchClient::new(
        base_url,
        headers,
        api.provider,
        api.window,
        config.api.timeout,
    )?;
    Ok(BatchLane {
        client,
        key_prefix: key_prefix(&store, validated)?,
        store,
        api,
        retry: config.retry.clone(),
        render: renderer(config),
        scope,
        say: Box::new(move |line| {
            if !quiet {
                let _ = out(&format!("{line}\n"));
            }
        }),
    })
}

/// The summary line of the batch lane and the exit code it calls for.
pub(super) fn finish(summary: &LaneSummary, store: &Store, quiet: bool) -> anyhow::Result<u8> {
    let counts = store.counts()?;
    let batches = store.batches(false)?.len();
    if !quiet || summary.end != LaneEnd::Finished {
        out(&format!(
            "batch lane: {} done, {} failed, {} pending; {batches} batches in all, {} created this session\n",
            counts.done, counts.failed, counts.pending, summary.created
        ))?;
    }
    Ok(match summary.end {
        LaneEnd::Interrupted => {
            out(
                "stopped: open batches stay with the provider; run the same command again to collect them\n",
            )?;
            EXIT_INTERRUPTED
        }
        LaneEnd::Finished if counts.failed > 0 => EXIT_FAILURES,
        LaneEnd::Finished => EXIT_OK,
    })
}

/// Writes the batch lane's heartbeat every second while `--via batch` runs, so `status`
/// and `pause` see a live run.
pub(super) fn heartbeat(db: PathBuf) -> tokio::task::JoinHandle<()> {
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        let Ok(store) = Store::open(&db) else { return };
        loop {
            let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if store.batch_heartbeat("running", elapsed).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// `run --via batch`: every pending item through the Batch API, until all are done.
pub(super) async fn run_batch(
    args: &super::run::RunArgs,
    prepared: &Prepared,
    validated: &Validated,
    db: &std::path::Path,
    headers: &[(String, String)],
) -> anyhow::Result<u8> {
    let config = &prepared.config;
    let (base_url, _mock) = super::run::base_url(&config.api.base_url, &config.path).await?;
    let lane = lane(
        prepared,
        validated,
        db,
        &base_url,
        headers,
        Scope::All,
        args.quiet,
    )?;
    let started = std::time::Instant::now();
    let beat = heartbeat(db.to_path_buf());
    let summary = lane.run(super::run::stop_on_signals()).await;
    beat.abort();
    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let store = Store::open(db)?;
    let state = match &summary {
        Ok(s) if s.end == LaneEnd::Finished => "finished",
        _ => "stopped",
    };
    store.batch_heartbeat(state, elapsed)?;
    finish(&summary?, &store, args.quiet)
}

#[derive(Args, Debug)]
pub(super) struct CancelArgs {
    /// The run's database.
    #[arg(long)]
    db: PathBuf,
    /// The config file [default: the one the run recorded].
    #[arg(short, long)]
    config: Option<PathBuf>,
}

/// `ratebound cancel-batches`: asks the provider to cancel the run's open batches and
/// pauses the run, so a live one submits no more. Their finished requests are still
/// collected by the next `run`; the rest go back in the queue.
pub(super) async fn cancel_batches(args: CancelArgs) -> anyhow::Result<u8> {
    let mut store = Store::open_existing(&args.db)?;
    let config_path = match args.config {
        Some(path) => path,
        None => PathBuf::from(store.meta("config_path")?.ok_or_else(|| UsageError {
            message: format!("{}: the run does not record its config", args.db.display()),
            hint: "pass --config FILE".into(),
        })?),
    };
    let config = Config::load(&config_path)?;
    let api = batch_api(&config)?;
    let headers = config.api.resolve_headers(&config.path)?;
    if config.api.base_url.starts_with("mock://") {
        return Err(UsageError {
            message: "a `mock://` API lives only inside its run; its batches end with it".into(),
            hint: "run the mock with `ratebound mock` and point `base_url` at it".into(),
        }
        .into());
    }
    let client = BatchClient::new(
        &config.api.base_url,
        &headers,
        api.provider,
        api.window,
        config.api.timeout,
    )?;
    store.set_paused(true)?;
    let cancelled = crate::batch::driver::cancel_open(&client, &mut store).await?;
    out(&format!(
        "{}: asked the provider to cancel {cancelled} batches; the run is paused (`ratebound resume --db ...` goes on; the next run collects what they finished)\n",
        args.db.display()
    ))?;
    Ok(EXIT_OK)
}
