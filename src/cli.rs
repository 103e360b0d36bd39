//! The command line: arguments, the pipeline of each command, and exit codes.
//!
//! Owns the documented exit codes and the single function that maps an error to one
//! ([`exit_code`]). `run` is the whole pipeline in order: config → work list validation
//! (every item rendered before the first request) → store import → scheduler and limiter →
//! runner → summary.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock, unix_ms};
use crate::config::Tenants;
use crate::config::{Config, ConfigError};
use crate::estimate::{self, Latency, Pricer, RecordedRun, SimItem};
use crate::job::{self, Built, CostModel};
use crate::limiter::redis::RedisLimiter;
use crate::limiter::{Costs, Limiter, Route, shared};
use crate::mock::{MockSpec, Profile};
use crate::queue::fingerprint::{self, Fingerprint};
use crate::queue::{Imported, Inserter, StoreFeed};
use crate::report::{self, export, progress::Progress, status};
use crate::runner::transport::HttpTransport;
use crate::runner::{Before, End, Feedback, Runner, Settings};
use crate::scheduler::{AutoWorkers, Policy, Scheduler, workers::binding_jobs_per_s};
use crate::shard::Shard;
use crate::store::{ImportRow, Recorded, Store, StoreError, Writer};
use crate::worklist::{Item, WorklistError, WorklistReader};

/// Every item is done.
pub const EXIT_OK: u8 = 0;
/// Finished with permanent failures, or stopped because the API refused the credentials.
pub const EXIT_FAILURES: u8 = 1;
/// Usage, config or input error; nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Paused on a quota or budget; resume later.
pub const EXIT_PAUSED: u8 = 75;
/// Interrupted (Ctrl-C); run the same command again to continue.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Most input problems reported at once.
const MAX_PROBLEMS: usize = 20;

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
    Run(RunArgs),
    /// Show a run's progress, limits and ETA, live or stopped.
    Status(StatusArgs),
    /// Write finished items' results as JSONL or CSV.
    Export(ExportArgs),
    /// Predict a run before sending anything: time, cost, binding limit, quota periods,
    /// workers needed and the deadline.
    Estimate(EstimateArgs),
    /// Pause a live run: no new requests, those in flight finish; the process stays.
    Pause(DbArgs),
    /// Resume a paused live run, or continue a stopped one with its work list and config.
    Resume(DbArgs),
    /// Put permanently failed items back in the queue; the next `run` sends them again.
    RetryFailed(DbArgs),
    /// Run the built-in rate-limited mock API.
    Mock(MockArgs),
}

#[derive(Args, Debug)]
struct EstimateArgs {
    /// The work list to predict.
    worklist: PathBuf,
    /// The config file [default: ratebound.toml in the current folder].
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Latency of every request, e.g. `800ms`, or `p50=800ms,p95=2s` for a lognormal
    /// fitted to two percentiles (drawn from a fixed seed) [default: 500ms].
    #[arg(long, value_parser = Latency::parse, conflicts_with = "from_db")]
    latency: Option<Latency>,
    /// Take latencies and token usage from a previous run's db (opened read-only).
    #[arg(long, value_name = "PREVIOUS.db")]
    from_db: Option<PathBuf>,
    /// Check the run against this deadline, e.g. `6h` or `3d`, and say what would make it.
    #[arg(long, value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// When the run would start (RFC 3339, UTC, e.g. `2026-11-24T09:00:00Z`), so calendar
    /// quotas reset where they will [default: now].
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    start: Option<SystemTime>,
    /// Workers to simulate (overrides `[workers] max`).
    #[arg(short, long)]
    workers: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The work list: CSV with a header row, or JSONL (OpenAI Batch input lines run as they are).
    worklist: PathBuf,
    /// The config file [default: ratebound.toml in the current folder].
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// The run's database [default: <worklist stem>.ratebound.db in the current folder].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Most requests in flight at once (overrides `[workers] max`).
    #[arg(short, long)]
    workers: Option<usize>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Work only shard I of N (1-based), split by item id; each shard needs its own --db.
    /// Runners sharing one API key share its limits through `[limiter] backend`.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
    /// On a rerun, hash the whole work list to check it is unchanged (by default its size,
    /// modification time and sampled blocks are compared, and the whole file is hashed only
    /// when its modification time moved).
    #[arg(long)]
    verify: bool,
}

