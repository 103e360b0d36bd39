//! `ratebound report`: one self-contained HTML file with a run's charts and summary.
//!
//! Reads the db read-only; the config and work list the run used, when they are still where
//! the run left them, add the worker count, the pause marks and `estimate`'s bound.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::estimate::{EstimateArgs, estimate_of};
use super::{EXIT_OK, out};
use crate::config::Config;
use crate::report::html;
use crate::store::Store;

#[derive(Args, Debug)]
pub(super) struct ReportArgs {
    /// The run's database.
    #[arg(long)]
    db: PathBuf,
    /// The HTML file to write; `-` is standard output.
    #[arg(short, long, default_value = "report.html")]
    output: PathBuf,
}

/// Gathers the run's series and summary and writes the HTML file.
pub(super) fn report(args: &ReportArgs) -> anyhow::Result<u8> {
    let store = Store::open_read_only(&args.db)?;
    let mut inputs = html::gather(&store)?;
    let config = store.meta("config_path")?.map(PathBuf::from);
    if let Some(config) = config.as_ref().and_then(|c| Config::load(c).ok()) {
        inputs.workers = Some(config.workers as u64);
        inputs.pause_at = html::pause_marks(&config.limits);
    }
    if let (Some(worklist), Some(_)) = (store.meta("worklist")?, &config) {
        let estimate = EstimateArgs {
            worklist: PathBuf::from(worklist),
            config: config.clone(),
            latency: None,
            from_db: Some(args.db.clone()),
            deadline: None,
            start: None,
            workers: None,
            json: true,
            via: super::batch::Via::Online,
        };
        inputs.bound_s = estimate_of(&estimate).ok().map(|e| e.makespan_s);
    }
    let page = html::render(&inputs)?;
    if args.output == Path::new("-") {
        out(&page)?;
    } else {
        std::fs::write(&args.output, page)
            .with_context(|| format!("{}: cannot write the report", args.output.display()))?;
        eprintln!("report written to {}", args.output.display());
    }
    Ok(EXIT_OK)
}
