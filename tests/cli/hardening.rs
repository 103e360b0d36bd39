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
