//! The IETF rate-limit fields, draft-ietf-httpapi-ratelimit-headers, in each shape it took.
//!
//! - Current drafts (-08 on, <https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/>):
//!   `RateLimit: "default";r=50;t=30` (per policy: `r` remaining, `t` seconds to reset) with
//!   `RateLimit-Policy: "default";q=100;w=60` (`q` quota, `w` window in seconds, `qu` quota
//!   unit, `pk` partition key). Items are paired by policy name; a policy with no `RateLimit`
//!   item still tells its quota and window.
//! - Draft -07 (<https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-07>),
//!   as express-rate-limit's `draft-7` sends it: `RateLimit: limit=100, remaining=50, reset=30`
//!   with `RateLimit-Policy: 100;w=60`.
//! - Drafts up to -06 (<https://datatracker.ietf.org/doc/html/draft-ietf-httpapi-ratelimit-headers-06>):
//!   the trio `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds from now),
//!   with windows in `RateLimit-Policy: 10;w=1, 50;w=60` or, before -05, in
//!   `RateLimit-Limit: 10, 10;w=1, 50;w=60`.
//!
//! A quota unit (`qu`) other than `requests` becomes `Resource::Other(unit)`; the policy name
//! only pairs items, since it names a policy, not what it counts. Zendesk sends the trio too;
//! `zendesk.rs` owns that case.

use std::time::{Duration, SystemTime};

use super::structured::{Bare, Member, parse_members};
use super::{Observation, Resource, find, find_count, reset};

/// Whether the response carries any of the draft's fields, in any version.
pub(super) fn is_present(headers: &[(String, String)]) -> bool {
    [
        "ratelimit",
        "ratelimit-policy",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ]
    .iter()
    .any(|name| find(headers, name).is_some())
}

/// The observations of whichever version the response speaks, the newest first.
pub(super) fn observe(headers: &[(String, String)], wall_now: SystemTime) -> Vec<Observation> {
    let mut policies: Vec<Policy> = field(headers, "ratelimit-policy")
        .unwrap_or_default()
        .iter()
        .map(Policy::from_member)
        .collect();
    if let Some(members) = field(headers, "ratelimit") {
        if members.iter().any(|m| m.key.is_some()) {
            return vec![from_dictionary(&members, &policies)];
        }
        return from_named_items(&members, &policies);
    }
    let trio = ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"];
    if trio.iter().any(|name| find(headers, name).is_some()) {
        return vec![from_trio(headers, wall_now, &mut policies)];
    }
    policies.iter().map(Policy::observation).collect()
}

/// One quota policy: a `RateLimit-Policy` member, or a `RateLimit-Limit` member in drafts
/// before -05.
struct Policy {
    /// The policy's name; `None` in the drafts where a policy was a bare quota.
    name: Option<String>,
    quota: Option<u64>,
    window: Option<Duration>,
    resource: Resource,
}

impl Policy {
    fn from_member(member: &Member) -> Self {
        let (name, quota) = match &member.value {
            Bare::Integer(_) => (None, member.value.as_count()),
            named => (
                named.as_text().map(str::to_string),
                member.param("q").and_then(Bare::as_count),
            ),
        };
        let resource = match member.param("qu").and_then(Bare::as_text) {
            None | Some("requests") => Resource::Requests,
            Some(unit) => Resource::Other(unit.to_string()),
        };
        Policy {
            name,
            quota,
            window: member.param("w").and_then(Bare::as_seconds),
            resource,
        }
    }

    /// What the policy alone says: its quota and window.
    fn observation(&self) -> Observation {
        Observation {
            limit: self.quota,
            window: self.window,
            ..Observation::of(self.resource.clone())
        }
    }
}

/// Current drafts: one observation per `RateLimit` item, completed by its policy, then one
/// per policy no item mentions.
fn from_named_items(items: &[Member], policies: &[Policy]) -> Vec<Observation> {
    let mut observations = Vec::new();
    let mut used = vec![false; policies.len()];
    for item in items {
        let name = item.value.as_text();
        let policy = policies
            .iter()
            .position(|p| name.is_some() && p.name.as_deref() == name);
        let mut observation = match policy {
            Some(index) => {
                used[index] = true;
                policies[index].observation()
            }
            None => Observation::of(Resource::Requests),
        };
        observation.remaining = item.param("r").and_then(Bare::as_count);
        observation.reset = item.param("t").and_then(Bare::as_seconds);
        observations.push(observation);
    }
    let unused = policies.iter().zip(used).filter(|(_, used)| !used);
    observations.extend(unused.map(|(policy, _)| policy.observation()));
    observations
}

/// Draft -07: `RateLimit: limit=…, remaining=…, reset=…`.
fn from_dictionary(members: &[Member], policies: &[Policy]) -> Observation {
    let value = |key: &str| {
        members
            .iter()
            .find(|m| m.key.as_deref() == Some(key))
            .map(|m| &m.value)
    };
    let limit = value("limit").and_then(Bare::as_count);
    Observation {
        limit,
        remaining: value("remaining").and_then(Bare::as_count),
        reset: value("reset").and_then(Bare::as_seconds),
        window: window_of(limit, policies),
        ..Observation::of(Resource::Requests)
    }
}

