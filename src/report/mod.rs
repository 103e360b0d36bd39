//! Everything the user reads: live progress, the end-of-run summary, status and exports.
//!
//! Owns user-facing text. Other modules hand it numbers; it decides how they look. Nothing
//! here prints secrets: it only ever sees counts, ids, statuses and response bodies.

pub mod chart;
pub mod estimate;
pub mod export;
pub mod html;
pub mod live;
pub mod progress;
pub mod status;
pub mod watch;

use std::path::Path;
use std::time::Duration;

use crate::session::{End, Summary};

/// The rate the search allows now, in requests per second, when `limits` hold the
/// searched limit (the runner shows it only while it searches).
pub fn searched_rate(limits: &[crate::limiter::BucketUsage]) -> Option<f64> {
    let l = limits.iter().find(|l| l.name == crate::limiter::SEARCHED)?;
    Some(l.limit as f64 / l.window_s.max(1e-9))
}

/// The line saying the rate is being searched, and what it is now, when `limits` hold the
/// searched limit (the provider sends no rate-limit headers).
pub fn searching_line(limits: &[crate::limiter::BucketUsage]) -> Option<String> {
    let per_s = searched_rate(limits)?;
    Some(format!(
        "searching the rate: {per_s:.1} requests/s now (the API sends no rate-limit headers)"
    ))
}

/// An amount of `unit` for people: dollars for `usd` (kept as micro-dollars), else the
/// number and the unit.
pub fn amount(value: u64, unit: &str) -> String {
    if unit == "usd" {
        format!("${:.4}", crate::limiter::budget::usd(value))
    } else {
        format!("{value} {unit}")
    }
}

/// A limit's period for people: `per 1m`, or `for the whole run` for a run budget.
pub fn period(window_s: f64) -> String {
    if window_s > 0.0 {
        format!(
            "per {}",
            humantime::format_duration(Duration::from_secs_f64(window_s))
        )
    } else {
        "for the whole run".to_string()
    }
}

/// The one-screen summary printed when a session ends.
pub fn summary(s: &Summary, db: &Path) -> String {
    let snap = &s.snapshot;
    let secs = s.session.as_secs_f64();
    let rate = if secs > 0.0 {
        s.session_sent as f64 / secs
    } else {
        0.0
    };
    let headline = match &s.end {
        End::Finished if snap.failed == 0 => "finished: every item is done".to_string(),
        End::Finished => format!(
            "finished with {} permanent failures; put them back in the queue with `ratebound retry-failed --db {}`",
            snap.failed,
            db.display()
        ),
        End::Interrupted => {
            "interrupted: in-flight requests were recorded; run the same command again to continue"
                .to_string()
        }
        End::Paused { reason, until } => match until {
            Some(t) => format!(
                "paused: {reason}; resume after {} with `ratebound resume --db {}` (or the same run command)",
                humantime::format_rfc3339_seconds(*t),
                db.display()
            ),
            None => format!(
                "paused: {reason}; when it is restored (raise the limit, add credit), continue with `ratebound resume --db {}`",
                db.display()
            ),
        },
        End::AuthRefused { status, .. } => format!(
            "stopped: the API refused the credentials (HTTP {status}); no item was marked failed"
        ),
        End::Unreachable { error, after } => format!(
            "the API is unreachable: {error}\n  every attempt failed to connect for {}; no item was marked failed and no attempt was spent\n  hint: check [api] base_url, the network (DNS, proxy, firewall) and that the API is up, then run the same command again",
            humantime::format_duration(*after)
        ),
    };
    let mut out = format!(
        "{headline}\n  items     {} done, {} failed, {} pending of {}\n  requests  {} this session ({rate:.1}/s over {}), {} answered 429, {} retries\n",
        snap.done,
        snap.failed,
        snap.total.saturating_sub(snap.finished()),
        snap.total,
        s.session_sent,
        humantime::format_duration(Duration::from_millis(s.session.as_millis() as u64)),
        snap.rate_limited,
        snap.retries,
    );
    for l in &snap.limits {
        out.push_str(&format!(
            "  limit     {} = {} {}\n",
            l.name,
            amount(l.limit, &l.unit),
            period(l.window_s)
        ));
    }
    if let Some(line) = searching_line(&snap.limits) {
        out.push_str(&format!(
            "  rate      {line}
"
        ));
    }
    if let End::AuthRefused { body, .. } = &s.end {
        out.push_str(&format!("  response  {body}\n  hint: check the API key your config's headers reference (e.g. ${{API_KEY}}), then run the same command again\n"));
    }
    let db = db.display();
    if snap.failed > 0 {
        out.push_str(&format!(
            "  failures  ratebound export --db {db} --failed\n"
        ));
    }
    out.push_str(&format!(
        "  results   ratebound export --db {db} -o results.jsonl\n"
    ));
    out
}
