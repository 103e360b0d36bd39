//! The client reads what each mock profile sends: ratebound's header parser
//! ([`crate::headers`]) against the `ratebound-mock` crate's responses, in virtual time.
//!
//! These tests live on ratebound's side because the mock crate cannot depend on ratebound.

use std::time::Duration;

use crate::clock::{Clock, ManualClock, SystemClock};
use crate::headers::{Dialect, Resource, observe};
use crate::job::Request;
use crate::mock::{MockRequest, MockResponse, MockSpec, Profile, Provider};
use crate::runner::transport::{MockTransport, Transport, TransportError};

/// A provider of `url` on ratebound's [`ManualClock`] at 2026-01-01T00:00:00Z, and the clock.
fn provider(url: &str) -> (Provider<ManualClock>, ManualClock) {
    let clock = ManualClock::at_2026();
    let spec = MockSpec::parse_url(url).unwrap();
    (Provider::new(spec, clock.clone()), clock)
}

/// A `GET` of `path` with no body.
fn get(path: &str) -> MockRequest {
    MockRequest::get(path)
}

/// A chat completion of `prompt` asking for at most `max_tokens`.
fn chat(prompt: &str, max_tokens: u64) -> MockRequest {
    MockRequest::chat(prompt, max_tokens)
}

/// The value of header `name`; panics, listing the headers, if there is none.
fn header<'a>(r: &'a MockResponse, name: &str) -> &'a str {
    r.header(name)
        .unwrap_or_else(|| panic!("no `{name}` in {:?}", r.headers))
}

#[tokio::test(start_paused = true)]
async fn the_in_memory_transport_turns_faults_into_transport_errors() {
    let request = Request {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        headers: Vec::new(),
        body: Some(String::from_utf8(chat("hi", 5).body).unwrap()),
    };
    let transport = |url: &str| {
        let spec = MockSpec::parse_url(url).unwrap();
        MockTransport::new(std::sync::Arc::new(Provider::new(spec, SystemClock::new())))
    };
    let dropped = transport("mock://openai?reset_rate=1").send(&request).await;
    assert_eq!(
        dropped,
        Err(TransportError::Connection(
            "connection reset by the mock".into()
        ))
    );
    // A slow request outlasts a shorter timeout; under paused time this takes no time.
    let slow = transport("mock://openai?slow_rate=1&slow=30s");
    let timeout = std::time::Duration::from_secs(10);
    assert!(
        tokio::time::timeout(timeout, slow.send(&request))
            .await
            .is_err(),
        "timed out"
    );
    let answered = transport("mock://openai").send(&request).await;
    assert_eq!(answered.map(|r| r.status), Ok(200));
}

#[test]
fn every_profile_speaks_the_header_dialect_of_its_name() {
    for profile in Profile::all().filter(|p| p.name() != "leaky") {
        let dialect = profile.name().parse::<Dialect>();
        assert_eq!(dialect.map(|d| d.name()), Ok(profile.name()), "{profile}");
    }
}

/// What the `anthropic` profile sends, read by the client.
mod anthropic {
    use super::*;

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
}

/// What the `github` profile sends, read by the client.
mod github {
    use super::*;

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

/// What the `generic` profile sends, read by the client.
mod generic {
    use super::*;

    #[test]
    fn the_client_reads_what_the_generic_profile_sends() {
        let (p, clock) = provider("mock://generic?rps=10");
        let r = p.handle(&get("/anything"));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-reset"), "1767225601");
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Generic));
        let o = &seen.limits[0];
        assert_eq!(o.resource, Resource::Requests);
        assert_eq!((o.limit, o.remaining), (Some(10), Some(9)));
        assert_eq!(o.reset, Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_generic_429_carries_retry_after() {
        let (p, clock) = provider("mock://generic?rpm=1");
        p.handle(&get("/a"));
        let refused = p.handle(&get("/a"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "60");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.retry_after, Some(Duration::from_secs(60)));
    }
}

/// What the `ietf` profile sends, read by the client.
mod ietf {
    use super::*;

    #[test]
    fn the_client_reads_what_the_ietf_profile_sends() {
        let (p, clock) = provider("mock://ietf?rpm=100");
        let r = p.handle(&get("/v1/things"));
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=100;w=60");
        assert_eq!(header(&r, "ratelimit"), "\"default\";r=99;t=1");
        let seen = observe(&r.headers, clock.wall(), Dialect::Auto);
        assert_eq!(seen.dialect, Some(Dialect::Ietf));
        let o = &seen.limits[0];
        assert_eq!(o.resource, Resource::Requests);
        assert_eq!((o.limit, o.remaining), (Some(100), Some(99)));
        assert_eq!(o.window, Some(Duration::from_secs(60)));
        assert_eq!(o.reset, Some(Duration::from_secs(1)));
    }

    #[test]
    fn an_ietf_window_reports_its_length_and_a_429_its_retry_after() {
        let (p, clock) = provider("mock://ietf?window=2/1500ms");
        p.handle(&get("/"));
        let r = p.handle(&get("/"));
        assert_eq!(header(&r, "ratelimit-policy"), "\"default\";q=2;w=1.5");
        let refused = p.handle(&get("/"));
        assert_eq!(refused.status, 429);
        assert_eq!(header(&refused, "retry-after"), "2", "1.5 s, rounded up");
        let seen = observe(&refused.headers, clock.wall(), Dialect::Auto);
        let o = &seen.limits[0];
        assert_eq!((o.limit, o.remaining), (Some(2), Some(0)));
        assert_eq!(o.window, Some(Duration::from_millis(1500)));
    }
}

/// What the `zendesk` profile sends, read by the client.
mod zendesk {
    use super::*;

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
