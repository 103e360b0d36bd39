//! Crash safety: kill -9 at random points, rerun, and nothing is lost or needlessly resent.

use std::collections::HashMap;

use crate::support::{Project, item_of, wait_until};

#[test]
fn kill_9_at_random_points_loses_nothing_and_resends_at_most_the_in_flight() {
    const ITEMS: usize = 2000;
    const WORKERS: usize = 16;
    let p = Project::new().with_mock("mock://openai?rps=800&latency=20ms");
    let worklist = p.worklist(ITEMS);
    let config = p.config(
        "[[limits]]\nname = \"rps\"\nrate = 800\nper = \"1s\"",
        WORKERS,
    );
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "k.db",
        "--quiet",
    ];

    // Deterministic "random" kill points spread over the run.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut kills = 0;
    for _ in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill after a pseudo-random number of further requests reached the API.
        let target = p.records().len() + 40 + (seed % 160) as usize;
        let mut child = p.command(&args).spawn().unwrap();
        wait_until("the run to send more requests, or to end", || {
            (p.records().len() >= target || child.try_wait().unwrap().is_some()).then_some(())
        });
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL on unix
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        kills >= 2,
        "the run should still be going at most kill points"
    );
    let before_final = p.records().len();
    assert!(
        before_final < ITEMS + kills * WORKERS,
        "runs were killed mid-way"
    );

    let run = p.cmd(&args);
    run.expect_code(0);

    let exported = p.export(&p.path("k.db"));
    assert_eq!(exported.len(), ITEMS, "every item has exactly one record");
    let mut ids: Vec<&str> = exported.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), ITEMS);
    assert!(
        exported.iter().all(|r| r["status"] == "done"),
        "every item done"
    );

    // Count the requests the API executed (a 429 executes nothing).
    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in p.records().iter().filter(|r| r.status == 200) {
        *sent.entry(item_of(r).unwrap()).or_default() += 1;
    }
    assert_eq!(sent.len(), ITEMS, "every item reached the API");
    let resent: usize = sent.values().map(|n| n - 1).sum();
    assert!(
        resent <= kills * WORKERS,
        "{resent} re-sends after {kills} kills with {WORKERS} workers: only requests in flight at a kill may be sent again"
    );
    let refused = p.records().iter().filter(|r| r.status == 429).count();
    assert_eq!(
        refused, 0,
        "restarts must not burst past the limit (limiter state survives a kill)"
    );
    let status = p.status(&p.path("k.db"));
    assert_eq!(status["done"], ITEMS as u64);
    assert_eq!(status["state"], "finished");
}
