//! `ratebound export` as people use it: to stdout with `-o -`, into `| head`, with fields
//! selected out of bodies and the work list's fields next to them.

use std::process::Stdio;

use crate::support::Project;

/// A finished 300-item run of the README's sample work list; returns the project and db.
fn sample_run() -> (Project, std::path::PathBuf) {
    let p = Project::new().with_mock("mock://openai?rps=500&tpm=10000000");
    let sample =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/artist-bios.csv"))
            .unwrap();
    let worklist = p.write("artist-bios.csv", &sample);
    let config = p.config("[[limits]]\nname = \"rps\"\nrate = 500\nper = \"1s\"", 16);
    let db = p.path("bios.db");
    p.run(
        &worklist,
        &config,
        &["--db", db.to_str().unwrap(), "--quiet"],
    )
    .expect_code(0);
    (p, db)
}

#[test]
fn dash_means_standard_output_and_no_file_named_dash() {
    let (p, db) = sample_run();
    let run = p.cmd(&["export", "--db", db.to_str().unwrap(), "-o", "-"]);
    run.expect_code(0);
    assert_eq!(run.stdout().lines().count(), 300, "{}", run.dump());
    assert!(!p.path("-").exists(), "no file named `-`");
}

#[test]
fn with_input_and_select_put_the_artist_next_to_the_bio() {
    let (p, db) = sample_run();
    let run = p.cmd(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "csv",
        "--with-input",
        "--select",
        "bio=/choices/0/message/content",
        "--select",
        "missing=/no/such/field",
    ]);
    run.expect_code(0);
    let stdout = run.stdout();
    let mut reader = csv::Reader::from_reader(stdout.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let at = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name} in {header:?}"))
    };
    let (name, bio, missing) = (at("name"), at("bio"), at("missing"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 300);
    let first = rows.iter().find(|r| &r[0] == "artist-0001").unwrap();
    assert_eq!(&first[name], "Kwame O'Brien");
    assert!(
        !first[bio].is_empty() && !first[bio].starts_with('{'),
        "the text itself: {:?}",
        &first[bio]
    );
    assert!(
        rows.iter().all(|r| r[missing].is_empty()),
        "a missing pointer is an empty cell"
    );
}

#[test]
fn openai_batch_lines_carry_custom_id_and_the_response() {
    let (p, db) = sample_run();
    let run = p.cmd(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--format",
        "openai-batch",
    ]);
    run.expect_code(0);
    let lines: Vec<serde_json::Value> = run
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    for l in &lines {
        assert!(
            l["custom_id"].as_str().unwrap().starts_with("artist-"),
            "{l}"
        );
        assert_eq!(l["response"]["status_code"], 200, "{l}");
        assert!(l["response"]["request_id"].is_string(), "{l}");
        assert!(l["response"]["body"]["choices"].is_array(), "{l}");
        assert!(l["error"].is_null(), "{l}");
    }
}

/// Runs `args` with stdout closed before anything is read, as `| head -0` does.
fn into_a_closed_pipe(p: &Project, args: &[&str]) -> std::process::Output {
    let mut child = p
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_quietly_with_exit_0() {
    let (p, db) = sample_run();
    let db = db.to_str().unwrap();
    for args in [
        &["export", "--db", db, "--format", "csv"][..],
        &["export", "--db", db][..],
        &["export", "--db", db, "--format", "openai-batch"][..],
        &["status", "--db", db][..],
        &["status", "--db", db, "--json"][..],
    ] {
        let out = into_a_closed_pipe(&p, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_select_is_a_usage_error_with_a_hint() {
    let (p, db) = sample_run();
    let run = p.cmd(&["export", "--db", db.to_str().unwrap(), "--select", "bio"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("NAME=/json/pointer"),
        "{}",
        run.dump()
    );
}

#[test]
fn a_run_into_a_closed_pipe_keeps_its_own_exit_code() {
    let p = Project::new().with_mock("mock://openai?rps=500");
    let worklist = p.write("w.csv", "id,prompt\na,x\nb,y\n");
    let config = p.config("[[limits]]\nname = \"daily\"\nquota = 1\nper = \"1d\"", 1);
    let out = into_a_closed_pipe(
        &p,
        &[
            "run",
            worklist.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "paused on its quota: {stderr}");
}
