//! Issue 12's hardening cases against the real binary: waits with a ceiling, and mistakes
//! caught before the first request. A tiny fixed-answer server stands in for an API whose
//! answers the mock does not give.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::Project;

/// A loopback server answering every request with `status` and `headers`; counts requests.
struct Fixed {
    url: String,
    hits: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn fixed(status: u16, headers: &[(&'static str, &'static str)]) -> Fixed {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let headers: Vec<(&'static str, &'static str)> = headers.to_vec();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new().fallback(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut response = axum::http::Response::builder().status(status);
                for (name, value) in &headers {
                    response = response.header(*name, *value);
                }
                async move { response.body(axum::body::Body::from("{}")).unwrap() }
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    Fixed {
        url: format!("http://{addr}"),
        hits,
        _stop: stop,
    }
}

/// A config for `base_url` with one generous limit.
fn config_for(p: &Project, base_url: &str, extra: &str) -> std::path::PathBuf {
    p.write(
        "c.toml",
        format!(
            r#"[api]
base_url = "{base_url}"

[request]
path = "/v1/x"
body = '{{"q": "{{{{prompt}}}}"}}'

[[limits]]
name = "rps"
rate = 100
per = "1s"

[workers]
max = 1

[retry]
backoff = "10ms"
{extra}
"#
        ),
    )
}

#[test]
fn issue_12_a_provider_asking_to_wait_for_days_pauses_the_run_and_says_until_when() {
    let cases = [
        ("retry-after", "999999"),
        ("retry-after", "Thu, 01 Jan 2099 00:00:00 GMT"),
        ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
    ];
    for (name, value) in cases {
        let server = fixed(429, &[(name, value)]);
        let p = Project::new();
        let config = config_for(&p, &server.url, "");
        let worklist = p.worklist(3);
        let run = p.run(&worklist, &config, &["--db", "w.db", "--quiet"]);
        run.expect_code(75);
        let out = format!("{}{}", run.stdout(), run.stderr());
        assert!(out.contains("resume after"), "{value}: {}", run.dump());
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "{value}: one request, no storm"
        );
    }
}

/// Runs `run` and checks: exit 2, `expect` in stderr with a hint, nothing sent to the mock.
fn refused(p: &Project, worklist: &str, config: &std::path::Path, expect: &str) {
    let run = p.cmd(&[
        "run",
        worklist,
        "-c",
        config.to_str().unwrap(),
        "--db",
        "e.db",
    ]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains(expect),
        "stderr lacks {expect:?}\n{}",
        run.dump()
    );
    assert!(err.contains("hint:"), "{}", run.dump());
    assert!(
        p.records().is_empty(),
        "nothing may be sent\n{}",
        run.dump()
    );
}

/// The standard test config with `from` replaced by `to`.
fn config_edit(p: &Project, limits: &str, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(p.config(limits, 2)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{from} in {text}");
        text = text.replacen(from, to, 1);
    }
    p.write("bad.toml", text)
}

const RPM: &str = "[[limits]]\nname = \"rpm\"\nrate = 600\nper = \"1m\"";

#[test]
fn issue_12_bad_urls_and_headers_are_refused_before_the_first_request() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(3);
    let url = p.mock_url();
    let cases: Vec<(String, String, &str)> = vec![
        (
            format!("base_url = \"{url}\""),
            "base_url = \"http://\"".into(),
            "bad.toml:2",
        ),
        (
            format!("base_url = \"{url}\""),
            "base_url = \"http://127.0.0.1:99999\"".into(),
            "bad.toml:2",
        ),
        (
            format!("base_url = \"{url}\""),
            "base_url = \"http://bad host\"".into(),
            "bad.toml:2",
        ),
        (
            "headers = { \"X-Item\" = \"{{id}}\" }".into(),
            "headers = { \"X Item\" = \"{{id}}\" }".into(),
            "not a valid HTTP header name",
        ),
        (
            "headers = { \"X-Item\" = \"{{id}}\" }".into(),
            "headers = { \"X-Item\" = \"a\\r\\nInjected: 1\" }".into(),
            "control character",
        ),
    ];
    for (from, to, expect) in &cases {
        let config = config_edit(&p, RPM, &[(from, to)]);
        refused(&p, "work.csv", &config, expect);
    }
}

#[test]
fn issue_12_a_header_rendering_a_line_break_and_a_bad_batch_method_are_refused() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(RPM, 2);
    p.write("w.csv", "id,prompt\na,hi\n\"b\r\nInjected: 1\",hi\n");
    refused(&p, "w.csv", &config, "w.csv:3");
    let batch = r#"{"custom_id": "a", "method": "POST\r\nX: 1", "url": "/v1/chat/completions", "body": {"model": "m"}}"#;
    p.write("b.jsonl", format!("{batch}\n"));
    refused(&p, "b.jsonl", &config, "b.jsonl:1");
    let batch = r#"{"custom_id": "a", "method": "POST", "url": "/v1/x y", "body": {"model": "m"}}"#;
    p.write("b.jsonl", format!("{batch}\n"));
    refused(&p, "b.jsonl", &config, "b.jsonl:1");
}

