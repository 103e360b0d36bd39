//! `ratebound report`: the HTML report of a real run against the mock parses, each chart
//! holds the series the store recorded, and headless Chromium renders it (not blank).

use std::path::{Path, PathBuf};

use ratebound::series::Point;
use ratebound::store::Store;

use crate::support::Project;

/// A run of 200 items on a mock that answers some 429s, under a daily quota, then its
/// report; returns the project, the db and the report.
fn reported_run() -> (Project, PathBuf, PathBuf) {
    let p = Project::new().with_mock("mock://openai?rps=80&latency=20ms");
    let worklist = p.worklist(200);
    let config = p.config(
        "[[limits]]\nname = \"rps\"\nrate = 100\nper = \"1s\"\n\n[[limits]]\nname = \"daily\"\nquota = 10000\nper = \"1d\"\npause_at = 0.8",
        8,
    );
    let db = p.path("r.db");
    p.run(
        &worklist,
        &config,
        &["--db", db.to_str().unwrap(), "--quiet"],
    )
    .expect_code(0);
    let html = p.path("r.html");
    let run = p.cmd(&[
        "report",
        "--db",
        db.to_str().unwrap(),
        "-o",
        html.to_str().unwrap(),
    ]);
    run.expect_code(0);
    (p, db, html)
}

#[test]
fn status_watch_shows_the_live_view_of_a_finished_run_once_and_exits() {
    let (p, db, _html) = reported_run();
    let run = p.cmd(&[
        "status",
        "--db",
        db.to_str().unwrap(),
        "--watch",
        "--interval",
        "1s",
    ]);
    run.expect_code(0);
    let out = run.stdout();
    assert_eq!(
        out.lines().count(),
        1,
        "one plain line off a terminal: {out}"
    );
    assert!(out.starts_with("progress: 200/200 (100.0%)"), "{out}");
    assert!(out.contains("finished") && out.contains("rps "), "{out}");
}

fn series(db: &Path) -> Vec<Point> {
    Store::open_existing(db).unwrap().series().unwrap()
}

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
fn the_report_of_a_real_run_parses_and_draws_the_recorded_series() {
    let (_p, db, html) = reported_run();
    let points = series(&db);
    assert!(
        points.len() >= 2,
        "a run of seconds has several points: {points:?}"
    );
    assert_eq!(
        points.iter().map(|p| p.sent).sum::<u64>(),
        200 + points.iter().map(|p| p.retries).sum::<u64>(),
        "every request counted once"
    );
    let text = std::fs::read_to_string(&html).unwrap();
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, options).unwrap();
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
    let with_latency = points.iter().filter(|p| p.latency_p50_ms.is_some()).count();
    for f in &figures {
        let svg = f.descendants().find(|n| n.has_tag_name("svg")).unwrap();
        for s in f.attribute("data-series").unwrap().split(';') {
            let parts: Vec<&str> = s.split('=').collect();
            let id = f.attribute("id").unwrap();
            let expected = match id {
                "latency" => with_latency,
                // A limit learned from headers mid-run is drawn from when it was seen.
                "limits" | "quotas" => {
                    let limit = parts[0].split(' ').next().unwrap();
                    let has = |p: &&Point| p.limits.iter().any(|l| l.name == limit);
                    points.iter().filter(has).count()
                }
                _ => points.len(),
            };
            assert_eq!(parts[2].parse::<usize>().unwrap(), expected, "{s}");
            assert_eq!(polyline_points(svg, parts[1]), expected, "{s} as drawn");
        }
    }
    assert!(text.contains("workers (8)"), "the config's workers");
    assert!(
        text.contains("daily pause_at (20% left)"),
        "the quota's pause mark"
    );
    assert!(
        text.contains("estimate's bound"),
        "the estimate of the same list"
    );
}

/// Chromium, where the machine has it; CI installs it, so there it must be.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI installs chromium (.ci/run); the report's rendering test must not skip there"
    );
    eprintln!("skipped: no /usr/bin/chromium");
    None
}

/// The share of pixels of `png` that are not near-white.
fn inked_share(png: &Path) -> f64 {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels
        .chunks(channels)
        .filter(|px| px.iter().take(3).any(|&c| c < 200))
        .count();
    inked as f64 / (pixels.len() / channels) as f64
}

#[test]
fn headless_chromium_renders_the_report() {
    let Some(chromium) = chromium() else { return };
    let (p, _db, html) = reported_run();
    let profile = tempfile::tempdir().unwrap();
    let shot = p.path("shot.png");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,900",
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "chromium wrote no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let share = inked_share(&shot);
    assert!(
        share > 0.01,
        "the screenshot is blank: {share:.4} of pixels inked"
    );
}
