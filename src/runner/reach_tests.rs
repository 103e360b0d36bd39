//! Issue 12's runner-side cases in paused tokio time: an API that refuses every
//! connection, and a response over `max_response_bytes`.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{Scripted, fixture, never_stop, ok, runner};
use super::*;

fn refused() -> Result<Response, TransportError> {
    Err(TransportError::Connection(format!(
        "{}tcp connect error: Connection refused",
        retry::UNREACHABLE
    )))
}

#[tokio::test(start_paused = true)]
async fn issue_12_an_api_refusing_every_connection_stops_the_run_with_nothing_spent() {
    let (f, scheduler) = fixture(1000);
    let script = Arc::new(Scripted::new(|_, _| refused()));
    let started = tokio::time::Instant::now();
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 8)
        .run(never_stop())
        .await
        .unwrap();
    let took = started.elapsed();
    match &summary.end {
        End::Unreachable { error, after } => {
            assert!(error.contains("Connection refused"), "{error}");
            assert_eq!(*after, retry::UNREACHABLE_AFTER);
        }
        other => panic!("expected the API to be unreachable, got {other:?}"),
    }
    // About a minute of virtual time, not minutes of backoff per item.
    assert!(took >= Duration::from_secs(60), "{took:?}");
    assert!(took <= Duration::from_secs(65), "{took:?}");
    let probes = script.sent.lock().unwrap().len();
    // The first wave of 8, then one probe per backoff (at least 50 ms, at most 1 s here).
    assert!(
        probes <= 8 + 120,
        "dispatch probes one request at a time: {probes}"
    );
    assert_eq!(
        (
            summary.snapshot.sent,
            summary.snapshot.failed,
            summary.session_sent
        ),
        (0, 0, 0),
        "nothing reached the API, nothing failed"
    );
    let counts = f.store().counts().unwrap();
    assert_eq!((counts.failed, counts.pending), (0, 1000));
    assert!(
        f.store()
            .pending()
            .unwrap()
            .iter()
            .all(|r| r.attempts == 0 && r.failures == 0),
        "no attempt was spent"
    );
}

#[tokio::test(start_paused = true)]
async fn issue_12_a_response_between_refusals_ends_the_outage() {
    let (f, scheduler) = fixture(3);
    // i0 answers, then every connection is refused for 50 s: never a whole minute.
    let start = tokio::time::Instant::now();
    let script = Arc::new(Scripted::new(move |id, call| {
        let in_outage = start.elapsed() < Duration::from_secs(50);
        match (id, call) {
            ("i0", 1) => ok(),
            _ if in_outage => refused(),
            _ => ok(),
        }
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 1)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!((summary.snapshot.done, summary.snapshot.failed), (3, 0));
    let results = f.store().results(false).unwrap();
    assert!(results.iter().all(|r| r.attempts == 1), "{results:?}");
}

#[tokio::test(start_paused = true)]
async fn issue_12_a_body_over_max_response_bytes_fails_its_item_at_once() {
    let (f, scheduler) = fixture(2);
    let script = Arc::new(Scripted::new(|id, _| match id {
        "i0" => Err(TransportError::TooLarge {
            status: 200,
            max: 1000,
        }),
        _ => ok(),
    }));
    let summary = runner(&f, scheduler, Arc::clone(&script), &[], 1)
        .run(never_stop())
        .await
        .unwrap();
    assert_eq!((summary.snapshot.done, summary.snapshot.failed), (1, 1));
    assert_eq!(
        script.sent.lock().unwrap().len(),
        2,
        "no retry of the oversized one"
    );
    let failed = f.store().results(true).unwrap();
    assert_eq!((failed[0].id.as_str(), failed[0].attempts), ("i0", 1));
    let error = failed[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("[api] max_response_bytes (1000 bytes)"),
        "{error}"
    );
}
