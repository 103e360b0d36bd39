//! OpenAI's rate-limit headers.
//!
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, with resets written as Go
//! durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`): see
//! <https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers>. Azure OpenAI
//! and many OpenAI-compatible servers (Groq, Together, vLLM gateways) send the same names.
//! A reset in another form (a bare number of seconds, a timestamp) is still resolved by
//! [`reset::resolve`], so compatible servers that deviate are read too.

use std::time::{Duration, SystemTime};

use super::{Observation, Resource, find, find_count, reset};

/// The `-<suffix>` of each header name and what it counts.
const RESOURCES: [(&str, Resource); 2] = [
    ("requests", Resource::Requests),
    ("tokens", Resource::Tokens),
];

/// Whether the response carries any OpenAI-style suffixed `x-ratelimit-*` header.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    ["limit", "remaining", "reset"].iter().any(|what| {
        RESOURCES
            .iter()
            .any(|(suffix, _)| find(headers, &format!("x-ratelimit-{what}-{suffix}")).is_some())
    })
}

/// One observation per resource (requests, then tokens).
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    RESOURCES
        .into_iter()
        .map(|(suffix, resource)| Observation {
            limit: find_count(headers, &format!("x-ratelimit-limit-{suffix}")),
            remaining: find_count(headers, &format!("x-ratelimit-remaining-{suffix}")),
            reset: find(headers, &format!("x-ratelimit-reset-{suffix}"))
                .and_then(|value| parse_reset(value, wall_now)),
            ..Observation::of(resource)
        })
        .collect()
}

/// The documented Go duration first; anything else by form and magnitude.
fn parse_reset(value: &str, wall_now: SystemTime) -> Option<Duration> {
    reset::parse_go_duration(value).or_else(|| reset::resolve(value, wall_now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::tests::{headers, now};

    #[test]
    fn documented_sample_reads_requests_and_tokens() {
        // The example response headers from OpenAI's rate-limit guide.
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert!(is_present(&h));
        assert_eq!(
            observe(&h, now()),
            vec![
                Observation {
                    resource: Resource::Requests,
                    limit: Some(60),
                    remaining: Some(59),
                    reset: Some(Duration::from_secs(1)),
                    window: None,
                },
                Observation {
                    resource: Resource::Tokens,
                    limit: Some(150_000),
                    remaining: Some(149_984),
                    reset: Some(Duration::from_secs(360)),
                    window: None,
                },
            ]
        );
    }

    #[test]
    fn every_go_duration_form_and_header_case() {
        for (value, expected) in [
            ("20ms", Duration::from_millis(20)),
            ("0.5s", Duration::from_millis(500)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("17h35m12.02s", Duration::from_millis(63_312_020)),
            ("0s", Duration::ZERO),
        ] {
            let h = headers(&[("X-RateLimit-Reset-Tokens", value)]);
            let tokens = &observe(&h, now())[1];
            assert_eq!(tokens.reset, Some(expected), "{value:?}");
        }
    }

    #[test]
    fn compatible_servers_with_plain_seconds_are_read() {
        let h = headers(&[("x-ratelimit-reset-requests", "2.5")]);
        assert_eq!(
            observe(&h, now())[0].reset,
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn garbage_values_are_absent() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "sixty"),
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-reset-requests", "later"),
        ]);
        let requests = &observe(&h, now())[0];
        assert_eq!(
            (requests.limit, requests.remaining, requests.reset),
            (None, None, None)
        );
    }
}
