//! `ratebound pause` and `ratebound resume`: act on a live run through its db's control
//! flag; `resume` on a stopped run continues it with the work list and config it recorded.

use std::path::PathBuf;

use clap::Args;

use super::run::{self, RunArgs};
use super::{EXIT_OK, UsageError, out, runtime};
use crate::store::Store;

#[derive(Args, Debug)]
pub(super) struct DbArgs {
    /// The run's database.
    #[arg(long)]
    pub(super) db: PathBuf,
}

/// Asks the live run to pause.
pub(super) fn pause(args: &DbArgs) -> anyhow::Result<u8> {
    set_paused(&Store::open_existing(&args.db)?, args, true)
}

/// Resumes a paused live run, or continues a stopped one as `run` would.
pub(super) fn resume(args: DbArgs) -> anyhow::Result<u8> {
    let store = Store::open_existing(&args.db)?;
    if store.live_run()?.is_some() {
        return set_paused(&store, &args, false);
    }
    let recorded = recorded_run(&store, args.db)?;
    drop(store);
    runtime()?.block_on(run::run(recorded))
}

fn set_paused(store: &Store, args: &DbArgs, paused: bool) -> anyhow::Result<u8> {
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

/// The `run` arguments a stopped run recorded: its work list, config and shard.
fn recorded_run(store: &Store, db: PathBuf) -> anyhow::Result<RunArgs> {
    let missing = |what: &str| UsageError {
        message: format!("{}: the run does not record its {what}", db.display()),
        hint: "continue it with `ratebound run WORKLIST --config FILE --db ...`".into(),
    };
    let worklist = store
        .meta("worklist")?
        .ok_or_else(|| missing("work list"))?;
    let config = store
        .meta("config_path")?
        .ok_or_else(|| missing("config path"))?;
    let shard = store.meta("shard")?.and_then(|s| s.parse().ok());
    Ok(RunArgs {
        worklist: PathBuf::from(worklist),
        config: Some(PathBuf::from(config)),
        db: Some(db),
        workers: None,
        quiet: false,
        shard,
        verify: false,
        via: (store.meta("via")?)
            .and_then(|v| clap::ValueEnum::from_str(&v, true).ok())
            .unwrap_or_default(),
        deadline: None,
    })
}
