//! The runner's shared-limiter paths in paused tokio time, through the in-memory
//! [`MemoryLimiter`]: a shared "not yet", an outage and its recovery, and a slow answer
//! while a stop arrives.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::tests::{Scripted, fixture, never_stop, ok, rps, runner};
use super::*;
use crate::shared::memory::MemoryLimiter;

/// Waits (in paused time) until `ready` holds.
async fn until(mut ready: impl FnMut() -> bool) {
    while !ready() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_shared_wait_holds_dispatch_until_the_shared_limit_admits() {
    let (f, scheduler) = fixture(3);
    let script = Arc::new(Scripted::new(|_, _| ok()));
    let shared = Arc::new(MemoryLimiter::new(&[rps(1)]));
    let mut r = runner(&f, scheduler, Arc::clone(&script), &[], 4);
    r.shared = Some(Arc::clone(&shared) as Arc<dyn SharedLimiter>);
    let summary = r.run(never_stop()).await.unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.snapshot.done, 3);
    let sent = script.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "a shared wait sends nothing extra: {sent:?}");
    for pair in sent.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= Duration::from_millis(900),
            "the shared limit of 1/s spaces requests, got {gap:?} in {sent:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_shared_limiter_pauses_dispatch_and_recovers() {
    let (f, scheduler) = fixture(4);
    let script = Arc::new(Scripted::new(|_, _| ok()));
    let shared = Arc::new(MemoryLimiter::new(&[rps(100)]));
    shared.set_down(true);
    let mut r = runner(&f, scheduler, Arc::clone(&script), &[], 2);
    r.shared = Some(Arc::clone(&shared) as Arc<dyn SharedLimiter>);
    let run = tokio::spawn(r.run(never_stop()));
    until(|| shared.asked() >= 3).await;
    assert!(
        script.sent.lock().unwrap().is_empty(),
        "nothing is admitted while the shared limiter is unreachable"
    );
    let progress = f.store().progress().unwrap().unwrap();
    assert_eq!(progress.state, crate::session::RunState::Running);
    shared.set_down(false);
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.end, End::Finished);
    assert_eq!(summary.snapshot.done, 4);
    assert_eq!(script.sent.lock().unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_shared_limiter_is_slow_is_handled_at_once() {
    let (f, scheduler) = fixture(5);
    let mut script = Scripted::new(|_, _| ok());
    script.latency = Duration::from_secs(2);
    let script = Arc::new(script);
    let shared = Arc::new(MemoryLimiter::new(&[rps(100)]));
    // The first admission answers at once; every later one takes an hour.
    shared.set_delay_after(1, Duration::from_secs(3_600));
    let mut r = runner(&f, scheduler, Arc::clone(&script), &[], 4);
    r.shared = Some(Arc::clone(&shared) as Arc<dyn SharedLimiter>);
    let (stop_tx, stop_rx) = watch::channel(0);
    let run = tokio::spawn(r.run(stop_rx));
    until(|| shared.asked() >= 2).await;
    stop_tx.send(1).unwrap();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.end, End::Interrupted);
    assert!(
        summary.session < Duration::from_secs(60),
        "the stop did not wait for the slow shared limiter: the session took {:?}",
        summary.session
    );
    let counts = f.store().counts().unwrap();
    assert_eq!(
        counts.done, 1,
        "the request in flight at the stop was recorded"
    );
    assert_eq!(counts.pending, 4);
    assert_eq!(script.sent.lock().unwrap().len(), 1);
}
