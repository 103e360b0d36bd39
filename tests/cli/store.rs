//! The db's identity (issue 12 item 9, issue 11): read-only commands leave other files
//! alone, a newer schema is refused, the same db is not counted twice.

use crate::support::Project;

/// A SQLite file of another program, with a table of its own.
fn foreign_db(p: &Project) -> std::path::PathBuf {
    let path = p.path("other.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes (text) VALUES ('keep me');")
        .unwrap();
    drop(conn);
    path
}

#[test]
fn status_and_export_leave_a_foreign_sqlite_file_byte_identical() {
    let p = Project::new();
    let db = foreign_db(&p);
    let before = std::fs::read(&db).unwrap();
    for args in [
        vec!["status", "--db", "other.sqlite"],
        vec!["status", "--db", "other.sqlite", "--json"],
        vec!["export", "--db", "other.sqlite"],
    ] {
        let run = p.cmd(&args);
        run.expect_code(2);
        assert!(
            run.stderr().contains("not a ratebound database"),
            "{}",
            run.dump()
        );
    }
    assert_eq!(std::fs::read(&db).unwrap(), before, "the file is untouched");
    for side in ["other.sqlite-wal", "other.sqlite-shm"] {
        assert!(!p.path(side).exists(), "{side} was created");
    }
}

#[test]
fn a_run_refuses_a_foreign_sqlite_file_as_its_db() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(3);
    let config = p.config("", 2);
    let db = foreign_db(&p);
    let before = std::fs::read(&db).unwrap();
    let run = p.run(&worklist, &config, &["--db", "other.sqlite"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("not a ratebound database"),
        "{}",
        run.dump()
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(p.records().is_empty(), "nothing sent");
}

#[test]
fn a_db_from_a_newer_schema_is_refused_clearly() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(3);
    let config = p.config("", 2);
    p.run(&worklist, &config, &["--db", "n.db", "--quiet"])
        .expect_code(0);
    let conn = rusqlite::Connection::open(p.path("n.db")).unwrap();
    let newer = ratebound::store::SCHEMA_VERSION + 1;
    conn.pragma_update(None, "user_version", newer).unwrap();
    drop(conn);
    for run in [
        p.cmd(&["status", "--db", "n.db"]),
        p.run(&worklist, &config, &["--db", "n.db"]),
    ] {
        run.expect_code(2);
        let text = format!("schema version {newer}");
        assert!(run.stderr().contains(&text), "{}", run.dump());
    }
}

#[test]
fn a_new_db_carries_the_application_id_and_schema_version() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(2);
    let config = p.config("", 2);
    p.run(&worklist, &config, &["--db", "v.db", "--quiet"])
        .expect_code(0);
    let conn = rusqlite::Connection::open(p.path("v.db")).unwrap();
    let pragma = |name| {
        conn.pragma_query_value(None, name, |r| r.get::<_, i32>(0))
            .unwrap()
    };
    assert_eq!(pragma("application_id"), ratebound::store::APPLICATION_ID);
    assert_eq!(pragma("user_version"), ratebound::store::SCHEMA_VERSION);
}

#[test]
fn status_refuses_the_same_db_twice() {
    let p = Project::new().with_mock("mock://openai");
    let worklist = p.worklist(2);
    let config = p.config("", 2);
    p.run(&worklist, &config, &["--db", "a.db", "--quiet"])
        .expect_code(0);
    let run = p.cmd(&["status", "--db", "a.db", "--db", "./a.db"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("the same db is given twice"),
        "{}",
        run.dump()
    );
}
