//! GitHub's rate-limit headers.
//!
//! `x-ratelimit-{limit,remaining,used,reset,resource}`, the reset in epoch seconds and the
//! resource naming which limit the request counted against (`core`, `search`, `graphql`,
//! `code_search`, …): see
//! <https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#checking-the-status-of-your-rate-limit>.
//! Secondary limits answer with `retry-after` (read by [`super::retry_after`]).

use std::time::SystemTime;

use super::{Observation, Resource, find, find_count, reset};

/// Whether the response carries the headers only GitHub adds to `x-ratelimit-*`.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    find(headers, "x-ratelimit-resource").is_some() || find(headers, "x-ratelimit-used").is_some()
}

/// One observation: the resource the request counted against.
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    let limit = find_count(headers, "x-ratelimit-limit");
    let used = find_count(headers, "x-ratelimit-used");
    let remaining =
        find_count(headers, "x-ratelimit-remaining").or_else(|| limit?.checked_sub(used?));
    vec![Observation {
        limit,
        remaining,
        reset: find(headers, "x-ratelimit-reset")
            .and_then(|value| reset::parse_epoch_seconds(value, wall_now)),
        ..Observation::of(resource(find(headers, "x-ratelimit-resource")))
    }]
}

/// `core` (or no resource header) is the primary request limit; any other name is its own
/// limit.
fn resource(name: Option<&str>) -> Resource {
    match name.map(str::trim) {
        None | Some("") => Resource::Requests,
        Some(name) if name.eq_ignore_ascii_case("core") => Resource::Requests,
        Some(name) => Resource::Other(name.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::headers::tests::{headers, now};

    #[test]
    fn documented_core_sample() {
        // GitHub's docs sample, with the reset moved to 30 s after now().
        let h = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-used", "1"),
            ("x-ratelimit-reset", "1767225630"),
            ("x-ratelimit-resource", "core"),
        ]);
        assert!(is_present(&h));
        assert_eq!(
            observe(&h, now()),
            vec![Observation {
                resource: Resource::Requests,
                limit: Some(5000),
                remaining: Some(4999),
                reset: Some(Duration::from_secs(30)),
                window: None,
            }]
        );
    }

    #[test]
    fn other_resources_keep_their_name() {
        let h = headers(&[
            ("X-RateLimit-Limit", "30"),
            ("X-RateLimit-Remaining", "12"),
            ("X-RateLimit-Reset", "1767225660"),
            ("X-RateLimit-Resource", "search"),
        ]);
        let seen = observe(&h, now());
        assert_eq!(seen[0].resource, Resource::Other("search".into()));
        assert_eq!(seen[0].reset, Some(Duration::from_secs(60)));
    }

    #[test]
    fn remaining_derived_from_used_when_missing() {
        let h = headers(&[("x-ratelimit-limit", "5000"), ("x-ratelimit-used", "4990")]);
        assert_eq!(observe(&h, now())[0].remaining, Some(10));
        let over = headers(&[("x-ratelimit-limit", "10"), ("x-ratelimit-used", "11")]);
        assert_eq!(observe(&over, now())[0].remaining, None);
    }

    #[test]
    fn past_reset_is_zero_and_garbage_is_absent() {
        let past = headers(&[("x-ratelimit-reset", "1767225000")]);
        assert_eq!(observe(&past, now())[0].reset, Some(Duration::ZERO));
        let garbage = headers(&[
            ("x-ratelimit-reset", "tomorrow"),
            ("x-ratelimit-limit", "5k"),
        ]);
        let seen = &observe(&garbage, now())[0];
        assert_eq!((seen.limit, seen.reset), (None, None));
    }
}
