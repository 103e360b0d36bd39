//! X's (formerly Twitter's) rate-limit headers.
//!
//! `x-rate-limit-{limit,remaining,reset}` for the endpoint's window (usually 15 minutes), the
//! reset in epoch seconds: see <https://docs.x.com/x-api/fundamentals/rate-limits>. Posting
//! endpoints add 24-hour limits per app and per user as `x-app-limit-24hour-*` and
//! `x-user-limit-24hour-*` in the same form; they become `Other("app-24hour")` and
//! `Other("user-24hour")` with a 24-hour window.

use std::time::{Duration, SystemTime};

use super::{Observation, Resource, find, find_count, has_prefix, reset};

/// The prefix of each family of names, what it counts and the window its name states.
const FAMILIES: [(&str, &str, Option<Duration>); 3] = [
    ("x-rate-limit", "", None),
    ("x-app-limit-24hour", "app-24hour", Some(DAY)),
    ("x-user-limit-24hour", "user-24hour", Some(DAY)),
];

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether the response carries any of X's rate-limit headers.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    FAMILIES
        .iter()
        .any(|(prefix, _, _)| has_prefix(headers, &format!("{prefix}-")))
}

/// The endpoint's request limit, then the 24-hour app and user limits when sent.
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    FAMILIES
        .iter()
        .map(|&(prefix, name, window)| Observation {
            limit: find_count(headers, &format!("{prefix}-limit")),
            remaining: find_count(headers, &format!("{prefix}-remaining")),
            reset: find(headers, &format!("{prefix}-reset"))
                .and_then(|value| reset::parse_epoch_seconds(value, wall_now)),
            window,
            ..Observation::of(if name.is_empty() {
                Resource::Requests
            } else {
                Resource::Other(name.to_string())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::tests::{headers, now};

    #[test]
    fn endpoint_window_with_epoch_reset() {
        // As in X's docs for a 15-minute endpoint, with the reset 10 minutes after now().
        let h = headers(&[
            ("x-rate-limit-limit", "900"),
            ("x-rate-limit-remaining", "847"),
            ("x-rate-limit-reset", "1767226200"),
        ]);
        assert!(is_present(&h));
        let seen = observe(&h, now());
        assert_eq!(
            seen[0],
            Observation {
                resource: Resource::Requests,
                limit: Some(900),
                remaining: Some(847),
                reset: Some(Duration::from_secs(600)),
                window: None,
            }
        );
        assert!(seen[1].limit.is_none() && seen[2].limit.is_none());
    }

    #[test]
    fn posting_limits_per_app_and_user_over_24_hours() {
        let h = headers(&[
            ("x-rate-limit-limit", "200"),
            ("x-rate-limit-remaining", "199"),
            ("x-rate-limit-reset", "1767226500"),
            ("x-app-limit-24hour-limit", "10000"),
            ("x-app-limit-24hour-remaining", "9876"),
            ("x-app-limit-24hour-reset", "1767300000"),
            ("x-user-limit-24hour-limit", "100"),
            ("x-user-limit-24hour-remaining", "99"),
            ("x-user-limit-24hour-reset", "1767310000"),
        ]);
        let seen = observe(&h, now());
        assert_eq!(seen[1].resource, Resource::Other("app-24hour".into()));
        assert_eq!(seen[1].remaining, Some(9876));
        assert_eq!(seen[1].reset, Some(Duration::from_secs(74_400)));
        assert_eq!(seen[1].window, Some(DAY));
        assert_eq!(seen[2].resource, Resource::Other("user-24hour".into()));
        assert_eq!(seen[2].limit, Some(100));
        assert_eq!(seen[2].reset, Some(Duration::from_secs(84_400)));
    }

    #[test]
    fn garbage_reset_is_absent() {
        let h = headers(&[("x-rate-limit-reset", "1767226200s")]);
        assert_eq!(observe(&h, now())[0].reset, None);
    }
}
