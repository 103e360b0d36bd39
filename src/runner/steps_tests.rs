//! Multi-request jobs and pagination in paused tokio time, against the mock in memory.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::mock::MockSpec;
use crate::mock::provider::{Provider, Record};
use crate::store::Store;
use crate::worklist::{Item, Payload};

const FAN: &str = r#"
[api]
base_url = "http://unused"
[request]
path = "/unused"
headers = { "X-Item" = "{{id}}" }
[kinds.fan]
[[kinds.fan.steps]]
name = "sent"
path = "/activities?type=emailsSent&campaignId={{campaign}}"
[[kinds.fan.steps]]
name = "opened"
parallel = true
path = "/activities?type=emailsOpened&campaignId={{campaign}}"
[[kinds.fan.steps]]
name = "replied"
parallel = true
path = "/activities?type=emailsReplied&campaignId={{campaign}}"
[[kinds.fan.steps]]
name = "clicked"
parallel = true
path = "/activities?type=emailsClicked&campaignId={{campaign}}"
[kinds.list]
[[kinds.list.steps]]
name = "articles"
path = "/api/v2/help_center/articles?total={{total}}"
paginate = { cursor = "/meta/after_cursor", param = "page[after]", page_size = 10, size_param = "page[size]", items = "/articles" }
[kinds.one]
[[kinds.one.steps]]
name = "get"
path = "/one/{{id}}"
[kinds.chain]
[[kinds.chain.steps]]
name = "create"
path = "/campaigns"
body = '{"name": "{{campaign}}"}'
[[kinds.chain.steps]]
name = "a"
path = "/campaigns/{{steps.create.body.id}}/a"
[[kinds.chain.steps]]
name = "b"
parallel = true
path = "/campaigns/{{steps.create.body.id}}/b"
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    config: Config,
}

/// A run's db holding `items` (id, fields), and the config above with `limits` appended.
fn fixture(limits: &str, items: &[(&str, Value)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let config = Config::parse(Path::new("c.toml"), &format!("{FAN}\n{limits}")).unwrap();
    let mut store = Store::open(&db).unwrap();
    store.bind_worklist(Path::new("w.csv"), "fp", "").unwrap();
    let items: Vec<Item> = items
        .iter()
        .enumerate()
        .map(|(seq, (id, fields))| {
            let mut vars = fields.as_object().unwrap().clone();
            vars.insert("id".into(), (*id).into());
            Item {
                seq: seq as u64,
                line: seq as u64 + 2,
                id: (*id).to_string(),
                priority: 0,
                tokens: None,
                payload: Payload::Vars(vars),
            }
        })
        .collect();
    store.import(items.into_iter()).unwrap();
    Fixture {
        _dir: dir,
        db,
        config,
    }
}

impl Fixture {
    /// A runner over the db's pending items (resuming stored progress), as `run` builds it.
    fn runner<T: Transport>(&self, transport: T) -> Runner<T> {
        self.runner_on(transport, SystemClock::new())
    }

    /// A runner on `clock` (share it with the mock so that both see the same windows).
    fn runner_on<T: Transport>(&self, transport: T, clock: SystemClock) -> Runner<T> {
        let limiter = Limiter::new(&self.config.limits)
            .with_jitter(self.config.jitter)
            .with_origin(clock.wall_at(0));
        let model = CostModel::from_config(&self.config);
        let store = Store::open(&self.db).unwrap();
        let mut scheduler = Scheduler::new();
        for row in store.pending().unwrap() {
            let built =
                crate::job::from_stored(&self.config.request, &row.payload, None, &model).unwrap();
            let mut job = Job {
                seq: row.seq,
                id: row.id,
                priority: row.priority,
                route: built.route(&limiter),
                request: built.request,
                costs: built.costs,
                model: None,
                attempts: row.attempts,
                failures: row.failures,
                lane: crate::scheduler::Lane::default(),
                steps: built.steps.map(|(s, _)| Box::new(s)),
            };
            if let Some(progress) = &row.steps {
                job.resume(progress, &row.pages).unwrap();
            }
            scheduler.push(job.priority, job.seq, job);
        }
        Runner {
            transport: Arc::new(transport),
            clock,
            limiter,
            before: Before {
                total: scheduler.len() as u64,
                ..Before::default()
            },
            scheduler,
            writer: Writer::inline(&self.db).unwrap(),
            progress: Progress::new(0, 0, true),
            cost_model: model,
            control: None,
            settings: super::tests::settings(8),
            shared: None,
            feedback: Feedback::default(),
            hold_after_storm: 0,
        }
    }

    fn result(&self, id: &str) -> (String, Value) {
        let rows = Store::open(&self.db).unwrap().results(false).unwrap();
        let row = rows.into_iter().find(|r| r.id == id).unwrap();
        let body = serde_json::from_str(row.body.as_deref().unwrap()).unwrap();
        (row.status, body)
    }
}

fn never_stop() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0);
    std::mem::forget(tx);
    rx
}