/// Drafts up to -06: the `RateLimit-{Limit,Remaining,Reset}` trio.
fn from_trio(
    headers: &[(String, String)],
    wall_now: SystemTime,
    policies: &mut Vec<Policy>,
) -> Observation {
    let limit_members = field(headers, "ratelimit-limit").unwrap_or_default();
    let limit = limit_members.first().and_then(|m| m.value.as_count());
    // Before -05 the policies followed the current limit in `RateLimit-Limit`.
    policies.extend(limit_members.iter().skip(1).map(Policy::from_member));
    Observation {
        limit,
        remaining: find_count(headers, "ratelimit-remaining"),
        // Seconds from now in every draft; `resolve` also reads servers that send a timestamp.
        reset: find(headers, "ratelimit-reset").and_then(|value| reset::resolve(value, wall_now)),
        window: window_of(limit, policies),
        ..Observation::of(Resource::Requests)
    }
}

/// The window of the policy whose quota is `limit`: the drafts before -08 name policies only
/// by their quota.
fn window_of(limit: Option<u64>, policies: &[Policy]) -> Option<Duration> {
    let limit = limit?;
    policies
        .iter()
        .find(|p| p.quota == Some(limit))
        .and_then(|p| p.window)
}

/// A structured field, all its lines joined as RFC 9110 §5.3 allows; `None` if absent or
/// unreadable.
fn field(headers: &[(String, String)], name: &str) -> Option<Vec<Member>> {
    let lines: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    if lines.is_empty() {
        return None;
    }
    parse_members(&lines.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::tests::{headers, now};

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn current_draft_pairs_items_with_policies() {
        let h = headers(&[
            ("RateLimit", r#""default";r=50;t=30"#),
            ("RateLimit-Policy", r#""default";q=100;w=60"#),
        ]);
        assert!(is_present(&h));
        assert_eq!(
            observe(&h, now()),
            vec![Observation {
                resource: Resource::Requests,
                limit: Some(100),
                remaining: Some(50),
                reset: secs(30),
                window: secs(60),
            }]
        );
    }

    #[test]
    fn policies_without_an_item_still_report_quota_and_window() {
        // The draft's example: only the policy closest to exhaustion is in `RateLimit`.
        let h = headers(&[
            (
                "RateLimit-Policy",
                r#""burst";q=100;w=60, "daily";q=1000;w=86400"#,
            ),
            ("RateLimit", r#""daily";r=1;t=36000"#),
        ]);
        let seen = observe(&h, now());
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (
                seen[0].limit,
                seen[0].remaining,
                seen[0].reset,
                seen[0].window
            ),
            (Some(1000), Some(1), secs(36_000), secs(86_400))
        );
        assert_eq!(
            (
                seen[1].limit,
                seen[1].remaining,
                seen[1].reset,
                seen[1].window
            ),
            (Some(100), None, None, secs(60))
        );
    }

    #[test]
    fn tokens_partition_keys_spaces_and_split_lines() {
        // express-rate-limit's `draft-8` output, with the policy split over two lines.
        let h = headers(&[
            (
                "ratelimit-policy",
                r#""100-in-1min"; q=100; w=60; pk=:ZWQ0Y2M0ZmM=:"#,
            ),
            (
                "ratelimit-policy",
                r#"bytes;q=65536;qu="content-bytes";w=10"#,
            ),
            (
                "ratelimit",
                r#""100-in-1min"; r=99; t=60; pk=:ZWQ0Y2M0ZmM=:, bytes;r=1024;t=3"#,
            ),
        ]);
        let seen = observe(&h, now());
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].limit, seen[0].remaining), (Some(100), Some(99)));
        assert_eq!(seen[1].resource, Resource::Other("content-bytes".into()));
        assert_eq!(
            (
                seen[1].limit,
                seen[1].remaining,
                seen[1].reset,
                seen[1].window
            ),
            (Some(65_536), Some(1024), secs(3), secs(10))
        );
    }

    #[test]
    fn draft_7_dictionary() {
        let h = headers(&[
            ("RateLimit", "limit=100, remaining=95, reset=30"),
            ("RateLimit-Policy", "100;w=60"),
        ]);
        assert_eq!(
            observe(&h, now()),
            vec![Observation {
                resource: Resource::Requests,
                limit: Some(100),
                remaining: Some(95),
                reset: secs(30),
                window: secs(60),
            }]
        );
    }

    #[test]
    fn older_trio_with_policy_windows() {
        let h = headers(&[
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "9"),
            ("RateLimit-Reset", "5"),
            ("RateLimit-Policy", "10;w=1, 50;w=60"),
        ]);
        assert_eq!(
            observe(&h, now()),
            vec![Observation {
                resource: Resource::Requests,
                limit: Some(10),
                remaining: Some(9),
                reset: secs(5),
                window: secs(1),
            }]
        );
        let quota_in_limit = headers(&[
            ("RateLimit-Limit", "50, 10;w=1, 50;w=60"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "42"),
        ]);
        let seen = observe(&quota_in_limit, now());
        assert_eq!((seen[0].limit, seen[0].window), (Some(50), secs(60)));
        let bare = headers(&[("ratelimit-limit", "100"), ("ratelimit-remaining", "3")]);
        let seen = observe(&bare, now());
        assert_eq!(
            (seen[0].limit, seen[0].remaining, seen[0].window),
            (Some(100), Some(3), None)
        );
    }

    #[test]
    fn unreadable_values_are_absent() {
        let h = headers(&[("RateLimit", r#""default";r=-1;t=soon"#)]);
        let seen = observe(&h, now());
        assert_eq!(
            (seen[0].remaining, seen[0].reset, seen[0].limit),
            (None, None, None)
        );
        let broken = headers(&[
            ("RateLimit", "\"default;r=1"),
            ("RateLimit-Policy", "(a b)"),
        ]);
        assert_eq!(observe(&broken, now()), vec![]);
    }
}
