//! Exactly one runner per db (issue 12, item 1): the second gets exit 2 and who holds it.

use crate::support::{Project, signal};

#[test]
fn two_runs_started_together_on_one_db_send_each_item_once() {
    let p = Project::new().with_mock("mock://openai?latency=30ms");
    let worklist = p.worklist(20);
    let config = p.config("", 4);
    let (w, c) = (worklist.to_str().unwrap(), config.to_str().unwrap());
    let mut refused = 0;
    for round in 0..10 {
        let db = format!("r{round}.db");
        let before = p.records().len();
        let args = ["run", w, "-c", c, "--db", db.as_str(), "--quiet"];
        let piped = || {
            p.command(&args)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (piped(), piped());
        let outs = [
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        ];
        let mut codes: Vec<_> = outs.iter().map(|o| o.status.code()).collect();
        codes.sort();
        let stderr: String = outs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr))
            .collect();
        // On a loaded machine the second may start after the first has finished: then it
        // finds nothing to do. Either way, one of them sends.
        match codes.as_slice() {
            [Some(0), Some(2)] => {
                refused += 1;
                assert!(
                    stderr.contains("another ratebound is running this db"),
                    "{stderr}"
                );
            }
            [Some(0), Some(0)] => {}
            other => panic!("round {round}: exit codes {other:?}\n{stderr}"),
        }
        assert_eq!(
            p.records().len() - before,
            20,
            "round {round}: each item sent once"
        );
    }
    assert!(refused > 0, "no round had the two runs overlap");
}

#[test]
fn a_suspended_run_keeps_its_db_and_finishes_when_continued() {
    let p = Project::new().with_mock("mock://openai?rps=40");
    let worklist = p.worklist(60);
    let config = p.config("[[limits]]\nname = \"rps\"\nrate = 40\nper = \"1s\"", 4);
    let (w, c) = (worklist.to_str().unwrap(), config.to_str().unwrap());
    let args = ["run", w, "-c", c, "--db", "s.db", "--quiet"];
    let mut first = p.command(&args).spawn().unwrap();
    p.wait_for_status("s.db", |s| s["done"].as_u64() > Some(5));
    signal(first.id(), "-STOP");
    let second = p.cmd(&args);
    signal(first.id(), "-CONT");
    second.expect_code(2);
    let pid = format!("pid {}", first.id());
    assert!(second.stderr().contains(&pid), "{}", second.dump());
    assert!(second.stderr().contains("hint:"), "{}", second.dump());
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(p.status(&p.path("s.db"))["done"], 60);
    assert_eq!(p.records().len(), 60, "each item once");
}

#[test]
fn retry_failed_waits_for_the_runner_to_let_go() {
    let p = Project::new().with_mock("mock://openai?rps=20");
    let worklist = p.worklist(40);
    let config = p.config("[[limits]]\nname = \"rps\"\nrate = 20\nper = \"1s\"", 2);
    let (w, c) = (worklist.to_str().unwrap(), config.to_str().unwrap());
    let mut run = p
        .command(&["run", w, "-c", c, "--db", "f.db", "--quiet"])
        .spawn()
        .unwrap();
    p.wait_for_status("f.db", |s| s["state"] == "running");
    let retry = p.cmd(&["retry-failed", "--db", "f.db"]);
    retry.expect_code(2);
    assert!(
        retry.stderr().contains("another ratebound"),
        "{}",
        retry.dump()
    );
    assert_eq!(run.wait().unwrap().code(), Some(0));
}
