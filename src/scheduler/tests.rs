//! Scheduler scripts in virtual time: one decision per tick, jobs finishing when the script
//! says, shares counted over long runs.

use std::num::NonZeroU32;

use super::*;

const MS: Nanos = 1_000_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

fn classes(shares: &[u32]) -> Vec<ClassSpec> {
    shares
        .iter()
        .enumerate()
        .map(|(i, &s)| ClassSpec {
            name: format!("c{i}"),
            share: nz(s),
        })
        .collect()
}

fn tenants(weights: &[u32]) -> Vec<TenantSpec> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| TenantSpec {
            name: format!("t{i}"),
            weight: nz(w),
            max_in_flight: None,
        })
        .collect()
}

fn lane(class: u16, tenant: u32) -> Lane {
    Lane {
        class,
        tenant,
        group: 0,
    }
}

/// Pops `n` jobs, one per millisecond from `start`, each finishing at once; returns the
/// lanes served.
fn serve(s: &mut Scheduler<u64>, start: Nanos, n: usize) -> Vec<Lane> {
    let mut lanes = Vec::with_capacity(n);
    for i in 0..n {
        let Some(p) = s.pop_timed(start + i as Nanos * MS) else {
            break;
        };
        s.finished(p.lane);
        lanes.push(p.lane);
    }
    lanes
}

fn share_of(lanes: &[Lane], class: u16) -> f64 {
    lanes.iter().filter(|l| l.class == class).count() as f64 / lanes.len() as f64
}

#[test]
fn higher_priority_first_and_ties_keep_file_order() {
    let mut s = Scheduler::new();
    for (seq, priority) in [(0, 1), (1, 5), (2, 1), (3, 5), (4, -2)] {
        s.push(priority, seq, seq);
    }
    let order: Vec<u64> = std::iter::from_fn(|| s.pop(0)).collect();
    assert_eq!(order, vec![1, 3, 0, 2, 4]);
}

#[test]
fn a_delayed_job_waits_for_its_instant_then_rejoins_by_priority() {
    let mut s = Scheduler::new();
    s.push(0, 5, "low");
    s.push_at(100, 9, 1, "retry");
    assert_eq!(s.next_at(), Some(100));
    assert_eq!(s.peek(99), Some(&"low"), "not due at 99");
    assert_eq!(s.pop(100), Some("retry"), "due at 100 and outranks");
    assert_eq!(s.pop(100), Some("low"));
    assert!(s.is_empty());
}

#[test]
fn inside_a_tenant_priority_is_strict_and_ties_keep_file_order() {
    let mut s = Scheduler::with_policy(Policy {
        classes: classes(&[1, 1]),
        ..Policy::default()
    });
    for (seq, priority) in [(0, 1), (1, 5), (2, 1), (3, 5), (4, -2)] {
        s.enqueue(0, lane(0, 0), priority, seq, seq);
    }
    let order: Vec<u64> = std::iter::from_fn(|| s.pop(0)).collect();
    assert_eq!(order, vec![1, 3, 0, 2, 4]);
}

#[test]
fn class_shares_hold_within_two_points_over_a_long_run() {
    let mut s = Scheduler::with_policy(Policy {
        classes: classes(&[30, 50, 20]),
        ..Policy::default()
    });
    for seq in 0..90_000u64 {
        // Every class has far more work than it will get; priorities vary inside each.
        s.enqueue(0, lane((seq % 3) as u16, 0), (seq % 7) as i64, seq, seq);
    }
    let lanes = serve(&mut s, 0, 60_000);
    for (class, want) in [(0, 0.30), (1, 0.50), (2, 0.20)] {
        let got = share_of(&lanes, class);
        assert!(
            (got - want).abs() <= 0.02,
            "class {class}: {got:.4} of 60,000 dispatches, share {want}"
        );
        // And in every stretch of 1,000 decisions, not only on average.
        for (i, window) in lanes.chunks(1_000).enumerate() {
            let got = share_of(window, class);
            assert!(
                (got - want).abs() <= 0.02,
                "class {class} in decisions {}..{}: {got:.3}, share {want}",
                i * 1_000,
                (i + 1) * 1_000
            );
        }
    }
}

