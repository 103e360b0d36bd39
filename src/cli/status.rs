//! `ratebound status`: a run's progress, limits and ETA, live or stopped, from one db or
//! added up over several (one per shard).

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Args;

use super::{EXIT_OK, UsageError, out};
use crate::report::status;
use crate::store::{Store, StoreError};

#[derive(Args, Debug)]
pub(super) struct StatusArgs {
    /// The run's database; several (`--db a.db --db b.db`, one per shard) are added up.
    #[arg(long, required = true)]
    db: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Reads every db, adds them up and prints the status.
pub(super) fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    refuse_repeats(&args.db)?;
    let now = SystemTime::now();
    let each = (args.db.iter())
        .map(|db| status::read(&Store::open_read_only(db)?, now))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let s = status::aggregate(each);
    if args.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&s)?))?;
    } else {
        out(&status::render(&s))?;
    }
    Ok(EXIT_OK)
}

/// Refuses the same db given twice (under any spelling), which would count its run twice.
fn refuse_repeats(dbs: &[PathBuf]) -> Result<(), UsageError> {
    let mut seen = Vec::with_capacity(dbs.len());
    for db in dbs {
        let same = std::fs::canonicalize(db).unwrap_or_else(|_| db.clone());
        if let Some(first) = seen.iter().position(|s| *s == same) {
            return Err(UsageError {
                message: format!(
                    "{}: the same db is given twice (as `{}` and `{}`)",
                    db.display(),
                    dbs[first].display(),
                    db.display()
                ),
                hint: "give each shard's db once: `ratebound status --db a.db --db b.db`".into(),
            });
        }
        seen.push(same);
    }
    Ok(())
}
