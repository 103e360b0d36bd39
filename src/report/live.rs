//! The live view's frames: what `run` shows on a terminal and `status --watch` repeats.
//!
//! Owns a pure rendering: a [`View`] (counts, pace, each limit's use, the run's state)
//! becomes lines no wider than asked (80 columns by default): the main bar, a state line,
//! one gauge per limit with a mark on the one that binds now, calendar quotas and budgets
//! with the time to their reset and their `pause_at` mark, and a warning for any quota or
//! budget past 80%. No terminal, no clock: `progress` and `status --watch` build the view
//! and draw the lines.

use std::time::Duration;

/// A quota or budget past this share of its limit gets a warning.
pub const WARN_AT: f64 = 0.8;

/// Columns of the bars.
const MAIN_BAR: usize = 24;
const GAUGE_BAR: usize = 20;

/// What the run is doing.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Sending at the pace the limits allow.
    Running,
    /// Sending while it learns the provider's real rate: from its headers, or (with the
    /// rate now allowed, requests per second) by a search where it sends none.
    Searching(Option<f64>),
    /// Holding back after 429s or errors.
    BackingOff,
    /// Paused on a quota or budget; the text says until when.
    PausedOnQuota(String),
    /// Paused by `ratebound pause`.
    Paused,
    /// The shared (Redis) limiter is unreachable; nothing is admitted.
    WaitingForRedis,
    /// No runner is working on it.
    Stopped,
    /// Every item is finished.
    Finished,
    /// Something else the runner said.
    Note(String),
}

/// One limit as the view shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gauge {
    /// The limit's name.
    pub name: String,
    /// Its unit (`requests`, `tokens`, `usd` in micro-dollars, ...).
    pub unit: String,
    /// Units in use in the current window.
    pub used: u64,
    /// Units the window holds.
    pub limit: u64,
    /// Window length, s: 0 for a whole-run budget, a day or more for a calendar quota.
    pub window_s: f64,
    /// Time until a calendar quota resets, when known.
    pub reset_in: Option<Duration>,
    /// The share at which the run pauses (a quota's `pause_at`).
    pub pause_at: Option<f64>,
}

impl Gauge {
    /// A calendar quota or a budget, as opposed to a rolling rate.
    pub fn is_quota(&self) -> bool {
        self.window_s == 0.0 || self.window_s >= 86_400.0
    }

    /// Used share of the limit, 0..=1 (and above when over).
    pub fn share(&self) -> f64 {
        self.used as f64 / self.limit.max(1) as f64
    }
}

/// Everything one frame shows.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// Items in the run.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items failed for good.
    pub failed: u64,
    /// Requests in flight.
    pub in_flight: u64,
    /// Workers (most requests in flight), when known.
    pub workers: Option<u64>,
    /// 429 answers so far.
    pub rate_limited: u64,
    /// Retries so far.
    pub retries: u64,
    /// Items finished per second.
    pub rate: f64,
    /// Time left, for people (`38s`, `unknown`).
    pub eta: String,
    /// Each limit.
    pub limits: Vec<Gauge>,
    /// What the run is doing.
    pub state: State,
}

/// `n` in at most 5 characters: `999`, `12.3k`, `4.5M`.
pub fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..999_950 => format!("{:.1}k", n as f64 / 1e3),
        999_950..999_950_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// An amount of `unit`, short: dollars for `usd`, else the number.
fn amount(n: u64, unit: &str) -> String {
    if unit == "usd" {
        format!("${:.2}", n as f64 / 1e6)
    } else {
        compact(n)
    }
}

fn unit_short(unit: &str) -> &str {
    match unit {
        "requests" => "req",
        "tokens" => "tok",
        "usd" => "",
        other => other,
    }
}

/// A bar of `width` cells filled to `share`, with `|` at `mark` (a share) if given.
pub fn bar(share: f64, width: usize, mark: Option<f64>) -> String {
    let filled = ((share.clamp(0.0, 1.0) * width as f64).round()) as usize;
    let mark = mark.map(|m| ((m.clamp(0.0, 1.0) * width as f64).round() as usize).min(width - 1));
    (0..width)
        .map(|i| match (i < filled, Some(i) == mark) {
            (_, true) => '|',
            (true, false) => '█',
            (false, false) => '░',
        })
        .collect()
}

/// `s` cut to `width` characters.
fn fit(s: String, width: usize) -> String {
    if s.chars().count() <= width {
        s
    } else {
        s.chars()
            .take(width.saturating_sub(1))
            .chain(['…'])
            .collect()
    }
}