#[derive(Args, Debug)]
struct DbArgs {
    /// The run's database.
    #[arg(long)]
    db: PathBuf,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// The run's database; several (`--db a.db --db b.db`, one per shard) are added up.
    #[arg(long, required = true)]
    db: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The run's database.
    #[arg(long)]
    db: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: export::Format,
    /// Output file [default: standard output].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only the items that failed permanently.
    #[arg(long)]
    failed: bool,
}

#[derive(Args, Debug)]
struct MockArgs {
    /// Provider to emulate, by its header dialect: openai, anthropic, github, x, generic,
    /// ietf or zendesk.
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
    /// Latency of every response, e.g. `50ms`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    latency: Duration,
    /// Send no rate-limit headers, and no `retry-after` on a 429.
    #[arg(long)]
    no_headers: bool,
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

/// A mistake in how ratebound was called.
#[derive(Debug, thiserror::Error)]
#[error("{message}\n  hint: {hint}")]
pub struct UsageError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Every problem found in the work list, reported together before anything is sent.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", problems.join("\nerror: "), more_note(*more))]
pub struct InputErrors {
    /// One rendered problem each: `FILE:LINE: ...` and a hint.
    pub problems: Vec<String>,
    /// Problems beyond the cap, not shown.
    pub more: usize,
}

impl InputErrors {
    fn push(&mut self, problem: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.more += 1;
        }
    }
}

fn more_note(more: usize) -> String {
    if more == 0 {
        String::new()
    } else {
        format!("\nerror: ... and {more} more problems (fix these and run again to see them)")
    }
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
            && matches!(
                e,
                StoreError::WorklistChanged { .. } | StoreError::Missing { .. }
            )
        {
            return EXIT_USAGE;
        }
    }
    EXIT_FAILURES
}

/// Runs the chosen command and returns its exit code.
pub fn main(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Status(args) => status_command(&args),
        Command::Export(args) => export_command(&args),
        Command::Run(args) => runtime()?.block_on(run_command(args)),
        Command::Estimate(args) => estimate_command(&args),
        Command::Pause(args) => pause_command(&args, true),
        Command::Resume(args) => resume_command(args),
        Command::RetryFailed(args) => retry_failed_command(&args),
        Command::Mock(args) => runtime()?.block_on(mock_command(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn status_command(args: &StatusArgs) -> anyhow::Result<u8> {
    let now = SystemTime::now();
    let each = (args.db.iter())
        .map(|db| status::read(&Store::open_existing(db)?, now))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let s = status::aggregate(each);
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&s)?))?;
    } else {
        out(&status::render(&s))?;
    }
    Ok(EXIT_OK)
}

fn export_command(args: &ExportArgs) -> anyhow::Result<u8> {
    let store = Store::open_existing(&args.db)?;
    let mut count = 0u64;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create the export file", path.display()))?;
            store
                .with_results(args.failed, |rows| {
                    export::write(rows.inspect(|_| count += 1), args.format, file)
                })?
                .with_context(|| format!("{}: cannot write the export", path.display()))?;
            eprintln!("exported {count} items to {}", path.display());
        }
        None => store
            .with_results(args.failed, |rows| {
                export::write(rows, args.format, std::io::stdout().lock())
            })?
            .context("cannot write the export")?,
    }
    Ok(EXIT_OK)
}

async fn mock_command(args: MockArgs) -> anyhow::Result<u8> {
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
    };
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

fn pause_command(args: &DbArgs, paused: bool) -> anyhow::Result<u8> {
    let store = Store::open_existing(&args.db)?;
    if store.live_run()?.is_none() {
        return Err(UsageError {
            message: format!("{}: no live run to {}", args.db.display(), if paused { "pause" } else { "resume" }),
            hint: "`ratebound resume --db ...` continues a stopped run; `ratebound status --db ...` shows its state".into(),
        }
        .into());
    }
    store.set_paused(paused)?;
    out(&format!(
        "{}: {}\n",
        args.db.display(),
        if paused {
            "pausing: no new requests; those in flight finish (ratebound resume --db ... to go on)"
        } else {
            "resuming"
        }
    ))?;
    Ok(EXIT_OK)
}

