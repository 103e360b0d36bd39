//! Zendesk's rate-limit headers.
//!
//! The account limit, per minute, as `x-rate-limit` / `x-rate-limit-remaining` on every
//! response and as IETF-style `ratelimit-{limit,remaining,reset}` (reset in seconds from
//! now) on Ticketing API responses; endpoint limits as `zendesk-ratelimit-<name>: total=100;
//! remaining=99; resets=41`. See <https://developer.zendesk.com/api-reference/introduction/rate-limits/>
//! and <https://developer.zendesk.com/documentation/api-basics/best-practices/best-practices-for-avoiding-rate-limiting>.
//! A 429 carries `Retry-After` (read by [`super::retry_after`]).

use std::time::{Duration, SystemTime};

use super::{
    Observation, Resource, find, find_count, has_prefix, parse_count, reset, strip_prefix,
};

const ENDPOINT_PREFIX: &str = "zendesk-ratelimit-";

/// Zendesk documents its account limit as requests per minute.
const ACCOUNT_WINDOW: Duration = Duration::from_secs(60);

/// Whether the response carries Zendesk's own names: an endpoint limit, or the bare
/// `x-rate-limit` (X's names all have a suffix).
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    has_prefix(headers, ENDPOINT_PREFIX) || find(headers, "x-rate-limit").is_some()
}

/// The account limit, then one observation per `zendesk-ratelimit-<name>` in header order.
pub(super) fn observe(headers: &[(String, String)], _wall_now: SystemTime) -> Vec<Observation> {
    let account = Observation {
        limit: find_count(headers, "ratelimit-limit")
            .or_else(|| find_count(headers, "x-rate-limit")),
        remaining: find_count(headers, "ratelimit-remaining")
            .or_else(|| find_count(headers, "x-rate-limit-remaining")),
        reset: find(headers, "ratelimit-reset").and_then(reset::parse_delta_seconds),
        window: Some(ACCOUNT_WINDOW),
        ..Observation::of(Resource::Requests)
    };
    let endpoints = headers.iter().filter_map(|(name, value)| {
        let endpoint = strip_prefix(name, ENDPOINT_PREFIX)?;
        (!endpoint.is_empty()).then(|| endpoint_limit(endpoint, value))
    });
    std::iter::once(account).chain(endpoints).collect()
}

/// `total=100; remaining=99; resets=41` for the endpoint limit `name`.
fn endpoint_limit(name: &str, value: &str) -> Observation {
    let mut observation = Observation::of(Resource::Other(name.to_ascii_lowercase()));
    for pair in value.split([';', ',']) {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("total") {
            observation.limit = parse_count(value);
        } else if key.eq_ignore_ascii_case("remaining") {
            observation.remaining = parse_count(value);
        } else if key.eq_ignore_ascii_case("resets") {
            observation.reset = reset::parse_delta_seconds(value);
        }
    }
    observation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::tests::{headers, now};

    #[test]
    fn documented_ticketing_sample() {
        // Verbatim from Zendesk's best-practices page.
        let h = headers(&[
            ("x-rate-limit", "700"),
            ("ratelimit-limit", "700"),
            ("x-rate-limit-remaining", "699"),
            ("ratelimit-remaining", "699"),
            ("ratelimit-reset", "41"),
            (
                "zendesk-ratelimit-tickets-index",
                "total=100; remaining=99; resets=41",
            ),
        ]);
        assert!(is_present(&h));
        assert_eq!(
            observe(&h, now()),
            vec![
                Observation {
                    resource: Resource::Requests,
                    limit: Some(700),
                    remaining: Some(699),
                    reset: Some(Duration::from_secs(41)),
                    window: Some(ACCOUNT_WINDOW),
                },
                Observation {
                    resource: Resource::Other("tickets-index".into()),
                    limit: Some(100),
                    remaining: Some(99),
                    reset: Some(Duration::from_secs(41)),
                    window: None,
                },
            ]
        );
    }

    #[test]
    fn account_limit_from_x_rate_limit_alone() {
        let h = headers(&[("X-Rate-Limit", "400"), ("X-Rate-Limit-Remaining", "12")]);
        let seen = observe(&h, now());
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].limit, seen[0].remaining, seen[0].reset),
            (Some(400), Some(12), None)
        );
    }

    #[test]
    fn several_endpoint_limits_any_case_and_order() {
        let h = headers(&[
            (
                "Zendesk-RateLimit-Incremental-Exports",
                "remaining=9;total=10;resets=17",
            ),
            (
                "zendesk-ratelimit-search-index",
                "TOTAL=50 , remaining=oops, resets=2.5",
            ),
        ]);
        let seen = observe(&h, now());
        assert_eq!(
            seen[1].resource,
            Resource::Other("incremental-exports".into())
        );
        assert_eq!((seen[1].limit, seen[1].remaining), (Some(10), Some(9)));
        assert_eq!(seen[1].reset, Some(Duration::from_secs(17)));
        assert_eq!(seen[2].resource, Resource::Other("search-index".into()));
        assert_eq!((seen[2].limit, seen[2].remaining), (Some(50), None));
        assert_eq!(seen[2].reset, Some(Duration::from_millis(2500)));
    }
}
