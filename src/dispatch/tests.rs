//! The dispatch core as scripts in virtual time: feed it instants and answers, read its
//! decisions.

use std::num::NonZeroU64;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

struct TestJob {
    seq: u64,
    route: Route,
    costs: Costs,
}

impl Ticket for TestJob {
    fn route(&self) -> &Route {
        &self.route
    }
    fn costs(&self) -> &Costs {
        &self.costs
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

const SEC: Nanos = 1_000_000_000;

fn queue(n: u64) -> Scheduler<TestJob> {
    let mut q = Scheduler::new();
    for seq in 0..n {
        let job = TestJob {
            seq,
            route: Route::all(1),
            costs: Costs::request(0),
        };
        q.push(0, seq, job);
    }
    q
}

fn per_second(rate: u64) -> Limiter {
    let rate = NonZeroU64::new(rate).unwrap();
    Limiter::new(&[LimitSpec::rolling(
        "rps",
        Unit::Requests,
        rate,
        Duration::from_secs(1),
    )])
}

fn rules(shared: bool) -> Rules {
    Rules {
        on_quota: OnQuota::Exit,
        refunds_reopen_budget: true,
        shared,
        wall_origin: UNIX_EPOCH,
        max_wait: Duration::MAX,
        unreachable_after: crate::retry::UNREACHABLE_AFTER,
    }
}

/// Drives rounds at `now` until idle; returns the seqs dispatched and why it stopped.
fn round(
    core: &mut Dispatcher,
    now: Nanos,
    workers: usize,
    limiter: &mut Limiter,
    q: &mut Scheduler<TestJob>,
) -> (Vec<u64>, Idle) {
    core.begin(now, q);
    let mut sent = Vec::new();
    loop {
        match core.next(now, workers, limiter, q) {
            Decision::Dispatch { popped, .. } => sent.push(popped.job.seq),
            Decision::Idle(why) => return (sent, why),
            Decision::AskShared { .. } => return (sent, Idle::Blocked),
            _ => {}
        }
    }
}

#[test]
fn dispatches_until_every_slot_is_busy() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(false)), per_second(100), queue(5));
    let (sent, why) = round(&mut core, 0, 2, &mut limiter, &mut q);
    assert_eq!((sent, why), (vec![0, 1], Idle::Full));
    core.completed(1);
    let (sent, why) = round(&mut core, 0, 2, &mut limiter, &mut q);
    assert_eq!(
        (sent, why),
        (vec![], Idle::Full),
        "an uncommitted result holds its slot"
    );
    core.committed(1);
    let (sent, _) = round(&mut core, 0, 2, &mut limiter, &mut q);
    assert_eq!(sent, vec![2]);
}

#[test]
fn a_refused_job_wakes_the_driver_when_it_fits() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(false)), per_second(1), queue(3));
    let (sent, why) = round(&mut core, 0, 4, &mut limiter, &mut q);
    assert_eq!(sent, vec![0]);
    let Idle::Limited { at, binding } = why else {
        panic!("expected a limiter wait, got {why:?}");
    };
    assert_eq!(binding, Some(0));
    assert!(at > 0 && at <= SEC, "next admission at {at}");
    assert_eq!(core.wake(), 0, "the first heartbeat is due at once");
    assert!(core.heartbeat_due(0));
    assert_eq!(core.wake(), at.min(nanos(HEARTBEAT)));
}

#[test]
fn a_hold_stops_dispatch_until_it_ends() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(false)), per_second(100), queue(2));
    core.hold(3 * SEC);
    let (sent, why) = round(&mut core, SEC, 4, &mut limiter, &mut q);
    assert_eq!((sent, why), (vec![], Idle::Held));
    assert!(core.heartbeat_due(SEC));
    assert_eq!(core.wake(), (SEC + nanos(HEARTBEAT)).min(3 * SEC));
    let (sent, _) = round(&mut core, 3 * SEC, 4, &mut limiter, &mut q);
    assert_eq!(sent, vec![0, 1]);
}