#[test]
fn an_idle_share_is_borrowed_and_given_back_without_a_burst() {
    let mut s = Scheduler::with_policy(Policy {
        classes: classes(&[30, 50, 20]),
        ..Policy::default()
    });
    for seq in 0..40_000u64 {
        s.enqueue(0, lane(1 + (seq % 2) as u16, 0), 0, seq, seq);
    }
    // Class 0 has no work: its 30% goes to the others in proportion (50:20).
    let before = serve(&mut s, 0, 10_000);
    assert_eq!(share_of(&before, 0), 0.0);
    let got = share_of(&before, 1);
    assert!(
        (got - 50.0 / 70.0).abs() <= 0.02,
        "class 1 while class 0 idles: {got:.4}, want 0.714"
    );
    // Class 0's work arrives at 10 s: from then on it gets its share at once, and no more
    // (being idle earned it no credit).
    let now = 10_000 * MS;
    for seq in 40_000..60_000u64 {
        s.enqueue(now, lane(0, 0), 0, seq, seq);
    }
    let after = serve(&mut s, now, 10_000);
    for (class, want) in [(0, 0.30), (1, 0.50), (2, 0.20)] {
        let first = share_of(&after[..1_000], class);
        let all = share_of(&after, class);
        assert!(
            (first - want).abs() <= 0.02 && (all - want).abs() <= 0.02,
            "class {class} after class 0 returns: first 1,000 {first:.3}, all {all:.3}, share {want}"
        );
    }
}

#[test]
fn tenants_share_by_weight() {
    let mut s = Scheduler::with_policy(Policy {
        tenants: tenants(&[1, 3]),
        ..Policy::default()
    });
    for seq in 0..20_000u64 {
        // Tenant 0's jobs all outrank tenant 1's: priority does not cross tenants.
        let tenant = (seq % 2) as u32;
        s.enqueue(0, lane(0, tenant), 10 - 10 * i64::from(tenant), seq, seq);
    }
    let lanes = serve(&mut s, 0, 8_000);
    let t1 = lanes.iter().filter(|l| l.tenant == 1).count() as f64 / 8_000.0;
    assert!((t1 - 0.75).abs() <= 0.02, "tenant of weight 3 got {t1:.4}");
}

#[test]
fn no_tenant_starves_behind_a_big_backlog() {
    let n = 1_000u32;
    let mut s = Scheduler::with_policy(Policy {
        tenants: tenants(&vec![1; n as usize]),
        starvation_after: Some(2_000 * MS),
        ..Policy::default()
    });
    let mut seq = 0u64;
    // Tenant 0 queues 50,000 urgent jobs first; 999 others queue 5 ordinary ones each.
    for _ in 0..50_000 {
        s.enqueue(0, lane(0, 0), 100, seq, seq);
        seq += 1;
    }
    for t in 1..n {
        for _ in 0..5 {
            s.enqueue(0, lane(0, t), 0, seq, seq);
            seq += 1;
        }
    }
    // One decision per millisecond: every tenant is served within its first 1,000.
    let mut first = vec![None; n as usize];
    for i in 0..6_000u64 {
        let now = i * MS;
        let p = s.pop_timed(now).expect("work left");
        first[p.lane.tenant as usize].get_or_insert(i);
        s.finished(p.lane);
        assert!(
            s.starving(now).is_empty(),
            "a tenant had work and no dispatch for 2 s at {now}"
        );
    }
    let latest = first.iter().map(|f| f.expect("served")).max();
    assert!(
        latest < Some(1_000),
        "last first dispatch at decision {latest:?}"
    );
}

