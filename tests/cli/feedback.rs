//! Provider feedback: quota exhaustion, flaky servers and refused credentials.

use std::collections::HashMap;

use crate::support::{Project, item_of};

#[test]
fn quota_exhaustion_pauses_with_exit_75_and_a_rerun_finishes_without_resending() {
    let p = Project::new().with_mock("mock://openai?quota_requests=800");
    let worklist = p.worklist(2000);
    let config = p.config("", 16);
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "q.db",
    ];
    let run = p.cmd(&args);
    run.expect_code(75);
    assert!(
        run.stdout().contains("quota is exhausted"),
        "{}",
        run.dump()
    );
    let status = p.status(&p.path("q.db"));
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(status["done"], 800, "{status}");
    assert_eq!(status["failed"], 0, "quota errors fail no item: {status}");
    let refused = p.records().iter().filter(|r| r.status == 429).count();
    assert!(
        refused <= 16,
        "the run stopped at once, not after a storm of {refused} refusals"
    );

    p.mock.as_ref().unwrap().set_quota_requests(None);
    p.cmd(&args).expect_code(0);
    let exported = p.export(&p.path("q.db"));
    assert_eq!(exported.len(), 2000);
    assert!(exported.iter().all(|r| r["status"] == "done"));
    let mut ok: HashMap<String, usize> = HashMap::new();
    for r in p.records().iter().filter(|r| r.status == 200) {
        *ok.entry(item_of(r).unwrap()).or_default() += 1;
    }
    assert_eq!(ok.len(), 2000);
    assert!(ok.values().all(|&n| n == 1), "no item was executed twice");
}

#[test]
fn failures_and_dropped_connections_are_retried_until_every_item_is_done() {
    let p = Project::new().with_mock("mock://openai?fail_rate=0.05&reset_rate=0.02&seed=7");
    let worklist = p.worklist(600);
    let config = p.config("", 16);
    let run = p.run(&worklist, &config, &["--db", "f.db", "--quiet"]);
    run.expect_code(0);
    let exported = p.export(&p.path("f.db"));
    assert_eq!(exported.len(), 600);
    assert!(
        exported.iter().all(|r| r["status"] == "done"),
        "{}",
        run.dump()
    );
    let retried = exported
        .iter()
        .filter(|r| r["attempts"].as_u64() > Some(1))
        .count();
    assert!(
        retried >= 20,
        "about 7% of items needed a second attempt, not {retried}"
    );
    let status = p.status(&p.path("f.db"));
    assert_eq!(
        status["retries"].as_u64(),
        Some(p.records().len() as u64 - 600),
        "{status}"
    );
}

#[test]
fn refused_credentials_stop_the_run_at_once_and_fail_no_item() {
    let p = Project::new().with_mock("mock://openai?auth=s3cret");
    let worklist = p.worklist(200);
    let text = std::fs::read_to_string(p.config("", 4))
        .unwrap()
        .replace(
            "timeout = \"10s\"",
            "timeout = \"10s\"\nheaders = { Authorization = \"Bearer ${RATEBOUND_TEST_WRONG_KEY:-wrong}\" }",
        );
    let config = p.write("auth.toml", text);
    let run = p.run(&worklist, &config, &["--db", "a.db"]);
    run.expect_code(1);
    assert!(
        run.stdout().contains("refused the credentials"),
        "{}",
        run.dump()
    );
    for output in [run.stdout(), run.stderr()] {
        assert!(!output.contains("Bearer"), "{}", run.dump());
    }
    let records = p.records();
    assert!(
        records.len() <= 4,
        "the run stopped after the first wave, not after {} requests",
        records.len()
    );
    assert!(records.iter().all(|r| r.status == 401), "{records:?}");
    let status = p.status(&p.path("a.db"));
    assert_eq!(
        status["failed"], 0,
        "refused credentials fail no item: {status}"
    );
    assert_eq!(status["pending"], 200, "{status}");
}
