//! The Zendesk dialect of the mock: the account limit's `ratelimit-*` headers and one
//! endpoint limit, `zendesk-ratelimit-tickets-index`.
//!
//! Pure formatting over values the provider computed. Source:
//! <https://developer.zendesk.com/api-reference/introduction/rate-limits/>:
//! `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` (seconds from now) for the
//! account, `zendesk-ratelimit-<endpoint>: total=..; remaining=..; resets=..` for an
//! endpoint limit, and a 429 with `retry-after`. The mock's one request limit speaks for
//! both, so a client sees the two families agree.

use serde_json::{Value, json};

use super::provider::Standing;

/// The account headers and the `tickets-index` endpoint header of the request limit; none
/// without one.
pub(super) fn rate_limit_headers(requests: Option<&Standing>) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // Whole seconds from now, rounded up: a reset is a "not before".
    let reset = s.reset.div_ceil(1_000_000_000);
    vec![
        ("ratelimit-limit".into(), s.limit.to_string()),
        ("ratelimit-remaining".into(), s.remaining.to_string()),
        ("ratelimit-reset".into(), reset.to_string()),
        (
            "zendesk-ratelimit-tickets-index".into(),
            format!(
                "total={}; remaining={}; resets={reset}",
                s.limit, s.remaining
            ),
        ),
    ]
}

/// The 429 body.
pub(super) fn too_many_requests() -> Value {
    json!({
        "error": "APIRateLimitExceeded",
        "description": "Number of allowed API requests per minute exceeded",
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::clock::Clock;
    use crate::headers::{Dialect, Resource, observe};
    use crate::mock::provider::tests::{get, header, provider};

    #[test]
    fn the_client_reads_what_the_zendesk_profile_sends() {
        let (p, clock) = provider("mock://zendesk?rpm=700");
        let r = p.handle(&get("/api/v2/tickets"));
        assert_eq!(r.status, 200);
        assert_eq!(
            header(&r, "zendesk-ratelimit-tickets-index"),
            "total=700; remaining=699; resets=1"
        );
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Zendesk));
        let read: Vec<_> = (seen.limits.iter())
            .map(|o| (o.resource.clone(), o.limit, o.remaining, o.reset))
            .collect();
        let reset = Some(Duration::from_secs(1));
        assert_eq!(
            read,
            [
                (Resource::Requests, Some(700), Some(699), reset),
                (
                    Resource::Other("tickets-index".into()),
                    Some(700),
                    Some(699),
                    reset
                ),
            ]
        );
    }

    #[test]
    fn a_zendesk_429_carries_retry_after() {
        let (p, clock) = provider("mock://zendesk?rps=2");
        p.handle(&get("/api/v2/tickets"));
        p.handle(&get("/api/v2/tickets"));
        let refused = p.handle(&get("/api/v2/tickets"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "1", "0.5 s, rounded up");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.limits[0].remaining, Some(0));
        assert_eq!(seen.retry_after, Some(Duration::from_secs(1)));
    }
}
