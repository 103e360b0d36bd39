//! The store as the queue: an import cut short by a kill is redone, a bad row at the very
//! end leaves nothing runnable, and a rerun of an unchanged list starts without reading it.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{Project, item_of};

/// Items imported so far, and whether the import completed (none while the db is absent).
fn import_state(db: &std::path::Path) -> Option<(u64, bool)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    let count: u64 = conn
        .query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))
        .ok()?;
    let imported = conn
        .query_row("SELECT 1 FROM meta WHERE key = 'imported'", [], |_| Ok(()))
        .is_ok();
    Some((count, imported))
}

#[test]
fn a_kill_during_the_import_is_redone_and_every_item_runs_exactly_once() {
    const ITEMS: usize = 30_000;
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(ITEMS);
    let config = p.config("", 32);
    let args = [
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "q.db",
        "--quiet",
    ];
    let db = p.path("q.db");
    // The import is written beside the db, then put in its place whole.
    let importing = p.path("q.db.importing");
    let mut child = p.command(&args).spawn().unwrap();
    // Wait for the first batch of the import to be written, then kill -9.
    let mid_import = loop {
        if let Some((count, _)) = import_state(&importing)
            && count > 0
        {
            break true;
        }
        if import_state(&db).is_some_and(|(_, imported)| imported) {
            break false;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(1));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(mid_import, "the kill should land during the import");
    assert!(
        p.records().is_empty(),
        "nothing is sent before the import completes"
    );
    let (count, imported) = import_state(&db).unwrap();
    assert!(!imported && count == 0, "a cut import is not in the db");

    p.cmd(&args).expect_code(0);
    assert!(!importing.exists(), "the rerun's import took its place");
    let exported = p.export(&db);
    assert_eq!(exported.len(), ITEMS, "every item has exactly one record");
    let mut sent: HashMap<String, usize> = HashMap::new();
    for r in p.records().iter().filter(|r| r.status == 200) {
        *sent.entry(item_of(r).unwrap()).or_default() += 1;
    }
    assert_eq!(sent.len(), ITEMS, "every item reached the API");
    assert!(sent.values().all(|&n| n == 1), "no item was sent twice");
    assert_eq!(p.status(&db)["done"], ITEMS as u64);
}

#[test]
fn a_bad_last_row_refuses_the_run_and_leaves_nothing_runnable() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config("", 4);
    let mut text = String::from("id,priority,prompt\n");
    for i in 1..=30_000 {
        text.push_str(&format!("item-{i:05},{},\"hello {i}\"\n", i % 3));
    }
    let good = text.clone();
    text.push_str("item-30001,high,hello\n");
    let worklist = p.write("work.csv", &text);
    let run = p.run(&worklist, &config, &["--db", "b.db", "--quiet"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("work.csv:30002") && run.stderr().contains("priority"),
        "names the file, line and field:\n{}",
        run.dump()
    );
    assert!(p.records().is_empty(), "nothing sent");
    let (_, imported) = import_state(&p.path("b.db")).unwrap_or((0, false));
    assert!(!imported, "nothing runnable left behind");
    assert!(!p.path("b.db.importing").exists(), "nor an import file");

    // Fixed, the same db takes it: it was bound to no list.
    p.write("work.csv", &good);
    p.run(&worklist, &config, &["--db", "b.db", "--quiet"])
        .expect_code(0);
    assert_eq!(p.status(&p.path("b.db"))["done"], 30_000);
}

#[test]
fn an_unchanged_list_touched_or_rewritten_resumes_and_an_edited_one_is_refused() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config("", 4);
    let worklist = p.worklist(50);
    let args = ["--db", "t.db", "--quiet"];
    p.run(&worklist, &config, &args).expect_code(0);
    // Rewritten with the same bytes: a new modification time, the content hash agrees.
    let text = std::fs::read_to_string(&worklist).unwrap();
    std::fs::write(&worklist, &text).unwrap();
    p.run(&worklist, &config, &args).expect_code(0);
    p.run(&worklist, &config, &["--db", "t.db", "--quiet", "--verify"])
        .expect_code(0);
    // One character changed, the size kept.
    std::fs::write(&worklist, text.replacen("number 7\"", "number 8\"", 1)).unwrap();
    let run = p.run(&worklist, &config, &args);
    run.expect_code(2);
    assert!(
        run.stderr().contains("different work list"),
        "{}",
        run.dump()
    );
}

#[test]
fn a_new_config_moves_pending_items_to_the_lanes_it_gives() {
    let p = Project::new().with_mock("mock://openai");
    let mut text = String::from("id,priority,prompt\n");
    for i in 0..20 {
        text.push_str(&format!("hi-{i:02},1,hello\nlo-{i:02},0,hello\n"));
    }
    let worklist = p.write("work.csv", &text);
    let quota = "[[limits]]\nname = \"daily\"\nunit = \"requests\"\nquota = 10\nper = \"1d\"";
    let config = p.config(quota, 1);
    p.run(&worklist, &config, &["--db", "l.db", "--quiet"])
        .expect_code(75);
    assert_eq!(p.records().len(), 10, "the quota stops the first session");
    // Classes now: the low-priority items get a quarter of the dispatches.
    let classes = "[[classes]]\nname = \"high\"\nshare = 3\nmin_priority = 1\n\n[[classes]]\nname = \"rest\"\nshare = 1\n";
    let config = p.config(classes, 1);
    p.run(&worklist, &config, &["--db", "l.db", "--quiet"])
        .expect_code(0);
    let ids: Vec<String> = p.records().iter().filter_map(item_of).collect();
    assert_eq!(ids.len(), 40, "every item sent once: {ids:?}");
    assert!(
        ids[..10].iter().all(|id| id.starts_with("hi-")),
        "priority first: {ids:?}"
    );
    assert!(
        ids[10..18].iter().any(|id| id.starts_with("lo-")),
        "the second session shares dispatches between the classes: {ids:?}"
    );
}