#[test]
fn stop_and_pause_block_dispatch_and_stop_ends_when_nothing_is_in_flight() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(false)), per_second(100), queue(3));
    core.set_paused(true);
    assert_eq!(
        round(&mut core, 0, 4, &mut limiter, &mut q).1,
        Idle::Blocked
    );
    core.set_paused(false);
    let (sent, _) = round(&mut core, 0, 1, &mut limiter, &mut q);
    assert_eq!(sent, vec![0]);
    core.stop(End::Interrupted);
    assert!(!core.is_over(&q), "one request is still in flight");
    core.completed(1);
    assert!(core.is_over(&q));
    assert_eq!(core.end(&q), End::Interrupted);
}

#[test]
fn finished_with_items_left_ends_interrupted() {
    let (core, q) = (Dispatcher::new(rules(false)), queue(1));
    assert_eq!(core.end(&q), End::Interrupted);
    assert_eq!(core.end(&queue(0)), End::Finished);
}

#[test]
fn a_shared_wait_hands_the_local_reservation_back() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(true)), per_second(1), queue(2));
    core.begin(0, &q);
    let Decision::AskShared { seq: 0 } = core.next(0, 4, &mut limiter, &mut q) else {
        panic!("a shared limiter is asked after the local one admits");
    };
    assert!(matches!(
        core.next(0, 4, &mut limiter, &mut q),
        Decision::Idle(Idle::Blocked)
    ));
    let answer = SharedAnswer::Wait {
        at: 2 * SEC,
        limit: 0,
    };
    let Decision::Idle(Idle::Limited { at, .. }) =
        core.shared_answer(0, answer, &mut limiter, &mut q)
    else {
        panic!("a shared wait is a limiter wait");
    };
    assert_eq!(at, 2 * SEC);
    assert_eq!(
        limiter.usage(0)[0].used,
        0,
        "the local reservation went back"
    );
    assert_eq!(core.in_flight, 0);
}

#[test]
fn an_unreachable_shared_limiter_admits_nothing_and_asks_again_soon() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(true)), per_second(10), queue(1));
    core.begin(0, &q);
    assert!(matches!(
        core.next(0, 4, &mut limiter, &mut q),
        Decision::AskShared { .. }
    ));
    let answer = SharedAnswer::Unreachable("connection refused".into());
    let decision = core.shared_answer(0, answer, &mut limiter, &mut q);
    assert!(matches!(decision, Decision::Idle(Idle::Blocked)));
    assert!(core.note().is_some_and(|n| n.contains("dispatch paused")));
    core.heartbeat_due(0);
    assert_eq!(core.wake(), nanos(SHARED_RETRY));
    assert_eq!(limiter.usage(0)[0].used, 0);
    let retry = nanos(SHARED_RETRY);
    assert!(matches!(
        core.next(0, 4, &mut limiter, &mut q),
        Decision::Idle(Idle::Held)
    ));
    assert!(matches!(
        core.next(retry, 4, &mut limiter, &mut q),
        Decision::AskShared { .. }
    ));
    let granted = SharedAnswer::Granted { recovered: true };
    assert!(matches!(
        core.shared_answer(retry, granted, &mut limiter, &mut q),
        Decision::Dispatch { .. }
    ));
    assert_eq!(core.note(), None, "recovery clears the outage note");
}

#[test]
fn a_long_wait_on_a_quota_pauses_the_run() {
    let quota = LimitSpec::window(
        "daily",
        Unit::Requests,
        NonZeroU64::new(1).unwrap(),
        Some(Duration::from_secs(86_400)),
    );
    let mut limiter = Limiter::new(&[quota]).with_origin(UNIX_EPOCH);
    let (mut core, mut q) = (Dispatcher::new(rules(false)), queue(2));
    let (sent, why) = round(&mut core, 0, 4, &mut limiter, &mut q);
    assert_eq!(sent, vec![0]);
    assert!(matches!(why, Idle::Limited { .. }));
    assert!(core.is_stopping());
    let End::Paused { reason, until } = core.end(&q) else {
        panic!("a used-up quota pauses the run");
    };
    assert!(reason.contains("quota `daily` is used up"), "{reason}");
    assert_eq!(until, Some(UNIX_EPOCH + Duration::from_secs(86_400)));
}

