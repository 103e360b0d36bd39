//! Live-view frames pinned by snapshots, each at most 80 columns.

use super::*;

fn gauge(name: &str, unit: &str, used: u64, limit: u64, window_s: f64) -> Gauge {
    Gauge {
        name: name.into(),
        unit: unit.into(),
        used,
        limit,
        window_s,
        ..Gauge::default()
    }
}

fn view(state: State, limits: Vec<Gauge>) -> View {
    View {
        total: 10_000,
        done: 4_180,
        failed: 12,
        in_flight: 14,
        workers: Some(16),
        rate_limited: 3,
        retries: 9,
        rate: 24.6,
        eta: "3m 56s".into(),
        limits,
        state,
    }
}

fn several_limits() -> Vec<Gauge> {
    vec![
        gauge("rpm", "requests", 488, 500, 60.0),
        gauge("tpm", "tokens", 61_200, 200_000, 60.0),
        gauge("rps", "requests", 6, 10, 1.0),
    ]
}

fn quota_near_pause_at() -> Gauge {
    Gauge {
        reset_in: Some(Duration::from_secs(7 * 3600 + 12 * 60)),
        pause_at: Some(0.8),
        ..gauge("daily", "requests", 7_900, 10_000, 86_400.0)
    }
}

/// The frame as text, after checking it fits 80 columns.
fn shown(v: &View) -> String {
    let lines = frame(v, 80);
    for l in &lines {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    lines.join("\n")
}

#[test]
fn several_limits_mark_the_binding_one() {
    insta::assert_snapshot!(shown(&view(State::Running, several_limits())));
}

#[test]
fn a_quota_near_pause_at_shows_its_mark_and_reset() {
    let mut limits = several_limits();
    limits.push(quota_near_pause_at());
    limits.push(Gauge {
        pause_at: Some(0.9),
        ..gauge("budget", "usd", 41_500_000, 50_000_000, 0.0)
    });
    insta::assert_snapshot!(shown(&view(State::Running, limits)));
}

#[test]
fn backing_off() {
    insta::assert_snapshot!(shown(&view(State::BackingOff, several_limits())));
}

#[test]
fn paused_on_quota() {
    let quota = Gauge {
        used: 8_000,
        ..quota_near_pause_at()
    };
    let state = State::PausedOnQuota("until 2026-12-05T00:00:00Z (in 7h 12m)".into());
    insta::assert_snapshot!(shown(&view(state, vec![quota])));
}

#[test]
fn searching_and_waiting_for_redis() {
    let text = [
        State::Searching(None),
        State::Searching(Some(47.25)),
        State::WaitingForRedis,
        State::Paused,
    ]
    .map(|s| {
        shown(&view(
            s,
            vec![gauge("learned-requests", "requests", 70, 80, 1.0)],
        ))
    })
    .join("\n---\n");
    insta::assert_snapshot!(text);
}

#[test]
fn a_quota_past_80_percent_warns_once() {
    let v = view(
        State::Running,
        vec![
            quota_near_pause_at(),
            gauge("rpm", "requests", 499, 500, 60.0),
        ],
    );
    let w = warnings(&v);
    assert_eq!(
        w,
        ["warning: `daily` is at 79% of its limit, pauses at 80%"]
            .map(String::from)
            .into_iter()
            .filter(|_| false)
            .collect::<Vec<_>>(),
        "79% is below 80%"
    );
    let over = View {
        limits: vec![Gauge {
            used: 8_100,
            ..quota_near_pause_at()
        }],
        ..v
    };
    assert_eq!(
        warnings(&over),
        ["warning: `daily` is at 81% of its limit, pauses at 80%"]
    );
}

#[test]
fn a_narrow_terminal_cuts_lines() {
    let lines = frame(&view(State::Running, several_limits()), 40);
    assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:?}");
}

#[test]
fn compact_numbers_fit_five_characters() {
    assert_eq!(compact(999), "999");
    assert_eq!(compact(12_345), "12.3k");
    assert_eq!(compact(4_500_000), "4.5M");
}

#[test]
fn a_daily_quota_resets_at_utc_midnight() {
    let ten_pm = 86_400_000 * 20_000 + 22 * 3_600_000;
    assert_eq!(
        reset_in(ten_pm, 86_400.0),
        Some(Duration::from_secs(2 * 3600))
    );
    assert_eq!(reset_in(ten_pm, 0.0), None);
}
