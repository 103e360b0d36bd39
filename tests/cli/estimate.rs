//! `ratebound estimate`: predicts a real run on the mock, sends nothing, writes nothing.

use serde_json::Value;

use crate::support::Project;

/// A request-bound config: the mock's 50 requests/s, with a small burst so the run is paced
/// from the start.
const RPS_50: &str = "[[limits]]\nname = \"rps\"\nrate = 50\nper = \"1s\"\nburst = 10\n\n[pricing.\"m\"]\ninput = 2.0\noutput = 8.0\nbatch_discount = 0.5";

fn estimate_json(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["estimate", "work.csv", "-c", "ratebound.toml", "--json"];
    all.extend_from_slice(args);
    let run = p.cmd(&all);
    run.expect_code(0);
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}", run.dump()))
}

fn files(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_estimate_from_a_previous_runs_db_takes_its_usage_and_leaves_it_untouched() {
    let p = Project::new().with_mock("mock://openai?rps=50&latency=50ms");
    p.worklist(250);
    p.config(RPS_50, 8);
    let before = estimate_json(&p, &["--latency", "50ms"]);
    assert_eq!(before["binding_limit"], "rps", "{before}");
    assert_eq!(before["items"], 250);
    assert_eq!(before["requests"], 250);

    p.cmd(&[
        "run",
        "work.csv",
        "-c",
        "ratebound.toml",
        "--db",
        "w.db",
        "--quiet",
    ])
    .expect_code(0);
    // How close the makespan comes to the real run's time is a timing claim, measured by
    // `benches/estimate_error.sh`, not asserted here.

    let db: Vec<Vec<u8>> = ["w.db", "w.db-wal"]
        .iter()
        .map(|f| std::fs::read(p.path(f)).unwrap_or_default())
        .collect();
    let listing = files(&p);
    let from_db = estimate_json(&p, &["--from-db", "w.db"]);
    assert_eq!(from_db["latency_model"], "recorded");
    assert_eq!(from_db["usage_basis"], "recorded usage");
    // The mock answers 16 completion tokens where 20 were allowed.
    assert!(
        from_db["tokens"].as_u64().unwrap() < before["tokens"].as_u64().unwrap(),
        "{from_db}"
    );
    assert!(from_db["cost_usd"].as_f64().unwrap() < before["cost_usd"].as_f64().unwrap());
    assert!(from_db["makespan_s"].as_f64().unwrap() > 0.0, "{from_db}");
    let after: Vec<Vec<u8>> = ["w.db", "w.db-wal"]
        .iter()
        .map(|f| std::fs::read(p.path(f)).unwrap_or_default())
        .collect();
    assert!(db == after, "--from-db changed the previous run's db");
    assert_eq!(files(&p), listing, "--from-db created no file");
}

#[test]
fn estimate_sends_no_request_and_creates_no_db() {
    let p = Project::new().with_mock("mock://openai?rps=50");
    p.worklist(40);
    p.config(RPS_50, 8);
    let listing = files(&p);
    let run = p.cmd(&[
        "estimate",
        "work.csv",
        "-c",
        "ratebound.toml",
        "--deadline",
        "1h",
    ]);
    run.expect_code(0);
    for row in [
        "items",
        "tokens",
        "cost",
        "batch API",
        "makespan",
        "binding",
        "workers",
        "limit",
        "deadline",
    ] {
        assert!(
            run.stdout().lines().any(|l| l.starts_with(row)),
            "no `{row}` row: {}",
            run.dump()
        );
    }
    assert!(p.records().is_empty(), "estimate sent a request");
    assert_eq!(files(&p), listing, "estimate wrote a file");
}

#[test]
fn a_daily_quota_from_a_given_start_spans_three_days() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(250);
    p.config(
        "[[limits]]\nname = \"rps\"\nrate = 10\nper = \"1s\"\n\n[[limits]]\nname = \"daily\"\nquota = 100\nper = \"1d\"\nreset = \"06:00\"\n\n[limiter]\njitter = \"0s\"",
        4,
    );
    let e = estimate_json(
        &p,
        &[
            "--latency",
            "100ms",
            "--start",
            "2026-11-23T18:00:00Z",
            "--deadline",
            "1d",
        ],
    );
    assert_eq!(e["binding_limit"], "daily", "{e}");
    let daily = &e["limits"][1];
    assert_eq!(daily["periods"], 3, "{e}");
    assert_eq!(daily["runs_out"][0], "2026-11-23T18:00:09Z");
    assert_eq!(daily["runs_out"][1], "2026-11-24T06:00:09Z");
    // The last 50 go out from 06:00 on the 25th, 10 at once then 10/s.
    assert_eq!(e["end"], "2026-11-25T06:00:04Z");
    let d = &e["deadline"];
    assert_eq!(d["fits"], false);
    assert_eq!(d["changes"][0]["name"], "daily");
    assert_eq!(
        d["changes"][0]["needed"], 125.0,
        "two windows in a day from 18:00"
    );
}

