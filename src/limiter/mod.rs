//! The limiter: every configured limit as a bucket, and atomic admission across them.
//!
//! Owns the buckets and the decision "may this job start now, and if not, when". It does no
//! I/O and never sleeps: [`Limiter::reserve`] takes `now` and either admits the job across
//! every bucket in scope at once or returns [`NotUntil`], the exact instant at which all of
//! them would fit. [`Limiter::settle`] corrects an estimate to actual usage and
//! [`Limiter::cancel`] refunds a request that was never sent.
//!
//! Invariants: admission is all-or-nothing (no bucket is touched unless every bucket fits);
//! nothing admitted ever exceeds a bucket's rate; state can be saved as wall-clock instants
//! and restored after a restart, so a restart does not grant a fresh burst.
//!
//! Backends: this in-memory engine is the default and the reference; with `[limiter] backend
//! = "redis://..."` every admission is also taken from the shared backend
//! ([`crate::shared`], where the network code lives), which evaluates the same limits
//! ([`shared`]) for every runner sharing one API key. Everything under `limiter/` is pure.

pub mod budget;
pub mod gcra;
#[cfg(test)]
mod proptests;
pub mod reservation;
pub mod shared;
pub mod window;

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::clock::{Clock, Nanos, nanos, unix_ms};
pub use gcra::Gcra;
pub use reservation::Reservation;
use reservation::Taken;
pub use window::FixedWindow;

/// What a limit counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    /// One per HTTP request sent.
    Requests,
    /// Model tokens (estimated before sending, settled to the response's usage).
    Tokens,
    /// Money, in micro-dollars (see [`budget`]).
    Usd,
    /// Any other unit a job kind declares a cost in.
    Custom(Arc<str>),
}

impl Unit {
    /// Parses a unit name; anything but `requests` and `tokens` is a custom unit.
    pub fn from_name(name: &str) -> Unit {
        match name {
            "requests" => Unit::Requests,
            "tokens" => Unit::Tokens,
            "usd" => Unit::Usd,
            other => Unit::Custom(Arc::from(other)),
        }
    }

    /// The unit's name as written in the config.
    pub fn name(&self) -> &str {
        match self {
            Unit::Requests => "requests",
            Unit::Tokens => "tokens",
            Unit::Usd => "usd",
            Unit::Custom(name) => name,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The cost of one job: an amount per unit. Units not listed cost nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs(SmallVec<[(Unit, u64); 4]>);

impl Costs {
    /// The cost of one plain request carrying an estimated `tokens`.
    pub fn request(tokens: u64) -> Costs {
        Costs(smallvec::smallvec![
            (Unit::Requests, 1),
            (Unit::Tokens, tokens)
        ])
    }

    /// Adds `amount` of `unit` to the cost.
    pub fn add(&mut self, unit: Unit, amount: u64) {
        match self.0.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, have)) => *have += amount,
            None => self.0.push((unit, amount)),
        }
    }

    /// The amount of `unit` in this cost (0 if absent).
    pub fn get(&self, unit: &Unit) -> u64 {
        self.0
            .iter()
            .find(|(u, _)| u == unit)
            .map_or(0, |(_, amount)| *amount)
    }

    /// Each unit and its amount.
    pub fn iter(&self) -> impl Iterator<Item = &(Unit, u64)> {
        self.0.iter()
    }

    /// The same costs with `unit` replaced by `amount`.
    pub fn with(mut self, unit: Unit, amount: u64) -> Costs {
        match self.0.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, have)) => *have = amount,
            None => self.0.push((unit, amount)),
        }
        self
    }
}

/// How a limit counts.
#[derive(Clone, Debug, PartialEq)]
pub enum LimitKind {
    /// `rate` units per `per`, refilled continuously, holding at most `burst`.
    Rolling {
        /// Units per period; non-zero by construction.
        rate: NonZeroU64,
        /// The period the rate refers to.
        per: Duration,
        /// The most units admitted at once (defaults to `rate`: a full bucket).
        burst: Option<NonZeroU64>,
    },
    /// At most `limit` units per calendar window of `per` (fixed windows, quotas, budgets).
    Window {
        /// Units per window.
        limit: NonZeroU64,
        /// Window length; `None` for a limit on the whole run (a run budget).
        per: Option<Duration>,
        /// Offset of window boundaries from UTC multiples of `per` (e.g. a daily quota that
        /// resets at 07:00 UTC has 7 h).
        reset: Duration,
        /// Share of `limit` at which admission stops (a quota's `pause_at`), if any.
        pause_at: Option<f64>,
    },
}

/// Which jobs a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every job.
    All,
    /// Jobs of this kind.
    Kind(String),
    /// Jobs of this tenant.
    Tenant(String),
    /// Requests whose path matches this pattern (`*` matches any run of characters).
    Path(String),
}

