//! Runner tests in paused tokio time: hours of limits run in milliseconds, deterministically.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::limiter::{LimitSpec, Route};
use crate::mock::MockSpec;
use crate::mock::provider::Provider;
use crate::retry::OnQuota;
use crate::store::Store;
use crate::worklist::{Item, Payload};

pub(super) const CONFIG: &str = r#"
[api]
base_url = "http://unused"
[request]
path = "/v1/chat/completions"
body = '{"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "{{prompt}}"}]}'
"#;

pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    pub(super) fn store(&self) -> Store {
        Store::open(&self.db).unwrap()
    }
}

pub(super) fn fixture(n: u64) -> (Fixture, Scheduler<Job>) {
    fixture_priced(n, &CostModel::default(), &[])
}

/// Items `i0..` rendered with `model` (kinds, prices), routed through `limits`.
fn fixture_priced(n: u64, model: &CostModel, limits: &[LimitSpec]) -> (Fixture, Scheduler<Job>) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut store = Store::open(&db).unwrap();
    store.bind_worklist(Path::new("w.csv"), "fp", "").unwrap();
    let items: Vec<Item> = (0..n)
        .map(|seq| {
            let mut vars = serde_json::Map::new();
            vars.insert("id".into(), format!("i{seq}").into());
            vars.insert("prompt".into(), format!("hello {seq}").into());
            Item {
                seq,
                line: seq + 2,
                id: format!("i{seq}"),
                priority: 0,
                tokens: None,
                payload: Payload::Vars(vars),
            }
        })
        .collect();
    store.import(items.into_iter()).unwrap();
    let spec = Config::parse(Path::new("c.toml"), CONFIG).unwrap().request;
    let mut scheduler = Scheduler::new();
    for row in store.pending().unwrap() {
        let built = crate::job::from_stored(&spec, &row.payload, row.tokens, model).unwrap();
        scheduler.push(
            row.priority,
            row.seq,
            Job {
                seq: row.seq,
                id: row.id,
                priority: row.priority,
                request: built.request,
                costs: built.costs,
                route: Route::all(limits.len().max(1)),
                lane: crate::scheduler::Lane::default(),
                model: built.model,
                attempts: 0,
                failures: 0,
                steps: None,
            },
        );
    }
    (Fixture { _dir: dir, db }, scheduler)
}

pub(super) fn rps(rate: u64) -> LimitSpec {
    LimitSpec::rolling(
        "rps",
        Unit::Requests,
        NonZeroU64::new(rate).unwrap(),
        Duration::from_secs(1),
    )
}

pub(super) fn runner<T: Transport>(
    f: &Fixture,
    scheduler: Scheduler<Job>,
    transport: T,
    limits: &[LimitSpec],
    workers: usize,
) -> Runner<T> {
    Runner {
        transport: Arc::new(transport),
        clock: SystemClock::new(),
        limiter: Limiter::new(limits),
        shared: None,
        before: Before {
            total: scheduler.len() as u64,
            ..Before::default()
        },
        scheduler,
        writer: Writer::inline(&f.db).unwrap(),
        progress: Progress::new(0, 0, true),
        cost_model: CostModel::default(),
        control: None,
        settings: settings(workers),
        feedback: Feedback::default(),
        hold_after_storm: 0,
    }
}

/// Test settings: `workers`, 3 attempts, backoff from 100 ms up to 1 s.
pub(super) fn settings(workers: usize) -> Settings {
    Settings {
        workers,
        auto_workers: None,
        retry: RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
        dialect: crate::headers::Dialect::Auto,
        jitter_seed: 7,
    }
}

pub(super) fn never_stop() -> watch::Receiver<u32> {
    let (tx, rx) = watch::channel(0);
    std::mem::forget(tx);
    rx
}

/// A scripted answer: `(item id, call number for that item)` to what comes back.
type Answer = Box<dyn Fn(&str, usize) -> Result<Response, TransportError> + Send + Sync>;

/// A transport answering from a script: `answer(item id, call number for that item)`.
pub(super) struct Scripted {
    pub(super) answer: Answer,
    pub(super) latency: Duration,
    pub(super) sent: Mutex<Vec<(String, tokio::time::Instant)>>,
}