fn resume_command(args: DbArgs) -> anyhow::Result<u8> {
    let store = Store::open_existing(&args.db)?;
    if store.live_run()?.is_some() {
        return pause_command(&args, false);
    }
    let missing = |what: &str| UsageError {
        message: format!("{}: the run does not record its {what}", args.db.display()),
        hint: "continue it with `ratebound run WORKLIST --config FILE --db ...`".into(),
    };
    let worklist = store
        .meta("worklist")?
        .ok_or_else(|| missing("work list"))?;
    let config = store
        .meta("config_path")?
        .ok_or_else(|| missing("config path"))?;
    let shard = store.meta("shard")?.and_then(|s| s.parse().ok());
    drop(store);
    runtime()?.block_on(run_command(RunArgs {
        worklist: PathBuf::from(worklist),
        config: Some(PathBuf::from(config)),
        db: Some(args.db),
        workers: None,
        quiet: false,
        shard,
        verify: false,
    }))
}

fn retry_failed_command(args: &DbArgs) -> anyhow::Result<u8> {
    let mut store = Store::open_existing(&args.db)?;
    let n = store.requeue_failed()?;
    out(&format!(
        "{n} failed items are pending again; `ratebound resume --db {}` sends them\n",
        args.db.display()
    ))?;
    Ok(EXIT_OK)
}

fn estimate_command(args: &EstimateArgs) -> anyhow::Result<u8> {
    let mut config = Config::load(&config_path(args.config.clone())?)?;
    if args.workers == Some(0) {
        return Err(UsageError {
            message: "--workers must be at least 1".into(),
            hint: "leave it out to use `[workers] max` from the config".into(),
        }
        .into());
    }
    // As `run` sets up: each tier tenant's own limits, and the classes and tenants.
    let plan = plan_scheduling(&args.worklist, &mut config)?;
    let start = args.start.unwrap_or_else(SystemTime::now);
    let limiter = Limiter::new(&config.limits)
        .with_jitter(config.jitter)
        .with_origin(start);
    let recorded = match &args.from_db {
        Some(db) => {
            let r = Recorded::read(db)?;
            Some(
                RecordedRun::new(&r.latencies_ms, &r.usage, r.transient, r.attempts).map_err(|_| UsageError {
                    message: format!(
                        "{}: the run in this db has no successful attempt to take latencies from",
                        db.display()
                    ),
                    hint: "point --from-db at the db of a run that finished some items, or give --latency instead".into(),
                })?,
            )
        }
        None => None,
    };
    let latency = match (&recorded, &args.latency) {
        (Some(r), _) => r.latency.clone(),
        (None, Some(l)) => l.clone(),
        (None, None) => Latency::Fixed(Duration::from_millis(500)),
    };
    let pricer = Pricer {
        pricing: &config.pricing,
        batch: &config.batch,
        recorded: recorded.as_ref(),
    };
    let mut items = Vec::new();
    validate(
        &args.worklist,
        &config,
        &limiter,
        Ids::Read,
        |item, built, route| {
            let mut sim = SimItem::new(item.priority, item.seq, built.costs.clone(), route);
            sim.lane = lane_of(&config, plan.as_ref(), built, item.priority);
            pricer.apply(
                &mut sim,
                &item.id,
                built.model.as_deref(),
                built.prompt_tokens,
                built.max_tokens,
            );
            items.push(sim);
        },
    )?;
    let workers = args.workers.unwrap_or(config.workers).max(1);
    let setup = estimate::Setup {
        items: &items,
        limits: &config.limits,
        jitter: config.jitter,
        start,
        latency: &latency,
        seed: estimate::SEED,
        failure_share: recorded.as_ref().map_or(0.0, |r| r.failure_share),
        retry: &config.retry,
        policy: plan.as_ref().map(|(policy, _)| policy),
    };
    let e = estimate::estimate(&setup, workers, args.deadline)?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&e)?)
    } else {
        report::estimate::render(&e)
    };
    out(&text)?;
    Ok(EXIT_OK)
}

/// Writes a command's output to stdout. A closed pipe (`| head`) is an io error that
/// `main` turns into a quiet exit 0, where `print!` would panic.
fn out(text: &str) -> std::io::Result<()> {
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
}

/// Who refuses duplicate ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ids {
    /// The reader, keeping every id seen.
    Read,
    /// The import's unique index.
    Stored,
}