/// What a job is, for matching limits' scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobAttrs<'a> {
    /// The job's kind, if any.
    pub kind: Option<&'a str>,
    /// The job's tenant, if any.
    pub tenant: Option<&'a str>,
    /// The request path.
    pub path: &'a str,
}

impl Scope {
    /// Whether a job with `attrs` falls under this scope.
    pub fn matches(&self, attrs: &JobAttrs<'_>) -> bool {
        match self {
            Scope::All => true,
            Scope::Kind(kind) => attrs.kind == Some(kind.as_str()),
            Scope::Tenant(tenant) => attrs.tenant == Some(tenant.as_str()),
            Scope::Path(pattern) => glob_matches(pattern, attrs.path),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// A configured limit.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSpec {
    /// The name the user gave it (`rpm`, `tpm`, `daily`...), shown in status and errors.
    pub name: String,
    /// What it counts.
    pub unit: Unit,
    /// How it counts.
    pub kind: LimitKind,
    /// Which jobs it applies to.
    pub scope: Scope,
    /// Whether provider feedback may raise it above the configured figure.
    pub learn: bool,
}

impl LimitSpec {
    /// A rolling limit of `rate` units per `per` on every job.
    pub fn rolling(name: &str, unit: Unit, rate: NonZeroU64, per: Duration) -> LimitSpec {
        LimitSpec {
            name: name.to_string(),
            unit,
            kind: LimitKind::Rolling {
                rate,
                per,
                burst: None,
            },
            scope: Scope::All,
            learn: false,
        }
    }

    /// A fixed-window limit of `limit` units per `per` (UTC-aligned) on every job.
    pub fn window(name: &str, unit: Unit, limit: NonZeroU64, per: Option<Duration>) -> LimitSpec {
        LimitSpec {
            name: name.to_string(),
            unit,
            kind: LimitKind::Window {
                limit,
                per,
                reset: Duration::ZERO,
                pause_at: None,
            },
            scope: Scope::All,
            learn: false,
        }
    }

    /// Units per second this limit sustains in the long run (0 for a run budget).
    pub fn rate_per_s(&self) -> f64 {
        match &self.kind {
            LimitKind::Rolling { rate, per, .. } => rate.get() as f64 / per.as_secs_f64(),
            LimitKind::Window { limit, per, .. } => {
                per.map_or(0.0, |p| limit.get() as f64 / p.as_secs_f64())
            }
        }
    }

    /// Units available at once at the start (a rolling limit's burst, a window's limit).
    pub fn initial(&self) -> u64 {
        match &self.kind {
            LimitKind::Rolling { rate, burst, .. } => burst.unwrap_or(*rate).get(),
            LimitKind::Window { limit, .. } => limit.get(),
        }
    }
}

/// The units a window of `limit` admits when admission stops at the share `pause_at`.
pub fn admit_up_to(limit: NonZeroU64, pause_at: Option<f64>) -> u64 {
    pause_at
        .map_or(limit.get(), |f| (limit.get() as f64 * f).floor() as u64)
        .min(limit.get())
}

/// "Not before this instant": the reservation did not fit now but will at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotUntil {
    /// The earliest instant at which every bucket fits the job.
    pub at: Nanos,
}

/// A job that no amount of waiting will admit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a job costing {cost} {unit} can never fit limit `{limit}`, which admits at most {max} {unit}{}", if *.spent { " and is spent for this run" } else { " at once" })]
pub struct NeverFits {
    /// The limit's name.
    pub limit: String,
    /// The unit of that limit.
    pub unit: Unit,
    /// What the job costs in that unit.
    pub cost: u64,
    /// The most that limit admits at once.
    pub max: u64,
    /// The limit never resets and too little is left (a spent run budget).
    pub spent: bool,
}

/// Why a reservation was not admitted now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Wait until the instant given, then try again.
    NotUntil(NotUntil),
    /// Never: the cost exceeds a bucket's burst, or a run budget is spent.
    Never(Box<NeverFits>),
}

/// One bucket's usage for status output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// The limit's name.
    pub name: String,
    /// Its unit.
    pub unit: String,
    /// Units in use in the current window.
    pub used: u64,
    /// Units the window holds.
    pub limit: u64,
    /// The window's length in seconds (0 for a limit on the whole run).
    pub window_s: f64,
}

/// A bucket's persisted state, in wall-clock terms so it survives a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketState {
    /// The limit's name.
    pub name: String,
    /// Rolling limits: unix ms at which the bucket is full again.
    #[serde(default)]
    pub full_at_unix_ms: u64,
    /// Window limits: unix ms when the count was saved.
    #[serde(default)]
    pub saved_at_unix_ms: u64,
    /// Window limits: units used in the window at that time.
    #[serde(default)]
    pub used: u64,
    /// A limit learned at run time (not in the config): its definition, so that a restart
    /// learns it again instead of searching anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<LearnedSpec>,
}

/// The name of the limit the rate search sets for a provider that sends no rate-limit
/// headers (in the limiter, status and the db).
pub const SEARCHED: &str = "searched-requests";

