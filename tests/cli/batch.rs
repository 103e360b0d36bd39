//! `run --via batch` against the mock's Batch APIs on loopback: every item done exactly once,
//! across kills at each checkpoint, partial failures, the enqueued-token limit and
//! `cancel-batches`.

use std::path::{Path, PathBuf};

use crate::support::{Project, Run};

/// A project with the mock at `mock` and a config whose `[batch]` table is `batch`.
fn project(mock: &str, batch: &str) -> (Project, PathBuf) {
    let p = Project::new().with_mock(mock);
    let config = p.config(&format!("[batch]\n{batch}\npoll = \"50ms\"\n"), 4);
    (p, config)
}

fn run_batch(p: &Project, worklist: &Path, config: &Path, crash_at: Option<&str>) -> Run {
    let mut cmd = p.command(&[
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--via",
        "batch",
        "--quiet",
    ]);
    if let Some(point) = crash_at {
        cmd.env("RATEBOUND_BATCH_CRASH_AT", point);
    }
    Run {
        line: format!("ratebound run --via batch (crash at {crash_at:?})"),
        output: cmd.output().expect("binary runs"),
    }
}

/// Batches the mock created (answered 2xx), and chat requests sent online.
fn created_and_online(p: &Project) -> (usize, usize) {
    let records = p.records();
    let created = (records.iter())
        .filter(|r| r.method == "POST" && r.path.ends_with("/batches") && r.status == 200)
        .count();
    let online = (records.iter())
        .filter(|r| r.path == "/v1/chat/completions")
        .count();
    (created, online)
}

/// Asserts every item of `n` is done, by one attempt each unless `retries` allows more.
fn all_done(p: &Project, db: &Path, n: usize, one_attempt_each: bool) {
    let records = p.export(db);
    assert_eq!(records.len(), n);
    for r in &records {
        assert_eq!(r["status"], "done", "{r}");
        if one_attempt_each {
            assert_eq!(r["attempts"], 1, "done exactly once: {r}");
        }
    }
}

#[test]
fn ten_thousand_items_via_batch_are_each_done_exactly_once() {
    let (p, config) = project("mock://openai?batch_delay=300ms", "max_requests = 2500");
    let worklist = p.worklist(10_000);
    run_batch(&p, &worklist, &config, None).expect_code(0);
    all_done(&p, &p.path("work.ratebound.db"), 10_000, true);
    assert_eq!(created_and_online(&p), (4, 0), "4 batches, nothing online");
    let status = p.status(&p.path("work.ratebound.db"));
    assert_eq!(
        status["batches"].as_array().map(Vec::len),
        Some(4),
        "{status}"
    );
    assert_eq!(status["batches"][0]["state"], "applied");
    assert_eq!(status["batches"][0]["completed"], 2500);
}

#[test]
fn a_kill_at_each_checkpoint_then_a_rerun_does_every_item_once_and_no_batch_twice() {
    for point in ["upload", "create", "poll", "download", "apply"] {
        let (p, config) = project("mock://openai?batch_delay=200ms", "max_requests = 100");
        let worklist = p.worklist(300);
        let killed = run_batch(&p, &worklist, &config, Some(point));
        assert_ne!(killed.code(), 0, "crashed at {point}: {}", killed.dump());
        run_batch(&p, &worklist, &config, None).expect_code(0);
        all_done(&p, &p.path("work.ratebound.db"), 300, true);
        assert_eq!(
            created_and_online(&p),
            (3, 0),
            "batches created = batches needed after a kill at {point}"
        );
    }
}

#[test]
fn anthropic_batches_survive_a_kill_while_polling() {
    let (p, config) = project(
        "mock://anthropic?batch_delay=200ms",
        "provider = \"anthropic\"\nmax_requests = 100",
    );
    let worklist = p.worklist(250);
    // (After a kill at `create` the lane looks the batch up by listing the provider's; the
    // mock's Message Batches API has no list yet.)
    let killed = run_batch(&p, &worklist, &config, Some("poll"));
    assert_ne!(killed.code(), 0, "{}", killed.dump());
    run_batch(&p, &worklist, &config, None).expect_code(0);
    all_done(&p, &p.path("work.ratebound.db"), 250, true);
    assert_eq!(created_and_online(&p).0, 3);
}

