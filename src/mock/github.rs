//! The GitHub dialect of the mock: the REST API's primary rate-limit headers.
//!
//! Pure formatting over values the provider computed; the provider counts GitHub's request
//! limits in fixed windows anchored at the first request after the previous window expired
//! (`rpm=N`: N per 60 s window, `rps=N`: N per 1 s window, `window=N/D`: N per D), so the
//! reset is the window's end, not a bucket's time to refill. Source:
//! <https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit>:
//! `x-ratelimit-{limit,remaining,used,reset,resource}`, the reset in epoch seconds and the
//! resource `core` for the REST API. A limit exceeded answers 429 with `retry-after`, and a
//! JSON `message` with a `documentation_url`
//! (<https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api#rate-limit-errors>).

use serde_json::{Value, json};

use super::provider::Standing;

/// The `x-ratelimit-*` headers of the request limit as it stands at `wall_ns` (epoch
/// nanoseconds); none without a request limit.
pub(super) fn rate_limit_headers(
    requests: Option<&Standing>,
    wall_ns: u64,
) -> Vec<(String, String)> {
    let Some(s) = requests else {
        return Vec::new();
    };
    // Epoch seconds, rounded up: a reset is a "not before".
    let reset = wall_ns.saturating_add(s.reset).div_ceil(1_000_000_000);
    [
        ("limit", s.limit.to_string()),
        ("remaining", s.remaining.to_string()),
        ("used", s.limit.saturating_sub(s.remaining).to_string()),
        ("reset", reset.to_string()),
        ("resource", "core".to_string()),
    ]
    .into_iter()
    .map(|(what, v)| (format!("x-ratelimit-{what}"), v))
    .collect()
}

/// The 429 body.
pub(super) fn too_many_requests() -> Value {
    json!({
        "message": "API rate limit exceeded for installation ID 1.",
        "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::clock::Clock;
    use crate::headers::{Dialect, Resource, observe};
    use crate::mock::provider::tests::{get, header, provider};

    #[test]
    fn the_client_reads_what_the_github_profile_sends() {
        let (p, clock) = provider("mock://github?rpm=60");
        p.handle(&get("/repos/o/r/issues"));
        clock.advance(Duration::from_secs(15));
        let r = p.handle(&get("/repos/o/r/issues?page=2"));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-used"), "2");
        assert_eq!(header(&r, "x-ratelimit-resource"), "core");
        assert_eq!(
            header(&r, "x-ratelimit-reset"),
            "1767225660",
            "the window's end, 60 s after the first request; not a bucket's refill"
        );
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::GitHub));
        let o = &seen.limits[0];
        assert_eq!(o.resource, Resource::Requests, "core is the request limit");
        assert_eq!((o.limit, o.remaining), (Some(60), Some(58)));
        assert_eq!(o.reset, Some(Duration::from_secs(45)));
    }

    #[test]
    fn a_spent_github_window_refuses_until_its_reset_and_nothing_trickles_back() {
        let (p, clock) = provider("mock://github?rpm=3");
        clock.advance(Duration::from_millis(20_400));
        for used in 1..=3 {
            let r = p.handle(&get("/user"));
            assert_eq!(r.status, 200);
            assert_eq!(header(&r, "x-ratelimit-used"), used.to_string());
            assert_eq!(
                header(&r, "x-ratelimit-reset"),
                "1767225680",
                "00:00:20 + 1 min"
            );
        }
        // A refilling bucket of 3 per minute would admit one more every 20 s; the window
        // admits nothing until its end.
        for wait in [20_000, 20_000, 19_599] {
            clock.advance(Duration::from_millis(wait));
            let refused = p.handle(&get("/user"));
            assert_eq!(refused.status, 429, "{wait} ms later");
            assert_eq!(header(&refused, "x-ratelimit-remaining"), "0");
            assert_eq!(header(&refused, "x-ratelimit-used"), "3");
            assert_eq!(header(&refused, "x-ratelimit-reset"), "1767225680");
        }
        assert_eq!(header(&p.handle(&get("/user")), "retry-after"), "1");
        clock.advance(Duration::from_millis(1));
        let r = p.handle(&get("/user"));
        assert_eq!(r.status, 200, "00:01:20: the window is over");
        assert_eq!(header(&r, "x-ratelimit-remaining"), "2");
    }

    #[test]
    fn the_next_github_window_starts_with_the_next_request_not_on_the_utc_minute() {
        let (p, clock) = provider("mock://github?rpm=2");
        assert_eq!(p.handle(&get("/user")).status, 200);
        // Idle past the window's end (00:01:00) into 00:01:30.
        clock.advance(Duration::from_secs(90));
        let r = p.handle(&get("/user"));
        assert_eq!((r.status, header(&r, "x-ratelimit-used")), (200, "1"));
        assert_eq!(header(&r, "x-ratelimit-reset"), "1767225750", "00:02:30");
        clock.advance(Duration::from_secs(40));
        assert_eq!(p.handle(&get("/user")).status, 200, "00:02:10, same window");
        let refused = p.handle(&get("/user"));
        assert_eq!(
            refused.status, 429,
            "2 per window, and 00:02:00 started none"
        );
        assert_eq!(header(&refused, "retry-after"), "20");
    }

    #[test]
    fn github_rps_is_a_one_second_window() {
        let (p, clock) = provider("mock://github?rps=2");
        clock.advance(Duration::from_millis(300));
        assert_eq!(p.handle(&get("/user")).status, 200);
        assert_eq!(p.handle(&get("/user")).status, 200);
        clock.advance(Duration::from_millis(600));
        let refused = p.handle(&get("/user"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "x-ratelimit-reset"), "1767225601");
        clock.advance(Duration::from_millis(100));
        assert_eq!(p.handle(&get("/user")).status, 200, "at 00:00:01");
    }

    #[test]
    fn a_github_429_carries_retry_after() {
        let (p, clock) = provider("mock://github?window=1/1m");
        clock.advance(Duration::from_millis(500));
        assert_eq!(p.handle(&get("/user")).status, 200);
        let refused = p.handle(&get("/user"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "60", "59.5 s, rounded up");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.limits[0].remaining, Some(0));
        assert_eq!(seen.retry_after, Some(Duration::from_secs(60)));
    }
}