/// The definition of a limit learned from the provider, as saved with the limiter state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedSpec {
    /// Its unit's name.
    pub unit: String,
    /// Units per period (a window's limit).
    pub rate: u64,
    /// The period, in milliseconds.
    pub per_ms: u64,
    /// A rolling limit's burst, if not the rate.
    pub burst: Option<u64>,
    /// Counted in fixed windows rather than refilled continuously.
    pub window: bool,
}

impl LearnedSpec {
    /// The definition of `spec`; `None` for a limit on the whole run.
    pub fn of(spec: &LimitSpec) -> Option<LearnedSpec> {
        let (rate, per, burst, window) = match &spec.kind {
            LimitKind::Rolling { rate, per, burst } => {
                (rate, *per, burst.map(NonZeroU64::get), false)
            }
            LimitKind::Window { limit, per, .. } => (limit, (*per)?, None, true),
        };
        Some(LearnedSpec {
            unit: spec.unit.name().to_string(),
            rate: rate.get(),
            per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX),
            burst,
            window,
        })
    }

    /// The limit it defines, named `name`, following the provider both ways (`learn`).
    pub fn to_spec(&self, name: &str) -> Option<LimitSpec> {
        let rate = NonZeroU64::new(self.rate)?;
        let per = Duration::from_millis(self.per_ms.max(1));
        let unit = Unit::from_name(&self.unit);
        let mut spec = if self.window {
            LimitSpec::window(name, unit, rate, Some(per))
        } else {
            let mut spec = LimitSpec::rolling(name, unit, rate, per);
            if let LimitKind::Rolling { burst, .. } = &mut spec.kind {
                *burst = self.burst.and_then(NonZeroU64::new);
            }
            spec
        };
        spec.learn = true;
        Some(spec)
    }
}

/// The buckets a job's reservation touches, computed once per job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route(SmallVec<[u16; 8]>);

impl Route {
    /// A route through the first `n` buckets (all of a limiter with `n` limits).
    pub fn all(n: usize) -> Route {
        Route(
            (0..n)
                .map(|i| u16::try_from(i).unwrap_or(u16::MAX))
                .collect(),
        )
    }

    /// Adds the buckets of `other` (a job whose requests go to several endpoints).
    pub fn merge(&mut self, other: &Route) {
        for &i in &other.0 {
            if !self.0.contains(&i) {
                self.0.push(i);
            }
        }
    }

    /// Whether the route goes through the configured limit at `index`.
    pub fn contains(&self, index: usize) -> bool {
        self.0.iter().any(|&i| usize::from(i) == index)
    }
}

#[derive(Clone, Debug)]
enum Algo {
    Rolling(Gcra),
    Window(FixedWindow),
}

#[derive(Clone, Debug)]
struct Bucket {
    spec: LimitSpec,
    algo: Algo,
}

impl Bucket {
    fn earliest(&self, cost: u64, now: Nanos) -> Option<Nanos> {
        match &self.algo {
            Algo::Rolling(g) => g.earliest(cost, now),
            Algo::Window(w) => w.earliest(cost, now),
        }
    }

    fn never(&self, cost: u64) -> NeverFits {
        let (max, spent) = match &self.algo {
            Algo::Rolling(g) => (g.max_cost(), false),
            Algo::Window(w) => (w.capacity(), w.period().is_none()),
        };
        NeverFits {
            limit: self.spec.name.clone(),
            unit: self.spec.unit.clone(),
            cost,
            max,
            spent: spent && cost <= max,
        }
    }

    fn take(&mut self, cost: u64, now: Nanos) {
        match &mut self.algo {
            Algo::Rolling(g) => g.take(cost, now),
            Algo::Window(w) => w.take(cost, now),
        }
    }

    fn settle(
        &mut self,
        reserved: u64,
        used: u64,
        reserved_at: Nanos,
        slot_end: Nanos,
        mark: Nanos,
        now: Nanos,
    ) {
        match &mut self.algo {
            Algo::Rolling(g) if used < reserved => g.refund(reserved - used, slot_end, mark, now),
            Algo::Rolling(g) if used > reserved => g.charge(used - reserved, now),
            Algo::Window(w) if used < reserved => w.refund(reserved - used, reserved_at, now),
            Algo::Window(w) if used > reserved => w.charge(used - reserved, now),
            _ => {}
        }
    }

    fn observe(&mut self, remaining: u64, now: Nanos) {
        let learn = self.spec.learn;
        match &mut self.algo {
            Algo::Rolling(g) => g.observe(remaining, now, learn),
            Algo::Window(w) => {
                let used = w.capacity().saturating_sub(remaining);
                w.set_used(used, now, learn);
            }
        }
    }