fn mock(url: &str) -> (Arc<Provider<SystemClock>>, transport::MockTransport) {
    let provider = Arc::new(Provider::new(
        MockSpec::parse_url(url).unwrap(),
        SystemClock::new(),
    ));
    let transport = transport::MockTransport::new(Arc::clone(&provider));
    (provider, transport)
}

fn item_of(r: &Record) -> String {
    r.headers
        .iter()
        .find(|(n, _)| n == "X-Item")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn a_four_call_job_never_starts_with_three_calls_left() {
    // 7 calls per 7 s: the first campaign takes 4 at once and leaves 3; the second needs
    // 4 and must wait the second it takes to refill one, then sends all four together.
    let limits = "[[limits]]\nname = \"calls\"\nrate = 7\nper = \"7s\"\n";
    let f = fixture(
        limits,
        &[
            ("c1", json!({"kind": "fan", "campaign": "1"})),
            ("c2", json!({"kind": "fan", "campaign": "2"})),
        ],
    );
    let (provider, transport) = mock("mock://generic?latency=10ms");
    let start = provider.records().first().map_or(0, |r| r.at);
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert_eq!((summary.end, summary.snapshot.done), (End::Finished, 2));
    let records = provider.records();
    assert_eq!(records.len(), 8, "four calls per campaign");
    let at = |item: &str| -> Vec<u64> {
        (records.iter())
            .filter(|r| item_of(r) == item)
            .map(|r| r.at - start)
            .collect()
    };
    let (first, second) = (at("c1"), at("c2"));
    let t0 = first[0];
    assert!(first.iter().all(|&t| t == t0), "one wave: {first:?}");
    assert!(
        second.iter().all(|&t| t >= t0 + 1_000_000_000),
        "the second campaign started before 4 calls were free: {second:?} (first at {t0})"
    );
    assert!(second.iter().all(|&t| t == second[0]), "{second:?}");
    let (status, body) = f.result("c2");
    assert_eq!(status, "done");
    let steps = body["steps"].as_object().unwrap();
    assert_eq!(steps.len(), 4);
    assert_eq!(steps["clicked"]["status"], 200);
}

#[tokio::test(start_paused = true)]
async fn every_page_passes_the_limiter_and_the_item_is_done_after_the_last() {
    // The mock allows 2 requests per second and refuses any more: a page that skipped the
    // limiter would be a 429.
    let limits = "[[limits]]\nname = \"rps\"\nrate = 2\nper = \"1s\"\n";
    let f = fixture(
        limits,
        &[
            ("a", json!({"kind": "list", "total": "35"})),
            ("b", json!({"kind": "list", "total": "10"})),
        ],
    );
    let (provider, transport) = mock("mock://zendesk?rps=2&latency=10ms");
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert_eq!((summary.end, summary.snapshot.done), (End::Finished, 2));
    assert_eq!(
        provider.stats().rate_limited,
        0,
        "no page went over the limit"
    );
    assert_eq!(
        provider.stats().requests,
        4 + 1,
        "35 records in pages of 10, and 10"
    );
    assert!(
        provider
            .records()
            .iter()
            .all(|r| r.path.contains("page[size]=10")),
        "every page asks for the configured page size"
    );
    let (status, body) = f.result("a");
    assert_eq!(status, "done");
    assert_eq!(body["pages"], 4);
    let ids: Vec<&str> = (body["items"].as_array().unwrap().iter())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=35).map(|k| format!("articles-{k}")).collect();
    assert_eq!(ids, expected, "every record once, in order");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_listing_resumes_from_its_next_page() {
    let limits = "[[limits]]\nname = \"rps\"\nrate = 1\nper = \"1s\"\n";
    let f = fixture(limits, &[("a", json!({"kind": "list", "total": "55"}))]);
    let (provider, transport) = mock("mock://zendesk?latency=10ms");
    let (stop_tx, stop_rx) = watch::channel(0u32);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let _ = stop_tx.send(1);
    });
    let summary = f.runner(transport).run(stop_rx).await.unwrap();
    assert_eq!(summary.end, End::Interrupted);
    let first_session = provider.stats().requests;
    assert_eq!(first_session, 3, "pages at 0, 1 and 2 s");
    let counts = Store::open(&f.db).unwrap().counts().unwrap();
    assert_eq!(counts.pending, 1, "not done until its last page");

    let (provider, transport) = mock("mock://zendesk?latency=10ms");
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert_eq!(summary.end, End::Finished);
    let paths: Vec<String> = provider.records().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "pages 4 to 6 only: {paths:?}");
    assert!(paths[0].ends_with("page[after]=c30"), "{paths:?}");
    let (_, body) = f.result("a");
    assert_eq!(body["pages"], 6);
    assert_eq!(body["items"].as_array().unwrap().len(), 55);
}

