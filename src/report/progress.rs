//! Live progress of a run: the live view on a terminal, plain periodic lines otherwise.
//!
//! Owns what the user sees while a run is going. On a terminal (stderr), an indicatif
//! `MultiProgress` redraws the frame `report::live` renders: the main bar, the state, one
//! gauge per limit, quotas with their reset and `pause_at`, warnings past 80%. When stderr
//! is not a terminal (a log file, CI), one plain line every few seconds says the same, and
//! each quota warning is printed once. `--quiet` shows nothing. The run's state (backing
//! off, paused on quota, waiting for Redis) is read from the snapshots: their note and
//! whether 429s are still coming.

use std::io::IsTerminal;
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::live::{self, Gauge, State, View};
use crate::limiter::BucketUsage;
use crate::session::Snapshot;

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How long after a 429 the view says the run is backing off.
const BACKING_OFF_FOR: Duration = Duration::from_secs(5);

/// The view's columns on a terminal.
const COLUMNS: usize = 80;

enum Mode {
    Frame {
        multi: MultiProgress,
        lines: Vec<ProgressBar>,
    },
    Lines {
        last: Option<Instant>,
        warned: Vec<String>,
    },
    Quiet,
}

/// The progress display of one session.
pub struct Progress {
    mode: Mode,
    session_start: Instant,
    start_finished: u64,
    workers: Option<u64>,
    pause_at: Vec<(String, f64)>,
    seen_429: Option<u64>,
    last_429: Option<Instant>,
    learned: Vec<(String, u64)>,
}

impl Progress {
    /// The live view when stderr is a terminal, plain lines otherwise, nothing when
    /// `quiet`. `finished` counts items finished in earlier sessions, so the pace is this
    /// session's.
    pub fn new(_total: u64, finished: u64, quiet: bool) -> Progress {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Frame {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                lines: Vec::new(),
            }
        } else {
            Mode::Lines {
                last: None,
                warned: Vec::new(),
            }
        };
        Progress {
            mode,
            session_start: Instant::now(),
            start_finished: finished,
            workers: None,
            pause_at: Vec::new(),
            seen_429: None,
            last_429: None,
            learned: Vec::new(),
        }
    }

    /// Shows the worker count and each quota's `pause_at` share (by limit name).
    pub fn with_limits(mut self, workers: u64, pause_at: Vec<(String, f64)>) -> Progress {
        self.workers = Some(workers);
        self.pause_at = pause_at;
        self
    }

    /// The view of `s` now.
    fn view(&mut self, s: &Snapshot) -> View {
        let pace = Pace::of(s, self.session_start.elapsed(), self.start_finished);
        // 429s counted before this session's first view are not this session's news.
        match self.seen_429 {
            None => self.seen_429 = Some(s.rate_limited),
            Some(seen) if s.rate_limited > seen => {
                self.seen_429 = Some(s.rate_limited);
                self.last_429 = Some(Instant::now());
            }
            Some(_) => {}
        }
        let backing_off = self
            .last_429
            .is_some_and(|at| at.elapsed() < BACKING_OFF_FOR);
        let learned: Vec<(String, u64)> = (s.limits.iter())
            .filter(|l| l.name.starts_with("learned-"))
            .map(|l| (l.name.clone(), l.limit))
            .collect();
        let searching = !self.learned.is_empty() && learned != self.learned;
        self.learned = learned;
        let now_ms = crate::clock::unix_ms(std::time::SystemTime::now());
        View {
            total: s.total,
            done: s.done,
            failed: s.failed,
            in_flight: s.in_flight,
            workers: self.workers,
            rate_limited: s.rate_limited,
            retries: s.retries,
            rate: pace.rate,
            eta: pace.eta,
            limits: gauges(&s.limits, &self.pause_at, now_ms),
            state: state_of(
                s.note.as_deref(),
                backing_off,
                searching,
                super::searched_rate(&s.limits),
            ),
        }
    }

    /// Shows `s` (a plain line at most every few seconds).
    pub fn update(&mut self, s: &Snapshot) {
        if matches!(self.mode, Mode::Quiet) {
            return;
        }
        let view = self.view(s);
        match &mut self.mode {
            Mode::Frame { multi, lines } => draw(multi, lines, &live::frame(&view, COLUMNS)),
            Mode::Lines { last, warned } => {
                // Progress is for whoever watches; a closed pipe must not stop the run.
                let mut err = std::io::stderr().lock();
                for w in live::warnings(&view) {
                    if !warned.contains(&w) {
                        let _ = writeln!(err, "{w}");
                        warned.push(w);
                    }
                }
                if last.is_some_and(|l| l.elapsed() < LINE_EVERY) {
                    return;
                }
                *last = Some(Instant::now());
                let _ = writeln!(err, "{}", live::plain_line(&view));
            }
            Mode::Quiet => {}
        }
    }

    /// Clears the view at the end of a session.
    pub fn finish(&mut self, _last: &Snapshot) {
        if let Mode::Frame { multi, lines } = &mut self.mode {
            for bar in lines.drain(..) {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
        }
    }
}

