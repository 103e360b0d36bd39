//! `pause`, `resume`, `retry-failed` and `export --failed`: acting on a run through its db.

use std::time::{Duration, Instant};

use crate::support::Project;

/// Polls `status --json` until `pred` holds (at most 20 s).
fn wait_for(p: &Project, db: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        // The db appears once the run has started.
        let run = p.cmd(&["status", "--db", db, "--json"]);
        let status: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap_or_default();
        if run.code() == 0 && pred(&status) {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gave up waiting\n{}",
            run.dump()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pause_drains_a_live_run_and_resume_continues_it() {
    let p = Project::new().with_mock("mock://openai?rps=40");
    let worklist = p.worklist(200);
    let config = p.config("[[limits]]\nname = \"rps\"\nrate = 40\nper = \"1s\"", 4);
    let mut child = p
        .command(&[
            "run",
            worklist.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--db",
            "c.db",
            "--quiet",
        ])
        .spawn()
        .unwrap();
    wait_for(&p, "c.db", |s| {
        s["state"] == "running" && s["done"].as_u64() > Some(45)
    });
    p.cmd(&["pause", "--db", "c.db"]).expect_code(0);
    let paused = wait_for(&p, "c.db", |s| {
        s["state"] == "paused" && s["in_flight"] == 0
    });
    let sent = p.records().len();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(p.records().len(), sent, "nothing is sent while paused");
    assert!(paused["done"].as_u64().unwrap() < 200, "{paused}");
    p.cmd(&["resume", "--db", "c.db"]).expect_code(0);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(p.status(&p.path("c.db"))["done"], 200);
    assert_eq!(p.records().len(), 200, "each item once");
}

#[test]
fn pause_needs_a_live_run() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(3);
    let config = p.config("", 2);
    p.run(&worklist, &config, &["--db", "d.db", "--quiet"])
        .expect_code(0);
    let run = p.cmd(&["pause", "--db", "d.db"]);
    run.expect_code(2);
    assert!(run.stderr().contains("no live run"), "{}", run.dump());
}

#[test]
fn permanent_failures_are_dead_letters_that_retry_failed_requeues() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.write(
        "w.csv",
        "id,ep,prompt\na,completions,x\nb,bogus,y\nc,completions,z\nd,bogus,w\n",
    );
    let text = std::fs::read_to_string(p.config("", 2)).unwrap().replace(
        "path = \"/v1/chat/completions\"",
        "path = \"/v1/chat/{{ep}}\"",
    );
    let config = p.write("f.toml", text);
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "f.db",
    ];
    let run = p.cmd(&args);
    run.expect_code(1);
    assert!(
        run.stdout().contains("2 permanent failures"),
        "{}",
        run.dump()
    );

    let failed = p.cmd(&["export", "--db", "f.db", "--failed"]);
    failed.expect_code(0);
    let rows: Vec<serde_json::Value> = failed
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "failed" && r["http_status"] == 404 && r["attempts"] == 1)
    );
    assert!(
        rows[0]["body"]["error"]["message"].is_string(),
        "the body is kept: {}",
        rows[0]
    );

    p.cmd(&["retry-failed", "--db", "f.db"]).expect_code(0);
    let status = p.status(&p.path("f.db"));
    assert_eq!(
        (status["pending"].as_u64(), status["failed"].as_u64()),
        (Some(2), Some(0))
    );
    p.cmd(&["resume", "--db", "f.db"]).expect_code(1);
    assert_eq!(
        p.records().len(),
        6,
        "only the two failures were sent again"
    );
    let rows = p.export(&p.path("f.db"));
    let b = rows.iter().find(|r| r["id"] == "b").unwrap();
    assert_eq!(b["attempts"], 2, "attempts accumulate across retries: {b}");
}
