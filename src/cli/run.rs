//! `ratebound run`: the whole pipeline in order: prepare (config, scheduling plan, every
//! item rendered and checked before the first request) → store (claim, import, the last
//! session's state) → queue the pending jobs → transport and shared limits → runner →
//! summary and exit code.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;

use super::prepare::{self, Prepared, Validated};
use super::queueing::{queue_worklist, stored_tenants};
use super::{
    EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, EXIT_PAUSED, EXIT_UNAVAILABLE, UsageError, out,
};
use crate::clock::{Clock, SystemClock, unix_ms};
use crate::job::{CostModel, Job};
use crate::limiter::{Costs, Limiter, shared};
use crate::mock::MockSpec;
use crate::queue::StoreFeed;
use crate::report::{self, progress::Progress};
use crate::runner::transport::HttpTransport;
use crate::runner::{Before, End, Feedback, Runner, Settings, Summary};
use crate::scheduler::{AutoWorkers, Scheduler, workers::binding_jobs_per_s};
use crate::session::RunState;
use crate::shard::Shard;
use crate::shared::redis::RedisLimiter;
use crate::shared::{Learned, SharedLimiter};
use crate::store::claim::Claim;
use crate::store::{ProgressRow, Store, Writer};

#[derive(Args, Debug)]
pub(super) struct RunArgs {
    /// The work list: CSV with a header row, or JSONL (OpenAI Batch input lines run as they are).
    pub(super) worklist: PathBuf,
    /// The config file [default: ratebound.toml in the current folder].
    #[arg(short, long)]
    pub(super) config: Option<PathBuf>,
    /// The run's database [default: <worklist stem>.ratebound.db in the current folder].
    #[arg(long)]
    pub(super) db: Option<PathBuf>,
    /// Most requests in flight at once (overrides `[workers] max`).
    #[arg(short, long)]
    pub(super) workers: Option<usize>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub(super) quiet: bool,
    /// Work only shard I of N (1-based), split by item id; each shard needs its own --db.
    /// Runners sharing one API key share its limits through `[limiter] backend`.
    #[arg(long, value_name = "I/N")]
    pub(super) shard: Option<Shard>,
    /// On a rerun, hash the whole work list to check it is unchanged (by default its size,
    /// modification time and sampled blocks are compared, and the whole file is hashed only
    /// when its modification time moved).
    #[arg(long)]
    pub(super) verify: bool,
    /// The lane: `online` (requests one by one), `batch` (the provider's Batch API, `[batch]`
    /// in the config: half price, within its window) or `auto` (online what --deadline needs,
    /// the rest through batches).
    #[arg(long, value_enum, default_value = "online")]
    pub(super) via: super::batch::Via,
    /// With `--via auto`: when the run must be finished, from now, e.g. `6h` or `3d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(super) deadline: Option<Duration>,
}

/// Jobs per worker the scheduler loads ahead from the store.
const PAGE_PER_WORKER: usize = 4;
/// The least look-ahead, whatever the workers.
const MIN_PAGE: usize = 256;
/// Pending items whose mean cost sizes `workers.max = "auto"`.
const COST_SAMPLE: usize = 1_000;

/// The pending jobs, queued, and what auto-workers needs to know about them.
struct Queued {
    scheduler: Scheduler<Job>,
    cost_sums: Costs,
    jobs: u64,
}

