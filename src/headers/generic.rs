//! The de facto `X-RateLimit-{Limit,Remaining,Reset}` headers, without a suffix.
//!
//! No spec: each API picks its own reset form. Seen in the wild: epoch seconds (with a
//! fraction at Discord, <https://discord.com/developers/docs/topics/rate-limits#header-format>),
//! epoch milliseconds, seconds from now, RFC 3339 and HTTP-dates. So the reset is resolved by
//! form and magnitude ([`reset::resolve`]). Discord's unambiguous `X-RateLimit-Reset-After`
//! (seconds from now) wins when present. GitHub sends the same names plus `-used` and
//! `-resource`; [`super::detect`] tells them apart.

use std::time::SystemTime;

use super::{Observation, Resource, find, find_count, reset};

/// Whether the response carries any unsuffixed `x-ratelimit-{limit,remaining,reset}`.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
    .iter()
    .any(|name| find(headers, name).is_some())
}

/// One observation of requests.
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    let reset = find(headers, "x-ratelimit-reset-after")
        .and_then(reset::parse_delta_seconds)
        .or_else(|| reset::resolve(find(headers, "x-ratelimit-reset")?, wall_now));
    vec![Observation {
        limit: find_count(headers, "x-ratelimit-limit"),
        remaining: find_count(headers, "x-ratelimit-remaining"),
        reset,
        ..Observation::of(Resource::Requests)
    }]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::headers::tests::{headers, now};

    fn reset_of(value: &str) -> Option<Duration> {
        let h = headers(&[
            ("X-RateLimit-Limit", "100"),
            ("X-RateLimit-Remaining", "42"),
            ("X-RateLimit-Reset", value),
        ]);
        let seen = observe(&h, now());
        assert_eq!((seen[0].limit, seen[0].remaining), (Some(100), Some(42)));
        seen[0].reset
    }

    #[test]
    fn ambiguous_resets_resolve_by_form_and_magnitude() {
        // now() is 2026-01-01T00:00:00Z = 1767225600.
        let cases = [
            ("epoch seconds", "1767225660", Some(60_000)),
            (
                "epoch seconds with fraction",
                "1767225660.250",
                Some(60_250),
            ),
            ("epoch milliseconds", "1767225660000", Some(60_000)),
            ("delta seconds", "60", Some(60_000)),
            ("fractional delta", "0.75", Some(750)),
            ("a day as delta", "86400", Some(86_400_000)),
            ("RFC 3339", "2026-01-01T00:01:00Z", Some(60_000)),
            ("HTTP-date", "Thu, 01 Jan 2026 00:01:00 GMT", Some(60_000)),
            ("epoch already past", "1767225000", Some(0)),
            (
                "date already past",
                "Wed, 31 Dec 2025 23:00:00 GMT",
                Some(0),
            ),
            ("epoch-sized but years away", "1999999999", None),
            ("negative", "-60", None),
            ("words", "in a minute", None),
        ];
        for (form, value, ms) in cases {
            assert_eq!(
                reset_of(value),
                ms.map(Duration::from_millis),
                "{form}: {value:?}"
            );
        }
    }

    #[test]
    fn reset_after_wins_over_reset() {
        let h = headers(&[
            ("X-RateLimit-Reset", "1767225660.250"),
            ("X-RateLimit-Reset-After", "1.5"),
        ]);
        assert_eq!(
            observe(&h, now())[0].reset,
            Some(Duration::from_millis(1500))
        );
    }
}
