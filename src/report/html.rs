//! `ratebound report`: the run as one self-contained HTML file, charts first.
//!
//! Owns the report's content: which charts (throughput against each limit, each limit's
//! use, 429s/5xx/retries, latency, in flight against workers, quota and budget burn-down
//! with `pause_at`, tokens and cost), the shading of pauses and stops, and the summary
//! table on top. Everything is inline (CSS and SVG): no script, no network, it opens from
//! disk. Each figure says in `data-series` how many points each recorded line has, and
//! each line is the only polyline of its colour in its SVG, so tests can check the
//! drawing against the store.

use std::fmt::Write as _;

use super::chart::{Chart, ChartError, Line};
use crate::limiter::{LimitKind, LimitSpec};
use crate::series::{LimitUse, Point};
use crate::session::RunState;
use crate::store::{Store, StoreError};

/// Colours of recorded lines, in order.
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];

/// Colours of reference lines (limits, workers, pause marks), in order.
const REFERENCES: [&str; 4] = ["#d62728", "#7f7f7f", "#a00000", "#e7969c"];

/// A gap between heartbeats longer than this is a stop (no runner), shaded.
const GAP_MS: u64 = 5_000;

/// Everything the report shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// The heading (the db's name).
    pub title: String,
    /// The run's time series, in time order.
    pub points: Vec<Point>,
    /// Items in the run.
    pub total: u64,
    /// Items done.
    pub done: u64,
    /// Items failed for good.
    pub failed: u64,
    /// Failed items by class (`HTTP 400`, `transport`, ...), most first.
    pub failures: Vec<(String, u64)>,
    /// `[workers] max`, when the config is at hand.
    pub workers: Option<u64>,
    /// Each quota's or budget's `pause_at` share (0..1), by limit name.
    pub pause_at: Vec<(String, f64)>,
    /// The makespan `estimate` gives for the same list and config, seconds.
    pub bound_s: Option<f64>,
}

/// What the db at `store` holds for the report: its series, counts and failure classes.
/// The config's part (workers, `pause_at`) and the estimate's bound are the caller's.
pub fn gather(store: &Store) -> Result<Inputs, StoreError> {
    let counts = store.counts()?;
    let mut failures: Vec<(String, u64)> = Vec::new();
    for row in store.results(true)? {
        let class = row
            .http_status
            .map_or("transport".to_string(), |s| format!("HTTP {s}"));
        match failures.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => failures.push((class, 1)),
        }
    }
    failures.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Inputs {
        title: store
            .path()
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        points: store.series()?,
        total: counts.total,
        done: counts.done,
        failed: counts.failed,
        failures,
        ..Inputs::default()
    })
}

/// Each quota's `pause_at` among `limits`, by name.
pub fn pause_marks(limits: &[LimitSpec]) -> Vec<(String, f64)> {
    (limits.iter())
        .filter_map(|l| match l.kind {
            LimitKind::Window {
                pause_at: Some(share),
                ..
            } => Some((l.name.clone(), share)),
            _ => None,
        })
        .collect()
}

/// Seconds from the first point to `ms`.
fn secs(points: &[Point], ms: u64) -> f64 {
    let t0 = points.first().map_or(0, |p| p.start_ms);
    ms.saturating_sub(t0) as f64 / 1000.0
}

/// A recorded line of `f` over the points where it has a value.
fn line(
    inputs: &Inputs,
    name: &str,
    color: &'static str,
    f: impl Fn(&Point) -> Option<f64>,
) -> Line {
    let points = (inputs.points.iter())
        .filter_map(|p| f(p).map(|v| (secs(&inputs.points, p.start_ms), v)))
        .collect();
    Line {
        name: name.to_string(),
        color,
        points,
        reference: false,
    }
}

/// A flat reference line at `value` across the run.
fn reference(inputs: &Inputs, name: String, color: &'static str, value: f64) -> Line {
    Line {
        name,
        color,
        points: vec![(0.0, value), (x_max(inputs), value)],
        reference: true,
    }
}

