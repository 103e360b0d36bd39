//! `pause`, `resume`, `retry-failed` and `export --failed`: acting on a run through its db.

use crate::support::Project;

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
    p.wait_for_status("c.db", |s| {
        s["state"] == "running" && s["done"].as_u64() > Some(45)
    });
    p.cmd(&["pause", "--db", "c.db"]).expect_code(0);
    let paused = p.wait_for_status("c.db", |s| s["state"] == "paused" && s["in_flight"] == 0);
    let sent = p.records().len();
    // The paused run stays alive (its session clock goes on) and sends nothing.
    let paused_at = paused["elapsed_s"].as_f64().unwrap();
    p.wait_for_status("c.db", |s| s["elapsed_s"].as_f64() > Some(paused_at + 1.0));
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