#[test]
fn failed_lines_are_retried_in_later_batches_by_error_class() {
    // OpenAI's error file says `server_error` (transient: retried); Anthropic's errored
    // lines are `invalid_request_error` (permanent: failed).
    let (p, config) = project(
        "mock://openai?batch_delay=100ms&batch_fail_every=5",
        "max_requests = 50",
    );
    let worklist = p.worklist(100);
    run_batch(&p, &worklist, &config, None).expect_code(0);
    all_done(&p, &p.path("work.ratebound.db"), 100, false);
    let (created, _) = created_and_online(&p);
    assert!(created > 2, "retries went into later batches: {created}");

    let (p, config) = project(
        "mock://anthropic?batch_delay=100ms&batch_fail_every=5",
        "provider = \"anthropic\"",
    );
    let worklist = p.worklist(20);
    run_batch(&p, &worklist, &config, None).expect_code(1);
    let failed = p.export(&p.path("work.ratebound.db"));
    assert_eq!(failed.iter().filter(|r| r["status"] == "failed").count(), 4);
}

#[test]
fn the_enqueued_token_limit_holds_batches_back_until_others_end() {
    // Each item is ~30 tokens; the provider holds at most 1,000 enqueued: one batch of 30
    // at a time. Without `enqueued_tokens` the provider refuses the others (OpenAI: the
    // batch fails with token_limit_exceeded) and they go again later; with it, none is
    // refused.
    for (limit, refused_ok) in [("", true), ("enqueued_tokens = 1000", false)] {
        let (p, config) = project(
            "mock://openai?batch_delay=100ms&batch_tokens=1000",
            &format!("max_requests = 30\n{limit}"),
        );
        let worklist = p.worklist(90);
        run_batch(&p, &worklist, &config, None).expect_code(0);
        all_done(&p, &p.path("work.ratebound.db"), 90, true);
        let (created, _) = created_and_online(&p);
        if refused_ok {
            assert!(created >= 3, "{created}");
        } else {
            assert_eq!(created, 3, "within the limit, no batch is refused");
        }
    }
}