/// Reads every item, renders its request and checks it can ever be admitted, collecting
/// every problem (up to a cap) before anything is sent.
///
/// `on_item` sees every valid item with its estimated cost and the limits it falls under.
fn validate(
    path: &Path,
    config: &Config,
    limiter: &Limiter,
    ids: Ids,
    mut on_item: impl FnMut(&Item, &Built, Route),
) -> anyhow::Result<u64> {
    let reader = match ids {
        Ids::Read => WorklistReader::open(path)?,
        Ids::Stored => WorklistReader::open(path)?.without_id_check(),
    };
    let cost_model = CostModel::from_config(config);
    let mut problems = InputErrors {
        problems: Vec::new(),
        more: 0,
    };
    if let Some(columns) = reader.columns() {
        let spec = &config.request;
        let steps = config.plans.values().flat_map(|plan| &plan.steps);
        let templates = [(&spec.path, spec.path_line, "path")]
            .into_iter()
            .chain(spec.body.as_ref().map(|b| (b, spec.body_line, "body")))
            .chain(steps.flat_map(|s| {
                std::iter::once((&s.path, s.path_line, "path"))
                    .chain(s.body.as_ref().map(|b| (b, s.body_line, "body")))
            }));
        for (template, line, key) in templates {
            // `steps.NAME...` reads an earlier response, checked with the config.
            for field in template.placeholders().filter(|f| !f.starts_with("steps.")) {
                // `id` is derived from the record number when the work list has no such column.
                if field != "id" && !columns.iter().any(|c| c == field) {
                    problems.push(format!(
                        "{}:{line}: `{key}` uses placeholder `{{{{{field}}}}}` but {} has no column `{field}`\n  hint: the columns are {}; rename the placeholder or add the column",
                        config.path.display(),
                        path.display(),
                        columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if !problems.problems.is_empty() {
            return Err(problems.into());
        }
    }
    let mut items = 0u64;
    read_ahead(reader, |item| {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                problems.push(e.to_string());
                return;
            }
        };
        items += 1;
        match job::build(&config.request, &item.payload, item.tokens, &cost_model) {
            Ok(built) => {
                let route = built.route(limiter);
                if let Err(never) = limiter.check_fits(&route, &built.costs) {
                    problems.push(format!(
                        "{}:{}: item `{}`: {never}\n  hint: raise the limit's burst, lower the item's `tokens` or `max_tokens`, or split the item",
                        path.display(),
                        item.line,
                        item.id
                    ));
                }
                on_item(item, &built, route);
            }
            Err(e) => problems.push(format!(
                "{}:{}: item `{}`: {e}\n  hint: check the item's fields against the request template in {}",
                path.display(),
                item.line,
                item.id,
                config.path.display()
            )),
        }
    });
    if problems.problems.is_empty() {
        Ok(items)
    } else {
        Err(problems.into())
    }
}

/// Records parsed per hand-over between the reading thread and the checking one.
const READ_AHEAD_BATCH: usize = 1024;

/// Feeds every record of `reader` to `each`, in file order, parsed on a second thread:
/// on a large work list reading and checking (rendering every request) overlap on two
/// cores. Batches go back to the reading thread to be freed and reused, so each thread
/// frees what it allocated (the allocator is slow at freeing another thread's memory).
fn read_ahead(reader: WorklistReader, mut each: impl FnMut(&Result<Item, WorklistError>)) {
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<_>>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<_>>();
        scope.spawn(move || {
            let mut reader = reader.peekable();
            while reader.peek().is_some() {
                let mut batch = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(READ_AHEAD_BATCH));
                batch.clear();
                batch.extend(reader.by_ref().take(READ_AHEAD_BATCH));
                if full_tx.send(batch).is_err() {
                    return;
                }
            }
            drop(full_tx);
            // Free the last batches here too.
            empty_rx.iter().for_each(drop);
        });
        for batch in full_rx {
            batch.iter().for_each(&mut each);
            let _ = empty_tx.send(batch);
        }
        drop(empty_tx);
    });
}

fn default_db(worklist: &Path) -> PathBuf {
    let stem = worklist
        .file_stem()
        .map_or_else(|| "run".to_string(), |s| s.to_string_lossy().into_owned());
    PathBuf::from(format!("{stem}.ratebound.db"))
}

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

