//! What the scheduler shares out and between whom: classes, tenants and endpoint groups.
//!
//! Owns the plain data the [`Scheduler`](super::Scheduler) is built from, and the [`Lane`]
//! every job is queued in. It leaves parsing to `config` and naming a job's lane to the
//! caller (`cli` maps an item's kind, priority, tenant and path onto indices here). Pure.

use std::num::NonZeroU32;

use crate::clock::Nanos;
use crate::limiter::glob_matches;

/// Where a job queues: its priority class, its tenant and its endpoint group, as indices
/// into the [`Policy`]'s lists. The default lane (all zero) is the only lane of a plain
/// scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lane {
    /// Index into [`Policy::classes`].
    pub class: u16,
    /// Index into [`Policy::tenants`] (0 is the first tenant, or "no tenant").
    pub tenant: u32,
    /// 0 for a job under no endpoint cap, `i + 1` for one under [`Policy::groups`]`[i]`.
    pub group: u16,
}

/// A priority class and its reserved share.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassSpec {
    /// The class's name, for reports.
    pub name: String,
    /// Its weight: while every class has work, class `c` gets `share_c / Σ share` of the
    /// dispatches; an idle class's share goes to the others in proportion to theirs.
    pub share: NonZeroU32,
}

/// A tenant: its weight in fair sharing and its concurrency cap.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSpec {
    /// The tenant's name (the work list's `tenant` field; empty for items without one).
    pub name: String,
    /// Weight in fair sharing among the tenants of a class (a tenant of weight 4 gets four
    /// times the dispatches of one of weight 1 while both have work).
    pub weight: NonZeroU32,
    /// Most of this tenant's jobs in flight at once, over every class.
    pub max_in_flight: Option<NonZeroU32>,
}

/// Jobs whose path matches a pattern, with a cap on how many are in flight at once.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSpec {
    /// The path pattern (`*` matches any run of characters), for reports.
    pub pattern: String,
    /// Most jobs of this group in flight at once.
    pub max_in_flight: NonZeroU32,
}

/// Everything the scheduler shares out. [`Policy::default`] is one class, one tenant and no
/// caps: plain strict priority.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Priority classes, at least one.
    pub classes: Vec<ClassSpec>,
    /// Tenants, at least one; a job's [`Lane::tenant`] indexes this list.
    pub tenants: Vec<TenantSpec>,
    /// Endpoint groups with in-flight caps; [`Lane::group`] `i + 1` is `groups[i]`.
    pub groups: Vec<GroupSpec>,
    /// A job that waited longer than this for its turn is reported as starved.
    pub starvation_after: Option<Nanos>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            classes: vec![ClassSpec {
                name: "default".to_string(),
                share: NonZeroU32::MIN,
            }],
            tenants: vec![TenantSpec {
                name: String::new(),
                weight: NonZeroU32::MIN,
                max_in_flight: None,
            }],
            groups: Vec::new(),
            starvation_after: None,
        }
    }
}

impl Policy {
    /// Whether this is the plain policy: one class, one tenant without a cap, no groups and
    /// no starvation guard. A plain scheduler is a single priority heap.
    pub fn is_plain(&self) -> bool {
        self.classes.len() <= 1
            && self.tenants.len() <= 1
            && self.tenants.iter().all(|t| t.max_in_flight.is_none())
            && self.groups.is_empty()
            && self.starvation_after.is_none()
    }

    /// The endpoint group of a request to `path`: the first group whose pattern matches
    /// (`*` matches any run of characters, as in the limiter's path scopes),
    /// as a [`Lane::group`] value (0 when none does).
    pub fn group_of(&self, path: &str) -> u16 {
        self.groups
            .iter()
            .position(|g| glob_matches(&g.pattern, path))
            .map_or(0, |i| u16::try_from(i + 1).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_falls_in_the_first_matching_group() {
        let cap = NonZeroU32::new(2).expect("non-zero");
        let policy = Policy {
            groups: vec![
                GroupSpec {
                    pattern: "/search*".into(),
                    max_in_flight: cap,
                },
                GroupSpec {
                    pattern: "/*".into(),
                    max_in_flight: cap,
                },
            ],
            ..Policy::default()
        };
        assert_eq!(policy.group_of("/search?q=a"), 1);
        assert_eq!(policy.group_of("/tickets/1"), 2);
        assert_eq!(policy.group_of("tickets"), 0);
        assert!(!policy.is_plain());
        assert!(Policy::default().is_plain());
    }
}