fn main_line(v: &View) -> String {
    let finished = v.done + v.failed;
    let share = if v.total == 0 {
        1.0
    } else {
        finished as f64 / v.total as f64
    };
    format!(
        "{} {}/{} {:>5.1}% {:.1}/s ETA {}",
        bar(share, MAIN_BAR, None),
        finished,
        v.total,
        share * 100.0,
        v.rate,
        v.eta
    )
}

fn state_text(state: &State) -> String {
    match state {
        State::Running => "running".into(),
        State::Searching(None) => "searching the rate (learning the limits from headers)".into(),
        State::Searching(Some(rate)) => {
            format!("searching the rate: {rate:.1} req/s now (no rate-limit headers)")
        }
        State::BackingOff => "backing off after 429s or errors".into(),
        State::PausedOnQuota(until) => format!("paused on quota: {until}"),
        State::Paused => "paused (ratebound resume continues)".into(),
        State::WaitingForRedis => "waiting for Redis (nothing is admitted meanwhile)".into(),
        State::Stopped => "stopped".into(),
        State::Finished => "finished".into(),
        State::Note(note) => note.clone(),
    }
}

fn counts_line(v: &View) -> String {
    let workers = v.workers.map_or(String::new(), |w| format!("/{w}"));
    format!(
        "in flight {}{workers} · 429s {} · retries {} · failed {}",
        v.in_flight, v.rate_limited, v.retries, v.failed
    )
}

/// The rolling limit closest to full: the one that binds now.
fn binding(v: &View) -> Option<usize> {
    (v.limits.iter().enumerate())
        .filter(|(_, g)| !g.is_quota() && g.used > 0)
        .max_by(|a, b| a.1.share().total_cmp(&b.1.share()))
        .map(|(i, _)| i)
}

fn gauge_line(g: &Gauge, binding: bool) -> String {
    let used = format!(
        "{}/{} {}",
        amount(g.used, &g.unit),
        amount(g.limit, &g.unit),
        unit_short(&g.unit)
    );
    let mut line = format!(
        "{:<10} {} {:<16} {:>3.0}%",
        fit(g.name.clone(), 10),
        bar(g.share(), GAUGE_BAR, g.pause_at),
        used.trim_end(),
        g.share() * 100.0
    );
    if binding {
        line.push_str(" ◀ binds");
    }
    if let Some(reset) = g.reset_in {
        let mins = reset.as_secs() / 60;
        line.push_str(&format!(" resets {}h{:02}m", mins / 60, mins % 60));
    }
    if let Some(p) = g.pause_at {
        line.push_str(&format!(" | {:.0}%", p * 100.0));
    }
    line
}

/// Warnings for quotas and budgets past [`WARN_AT`].
pub fn warnings(v: &View) -> Vec<String> {
    (v.limits.iter())
        .filter(|g| g.is_quota() && g.share() > WARN_AT)
        .map(|g| {
            let pause = g
                .pause_at
                .map_or(String::new(), |p| format!(", pauses at {:.0}%", p * 100.0));
            format!(
                "warning: `{}` is at {:.0}% of its limit{pause}",
                g.name,
                g.share() * 100.0
            )
        })
        .collect()
}

/// The frame's lines, none wider than `width` characters.
pub fn frame(v: &View, width: usize) -> Vec<String> {
    let bind = binding(v);
    let mut lines = vec![
        main_line(v),
        format!("state      {}", state_text(&v.state)),
        format!("requests   {}", counts_line(v)),
    ];
    lines.extend((v.limits.iter().enumerate()).map(|(i, g)| gauge_line(g, Some(i) == bind)));
    lines.extend(warnings(v));
    lines.into_iter().map(|l| fit(l, width)).collect()
}

/// One plain line for logs (stderr not a terminal): counts, pace, state and each limit.
pub fn plain_line(v: &View) -> String {
    let finished = v.done + v.failed;
    let pct = if v.total == 0 {
        100.0
    } else {
        finished as f64 * 100.0 / v.total as f64
    };
    let mut line = format!(
        "progress: {finished}/{} ({pct:.1}%) done {} failed {} · {:.1}/s · ETA {} · 429s {} · retries {} · in flight {} · {}",
        v.total,
        v.done,
        v.failed,
        v.rate,
        v.eta,
        v.rate_limited,
        v.retries,
        v.in_flight,
        state_text(&v.state)
    );
    for g in &v.limits {
        line.push_str(&format!(" · {} {:.0}%", g.name, g.share() * 100.0));
    }
    line
}

/// Time until the next UTC-aligned boundary of a `window_s` calendar window at unix ms
/// `now_ms`; `None` for a whole-run budget.
pub fn reset_in(now_ms: u64, window_s: f64) -> Option<Duration> {
    let window_ms = (window_s * 1000.0) as u64;
    (window_ms > 0).then(|| Duration::from_millis(window_ms - now_ms % window_ms))
}

#[cfg(test)]
mod tests;