/// Answers by path: `/campaigns` creates campaign `c/9`; the first `.../a` fails with 503.
struct Flaky {
    sent: Mutex<Vec<String>>,
}

impl Transport for Arc<Flaky> {
    async fn send(&self, request: &crate::job::Request) -> Result<Response, TransportError> {
        let calls = {
            let mut sent = self.sent.lock().unwrap();
            sent.push(request.path.clone());
            sent.iter().filter(|p| **p == request.path).count()
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (status, body) = match request.path.as_str() {
            "/campaigns" => (201, r#"{"id": "c/9"}"#),
            p if p.ends_with("/a") && calls == 1 => (503, "down"),
            _ => (200, r#"{"ok": true}"#),
        };
        Ok(Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_is_retried_alone_with_values_from_the_earlier_response() {
    let f = fixture("", &[("x", json!({"kind": "chain", "campaign": "Q"}))]);
    let flaky = Arc::new(Flaky {
        sent: Mutex::new(Vec::new()),
    });
    let summary = f
        .runner(Arc::clone(&flaky))
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!((summary.end, summary.snapshot.done), (End::Finished, 1));
    let sent = flaky.sent.lock().unwrap().clone();
    let count = |p: &str| sent.iter().filter(|s| *s == p).count();
    assert_eq!(
        count("/campaigns"),
        1,
        "a finished step is never sent again: {sent:?}"
    );
    assert_eq!(count("/campaigns/c%2F9/a"), 2, "{sent:?}");
    assert_eq!(count("/campaigns/c%2F9/b"), 1, "{sent:?}");
    let (_, body) = f.result("x");
    assert_eq!(body["steps"]["create"]["status"], 201);
    assert_eq!(body["steps"]["a"]["body"], json!({"ok": true}));
    let attempts = Store::open(&f.db).unwrap().request_counts().unwrap();
    assert_eq!(attempts.sent, 4, "every request is recorded");
    assert_eq!(
        attempts.retries, 1,
        "a later step after a success is no retry"
    );
    assert_eq!(summary.snapshot.retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_step_fails_its_item_naming_the_step() {
    let f = fixture("", &[("x", json!({"kind": "chain", "campaign": "Q"}))]);
    let (_, transport) = mock("mock://openai?latency=10ms");
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert_eq!((summary.end, summary.snapshot.failed), (End::Finished, 1));
    let rows = Store::open(&f.db).unwrap().results(true).unwrap();
    let error = rows[0].error.as_deref().unwrap();
    assert!(error.starts_with("step `create`: HTTP 404"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_four_call_job_waits_for_the_next_window_rather_than_start_with_three_left() {
    // The hourly window's boundary is put about half an hour away, whatever the time now:
    // a boundary less than a minute ahead is a short wait, not a paused quota.
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % 60;
    let limits = format!(
        "[[limits]]\nname = \"hourly\"\nquota = 7\nper = \"1h\"\nreset = \"00:{:02}\"\n",
        (minute + 30) % 60
    );
    let limits = limits.as_str();
    let f = fixture(
        limits,
        &[
            ("c1", json!({"kind": "fan", "campaign": "1"})),
            ("c2", json!({"kind": "fan", "campaign": "2"})),
        ],
    );
    let (provider, transport) = mock("mock://generic?latency=10ms");
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert!(
        matches!(summary.end, End::Paused { .. }),
        "the quota's 3 calls left cannot hold the second campaign: {:?}",
        summary.end
    );
    let records = provider.records();
    assert_eq!(records.len(), 4, "only the first campaign was sent");
    assert!(records.iter().all(|r| item_of(r) == "c1"));
    let counts = Store::open(&f.db).unwrap().counts().unwrap();
    assert_eq!((counts.done, counts.pending), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn steps_that_would_go_out_after_their_window_are_admitted_again() {
    // 4 calls per calendar second, and a second wave that comes back 1.2 s after the
    // first: sent on the first reservation it would land in a window already given to
    // others, so it goes back through the limiter instead. The mock refuses anything over.
    let limits = "[[limits]]\nname = \"calls\"\nquota = 4\nper = \"1s\"\n";
    let mut items = vec![("a", json!({"kind": "chain", "campaign": "A"}))];
    let ones = ["b", "d", "e", "f", "g"];
    items.extend(ones.iter().map(|id| (*id, json!({"kind": "one"}))));
    let f = fixture(limits, &items);
    let clock = SystemClock::new();
    let provider = Arc::new(Provider::new(
        MockSpec::parse_url("mock://generic?window=4/1s&latency=1200ms").unwrap(),
        clock.clone(),
    ));
    let transport = transport::MockTransport::new(Arc::clone(&provider));
    let summary = f
        .runner_on(transport, clock)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!((summary.end, summary.snapshot.done), (End::Finished, 6));
    assert_eq!(provider.stats().rate_limited, 0, "{:?}", provider.records());
    assert_eq!(provider.stats().requests, 3 + 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_attempt_of_a_multi_request_job_keeps_only_what_it_sent() {
    // Every request fails (500). The chain reserves 3 calls for each attempt but sends only
    // its first step, so each attempt keeps 1: with the one-call item's 3 attempts in
    // between, the last chain attempt needs 1 + 3 + 1 + 3 = 8 of an hourly quota of 8.
    // Keeping the chain's whole reservation per attempt would need 3 + 3 + 3 + 3 = 12 and
    // pause the run.
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
        % 60;
    let limits = format!(
        "[[limits]]\nname = \"hourly\"\nquota = 8\nper = \"1h\"\nreset = \"00:{:02}\"\n",
        (minute + 30) % 60
    );
    let f = fixture(
        &limits,
        &[
            ("c1", json!({"kind": "chain", "campaign": "Q"})),
            ("o1", json!({"kind": "one"})),
        ],
    );
    let (provider, transport) = mock("mock://generic?latency=10ms&fail_rate=1");
    let summary = f.runner(transport).run(never_stop()).await.unwrap();
    assert_eq!(
        (summary.end, summary.snapshot.failed),
        (End::Finished, 2),
        "{:?}",
        provider
            .records()
            .iter()
            .map(|r| (item_of(r), r.path.clone(), r.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(provider.records().len(), 6);
}
