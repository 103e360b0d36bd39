//! The paged scheduler against the whole-list one (the oracle): random items, policies,
//! page sizes and scripts of dispatches, completions, retries and deferrals must give the
//! same jobs in the same order, with the same waits, across every page refill.

use std::num::NonZeroU32;

use proptest::prelude::*;

use super::*;

const MS: Nanos = 1_000_000;

/// One step of the script both schedulers follow.
#[derive(Clone, Debug)]
enum Act {
    /// Take the next job, if a worker is free.
    Pop,
    /// The in-flight job at this index (modulo) finishes.
    Finish(usize),
    /// It comes back for a retry after this many ms.
    Retry(usize, u64),
    /// It comes back at once (a next page, a quota pause).
    Requeue(usize),
    /// The next job's tenant is held back for this many ms.
    Defer(u64),
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::Pop),
        3 => any::<usize>().prop_map(Act::Finish),
        1 => (any::<usize>(), 0u64..20).prop_map(|(i, d)| Act::Retry(i, d)),
        1 => any::<usize>().prop_map(Act::Requeue),
        1 => (1u64..10).prop_map(Act::Defer),
    ]
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

/// A policy of 1-3 classes, 1-4 tenants and 0-2 groups (often the plain one).
fn policy() -> impl Strategy<Value = Policy> {
    (
        prop::collection::vec(1u32..4, 1..4),
        prop::collection::vec((1u32..4, prop::option::of(1u32..3)), 1..5),
        prop::collection::vec(1u32..3, 0..3),
        prop::option::of(1u64..30),
    )
        .prop_map(|(classes, tenants, groups, starve)| Policy {
            classes: (classes.iter().enumerate())
                .map(|(i, &s)| ClassSpec {
                    name: format!("c{i}"),
                    share: nz(s),
                })
                .collect(),
            tenants: (tenants.iter().enumerate())
                .map(|(i, &(w, cap))| TenantSpec {
                    name: format!("t{i}"),
                    weight: nz(w),
                    max_in_flight: cap.map(nz),
                })
                .collect(),
            groups: (groups.iter().enumerate())
                .map(|(i, &cap)| GroupSpec {
                    pattern: format!("/g{i}*"),
                    max_in_flight: nz(cap),
                })
                .collect(),
            starvation_after: starve.map(|ms| ms * MS),
        })
}

/// Items (priority, class, tenant, group) for `policy`, as queued (seq = index).
fn items(policy: &Policy, raw: &[(i64, u16, u32, u16)]) -> Vec<Queued<u64>> {
    let top = |n: usize| u32::try_from(n).unwrap_or(1);
    raw.iter()
        .enumerate()
        .map(|(seq, &(priority, c, t, g))| Queued {
            lane: Lane {
                class: c % u16::try_from(policy.classes.len()).unwrap_or(1),
                tenant: t % top(policy.tenants.len()),
                group: g % (u16::try_from(policy.groups.len()).unwrap_or(0) + 1),
            },
            priority,
            seq: seq as u64,
            job: seq as u64,
        })
        .collect()
}

/// Follows `script` (then drains everything) and returns each dispatch: (time, job, lane,
/// waited, starved), plus the most jobs ever held.
fn follow(s: &mut Scheduler<u64>, script: &[Act], workers: usize) -> (Vec<String>, usize) {
    let mut log = Vec::new();
    let mut flight: Vec<(Lane, i64, u64)> = Vec::new();
    let priority_of = |seq: u64| -(seq as i64 % 3);
    let mut now: Nanos = 0;
    let mut i = 0;
    loop {
        now += MS;
        let a = match script.get(i) {
            Some(a) => a.clone(),
            None if !flight.is_empty() => Act::Finish(0),
            None if s.is_empty() => break,
            None => Act::Pop,
        };
        i += 1;
        if i > script.len() + 10_000 {
            break;
        }
        let take = |flight: &mut Vec<(Lane, i64, u64)>, k: usize| {
            let k = k % flight.len();
            flight.remove(k)
        };
        match a {
            Act::Pop if flight.len() < workers => {
                if let Some(p) = s.pop_timed(now) {
                    log.push(format!(
                        "{now} {} {:?} {} {}",
                        p.job, p.lane, p.waited, p.starved
                    ));
                    flight.push((p.lane, priority_of(p.job), p.job));
                } else if let Some(at) = s.next_at() {
                    now = now.max(at);
                }
            }
            Act::Pop => {}
            Act::Finish(k) if !flight.is_empty() => {
                let (lane, _, _) = take(&mut flight, k);
                s.finished(lane);
            }
            Act::Retry(k, d) if !flight.is_empty() => {
                let (lane, p, seq) = take(&mut flight, k);
                s.finished(lane);
                s.enqueue_at(now + d * MS, lane, p, seq, seq);
            }
            Act::Requeue(k) if !flight.is_empty() => {
                let (lane, p, seq) = take(&mut flight, k);
                s.finished(lane);
                s.enqueue(now, lane, p, seq, seq);
            }
            Act::Defer(d) => s.defer(now, now + d * MS),
            Act::Finish(_) | Act::Retry(..) | Act::Requeue(_) => {}
        }
    }
    (log, s.peak_held())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn paging_dispatches_in_the_whole_lists_order(
        policy in policy(),
        raw in prop::collection::vec((-2i64..3, any::<u16>(), any::<u32>(), any::<u16>()), 0..80),
        script in prop::collection::vec(act(), 0..300),
        page in 1usize..8,
        workers in 1usize..6,
    ) {
        // The retry priority the script uses must be the item's own.
        let raw: Vec<_> = (raw.iter().enumerate())
            .map(|(seq, &(_, c, t, g))| (-(seq as i64 % 3), c, t, g))
            .collect();
        let queued = items(&policy, &raw);
        let mut whole = Scheduler::with_policy(policy.clone());
        for q in &queued {
            whole.enqueue(0, q.lane, q.priority, q.seq, q.job);
        }
        let mut paged = Scheduler::with_feed(policy, 0, page, Box::new(VecFeed::new(queued.clone())));
        let (want, _) = follow(&mut whole, &script, workers);
        let (got, _) = follow(&mut paged, &script, workers);
        prop_assert_eq!(got, want);
        prop_assert!(paged.take_feed_error().is_none());
    }
}

#[test]
fn a_200_000_item_run_holds_a_page_per_lane_not_the_list() {
    let n = 200_000u64;
    let policy = Policy {
        tenants: (0..4)
            .map(|i| TenantSpec {
                name: format!("t{i}"),
                weight: nz(1),
                max_in_flight: None,
            })
            .collect(),
        ..Policy::default()
    };
    let queued: Vec<Queued<u64>> = (0..n)
        .map(|seq| Queued {
            lane: Lane {
                tenant: (seq % 4) as u32,
                ..Lane::default()
            },
            priority: -((seq % 3) as i64),
            seq,
            job: seq,
        })
        .collect();
    let page = 64;
    let mut s = Scheduler::with_feed(policy, 0, page, Box::new(VecFeed::new(queued)));
    let script: Vec<Act> = (0..n as usize * 3)
        .map(|i| match i % 3 {
            0 => Act::Pop,
            1 => Act::Retry(i, 5),
            _ => Act::Finish(i),
        })
        .collect();
    let (log, peak) = follow(&mut s, &script, 8);
    assert!(log.len() as u64 >= n, "every job went out: {}", log.len());
    // A page per refill (shared out), one head per lane, and the retries on their timers.
    assert!(peak <= 2 * page + 4 + 8, "held at most {peak} jobs");
}