    fn usage(&self, now: Nanos) -> BucketUsage {
        let (used, limit, window) = match &self.algo {
            Algo::Rolling(g) => (g.used(now).min(g.capacity()), g.capacity(), g.period()),
            Algo::Window(w) => (
                w.used(now),
                w.capacity(),
                w.period().map_or(Duration::ZERO, Duration::from_nanos),
            ),
        };
        BucketUsage {
            name: self.spec.name.clone(),
            unit: self.spec.unit.name().to_string(),
            used,
            limit,
            window_s: window.as_secs_f64(),
        }
    }
}

/// Every configured limit, admitting jobs atomically across all of those in scope.
#[derive(Clone, Debug)]
pub struct Limiter {
    buckets: Vec<Bucket>,
    /// Buckets learned from provider headers; they apply to every job.
    learned: Vec<u16>,
    /// How many leading buckets come from the config (routes index only these).
    configured: usize,
    /// Configured buckets scoped to one tenant, by tenant: with a tier's buckets for each of
    /// thousands of tenants, routing a job looks up its tenant's instead of matching all.
    by_tenant: Arc<std::collections::HashMap<String, SmallVec<[u16; 4]>>>,
    /// Every other configured bucket.
    not_per_tenant: Arc<[u16]>,
    /// Unix time of limiter time 0, for aligning windows to the calendar.
    origin_unix_ns: u128,
    /// Delay variation allowed for (see [`Limiter::with_jitter`]).
    jitter: Nanos,
}

