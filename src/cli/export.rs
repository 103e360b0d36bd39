//! `ratebound export`: finished items' results as JSONL or CSV, to a file or stdout.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::EXIT_OK;
use crate::report::export;
use crate::store::Store;

#[derive(Args, Debug)]
pub(super) struct ExportArgs {
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

/// Reads the results and writes them in the chosen format.
pub(super) fn export(args: &ExportArgs) -> anyhow::Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let rows = store.results(args.failed)?;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create the export file", path.display()))?;
            export::write(&rows, args.format, file)
                .with_context(|| format!("{}: cannot write the export", path.display()))?;
            eprintln!("exported {} items to {}", rows.len(), path.display());
        }
        None => export::write(&rows, args.format, std::io::stdout().lock())
            .context("cannot write the export")?,
    }
    Ok(EXIT_OK)
}