#[test]
fn issue_12_limits_that_would_limit_nothing_are_refused() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(3);
    for unit in ["Tokens", "request"] {
        let limits = format!("[[limits]]\nname = \"x\"\nunit = \"{unit}\"\nrate = 1\nper = \"1h\"");
        let config = config_edit(&p, &limits, &[]);
        refused(&p, "work.csv", &config, "consumed by nothing");
    }
    let budget = "[[limits]]\nname = \"budget\"\nunit = \"usd\"\nquota = 5.0";
    let config = config_edit(&p, budget, &[]);
    refused(&p, "work.csv", &config, "needs a price for the model `m`");
}

#[test]
fn issue_12_max_tokens_near_the_top_of_u64_never_wraps_under_a_token_limit() {
    let p = Project::new().with_mock("mock://openai");
    p.worklist(3);
    let limits = "[[limits]]\nname = \"tpm\"\nunit = \"tokens\"\nrate = 1000\nper = \"1m\"";
    let config = config_edit(
        &p,
        limits,
        &[("\"max_tokens\": 20", "\"max_tokens\": 18446744073709551615")],
    );
    refused(&p, "work.csv", &config, "work.csv:2");
}

#[test]
fn issue_12_a_dot_dot_value_never_reaches_another_path() {
    let p = Project::new().with_mock("mock://openai");
    let config = config_edit(
        &p,
        RPM,
        &[(
            "path = \"/v1/chat/completions\"",
            "path = \"/v1/items/{{v}}/chat\"",
        )],
    );
    p.write("w.csv", "id,prompt,v\na,hi,ok\nb,hi,..\n");
    refused(&p, "w.csv", &config, "w.csv:3");
}

#[test]
fn issue_12_a_stray_quote_a_directory_and_a_device_are_refused() {
    let p = Project::new().with_mock("mock://openai");
    let config = p.config(RPM, 2);
    p.write("w.csv", "id,prompt\na,ok\nb,\"stray\nc,hi\n");
    refused(&p, "w.csv", &config, "w.csv:3");
    std::fs::create_dir(p.path("dir.csv")).unwrap();
    refused(&p, "dir.csv", &config, "not a regular file");
    std::os::unix::fs::symlink("/dev/zero", p.path("zero.csv")).unwrap();
    refused(&p, "zero.csv", &config, "not a regular file");
}

#[test]
fn issue_12_sighup_stops_gracefully_like_sigterm() {
    let p = Project::new().with_mock("mock://openai?latency=200ms");
    let config = p.config(RPM, 2);
    let worklist = p.worklist(50);
    let child = p
        .command(&[
            "run",
            worklist.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--db",
            "h.db",
            "--quiet",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the run to be sending, then hang up on it (its own pid only).
    while p.records().is_empty() {
        std::thread::yield_now();
    }
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let status = p.status(&p.path("h.db"));
    assert_eq!(
        status["in_flight"], 0,
        "in-flight requests were recorded: {status}"
    );
}

#[test]
fn issue_12_an_unreachable_api_stops_the_run_with_exit_69_and_nothing_failed() {
    // A port nothing listens on: every connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let p = Project::new();
    let config = config_for(&p, &closed, "unreachable_after = \"2s\"");
    let worklist = p.worklist(50);
    let run = p.run(&worklist, &config, &["--db", "w.db"]);
    run.expect_code(69);
    let out = run.stdout();
    assert!(
        out.contains("the API is unreachable: ")
            && out.contains("cannot connect")
            && out.contains("hint:"),
        "{}",
        run.dump()
    );
    let status = p.status(&p.path("w.db"));
    assert_eq!(
        (status["failed"].as_u64(), status["pending"].as_u64()),
        (Some(0), Some(50)),
        "{status}"
    );
    assert_eq!(status["requests_sent"].as_u64(), Some(0), "{status}");
}

#[test]
fn issue_12_a_success_whose_reset_is_days_away_pauses_the_run_and_says_until_when() {
    let server = fixed(
        200,
        &[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "300h"),
        ],
    );
    let p = Project::new();
    let config = config_for(&p, &server.url, "");
    let worklist = p.worklist(3);
    let run = p.run(&worklist, &config, &["--db", "w.db"]);
    run.expect_code(75);
    let out = run.stdout();
    assert!(
        out.contains("resume after") && out.contains("max_wait"),
        "{}",
        run.dump()
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "{}", run.dump());
}
