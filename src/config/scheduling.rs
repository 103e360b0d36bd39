//! The scheduling keys of the config: priority classes, tenants and their tiers, endpoint
//! in-flight caps and the starvation guard.
//!
//! Owns parsing and checking `[[classes]]`, `[tiers.NAME]`, `[tenants]`, `[scheduler]` and
//! `[workers] endpoints`, and turning them, once the work list's tenants are known, into the
//! scheduler's [`Policy`] plus one set of limits per tenant of a tier (each tenant gets its
//! own buckets, scoped to it through the limiter's `tenant` scope). Every problem is
//! reported with its line and column like the rest of the config.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, RawLimit, check_limits};
use crate::clock::nanos;
use crate::limiter::{LimitSpec, Scope};
use crate::scheduler::{ClassSpec, GroupSpec, Lane, Policy, TenantSpec};

/// `[[classes]]` entries as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClass {
    name: Spanned<String>,
    share: Spanned<f64>,
    #[serde(default)]
    kinds: Vec<String>,
    min_priority: Option<i64>,
}

/// `[tiers.NAME]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    weight: Option<Spanned<i64>>,
    max_in_flight: Option<Spanned<i64>>,
    #[serde(default)]
    limits: Vec<RawLimit>,
}

/// `[tenants]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenants {
    default_tier: Option<Spanned<String>>,
    tier_field: Option<String>,
    #[serde(default)]
    tier_of: BTreeMap<String, Spanned<String>>,
    weight: Option<Spanned<i64>>,
    max_in_flight: Option<Spanned<i64>>,
}

/// `[scheduler]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScheduler {
    starvation_after: Option<Spanned<String>>,
}

/// A priority class and the items it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRule {
    /// The class's name and share.
    pub spec: ClassSpec,
    /// Items of these kinds belong to it.
    pub kinds: Vec<String>,
    /// Items of at least this priority belong to it.
    pub min_priority: Option<i64>,
}

impl ClassRule {
    fn catches_all(&self) -> bool {
        self.kinds.is_empty() && self.min_priority.is_none()
    }
}

/// A tier: the weight, cap and limits every tenant of it gets (each its own buckets).
#[derive(Clone, Debug, PartialEq)]
pub struct Tier {
    /// Fair-sharing weight of each tenant of the tier.
    pub weight: NonZeroU32,
    /// In-flight cap of each tenant of the tier.
    pub max_in_flight: Option<NonZeroU32>,
    /// Limits applied to each tenant separately.
    pub limits: Vec<LimitSpec>,
}

/// How items are shared out: classes, tenants, tiers, caps and the starvation guard.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduling {
    /// Priority classes in config order (the first that matches an item takes it).
    pub classes: Vec<ClassRule>,
    /// Tiers by name.
    pub tiers: BTreeMap<String, Tier>,
    /// Tier of tenants given no other.
    pub default_tier: Option<String>,
    /// Work-list field naming an item's tier.
    pub tier_field: Option<String>,
    /// Tier per tenant name.
    pub tier_of: BTreeMap<String, String>,
    /// Weight of a tenant without a tier.
    pub weight: NonZeroU32,
    /// In-flight cap of a tenant without a tier.
    pub max_in_flight: Option<NonZeroU32>,
    /// In-flight caps per path pattern, in config order.
    pub endpoints: Vec<GroupSpec>,
    /// Report jobs and tenants waiting longer than this.
    pub starvation_after: Option<Duration>,
}

/// Why an item cannot be placed in a lane.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaneError {
    /// No class takes the item.
    #[error("no priority class takes this item (kind {kind}, priority {priority})")]
    NoClass {
        /// The item's kind, in backticks, or `none`.
        kind: String,
        /// The item's priority.
        priority: i64,
    },
    /// The item's tier field names no tier.
    #[error(
        "field `{field}` names tier `{tier}`, which the config does not define (defined: {defined})"
    )]
    UnknownTier {
        /// The tier field's name.
        field: String,
        /// Its value.
        tier: String,
        /// The tiers defined.
        defined: String,
    },
}