fn x_max(inputs: &Inputs) -> f64 {
    inputs
        .points
        .last()
        .map_or(0.0, |p| secs(&inputs.points, p.start_ms + p.width_ms))
}

/// Per second over the point's interval.
fn rate(count: u64, p: &Point) -> f64 {
    count as f64 * 1000.0 / p.width_ms.max(1) as f64
}

/// The limits seen in the run, each once, in the order first seen.
fn limits(inputs: &Inputs) -> Vec<LimitUse> {
    let mut seen: Vec<LimitUse> = Vec::new();
    for l in inputs.points.iter().flat_map(|p| &p.limits) {
        if !seen.iter().any(|s| s.name == l.name) {
            seen.push(l.clone());
        }
    }
    seen
}

/// Whether `l` is a calendar quota or a budget (burned down) rather than a rolling rate.
fn is_quota(l: &LimitUse) -> bool {
    l.window_s == 0.0 || l.window_s >= 86_400.0
}

/// The share of rolling limit `l` that interval `p` used: its requests or tokens per second
/// against the limit's rate; for other units, the bucket's fill at the heartbeat.
fn rolling_share(p: &Point, l: &LimitUse) -> f64 {
    let per_s = l.limit as f64 / l.window_s.max(1e-3);
    match l.unit.as_str() {
        "requests" => rate(p.sent, p) / per_s,
        "tokens" => rate(p.tokens, p) / per_s,
        _ => l.used as f64 / l.limit.max(1) as f64,
    }
}

fn use_of<'a>(p: &'a Point, name: &str) -> Option<&'a LimitUse> {
    p.limits.iter().find(|l| l.name == name)
}

/// Pauses (state `paused`) and stops (no heartbeat for a while), in seconds.
pub fn shaded(points: &[Point]) -> Vec<(f64, f64)> {
    let mut spans: Vec<(f64, f64)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let end = p.start_ms + p.width_ms;
        if p.state == RunState::Paused.as_str() {
            spans.push((secs(points, p.start_ms), secs(points, end)));
        }
        if let Some(next) = points.get(i + 1)
            && next.start_ms > end + GAP_MS
        {
            spans.push((secs(points, end), secs(points, next.start_ms)));
        }
    }
    spans
}

fn chart(inputs: &Inputs, id: &'static str, title: &str, y_desc: &str, lines: Vec<Line>) -> Chart {
    Chart {
        id,
        title: title.to_string(),
        y_desc: y_desc.to_string(),
        lines,
        shaded: shaded(&inputs.points),
        x_max: x_max(inputs),
    }
}

fn throughput(inputs: &Inputs) -> Chart {
    let mut lines = vec![
        line(inputs, "requests/s", COLORS[0], |p| Some(rate(p.sent, p))),
        line(inputs, "done/s", COLORS[2], |p| Some(rate(p.done, p))),
    ];
    let rolling = limits(inputs)
        .into_iter()
        .filter(|l| l.unit == "requests" && !is_quota(l));
    for (l, color) in rolling.zip(REFERENCES) {
        let per_s = l.limit as f64 / l.window_s;
        lines.push(reference(
            inputs,
            format!("limit {} ({per_s:.1}/s)", l.name),
            color,
            per_s,
        ));
    }
    chart(
        inputs,
        "throughput",
        "Throughput against the request limits",
        "per second",
        lines,
    )
}

fn limit_use(inputs: &Inputs) -> Chart {
    let mut lines: Vec<Line> = (limits(inputs).iter().filter(|l| !is_quota(l)))
        .zip(COLORS)
        .map(|(l, color)| {
            line(inputs, &format!("{} ({})", l.name, l.unit), color, |p| {
                use_of(p, &l.name).map(|u| rolling_share(p, u) * 100.0)
            })
        })
        .collect();
    lines.push(reference(inputs, "the limit".into(), REFERENCES[0], 100.0));
    chart(
        inputs,
        "limits",
        "Each limit's use",
        "% of the limit",
        lines,
    )
}

