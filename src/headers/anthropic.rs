//! Anthropic's rate-limit headers.
//!
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
//! with RFC 3339 resets (`2026-11-23T12:00:30Z`), plus `retry-after` on a 429 (read by
//! [`super::retry_after`]): see <https://docs.anthropic.com/en/api/rate-limits#response-headers>.
//! The `tokens` family reports whichever token limit is most restrictive right now, so it can
//! repeat an input- or output-token limit; both are passed on and the caller decides.

use std::time::SystemTime;

use super::{Observation, Resource, find, find_count, has_prefix, reset};

/// The infix of each header name and what it counts, in the order they are returned.
const RESOURCES: [(&str, Resource); 4] = [
    ("requests", Resource::Requests),
    ("tokens", Resource::Tokens),
    ("input-tokens", Resource::InputTokens),
    ("output-tokens", Resource::OutputTokens),
];

/// Whether the response carries any `anthropic-ratelimit-*` header.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    has_prefix(headers, "anthropic-ratelimit-")
}

/// One observation per resource: requests, tokens, input tokens, output tokens.
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    RESOURCES
        .into_iter()
        .map(|(infix, resource)| Observation {
            limit: find_count(headers, &format!("anthropic-ratelimit-{infix}-limit")),
            remaining: find_count(headers, &format!("anthropic-ratelimit-{infix}-remaining")),
            // Documented as RFC 3339; `resolve` reads that and any other form.
            reset: find(headers, &format!("anthropic-ratelimit-{infix}-reset"))
                .and_then(|value| reset::resolve(value, wall_now)),
            ..Observation::of(resource)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::headers::tests::{headers, now};

    #[test]
    fn all_four_families_with_rfc3339_resets() {
        // Shaped like a response from the Messages API; now() is 2026-01-01T00:00:00Z.
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
            ("anthropic-ratelimit-tokens-limit", "48000"),
            ("anthropic-ratelimit-tokens-remaining", "47000"),
            ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:02Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-01-01T00:00:02Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2026-01-01T00:00:00.5Z",
            ),
            ("retry-after", "1"),
            ("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG"),
        ]);
        assert!(is_present(&h));
        let seen = observe(&h, now());
        let summary: Vec<_> = seen
            .iter()
            .map(|o| (o.resource.clone(), o.limit, o.remaining, o.reset))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    Resource::Requests,
                    Some(50),
                    Some(49),
                    Some(Duration::from_secs(1))
                ),
                (
                    Resource::Tokens,
                    Some(48_000),
                    Some(47_000),
                    Some(Duration::from_secs(2))
                ),
                (
                    Resource::InputTokens,
                    Some(40_000),
                    Some(39_000),
                    Some(Duration::from_secs(2))
                ),
                (
                    Resource::OutputTokens,
                    Some(8000),
                    Some(8000),
                    Some(Duration::from_millis(500))
                ),
            ]
        );
    }

    #[test]
    fn a_reset_already_past_is_zero() {
        let h = headers(&[("Anthropic-RateLimit-Requests-Reset", "2025-12-31T23:59:59Z")]);
        assert_eq!(observe(&h, now())[0].reset, Some(Duration::ZERO));
    }

    #[test]
    fn garbage_reset_is_absent() {
        let h = headers(&[("anthropic-ratelimit-requests-reset", "2026-02-30T00:00:00Z")]);
        assert_eq!(observe(&h, now())[0].reset, None);
    }
}
