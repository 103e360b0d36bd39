//! Secrets stay home (issue 12 item 2): the run's db never holds a configured key, in any
//! TOML spelling, and `${VAR}` is expanded in every header table.

use std::path::Path;

use crate::support::Project;

const LIMITS: &str = "[[limits]]\nname = \"rpm\"\nrate = 6000\nper = \"1m\"";
const SECRET: &str = "live-7788";

/// Every cell of every table of the db at `path`, as text, read with rusqlite.
fn dump(path: &Path) -> String {
    let db = rusqlite::Connection::open(path).expect("db opens");
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = String::new();
    for table in tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let cell = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                    other => format!("{other:?}"),
                };
                out.push_str(&format!("{table}: {cell}\n"));
            }
        }
    }
    out
}

/// The test config with `line` added to `[api]` (replacing a key of the same name) and
/// `request_headers` as `[request] headers`.
fn config_with(p: &Project, api_line: &str, request_headers: &str) -> std::path::PathBuf {
    let base = p.config(LIMITS, 2);
    let text = std::fs::read_to_string(&base).unwrap();
    let key = api_line.split('=').next().unwrap_or_default().trim();
    let text: Vec<String> = text
        .lines()
        .filter(|l| key.is_empty() || !l.starts_with(&format!("{key} ")))
        .map(|l| match l {
            "[api]" => format!("[api]\n{api_line}"),
            l if l.starts_with("headers = ") => format!("headers = {request_headers}"),
            l => l.to_string(),
        })
        .collect();
    p.write("secret.toml", text.join("\n"))
}

#[test]
fn issue_12_the_db_never_holds_a_literal_key_in_any_spelling() {
    let cases = [
        ("Authorization = \"Bearer sk-live-7788\"", ""),
        ("x-api-key = \"sk\\u002Dlive-7788\"", ""),
        ("api-key = 'sk-live-7788'", ""),
        ("api-key = \"${RB_UNSET_KEY:-sk-live-7788}\"", ""),
        ("api-key = \"\"\"sk-live-7788\"\"\"", ""),
        (
            "",
            "{ \"X-Item\" = \"{{id}}\", api-key = \"sk-live-7788\" }",
        ),
        ("BASE_URL?key=sk-live-7788", ""),
    ];
    for (api_line, request_headers) in cases {
        let p = Project::new().with_mock("mock://openai");
        let api_line = match api_line.strip_prefix("BASE_URL") {
            Some(query) => format!("base_url = \"{}{query}\"", p.mock_url()),
            None if api_line.is_empty() => String::new(),
            None => format!("headers = {{ {api_line} }}"),
        };
        let request_headers = if request_headers.is_empty() {
            "{ \"X-Item\" = \"{{id}}\" }"
        } else {
            request_headers
        };
        let config = config_with(&p, &api_line, request_headers);
        let worklist = p.worklist(3);
        let run = p.run(&worklist, &config, &["--db", "s.db", "--quiet"]);
        assert!(
            run.code() == 0,
            "{api_line} {request_headers}\n{}",
            run.dump()
        );
        assert!(
            p.records()
                .iter()
                .any(|r| format!("{r:?}").contains(SECRET)),
            "the key is sent: {api_line}"
        );
        let db = dump(&p.path("s.db"));
        assert!(db.contains("config"), "the dump reads the db:\n{db}");
        assert!(!db.contains(SECRET), "{api_line} {request_headers}:\n{db}");
        assert!(
            run.stderr().contains("literal secret"),
            "warned: {api_line}\n{}",
            run.dump()
        );
    }
}

#[test]
fn issue_12_request_headers_expand_env_references_and_the_db_keeps_the_reference() {
    let p = Project::new().with_mock("mock://openai");
    let config = config_with(
        &p,
        "",
        "{ \"X-Item\" = \"{{id}}\", api-key = \"${RB_TEST_KEY}\" }",
    );
    let worklist = p.worklist(2);
    let mut cmd = p.command(&[
        "run",
        worklist.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
        "--db",
        "s.db",
        "--quiet",
    ]);
    let out = cmd.env("RB_TEST_KEY", "sk-env-live-7788").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let sent: Vec<String> = p
        .records()
        .iter()
        .flat_map(|r| r.headers.clone())
        .filter(|(n, _)| n.eq_ignore_ascii_case("api-key"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(sent, ["sk-env-live-7788", "sk-env-live-7788"]);
    let db = dump(&p.path("s.db"));
    assert!(!db.contains(SECRET), "{db}");
    assert!(db.contains("${RB_TEST_KEY}"), "{db}");
}
