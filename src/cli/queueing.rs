//! The work list into the db's queue: on the first run (or after an import cut short) every
//! item is validated and imported in one streaming pass, and only then is the db bound to
//! the list; on a rerun the list is checked unchanged by its sampled fingerprint without
//! being read (and validated again, its lanes moved, only when the config changed).
//!
//! Invariant: nothing is runnable until an import has completed; what is imported is what
//! was validated, in the same pass over the same bytes.

use std::path::PathBuf;
use std::time::SystemTime;

use super::prepare::{Ids, Prepared, SchedulingPlan};
use super::run::RunArgs;
use crate::clock::unix_ms;
use crate::config::{Config, Tenants};
use crate::job::Built;
use crate::queue::fingerprint::{self, Fingerprint};
use crate::queue::{Imported, Inserter};
use crate::shard::Shard;
use crate::store::{Store, StoreError};
use crate::worklist::{Item, WorklistError};

/// Items per transaction when a new config moves items to other lanes.
const LANE_BATCH: usize = 50_000;

/// Makes the db's queue hold the work list: on the first run (or after an import cut
/// short), every item is validated and imported in one streaming pass, and only then is the
/// db bound to the list; on a rerun, the list is checked unchanged by its fingerprint
/// without reading it (validated again, and its lanes set again, only when the config
/// changed). Returns the store and the run's fingerprint identity.
pub(super) fn queue_worklist(
    args: &RunArgs,
    prepared: &Prepared,
    store: Store,
) -> anyhow::Result<(Store, String)> {
    let path = &args.worklist;
    crate::worklist::check_regular(path)?;
    let config = &prepared.config;
    let q = Queueing {
        path,
        prepared,
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
    prepared: &'a Prepared,
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
                lanes.push((item.seq, self.prepared.lane_of(built, item.priority)));
                if lanes.len() >= LANE_BATCH && moved.is_ok() {
                    moved = store.set_lanes(&lanes);
                    lanes.clear();
                }
            };
            self.prepared.validate(self.path, Ids::Read, each)?;
            moved?;
            store.set_lanes(&lanes)?;
            store.set_meta("tenants", &tenants_json(self.prepared.plan.as_ref()))?;
            store.set_meta("config", &self.snapshot)?;
        }
        Ok((store, identity))
    }

    /// A first run, or one after an import cut short: every item validated and written in
    /// one streaming pass; the db is bound to the list only once all of it is in.
    fn import(&self, mut store: Store) -> anyhow::Result<(Store, String)> {
        let hashing = {
            let path = self.path.clone();
            std::thread::spawn(move || fingerprint::content_hash(&path))
        };
        let mut inserter = Inserter::start(&store)?;
        // Unsharded, the inserter finds repeated ids from their sorted hashes: reading
        // keeps no set of every id. A shard imports only its own items, so the reader
        // checks them all.
        let ids = if self.shard.is_some() {
            Ids::Read
        } else {
            Ids::Stored
        };
        let checked = self.prepared.validate(self.path, ids, |item, built, _| {
            if self.shard.is_none_or(|s| s.includes(&item.id)) {
                let lane = self.prepared.lane_of(built, item.priority);
                inserter.push(item, lane);
            }
        });
        if let Err(e) = checked {
            // Nothing is runnable: the db is bound to no list until an import completes.
            inserter.abandon();
            let _ = inserter.finish();
            return Err(e);
        }
        let Imported {
            importing,
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
        importing.install(
            &mut store,
            count,
            &[
                ("fingerprint", identity.as_str()),
                ("worklist", &self.absolute.display().to_string()),
                ("config", self.snapshot.as_str()),
                ("started_at_ms", started.as_str()),
                ("worklist_mtime_ns", &self.fp.mtime_ns.to_string()),
                ("worklist_sha256", content.as_str()),
                ("tenants", &tenants_json(self.prepared.plan.as_ref())),
            ],
        )?;
        tracing::info!(imported = count, "work list imported");
        Ok((store, identity))
    }
}

/// The tenants of the list the db imported, if it did so under this same config (a rerun
/// then needs not read the list for them).
pub(super) fn stored_tenants(store: &Store, config: &Config) -> anyhow::Result<Option<Tenants>> {
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
fn tenants_json(plan: Option<&SchedulingPlan>) -> String {
    let entries: Vec<(&str, Option<&str>)> = plan
        .map(|p| p.tenants.entries().collect())
        .unwrap_or_default();
    serde_json::to_string(&entries).unwrap_or_default()
}