/// Runs (or continues) the work list and returns the exit code of how it ended.
pub(super) async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| default_db(&args.worklist));
    // Before anything else: a second runner on this db would send every item again.
    let claim = Claim::take(&db)?;
    let clock = SystemClock::new();
    let config = prepare::load(args.config.clone(), args.workers)?;
    let (store, last) = open_store(&db)?;
    // The tenants come from the db when it imported the list under this very config.
    let tenants = stored_tenants(&store, &config)?;
    let mut prepared = prepare::plan(config, &args.worklist, clock.wall_at(0), tenants)?;
    let resolved = prepared.config.resolve_env()?;
    let headers = &resolved.headers;
    if args.via != super::batch::Via::Online {
        super::batch::batch_api(&prepared.config)?;
    }
    let (store, identity) = queue_worklist(&args, &prepared, store)?;
    mark_session(&store, &args, &prepared)?;
    store.set_meta("via", &format!("{:?}", args.via).to_lowercase())?;
    let validated = Validated {
        fingerprint: identity.clone(),
        items: store.counts()?.total,
    };
    if args.via == super::batch::Via::Batch {
        drop(store);
        return super::batch::run_batch(&args, &prepared, &validated, &db, headers).await;
    }
    let auto = args.via == super::batch::Via::Auto;
    if auto {
        super::batch::split_for_auto(&args, &prepared, &validated, &db)?;
    }
    let queued = queue_pending(&db, &prepared, identity, &clock)?;
    let before = before(&store, last.as_ref())?;

    let shared = shared_limiter(&prepared, headers, args.shard)?;
    let feedback = feedback(&mut prepared, shared.as_ref(), last.as_ref(), &clock).await;
    let config = &prepared.config;
    let (base_url, _mock) = base_url(&config.api.base_url, &config.path).await?;
    let transport = HttpTransport::new(&base_url, headers, config.api.timeout, config.workers)?
        .with_secrets(resolved.secrets.clone())
        .with_max_response_bytes(config.api.max_response_bytes);
    let stop = stop_on_signals();
    let lane = (auto)
        .then(|| {
            let stop = stop.clone();
            super::batch::spawn_lane(
                &prepared, &validated, &db, &base_url, headers, stop, args.quiet,
            )
        })
        .transpose()?;
    let runner = Runner {
        transport: std::sync::Arc::new(transport),
        clock,
        shared,
        writer: Writer::start(&db)?,
        progress: Progress::new(before.total, before.done + before.failed, args.quiet).with_limits(
            config.workers as u64,
            report::html::pause_marks(&config.limits),
        ),
        settings: settings(&prepared, &queued),
        feedback,
        hold_after_storm: 0,
        cost_model: CostModel::from_config(config),
        before,
        control: Some(store),
        scheduler: queued.scheduler,
        limiter: prepared.limiter,
    };
    let summary = runner.run(stop).await?;
    print_summary(&summary, &db, args.quiet)?;
    let code = match lane {
        Some(lane) => super::batch::join_lane(lane, exit_of(&summary), &db, args.quiet).await?,
        None => exit_of(&summary),
    };
    drop(claim);
    Ok(code)
}

