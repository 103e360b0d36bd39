//! The step before `run` and `estimate` send or simulate anything: load the config, plan
//! the scheduling (classes, tenants, tiers), build the limiter, and validate every item of
//! the work list against them, collecting every problem (up to a cap).
//!
//! Parse, then resolve (as ripgrep does): the commands receive a [`Prepared`] that is known
//! good, and never check input themselves. Owns the input-error report ([`InputErrors`]);
//! the work list's fingerprint is the queue's ([`crate::queue::fingerprint`]).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{Config, Tenants};
use crate::job::{self, Built, CostModel};
use crate::limiter::{Limiter, Route};
use crate::scheduler::{Lane, Policy};
use crate::worklist::{Item, Payload, WorklistError, WorklistReader};

/// Most input problems reported at once.
const MAX_PROBLEMS: usize = 20;

/// Every problem found in the work list, reported together before anything is sent.
#[derive(Debug, Default, thiserror::Error)]
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

    /// `Ok(value)` when nothing was found, else every problem as one error.
    fn into_result<T>(self, value: T) -> Result<T, InputErrors> {
        if self.problems.is_empty() {
            Ok(value)
        } else {
            Err(self)
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

/// How jobs queue when the config has classes, tenants, tiers, caps or a starvation guard.
pub struct SchedulingPlan {
    /// The scheduler's policy.
    pub policy: Policy,
    /// The work list's tenants, numbered.
    pub tenants: Tenants,
}

/// The config, scheduling plan and limiter of a run or an estimate, checked against the
/// work list.
pub struct Prepared {
    /// The config, with `--workers` applied and each tier tenant's own limits added.
    pub config: Config,
    /// The scheduling plan (`None` for plain priority order).
    pub plan: Option<SchedulingPlan>,
    /// The limiter over the config's limits, with calendar windows anchored at the origin.
    pub limiter: Limiter,
}

/// A work list imported into the db: the fingerprint that binds the db to it and its item
/// count (this shard's, when sharded).
pub struct Validated {
    /// The work list's fingerprint identity (with `#shard=I/N` when sharded).
    pub fingerprint: String,
    /// Items in the db's queue.
    pub items: u64,
}

/// Who refuses duplicate ids while the work list is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    /// The reader, keeping every id seen.
    Read,
    /// The caller, from sorted id hashes (the reader keeps no set of every id).
    Stored,
}

/// Loads the config (applying `--workers`), plans the scheduling over the work list and
/// builds the limiter with its calendar windows anchored at `origin`.
pub fn prepare(
    config: Option<PathBuf>,
    workers: Option<usize>,
    worklist: &Path,
    origin: SystemTime,
) -> anyhow::Result<Prepared> {
    plan(load(config, workers)?, worklist, origin, None)
}

/// Loads the config file given (or `ratebound.toml`) and applies `--workers`.
pub fn load(config: Option<PathBuf>, workers: Option<usize>) -> anyhow::Result<Config> {
    let config_path = super::config_path(config)?;
    let mut config = Config::load(&config_path)?;
    super::check_workers(workers)?;
    if let Some(workers) = workers {
        config.workers = workers;
        config.auto_workers = false;
    }
    Ok(config)
}

/// Plans the scheduling (over `tenants` when the db already knows them, else over the work
/// list) and builds the limiter with its calendar windows anchored at `origin`.
pub fn plan(
    mut config: Config,
    worklist: &Path,
    origin: SystemTime,
    tenants: Option<Tenants>,
) -> anyhow::Result<Prepared> {
    let plan = match tenants {
        Some(tenants) => {
            let (policy, limits) = config.scheduling.policy(&tenants);
            config.limits.extend(limits);
            Some(SchedulingPlan { policy, tenants })
        }
        None => plan_scheduling(worklist, &mut config)?,
    };
    let limiter = Limiter::new(&config.limits)
        .with_jitter(config.jitter)
        .with_origin(origin);
    Ok(Prepared {
        config,
        plan,
        limiter,
    })
}

impl Prepared {
    /// Where a job queues under the scheduling plan: its class, tenant and endpoint group
    /// (the one lane of a plain scheduler without a plan).
    pub fn lane_of(&self, built: &Built, priority: i64) -> Lane {
        match &self.plan {
            Some(plan) => Lane {
                class: (self.config.scheduling)
                    .class_of(built.kind.as_deref(), priority)
                    .unwrap_or(0),
                tenant: plan.tenants.get(built.tenant.as_deref()).unwrap_or(0),
                group: plan.policy.group_of(&built.request.path),
            },
            None => Lane::default(),
        }
    }

    /// Reads every item, checks its request ([`job::check`]) and that it can ever be
    /// admitted, collecting every problem (up to a cap) before anything is sent.
    ///
    /// `on_item` sees every valid item with its estimated cost and the limits it falls under.
    /// Returns the number of items read.
    pub fn validate(
        &self,
        path: &Path,
        ids: Ids,
        mut on_item: impl FnMut(&Item, &Built, Route),
    ) -> anyhow::Result<u64> {
        let reader = match ids {
            Ids::Read => WorklistReader::open(path)?,
            Ids::Stored => WorklistReader::open(path)?.without_id_check(),
        };
        if let Some(columns) = reader.columns() {
            check_placeholders(&self.config, path, columns)?;
        }
        let cost_model = CostModel::from_config(&self.config);
        let mut problems = InputErrors::default();
        let mut items = 0u64;
        read_ahead(reader, |item| {
            let item = match item {
                Ok(item) => item,
                Err(e) => return problems.push(e.to_string()),
            };
            items += 1;
            if let Some((built, route)) = self.check_item(path, item, &cost_model, &mut problems) {
                on_item(item, &built, route);
            }
        });
        Ok(problems.into_result(items)?)
    }

    /// Renders one item's request and checks that it fits every limit it falls under.
    fn check_item(
        &self,
        path: &Path,
        item: &Item,
        cost_model: &CostModel,
        problems: &mut InputErrors,
    ) -> Option<(Built, Route)> {
        let config = &self.config;
        match job::check(&config.request, &item.payload, item.tokens, cost_model) {
            Ok(built) => {
                let route = built.route(&self.limiter);
                if let Err(never) = self.limiter.check_fits(&route, &built.costs) {
                    problems.push(format!(
                        "{}:{}: item `{}`: {never}\n  hint: raise the limit's burst, lower the item's `tokens` or `max_tokens`, or split the item",
                        path.display(),
                        item.line,
                        item.id
                    ));
                }
                Some((built, route))
            }
            Err(e) => {
                problems.push(format!(
                    "{}:{}: item `{}`: {e}\n  hint: check the item's fields against the request template in {}",
                    path.display(),
                    item.line,
                    item.id,
                    config.path.display()
                ));
                None
            }
        }
    }
}

/// Refuses a placeholder in any request template that names no column of the work list.
fn check_placeholders(config: &Config, path: &Path, columns: &[String]) -> Result<(), InputErrors> {
    let mut problems = InputErrors::default();
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
    problems.into_result(())
}

/// The scheduler policy for a config with classes, tenants, tiers, caps or a starvation
/// guard (`None` for plain priority): reads the work list's tenants and their tiers, adds
/// each tier tenant's own limits to `config.limits`, and refuses items no class takes or
/// whose tier field names no tier (every such item reported with its line).
fn plan_scheduling(worklist: &Path, config: &mut Config) -> anyhow::Result<Option<SchedulingPlan>> {
    let scheduling = &config.scheduling;
    if !scheduling.is_configured() {
        return Ok(None);
    }
    let mut tenants = Tenants::new();
    let mut problems = InputErrors::default();
    for item in WorklistReader::open(worklist)?.filter_map(Result::ok) {
        let Payload::Vars(vars) = &item.payload else {
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
    problems.into_result(())?;
    let (policy, limits) = scheduling.policy(&tenants);
    config.limits.extend(limits);
    Ok(Some(SchedulingPlan { policy, tenants }))
}

/// Records parsed per hand-over between the reading thread and the checking one.
const READ_AHEAD_BATCH: usize = 1024;

/// Feeds every record of `reader` to `each`, in file order, parsed on a second thread:
/// on a large work list reading and checking (rendering every request) overlap on two
/// cores. Batches go back to the reading thread to be reused, their items' fields refilled
/// by later records ([`WorklistReader::recycle`]), so each thread frees what it allocated
/// (the allocator is slow at freeing another thread's memory) and most records allocate
/// nothing.
fn read_ahead(reader: WorklistReader, mut each: impl FnMut(&Result<Item, WorklistError>)) {
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<_>>(4);
        let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<_>>();
        scope.spawn(move || {
            let mut reader = reader;
            loop {
                let mut batch = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(READ_AHEAD_BATCH));
                for item in batch.drain(..) {
                    if let Ok(Item {
                        payload: Payload::Vars(vars),
                        ..
                    }) = item
                    {
                        reader.recycle(vars);
                    }
                }
                batch.extend(reader.by_ref().take(READ_AHEAD_BATCH));
                if batch.is_empty() {
                    break;
                }
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
