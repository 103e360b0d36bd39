//! `ratebound estimate`: a dry run of the work list in virtual time, through the same
//! preparation, limiter and scheduler as `run`, with latencies fixed, fitted or recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Args;

use super::prepare::{self, Prepared};
use super::{EXIT_OK, UsageError, out};
use crate::estimate::{self, Latency, Pricer, RecordedRun, SimItem, SimList, SimListBuilder};
use crate::report;
use crate::spill::{self, Spill};
use crate::store::Recorded;

#[derive(Args, Debug)]
pub(super) struct EstimateArgs {
    /// The work list to predict.
    pub(super) worklist: PathBuf,
    /// The config file [default: ratebound.toml in the current folder].
    #[arg(short, long)]
    pub(super) config: Option<PathBuf>,
    /// Latency of every request, e.g. `800ms`, or `p50=800ms,p95=2s` for a lognormal
    /// fitted to two percentiles (drawn from a fixed seed) [default: 500ms].
    #[arg(long, value_parser = Latency::parse, conflicts_with = "from_db")]
    pub(super) latency: Option<Latency>,
    /// Take latencies and token usage from a previous run's db (opened read-only).
    #[arg(long, value_name = "PREVIOUS.db")]
    pub(super) from_db: Option<PathBuf>,
    /// Check the run against this deadline, e.g. `6h` or `3d`, and say what would make it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(super) deadline: Option<Duration>,
    /// When the run would start (RFC 3339, UTC, e.g. `2026-11-24T09:00:00Z`), so calendar
    /// quotas reset where they will [default: now].
    #[arg(long, value_parser = crate::config::parse_start)]
    pub(super) start: Option<SystemTime>,
    /// Workers to simulate (overrides `[workers] max`).
    #[arg(short, long)]
    pub(super) workers: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(super) json: bool,
    /// Model a lane: `batch` (everything through the Batch API) or `auto` (online what
    /// --deadline needs, the rest through batches): cost, finish, batches and the split.
    #[arg(long, value_enum, default_value = "online")]
    pub(super) via: super::batch::Via,
}

/// Prepares as `run` does, simulates, and prints the estimate.
pub(super) fn estimate(args: &EstimateArgs) -> anyhow::Result<u8> {
    let (e, prepared) = simulate(args)?;
    let config = &prepared.config;
    let plan = super::batch::estimate_plan(config, &e, args.via, args.deadline);
    let text = match (args.json, &plan) {
        (true, None) => format!("{}\n", serde_json::to_string_pretty(&e)?),
        (true, Some(plan)) => {
            let mut v = serde_json::to_value(&e)?;
            v["plan"] = serde_json::to_value(plan)?;
            format!("{}\n", serde_json::to_string_pretty(&v)?)
        }
        (false, plan) => {
            let text = report::estimate::render(&e);
            let via = format!("{:?}", args.via).to_lowercase();
            text + &plan
                .as_ref()
                .map(|p| super::batch::render_split(p, &via))
                .unwrap_or_default()
        }
    };
    out(&text)?;
    Ok(EXIT_OK)
}

/// Prepares as `run` does and simulates.
pub(super) fn estimate_of(args: &EstimateArgs) -> anyhow::Result<estimate::Estimate> {
    Ok(simulate(args)?.0)
}

/// The estimate of the online run, and what it was prepared from.
fn simulate(args: &EstimateArgs) -> anyhow::Result<(estimate::Estimate, Prepared)> {
    let start = args.start.unwrap_or_else(SystemTime::now);
    let prepared = prepare::prepare(args.config.clone(), args.workers, &args.worklist, start)?;
    let recorded = args.from_db.as_deref().map(recorded_run).transpose()?;
    let latency = match (&recorded, &args.latency) {
        (Some(r), _) => r.latency.clone(),
        (None, Some(l)) => l.clone(),
        (None, None) => Latency::Fixed(Duration::from_millis(500)),
    };
    let items = sim_items(&prepared, args, recorded.as_ref())?;
    let config = &prepared.config;
    let setup = estimate::Setup {
        items: &items,
        limits: &config.limits,
        jitter: config.jitter,
        start,
        latency: &latency,
        seed: estimate::SEED,
        failure_share: recorded.as_ref().map_or(0.0, |r| r.failure_share),
        retry: &config.retry,
        policy: prepared.plan.as_ref().map(|plan| &plan.policy),
    };
    let e = estimate::estimate(&setup, config.workers.max(1), args.deadline)?;
    if let Some(e) = items.read_error() {
        anyhow::bail!(
            "{}: reading the sorted work list back from its temporary file: {e}",
            args.worklist.display()
        );
    }
    Ok((e, prepared))
}

/// The latencies, usage and failure share recorded in a previous run's db.
fn recorded_run(db: &Path) -> anyhow::Result<RecordedRun> {
    let r = Recorded::read(db)?;
    Ok(
        RecordedRun::new(&r.latencies_ms, &r.usage, r.transient, r.attempts).map_err(|_| UsageError {
            message: format!(
                "{}: the run in this db has no successful attempt to take latencies from",
                db.display()
            ),
            hint: "point --from-db at the db of a run that finished some items, or give --latency instead".into(),
        })?,
    )
}

/// Every item of the validated work list as the simulation sees it: cost, lane and price.
///
/// One streaming pass that keeps no id, only a 64-bit hash of each. The work list is read a
/// second time, keeping every id as `run` does, only when two hashes are equal (a duplicate
/// id, or rarely two ids that hash alike) or the first pass found a problem: then the
/// errors are exactly those of `run`, duplicates named with both their lines.
fn sim_items(
    prepared: &Prepared,
    args: &EstimateArgs,
    recorded: Option<&RecordedRun>,
) -> anyhow::Result<SimList> {
    let pricer = Pricer {
        pricing: &prepared.config.pricing,
        batch: &prepared.config.batch,
        recorded,
    };
    let mut items = SimListBuilder::default();
    // Sorted on disk beyond a chunk, as the entries are: memory stays flat in the list's size.
    let mut ids = Spill::new(spill::CHUNK);
    let read = prepared.validate(
        &args.worklist,
        prepare::Ids::Stored,
        |item, built, route| {
            ids.push(crate::worklist::id_hash(&item.id));
            let mut sim = SimItem::new(item.priority, item.seq, built.costs.clone(), route);
            sim.lane = prepared.lane_of(built, item.priority);
            pricer.apply(
                &mut sim,
                &item.id,
                built.model.as_deref(),
                built.prompt_tokens,
                built.max_tokens,
            );
            items.push(sim);
        },
    );
    let sort_err = |e| {
        anyhow::anyhow!(
            "{}: sorting the work list in a temporary file: {e}\n  hint: set TMPDIR to a directory with room (about 28 bytes per item)",
            args.worklist.display()
        )
    };
    let ids = ids.finish().map_err(sort_err)?;
    let repeated = !crate::worklist::repeats(ids.iter()).is_empty();
    if let Some(e) = ids.read_error() {
        return Err(sort_err(e));
    }
    drop(ids);
    if read.is_err() || repeated {
        prepared.validate(&args.worklist, prepare::Ids::Read, |_, _, _| {})?;
    }
    read?;
    items.build().map_err(sort_err)
}
