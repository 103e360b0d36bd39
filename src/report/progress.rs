//! Live progress of a run: a bar on a terminal, plain periodic lines otherwise.
//!
//! Owns what the user sees while a run is going. On a terminal, an indicatif bar shows
//! done/total, rate, ETA, 429s, retries and in-flight requests; when stdout is not a
//! terminal (a log file, CI), one plain line every few seconds says the same. `--quiet`
//! shows nothing.

use std::io::IsTerminal;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::limiter::BucketUsage;

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The run's state at one instant, totals over every session.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Items in the run.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items failed permanently.
    pub failed: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent.
    pub sent: u64,
    /// 429 responses.
    pub rate_limited: u64,
    /// Attempts after an item's first.
    pub retries: u64,
    /// Active run time.
    pub elapsed: Duration,
    /// Per-limit usage.
    pub limits: Vec<BucketUsage>,
    /// What the run is waiting for, if anything unusual (a quota's reset).
    pub note: Option<String>,
}

impl Snapshot {
    /// Items finished, done or failed.
    pub fn finished(&self) -> u64 {
        self.done + self.failed
    }
}

enum Mode {
    Bar(ProgressBar),
    Lines { last: Option<Instant> },
    Quiet,
}

/// The progress display of one session.
pub struct Progress {
    mode: Mode,
    session_start: Instant,
    start_finished: u64,
}

impl Progress {
    /// A bar when stdout is a terminal, plain lines otherwise, nothing when `quiet`.
    /// `finished` counts items finished in earlier sessions, so the pace is this session's.
    pub fn new(total: u64, finished: u64, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stdout().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            bar.set_position(finished);
            bar.enable_steady_tick(Duration::from_millis(200));
            Mode::Bar(bar)
        } else {
            Mode::Lines { last: None }
        };
        Progress {
            mode,
            session_start: Instant::now(),
            start_finished: finished,
        }
    }

    /// Shows `s` (a plain line at most every few seconds).
    pub fn update(&mut self, s: &Snapshot) {
        let pace = Pace::of(s, self.session_start.elapsed(), self.start_finished);
        match &mut self.mode {
            Mode::Bar(bar) => {
                bar.set_position(s.finished());
                bar.set_message(match &s.note {
                    Some(note) => format!("· {note}"),
                    None => format!(
                        "· {:.1}/s · ETA {} · 429s {} · retries {} · in flight {} · failed {}",
                        pace.rate, pace.eta, s.rate_limited, s.retries, s.in_flight, s.failed
                    ),
                });
            }
            Mode::Lines { last } => {
                if last.is_some_and(|l| l.elapsed() < LINE_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                // Progress is for whoever watches; a closed pipe must not stop the run.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", line(s, &pace));
                if let Some(note) = &s.note {
                    let _ = writeln!(out, "progress: {note}");
                }
            }
            Mode::Quiet => {}
        }
    }

    /// Clears the bar at the end of a session.
    pub fn finish(&mut self, s: &Snapshot) {
        if let Mode::Bar(bar) = &self.mode {
            bar.set_position(s.finished());
            bar.finish_and_clear();
        }
    }
}

/// This session's pace: items per second and the time left at that rate.
pub struct Pace {
    /// Items finished per second in this session.
    pub rate: f64,
    /// Time left at that rate, humanly formatted, or `unknown`.
    pub eta: String,
}

impl Pace {
    /// The pace of `s` after `session` of this session, which began with `start_finished`
    /// items already finished.
    pub fn of(s: &Snapshot, session: Duration, start_finished: u64) -> Pace {
        let secs = session.as_secs_f64();
        let rate = if secs > 0.0 {
            s.finished().saturating_sub(start_finished) as f64 / secs
        } else {
            0.0
        };
        let left = s.total.saturating_sub(s.finished());
        let eta = if left == 0 {
            "0s".to_string()
        } else if rate > 0.0 {
            humantime::format_duration(Duration::from_secs((left as f64 / rate).ceil() as u64))
                .to_string()
        } else {
            "unknown".to_string()
        };
        Pace { rate, eta }
    }
}

/// One plain progress line: counts, pace and ETA.
pub fn line(s: &Snapshot, pace: &Pace) -> String {
    let pct = if s.total == 0 {
        100.0
    } else {
        s.finished() as f64 * 100.0 / s.total as f64
    };
    format!(
        "progress: {}/{} ({pct:.1}%) done {} failed {} · {:.1}/s · ETA {} · 429s {} · retries {} · in flight {}",
        s.finished(),
        s.total,
        s.done,
        s.failed,
        pace.rate,
        pace.eta,
        s.rate_limited,
        s.retries,
        s.in_flight
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_gives_counts_rate_and_eta() {
        let s = Snapshot {
            total: 1000,
            done: 240,
            failed: 10,
            rate_limited: 3,
            retries: 4,
            in_flight: 8,
            ..Snapshot::default()
        };
        let text = line(&s, &Pace::of(&s, Duration::from_secs(10), 50));
        assert_eq!(
            text,
            "progress: 250/1000 (25.0%) done 240 failed 10 · 20.0/s · ETA 38s · 429s 3 · retries 4 · in flight 8"
        );
    }
}
