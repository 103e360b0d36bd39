//! `ratebound export`: finished items' results as JSONL or CSV, to a file or stdout.

use std::path::{Path, PathBuf};

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
    /// Output file; `-` or none is standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Only the items that failed permanently.
    #[arg(long)]
    failed: bool,
    /// A field pulled out of each body by JSON pointer, e.g. `bio=/choices/0/message/content`
    /// (repeatable; a missing place gives an empty cell).
    #[arg(long, value_name = "NAME=/POINTER")]
    select: Vec<export::Select>,
    /// Add the work list's fields of each item (CSV columns, JSONL `input`).
    #[arg(long)]
    with_input: bool,
}

/// Reads the results and writes them in the chosen format, one row at a time.
pub(super) fn export(args: &ExportArgs) -> anyhow::Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let options = export::Options {
        format: args.format,
        select: args.select.clone(),
    };
    let (failed, with_input) = (args.failed, args.with_input);
    match args.output.as_deref().filter(|p| *p != Path::new("-")) {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create the export file", path.display()))?;
            let written = export::export(&store, failed, with_input, &options, file)?
                .with_context(|| format!("{}: cannot write the export", path.display()))?;
            eprintln!("exported {written} items to {}", path.display());
        }
        None => {
            let out = std::io::stdout().lock();
            export::export(&store, failed, with_input, &options, out)?
                .context("cannot write the export")?;
        }
    }
    Ok(EXIT_OK)
}