/// The tenants of a work list, in order of first appearance, and the lanes they map to.
#[derive(Clone, Debug, Default)]
pub struct Tenants {
    /// Tenant names; index 0 is "no tenant" (the empty name).
    names: Vec<String>,
    /// The tier named by an item of each tenant (by `tier_field`), if any.
    field_tier: Vec<Option<String>>,
    index: HashMap<String, u32>,
}

impl Tenants {
    /// No tenants yet (only "no tenant").
    pub fn new() -> Tenants {
        Tenants {
            names: vec![String::new()],
            field_tier: vec![None],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    /// The index of `tenant`, adding it if new; `tier` is the item's tier field, if any.
    pub fn add(&mut self, tenant: Option<&str>, tier: Option<&str>) -> u32 {
        let name = tenant.unwrap_or_default();
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
                self.names.push(name.to_string());
                self.field_tier.push(None);
                self.index.insert(name.to_string(), i);
                i
            }
        };
        if let (Some(tier), Some(slot)) = (tier, self.field_tier.get_mut(i as usize)) {
            slot.get_or_insert_with(|| tier.to_string());
        }
        i
    }

    /// The index of `tenant`, if known.
    pub fn get(&self, tenant: Option<&str>) -> Option<u32> {
        self.index.get(tenant.unwrap_or_default()).copied()
    }

    /// Each tenant in index order with the tier its items named, "no tenant" first: what
    /// [`Tenants::add`] rebuilds the same indices from.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        (self.names.iter())
            .zip(&self.field_tier)
            .map(|(name, tier)| (name.as_str(), tier.as_deref()))
    }

    /// How many tenants, "no tenant" included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no tenants but "no tenant".
    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            classes: Vec::new(),
            tiers: BTreeMap::new(),
            default_tier: None,
            tier_field: None,
            tier_of: BTreeMap::new(),
            weight: NonZeroU32::MIN,
            max_in_flight: None,
            endpoints: Vec::new(),
            starvation_after: None,
        }
    }
}

impl Scheduling {
    /// Whether anything but plain priority is configured.
    pub fn is_configured(&self) -> bool {
        !self.classes.is_empty()
            || !self.tiers.is_empty()
            || self.max_in_flight.is_some()
            || self.weight.get() != 1
            || !self.endpoints.is_empty()
            || self.starvation_after.is_some()
    }

    /// The class taking an item of `kind` and `priority`: the first whose `kinds` holds the
    /// kind or whose `min_priority` the priority reaches, else the catch-all class.
    pub fn class_of(&self, kind: Option<&str>, priority: i64) -> Result<u16, LaneError> {
        if self.classes.is_empty() {
            return Ok(0);
        }
        let matches = |c: &ClassRule| {
            kind.is_some_and(|k| c.kinds.iter().any(|x| x == k))
                || c.min_priority.is_some_and(|m| priority >= m)
        };
        self.classes
            .iter()
            .position(matches)
            .or_else(|| self.classes.iter().position(ClassRule::catches_all))
            .map(|i| u16::try_from(i).unwrap_or(0))
            .ok_or_else(|| LaneError::NoClass {
                kind: kind.map_or_else(|| "none".to_string(), |k| format!("`{k}`")),
                priority,
            })
    }