async fn run_command(args: RunArgs) -> anyhow::Result<u8> {
    let config_path = config_path(args.config.clone())?;
    let mut config = Config::load(&config_path)?;
    if let Some(workers) = args.workers {
        if workers == 0 {
            return Err(UsageError {
                message: "--workers must be at least 1".into(),
                hint: "leave it out to use `[workers] max` from the config".into(),
            }
            .into());
        }
        config.workers = workers;
        config.auto_workers = false;
    }
    let shard = args.shard;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| default_db(&args.worklist));

    let store = Store::open(&db)?;
    // The last session's progress: who holds the db, the limiter state, the time spent.
    let last = store.progress()?;
    if let Some(progress) = last
        .as_ref()
        .filter(|p| p.is_live(unix_ms(SystemTime::now())))
    {
        return Err(UsageError {
            message: format!(
                "{}: another ratebound (pid {}) is running this db right now",
                db.display(),
                progress.pid
            ),
            hint: "wait for it, stop it with Ctrl-C, or watch it with `ratebound status --db ...`"
                .into(),
        }
        .into());
    }
    // The tenants come from the db when it was imported under this very config.
    let plan = match stored_tenants(&store, &config)? {
        Some(tenants) => {
            let (policy, limits) = config.scheduling.policy(&tenants);
            config.limits.extend(limits);
            Some((policy, tenants))
        }
        None => plan_scheduling(&args.worklist, &mut config)?,
    };
    let headers = config.api.resolve_headers(&config.path)?;
    let clock = SystemClock::new();
    let mut limiter = Limiter::new(&config.limits)
        .with_jitter(config.jitter)
        .with_origin(clock.wall_at(0));
    let (store, identity) = queue_worklist(&args, &config, &limiter, plan.as_ref(), store)?;
    if let Some(progress) = &last {
        limiter.restore(&progress.limiter_state, &clock);
        if progress.state == "running" {
            // The last session died without a final checkpoint: it may have spent more of
            // its rolling limits than its last heartbeat shows, so those start empty (they
            // refill within one period); quota windows keep their saved counts.
            limiter.assume_empty(clock.now());
        }
    }
    // A new session starts unpaused; `ratebound pause` acts on a live run.
    store.set_paused(false)?;
    let config_abs = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
    store.set_meta("config_path", &config_abs.to_string_lossy())?;
    if let Some(shard) = shard {
        store.set_meta("shard", &shard.to_string())?;
    }
    let cost_model = CostModel::from_config(&config);
    let mut feed = StoreFeed {
        store: Store::open(&db)?,
        request: config.request.clone(),
        cost_model: cost_model.clone(),
        limiter: limiter.clone(),
        idempotency: config.request.idempotency_key.then_some(identity),
    };
    // `workers.max = "auto"` sizes the pool by the jobs' mean cost, taken over a sample.
    let mut cost_sums = Costs::default();
    let sample = if config.auto_workers {
        feed.sample(COST_SAMPLE)?
    } else {
        Vec::new()
    };
    for job in &sample {
        for (unit, amount) in job.costs.iter() {
            cost_sums.add(unit.clone(), *amount);
        }
    }
    let jobs = sample.len() as u64;
    drop(sample);
    let policy = plan.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
    let page = (config.workers * PAGE_PER_WORKER).max(MIN_PAGE);
    let scheduler = Scheduler::with_feed(policy, clock.now(), page, Box::new(feed));
    let counts = store.counts()?;
    let requests = store.request_counts()?;
    let before = Before {
        total: counts.total,
        done: counts.done,
        failed: counts.failed,
        sent: requests.sent,
        rate_limited: requests.rate_limited,
        retries: requests.retries,
        elapsed: Duration::from_millis(last.map_or(0, |p| p.elapsed_ms)),
    };

    let (base_url, _mock) = if config.api.base_url.starts_with("mock://") {
        let spec = MockSpec::parse_url(&config.api.base_url).with_context(|| {
            format!(
                "{}: `base_url` is not a valid mock URL",
                config.path.display()
            )
        })?;
        let mock = crate::mock::server::start_in_runtime(spec).await?;
        (format!("http://{}", mock.addr()), Some(mock))
    } else {
        (config.api.base_url.clone(), None)
    };
    let transport = HttpTransport::new(&base_url, &headers, config.api.timeout, config.workers)?;
    let shared = match &config.backend {
        Some(backend) => {
            let url = backend.resolve_url(&config.path)?;
            let namespace = (backend.namespace.clone())
                .unwrap_or_else(|| shared::namespace(&config.api.base_url, &headers));
            let shared = RedisLimiter::new(&url, &namespace, &config.limits, config.jitter)
                .map_err(|e| UsageError {
                    message: format!("{}:{}: {e}", config.path.display(), backend.line),
                    hint: "write `[limiter] backend = \"redis://HOST:PORT/DB\"`".into(),
                })?;
            tracing::info!(target = shared.target(), "limits shared through redis");
            Some(shared)
        }
        None => {
            if let Some(shard) = shard {
                tracing::warn!(
                    %shard,
                    "no `[limiter] backend`: this shard enforces every limit on its own; runners sharing one API key need a shared backend to stay within it together"
                );
            }
            None
        }
    };

    let (stop_tx, stop_rx) = watch::channel(0u32);
    tokio::spawn(async move {
        let mut presses = 0u32;
        while wait_for_stop_signal().await {
            presses += 1;
            if presses >= 2 {
                eprintln!(
                    "\nratebound: aborted at once; finished results are saved, run the same command again to continue"
                );
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            eprintln!(
                "\nratebound: stopping: no new requests; waiting for those in flight (Ctrl-C again to abort at once)"
            );
            let _ = stop_tx.send(presses);
        }
    });

    let runner = Runner {
        transport: std::sync::Arc::new(transport),
        clock,
        limiter,
        shared,
        scheduler,
        writer: Writer::start(&db)?,
        progress: Progress::new(counts.total, counts.done + counts.failed, args.quiet),
        settings: Settings {
            workers: config.workers,
            auto_workers: config.auto_workers.then(|| {
                let mean =
                    |unit: &crate::limiter::Unit| cost_sums.get(unit) as f64 / jobs.max(1) as f64;
                AutoWorkers::new(config.workers, binding_jobs_per_s(&config.limits, mean))
            }),
            retry: config.retry.clone(),
            dialect: config.api.dialect,
        },
        feedback: Feedback::default(),
        hold_after_storm: 0,
        cost_model,
        before,
        control: Some(store),
    };
    let summary = runner.run(stop_rx).await?;
    if !args.quiet || summary.end != End::Finished {
        out(&report::summary(&summary, &db))?;
    }
    Ok(match summary.end {
        End::Finished if summary.snapshot.failed == 0 => EXIT_OK,
        End::Finished | End::AuthRefused { .. } => EXIT_FAILURES,
        End::Interrupted => EXIT_INTERRUPTED,
        End::Paused { .. } => EXIT_PAUSED,
    })
}