fn errors(inputs: &Inputs) -> Chart {
    let lines = vec![
        line(inputs, "429s", COLORS[1], |p| Some(p.rate_limited as f64)),
        line(inputs, "5xx", COLORS[3], |p| Some(p.server_errors as f64)),
        line(inputs, "retries", COLORS[4], |p| Some(p.retries as f64)),
    ];
    chart(
        inputs,
        "errors",
        "429s, 5xx and retries",
        "per interval",
        lines,
    )
}

fn latency(inputs: &Inputs) -> Chart {
    let lines = vec![
        line(inputs, "p50", COLORS[0], |p| {
            p.latency_p50_ms.map(|v| v as f64)
        }),
        line(inputs, "p95", COLORS[1], |p| {
            p.latency_p95_ms.map(|v| v as f64)
        }),
    ];
    chart(inputs, "latency", "Latency", "ms", lines)
}

fn in_flight(inputs: &Inputs) -> Chart {
    let mut lines = vec![line(inputs, "in flight", COLORS[0], |p| {
        Some(p.in_flight as f64)
    })];
    if let Some(w) = inputs.workers {
        lines.push(reference(
            inputs,
            format!("workers ({w})"),
            REFERENCES[1],
            w as f64,
        ));
    }
    chart(
        inputs,
        "in-flight",
        "Requests in flight against workers",
        "requests",
        lines,
    )
}

fn quotas(inputs: &Inputs) -> Option<Chart> {
    let quotas: Vec<LimitUse> = limits(inputs).into_iter().filter(is_quota).collect();
    if quotas.is_empty() {
        return None;
    }
    let mut lines: Vec<Line> = (quotas.iter().zip(COLORS))
        .map(|(l, color)| {
            line(inputs, &format!("{} left", l.name), color, |p| {
                use_of(p, &l.name).map(|u| 100.0 - u.used as f64 * 100.0 / u.limit.max(1) as f64)
            })
        })
        .collect();
    let marks = (quotas.iter())
        .filter_map(|l| inputs.pause_at.iter().find(|(n, _)| *n == l.name))
        .zip(REFERENCES);
    for ((name, share), color) in marks {
        let left = 100.0 - share * 100.0;
        lines.push(reference(
            inputs,
            format!("{name} pause_at ({left:.0}% left)"),
            color,
            left,
        ));
    }
    Some(chart(
        inputs,
        "quotas",
        "Quotas and budgets left",
        "% left",
        lines,
    ))
}

fn cost(inputs: &Inputs) -> Chart {
    let mut tokens = 0u64;
    let mut cumulative = Vec::with_capacity(inputs.points.len());
    for p in &inputs.points {
        tokens += p.tokens;
        cumulative.push((secs(&inputs.points, p.start_ms + p.width_ms), tokens as f64));
    }
    let mut lines = vec![Line {
        name: "tokens (cumulative)".into(),
        color: COLORS[5],
        points: cumulative,
        reference: false,
    }];
    if inputs.points.iter().any(|p| p.cost_micro_usd > 0) {
        lines.push(line(inputs, "cost, micro-dollars", COLORS[6], |p| {
            Some(p.cost_micro_usd as f64)
        }));
    }
    chart(
        inputs,
        "cost",
        "Tokens and cost over time",
        "tokens / micro-dollars",
        lines,
    )
}

/// The report's charts, in reading order.
pub fn charts(inputs: &Inputs) -> Vec<Chart> {
    let mut out = vec![
        throughput(inputs),
        limit_use(inputs),
        errors(inputs),
        latency(inputs),
    ];
    out.push(in_flight(inputs));
    out.extend(quotas(inputs));
    out.push(cost(inputs));
    out
}

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Active time: the points' widths added up, seconds.
fn active_s(points: &[Point]) -> f64 {
    points.iter().map(|p| p.width_ms).sum::<u64>() as f64 / 1000.0
}