    /// The tier an item's `tier_field` names, checked against the tiers defined.
    pub fn field_tier<'a>(
        &self,
        field: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<&'a str>, LaneError> {
        let Some(name) = &self.tier_field else {
            return Ok(None);
        };
        match field(name) {
            Some(tier) if !self.tiers.contains_key(tier) => Err(LaneError::UnknownTier {
                field: name.clone(),
                tier: tier.to_string(),
                defined: self
                    .tiers
                    .keys()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            other => Ok(other),
        }
    }

    /// The lane of a job: its class, tenant index and endpoint group.
    pub fn lane(&self, policy: &Policy, class: u16, tenant: u32, path: &str) -> Lane {
        Lane {
            class,
            tenant,
            group: policy.group_of(path),
        }
    }

    fn tier_name<'a>(&'a self, tenants: &'a Tenants, i: usize) -> Option<&'a str> {
        let name = tenants.names.get(i)?;
        if i == 0 && name.is_empty() {
            return None;
        }
        self.tier_of
            .get(name)
            .map(String::as_str)
            .or(tenants.field_tier.get(i).and_then(Option::as_deref))
            .or(self.default_tier.as_deref())
    }

    /// The scheduler policy for `tenants`, and the limits of each tenant of a tier: the
    /// tier's limits named `LIMIT@TENANT` and scoped to that tenant.
    pub fn policy(&self, tenants: &Tenants) -> (Policy, Vec<LimitSpec>) {
        let mut limits = Vec::new();
        let specs = (0..tenants.len())
            .map(|i| {
                let name = tenants.names[i].clone();
                match self.tier_name(tenants, i).and_then(|t| self.tiers.get(t)) {
                    Some(tier) => {
                        for l in &tier.limits {
                            let mut l = l.clone();
                            l.name = format!("{}@{name}", l.name);
                            l.scope = Scope::Tenant(name.clone());
                            limits.push(l);
                        }
                        TenantSpec {
                            name,
                            weight: tier.weight,
                            max_in_flight: tier.max_in_flight,
                        }
                    }
                    None => TenantSpec {
                        name,
                        weight: self.weight,
                        max_in_flight: self.max_in_flight,
                    },
                }
            })
            .collect();
        let classes = if self.classes.is_empty() {
            Policy::default().classes
        } else {
            self.classes.iter().map(|c| c.spec.clone()).collect()
        };
        let policy = Policy {
            classes,
            tenants: specs,
            groups: self.endpoints.clone(),
            starvation_after: self.starvation_after.map(nanos),
        };
        (policy, limits)
    }
}

fn weight(check: &mut Checker<'_>, value: Option<&Spanned<i64>>, key: &str) -> NonZeroU32 {
    value
        .and_then(|v| {
            check.positive(v, key, "a whole number of at least 1; a tenant of weight 4 gets four times the dispatches of one of weight 1")
        })
        .and_then(|n| u32::try_from(n.get()).ok())
        .and_then(NonZeroU32::new)
        .unwrap_or(NonZeroU32::MIN)
}

fn cap(check: &mut Checker<'_>, value: Option<&Spanned<i64>>) -> Option<NonZeroU32> {
    value
        .and_then(|v| {
            check.positive(
                v,
                "max_in_flight",
                "the most jobs in flight at once, e.g. max_in_flight = 2",
            )
        })
        .and_then(|n| u32::try_from(n.get()).ok())
        .and_then(NonZeroU32::new)
}

/// Checks the `[[classes]]` entries: unique names, positive shares, at most one
/// catch-all class.
fn check_classes(check: &mut Checker<'_>, classes: Vec<RawClass>) -> Vec<ClassRule> {
    let mut rules: Vec<ClassRule> = Vec::new();
    for c in classes {
        let name = c.name.get_ref().trim().to_string();
        if name.is_empty() || rules.iter().any(|r| r.spec.name == name) {
            check.problem(
                c.name.span(),
                format!("class name `{name}` is empty or used twice"),
                "give each [[classes]] entry its own name, e.g. `realtime`",
            );
        }
        let share = *c.share.get_ref();
        let weight = if share.is_finite() && share > 0.0 && share <= 1e6 {
            NonZeroU32::new((share * 1000.0).round() as u32)
        } else {
            None
        };
        let Some(weight) = weight else {
            check.problem(
                c.share.span(),
                format!("`share` must be a positive number, found `{share}`"),
                "shares are relative: e.g. 30, 50 and 20 give 30%, 50% and 20% while every class has work",
            );
            continue;
        };
        let rule = ClassRule {
            spec: ClassSpec {
                name,
                share: weight,
            },
            kinds: c.kinds,
            min_priority: c.min_priority,
        };
        if rule.catches_all() && rules.iter().any(ClassRule::catches_all) {
            check.problem(
                c.name.span(),
                format!("class `{}` has neither `kinds` nor `min_priority`, and another class already takes the remaining items", rule.spec.name),
                "give this class `kinds = [...]` or `min_priority = N`; at most one class takes the items no other class takes",
            );
        }
        rules.push(rule);
    }
    rules
}

/// Checks each `[tiers.NAME]` table: its weight, its cap and its unscoped limits.
fn check_tiers(
    check: &mut Checker<'_>,
    tiers: BTreeMap<String, RawTier>,
) -> BTreeMap<String, Tier> {
    let mut checked_tiers = BTreeMap::new();
    for (name, t) in tiers {
        for l in &t.limits {
            if let Some(scope) = [&l.kind, &l.tenant, &l.path].into_iter().flatten().next() {
                check.problem(
                    scope.span(),
                    format!("a limit of tier `{name}` applies to each tenant of the tier; it takes no `kind`, `tenant` or `path`"),
                    "remove the key, or write the limit as a top-level [[limits]] entry with that scope",
                );
            }
        }
        let tier = Tier {
            weight: weight(check, t.weight.as_ref(), "weight"),
            max_in_flight: cap(check, t.max_in_flight.as_ref()),
            limits: check_limits(check, t.limits),
        };
        checked_tiers.insert(name, tier);
    }
    checked_tiers
}

/// Checks that every tier `[tenants]` names (the default and each tenant's) is defined.
fn check_tier_names(
    check: &mut Checker<'_>,
    checked_tiers: &BTreeMap<String, Tier>,
    tenants: &RawTenants,
) {
    let defined = || {
        checked_tiers
            .keys()
            .map(|t| format!("`{t}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let known_tier = |check: &mut Checker<'_>, tier: &Spanned<String>| {
        if !checked_tiers.contains_key(tier.get_ref()) {
            let defined = defined();
            check.problem(
                tier.span(),
                format!("tier `{}` is not defined", tier.get_ref()),
                if defined.is_empty() {
                    "define it as a [tiers.NAME] table with its limits".to_string()
                } else {
                    format!("use one of {defined}, or add a [tiers.NAME] table")
                },
            );
        }
    };
    if let Some(t) = &tenants.default_tier {
        known_tier(check, t);
    }
    for t in tenants.tier_of.values() {
        known_tier(check, t);
    }
}

/// Checks the scheduling keys, reporting every problem to `check`.
pub(super) fn check_scheduling(
    check: &mut Checker<'_>,
    classes: Vec<RawClass>,
    tiers: BTreeMap<String, RawTier>,
    tenants: RawTenants,
    scheduler: RawScheduler,
    endpoints: BTreeMap<String, Spanned<i64>>,
) -> Scheduling {
    let rules = check_classes(check, classes);
    let checked_tiers = check_tiers(check, tiers);
    check_tier_names(check, &checked_tiers, &tenants);
    let starvation_after = scheduler
        .starvation_after
        .as_ref()
        .and_then(|d| check.duration(d, "starvation_after"));
    let endpoints = endpoints
        .into_iter()
        .filter_map(|(pattern, n)| {
            let max_in_flight = cap(check, Some(&n))?;
            Some(GroupSpec {
                pattern,
                max_in_flight,
            })
        })
        .collect();
    Scheduling {
        classes: rules,
        tiers: checked_tiers,
        default_tier: tenants.default_tier.map(Spanned::into_inner),
        tier_field: tenants.tier_field,
        tier_of: tenants
            .tier_of
            .into_iter()
            .map(|(k, v)| (k, v.into_inner()))
            .collect(),
        weight: weight(check, tenants.weight.as_ref(), "weight"),
        max_in_flight: cap(check, tenants.max_in_flight.as_ref()),
        endpoints,
        starvation_after,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError, ConfigProblem};
    use crate::limiter::LimitKind;

    const BASE: &str = r#"
[api]
base_url = "mock://openai"

[request]
path = "/v1/chat/completions"
"#;

    fn parse(extra: &str) -> Result<Config, Vec<ConfigProblem>> {
        match Config::parse(Path::new("c.toml"), &format!("{BASE}{extra}")) {
            Ok(c) => Ok(c),
            Err(ConfigError::Invalid { problems, .. }) => Err(problems),
            Err(e) => panic!("{e}"),
        }
    }

    const TIERS: &str = r#"
[tenants]
default_tier = "free"
tier_field = "plan"
tier_of = { acme = "pro" }

[tiers.free]
max_in_flight = 1
limits = [{ name = "rpm", rate = 3, per = "1m" }]

[tiers.pro]
weight = 4
[[tiers.pro.limits]]
name = "budget"
unit = "usd"
quota = 5.0
per = "1d"

[pricing."m"]
input = 0.15
output = 0.60
"#;

    #[test]
    fn each_tenant_of_a_tier_gets_its_own_scoped_buckets() {
        let config = parse(TIERS).unwrap();
        let s = &config.scheduling;
        let mut tenants = Tenants::new();
        tenants.add(Some("acme"), None);
        tenants.add(Some("bob"), Some("pro"));
        tenants.add(Some("cy"), None);
        let (policy, limits) = s.policy(&tenants);
        let names: Vec<&str> = limits.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["budget@acme", "budget@bob", "rpm@cy"]);
        assert_eq!(limits[2].scope, Scope::Tenant("cy".into()));
        assert!(matches!(limits[0].kind, LimitKind::Window { .. }));
        let weights: Vec<u32> = policy.tenants.iter().map(|t| t.weight.get()).collect();
        assert_eq!(weights, vec![1, 4, 4, 1], "no tenant, acme, bob, cy");
        assert_eq!(policy.tenants[3].max_in_flight, NonZeroU32::new(1));
    }

    #[test]
    fn unknown_tiers_and_scoped_tier_limits_point_at_their_lines() {
        let text = TIERS
            .replace("default_tier = \"free\"", "default_tier = \"gold\"")
            .replace("name = \"budget\"", "name = \"budget\"\ntenant = \"x\"");
        let p = parse(&text).unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        let gold = p.iter().find(|p| p.message.contains("`gold`")).unwrap();
        assert_eq!((gold.line, gold.col), (9, 16), "{gold:?}");
        assert!(gold.hint.contains("`free`, `pro`"), "{}", gold.hint);
        let scoped = p.iter().find(|p| p.message.contains("tier `pro`")).unwrap();
        assert_eq!(scoped.line, 21, "{scoped:?}");
    }

    #[test]
    fn classes_take_items_by_kind_then_priority_then_the_catch_all() {
        let config = parse(
            r#"
[[classes]]
name = "realtime"
share = 30
kinds = ["update"]
min_priority = 100
[[classes]]
name = "full"
share = 20
"#,
        )
        .unwrap();
        let s = &config.scheduling;
        assert_eq!(s.class_of(Some("update"), 0), Ok(0));
        assert_eq!(s.class_of(None, 100), Ok(0));
        assert_eq!(s.class_of(Some("sync"), 5), Ok(1));
        let p = parse("[[classes]]\nname = \"a\"\nshare = 0\nkinds = [\"x\"]\n").unwrap_err();
        assert_eq!((p[0].line, p[0].col), (9, 9), "{p:?}");
        let strict = parse("[[classes]]\nname = \"a\"\nshare = 1\nkinds = [\"x\"]\n").unwrap();
        assert!(matches!(
            strict.scheduling.class_of(Some("y"), 0),
            Err(LaneError::NoClass { .. })
        ));
    }

    #[test]
    fn workers_take_auto_with_a_cap_and_endpoint_caps() {
        let config =
            parse("[workers]\nmax = \"auto\"\ncap = 12\nendpoints = { \"/search*\" = 2 }\n")
                .unwrap();
        assert!(config.auto_workers);
        assert_eq!(config.workers, 12);
        assert_eq!(config.scheduling.endpoints[0].pattern, "/search*");
        let p = parse("[workers]\nmax = \"lots\"\n").unwrap_err();
        assert!(p[0].message.contains("\"auto\""), "{p:?}");
        assert_eq!(p[0].line, 8);
        let p = parse("[workers]\nmax = 4\ncap = 8\n").unwrap_err();
        assert!(p[0].message.contains("`cap`"), "{p:?}");
    }
}