/// Jobs per worker the scheduler loads ahead from the store.
const PAGE_PER_WORKER: usize = 4;
/// The least look-ahead, whatever the workers.
const MIN_PAGE: usize = 256;
/// Items per transaction when a new config moves items to other lanes.
const LANE_BATCH: usize = 50_000;
/// Pending items whose mean cost sizes `workers.max = "auto"`.
const COST_SAMPLE: usize = 1_000;

/// Makes the db's queue hold the work list: on the first run (or after an import cut
/// short), every item is validated and imported in one streaming pass, and only then is the
/// db bound to the list; on a rerun, the list is checked unchanged by its fingerprint
/// without reading it (validated again, and its lanes set again, only when the config
/// changed). Returns the store and the run's fingerprint identity.
fn queue_worklist(
    args: &RunArgs,
    config: &Config,
    limiter: &Limiter,
    plan: Option<&(Policy, Tenants)>,
    store: Store,
) -> anyhow::Result<(Store, String)> {
    let path = &args.worklist;
    let q = Queueing {
        path,
        config,
        limiter,
        plan,
        shard: args.shard,
        suffix: (args.shard)
            .map(|s| format!("#shard={s}"))
            .unwrap_or_default(),
        fp: Fingerprint::of(path).map_err(|source| WorklistError::Open {
            path: path.clone(),
            source,
        })?,
        snapshot: config.snapshot(),
        absolute: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
    };
    if store.meta("imported")?.is_some() {
        q.recheck(store, args.verify)
    } else {
        q.import(store)
    }
}

/// What [`queue_worklist`] works from.
struct Queueing<'a> {
    path: &'a PathBuf,
    config: &'a Config,
    limiter: &'a Limiter,
    plan: Option<&'a (Policy, Tenants)>,
    shard: Option<Shard>,
    /// Appended to a sharded db's fingerprint identity.
    suffix: String,
    fp: Fingerprint,
    snapshot: String,
    absolute: PathBuf,
}

