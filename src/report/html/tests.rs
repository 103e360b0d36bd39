//! The HTML report: well-formed, self-contained, and each chart holds the recorded series.

use super::*;

fn limit(name: &str, unit: &str, used: u64, limit: u64, window_s: f64) -> LimitUse {
    LimitUse {
        name: name.into(),
        unit: unit.into(),
        used,
        limit,
        window_s,
    }
}

/// 40 one-second points with a pause at 10..12 s and a stop from 30 s to 130 s.
fn inputs() -> Inputs {
    let points = (0..40u64)
        .map(|i| {
            let start_ms = 1_000_000 + if i < 30 { i * 1000 } else { 100_000 + i * 1000 };
            Point {
                start_ms,
                width_ms: 1000,
                sent: 20 + i % 3,
                done: 19,
                rate_limited: u64::from(i % 10 == 0),
                latency_p50_ms: (i != 5).then_some(60 + i),
                latency_p95_ms: (i != 5).then_some(90 + i),
                in_flight: 4,
                tokens: 100,
                state: if (10..12).contains(&i) {
                    "paused"
                } else {
                    "running"
                }
                .into(),
                limits: vec![
                    limit("rps", "requests", 18 + i % 3, 25, 1.0),
                    limit("tpm", "tokens", 500, 10_000, 60.0),
                    limit("daily", "requests", 100 + 20 * i, 5_000, 86_400.0),
                ],
                ..Point::default()
            }
        })
        .collect();
    Inputs {
        title: "bios <db>".into(),
        points,
        total: 800,
        done: 760,
        failed: 2,
        failures: vec![("HTTP 400".into(), 2)],
        workers: Some(8),
        pause_at: vec![("daily".into(), 0.8)],
        bound_s: Some(35.0),
    }
}

/// The points of the polyline(s) of `color` in `svg`.
fn polyline_points(svg: roxmltree::Node<'_, '_>, color: &str) -> usize {
    svg.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| {
            n.attribute("stroke")
                .is_some_and(|s| s.eq_ignore_ascii_case(color))
        })
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .sum()
}

#[test]
fn the_report_parses_and_each_chart_holds_its_series() {
    let inputs = inputs();
    let html = render(&inputs).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let figures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("figure"))
        .collect();
    let ids: Vec<&str> = figures
        .iter()
        .filter_map(|f| f.attribute("data-chart"))
        .collect();
    assert_eq!(
        ids,
        [
            "throughput",
            "limits",
            "errors",
            "latency",
            "in-flight",
            "quotas",
            "cost"
        ]
    );
    for f in &figures {
        let svg = f
            .descendants()
            .find(|n| n.has_tag_name("svg"))
            .expect("an svg");
        for series in f.attribute("data-series").unwrap().split(';') {
            let parts: Vec<&str> = series.split('=').collect();
            let (name, color, count) = (parts[0], parts[1], parts[2].parse::<usize>().unwrap());
            assert_eq!(
                polyline_points(svg, color),
                count,
                "{:?} {name}",
                f.attribute("id")
            );
            let expected = if name == "p50" || name == "p95" {
                39
            } else {
                40
            };
            assert_eq!(
                count,
                expected,
                "{:?} {name}: one point per recorded interval",
                f.attribute("id")
            );
        }
    }
}

#[test]
fn the_report_fetches_nothing() {
    let html = render(&inputs()).unwrap();
    for needle in ["<script", "<link", " src=", "href=", "url(", "@import"] {
        assert!(!html.contains(needle), "{needle}");
    }
    let outside = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!outside.contains("http://") && !outside.contains("https://"));
}

#[test]
fn pauses_and_stops_are_shaded() {
    let spans = shaded(&inputs().points);
    assert_eq!(spans, [(10.0, 11.0), (11.0, 12.0), (30.0, 130.0)]);
}

#[test]
fn the_summary_compares_wall_time_with_the_bound_and_names_failure_classes() {
    let html = render(&inputs()).unwrap();
    assert!(
        html.contains("40 s active; estimate's bound 35 s (1.14×)"),
        "{html}"
    );
    assert!(html.contains("<th>failed: HTTP 400</th><td>2</td>"));
    assert!(html.contains("ratebound report: bios &lt;db&gt;"));
    // Throughput against the binding limit's rate (rps: 20..22 a second of 25), over the
    // intervals that ran.
    let running: Vec<f64> = (0..40u64)
        .filter(|i| !(10..12).contains(i))
        .map(|i| (20 + i % 3) as f64 / 25.0)
        .collect();
    let expected = running.iter().sum::<f64>() / running.len() as f64;
    let u = utilization(&inputs().points).unwrap();
    assert!((u - expected).abs() < 1e-9, "{u} != {expected}");
}

#[test]
fn a_db_without_a_series_still_gives_a_report() {
    let html = render(&Inputs::default()).unwrap();
    assert!(html.contains("holds no time series"));
}