/// The mean use of the most used rolling limit over the intervals that ran, 0..1: the
/// throughput against the limit's rate (see `rolling_share`).
pub fn utilization(points: &[Point]) -> Option<f64> {
    let running: Vec<f64> = (points.iter())
        .filter(|p| p.state == RunState::Running.as_str())
        .filter_map(|p| {
            (p.limits.iter())
                .filter(|l| !is_quota(l) && l.limit > 0)
                .map(|l| rolling_share(p, l).min(1.0))
                .reduce(f64::max)
        })
        .collect();
    (!running.is_empty()).then(|| running.iter().sum::<f64>() / running.len() as f64)
}

fn summary(inputs: &Inputs) -> String {
    let mut rows: Vec<(String, String)> = vec![(
        "items".into(),
        format!(
            "{} of which {} done, {} failed",
            inputs.total, inputs.done, inputs.failed
        ),
    )];
    for (class, n) in &inputs.failures {
        rows.push((format!("failed: {class}"), n.to_string()));
    }
    let active = active_s(&inputs.points);
    let wall = match inputs.bound_s {
        Some(b) if b > 0.0 => format!(
            "{active:.0} s active; estimate's bound {b:.0} s ({:.2}×)",
            active / b
        ),
        _ => format!("{active:.0} s active"),
    };
    rows.push(("wall time".into(), wall));
    let util = utilization(&inputs.points)
        .map_or("no rolling limit".into(), |u| format!("{:.1}%", u * 100.0));
    rows.push(("utilization of the binding limit".into(), util));
    let sum = |f: fn(&Point) -> u64| inputs.points.iter().map(f).sum::<u64>();
    rows.push((
        "requests".into(),
        format!(
            "{} ({} answered 429, {} 5xx, {} retries)",
            sum(|p| p.sent),
            sum(|p| p.rate_limited),
            sum(|p| p.server_errors),
            sum(|p| p.retries)
        ),
    ));
    rows.push(("tokens".into(), sum(|p| p.tokens).to_string()));
    let mut html = String::from("<table class=\"summary\">\n");
    for (k, v) in rows {
        let _ = writeln!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    html.push_str("</table>\n");
    html
}

fn figure(chart: &Chart) -> Result<String, ChartError> {
    let recorded: Vec<String> = (chart.lines.iter())
        .filter(|l| !l.reference)
        .map(|l| format!("{}={}={}", escape(&l.name), l.color, l.points.len()))
        .collect();
    let legend: String = (chart.lines.iter())
        .map(|l| {
            format!(
                "<span class=\"key\"><i style=\"background:{}\"></i>{}</span>",
                l.color,
                escape(&l.name)
            )
        })
        .collect();
    Ok(format!(
        "<figure id=\"{id}\" data-chart=\"{id}\" data-series=\"{series}\">\n<h2>{title}</h2>\n<div class=\"legend\">{legend}</div>\n{svg}\n</figure>\n",
        id = chart.id,
        series = recorded.join(";"),
        title = escape(&chart.title),
        svg = chart.svg()?,
    ))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}\
table.summary{border-collapse:collapse;margin-bottom:16px}\
table.summary th{text-align:left;padding:3px 14px 3px 0;font-weight:600}\
table.summary td{padding:3px 0}figure{margin:18px 0}h2{font-size:16px;margin:4px 0}\
.legend{font-size:13px}.key{margin-right:14px}.key i{display:inline-block;width:14px;height:3px;margin-right:4px;vertical-align:middle}\
.note{color:#666;font-size:13px}";

/// The whole report: one HTML document with inline CSS and SVG, nothing fetched.
pub fn render(inputs: &Inputs) -> Result<String, ChartError> {
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>ratebound report: {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>ratebound report: {title}</h1>\n",
        title = escape(&inputs.title)
    );
    html.push_str(&summary(inputs));
    if inputs.points.is_empty() {
        html.push_str("<p class=\"note\">This db holds no time series (a run from before ratebound kept one).</p>\n");
    }
    html.push_str("<p class=\"note\">Shaded: paused or stopped.</p>\n");
    for chart in charts(inputs) {
        html.push_str(&figure(&chart)?);
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}

#[cfg(test)]
mod tests;