/// Redraws `frame` on `multi`, one message-only bar per line.
pub fn draw(multi: &MultiProgress, lines: &mut Vec<ProgressBar>, frame: &[String]) {
    while lines.len() < frame.len() {
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        lines.push(bar);
    }
    while lines.len() > frame.len() {
        if let Some(bar) = lines.pop() {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
    }
    for (bar, text) in lines.iter().zip(frame) {
        bar.set_message(text.clone());
    }
}

/// The gauges of `limits` at unix ms `now_ms`, with their `pause_at` marks.
pub fn gauges(limits: &[BucketUsage], pause_at: &[(String, f64)], now_ms: u64) -> Vec<Gauge> {
    (limits.iter())
        .map(|l| {
            let mut g = Gauge {
                name: l.name.clone(),
                unit: l.unit.clone(),
                used: l.used,
                limit: l.limit,
                window_s: l.window_s,
                reset_in: None,
                pause_at: pause_at.iter().find(|(n, _)| *n == l.name).map(|p| p.1),
            };
            if g.is_quota() {
                g.reset_in = live::reset_in(now_ms, l.window_s);
            }
            g
        })
        .collect()
}

/// The run's state from the runner's note, recent 429s, a learned limit that moved and the
/// rate the search for a provider without headers allows now.
pub fn state_of(
    note: Option<&str>,
    backing_off: bool,
    searching: bool,
    searched: Option<f64>,
) -> State {
    match note {
        Some(n) if n.starts_with("dispatch paused") => State::WaitingForRedis,
        Some(n) if n.starts_with("waiting for quota") => State::PausedOnQuota(n.to_string()),
        Some(n) => State::Note(n.to_string()),
        None if backing_off => State::BackingOff,
        None if searched.is_some() => State::Searching(searched),
        None if searching => State::Searching(None),
        None => State::Running,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_gives_counts_rate_eta_state_and_limits() {
        let s = Snapshot {
            total: 1000,
            done: 240,
            failed: 10,
            rate_limited: 3,
            retries: 4,
            in_flight: 8,
            limits: vec![BucketUsage {
                name: "rpm".into(),
                unit: "requests".into(),
                used: 45,
                limit: 50,
                window_s: 60.0,
            }],
            ..Snapshot::default()
        };
        let pace = Pace::of(&s, Duration::from_secs(10), 50);
        let view = View {
            total: s.total,
            done: s.done,
            failed: s.failed,
            in_flight: s.in_flight,
            workers: Some(8),
            rate_limited: s.rate_limited,
            retries: s.retries,
            rate: pace.rate,
            eta: pace.eta,
            limits: gauges(&s.limits, &[], 0),
            state: state_of(None, true, false, None),
        };
        assert_eq!(
            live::plain_line(&view),
            "progress: 250/1000 (25.0%) done 240 failed 10 · 20.0/s · ETA 38s · 429s 3 · retries 4 · in flight 8 · backing off after 429s or errors · rpm 90%"
        );
    }

    #[test]
    fn the_searched_limit_in_a_snapshot_shows_the_rate_being_searched() {
        let mut progress = Progress::new(100, 0, true);
        let searched = BucketUsage {
            name: crate::limiter::SEARCHED.into(),
            unit: "requests".into(),
            used: 2,
            limit: 4_830,
            window_s: 100.0,
        };
        let s = Snapshot {
            total: 100,
            limits: vec![searched],
            ..Snapshot::default()
        };
        assert_eq!(progress.view(&s).state, State::Searching(Some(48.3)));
        assert_eq!(progress.view(&Snapshot::default()).state, State::Running);
    }

    #[test]
    fn the_state_comes_from_the_runners_note_first() {
        assert_eq!(
            state_of(
                Some("dispatch paused: redis down; retrying"),
                true,
                false,
                None
            ),
            State::WaitingForRedis
        );
        let quota = "waiting for quota `daily` to reset at 2026-12-05T00:00:00Z (in 7h)";
        assert_eq!(
            state_of(Some(quota), false, false, None),
            State::PausedOnQuota(quota.into())
        );
        assert_eq!(state_of(None, false, true, None), State::Searching(None));
        assert_eq!(
            state_of(None, false, false, Some(40.0)),
            State::Searching(Some(40.0))
        );
        assert_eq!(state_of(None, false, false, None), State::Running);
    }

    #[test]
    fn quotas_get_their_reset_and_pause_mark() {
        let daily = BucketUsage {
            name: "daily".into(),
            unit: "requests".into(),
            used: 10,
            limit: 100,
            window_s: 86_400.0,
        };
        let g = gauges(&[daily], &[("daily".into(), 0.8)], 3_600_000);
        assert_eq!(g[0].pause_at, Some(0.8));
        assert_eq!(g[0].reset_in, Some(Duration::from_secs(23 * 3600)));
    }
}
