//! User-facing text pinned by insta snapshots (issue 11): `status` (text and JSON), the
//! end-of-run summary, `estimate`'s table and the main error messages. Temp paths, ports,
//! times and durations are redacted, so a snapshot changes only when the text does.

use crate::support::{Project, Run};

/// Output with everything that varies between runs replaced by a placeholder.
fn redact(p: &Project, text: &str) -> String {
    let dir = p.dir.path().to_string_lossy().into_owned();
    let canonical = std::fs::canonicalize(p.dir.path())
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|_| dir.clone());
    text.replace(&canonical, "[DIR]").replace(&dir, "[DIR]")
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    s.add_filter(
        r#""(started_at|heartbeat_at|finished_at)": \d+"#,
        r#""$1": [TIME]"#,
    );
    s.add_filter(
        r#""(elapsed_s|items_per_s|eta_s|requests_per_s)": [\d.e+-]+"#,
        r#""$1": [N]"#,
    );
    s.add_filter(r"\b\d+(\.\d+)?\s?(ms|s|m|h|d)\b", "[DURATION]");
    s.add_filter(r"\b\d+(\.\d+)?(/s| items/s)", "[RATE]$2");
    // What a rolling window holds at the last checkpoint depends on timing.
    s.add_filter(r#""used": \d+"#, r#""used": [N]"#);
    s.add_filter(r"\b\d+ requests used", "[N] requests used");
    s.add_filter(r"\bpid \d+", "pid [PID]");
    s
}

fn finished_project() -> (Project, Run) {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(5);
    let config = p.config("[[limits]]\nname = \"rpm\"\nrate = 6000\nper = \"1m\"", 2);
    let run = p.run(&worklist, &config, &["--db", "s.db"]);
    run.expect_code(0);
    (p, run)
}

#[test]
fn status_and_the_end_of_run_summary() {
    let (p, run) = finished_project();
    settings().bind(|| {
        // The live progress line (when stdout is no terminal) shows a moment of the run.
        let stdout = run.stdout();
        let summary: Vec<&str> = (stdout.lines())
            .filter(|l| !l.starts_with("progress:"))
            .collect();
        insta::assert_snapshot!("run_summary", redact(&p, &summary.join("\n")));
        let status = p.cmd(&["status", "--db", "s.db"]);
        insta::assert_snapshot!("status_text", redact(&p, &status.expect_code(0).stdout()));
        let json = p.cmd(&["status", "--db", "s.db", "--json"]);
        insta::assert_snapshot!("status_json", redact(&p, &json.expect_code(0).stdout()));
    });
}

#[test]
fn estimate_table() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(120);
    p.config("[[limits]]\nname = \"rps\"\nrate = 10\nper = \"1s\"", 4);
    let run = p.cmd(&[
        "estimate",
        "work.csv",
        "-c",
        "ratebound.toml",
        "--start",
        "2026-11-24T09:00:00Z",
    ]);
    settings().bind(|| {
        insta::assert_snapshot!("estimate_text", redact(&p, &run.expect_code(0).stdout()));
    });
}

#[test]
fn main_error_messages() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(3);
    let good = std::fs::read_to_string(p.config("", 2)).unwrap();
    let bad_key = p.write(
        "bad.toml",
        good.replace("[workers]\n", "[workers]\nmaxx = 3\n"),
    );
    let bad_list = p.write("bad.csv", "id,prompt\na,hello\nb\n");
    let config = p.path("ratebound.toml");
    let cases = [
        ("config_error", p.run(&worklist, &bad_key, &[])),
        ("worklist_error", p.run(&bad_list, &config, &[])),
        (
            "usage_error",
            p.run(&worklist, &config, &["--workers", "0"]),
        ),
    ];
    settings().bind(|| {
        for (name, run) in cases {
            run.expect_code(2);
            insta::assert_snapshot!(name, redact(&p, &run.stderr()));
        }
    });
    assert!(p.records().is_empty(), "nothing sent");
}
