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
use crate::batch::plan::{PlanInput, Split};
use crate::batch::{BatchClient, BatchLane, LaneEnd, LaneSummary, Rendered, Renderer, Scope};
use crate::config::{BatchApi, Config};
use crate::job::{CostModel, from_stored};
use crate::limiter::Unit;
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
            usd_micro: built.costs.get(&Unit::Usd),
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

/// The batch discount of the config's pricing (the first model offering one), else half.
fn batch_discount(config: &Config) -> f64 {
    config.batch.values().next().map_or(0.5, |t| t.discount)
}

/// The plan's input for the pending items `sizes` (their tokens) costing `usd_micro` in
/// all online: the online makespan at the config's binding rate (as auto-workers computes
/// it).
pub(super) fn plan_input(
    config: &Config,
    sizes: &[crate::batch::lifecycle::ItemSize],
    usd_micro: u64,
    deadline: Option<Duration>,
) -> PlanInput {
    let tokens: u64 = sizes.iter().map(|s| s.tokens).sum();
    let n = sizes.len().max(1) as f64;
    let mean = |unit: &Unit| match unit {
        Unit::Requests => 1.0,
        Unit::Tokens => tokens as f64 / n,
        Unit::Usd => usd_micro as f64 / n,
        Unit::Custom(_) => 0.0,
    };
    let rate = crate::scheduler::workers::binding_jobs_per_s(&config.limits, mean)
        .unwrap_or(config.workers as f64 * 2.0);
    PlanInput {
        items: sizes.len() as u64,
        tokens,
        online_makespan: Duration::from_secs_f64(sizes.len() as f64 / rate.max(1e-9)),
        online_cost_usd: usd_micro as f64 / 1e6,
        batch_discount: batch_discount(config),
        deadline,
    }
}

/// The plan as a line.
pub(super) fn render_split(split: &Split, via: &str) -> String {
    let deadline = match split.meets_deadline {
        Some(true) => ", within the deadline",
        Some(false) => ", AFTER the deadline",
        None => "",
    };
    format!(
        "plan (--via {via}): {} items online, {} through {} batches; expected cost ${:.2} (all online: ${:.2}); expected finish in {}{deadline}\n",
        split.online_items,
        split.batch_items,
        split.batches,
        split.cost_usd,
        split.online_only_cost_usd,
        humantime::format_duration(Duration::from_secs(split.finish_s.ceil() as u64)),
    )
}

/// `estimate --via batch|auto`: the plan over the estimate's online makespan and cost, with
/// `[batch]` (or OpenAI's defaults when the config has none); `None` for `--via online`.
pub(super) fn estimate_plan(
    config: &Config,
    e: &crate::estimate::Estimate,
    via: Via,
    deadline: Option<Duration>,
) -> Option<Split> {
    let api = (config.batch_api.clone())
        .unwrap_or_else(|| BatchApi::new(crate::config::BatchProvider::OpenAi));
    let input = PlanInput {
        items: e.items,
        tokens: e.tokens,
        online_makespan: Duration::from_secs_f64(e.makespan_s.max(0.0)),
        online_cost_usd: e.cost_usd,
        batch_discount: batch_discount(config),
        deadline,
    };
    match via {
        Via::Online => None,
        Via::Batch => Some(crate::batch::plan::all_batch(&input, &api)),
        Via::Auto => Some(crate::batch::plan::auto(&input, &api)),
    }
}

/// `--via auto`: plans the split, prints it, and cuts the batch share (the last items in
/// scheduler order; the online lane takes the first) into batches, so the online queue
/// leaves them out. A rerun keeps the split it made.
pub(super) fn split_for_auto(
    args: &super::run::RunArgs,
    prepared: &Prepared,
    validated: &Validated,
    db: &std::path::Path,
) -> anyhow::Result<()> {
    let config = &prepared.config;
    let api = batch_api(config)?;
    let mut store = Store::open(db)?;
    if !store.batches(false)?.is_empty() {
        return Ok(());
    }
    let renderer = renderer(config);
    let (sizes, usd_micro) = crate::batch::driver::pending_sizes(&store, &api, &renderer)?;
    let input = plan_input(config, &sizes, usd_micro, args.deadline);
    let planned = crate::batch::plan::auto(&input, &api);
    // Whole items pack less tightly than the plan's mean: while the batch share needs more
    // batches than planned, its first items go online instead.
    let mut batched = usize::try_from(planned.batch_items).unwrap_or(sizes.len());
    loop {
        let tail = &sizes[sizes.len() - batched..];
        let cuts = crate::batch::lifecycle::cut(tail.iter().copied(), &api);
        let extra: usize = (cuts
            .iter()
            .skip(usize::try_from(planned.batches).unwrap_or(0)))
        .map(|c| c.seqs.len())
        .sum();
        if extra == 0 {
            break;
        }
        batched -= extra.min(batched);
    }
    let split = crate::batch::plan::split(&input, &api, batched as u64);
    if !args.quiet {
        out(&render_split(&split, "auto"))?;
    }
    let prefix = key_prefix(&store, validated)?;
    let tail = &sizes[sizes.len() - batched..];
    crate::batch::driver::cut_sizes(&mut store, &api, &prefix, tail)?;
    Ok(())
}

/// The batch lane's task beside the online runner.
pub(super) type LaneTask = tokio::task::JoinHandle<Result<LaneSummary, crate::batch::LaneError>>;

/// Starts the batch lane of `--via auto` beside the online runner: it works the batches
/// the split cut and any of their items that come back.
pub(super) fn spawn_lane(
    prepared: &Prepared,
    validated: &Validated,
    db: &std::path::Path,
    base_url: &str,
    headers: &[(String, String)],
    stop: tokio::sync::watch::Receiver<u32>,
    quiet: bool,
) -> anyhow::Result<LaneTask> {
    let lane = lane(
        prepared,
        validated,
        db,
        base_url,
        headers,
        Scope::Returned,
        quiet,
    )?;
    Ok(tokio::spawn(lane.run(stop)))
}

/// Waits for the batch lane of `--via auto` after the online runner ended with exit code
/// `online`; returns the run's exit code.
pub(super) async fn join_lane(
    lane: LaneTask,
    online: u8,
    db: &std::path::Path,
    quiet: bool,
) -> anyhow::Result<u8> {
    if online != EXIT_OK && online != EXIT_FAILURES {
        lane.abort();
        return Ok(online);
    }
    let summary = lane.await??;
    let code = finish(&summary, &Store::open(db)?, quiet)?;
    Ok(code.max(online))
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
