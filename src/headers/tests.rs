//! Tests across dialects: detection, dialect names, what `observe` keeps, and that no input
//! makes it panic. Each dialect's own samples are tested in its file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

/// Header pairs from string literals.
pub(super) fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The wall time of every dialect test: 2026-01-01T00:00:00Z (epoch 1767225600).
pub(super) fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

#[test]
fn auto_detects_each_dialect_from_its_names() {
    let cases = [
        (
            Dialect::OpenAi,
            vec![("x-ratelimit-remaining-tokens", "149984")],
        ),
        (Dialect::OpenAi, vec![("X-RateLimit-Reset-Requests", "1s")]),
        (
            Dialect::Anthropic,
            vec![
                ("anthropic-ratelimit-requests-remaining", "49"),
                ("retry-after", "3"),
            ],
        ),
        (
            Dialect::GitHub,
            vec![
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-resource", "core"),
            ],
        ),
        (
            Dialect::GitHub,
            vec![("x-ratelimit-remaining", "4999"), ("x-ratelimit-used", "1")],
        ),
        (Dialect::X, vec![("x-rate-limit-remaining", "899")]),
        (Dialect::X, vec![("x-user-limit-24hour-remaining", "99")]),
        (
            Dialect::Generic,
            vec![("X-RateLimit-Limit", "100"), ("X-RateLimit-Reset", "60")],
        ),
        (Dialect::Ietf, vec![("RateLimit", r#""default";r=50;t=30"#)]),
        (Dialect::Ietf, vec![("RateLimit-Policy", "100;w=60")]),
        (Dialect::Ietf, vec![("RateLimit-Remaining", "9")]),
        (
            Dialect::Zendesk,
            vec![(
                "zendesk-ratelimit-tickets-index",
                "total=100; remaining=99; resets=41",
            )],
        ),
        // Zendesk sends IETF-style and X-style names beside its bare `x-rate-limit`.
        (
            Dialect::Zendesk,
            vec![
                ("x-rate-limit", "700"),
                ("x-rate-limit-remaining", "699"),
                ("ratelimit-reset", "41"),
            ],
        ),
    ];
    for (expected, pairs) in cases {
        assert_eq!(detect(&headers(&pairs)), Some(expected), "{pairs:?}");
        assert_eq!(
            observe(&headers(&pairs), now(), Dialect::Auto).dialect,
            Some(expected)
        );
    }
}

#[test]
fn auto_without_rate_limit_headers_detects_nothing_but_keeps_retry_after() {
    let h = headers(&[("content-type", "application/json"), ("Retry-After", "7")]);
    assert_eq!(
        observe(&h, now(), Dialect::Auto),
        Observations {
            dialect: None,
            limits: vec![],
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[test]
fn a_chosen_dialect_is_used_even_when_auto_would_pick_another() {
    // GitHub's names read as generic: the reset is then resolved by magnitude.
    let h = headers(&[
        ("x-ratelimit-limit", "60"),
        ("x-ratelimit-reset", "30"),
        ("x-ratelimit-resource", "core"),
    ]);
    let generic = observe(&h, now(), Dialect::Generic);
    assert_eq!(generic.dialect, Some(Dialect::Generic));
    assert_eq!(generic.limits[0].reset, Some(Duration::from_secs(30)));
    let github = observe(&h, now(), Dialect::GitHub);
    assert_eq!(
        github.limits[0].reset,
        Some(Duration::ZERO),
        "epoch 30 is long past"
    );
}

#[test]
fn observations_without_any_reading_are_dropped() {
    let h = headers(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "59"),
    ]);
    let seen = observe(&h, now(), Dialect::Auto);
    assert_eq!(
        seen.limits.len(),
        1,
        "no token headers, no token observation"
    );
    assert_eq!(seen.limits[0].resource, Resource::Requests);
    let garbage = headers(&[("x-ratelimit-limit-tokens", "lots")]);
    assert_eq!(observe(&garbage, now(), Dialect::Auto).limits, vec![]);
}

#[test]
fn retry_after_ms_wins_in_every_dialect() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("retry-after", "2"),
        ("retry-after-ms", "1500"),
    ]);
    let seen = observe(&h, now(), Dialect::Anthropic);
    assert_eq!(seen.retry_after, Some(Duration::from_millis(1500)));
}

#[test]
fn dialect_names_round_trip_and_unknown_names_list_the_valid_ones() {
    for dialect in Dialect::ALL {
        assert_eq!(dialect.name().parse(), Ok(dialect));
        assert_eq!(dialect.to_string(), dialect.name());
    }
    assert_eq!(" GitHub ".parse(), Ok(Dialect::GitHub));
    let err = "twitter".parse::<Dialect>().unwrap_err();
    assert_eq!(err.name, "twitter");
    assert_eq!(
        err.to_string(),
        "unknown header dialect `twitter`, expected one of: auto, openai, anthropic, github, x, generic, ietf, zendesk"
    );
}

#[test]
fn resources_display_as_units() {
    assert_eq!(Resource::InputTokens.to_string(), "input-tokens");
    assert_eq!(Resource::Other("search".into()).to_string(), "search");
}

/// Names the parsers look for, in either case, plus arbitrary ones.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-limit",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "x-ratelimit-used",
            "x-ratelimit-resource",
            "x-ratelimit-reset-after",
            "x-rate-limit-reset",
            "x-app-limit-24hour-reset",
            "x-rate-limit",
            "RateLimit",
            "RateLimit-Policy",
            "RateLimit-Limit",
            "RateLimit-Reset",
            "zendesk-ratelimit-",
            "zendesk-ratelimit-x",
            "Retry-After",
            "retry-after-ms",
        ])
        .prop_flat_map(|name| {
            any::<bool>().prop_map(move |upper| {
                if upper {
                    name.to_ascii_uppercase()
                } else {
                    name.to_string()
                }
            })
        }),
        "[a-zA-Z-]{0,30}",
        any::<String>(),
    ]
}