#[test]
fn a_tenant_at_its_cap_sits_out_until_a_job_finishes() {
    let mut policy = Policy {
        tenants: tenants(&[1, 1]),
        ..Policy::default()
    };
    policy.tenants[0].max_in_flight = Some(nz(1));
    let mut s = Scheduler::with_policy(policy);
    for seq in 0..10u64 {
        s.enqueue(0, lane(0, (seq % 2) as u32), 0, seq, seq);
    }
    let a = s.pop_timed(0).expect("job");
    assert_eq!(a.lane.tenant, 0);
    let others: Vec<u32> = (0..3)
        .map(|_| s.pop_timed(0).expect("job").lane.tenant)
        .collect();
    assert_eq!(others, vec![1, 1, 1], "tenant 0 holds its one slot");
    s.finished(a.lane);
    assert_eq!(
        s.pop_timed(0).expect("job").lane.tenant,
        0,
        "its slot is free"
    );
}

#[test]
fn a_capped_endpoint_group_lets_the_tenants_other_jobs_go() {
    let mut s = Scheduler::with_policy(Policy {
        groups: vec![GroupSpec {
            pattern: "/search*".into(),
            max_in_flight: nz(2),
        }],
        ..Policy::default()
    });
    for seq in 0..6u64 {
        let group = u16::from(seq < 4);
        // The search jobs rank first.
        s.enqueue(
            0,
            Lane {
                group,
                ..Lane::default()
            },
            i64::from(group),
            seq,
            seq,
        );
    }
    let order: Vec<(u64, u16)> = (0..4)
        .map(|_| {
            let p = s.pop_timed(0).expect("job");
            (p.job, p.lane.group)
        })
        .collect();
    assert_eq!(order, vec![(0, 1), (1, 1), (4, 0), (5, 0)]);
    assert!(s.peek(0).is_none(), "both search slots are taken");
    s.finished(Lane {
        group: 1,
        ..Lane::default()
    });
    assert_eq!(s.pop(0), Some(2));
}

#[test]
fn a_deferred_tenant_waits_for_its_instant_while_others_go_on() {
    let mut s = Scheduler::with_policy(Policy {
        tenants: tenants(&[1, 1]),
        ..Policy::default()
    });
    s.enqueue(0, lane(0, 0), 0, 0, "free-a");
    s.enqueue(0, lane(0, 0), 0, 1, "free-b");
    s.enqueue(0, lane(0, 1), 0, 2, "pro-a");
    assert_eq!(s.peek(0), Some(&"free-a"));
    // Tenant 0's own limit admits nothing before 20 s.
    s.defer(0, 20_000 * MS);
    assert_eq!(s.pop(0), Some("pro-a"));
    assert_eq!(s.peek(MS), None, "tenant 0 is held back");
    assert_eq!(s.next_at(), Some(20_000 * MS));
    assert_eq!(s.peek(20_000 * MS - 1), None, "not before its instant");
    assert_eq!(s.pop(20_000 * MS), Some("free-a"));
    assert_eq!(s.pop(20_000 * MS), Some("free-b"));
}

#[test]
fn a_starving_tenant_is_reported_once_and_its_late_job_is_marked() {
    let mut s = Scheduler::with_policy(Policy {
        tenants: tenants(&[1, 1]),
        starvation_after: Some(60_000 * MS),
        ..Policy::default()
    });
    s.enqueue(0, lane(0, 0), 0, 0, 0u64);
    s.defer(0, 90_000 * MS);
    assert!(
        s.starving(60_000 * MS).is_empty(),
        "60 s is not longer than 60 s"
    );
    let starving = s.starving(61_000 * MS);
    assert_eq!(
        starving,
        vec![Starving {
            class: 0,
            tenant: 0,
            waited: 61_000 * MS
        }]
    );
    assert!(s.starving(62_000 * MS).is_empty(), "reported once per wait");
    let p = s.pop_timed(90_000 * MS).expect("due");
    assert!(p.starved && p.waited == 90_000 * MS);
}