/// Prints how the session ended (always, unless `--quiet` and every item finished).
fn print_summary(summary: &Summary, db: &Path, quiet: bool) -> anyhow::Result<()> {
    if quiet && summary.end == End::Finished {
        return Ok(());
    }
    // The run's exit code says how it ended; a reader gone from stdout must not hide it.
    match out(&report::summary(summary, db)) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The documented exit code of how a run ended.
fn exit_of(summary: &Summary) -> u8 {
    match summary.end {
        End::Finished if summary.snapshot.failed == 0 => EXIT_OK,
        End::Finished | End::AuthRefused { .. } => EXIT_FAILURES,
        End::Interrupted => EXIT_INTERRUPTED,
        End::Paused { .. } => EXIT_PAUSED,
        End::Unreachable { .. } => EXIT_UNAVAILABLE,
    }
}

/// Opens the db and refuses it while a runner on another host (sharing this folder) still
/// heartbeats in it. Returns the last session's progress: its limiter state and time spent.
fn open_store(db: &Path) -> anyhow::Result<(Store, Option<ProgressRow>)> {
    let store = Store::open(db)?;
    let last = store.progress()?;
    if let Some(progress) = (last.as_ref()).filter(|p| p.is_live(unix_ms(SystemTime::now()))) {
        return Err(UsageError {
            message: format!(
                "{}: another ratebound (pid {}, perhaps on another host sharing this folder) is running this db right now",
                db.display(),
                progress.pid
            ),
            hint: "wait for it, stop it with Ctrl-C, or watch it with `ratebound status --db ...`"
                .into(),
        }
        .into());
    }
    Ok((store, last))
}

/// Records how to resume this session: unpaused, its config and shard.
fn mark_session(store: &Store, args: &RunArgs, prepared: &Prepared) -> anyhow::Result<()> {
    // A new session starts unpaused; `ratebound pause` acts on a live run.
    store.set_paused(false)?;
    let config = &prepared.config;
    let config_abs = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
    store.set_meta("config_path", &config_abs.to_string_lossy())?;
    if let Some(shard) = args.shard {
        store.set_meta("shard", &shard.to_string())?;
    }
    Ok(())
}

/// Takes the limiter state the last session saved, and what it learned of the provider:
/// limits from headers and the searched rate come back as they were. When that is not
/// recent and runners sharing the limit have published what they learned lately
/// (`published`), the learned limits are theirs. With neither, nothing is known of how
/// full the provider's buckets are, so the first wave waits for one response's headers.
fn restore_limiter(
    limiter: &mut Limiter,
    last: Option<&ProgressRow>,
    published: Option<&Learned>,
    clock: &SystemClock,
) -> Feedback {
    let now_ms = unix_ms(clock.wall());
    let local = last.filter(|p| now_ms.saturating_sub(p.heartbeat_ms) < RECENT_MS);
    let shared = published.filter(|l| now_ms.saturating_sub(l.at_unix_ms) < RECENT_MS);
    let learned = match (local, shared, last) {
        (None, Some(shared), _) => Some(&shared.states),
        (_, _, Some(progress)) => Some(&progress.limiter_state),
        (_, _, None) => None,
    };
    let Some(learned) = learned else {
        return Feedback::looking_first();
    };
    let recent = local.is_some() || shared.is_some();
    let feedback = Feedback::restore(limiter, learned, recent);
    if let Some(progress) = last {
        limiter.restore(&progress.limiter_state, clock);
        if progress.state == RunState::Running {
            // The last session died without a final checkpoint: it may have spent more of
            // its rolling limits than its last heartbeat shows, so those start empty (they
            // refill within one period); quota windows keep their saved counts.
            limiter.assume_empty(clock.now());
        }
    }
    if local.is_none()
        && let Some(shared) = shared
    {
        limiter.restore(&shared.states, clock);
    }
    feedback
}

/// What this run starts knowing of the provider: the limiter restored (see
/// [`restore_limiter`]) from this db's last session or what the runners sharing the limit
/// published, and the most requests one job costs (its kind's steps).
async fn feedback(
    prepared: &mut Prepared,
    shared: Option<&Arc<dyn SharedLimiter>>,
    last: Option<&ProgressRow>,
    clock: &SystemClock,
) -> Feedback {
    let published = published_learned(shared).await;
    let most_steps = (prepared.config.plans.values())
        .map(|plan| plan.steps.len())
        .max()
        .unwrap_or(1);
    restore_limiter(&mut prepared.limiter, last, published.as_ref(), clock)
        .with_job_requests(u64::try_from(most_steps).unwrap_or(u64::MAX))
}

/// What the runners sharing the limit published of what they learned, if any (waiting at
/// most a couple of seconds for an unreachable backend: that is reported at admission).
async fn published_learned(shared: Option<&Arc<dyn SharedLimiter>>) -> Option<Learned> {
    let shared = Arc::clone(shared?);
    tokio::time::timeout(Duration::from_secs(2), shared.learned())
        .await
        .ok()
        .flatten()
}

/// Saved limiter state younger than this still says how full the provider's buckets are
/// (the first wave need not look first).
const RECENT_MS: u64 = 60_000;

/// The scheduler over the db's queue, paged in scheduler order (a look-ahead of a few
/// pages, never the whole list), and the mean cost of a sample of pending jobs for
/// `workers.max = "auto"`.
fn queue_pending(
    db: &Path,
    prepared: &Prepared,
    identity: String,
    clock: &SystemClock,
) -> anyhow::Result<Queued> {
    let config = &prepared.config;
    let mut feed = StoreFeed {
        store: Store::open(db)?,
        request: config.request.clone(),
        cost_model: CostModel::from_config(config),
        limiter: prepared.limiter.clone(),
        idempotency: config.request.idempotency_key.then_some(identity),
    };
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
    let policy = (prepared.plan.as_ref())
        .map(|plan| plan.policy.clone())
        .unwrap_or_default();
    let page = (config.workers * PAGE_PER_WORKER).max(MIN_PAGE);
    Ok(Queued {
        scheduler: Scheduler::with_feed(policy, clock.now(), page, Box::new(feed)),
        cost_sums,
        jobs: sample.len() as u64,
    })
}

/// Counts from earlier sessions, for the progress display and the summary.
fn before(store: &Store, last: Option<&ProgressRow>) -> anyhow::Result<Before> {
    let counts = store.counts()?;
    let requests = store.request_counts()?;
    Ok(Before {
        total: counts.total,
        done: counts.done,
        failed: counts.failed,
        sent: requests.sent,
        rate_limited: requests.rate_limited,
        retries: requests.retries,
        elapsed: Duration::from_millis(last.map_or(0, |p| p.elapsed_ms)),
    })
}

/// The session's settings: workers (fixed or automatic), retry policy, header dialect.
fn settings(prepared: &Prepared, queued: &Queued) -> Settings {
    let config = &prepared.config;
    Settings {
        workers: config.workers,
        auto_workers: config.auto_workers.then(|| {
            let mean = |unit: &crate::limiter::Unit| {
                queued.cost_sums.get(unit) as f64 / queued.jobs.max(1) as f64
            };
            AutoWorkers::new(config.workers, binding_jobs_per_s(&config.limits, mean))
        }),
        retry: config.retry.clone(),
        dialect: config.api.dialect,
        jitter_seed: rand::random(),
    }
}

/// The URL to send to: the configured one, or that of the built-in mock (started here and
/// kept alive by the returned guard) for a `mock://` URL.
pub(super) async fn base_url(
    configured: &str,
    config_path: &Path,
) -> anyhow::Result<(String, Option<crate::mock::MockHandle>)> {
    if !configured.starts_with("mock://") {
        return Ok((configured.to_string(), None));
    }
    let spec = MockSpec::parse_url(configured).with_context(|| {
        format!(
            "{}: `base_url` is not a valid mock URL",
            config_path.display()
        )
    })?;
    let mock = crate::mock::server::start_in_runtime(spec).await?;
    Ok((format!("http://{}", mock.addr()), Some(mock)))
}

/// The Redis limiter shared with other runners, when `[limiter] backend` is set.
fn shared_limiter(
    prepared: &Prepared,
    headers: &[(String, String)],
    shard: Option<Shard>,
) -> anyhow::Result<Option<std::sync::Arc<dyn SharedLimiter>>> {
    let config = &prepared.config;
    let Some(backend) = &config.backend else {
        if let Some(shard) = shard {
            tracing::warn!(
                %shard,
                "no `[limiter] backend`: this shard enforces every limit on its own; runners sharing one API key need a shared backend to stay within it together"
            );
        }
        return Ok(None);
    };
    let url = backend.resolve_url(&config.path)?;
    let namespace = (backend.namespace.clone())
        .unwrap_or_else(|| shared::namespace(&config.api.base_url, headers));
    let shared =
        RedisLimiter::new(&url, &namespace, &config.limits, config.jitter).map_err(|e| {
            UsageError {
                message: format!("{}:{}: {e}", config.path.display(), backend.line),
                hint: "write `[limiter] backend = \"redis://HOST:PORT/DB\"`".into(),
            }
        })?;
    tracing::info!(target = shared.target(), "limits shared through redis");
    Ok(Some(shared.into_shared()))
}

/// One line to stderr, ignoring a closed terminal.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Watches Ctrl-C, SIGTERM and SIGHUP: the first asks the runner to stop gracefully (the count
/// goes up on the returned channel), the second exits at once.
pub(super) fn stop_on_signals() -> watch::Receiver<u32> {
    let (stop_tx, stop_rx) = watch::channel(0u32);
    tokio::spawn(async move {
        let mut presses = 0u32;
        while wait_for_stop_signal().await {
            presses += 1;
            // The stop is sent first, and stderr written without `eprintln!`: after a
            // SIGHUP the terminal may be gone, and a panic here would lose the stop.
            if presses >= 2 {
                say(
                    "\nratebound: aborted at once; finished results are saved, run the same command again to continue",
                );
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            let _ = stop_tx.send(presses);
            say(
                "\nratebound: stopping: no new requests; waiting for those in flight (Ctrl-C again to abort at once)",
            );
        }
    });
    stop_rx
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP; false if signals cannot be watched.
async fn wait_for_stop_signal() -> bool {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return tokio::signal::ctrl_c().await.is_ok();
        };
        // SIGHUP (a closed terminal or SSH session) stops gracefully like SIGTERM.
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.is_ok(),
            s = term.recv() => s.is_some(),
            s = hup.recv() => s.is_some(),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// `<worklist stem>.ratebound.db` in the current folder.
fn default_db(worklist: &Path) -> PathBuf {
    let stem = worklist
        .file_stem()
        .map_or_else(|| "run".to_string(), |s| s.to_string_lossy().into_owned());
    PathBuf::from(format!("{stem}.ratebound.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saved state holding a searched limit of `rate` per second, saved at `at_ms`.
    fn searched(rate: u64, at_ms: u64) -> Vec<crate::limiter::BucketState> {
        let mut limiter = Limiter::new(&[]);
        let mut feedback = Feedback::default();
        let clock = SystemClock::new();
        let now = clock.now();
        let sent = now.saturating_sub(10_000_000);
        feedback.on_bare(&mut limiter, now, sent, crate::runner::Bare::Accepted);
        let mut states = limiter.save(&clock);
        for s in &mut states {
            if let Some(l) = &mut s.learned {
                (l.rate, l.per_ms) = (rate * 100, 100_000);
            }
            s.saved_at_unix_ms = at_ms;
        }
        states
    }

    #[tokio::test]
    async fn a_runner_with_nothing_recent_starts_at_what_others_published() {
        let clock = SystemClock::new();
        let now_ms = unix_ms(clock.wall());
        let fresh = Learned {
            at_unix_ms: now_ms - 1_000,
            states: searched(42, now_ms),
        };
        let mut limiter = Limiter::new(&[]);
        let feedback = restore_limiter(&mut limiter, None, Some(&fresh), &clock);
        assert!(
            feedback
                .searching()
                .is_some_and(|r| (r - 42.0).abs() < 0.01)
        );
        assert_eq!(feedback.workers_cap(16), 16, "no first look: it is known");

        // Published too long ago: nothing is known, the first wave looks first.
        let stale = Learned {
            at_unix_ms: now_ms - 2 * RECENT_MS,
            ..fresh.clone()
        };
        let mut limiter = Limiter::new(&[]);
        let feedback = restore_limiter(&mut limiter, None, Some(&stale), &clock);
        assert_eq!(feedback.searching(), None);
        assert_eq!(feedback.workers_cap(16), 1);

        // This db's own recent state wins over what others published.
        let own = ProgressRow {
            state: RunState::Stopped,
            heartbeat_ms: now_ms - 500,
            pid: 1,
            elapsed_ms: 0,
            in_flight: 0,
            limits: Vec::new(),
            limiter_state: searched(30, now_ms),
        };
        let mut limiter = Limiter::new(&[]);
        let feedback = restore_limiter(&mut limiter, Some(&own), Some(&fresh), &clock);
        assert!(
            feedback
                .searching()
                .is_some_and(|r| (r - 30.0).abs() < 0.01)
        );
    }

    #[test]
    fn default_db_is_named_after_the_worklist() {
        assert_eq!(
            default_db(Path::new("jobs/bios.csv")),
            PathBuf::from("bios.ratebound.db")
        );
    }
}