/// Values shaped like the real ones (numbers, dates, durations, structured fields) or not.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,12})?",
        "[0-9.]{0,8}(h|m|s|ms|us|µs|ns){0,1}[0-9.]{0,8}(h|m|s|ms){0,1}",
        concat!(
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}",
            "(\\.[0-9]{0,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
        ),
        "[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        "[ a-z0-9\";=,:*?().\\\\-]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn observe_never_panics(
        pairs in prop::collection::vec((header_name(), header_value()), 0..8),
        now_secs in prop_oneof![0u64..4_000_000_000, Just(1_767_225_600u64)],
        dialect in prop::sample::select(Dialect::ALL.to_vec()),
    ) {
        let wall_now = UNIX_EPOCH + Duration::from_secs(now_secs);
        let seen = observe(&pairs, wall_now, dialect);
        prop_assert!(seen.dialect != Some(Dialect::Auto));
        prop_assert!(seen.limits.iter().all(Observation::has_reading));
    }

    #[test]
    fn go_durations_read_exactly(
        h in 0u64..10_000,
        m in 0u64..60,
        s in 0u64..60,
        ms in 0u64..1000,
    ) {
        let text = format!("{h}h{m}m{s}.{ms:03}s");
        let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        prop_assert_eq!(reset::parse_go_duration(&text), Some(expected));
    }

    #[test]
    fn epoch_resets_within_a_year_resolve_exactly(ahead_ms in 0u64..(365 * 86_400_000)) {
        let instant_ms = 1_767_225_600_000 + ahead_ms;
        let expected = Some(Duration::from_millis(ahead_ms));
        prop_assert_eq!(reset::resolve(&instant_ms.to_string(), now()), expected);
        let secs = format!("{}.{:03}", instant_ms / 1000, instant_ms % 1000);
        prop_assert_eq!(reset::resolve(&secs, now()), expected);
    }
}