impl Queueing<'_> {
    fn open_err(&self, source: std::io::Error) -> WorklistError {
        WorklistError::Open {
            path: self.path.clone(),
            source,
        }
    }

    /// A rerun: the list must be the one imported (checked by fingerprint, without
    /// reading it); another config is checked item by item and may move items' lanes.
    fn recheck(&self, mut store: Store, verify: bool) -> anyhow::Result<(Store, String)> {
        let identity = store.meta("fingerprint")?.unwrap_or_default();
        let mtime = store.meta("worklist_mtime_ns")?;
        let content = store.meta("worklist_sha256")?;
        let stored = fingerprint::Stored {
            identity: &identity,
            mtime_ns: mtime.as_deref(),
            content: content.as_deref(),
        };
        let same = (self.fp)
            .matches(self.path, stored, &self.suffix, verify)
            .map_err(|e| self.open_err(e))?;
        if !same {
            return Err(StoreError::WorklistChanged {
                db: store.path().to_path_buf(),
                was: store.meta("worklist")?.unwrap_or_default(),
                was_fp: identity,
                now: self.absolute.display().to_string(),
                now_fp: format!("{}{}", self.fp.identity(), self.suffix),
            }
            .into());
        }
        if store.meta("config")?.as_deref() != Some(self.snapshot.as_str()) {
            // Another config: every item is checked against it before the first request,
            // and queued in the lane it now gives.
            // A batch at a time; a bad item refuses the run before the first request
            // either way, and the mark makes the next run move every item again.
            store.set_meta("config", "(lanes being moved)")?;
            let mut lanes = Vec::new();
            let mut moved = Ok(());
            let each = |item: &Item, built: &Built, _| {
                lanes.push((
                    item.seq,
                    lane_of(self.config, self.plan, built, item.priority),
                ));
                if lanes.len() >= LANE_BATCH && moved.is_ok() {
                    moved = store.set_lanes(&lanes);
                    lanes.clear();
                }
            };
            validate(self.path, self.config, self.limiter, Ids::Read, each)?;
            moved?;
            store.set_lanes(&lanes)?;
            store.set_meta("tenants", &tenants_json(self.plan))?;
            store.set_meta("config", &self.snapshot)?;
        }
        Ok((store, identity))
    }

    /// A first run, or one after an import cut short: every item validated and written in
    /// one streaming pass; the db is bound to the list only once all of it is in.
    fn import(&self, store: Store) -> anyhow::Result<(Store, String)> {
        let hashing = {
            let path = self.path.clone();
            std::thread::spawn(move || fingerprint::content_hash(&path))
        };
        let mut inserter = Inserter::start(store)?;
        // Unsharded, the store's unique index refuses duplicate ids: reading keeps no set
        // of every id. A shard imports only its own items, so the reader checks them all.
        let ids = if self.shard.is_some() {
            Ids::Read
        } else {
            Ids::Stored
        };
        let checked = validate(
            self.path,
            self.config,
            self.limiter,
            ids,
            |item, built, _| {
                if self.shard.is_none_or(|s| s.includes(&item.id)) {
                    let lane = lane_of(self.config, self.plan, built, item.priority);
                    inserter.push(ImportRow::of(item, lane));
                }
            },
        );
        if let Err(e) = checked {
            // Nothing is runnable: the db is bound to no list until an import completes.
            inserter.abandon();
            let _ = inserter.finish();
            return Err(e);
        }
        let Imported {
            mut store,
            count,
            duplicate,
        } = inserter.finish()?;
        if let Some(dup) = duplicate {
            return Err(WorklistError::DuplicateId {
                path: self.path.clone(),
                line: dup.line,
                field: "id",
                id: dup.id,
                first_line: dup.first_line,
            }
            .into());
        }
        let content = match hashing.join() {
            Ok(hash) => hash.map_err(|e| self.open_err(e))?,
            Err(_) => anyhow::bail!("{}: hashing the work list failed", self.path.display()),
        };
        let identity = format!("{}{}", self.fp.identity(), self.suffix);
        let started = unix_ms(SystemTime::now()).to_string();
        store.finish_import(
            count,
            &[
                ("fingerprint", identity.as_str()),
                ("worklist", &self.absolute.display().to_string()),
                ("config", self.snapshot.as_str()),
                ("started_at_ms", started.as_str()),
                ("worklist_mtime_ns", &self.fp.mtime_ns.to_string()),
                ("worklist_sha256", content.as_str()),
                ("tenants", &tenants_json(self.plan)),
            ],
        )?;
        tracing::info!(imported = count, "work list imported");
        Ok((store, identity))
    }
}