impl Limiter {
    /// A limiter with one full bucket per spec, whose time 0 is the Unix epoch.
    pub fn new(specs: &[LimitSpec]) -> Limiter {
        let mut by_tenant: std::collections::HashMap<String, SmallVec<[u16; 4]>> =
            std::collections::HashMap::new();
        let mut rest = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            match &spec.scope {
                Scope::Tenant(tenant) => by_tenant.entry(tenant.clone()).or_default().push(i),
                _ => rest.push(i),
            }
        }
        let mut limiter = Limiter {
            buckets: Vec::new(),
            learned: Vec::new(),
            configured: specs.len(),
            by_tenant: Arc::new(by_tenant),
            not_per_tenant: rest.into(),
            origin_unix_ns: 0,
            jitter: 0,
        };
        limiter.buckets = specs.iter().map(|s| limiter.bucket(s)).collect();
        limiter
    }

    fn bucket(&self, spec: &LimitSpec) -> Bucket {
        let algo = match &spec.kind {
            LimitKind::Rolling { rate, per, burst } => Algo::Rolling(
                Gcra::new(*rate, *per, *burst).with_jitter(Duration::from_nanos(self.jitter)),
            ),
            LimitKind::Window {
                limit,
                per,
                reset,
                pause_at,
            } => {
                let period = per.map(nanos);
                // Boundaries fall where unix time − reset is a multiple of the period.
                let phase = period.map_or(0, |p| {
                    let p = u128::from(p.max(1));
                    let offset = (u128::from(nanos(*reset)) % p + p - self.origin_unix_ns % p) % p;
                    u64::try_from(offset).unwrap_or(0)
                });
                let admit = admit_up_to(*limit, *pause_at);
                Algo::Window(
                    FixedWindow::new(limit.get(), admit, period, phase).with_guard(self.jitter),
                )
            }
        };
        Bucket {
            spec: spec.clone(),
            algo,
        }
    }

    fn rebuild(mut self) -> Limiter {
        let specs: Vec<LimitSpec> = self.buckets.iter().map(|b| b.spec.clone()).collect();
        self.buckets = specs.iter().map(|s| self.bucket(s)).collect();
        self
    }

    /// Sets the wall time of limiter time 0, so windows align to the calendar. Buckets
    /// start fresh.
    pub fn with_origin(mut self, origin: SystemTime) -> Limiter {
        self.origin_unix_ns = origin
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.rebuild()
    }

    /// Shrinks every rolling bucket's burst by the delay variation `jitter` (see
    /// [`Gcra::with_jitter`]) and keeps the last `jitter` of every window free, so that
    /// requests bunched up or delayed on their way to the provider still fit its limits.
    /// Buckets start fresh.
    pub fn with_jitter(mut self, jitter: Duration) -> Limiter {
        self.jitter = nanos(jitter);
        self.rebuild()
    }

    /// The delay variation every rolling bucket's burst is shrunk by (see
    /// [`Limiter::with_jitter`]).
    pub fn jitter(&self) -> Duration {
        Duration::from_nanos(self.jitter)
    }

    /// The limits this limiter enforces, in config order.
    pub fn specs(&self) -> impl Iterator<Item = &LimitSpec> {
        self.buckets.iter().map(|b| &b.spec)
    }

    /// The buckets whose scope covers a job with `attrs`.
    pub fn route(&self, attrs: &JobAttrs<'_>) -> Route {
        let mut route: SmallVec<[u16; 8]> = self
            .not_per_tenant
            .iter()
            .copied()
            .filter(|&i| {
                self.buckets
                    .get(usize::from(i))
                    .is_some_and(|b| b.spec.scope.matches(attrs))
            })
            .collect();
        if let Some(own) = attrs.tenant.and_then(|t| self.by_tenant.get(t)) {
            route.extend(own.iter().copied());
            // Bucket order, as a plain scan would give.
            route.sort_unstable();
        }
        Route(route)
    }

    /// A route through every configured bucket (learned ones apply to every job anyway).
    pub fn route_all(&self) -> Route {
        Route::all(self.configured)
    }

    fn routed<'a>(&'a self, route: &'a Route) -> impl Iterator<Item = &'a Bucket> + 'a {
        route
            .0
            .iter()
            .chain(&self.learned)
            .filter_map(|&i| self.buckets.get(usize::from(i)))
    }

    /// The last instant a request admitted at `now` on `route` may still go out and count
    /// in the same calendar windows: the earliest end of a window on the route, less the
    /// jitter guard. `None` when no window on the route ever ends.
    pub fn window_end(&self, route: &Route, now: Nanos) -> Option<Nanos> {
        self.routed(route)
            .filter_map(|b| match &b.algo {
                Algo::Window(w) => w.next_start(now),
                Algo::Rolling(_) => None,
            })
            .min()
            .map(|end| end.saturating_sub(self.jitter))
    }

    /// Adds a limit learned from the provider's headers; it applies to every job from now on
    /// and can only add a constraint. Returns its index for [`Limiter::observe_at`] and
    /// [`Limiter::relearn`].
    pub fn learn(&mut self, spec: LimitSpec) -> usize {
        let bucket = self.bucket(&spec);
        self.buckets.push(bucket);
        let index = self.buckets.len() - 1;
        self.learned.push(u16::try_from(index).unwrap_or(u16::MAX));
        index
    }

    /// Replaces learned limit `index`'s rate, period and burst, keeping how much of it is
    /// used.
    pub fn relearn(
        &mut self,
        index: usize,
        rate: NonZeroU64,
        per: Duration,
        burst: Option<NonZeroU64>,
        now: Nanos,
    ) {
        let Some(b) = self.buckets.get(index) else {
            return;
        };
        let mut spec = b.spec.clone();
        let used = b.usage(now).used;
        spec.kind = LimitKind::Rolling { rate, per, burst };
        let mut bucket = self.bucket(&spec);
        if let Algo::Rolling(g) = &mut bucket.algo {
            g.observe(rate.get().saturating_sub(used), now, true);
        }
        self.buckets[index] = bucket;
    }

    /// Empties the bucket at `index` at `now` (nothing more until it refills).
    pub fn drain(&mut self, index: usize, now: Nanos) {
        if let Some(Bucket {
            algo: Algo::Rolling(g),
            ..
        }) = self.buckets.get_mut(index)
        {
            g.empty(now);
        }
    }

    /// Provider feedback on the bucket at `index`: `remaining` units are left now (see
    /// [`Limiter::observe`]).
    pub fn observe_at(&mut self, index: usize, remaining: u64, now: Nanos) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.observe(remaining, now);
        }
    }

    /// Provider feedback on the learned window at `index`: the provider counts `capacity`
    /// units per `period` in fixed windows, the next starting at `next_start`, and says
    /// `remaining` are left now. Nothing refills before that boundary, which a rolling
    /// bucket cannot express. Ignored unless the bucket is a window.
    pub fn observe_window(
        &mut self,
        index: usize,
        capacity: NonZeroU64,
        period: Duration,
        next_start: Nanos,
        remaining: u64,
        now: Nanos,
    ) {
        let guard = self.jitter;
        let Some(b) = self.buckets.get_mut(index) else {
            return;
        };
        if let Algo::Window(w) = &mut b.algo {
            let used = capacity.get().saturating_sub(remaining);
            w.realign(capacity.get(), nanos(period), next_start, used, guard, now);
            if let LimitKind::Window { limit, per, .. } = &mut b.spec.kind {
                *limit = capacity;
                *per = Some(period);
            }
        }
    }

    /// Checks that `costs` along `route` could ever be admitted.
    pub fn check_fits(&self, route: &Route, costs: &Costs) -> Result<(), NeverFits> {
        for b in self.routed(route) {
            let cost = costs.get(&b.spec.unit);
            if b.earliest(cost, 0).is_none() && cost > 0 {
                return Err(b.never(cost));
            }
        }
        Ok(())
    }

    /// Admits `costs` at `now` across every bucket on `route`, or says when it would fit.
    ///
    /// All-or-nothing: when any bucket is short, no bucket is charged.
    pub fn reserve(
        &mut self,
        route: &Route,
        costs: &Costs,
        now: Nanos,
    ) -> Result<Reservation, Denied> {
        let mut at = now;
        for b in self.routed(route) {
            let cost = costs.get(&b.spec.unit);
            match b.earliest(cost, now) {
                Some(t) => at = at.max(t),
                None => return Err(Denied::Never(Box::new(b.never(cost)))),
            }
        }
        if at > now {
            return Err(Denied::NotUntil(NotUntil {
                at: self.settle_instant(route, costs, at),
            }));
        }
        let mut taken = SmallVec::new();
        for &i in route.0.iter().chain(&self.learned) {
            if let Some(b) = self.buckets.get_mut(usize::from(i)) {
                let amount = costs.get(&b.spec.unit);
                b.take(amount, now);
                let (slot_end, mark) = match &b.algo {
                    Algo::Rolling(g) => (g.full_at(), g.refunded()),
                    Algo::Window(_) => (0, 0),
                };
                taken.push(Taken {
                    bucket: i,
                    amount,
                    slot_end,
                    mark,
                });
            }
        }
        Ok(Reservation { at: now, taken })
    }

    /// The first instant at or after `from` at which every bucket on `route` fits `costs`:
    /// each bucket's earliest time is rechecked at the latest of them until none moves it
    /// (a window boundary can fall inside another window's guard).
    fn settle_instant(&self, route: &Route, costs: &Costs, from: Nanos) -> Nanos {
        let mut at = from;
        for _ in 0..16 {
            let next = self
                .routed(route)
                .filter_map(|b| b.earliest(costs.get(&b.spec.unit), at))
                .fold(at, Nanos::max);
            if next == at {
                break;
            }
            at = next;
        }
        at
    }

    /// The limit that holds `costs` back longest at `now`, and when it lets them through
    /// (`None` if every limit on `route` admits them now).
    pub fn binding<'a>(
        &'a self,
        route: &'a Route,
        costs: &Costs,
        now: Nanos,
    ) -> Option<(&'a LimitSpec, Nanos)> {
        self.routed(route)
            .filter_map(|b| {
                let at = b
                    .earliest(costs.get(&b.spec.unit), now)
                    .unwrap_or(Nanos::MAX);
                (at > now).then_some((&b.spec, at))
            })
            .max_by_key(|(_, at)| *at)
    }

    /// Corrects a reservation to what the job really used: refunds an over-estimate, charges
    /// an under-estimate.
    pub fn settle(&mut self, reservation: Reservation, actual: &Costs, now: Nanos) {
        for t in &reservation.taken {
            if let Some(b) = self.buckets.get_mut(usize::from(t.bucket)) {
                let used = actual.get(&b.spec.unit);
                b.settle(t.amount, used, reservation.at, t.slot_end, t.mark, now);
            }
        }
    }

    /// Refunds a reservation whose request was never sent.
    pub fn cancel(&mut self, reservation: Reservation, now: Nanos) {
        self.settle(reservation, &Costs::default(), now);
    }

    /// Provider feedback on limit `name`: `remaining` units are left now. It only lowers
    /// what is available, unless the limit says `learn = true`, when it also raises it.
    pub fn observe(&mut self, name: &str, remaining: u64, now: Nanos) {
        for b in self.buckets.iter_mut().filter(|b| b.spec.name == name) {
            b.observe(remaining, now);
        }
    }

    /// Each bucket's usage at `now`, in config order.
    pub fn usage(&self, now: Nanos) -> Vec<BucketUsage> {
        self.buckets.iter().map(|b| b.usage(now)).collect()
    }

    /// Empties every rolling bucket at `now`: the safe start after a session that died
    /// without saving its final state (they refill within one period). Windows keep their
    /// counts: emptying a daily quota or a run budget would stop the run for a day or for
    /// good.
    pub fn assume_empty(&mut self, now: Nanos) {
        for b in &mut self.buckets {
            if let Algo::Rolling(g) = &mut b.algo {
                g.empty(now);
            }
        }
    }

    /// The buckets' state in wall-clock terms, to be restored after a restart.
    pub fn save(&self, clock: &impl Clock) -> Vec<BucketState> {
        let now = clock.now();
        let mut states: Vec<BucketState> = self
            .buckets
            .iter()
            .map(|b| match &b.algo {
                Algo::Rolling(g) => BucketState {
                    name: b.spec.name.clone(),
                    full_at_unix_ms: unix_ms(clock.wall_at(g.full_at())),
                    ..BucketState::default()
                },
                Algo::Window(w) => BucketState {
                    name: b.spec.name.clone(),
                    saved_at_unix_ms: unix_ms(clock.wall_at(now)),
                    used: w.used(now),
                    ..BucketState::default()
                },
            })
            .collect();
        for &i in &self.learned {
            if let (Some(state), Some(b)) = (
                states.get_mut(usize::from(i)),
                self.buckets.get(usize::from(i)),
            ) {
                state.learned = LearnedSpec::of(&b.spec);
            }
        }
        states
    }

    /// Restores saved state for buckets of the same name; others stay as they are. A window
    /// count is restored only if it was saved in the window that is current now.
    pub fn restore(&mut self, states: &[BucketState], clock: &impl Clock) {
        let now = clock.now();
        for b in &mut self.buckets {
            let Some(s) = states.iter().find(|s| s.name == b.spec.name) else {
                continue;
            };
            match &mut b.algo {
                Algo::Rolling(g) => {
                    let wall = UNIX_EPOCH + Duration::from_millis(s.full_at_unix_ms);
                    g.set_full_at(clock.at_wall(wall));
                }
                Algo::Window(w) => {
                    let saved = UNIX_EPOCH + Duration::from_millis(s.saved_at_unix_ms);
                    let age = clock.wall().duration_since(saved).unwrap_or_default();
                    w.restore(nanos(age), s.used, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const SEC: Nanos = 1_000_000_000;

    fn spec(name: &str, unit: Unit, rate: u64, per_s: u64) -> LimitSpec {
        LimitSpec::rolling(
            name,
            unit,
            NonZeroU64::new(rate).unwrap(),
            Duration::from_secs(per_s),
        )
    }

    fn reserve(limiter: &mut Limiter, costs: &Costs, now: Nanos) -> Result<Reservation, Denied> {
        let all = limiter.route_all();
        limiter.reserve(&all, costs, now)
    }

    fn rpm_tpm() -> Limiter {
        Limiter::new(&[
            spec("rpm", Unit::Requests, 60, 60),
            spec("tpm", Unit::Tokens, 1000, 60),
        ])
    }

    #[test]
    fn admission_is_all_or_nothing_across_buckets() {
        let mut limiter = rpm_tpm();
        let _ = reserve(&mut limiter, &Costs::request(900), 0).unwrap();
        // Requests fit, tokens do not: nothing may be charged.
        let denied = reserve(&mut limiter, &Costs::request(200), 0).unwrap_err();
        assert_eq!(denied, Denied::NotUntil(NotUntil { at: 6 * SEC }));
        let usage = limiter.usage(0);
        assert_eq!(
            usage[0].used, 1,
            "the denied job took no request: {usage:?}"
        );
        assert_eq!(usage[1].used, 900);
        assert!(reserve(&mut limiter, &Costs::request(200), 6 * SEC).is_ok());
    }

    #[test]
    fn settle_refunds_an_over_estimate_and_charges_an_under_estimate() {
        let mut limiter = rpm_tpm();
        let r = reserve(&mut limiter, &Costs::request(900), 0).unwrap();
        limiter.settle(r, &Costs::request(100), 0);
        assert_eq!(limiter.usage(0)[1].used, 100);
        let r = reserve(&mut limiter, &Costs::request(100), 0).unwrap();
        limiter.settle(r, &Costs::request(400), 0);
        assert_eq!(limiter.usage(0)[1].used, 100 + 400);
    }

    #[test]
    fn cancel_refunds_everything() {
        let mut limiter = rpm_tpm();
        let r = reserve(&mut limiter, &Costs::request(500), 0).unwrap();
        limiter.cancel(r, 0);
        assert!(limiter.usage(0).iter().all(|u| u.used == 0));
    }

    #[test]
    fn a_job_larger_than_a_bucket_never_fits() {
        let mut limiter = rpm_tpm();
        let denied = reserve(&mut limiter, &Costs::request(1001), 0).unwrap_err();
        assert!(
            matches!(denied, Denied::Never(ref n) if n.limit == "tpm"),
            "{denied:?}"
        );
        assert!(
            limiter
                .check_fits(&limiter.route_all(), &Costs::request(1000))
                .is_ok()
        );
    }

    #[test]
    fn saved_state_survives_a_restart_without_a_fresh_burst() {
        let clock = ManualClock::at_2026();
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        for _ in 0..10 {
            let _ = reserve(&mut limiter, &Costs::request(0), clock.now()).unwrap();
        }
        let saved = limiter.save(&clock);
        // A new process: its own clock starts at 0 but wall time has moved on by 200 ms.
        let later = ManualClock::new(clock.wall() + Duration::from_millis(200));
        let mut restarted = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        restarted.restore(&saved, &later);
        assert_eq!(restarted.usage(later.now())[0].used, 8);
        for _ in 0..2 {
            let _ = reserve(&mut restarted, &Costs::request(0), later.now()).unwrap();
        }
        assert!(reserve(&mut restarted, &Costs::request(0), later.now()).is_err());
    }

    #[test]
    fn a_window_count_survives_a_restart_inside_the_same_window_only() {
        let clock = ManualClock::at_2026();
        let spec = LimitSpec::window(
            "x",
            Unit::from_name("calls"),
            NonZeroU64::new(180).unwrap(),
            Some(Duration::from_secs(900)),
        );
        let mut limiter = Limiter::new(std::slice::from_ref(&spec)).with_origin(clock.wall_at(0));
        let calls = Costs::default().with(Unit::from_name("calls"), 4);
        for _ in 0..40 {
            let _ = reserve(&mut limiter, &calls, clock.now()).unwrap();
        }
        let saved = limiter.save(&clock);
        // 20 s later, a new process with its own clock: 160 of 180 calls are still used.
        let later = ManualClock::new(clock.wall() + Duration::from_secs(20));
        let mut restarted = Limiter::new(std::slice::from_ref(&spec)).with_origin(later.wall_at(0));
        restarted.restore(&saved, &later);
        assert_eq!(restarted.usage(later.now())[0].used, 160);
        for _ in 0..5 {
            let _ = reserve(&mut restarted, &calls, later.now()).unwrap();
        }
        let next = 880 * SEC; // the window began at 2026-01-01T00:00:00Z; 20 s have passed
        assert_eq!(
            reserve(&mut restarted, &calls, later.now()).unwrap_err(),
            Denied::NotUntil(NotUntil { at: next })
        );
        // After the window's end, a saved count is stale and ignored.
        let next_window = ManualClock::new(clock.wall() + Duration::from_secs(901));
        let mut fresh =
            Limiter::new(std::slice::from_ref(&spec)).with_origin(next_window.wall_at(0));
        fresh.restore(&saved, &next_window);
        assert_eq!(fresh.usage(next_window.now())[0].used, 0);
    }

    #[test]
    fn scopes_route_jobs_to_their_limits_only() {
        let mut free = LimitSpec::rolling(
            "free-rpm",
            Unit::Requests,
            NonZeroU64::new(3).unwrap(),
            Duration::from_secs(60),
        );
        free.scope = Scope::Tenant("free".into());
        let mut rewards = LimitSpec::window(
            "reward-calls",
            Unit::from_name("calls"),
            NonZeroU64::new(8).unwrap(),
            Some(Duration::from_secs(900)),
        );
        rewards.scope = Scope::Kind("reward".into());
        let mut chat = LimitSpec::rolling(
            "chat",
            Unit::Requests,
            NonZeroU64::new(100).unwrap(),
            Duration::from_secs(1),
        );
        chat.scope = Scope::Path("/v1/chat/*".into());
        let mut pro = free.clone();
        pro.scope = Scope::Tenant("pro".into());
        let limiter = Limiter::new(&[free, rewards, chat, pro]);
        let route = |kind, tenant, path| limiter.route(&JobAttrs { kind, tenant, path });
        // A tenant's own buckets join the others in bucket order.
        assert_eq!(
            route(None, Some("pro"), "/v1/chat/x"),
            Route(smallvec::smallvec![2, 3])
        );
        assert_eq!(
            route(None, Some("free"), "/v1/chat/completions"),
            Route(smallvec::smallvec![0, 2])
        );
        assert_eq!(
            route(Some("reward"), Some("pro"), "/2/tweets"),
            Route(smallvec::smallvec![1, 3])
        );
        assert_eq!(route(None, None, "/v1/embeddings"), Route(SmallVec::new()));
    }

    #[test]
    fn glob_patterns_match_like_shell_stars() {
        assert!(glob_matches("/v1/chat/*", "/v1/chat/completions"));
        assert!(glob_matches("/v1/*/completions", "/v1/chat/completions"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("/v1/chat/*", "/v1/embeddings"));
        assert!(!glob_matches("/a", "/ab"));
        assert!(glob_matches("/a*b*c", "/a1b2c"));
    }

    #[test]
    fn observe_only_lowers_availability_unless_learning() {
        let mut limiter = Limiter::new(&[spec("rpm", Unit::Requests, 60, 60)]);
        limiter.observe("rpm", 10, 0);
        assert_eq!(
            limiter.usage(0)[0].used,
            50,
            "the provider says 10 are left"
        );
        limiter.observe("rpm", 60, 0);
        assert_eq!(
            limiter.usage(0)[0].used,
            50,
            "feedback never raises a configured limit"
        );
        let mut learning = spec("rpm", Unit::Requests, 60, 60);
        learning.learn = true;
        let mut limiter = Limiter::new(&[learning]);
        limiter.observe("rpm", 10, 0);
        limiter.observe("rpm", 40, 0);
        assert_eq!(
            limiter.usage(0)[0].used,
            20,
            "a learning limit follows the provider"
        );
    }

    #[test]
    fn an_emptied_limiter_admits_only_what_refills() {
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 10, 1)]);
        limiter.assume_empty(5 * SEC);
        let denied = reserve(&mut limiter, &Costs::request(0), 5 * SEC).unwrap_err();
        assert_eq!(
            denied,
            Denied::NotUntil(NotUntil {
                at: 5 * SEC + SEC / 10
            })
        );
    }

    #[test]
    fn saturated_limiter_admits_exactly_the_rate() {
        let mut limiter = Limiter::new(&[spec("rps", Unit::Requests, 100, 1)]);
        let mut now = 0;
        let mut admitted = 0u64;
        while now <= 60 * SEC {
            match reserve(&mut limiter, &Costs::request(0), now) {
                Ok(_) => admitted += 1,
                Err(Denied::NotUntil(n)) => now = n.at,
                Err(Denied::Never(n)) => panic!("{n}"),
            }
        }
        // A full bucket of 100, then 100 per second for 60 s.
        assert_eq!(admitted, 100 + 6000);
    }
}