impl Scripted {
    pub(super) fn new(
        answer: impl Fn(&str, usize) -> Result<Response, TransportError> + Send + Sync + 'static,
    ) -> Scripted {
        Scripted {
            answer: Box::new(answer),
            latency: Duration::from_millis(10),
            sent: Mutex::new(Vec::new()),
        }
    }
}

impl Transport for Arc<Scripted> {
    async fn send(&self, request: &crate::job::Request) -> Result<Response, TransportError> {
        let body: serde_json::Value =
            serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
        let prompt = body["messages"][0]["content"].as_str().unwrap().to_string();
        let id = format!("i{}", prompt.trim_start_matches("hello "));
        let call = {
            let mut sent = self.sent.lock().unwrap();
            sent.push((id.clone(), tokio::time::Instant::now()));
            sent.iter().filter(|(i, _)| *i == id).count()
        };
        tokio::time::sleep(self.latency).await;
        (self.answer)(&id, call)
    }
}

fn status(code: u16, headers: &[(&str, &str)], body: &str) -> Result<Response, TransportError> {
    Ok(Response {
        status: code,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    })
}

pub(super) fn ok() -> Result<Response, TransportError> {
    status(200, &[], r#"{"usage": {"total_tokens": 7}}"#)
}

#[tokio::test(start_paused = true)]
async fn at_the_mocks_true_limits_the_run_sees_no_429_and_takes_the_bound() {
    let (f, scheduler) = fixture(100);
    let spec = MockSpec::parse_url("mock://openai?rps=10&latency=50ms").unwrap();
    let provider = Arc::new(Provider::new(spec, SystemClock::new()));
    let start = tokio::time::Instant::now();
    let summary = runner(
        &f,
        scheduler,
        transport::MockTransport::new(Arc::clone(&provider)),
        &[rps(10)],
        8,
    )
    .run(never_stop())
    .await
    .unwrap();
    let took = start.elapsed();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.snapshot.done, 100);
    assert_eq!(provider.stats().rate_limited, 0, "no 429");
    // A full bucket of 10, then 10 per second: the 100th request leaves at 9 s. The first
    // wave's headers cannot tell which of its 8 requests the provider counted first, so
    // they are all taken as unseen: up to 7 requests (0.7 s) of the initial burst may go
    // unused, never more.
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_millis(9_700),
        "virtual makespan {took:?}"
    );
    let counts = f.store().counts().unwrap();
    assert_eq!((counts.done, counts.pending), (100, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_a_429_spends_no_attempt() {
    let (f, scheduler) = fixture(1);
    let script = Arc::new(Scripted::new(|_, call| match call {
        1..=4 => status(429, &[("retry-after", "2")], r#"{"error": "slow down"}"#),
        _ => ok(),
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 1)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.snapshot.rate_limited, 4);
    let sent = script.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 5, "four 429s did not use up max_attempts = 3");
    for pair in sent.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_secs(2),
            "waited {gap:?}, Retry-After said 2 s"
        );
    }
    let results = f.store().results(false).unwrap();
    assert_eq!(
        (results[0].status.as_str(), results[0].attempts),
        ("done", 5)
    );
    assert_eq!(results[0].usage.as_deref(), Some(r#"{"total_tokens":7}"#));
}

#[tokio::test(start_paused = true)]
async fn transient_failures_back_off_then_fail_after_max_attempts() {
    let (f, scheduler) = fixture(2);
    let script = Arc::new(Scripted::new(|id, call| match (id, call) {
        ("i0", _) => status(503, &[], "down"),
        (_, 1) => Err(TransportError::Timeout),
        _ => ok(),
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 2)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!((summary.snapshot.done, summary.snapshot.failed), (1, 1));
    let results = f.store().results(false).unwrap();
    assert_eq!(results[0].status, "failed");
    assert_eq!(results[0].attempts, 3);
    assert_eq!(results[0].http_status, Some(503));
    assert_eq!(results[0].body.as_deref(), Some("down"));
    assert!(
        results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("gave up after 3")
    );
    assert_eq!(
        (results[1].status.as_str(), results[1].attempts),
        ("done", 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_4xx_fails_one_item_not_the_run() {
    let (f, scheduler) = fixture(3);
    let script = Arc::new(Scripted::new(|id, _| match id {
        "i1" => status(400, &[], r#"{"error": {"message": "bad"}}"#),
        _ => ok(),
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 1)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!((summary.snapshot.done, summary.snapshot.failed), (2, 1));
    assert_eq!(script.sent.lock().unwrap().len(), 3, "a 400 is not retried");
    let failed = f.store().results(true).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, "i1");
    assert!(
        failed[0].body.as_deref().unwrap().contains("bad"),
        "the body is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_stop_the_run_with_items_left_pending() {
    let (f, scheduler) = fixture(50);
    let script = Arc::new(Scripted::new(|_, _| {
        status(401, &[], r#"{"error": "invalid api key"}"#)
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 4)
        .run(never_stop())
        .await
        .unwrap();
    assert!(
        matches!(summary.end, End::AuthRefused { status: 401, .. }),
        "{:?}",
        summary.end
    );
    assert!(
        script.sent.lock().unwrap().len() <= 4,
        "only the first wave was sent"
    );
    let counts = f.store().counts().unwrap();
    assert_eq!(
        (counts.failed, counts.pending),
        (0, 50),
        "no item is marked failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_request_drains_in_flight_and_leaves_the_rest_pending() {
    let (f, scheduler) = fixture(100);
    let script = Arc::new(Scripted::new(|_, _| ok()));
    let (stop_tx, stop_rx) = watch::channel(0);
    let run = tokio::spawn(runner(&f, scheduler, Arc::clone(&script), &[rps(10)], 4).run(stop_rx));
    tokio::time::sleep(Duration::from_millis(2_050)).await;
    stop_tx.send(1).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.end, End::Interrupted);
    let sent = script.sent.lock().unwrap().len() as u64;
    let counts = f.store().counts().unwrap();
    assert_eq!(
        counts.done, sent,
        "every request in flight at the stop was recorded"
    );
    assert!(
        (20..=40).contains(&sent),
        "about 10 + 2 s x 10/s were sent, not {sent}"
    );
    assert_eq!(counts.pending, 100 - sent);
    let progress = f.store().progress().unwrap().unwrap();
    assert_eq!(progress.state, crate::session::RunState::Stopped);
    assert!(
        !progress.limiter_state.is_empty(),
        "limiter state is saved for the restart"
    );
}

#[tokio::test(start_paused = true)]
async fn a_budget_counts_requests_in_flight_at_their_worst_case_and_pauses_when_spent() {
    use crate::limiter::budget::{Price, Pricing};
    let model = CostModel {
        pricing: Pricing::new([(
            "m".to_string(),
            Price {
                input: 1.0,
                output: 1.0,
            },
        )]),
        ..CostModel::default()
    };
    // $0.0001 = 100 micro-dollars; a request's worst case is 3 prompt + 20 output tokens
    // = 23 micro-dollars, its actual usage 3 + 4 = 7.
    let budget = LimitSpec::window("budget", Unit::Usd, NonZeroU64::new(100).unwrap(), None);
    let (f, scheduler) = fixture_priced(50, &model, std::slice::from_ref(&budget));
    let script = Arc::new(Scripted::new(|_, _| {
        status(
            200,
            &[],
            r#"{"usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}"#,
        )
    }));
    let mut r = runner(&f, scheduler, Arc::clone(&script), &[budget], 8);
    r.cost_model = model;
    let summary = r.run(never_stop()).await.unwrap();
    assert!(
        matches!(&summary.end, End::Paused { reason, until: None } if reason.contains("`budget`")),
        "{:?} {:?}",
        summary.end,
        summary.snapshot
    );
    let done = summary.snapshot.done;
    assert!(
        done * 7 <= 100,
        "{done} requests at $7e-6 overspent the budget"
    );
    assert!(
        done >= 11,
        "only {done} done: the budget should be used up to its last worst case: {:?}",
        summary.snapshot
    );
    let counts = f.store().counts().unwrap();
    assert_eq!(
        (counts.done, counts.failed, counts.pending),
        (done, 0, 50 - done)
    );
    assert_eq!(
        f.store().progress().unwrap().unwrap().state,
        crate::session::RunState::Paused
    );
}

/// The mock's provider behind a network that reorders: each request is handled at once but
/// answered after its own latency, so later requests often overtake earlier ones.
struct Reordering {
    inner: transport::MockTransport,
    sent: std::sync::atomic::AtomicU64,
}

impl Transport for Reordering {
    async fn send(&self, request: &crate::job::Request) -> Result<Response, TransportError> {
        let k = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response = self.inner.send(request).await;
        tokio::time::sleep(Duration::from_millis(5 + (k * 37) % 41)).await;
        response
    }
}

/// Runs `n` items with no configured limit against the mock at `url` behind a reordering
/// network with 16 workers; returns the virtual makespan, the 429s and the items done.
async fn learn_from(url: &str, n: u64) -> (Duration, u64, u64) {
    let (f, scheduler) = fixture(n);
    let spec = MockSpec::parse_url(url).unwrap();
    let provider = Arc::new(Provider::new(spec, SystemClock::new()));
    let transport = Reordering {
        inner: transport::MockTransport::new(Arc::clone(&provider)),
        sent: Default::default(),
    };
    let start = tokio::time::Instant::now();
    let summary = runner(&f, scheduler, transport, &[], 16)
        .run(never_stop())
        .await
        .unwrap();
    (
        start.elapsed(),
        provider.stats().rate_limited,
        summary.snapshot.done,
    )
}

#[tokio::test(start_paused = true)]
async fn stale_headers_overtaken_by_later_responses_never_cause_a_429() {
    // No limit configured: the runner learns GitHub's 20 per 1 s window from the headers,
    // whose remaining counts arrive out of order. Resyncing to a stale (higher) count would
    // let a burst through that the provider refuses.
    let (took, refused, done) = learn_from("mock://github?rps=20&latency=1ms", 400).await;
    assert_eq!(done, 400);
    assert_eq!(refused, 0, "no 429 in {took:?}");
    // 20 windows of 20, one a second: 19 s at best; learning costs a little.
    assert!(took < Duration::from_secs(22), "virtual makespan {took:?}");
}

#[tokio::test(start_paused = true)]
async fn githubs_learned_window_sends_nothing_into_a_spent_window() {
    // GitHub counts 30 per 20 s window, each starting with the first request after the last
    // one ended, and says when the window ends. Learned as a bucket refilling 30 per 20 s,
    // each spent window would get a request every 0.67 s, each a 429. (A window of a minute
    // or more pauses the run as a quota instead: QUOTA_WAIT.)
    let (took, refused, done) = learn_from("mock://github?window=30/20s&latency=5ms", 90).await;
    assert_eq!(done, 90);
    assert_eq!(refused, 0, "no 429 in {took:?}");
    // Windows open at 0, 20 and 40 s (each 0.2 s later, the margin for clock skew); the
    // last 30 go out at once.
    assert!(took >= Duration::from_secs(39), "virtual makespan {took:?}");
    assert!(took < Duration::from_secs(42), "virtual makespan {took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_learned_fixed_window_sends_nothing_into_a_spent_window() {
    // X counts 20 calls per UTC second and says when the window ends. Learned as a rolling
    // bucket, the spent window would be trickled into; learned as a window, it is not.
    let (took, refused, done) = learn_from("mock://x?window=20/1s&latency=5ms", 200).await;
    assert_eq!(done, 200);
    // The first wave goes out before anything is known; after that, nothing is refused.
    assert!(refused <= 2, "{refused} × 429 in {took:?}");
    // 10 windows of 20 at best; 11 if the first starts late in its second.
    assert!(took < Duration::from_secs(12), "virtual makespan {took:?}");
}

/// Issue 5: a tenant held back by its own quota waits while the other tenants go on; when
/// only quota-held tenants are left, the run pauses as on a run-wide quota.
#[tokio::test(start_paused = true)]
async fn a_tenants_own_quota_holds_only_that_tenant_and_then_pauses_the_run() {
    use crate::limiter::{JobAttrs, Scope};
    use crate::scheduler::{Lane, Policy, TenantSpec};
    let (f, mut plain) = fixture(10);
    let mut daily = LimitSpec::window(
        "daily@free",
        Unit::Requests,
        NonZeroU64::new(2).unwrap(),
        Some(Duration::from_secs(86_400)),
    );
    daily.scope = Scope::Tenant("free".into());
    let limits = [rps(100), daily];
    let limiter = Limiter::new(&limits);
    let tenant = |name: &str| TenantSpec {
        name: name.into(),
        weight: std::num::NonZeroU32::MIN,
        max_in_flight: None,
    };
    let mut scheduler = Scheduler::with_policy(Policy {
        tenants: vec![tenant(""), tenant("free"), tenant("pro")],
        ..Policy::default()
    });
    while let Some(mut job) = plain.pop(0) {
        // The free tenant's items come first in file order.
        let (name, index) = if job.seq < 5 { ("free", 1) } else { ("pro", 2) };
        job.route = limiter.route(&JobAttrs {
            kind: None,
            tenant: Some(name),
            path: &job.request.path,
        });
        job.lane = Lane {
            tenant: index,
            ..Lane::default()
        };
        scheduler.enqueue(0, job.lane, job.priority, job.seq, job);
    }
    let transport = Arc::new(Scripted::new(|_, _| ok()));
    let mut r = runner(&f, scheduler, Arc::clone(&transport), &limits, 4);
    r.settings.retry.on_quota = OnQuota::Exit;
    let summary = r.run(never_stop()).await.unwrap();
    let sent: Vec<String> = transport
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        matches!(&summary.end, End::Paused { reason, .. } if reason.contains("daily@free")),
        "{:?}",
        summary.end
    );
    assert_eq!(summary.snapshot.done, 7, "2 free + 5 pro; sent {sent:?}");
    for pro in ["i5", "i6", "i7", "i8", "i9"] {
        assert!(
            sent.iter().any(|s| s == pro),
            "{pro} waited behind free: {sent:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_with_rate_limit_headers_holds_only_its_item() {
    // Item i0's first call is refused with headers that say one request is left again
    // shortly; it waits its Retry-After of 2 s, while the limiter, resynced by those
    // headers, lets the other items go on. A second 429 in a row would hold everything.
    let (f, scheduler) = fixture(10);
    let script = Arc::new(Scripted::new(|id, call| match (id, call) {
        ("i0", 1) => status(
            429,
            &[
                ("retry-after", "2"),
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "10ms"),
            ],
            r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#,
        ),
        _ => ok(),
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 1)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!(summary.snapshot.done, 10);
    let sent = script.sent.lock().unwrap().clone();
    let start = sent[0].1;
    let retry = sent.iter().rposition(|(id, _)| id == "i0").unwrap();
    assert!(
        sent[retry].1 - start >= Duration::from_secs(2),
        "i0 waited its Retry-After"
    );
    let others_done_by = sent
        .iter()
        .filter(|(id, _)| id != "i0")
        .map(|(_, at)| *at - start)
        .max()
        .unwrap();
    assert!(
        others_done_by < Duration::from_secs(1),
        "the others did not wait for i0's Retry-After: last sent at {others_done_by:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_wave_is_one_signal_not_eight() {
    // All 8 requests of the first wave are refused together, with rate-limit headers but
    // no Retry-After. Counted as 8 consecutive 429s, the backoff would grow to its 1 s cap;
    // as one signal, every item is retried within the base backoff.
    let (f, scheduler) = fixture(8);
    let script = Arc::new(Scripted::new(|_, call| match call {
        1 => status(
            429,
            &[
                ("x-ratelimit-limit-requests", "100"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "50ms"),
            ],
            r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#,
        ),
        _ => ok(),
    }));
    let start = tokio::time::Instant::now();
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 8)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!(
        (summary.snapshot.done, summary.snapshot.rate_limited),
        (8, 8)
    );
    let last = script
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, at)| *at)
        .max()
        .unwrap();
    assert!(
        last - start < Duration::from_millis(300),
        "the retries waited {:?}",
        last - start
    );
}
