//! `ratebound status --watch`: the live view of a run, redrawn from its db in place.
//!
//! Owns the refresh loop: read the status (the caller says how), turn it into the same
//! [`View`](super::live::View) `run` shows, redraw, wait the interval; until the run is
//! finished or Ctrl-C. On a terminal the frame is redrawn in place (indicatif); otherwise
//! one plain line per refresh. Reading is the caller's, so this file never opens a db.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressDrawTarget};

use super::live::{self, State, View};
use super::progress::{draw, gauges};
use super::status::Status;
use crate::session::RunState;
use crate::store::StoreError;

/// The view of a status read at unix ms `now_ms`.
pub fn view_of(s: &Status, now_ms: u64) -> View {
    let state = match s.state {
        RunState::Running => State::Running,
        RunState::Paused => State::Paused,
        RunState::Finished => State::Finished,
        RunState::Stopped => State::Stopped,
    };
    let eta = match s.eta_s {
        Some(secs) => {
            humantime::format_duration(Duration::from_secs(secs.ceil() as u64)).to_string()
        }
        None if s.pending == 0 => "0s".into(),
        None => "unknown".into(),
    };
    View {
        total: s.total,
        done: s.done,
        failed: s.failed,
        in_flight: s.in_flight,
        workers: None,
        rate_limited: s.responses_429,
        retries: s.retries,
        rate: s.items_per_s,
        eta,
        limits: gauges(&s.limits, &[], now_ms),
        state,
    }
}

/// Redraws the view of `read()` every `interval` until the run is finished or Ctrl-C.
pub async fn watch(
    mut read: impl FnMut() -> Result<Status, StoreError>,
    interval: Duration,
) -> Result<(), StoreError> {
    let terminal = std::io::stdout().is_terminal();
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
    let mut lines = Vec::new();
    loop {
        let status = read()?;
        let view = view_of(&status, crate::clock::unix_ms(SystemTime::now()));
        if terminal {
            draw(&multi, &mut lines, &live::frame(&view, 80));
        } else {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{}", live::plain_line(&view)).is_err() {
                return Ok(());
            }
        }
        if status.state == RunState::Finished {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for bar in lines {
        bar.finish();
    }
    Ok(())
}
