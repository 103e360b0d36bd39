//! The Anthropic dialect of the mock: `anthropic-ratelimit-*` headers over the OpenAI
//! profile's chat completions API.
//!
//! Pure formatting over values the provider computed. Source:
//! <https://docs.anthropic.com/en/api/rate-limits#response-headers>: per limit
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the reset an RFC 3339
//! time at which the limit is fully replenished, and `retry-after` (seconds) on a 429. The
//! mock reports the request limit and the token limit (its `tpm`); the paths, bodies and
//! errors are the OpenAI profile's.

use std::time::{Duration, UNIX_EPOCH};

use super::provider::Standing;

/// The `anthropic-ratelimit-*` headers of the request and token limits as they stand at
/// `wall_ns` (epoch nanoseconds).
pub(super) fn rate_limit_headers(
    requests: Option<&Standing>,
    tokens: Option<&Standing>,
    wall_ns: u64,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (family, standing) in [("requests", requests), ("tokens", tokens)] {
        if let Some(s) = standing {
            let values = [
                ("limit", s.limit.to_string()),
                ("remaining", s.remaining.to_string()),
                ("reset", rfc3339(wall_ns.saturating_add(s.reset))),
            ];
            headers.extend(
                values.map(|(what, v)| (format!("anthropic-ratelimit-{family}-{what}"), v)),
            );
        }
    }
    headers
}

/// `epoch_ns` as RFC 3339 in whole seconds, rounded up: a reset is a "not before".
fn rfc3339(epoch_ns: u64) -> String {
    let secs = epoch_ns.div_ceil(1_000_000_000);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::headers::{Dialect, Resource, observe};
    use crate::mock::provider::tests::{chat, header, provider};

    #[test]
    fn the_client_reads_what_the_anthropic_profile_sends() {
        let (p, clock) = provider("mock://anthropic?rpm=50&tpm=1000");
        let r = p.handle(&chat("abcd", 9));
        assert_eq!(r.status, 200);
        // 1 of 50 requests: full again in 1.2 s, at 00:00:02 rounded up.
        assert_eq!(
            header(&r, "anthropic-ratelimit-requests-reset"),
            "2026-01-01T00:00:02Z"
        );
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Anthropic));
        let read: Vec<_> = (seen.limits.iter())
            .map(|o| (o.resource.clone(), o.limit, o.remaining))
            .collect();
        // 1 + 9 tokens estimated, 1 + 9 used.
        assert_eq!(
            read,
            [
                (Resource::Requests, Some(50), Some(49)),
                (Resource::Tokens, Some(1000), Some(990)),
            ]
        );
        assert_eq!(seen.limits[0].reset, Some(Duration::from_secs(2)));
    }

    #[test]
    fn an_anthropic_429_carries_retry_after_in_whole_seconds() {
        let (p, clock) = provider("mock://anthropic?rps=1");
        assert_eq!(p.handle(&chat("", 1)).status, 200);
        let refused = p.handle(&chat("", 1));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "1");
        assert!(
            !refused.headers.iter().any(|(n, _)| n == "retry-after-ms"),
            "OpenAI's alone"
        );
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(seen.limits[0].remaining, Some(0));
    }

    #[test]
    fn resets_round_up_to_the_next_second() {
        assert_eq!(rfc3339(1_767_225_600_000_000_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_000_000_001), "2026-01-01T00:00:01Z");
    }
}