/// The tenants of the list the db imported, if it did so under this same config (a rerun
/// then needs not read the list for them).
fn stored_tenants(store: &Store, config: &Config) -> anyhow::Result<Option<Tenants>> {
    if !config.scheduling.is_configured()
        || store.meta("imported")?.is_none()
        || store.meta("config")?.as_deref() != Some(config.snapshot().as_str())
    {
        return Ok(None);
    }
    let Some(text) = store.meta("tenants")? else {
        return Ok(None);
    };
    let Ok(entries) = serde_json::from_str::<Vec<(String, Option<String>)>>(&text) else {
        return Ok(None);
    };
    let mut tenants = Tenants::new();
    for (name, tier) in &entries {
        tenants.add(Some(name.as_str()), tier.as_deref());
    }
    Ok(Some(tenants))
}

/// The tenants of `plan` as the db keeps them (JSON: `[[name, tier], ...]`).
fn tenants_json(plan: Option<&(Policy, Tenants)>) -> String {
    let entries: Vec<(&str, Option<&str>)> =
        plan.map(|(_, t)| t.entries().collect()).unwrap_or_default();
    serde_json::to_string(&entries).unwrap_or_default()
}

/// The scheduler policy for a config with classes, tenants, tiers, caps or a starvation
/// guard (`None` for plain priority): reads the work list's tenants and their tiers, adds
/// each tier tenant's own limits to `config.limits`, and refuses items no class takes or
/// whose tier field names no tier (every such item reported with its line).
fn plan_scheduling(
    worklist: &Path,
    config: &mut Config,
) -> anyhow::Result<Option<(Policy, Tenants)>> {
    let scheduling = &config.scheduling;
    if !scheduling.is_configured() {
        return Ok(None);
    }
    let mut tenants = Tenants::new();
    let mut problems = InputErrors {
        problems: Vec::new(),
        more: 0,
    };
    for item in WorklistReader::open(worklist)?.filter_map(Result::ok) {
        let crate::worklist::Payload::Vars(vars) = &item.payload else {
            tenants.add(None, None);
            continue;
        };
        let field = |name: &str| {
            vars.get(name)
                .and_then(serde_json::Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let lane = scheduling
            .class_of(field("kind"), item.priority)
            .and_then(|_| scheduling.field_tier(field));
        match lane {
            Ok(tier) => {
                tenants.add(field("tenant"), tier);
            }
            Err(e) => problems.push(format!(
                "{}:{}: item `{}`: {e}\n  hint: add a class or tier for it in {}, or change the item",
                worklist.display(),
                item.line,
                item.id,
                config.path.display()
            )),
        }
    }
    if !problems.problems.is_empty() {
        return Err(problems.into());
    }
    let (policy, limits) = scheduling.policy(&tenants);
    config.limits.extend(limits);
    Ok(Some((policy, tenants)))
}

/// Where a job queues under the scheduling plan: its class, tenant and endpoint group
/// (the one lane of a plain scheduler without a plan). Shared by `run` and `estimate`.
fn lane_of(
    config: &Config,
    plan: Option<&(Policy, Tenants)>,
    built: &Built,
    priority: i64,
) -> crate::scheduler::Lane {
    match plan {
        Some((policy, tenants)) => crate::scheduler::Lane {
            class: config
                .scheduling
                .class_of(built.kind.as_deref(), priority)
                .unwrap_or(0),
            tenant: tenants.get(built.tenant.as_deref()).unwrap_or(0),
            group: policy.group_of(&built.request.path),
        },
        None => crate::scheduler::Lane::default(),
    }
}

/// Waits for Ctrl-C or SIGTERM; false if signals cannot be watched.
async fn wait_for_stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            s = term.recv() => s.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_db_is_named_after_the_worklist() {
        assert_eq!(
            default_db(Path::new("jobs/bios.csv")),
            PathBuf::from("bios.ratebound.db")
        );
    }
}