#[test]
fn cancel_batches_cancels_open_ones_and_a_rerun_sends_their_items_again() {
    let (p, config) = project("mock://openai?batch_delay=2s", "max_requests = 50");
    let worklist = p.worklist(100);
    let db = p.path("work.ratebound.db");
    // Kill the run once its batches are created: they stay open at the provider.
    let killed = run_batch(&p, &worklist, &config, Some("poll"));
    assert_ne!(killed.code(), 0);
    let cancel = p.cmd(&["cancel-batches", "--db", db.to_str().unwrap()]);
    cancel.expect_code(0);
    assert!(
        cancel.stdout().contains("cancel 1 batches")
            || cancel.stdout().contains("cancel 2 batches"),
        "{}",
        cancel.dump()
    );
    run_batch(&p, &worklist, &config, None).expect_code(0);
    all_done(&p, &db, 100, true);
    let status = p.status(&db);
    let statuses: Vec<_> = status["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].clone())
        .collect();
    assert!(statuses.iter().any(|s| s == "cancelled"), "{statuses:?}");
}

#[test]
fn auto_sends_online_only_what_the_batches_cannot_finish_by_the_deadline() {
    // 200 items at 10 requests a second take 20 s online, past a 5 s deadline. Batches
    // take ~1 s here and the provider holds 50 items' tokens at once: 4 rounds of 50 fit
    // in 5 s (1 s turnaround + a 100 ms poll each), so every item goes through batches.
    // With a 2.5 s deadline only 2 rounds fit: 100 items batched, 100 sent online.
    for (deadline, online, batches) in [("5s", 0, 4), ("2500ms", 100, 2)] {
        let p = Project::new().with_mock("mock://openai?batch_delay=1s");
        let config = p.config(
            "[[limits]]\nname = \"rps\"\nunit = \"requests\"\nrate = 10\nper = \"1s\"\nburst = 1\n\n[batch]\nturnaround = \"1s\"\npoll = \"100ms\"\nenqueued_tokens = 1300\n",
            4,
        );
        let worklist = p.worklist(200);
        let run = p.run(
            &worklist,
            &config,
            &["--via", "auto", "--deadline", deadline],
        );
        run.expect_code(0);
        assert!(
            run.stdout().contains(&format!(
                "plan (--via auto): {online} items online, {} through {batches} batches",
                200 - online
            )),
            "{}",
            run.dump()
        );
        all_done(&p, &p.path("work.ratebound.db"), 200, true);
        assert_eq!(created_and_online(&p), (batches, online));
    }
}

#[test]
fn estimate_models_the_batch_lane_and_the_split() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(
        "[[limits]]\nname = \"rps\"\nunit = \"requests\"\nrate = 10\nper = \"1s\"\nburst = 1\n\n[batch]\nturnaround = \"1s\"\npoll = \"100ms\"\nenqueued_tokens = 1300\n",
        4,
    );
    let worklist = p.worklist(200);
    let args = |via: &str| {
        let mut a = vec![
            "estimate",
            worklist.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ];
        a.extend(["--via", via, "--deadline", "2500ms", "--json"]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let json = |via: &str| {
        let args = args(via);
        let run = p.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        run.expect_code(0);
        serde_json::from_str::<serde_json::Value>(&run.stdout()).unwrap()["plan"].clone()
    };
    let auto = json("auto");
    assert_eq!(
        (auto["online_items"].as_u64(), auto["batch_items"].as_u64()),
        (Some(100), Some(100)),
        "{auto}"
    );
    let batch = json("batch");
    assert_eq!(
        (batch["batch_items"].as_u64(), batch["batches"].as_u64()),
        (Some(200), Some(4)),
        "{batch}"
    );
    assert_eq!(batch["meets_deadline"], false, "4 rounds of 1.1 s: {batch}");
    assert!(p.records().is_empty(), "estimate sends nothing");
}

#[test]
fn pause_stops_submitting_batches_while_open_ones_are_collected() {
    // One batch at a time (the enqueued-token limit holds 50 items): batch 1 is created,
    // the run is paused, batch 1 is still collected, batch 2 is not submitted until resume.
    let (p, config) = project(
        "mock://openai?batch_delay=1s",
        "max_requests = 50\nenqueued_tokens = 1300",
    );
    let worklist = p.worklist(150);
    let db = p.path("work.ratebound.db");
    let db_str = db.to_str().unwrap();
    let mut child = p
        .command(&[
            "run",
            worklist.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--via",
            "batch",
            "--quiet",
        ])
        .spawn()
        .expect("run starts");
    p.wait_for_status(db_str, |s| s["batches"][0]["state"] == "created");
    p.cmd(&["pause", "--db", db_str]).expect_code(0);
    let applied = p.wait_for_status(db_str, |s| s["batches"][0]["state"] == "applied");
    let at = applied["elapsed_s"].as_f64().unwrap();
    // A second of the lane's clock: some twenty turns of its 50 ms poll while paused.
    p.wait_for_status(db_str, |s| {
        s["elapsed_s"].as_f64().unwrap_or(0.0) >= at + 1.0
    });
    assert_eq!(
        created_and_online(&p).0,
        1,
        "nothing submitted while paused"
    );
    p.cmd(&["resume", "--db", db_str]).expect_code(0);
    let status = child.wait().expect("run ends");
    assert_eq!(status.code(), Some(0));
    all_done(&p, &db, 150, true);
    assert_eq!(created_and_online(&p).0, 3);
}
