//! `ratebound run`, `status` and `export` on complete runs.

use std::collections::HashMap;

use crate::support::{Project, item_of};

#[test]
fn sample_run_completes_and_the_mock_sees_each_item_once() {
    let p = Project::new().with_mock("mock://openai?rps=200&tpm=1000000");
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/artist-bios.csv"))
            .unwrap();
    let worklist = p.write("artist-bios.csv", &sample);
    let config = p.config(
        "[[limits]]\nname = \"rps\"\nrate = 200\nper = \"1s\"\n\n[[limits]]\nname = \"tpm\"\nunit = \"tokens\"\nrate = 1000000\nper = \"1m\"",
        16,
    );
    let db = p.path("bios.db");
    let run = p.cmd(&[
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    run.expect_code(0);
    assert!(
        run.stdout().contains("finished: every item is done"),
        "{}",
        run.dump()
    );

    let exported = p.export(&db);
    assert_eq!(exported.len(), 300, "one record per item");
    assert!(
        exported
            .iter()
            .all(|r| r["status"] == "done" && r["http_status"] == 200)
    );
    assert!(
        exported
            .iter()
            .all(|r| r["usage"]["total_tokens"].as_u64().unwrap() > 0)
    );

    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in p.records() {
        assert_eq!(r.status, 200, "no request was refused: {r:?}");
        *seen.entry(item_of(&r).expect("X-Item header")).or_default() += 1;
    }
    assert_eq!(seen.len(), 300);
    assert!(seen.values().all(|&n| n == 1), "each item exactly once");

    let status = p.status(&db);
    assert_eq!(status["state"], "finished");
    assert_eq!(status["done"], 300);
    assert_eq!(status["pending"], 0);
    assert_eq!(status["requests_sent"], 300);
    assert_eq!(status["responses_429"], 0);
    assert_eq!(status["limits"][0]["name"], "rps");
    assert_eq!(status["limits"][0]["window_s"], 1.0);
}

#[test]
fn priority_items_go_first() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.write(
        "work.csv",
        "id,priority,prompt\nlow-1,0,a\nhigh-1,9,b\nmid-1,5,c\nhigh-2,9,d\nlow-2,0,e\n",
    );
    let config = p.config("", 1);
    p.run(&worklist, &config, &["--quiet"]).expect_code(0);
    let order: Vec<String> = p.records().iter().filter_map(item_of).collect();
    assert_eq!(order, ["high-1", "high-2", "mid-1", "low-1", "low-2"]);
}

#[test]
fn stating_the_mocks_true_limits_means_no_429() {
    let p = Project::new().with_mock("mock://openai?rps=40&tpm=30000&latency=5ms");
    let worklist = p.worklist(200);
    let config = p.config(
        "[[limits]]\nname = \"rps\"\nrate = 40\nper = \"1s\"\n\n[[limits]]\nname = \"tpm\"\nunit = \"tokens\"\nrate = 30000\nper = \"1m\"",
        32,
    );
    let run = p.run(&worklist, &config, &["--db", "w.db"]);
    run.expect_code(0);
    let records = p.records();
    assert_eq!(records.len(), 200, "{}", run.dump());
    assert!(
        records.iter().all(|r| r.status == 200),
        "a 429 was seen: {}",
        run.dump()
    );
    assert_eq!(p.status(&p.path("w.db"))["responses_429"], 0);
}

#[test]
fn rerunning_a_finished_run_sends_nothing_and_a_changed_worklist_is_refused() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(20);
    let config = p.config("", 4);
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--quiet",
    ];
    p.cmd(&args).expect_code(0);
    assert!(
        p.path("work.ratebound.db").exists(),
        "default db is <stem>.ratebound.db"
    );
    p.cmd(&args).expect_code(0);
    assert_eq!(p.records().len(), 20, "the rerun sent nothing");

    p.worklist(21);
    let run = p.cmd(&args);
    run.expect_code(2);
    assert!(
        run.stderr().contains("different work list"),
        "{}",
        run.dump()
    );
    assert_eq!(p.records().len(), 20);
}

#[test]
fn export_csv_and_status_text_cover_every_item() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(5);
    let config = p.config("", 2);
    p.run(&worklist, &config, &["--quiet", "--db", "x.db"])
        .expect_code(0);
    let run = p.cmd(&["export", "--db", "x.db", "--format", "csv", "-o", "out.csv"]);
    run.expect_code(0);
    let csv = std::fs::read_to_string(p.path("out.csv")).unwrap();
    assert!(csv.starts_with("id,status,http_status,body,attempts,latency_ms,usage,error"));
    assert_eq!(csv.lines().count(), 6);
    let text = p.cmd(&["status", "--db", "x.db"]);
    text.expect_code(0);
    assert!(
        text.stdout().contains("state:     finished"),
        "{}",
        text.dump()
    );
    assert!(
        text.stdout().contains("5 done, 0 failed, 0 pending of 5"),
        "{}",
        text.dump()
    );
}

#[test]
fn idempotency_keys_are_stable_per_item_and_distinct_across_items() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(10);
    let text = std::fs::read_to_string(p.config("", 2))
        .unwrap()
        .replace("[request]\n", "[request]\nidempotency_key = true\n");
    let config = p.write("i.toml", text);
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "i.db",
        "--quiet",
    ];
    p.cmd(&args).expect_code(0);
    p.cmd(&["retry-failed", "--db", "i.db"]).expect_code(0);
    let keys: Vec<(String, String)> = p
        .records()
        .iter()
        .map(|r| {
            let key = r
                .headers
                .iter()
                .find(|(n, _)| n == "idempotency-key")
                .map(|(_, v)| v.clone());
            (
                item_of(r).unwrap(),
                key.expect("every request carries a key"),
            )
        })
        .collect();
    let mut distinct: Vec<&String> = keys.iter().map(|(_, k)| k).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 10, "one key per item: {keys:?}");
    let again = ratebound::job::idempotency_key("x", "item-00001");
    assert_eq!(again, ratebound::job::idempotency_key("x", "item-00001"));
}