/// One request per 300 h, already spent; `learned`: set by the provider's headers.
fn spent_for_300h(learned: bool) -> (Limiter, Scheduler<TestJob>) {
    let mut spec = LimitSpec::rolling(
        "learned-requests",
        Unit::Requests,
        NonZeroU64::MIN,
        Duration::from_secs(300 * 3600),
    );
    spec.learn = learned;
    let mut limiter = Limiter::new(&[spec]);
    let route = limiter.route_all();
    let used = limiter.reserve(&route, &Costs::request(0), 0).unwrap();
    limiter.settle(used, &Costs::request(0), 0);
    (limiter, queue(2))
}

#[test]
fn issue_12_a_provider_wait_beyond_max_wait_pauses_the_run_and_says_until_when() {
    let (mut limiter, mut q) = spent_for_300h(true);
    let mut core = Dispatcher::new(Rules {
        max_wait: Duration::from_secs(300),
        ..rules(false)
    });
    let (sent, _) = round(&mut core, SEC, 4, &mut limiter, &mut q);
    assert!(sent.is_empty());
    assert!(core.is_stopping(), "exit 75 under on_quota = \"exit\"");
    match core.end(&q) {
        End::Paused {
            reason,
            until: Some(until),
        } => {
            assert!(reason.contains("max_wait"), "{reason}");
            assert!(until > UNIX_EPOCH + Duration::from_secs(3600), "{until:?}");
        }
        other => panic!("expected a pause with its end, got {other:?}"),
    }
    // Under on_quota = "wait" it waits, saying until when.
    let (mut limiter, mut q) = spent_for_300h(true);
    let mut core = Dispatcher::new(Rules {
        on_quota: OnQuota::Wait,
        max_wait: Duration::from_secs(300),
        ..rules(false)
    });
    round(&mut core, SEC, 4, &mut limiter, &mut q);
    assert!(!core.is_stopping());
    let note = core.note().unwrap_or_default();
    assert!(
        note.contains("to reset at") && note.contains("max_wait"),
        "{note}"
    );
}

#[test]
fn a_configured_rate_slower_than_max_wait_waits_as_configured() {
    let (mut limiter, mut q) = spent_for_300h(false);
    let mut core = Dispatcher::new(Rules {
        max_wait: Duration::from_secs(300),
        ..rules(false)
    });
    let (_, why) = round(&mut core, SEC, 4, &mut limiter, &mut q);
    assert!(matches!(why, Idle::Limited { .. }), "{why:?}");
    assert!(!core.is_stopping());
}

#[test]
fn issue_12_connect_failures_hold_dispatch_probe_one_at_a_time_and_stop_after_a_minute() {
    let (mut core, mut limiter, mut q) = (Dispatcher::new(rules(false)), per_second(100), queue(5));
    let backoff = |streak: u32| Duration::from_secs(1 << streak.min(5));
    core.unreachable(0, "cannot connect: refused", backoff);
    core.unreachable(SEC / 10, "cannot connect: refused", backoff);
    let (sent, why) = round(&mut core, SEC, 4, &mut limiter, &mut q);
    assert_eq!(
        (sent, why),
        (vec![], Idle::Held),
        "held for the first backoff"
    );
    let (sent, _) = round(&mut core, 2 * SEC, 4, &mut limiter, &mut q);
    assert_eq!(sent.len(), 1, "one probe at a time");
    let note = core.note().unwrap_or_default().to_string();
    assert!(note.contains("cannot reach the API"), "{note}");
    core.unreachable(59 * SEC, "cannot connect: refused", backoff);
    assert!(!core.is_stopping());
    core.unreachable(60 * SEC, "cannot connect: refused", backoff);
    assert!(core.is_stopping());
    assert!(matches!(core.end(&q), End::Unreachable { .. }));
    // A response ends an outage.
    let mut core = Dispatcher::new(rules(false));
    core.unreachable(0, "cannot connect: refused", backoff);
    core.reached();
    core.unreachable(61 * SEC, "cannot connect: refused", backoff);
    assert!(!core.is_stopping());
}
