//! The human form of `ratebound estimate`: a short table.
//!
//! Owns how a prediction reads; [`crate::estimate`] computes it. Durations are rounded to
//! the second, instants are RFC 3339 in UTC, money is in dollars.

use std::time::Duration;

use crate::estimate::{BatchOption, Change, DeadlineCheck, Estimate, LimitUse};

use super::{amount, period};

/// A span of seconds for people: `3h 12m 5s` (whole seconds, or milliseconds below 10 s).
fn span(s: f64) -> String {
    let s = s.max(0.0);
    if s < 10.0 {
        humantime::format_duration(Duration::from_millis((s * 1000.0).round() as u64)).to_string()
    } else {
        humantime::format_duration(Duration::from_secs(s.round() as u64)).to_string()
    }
}

/// Dollars for people: cents, or four decimals below a dollar.
fn dollars(usd: f64) -> String {
    if usd < 1.0 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// One change that would meet the deadline, for people.
fn change(c: &Change) -> String {
    if c.name == "workers" {
        format!("{} workers instead of {}", c.needed, c.current)
    } else {
        let per = period(c.per_s);
        if c.unit == "usd" {
            format!(
                "`{}` at {} instead of {} {per}",
                c.name,
                amount(c.needed as u64, &c.unit),
                amount(c.current as u64, &c.unit)
            )
        } else {
            format!(
                "`{}` at {} instead of {} {per}",
                c.name, c.needed, c.current
            )
        }
    }
}

/// The estimate as a short table.
pub fn render(e: &Estimate) -> String {
    let mut out = String::new();
    let mut row = |key: &str, value: String| out.push_str(&format!("{key:<10} {value}\n"));
    row("items", items_text(e));
    let basis = if e.usage_basis == "max_tokens" {
        "every allowed output token counted: an upper bound"
    } else {
        "as the previous run used them"
    };
    row("tokens", format!("{} ({basis})", e.tokens));
    if e.cost_usd > 0.0 {
        row("cost", dollars(e.cost_usd));
    }
    if let Some(b) = &e.batch {
        row("batch API", batch_text(b));
    }
    row(
        "makespan",
        format!(
            "{} with {} workers at {:.0} ms mean latency ({}); {} -> {}",
            span(e.makespan_s),
            e.workers,
            e.latency_ms,
            e.latency_model,
            e.start,
            e.end
        ),
    );
    if let Some(budget) = &e.stopped_by {
        row(
            "stops",
            format!(
                "run budget `{budget}` is spent after {} requests for {} items",
                e.requests, e.items
            ),
        );
    }
    row("binding", e.binding_limit.clone());
    row(
        "workers",
        format!(
            "{} reach 99% of the best throughput (best makespan {})",
            e.recommended_workers,
            span(e.best_makespan_s)
        ),
    );
    for l in &e.limits {
        row("limit", limit_text(l));
    }
    if let Some(d) = &e.deadline {
        row("deadline", deadline_text(d));
    }
    out
}

/// The items row: how many, the requests they take and the retries assumed.
fn items_text(e: &Estimate) -> String {
    let retries = if e.failure_share > 0.0 {
        format!(
            ", {:.1}% failing transiently and retried as [retry] says; {} items fail",
            e.failure_share * 100.0,
            e.items_failed
        )
    } else {
        String::new()
    };
    format!("{} ({} requests{retries})", e.items, e.requests)
}

/// The batch API row: its cost, the saving and whether its window meets the deadline.
fn batch_text(b: &BatchOption) -> String {
    let verdict = match b.meets_deadline {
        Some(true) => ", meets the deadline",
        Some(false) => ", may miss the deadline",
        None => "",
    };
    format!(
        "{} (saves {}), done within {}{verdict}",
        dollars(b.cost_usd),
        dollars(b.saving_usd),
        span(b.window_s)
    )
}

/// One limit's row: what the run needs of it, its use, and the windows it spans.
fn limit_text(l: &LimitUse) -> String {
    let mut text = format!(
        "{:<12} needs {}, alone allows {}, used {:.0}%, held back {:.0}% of waits",
        l.name,
        amount(l.needed, &l.unit),
        span(l.bound_s),
        l.utilization * 100.0,
        l.held_share * 100.0
    );
    if let (Some(periods), Some(per)) = (l.periods, l.period_s) {
        let windows = if periods == 1 { "window" } else { "windows" };
        text.push_str(&format!(", spans {periods} {windows} of {}", span(per)));
        match l.runs_out.as_slice() {
            [] => {}
            [one] => text.push_str(&format!(", runs out {one}")),
            [first, .., last] => text.push_str(&format!(
                ", runs out {} times ({first} first, {last} last)",
                l.runs_out.len()
            )),
        }
    }
    text
}

/// The deadline row: fits with a margin, or misses and what would have to change.
fn deadline_text(d: &DeadlineCheck) -> String {
    let changes = || {
        d.changes
            .iter()
            .map(change)
            .collect::<Vec<_>>()
            .join(" and ")
    };
    if d.fits {
        format!(
            "{}: fits, {} to spare",
            span(d.deadline_s),
            span(d.margin_s)
        )
    } else if d.margin_s >= 0.0 {
        format!(
            "{}: missed, the run stops before the end; to finish: {}",
            span(d.deadline_s),
            changes()
        )
    } else if d.changes.is_empty() {
        format!("{}: misses by {}", span(d.deadline_s), span(-d.margin_s))
    } else {
        format!(
            "{}: misses by {}; to make it: {}",
            span(d.deadline_s),
            span(-d.margin_s),
            changes()
        )
    }
}