#[test]
fn bad_latency_and_a_missing_previous_run_exit_2() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(3);
    p.config("", 2);
    let run = p.cmd(&[
        "estimate",
        "work.csv",
        "-c",
        "ratebound.toml",
        "--latency",
        "p50=2s,p95=1s",
    ]);
    run.expect_code(2);
    assert!(run.stderr().contains("hint:"), "{}", run.dump());
    let run = p.cmd(&[
        "estimate",
        "work.csv",
        "-c",
        "ratebound.toml",
        "--from-db",
        "none.db",
    ]);
    run.expect_code(2);
    assert!(run.stderr().contains("none.db"), "{}", run.dump());
    assert!(!p.path("none.db").exists(), "--from-db created the db");
}

#[test]
fn a_free_tier_tenants_own_rpm_binds_the_estimate() {
    // The key allows 600 requests a minute; the free tier 6 a minute per tenant (a full
    // bucket of 6 at the start). `slow` has 12 items: (12 - 6) / 6 min = 60 s, plus the
    // limiter's 50 ms jitter and the last response's 1 s. The 40 items of `big` (pro, no
    // own limits) go on meanwhile.
    let p = Project::new().with_mock("mock://openai?rpm=600&latency=1s");
    let mut work = String::from("id,tenant,tier,prompt\n");
    for i in 1..=40 {
        work.push_str(&format!("b-{i:03},big,pro,\"hello {i}\"\n"));
        if i <= 12 {
            work.push_str(&format!("s-{i:03},slow,free,\"hello {i}\"\n"));
        }
    }
    p.write("work.csv", work);
    p.config(
        "[[limits]]\nname = \"rpm\"\nrate = 600\nper = \"1m\"\n\n\
         [tenants]\ntier_field = \"tier\"\n\n\
         [tiers.free]\n[[tiers.free.limits]]\nname = \"rpm\"\nrate = 6\nper = \"1m\"\n\n\
         [tiers.pro]\nweight = 4",
        8,
    );
    let e = estimate_json(&p, &["--latency", "1s"]);
    assert_eq!(e["binding_limit"], "rpm@slow", "{e}");
    assert_eq!(e["makespan_s"], 61.05, "{e}");
    assert_eq!(e["items"], 52);
    let limits = e["limits"].as_array().unwrap();
    let slow = limits.iter().find(|l| l["name"] == "rpm@slow").unwrap();
    assert_eq!(slow["needed"], 12, "{e}");
    assert_eq!(slow["bound_s"], 60.0, "{e}");
    assert!(
        limits.iter().all(|l| l["name"] != "rpm@big"),
        "a pro tenant has no rpm of its own: {e}"
    );
}

#[test]
fn an_estimate_refuses_a_duplicate_id_naming_both_lines_as_run_does() {
    // The estimate's one pass keeps only hashes of the ids; a repeated hash reads the list
    // again for the message `run` gives.
    let p = Project::new().with_mock("mock://openai");
    p.config(RPS_50, 2);
    p.write("work.csv", "id,prompt\na,hello\nb,hi\na,again\n");
    let est = p.cmd(&["estimate", "work.csv", "-c", "ratebound.toml"]);
    est.expect_code(2);
    let run = p.cmd(&["run", "work.csv", "-c", "ratebound.toml", "--db", "e.db"]);
    run.expect_code(2);
    for fragment in ["work.csv:4", "`a`", "line 2", "hint:"] {
        assert!(est.stderr().contains(fragment), "{}", est.dump());
    }
    assert_eq!(est.stderr(), run.stderr(), "{}\n{}", est.dump(), run.dump());
}
