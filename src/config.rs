//! The run's configuration: TOML in, a validated [`Config`] out.
//!
//! Owns every config key, its default and its check. Unknown keys are errors; every problem
//! is reported at once with `FILE:LINE:COL` and a hint, before anything is sent. Secrets stay
//! out of the config's values: header values may hold `${ENV_VAR}` references, resolved only
//! when the run starts ([`Api::resolve_headers`]) and never stored, logged or printed; the
//! snapshot kept in the store ([`Config::snapshot`]) redacts any literal header value.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::headers::Dialect;
use crate::limiter::budget::{Price, Pricing, micro_usd};
use crate::limiter::{Costs, LimitKind, LimitSpec, Scope, Unit};
use crate::retry::{OnQuota, RetryPolicy};
use crate::template::body::FactsPlan;
use crate::template::{Template, TemplateKind};

pub mod batch;
pub use batch::{BatchApi, BatchProvider};
pub mod redis_url;
pub mod scheduling;
pub use scheduling::{LaneError, Scheduling, Tenants};
pub mod secrets;
pub use secrets::Secrets;
pub mod steps;
pub use steps::{NextPage, Paginate, Plan, StepSpec};

/// The keys of each table, for hints on unknown keys.
const KEYS: &[(&str, &str)] = &[
    (
        "top level",
        "api, request, limits, workers, retry, limiter, kinds, pricing, classes, tiers, tenants, scheduler, batch",
    ),
    (
        "[api]",
        "base_url, headers, timeout, dialect, max_response_bytes",
    ),
    ("[request]", "method, path, body, headers, idempotency_key"),
    (
        "[[limits]]",
        "name, unit, rate, quota, per, burst, reset, pause_at, kind, tenant, path, learn",
    ),
    ("[kinds.NAME]", "cost, steps"),
    ("[[kinds.NAME.steps]]", steps::STEP_KEYS),
    ("[kinds.NAME.steps.paginate]", steps::PAGINATE_KEYS),
    (
        "[pricing.\"MODEL\"]",
        "input, output, batch_discount, batch_window",
    ),
    ("[workers]", "max, cap, endpoints"),
    ("[[classes]]", "name, share, kinds, min_priority"),
    ("[tiers.NAME]", "weight, max_in_flight, limits"),
    (
        "[tenants]",
        "default_tier, tier_field, tier_of, weight, max_in_flight",
    ),
    ("[scheduler]", "starvation_after"),
    (
        "[retry]",
        "max_attempts, backoff, max_backoff, max_wait, unreachable_after, quota_markers, on_quota, storm_share, rate_limit_statuses",
    ),
    ("[limiter]", "jitter, backend, namespace"),
    ("[batch]", batch::BATCH_KEYS),
];

/// Default time a provider's batch API takes at most (`batch_window`).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A model's batch API terms (`batch_discount`, `batch_window` in its `[pricing."MODEL"]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchTerms {
    /// Share of the price taken off through the batch API (0.5: half price).
    pub discount: f64,
    /// The longest a batch takes to complete (the provider's completion window).
    pub window: Duration,
}

/// Default delay variation allowed for (`[limiter] jitter`).
pub const DEFAULT_JITTER: Duration = Duration::from_millis(50);

/// One problem in a config file, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub col: usize,
    /// What is wrong, with the bad value in backticks.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "{path}: cannot read the config file\n  hint: pass an existing file with --config, or copy sample-config.toml to ratebound.toml"
    )]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// One or more keys are missing, unknown or invalid.
    #[error("{}", render_problems(path, problems))]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<ConfigProblem>,
    },
    /// A `${VAR}` reference names an unset environment variable.
    #[error(
        "{path}:{line}: environment variable `{var}` is not set\n  hint: export {var}=... before running; its value is read at run time and never stored"
    )]
    MissingEnv {
        /// The config path.
        path: PathBuf,
        /// The line of the reference.
        line: usize,
        /// The variable's name.
        var: String,
    },
}

fn render_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push_str("\nerror: ");
        }
        out.push_str(&format!(
            "{}:{}:{}: {}\n  hint: {}",
            path.display(),
            p.line,
            p.col,
            p.message,
            p.hint
        ));
    }
    out
}

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct Api {
    /// `https://...`, `http://...` or `mock://PROFILE?...` for the built-in mock.
    pub base_url: String,
    /// Header name and value template (may hold `${VAR}`), with the value's line.
    pub headers: Vec<(String, String, usize)>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// The rate-limit header dialect (`auto` detects it per response).
    pub dialect: Dialect,
    /// The largest response body read; a larger one fails its attempt (memory stays
    /// bounded by workers x this).
    pub max_response_bytes: u64,
}

/// Default `[api] max_response_bytes`: 10 MB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;

/// The request sent for each item of the work list.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// HTTP method, upper case.
    pub method: String,
    /// Path (and query) appended to the base URL; `{{field}}` values are percent-encoded.
    pub path: Template,
    /// JSON body template, if the request has a body.
    pub body: Option<Template>,
    /// What the estimate reads of every body `body` renders, when that can be worked out
    /// once from the template (see [`FactsPlan`]).
    pub body_facts: Option<FactsPlan>,
    /// Extra headers per request, `{{field}}` inserted raw.
    pub headers: Vec<(String, Template)>,
    /// Line of `body` in the config, for errors about placeholders.
    pub body_line: usize,
    /// Line of `path` in the config.
    pub path_line: usize,
    /// Send an `Idempotency-Key` derived from the run and the item's id, so a provider that
    /// honours it never executes a re-sent request twice.
    pub idempotency_key: bool,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The API to call.
    pub api: Api,
    /// The request template.
    pub request: RequestSpec,
    /// Rolling limits, in config order.
    pub limits: Vec<LimitSpec>,
    /// Most requests in flight at once (with `max = "auto"`, the most the pool may grow to).
    pub workers: usize,
    /// `[workers] max = "auto"`: size the pool from observed latency and the binding rate.
    pub auto_workers: bool,
    /// Priority classes, tenants, tiers, endpoint caps and the starvation guard.
    pub scheduling: Scheduling,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Extra costs per job kind (`[kinds.NAME] cost = { calls = 2 }`).
    pub kinds: BTreeMap<String, Costs>,
    /// The requests of each kind that defines `[[kinds.NAME.steps]]`.
    pub plans: BTreeMap<String, std::sync::Arc<Plan>>,
    /// Prices per model, for `usd` budgets.
    pub pricing: Pricing,
    /// Batch API terms per model, for models whose pricing gives a `batch_discount`.
    pub batch: BTreeMap<String, BatchTerms>,
    /// How unevenly requests may be delayed on their way to the provider; each bucket's
    /// burst is shrunk by this much so bunched-up arrivals still fit.
    pub jitter: Duration,
    /// Where limiter state is shared with other runners (`[limiter] backend`), if anywhere.
    pub backend: Option<SharedBackend>,
    /// `[batch]`: the provider's Batch API as a second lane, if configured.
    pub batch_api: Option<BatchApi>,
    source: String,
    /// Every header value and `base_url`: where a secret may stand.
    sites: Vec<secrets::Site>,
}

/// A shared limiter backend (`[limiter] backend = "redis://..."`).
#[derive(Debug, Clone)]
pub struct SharedBackend {
    /// The Redis URL as written (may hold `${VAR}`, resolved at run time and never stored).
    pub url: String,
    /// `[limiter] namespace`: the key prefix, overriding the one derived from the API.
    pub namespace: Option<String>,
    /// Line of `backend`, for errors.
    pub line: usize,
}

impl SharedBackend {
    /// The URL with `${VAR}` references resolved from the environment; never store it.
    pub fn resolve_url(&self, path: &Path) -> Result<String, ConfigError> {
        interpolate(&self.url, |var| std::env::var(var).ok()).map_err(|var| {
            ConfigError::MissingEnv {
                path: path.to_path_buf(),
                line: self.line,
                var,
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api: RawApi,
    request: RawRequest,
    #[serde(default)]
    limits: Vec<RawLimit>,
    #[serde(default)]
    workers: RawWorkers,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    limiter: RawLimiter,
    #[serde(default)]
    kinds: BTreeMap<String, RawKind>,
    #[serde(default)]
    pricing: BTreeMap<String, RawPrice>,
    #[serde(default)]
    classes: Vec<scheduling::RawClass>,
    #[serde(default)]
    tiers: BTreeMap<String, scheduling::RawTier>,
    #[serde(default)]
    tenants: scheduling::RawTenants,
    #[serde(default)]
    scheduler: scheduling::RawScheduler,
    batch: Option<batch::RawBatch>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimiter {
    jitter: Option<Spanned<String>>,
    backend: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: Spanned<String>,
    dialect: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_response_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    idempotency_key: Option<bool>,
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    body: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: Spanned<String>,
    unit: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    quota: Option<Spanned<f64>>,
    per: Option<Spanned<String>>,
    burst: Option<Spanned<f64>>,
    reset: Option<Spanned<String>>,
    pause_at: Option<Spanned<f64>>,
    kind: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    learn: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    #[serde(default)]
    cost: BTreeMap<String, Spanned<f64>>,
    #[serde(default)]
    steps: Vec<steps::RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: Spanned<f64>,
    output: Spanned<f64>,
    batch_discount: Option<Spanned<f64>>,
    batch_window: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    max: Option<Spanned<toml::Value>>,
    cap: Option<Spanned<i64>>,
    #[serde(default)]
    endpoints: BTreeMap<String, Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    max_wait: Option<Spanned<String>>,
    unreachable_after: Option<Spanned<String>>,
    quota_markers: Option<Vec<String>>,
    on_quota: Option<Spanned<String>>,
    storm_share: Option<Spanned<f64>>,
    rate_limit_statuses: Option<Spanned<Vec<i64>>>,
}

/// Collects problems while validating, turning spans into line and column.
struct Checker<'a> {
    source: &'a str,
    problems: Vec<ConfigProblem>,
    /// Every header value and `base_url` seen, for the snapshot and the run's secrets.
    sites: Vec<secrets::Site>,
    /// Each limit's unit with the span of its `unit` (or `name`), checked once the kinds
    /// and prices are known ([`check_units`]).
    units: Vec<(Unit, Range<usize>)>,
}

impl Checker<'_> {
    fn position(&self, span: Range<usize>) -> (usize, usize) {
        line_col(self.source, span.start)
    }

    /// Records a header value of `table` as a place a secret may stand, and checks that the
    /// name is an HTTP token and the value holds no control character (never showing it).
    fn header_site(&mut self, table: &str, name: &str, value: &Spanned<String>) {
        const TOKEN: &str = "!#$%&'*+-.^_`|~";
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || TOKEN.contains(c))
        {
            self.problem(
                value.span(),
                format!("{table} header name `{}` is not a valid HTTP header name", name.escape_debug()),
                "header names are letters, digits and `-` (e.g. `x-api-key`); no spaces, colons or quotes",
            );
        }
        if value
            .get_ref()
            .contains(|c: char| c.is_control() && c != '\t')
        {
            self.problem(
                value.span(),
                format!("{table} header `{name}` has a control character (CR, LF or similar) in its value"),
                "a header value is one line of text; remove the line break or escape",
            );
        }
        let line = self.position(value.span()).0;
        let site = secrets::Site::header(table, name, line, value.span(), value.get_ref());
        self.sites.push(site);
    }

    fn problem(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let (line, col) = self.position(span);
        self.problems.push(ConfigProblem {
            line,
            col,
            message: message.into(),
            hint: hint.into(),
        });
    }

    fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(
                    value.span(),
                    format!(
                        "`{key}` must be longer than zero, found `{}`",
                        value.get_ref()
                    ),
                    "write a duration such as `250ms`, `2s`, `15m`, `1h` or `1d`",
                );
                None
            }
            Err(e) => {
                self.problem(
                    value.span(),
                    format!("`{key}` is not a duration: `{}` ({e})", value.get_ref()),
                    "write a duration such as `250ms`, `2s`, `15m`, `1h` or `1d`",
                );
                None
            }
        }
    }

    fn positive(&mut self, value: &Spanned<i64>, key: &str, hint: &str) -> Option<NonZeroU64> {
        let n = *value.get_ref();
        match u64::try_from(n).ok().and_then(NonZeroU64::new) {
            Some(n) => Some(n),
            None => {
                self.problem(
                    value.span(),
                    format!("`{key}` must be a positive whole number, found `{n}`"),
                    hint,
                );
                None
            }
        }
    }

    /// An amount of `unit`: whole and positive, or for `usd` a positive number of dollars
    /// (kept as micro-dollars).
    fn amount(&mut self, value: &Spanned<f64>, key: &str, unit: &Unit) -> Option<NonZeroU64> {
        let v = *value.get_ref();
        let n = if *unit == Unit::Usd {
            NonZeroU64::new(micro_usd(v))
        } else if v.fract() == 0.0 && v > 0.0 && v < 1e18 {
            NonZeroU64::new(v as u64)
        } else {
            None
        };
        if n.is_none() {
            let what = if *unit == Unit::Usd {
                "a positive number of dollars"
            } else {
                "a positive whole number"
            };
            self.problem(
                value.span(),
                format!("`{key}` must be {what}, found `{v}`"),
                format!("a limit admits `rate` units per `per` (e.g. rate = 5000 and per = \"1m\") or `quota` units per calendar window; `{key}` counts {unit}"),
            );
        }
        n
    }

    /// A UTC time of day `HH:MM`, as the offset from midnight.
    fn time_of_day(&mut self, value: &Spanned<String>) -> Option<Duration> {
        let parsed = value.get_ref().split_once(':').and_then(|(h, m)| {
            let (h, m) = (h.trim().parse::<u64>().ok()?, m.trim().parse::<u64>().ok()?);
            (h < 24 && m < 60).then(|| Duration::from_secs(h * 3600 + m * 60))
        });
        if parsed.is_none() {
            self.problem(
                value.span(),
                format!(
                    "`reset` must be a UTC time of day `HH:MM`, found `{}`",
                    value.get_ref()
                ),
                "e.g. reset = \"00:00\" for quotas that reset at midnight UTC",
            );
        }
        parsed
    }

    fn template(
        &mut self,
        value: &Spanned<String>,
        kind: TemplateKind,
        key: &str,
    ) -> Option<Template> {
        match Template::parse(value.get_ref(), kind) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(
                    value.span(),
                    format!("`{key}` is not a valid template: {e}"),
                    "placeholders are written `{{field}}` with a work-list field name inside",
                );
                None
            }
        }
    }
}

/// The latest `estimate --start` taken: the plan's times (start plus a makespan of days or
/// quota windows) must stay printable as RFC 3339, which ends at year 9999.
pub const LATEST_START: Duration = Duration::from_secs(221_845_392_000); // 9000-01-01T00:00:00Z

/// Parses an `--start` time (RFC 3339, UTC), refusing times the plan could not represent.
///
/// # Errors
/// A message naming the problem and the accepted range.
///
/// ```
/// assert!(ratebound::config::parse_start("2026-12-04T10:00:00Z").is_ok());
/// assert!(ratebound::config::parse_start("9999-12-31T23:00:00Z").is_err());
/// ```
pub fn parse_start(text: &str) -> Result<std::time::SystemTime, String> {
    let at = humantime::parse_rfc3339_weak(text).map_err(|e| e.to_string())?;
    if at
        .duration_since(std::time::UNIX_EPOCH)
        .is_ok_and(|d| d < LATEST_START)
    {
        Ok(at)
    } else {
        Err(format!(
            "`{text}` is out of range: give a UTC time between 1970 and 9000, e.g. 2026-12-04T09:00:00Z"
        ))
    }
}

/// The 1-based line and column of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &source)
    }

    /// Validates config text; `path` is used in messages only.
    pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let raw: RawConfig = toml::from_str(source).map_err(|e| {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(source, s.start));
            invalid(vec![ConfigProblem {
                line,
                col,
                message: e.message().trim_end_matches('\n').replace('\n', " "),
                hint: parse_hint(e.message()),
            }])
        })?;
        let mut check = Checker {
            source,
            problems: Vec::new(),
            sites: Vec::new(),
            units: Vec::new(),
        };
        let api = check_api(&mut check, raw.api);
        let request = check_request(&mut check, raw.request);
        let limits = check_limits(&mut check, raw.limits);
        let (workers, auto_workers) = check_workers(&mut check, &raw.workers);
        let scheduling = scheduling::check_scheduling(
            &mut check,
            raw.classes,
            raw.tiers,
            raw.tenants,
            raw.scheduler,
            raw.workers.endpoints,
        );
        let retry = check_retry(&mut check, raw.retry);
        let (kinds, plans) = check_kinds(&mut check, raw.kinds);
        let batch = check_batch(&mut check, &raw.pricing);
        let pricing = check_pricing(&mut check, raw.pricing);
        check_units(&mut check, &kinds, &pricing, request.as_ref());
        let jitter = match &raw.limiter.jitter {
            Some(j)
                if j.get_ref().trim() == "0"
                    || humantime::parse_duration(j.get_ref()).is_ok_and(|d| d.is_zero()) =>
            {
                Some(Duration::ZERO)
            }
            Some(j) => check.duration(j, "jitter"),
            None => Some(DEFAULT_JITTER),
        };
        let backend = check_backend(&mut check, &raw.limiter);
        let batch_api = batch::check_batch_api(&mut check, raw.batch);
        if !check.problems.is_empty() {
            return Err(invalid(check.problems));
        }
        match (api, request, retry, jitter) {
            (Some(api), Some(request), Some(retry), Some(jitter)) => Ok(Config {
                path: path.to_path_buf(),
                api,
                request,
                limits,
                workers: workers.map_or(16, |w| usize::try_from(w.get()).unwrap_or(usize::MAX)),
                auto_workers,
                scheduling,
                retry,
                kinds,
                plans,
                pricing,
                batch,
                jitter,
                backend,
                batch_api,
                source: source.to_string(),
                sites: check.sites,
            }),
            _ => Err(invalid(Vec::new())),
        }
    }

    /// The config text as stored with a run: `${VAR}` references kept; every header value
    /// (`[api]`, `[request]`, steps) and `base_url` rewritten with its literal words, its
    /// `${VAR:-default}` defaults and its credential query values replaced by `<redacted>`
    /// (see [`secrets`]), whatever TOML spelling they were written in.
    pub fn snapshot(&self) -> String {
        let mut text = self.source.clone();
        let mut sites: Vec<&secrets::Site> = self
            .sites
            .iter()
            .filter(|s| s.redacted != s.value)
            .collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.span.start));
        for site in sites {
            if text.get(site.span.clone()).is_some() {
                text.replace_range(site.span.clone(), &secrets::toml_string(&site.redacted));
            }
        }
        if let Some(b) = &self.backend {
            let redacted = redis_url::redact(&b.url);
            if redacted != b.url && !b.url.contains("${") {
                let at = redacted.find("***").unwrap_or(0);
                let secret = &b.url[at..b.url.len() - (redacted.len() - at - 3)];
                text = redact_on_line(&text, b.line, secret);
            }
        }
        text
    }
}

fn redact_on_line(text: &str, line: usize, value: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line {
                l.replace(value, "<redacted>")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_hint(message: &str) -> String {
    if message.contains("unknown field") {
        let tables = KEYS
            .iter()
            .map(|(table, keys)| format!("{table}: {keys}"))
            .collect::<Vec<_>>()
            .join("; ");
        format!(
            "remove or rename the key; valid keys are {tables} (sample-config.toml documents each)"
        )
    } else if message.contains("missing field") {
        "add the missing key; sample-config.toml shows every key with an example".to_string()
    } else {
        "check the TOML syntax at that position (strings in quotes, one key per line)".to_string()
    }
}

/// `[limiter] backend` and `namespace`: memory (the default) or a Redis URL.
fn check_backend(check: &mut Checker<'_>, raw: &RawLimiter) -> Option<SharedBackend> {
    let hint = "write `backend = \"redis://127.0.0.1:6379/0\"` (a password as `${REDIS_PASSWORD}`), or leave it out (or `\"memory\"`) for one runner";
    let backend = match &raw.backend {
        Some(b) if b.get_ref() == "memory" => None,
        Some(b) => {
            let url = b.get_ref();
            let checked = if url.contains("${") {
                redis_url::check_url(&url.replace("${", "").replace('}', ""))
            } else {
                redis_url::check_url(url)
            };
            match checked {
                Ok(()) => Some(SharedBackend {
                    url: url.clone(),
                    namespace: None,
                    line: check.position(b.span()).0,
                }),
                Err(why) => {
                    check.problem(
                        b.span(),
                        format!(
                            "`backend` must be `memory` or a Redis URL, found `{}`: {why}",
                            redis_url::redact(url)
                        ),
                        hint,
                    );
                    return None;
                }
            }
        }
        None => None,
    };
    match (&raw.namespace, backend) {
        (Some(ns), _) if ns.get_ref().trim().is_empty() => {
            check.problem(
                ns.span(),
                "`namespace` must not be empty",
                "leave it out to derive it from the API's base URL and credentials",
            );
            None
        }
        (Some(ns), None) => {
            check.problem(
                ns.span(),
                "`namespace` needs a shared backend",
                "set `[limiter] backend = \"redis://...\"` too, or remove `namespace`",
            );
            None
        }
        (ns, Some(mut backend)) => {
            backend.namespace = ns.as_ref().map(|n| n.get_ref().clone());
            Some(backend)
        }
        (None, None) => None,
    }
}

fn check_api(check: &mut Checker<'_>, raw: RawApi) -> Option<Api> {
    let url = raw.base_url.get_ref();
    let shown = secrets::redact_url(url).0;
    let known = ["https://", "http://", "mock://"];
    if !known.iter().any(|scheme| url.starts_with(scheme)) {
        check.problem(
            raw.base_url.span(),
            format!("`base_url` must start with http://, https:// or mock://, found `{shown}`"),
            "for example `https://api.openai.com` or `mock://openai?rpm=600&tpm=100000`",
        );
    } else if let Some(why) = http_url_problem(url) {
        check.problem(
            raw.base_url.span(),
            format!("`base_url` is not a usable URL: {why}, found `{shown}`"),
            "write scheme, host and optional port (1-65535), e.g. `https://api.openai.com` or `http://127.0.0.1:8080`",
        );
    }
    let line = check.position(raw.base_url.span()).0;
    let site = secrets::Site::base_url(line, raw.base_url.span(), url);
    check.sites.push(site);
    let headers = raw
        .headers
        .into_iter()
        .map(|(name, value)| {
            check.header_site("[api]", &name, &value);
            let (line, _) = check.position(value.span());
            (name, value.into_inner(), line)
        })
        .collect();
    let timeout = match &raw.timeout {
        Some(t) => check.duration(t, "timeout")?,
        None => Duration::from_secs(60),
    };
    let dialect = match &raw.dialect {
        Some(d) => match d.get_ref().parse::<Dialect>() {
            Ok(dialect) => dialect,
            Err(e) => {
                check.problem(
                    d.span(),
                    format!("`dialect`: {e}"),
                    "leave it out or write \"auto\" to detect the dialect from each response",
                );
                Dialect::Auto
            }
        },
        None => Dialect::Auto,
    };
    let max_response_bytes = match &raw.max_response_bytes {
        Some(n) => check
            .positive(
                n,
                "max_response_bytes",
                "the largest response body in bytes, e.g. 10485760 (10 MB)",
            )?
            .get(),
        None => DEFAULT_MAX_RESPONSE_BYTES,
    };
    Some(Api {
        dialect,
        max_response_bytes,
        base_url: raw.base_url.into_inner(),
        headers,
        timeout,
    })
}

/// Why an `http(s)://` URL cannot be sent to (no host, a bad port, a space in the host...),
/// with `${VAR}` references read as plain text; `None` for a usable one or a `mock://` URL.
fn http_url_problem(url: &str) -> Option<String> {
    if url.starts_with("mock://") {
        return None;
    }
    let plain = interpolate(url, |_| Some("x".to_string())).unwrap_or_else(|_| url.to_string());
    match reqwest::Url::parse(&plain) {
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => Some("it has no host".into()),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

impl Checker<'_> {
    /// A request's `method`, upper case, or `default` when not given.
    fn method(&mut self, raw: Option<&Spanned<String>>, default: &str) -> String {
        let Some(m) = raw else {
            return default.to_string();
        };
        let method = m.get_ref().to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            self.problem(
                m.span(),
                format!("`method` must be an HTTP method, found `{}`", m.get_ref()),
                "use GET, POST, PUT, PATCH or DELETE",
            );
        }
        method
    }

    /// A request's `path` template and its line; it must start with `/`.
    fn request_path(&mut self, raw: &Spanned<String>) -> (Option<Template>, usize) {
        if !raw.get_ref().starts_with('/') {
            self.problem(
                raw.span(),
                format!("`path` must start with `/`, found `{}`", raw.get_ref()),
                "write the path relative to base_url, e.g. `/v1/chat/completions`",
            );
        }
        let line = self.position(raw.span()).0;
        (self.template(raw, TemplateKind::Path, "path"), line)
    }
}

fn check_request(check: &mut Checker<'_>, raw: RawRequest) -> Option<RequestSpec> {
    let method = check.method(raw.method.as_ref(), "POST");
    let (path, path_line) = check.request_path(&raw.path);
    let (body, body_line) = match &raw.body {
        Some(b) => (
            Some(check.template(b, TemplateKind::Json, "body")?),
            check.position(b.span()).0,
        ),
        None => (None, 0),
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        check.header_site("[request]", name, value);
        headers.push((
            name.clone(),
            check.template(value, TemplateKind::Text, "headers")?,
        ));
    }
    Some(RequestSpec {
        method,
        path: path?,
        body_facts: body.as_ref().and_then(FactsPlan::of),
        body,
        headers,
        body_line,
        path_line,
        idempotency_key: raw.idempotency_key.unwrap_or(false),
    })
}

/// `[workers] max` (a number or `"auto"`) and `cap`: the pool size, or with `auto` the
/// most it may grow to (`cap`, default 64).
fn check_workers(check: &mut Checker<'_>, raw: &RawWorkers) -> (Option<NonZeroU64>, bool) {
    const HINT: &str = "set `[workers] max` to the most requests in flight at once, e.g. 16, or to \"auto\" to size the pool from latency and the binding rate";
    let cap = raw.cap.as_ref().and_then(|c| {
        check.positive(
            c,
            "cap",
            "the most workers `max = \"auto\"` may use, e.g. cap = 64",
        )
    });
    let Some(max) = &raw.max else {
        return (cap, false);
    };
    match max.get_ref() {
        toml::Value::String(s) if s == "auto" => (cap.or(NonZeroU64::new(64)), true),
        toml::Value::Integer(n) => {
            if let Some(c) = &raw.cap {
                check.problem(
                    c.span(),
                    "`cap` applies only with `max = \"auto\"`",
                    "remove `cap`, or write max = \"auto\"",
                );
            }
            let n = Spanned::new(max.span(), *n);
            (check.positive(&n, "max", HINT), false)
        }
        other => {
            check.problem(
                max.span(),
                format!("`max` must be a positive whole number or \"auto\", found `{other}`"),
                HINT,
            );
            (None, false)
        }
    }
}

/// Checks the `[[limits]]` entries (top-level or a tier's), reporting every problem.
fn check_limits(check: &mut Checker<'_>, raw: Vec<RawLimit>) -> Vec<LimitSpec> {
    let mut limits: Vec<LimitSpec> = Vec::new();
    for l in raw {
        let name = l.name.get_ref().trim().to_string();
        if name.is_empty() || limits.iter().any(|other| other.name == name) {
            check.problem(
                l.name.span(),
                format!("limit name `{name}` is empty or used twice"),
                "give each [[limits]] entry its own name, e.g. `rpm` and `tpm`",
            );
        }
        let unit = l.unit.as_ref().map_or(Unit::Requests, |u| {
            if u.get_ref().trim().is_empty() {
                check.problem(
                    u.span(),
                    "`unit` is empty",
                    "use `requests`, `tokens`, `usd` or a custom unit name",
                );
            }
            Unit::from_name(u.get_ref().trim())
        });
        let span = l.unit.as_ref().map_or(l.name.span(), Spanned::span);
        check.units.push((unit.clone(), span));
        let scope = check_scope(check, &l);
        let per = l.per.as_ref().and_then(|p| check.duration(p, "per"));
        let Some(kind) = check_limit_kind(check, &l, &name, &unit, per) else {
            continue;
        };
        limits.push(LimitSpec {
            name,
            unit,
            kind,
            scope,
            learn: l.learn.unwrap_or(false),
        });
    }
    limits
}

/// The kind of limit `l` describes: a rolling `rate` per `per`, or a calendar `quota`,
/// with the keys each allows; `None` (and a problem reported) when it is neither or broken.
fn check_limit_kind(
    check: &mut Checker<'_>,
    l: &RawLimit,
    name: &str,
    unit: &Unit,
    per: Option<Duration>,
) -> Option<LimitKind> {
    match (&l.rate, &l.quota) {
        (Some(rate), None) => {
            let Some(per_value) = &l.per else {
                check.problem(
                    l.name.span(),
                    format!("limit `{name}` has `rate` but no `per`"),
                    "add the period, e.g. per = \"1m\"",
                );
                return None;
            };
            let rate = check.amount(rate, "rate", unit);
            let burst = l
                .burst
                .as_ref()
                .and_then(|b| check.amount(b, "burst", unit));
            if l.pause_at.is_some() || l.reset.is_some() {
                check.problem(
                    per_value.span(),
                    format!("limit `{name}`: `pause_at` and `reset` apply to quotas only"),
                    "use `quota` instead of `rate` for a calendar quota, or remove them",
                );
            }
            match (rate, per) {
                (Some(rate), Some(per)) => Some(LimitKind::Rolling { rate, per, burst }),
                _ => None,
            }
        }
        (None, Some(quota)) => {
            let limit = check.amount(quota, "quota", unit);
            let reset = l.reset.as_ref().and_then(|r| check.time_of_day(r));
            let pause_at = l.pause_at.as_ref().and_then(|p| {
                let f = *p.get_ref();
                if f > 0.0 && f <= 1.0 {
                    Some(f)
                } else {
                    check.problem(
                        p.span(),
                        format!("`pause_at` must be a fraction in (0, 1], found `{f}`"),
                        "e.g. pause_at = 0.8 pauses the run at 80% of the quota",
                    );
                    None
                }
            });
            if let Some(b) = &l.burst {
                check.problem(
                    b.span(),
                    format!("limit `{name}`: `burst` applies to rolling rates only"),
                    "remove `burst`; a quota admits up to `quota` per window",
                );
            }
            limit.map(|limit| LimitKind::Window {
                limit,
                per,
                reset: reset.unwrap_or_default(),
                pause_at,
            })
        }
        _ => {
            check.problem(
                l.name.span(),
                format!("limit `{name}` needs exactly one of `rate` (a rolling rate) or `quota` (a fixed calendar window)"),
                "write rate = 5000 and per = \"1m\" for a rate, or quota = 10000 and per = \"1d\" for a quota",
            );
            None
        }
    }
}

/// Units no limit may silently ignore: a custom unit some kind's `cost` consumes (else
/// `unit = "Tokens"` or `"request"` would limit nothing), and `usd` only with a price for
/// the request's model.
fn check_units(
    check: &mut Checker<'_>,
    kinds: &BTreeMap<String, Costs>,
    pricing: &Pricing,
    request: Option<&RequestSpec>,
) {
    let model = request
        .and_then(|r| r.body.as_ref())
        .and_then(Template::literal_model);
    for (unit, span) in std::mem::take(&mut check.units) {
        match &unit {
            Unit::Custom(name) if !kinds.values().any(|c| c.get(&unit) > 0) => {
                let near = ["requests", "tokens", "usd"]
                    .into_iter()
                    .find(|known| {
                        known.starts_with(&name.to_ascii_lowercase())
                            || name
                                .to_ascii_lowercase()
                                .starts_with(known.trim_end_matches('s'))
                    })
                    .map_or(String::new(), |k| format!("did you mean `{k}`? "));
                check.problem(
                    span,
                    format!("unit `{name}` is consumed by nothing: no request costs it, so this limit would limit nothing"),
                    format!("{near}units are `requests`, `tokens`, `usd` (lower case) or a custom unit that a `[kinds.NAME] cost = {{ {name} = 1 }}` charges"),
                );
            }
            Unit::Usd
                if pricing.is_empty()
                    || model.as_deref().is_some_and(|m| pricing.get(m).is_none()) =>
            {
                check.problem(
                    span,
                    format!("a `usd` limit needs a price for the model{}, and `[pricing]` has none", model.as_deref().map_or(String::new(), |m| format!(" `{m}`"))),
                    "add [pricing.\"MODEL\"] with input = and output = in dollars per 1M tokens, or remove the usd limit",
                );
            }
            _ => {}
        }
    }
}

fn check_scope(check: &mut Checker<'_>, l: &RawLimit) -> Scope {
    let given: Vec<(&Spanned<String>, Scope)> = [
        l.kind
            .as_ref()
            .map(|k| (k, Scope::Kind(k.get_ref().clone()))),
        l.tenant
            .as_ref()
            .map(|t| (t, Scope::Tenant(t.get_ref().clone()))),
        l.path
            .as_ref()
            .map(|p| (p, Scope::Path(p.get_ref().clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    match given.as_slice() {
        [] => Scope::All,
        [(_, scope)] => scope.clone(),
        [_, (second, _), ..] => {
            check.problem(
                second.span(),
                "a limit may be scoped by one of `kind`, `tenant` or `path`, not several",
                "split it into one [[limits]] entry per scope",
            );
            Scope::All
        }
    }
}

/// Each kind's extra costs, and the plans of the kinds with steps.
type Kinds = (
    BTreeMap<String, Costs>,
    BTreeMap<String, std::sync::Arc<Plan>>,
);

fn check_kinds(check: &mut Checker<'_>, raw: BTreeMap<String, RawKind>) -> Kinds {
    let mut plans = BTreeMap::new();
    let kinds = raw
        .into_iter()
        .map(|(name, kind)| {
            let mut costs = Costs::default();
            for (unit, amount) in &kind.cost {
                let unit = Unit::from_name(unit);
                if let Some(n) = check.amount(amount, "cost", &unit) {
                    costs.add(unit, n.get());
                }
            }
            if let Some(plan) = steps::check_plan(check, &name, kind.steps) {
                plans.insert(name.clone(), std::sync::Arc::new(plan));
            }
            (name, costs)
        })
        .collect();
    (kinds, plans)
}

fn check_pricing(check: &mut Checker<'_>, raw: BTreeMap<String, RawPrice>) -> Pricing {
    Pricing::new(raw.into_iter().filter_map(|(model, p)| {
        let mut ok = true;
        for value in [&p.input, &p.output] {
            if !(*value.get_ref() >= 0.0 && value.get_ref().is_finite()) {
                check.problem(value.span(), format!("a price must be a non-negative number of dollars per 1M tokens, found `{}`", value.get_ref()), "e.g. input = 0.15 and output = 0.60");
                ok = false;
            }
        }
        ok.then(|| {
            (
                model,
                Price {
                    input: *p.input.get_ref(),
                    output: *p.output.get_ref(),
                },
            )
        })
    }))
}

fn check_batch(
    check: &mut Checker<'_>,
    raw: &BTreeMap<String, RawPrice>,
) -> BTreeMap<String, BatchTerms> {
    let mut terms = BTreeMap::new();
    for (model, p) in raw {
        if let Some(w) = p
            .batch_window
            .as_ref()
            .filter(|_| p.batch_discount.is_none())
        {
            check.problem(
                w.span(),
                format!("`batch_window` is set for `{model}` but `batch_discount` is not"),
                "add batch_discount = 0.5 (the share the batch API takes off the price)",
            );
        }
        let Some(d) = &p.batch_discount else {
            continue;
        };
        let discount = *d.get_ref();
        if !(0.0..1.0).contains(&discount) {
            check.problem(
                d.span(),
                format!("`batch_discount` must be a share from 0 up to (not including) 1, found `{discount}`"),
                "e.g. batch_discount = 0.5 for half price through the provider's batch API",
            );
            continue;
        }
        let window = match &p.batch_window {
            Some(w) => check.duration(w, "batch_window"),
            None => Some(DEFAULT_BATCH_WINDOW),
        };
        if let Some(window) = window {
            terms.insert(model.clone(), BatchTerms { discount, window });
        }
    }
    terms
}

fn check_retry(check: &mut Checker<'_>, raw: RawRetry) -> Option<RetryPolicy> {
    let default = RetryPolicy::default();
    let max_attempts = match &raw.max_attempts {
        Some(n) => check
            .positive(
                n,
                "max_attempts",
                "the number of tries for transient failures, the first included, e.g. 6",
            )
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        None => Some(default.max_attempts),
    };
    let base = match &raw.backoff {
        Some(d) => check.duration(d, "backoff"),
        None => Some(default.base),
    };
    let max = match &raw.max_backoff {
        Some(d) => check.duration(d, "max_backoff"),
        None => Some(default.max),
    };
    let max_wait = match &raw.max_wait {
        Some(d) => check.duration(d, "max_wait"),
        None => Some(default.max_wait),
    };
    let unreachable_after = match &raw.unreachable_after {
        Some(d) => check.duration(d, "unreachable_after"),
        None => Some(default.unreachable_after),
    };
    let on_quota = match raw.on_quota.as_ref().map(|o| (o, o.get_ref().as_str())) {
        None | Some((_, "exit")) => Some(OnQuota::Exit),
        Some((_, "wait")) => Some(OnQuota::Wait),
        Some((o, other)) => {
            check.problem(o.span(), format!("`on_quota` must be `exit` or `wait`, found `{other}`"), "exit: stop with code 75 and say when to resume; wait: keep running and continue when the quota resets");
            None
        }
    };
    let storm_share = match &raw.storm_share {
        Some(f) if *f.get_ref() > 0.0 && *f.get_ref() <= 1.0 => Some(*f.get_ref()),
        Some(f) => {
            check.problem(
                f.span(),
                format!(
                    "`storm_share` must be a fraction in (0, 1], found `{}`",
                    f.get_ref()
                ),
                "e.g. 0.5: pause dispatch when half of the last 20 responses failed",
            );
            None
        }
        None => Some(default.storm_share),
    };
    let rate_limit_statuses = check_rate_limit_statuses(check, raw.rate_limit_statuses);
    Some(RetryPolicy {
        rate_limit_statuses: rate_limit_statuses?,
        max_attempts: max_attempts?,
        base: base?,
        max: max?,
        quota_markers: raw.quota_markers.unwrap_or(default.quota_markers),
        on_quota: on_quota?,
        storm_share: storm_share?,
        max_wait: max_wait?,
        unreachable_after: unreachable_after?,
    })
}

/// What a run reads from the environment: never stored, logged or printed.
pub struct Resolved {
    /// `[api] headers` with their values, for the HTTP client.
    pub headers: Vec<(String, String)>,
    /// Every secret value the config names, to mask in what comes back from the API.
    pub secrets: Secrets,
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Resolved({} headers, {:?})",
            self.headers.len(),
            self.secrets
        )
    }
}

impl Config {
    /// Resolves every `${VAR}` the run needs from the environment: `[api] headers` (returned
    /// for the HTTP client), and in place `base_url`, `[request] headers` and the steps'
    /// headers (`{{field}}` values are never expanded). Warns (tracing) about each literal
    /// secret in the config.
    ///
    /// # Errors
    /// [`ConfigError::MissingEnv`] for the first unset variable without a default.
    pub fn resolve_env(&mut self) -> Result<Resolved, ConfigError> {
        self.resolve_env_with(|var| std::env::var(var).ok())
    }

    /// [`Config::resolve_env`] with the environment given as `lookup`.
    pub fn resolve_env_with(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Resolved, ConfigError> {
        let mut secrets = Secrets::default();
        for site in &self.sites {
            if let Some(warning) = site.warning(&self.path) {
                tracing::warn!("{warning}");
            }
            for part in site.secret_parts(&lookup) {
                secrets.add(&part);
            }
        }
        let missing = |key: &str, var: String| ConfigError::MissingEnv {
            path: self.path.clone(),
            line: self
                .sites
                .iter()
                .find(|s| s.key == key)
                .map_or(0, |s| s.line),
            var,
        };
        if self.api.base_url.contains("${") {
            self.api.base_url = interpolate(&self.api.base_url, &lookup)
                .map_err(|var| missing("[api] base_url", var))?;
        }
        let headers = self.api.resolve_headers_with(&self.path, &lookup)?;
        for (name, template) in &mut self.request.headers {
            let key = format!("[request] headers.{name}");
            *template = template
                .map_literals(|text| interpolate(text, &lookup))
                .map_err(|var| missing(&key, var))?;
        }
        for (kind, plan) in &mut self.plans {
            let mut resolved = Plan::clone(plan);
            for step in &mut resolved.steps {
                for (name, template) in &mut step.headers {
                    let key = format!("[[kinds.{kind}.steps]] {} headers.{name}", step.name);
                    *template = template
                        .map_literals(|text| interpolate(text, &lookup))
                        .map_err(|var| missing(&key, var))?;
                }
            }
            *plan = std::sync::Arc::new(resolved);
        }
        Ok(Resolved { headers, secrets })
    }
}

/// `[retry] rate_limit_statuses`: 429 and 5xx statuses; 429 is always among them.
fn check_rate_limit_statuses(
    check: &mut Checker<'_>,
    raw: Option<Spanned<Vec<i64>>>,
) -> Option<Vec<u16>> {
    let Some(raw) = raw else {
        return Some(RetryPolicy::default().rate_limit_statuses);
    };
    let mut statuses = vec![429];
    for &status in raw.get_ref() {
        match u16::try_from(status) {
            Ok(s @ (429 | 500..=599)) => statuses.push(s),
            _ => {
                check.problem(
                    raw.span(),
                    format!("`rate_limit_statuses` takes 429 and 5xx statuses, found `{status}`"),
                    "e.g. [429, 503]: a 503 is then waited for like a 429 (nginx's limit_req answers 503)",
                );
                return None;
            }
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    Some(statuses)
}

impl Api {
    /// Resolves `${VAR}` references in header values from the environment.
    ///
    /// The values are returned for the HTTP client only; they must not be stored or logged.
    pub fn resolve_headers(&self, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
        self.resolve_headers_with(path, |var| std::env::var(var).ok())
    }

    fn resolve_headers_with(
        &self,
        path: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        self.headers
            .iter()
            .map(|(name, value, line)| {
                interpolate(value, &lookup)
                    .map(|v| (name.clone(), v))
                    .map_err(|var| ConfigError::MissingEnv {
                        path: path.to_path_buf(),
                        line: *line,
                        var,
                    })
            })
            .collect()
    }
}

/// Replaces each `${VAR}` in `text` with `lookup(VAR)` (`${VAR:-default}` falls back to
/// `default`); the error is the first unset name without a default.
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        let value = match reference.split_once(":-") {
            Some((var, default)) => lookup(var).unwrap_or_else(|| default.to_string()),
            None => lookup(reference).ok_or_else(|| reference.to_string())?,
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[api]
base_url = "mock://openai?rpm=600"
headers = { Authorization = "Bearer ${API_KEY}" }

[request]
path = "/v1/chat/completions"
body = '{"model": "m", "messages": [{"role": "user", "content": "{{prompt}}"}]}'

[[limits]]
name = "rpm"
unit = "requests"
rate = 600
per = "1m"

[[limits]]
name = "tpm"
unit = "tokens"
rate = 100000
per = "1m"

[workers]
max = 8
"#;

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match Config::parse(Path::new("c.toml"), text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_redis_backend_is_parsed_and_a_bad_one_points_at_its_line() {
        let text = format!(
            "{GOOD}\n[limiter]\nbackend = \"redis://:${{REDIS_PASSWORD}}@10.0.0.5:6379/2\"\nnamespace = \"team-a\"\n"
        );
        let config = Config::parse(Path::new("c.toml"), &text).unwrap();
        let backend = config.backend.expect("a shared backend");
        assert_eq!(backend.namespace.as_deref(), Some("team-a"));
        assert!(backend.url.contains("${REDIS_PASSWORD}"), "kept as written");
        assert!(
            Config::parse(Path::new("c.toml"), GOOD)
                .unwrap()
                .backend
                .is_none(),
            "memory by default"
        );

        let bad = format!("{GOOD}\n[limiter]\nbackend = \"http://:secret@redis:6379\"\n");
        let p = problems(&bad);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, bad.lines().count());
        assert!(p[0].message.contains("Redis URL"), "{}", p[0].message);
        assert!(!p[0].message.contains("secret"), "{}", p[0].message);
        assert!(p[0].hint.contains("redis://"), "{}", p[0].hint);

        let orphan = format!("{GOOD}\n[limiter]\nnamespace = \"x\"\n");
        assert!(problems(&orphan)[0].hint.contains("backend"));
    }

    #[test]
    fn a_good_config_is_accepted_with_defaults() {
        let config = Config::parse(Path::new("c.toml"), GOOD).unwrap();
        assert_eq!(config.limits.len(), 2);
        assert_eq!(config.limits[1].unit, Unit::Tokens);
        assert_eq!(
            config.limits[0].kind,
            LimitKind::Rolling {
                rate: NonZeroU64::new(600).unwrap(),
                per: Duration::from_secs(60),
                burst: None
            }
        );
        assert_eq!(config.workers, 8);
        assert_eq!(config.request.method, "POST");
        assert_eq!(config.api.timeout, Duration::from_secs(60));
        assert_eq!(config.request.body_line, 8);
    }

    #[test]
    fn unknown_key_names_line_and_lists_valid_keys() {
        let text = GOOD.replace("max = 8", "max = 8\nmaxx = 3");
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 24, "{p:?}");
        assert!(p[0].message.contains("maxx"), "{}", p[0].message);
        assert!(p[0].hint.contains("[workers]: max"), "{}", p[0].hint);
    }

    #[test]
    fn malformed_toml_points_at_the_position() {
        let p = problems("[api]\nbase_url = \"http://x\n");
        assert_eq!(p[0].line, 2, "{p:?}");
    }

    #[test]
    fn zero_and_negative_rates_are_refused_with_their_lines() {
        let text = GOOD
            .replace("rate = 600", "rate = 0")
            .replace("rate = 100000", "rate = -5");
        let p = problems(&text);
        assert_eq!(p.len(), 2, "every problem is reported: {p:?}");
        assert_eq!((p[0].line, p[1].line), (13, 19));
        assert!(p[1].message.contains("`-5`"));
    }

    #[test]
    fn bad_durations_are_refused() {
        let p =
            problems(&GOOD.replace("per = \"1m\"\n\n[[limits]]", "per = \"soon\"\n\n[[limits]]"));
        assert!(p[0].message.contains("`soon`"), "{p:?}");
        assert_eq!(p[0].line, 14);
    }

    #[test]
    fn snapshot_keeps_references_and_redacts_literal_secrets() {
        let config = Config::parse(Path::new("c.toml"), GOOD).unwrap();
        assert!(config.snapshot().contains("Bearer ${API_KEY}"));
        let literal = GOOD.replace("Bearer ${API_KEY}", "Bearer sk-live-123");
        let config = Config::parse(Path::new("c.toml"), &literal).unwrap();
        let snap = config.snapshot();
        assert!(!snap.contains("sk-live-123"), "{snap}");
        assert!(snap.contains("<redacted>"));
        let redis = format!("{GOOD}\n[limiter]\nbackend = \"redis://:hunter2@10.0.0.5:6379/0\"\n");
        let snap = Config::parse(Path::new("c.toml"), &redis)
            .unwrap()
            .snapshot();
        assert!(!snap.contains("hunter2"), "{snap}");
        assert!(
            snap.contains("redis://<redacted>@10.0.0.5:6379/0"),
            "{snap}"
        );
    }

    /// Each spelling of a literal secret the adversarial pass found in the stored snapshot.
    const SECRET_SPELLINGS: &[(&str, &str)] = &[
        (
            "[api] headers",
            "headers = { Authorization = \"Bearer sk-live-123\" }",
        ),
        ("escaped", "headers = { x-api-key = \"sk\\u002Dlive-123\" }"),
        ("literal string", "headers = { api-key = 'sk-live-123' }"),
        (
            "default",
            "headers = { api-key = \"${NOPE:-sk-live-123}\" }",
        ),
        (
            "multi-line",
            "headers = { api-key = \"\"\"sk-live-123\"\"\" }",
        ),
        (
            "base_url query",
            "base_url = \"https://a.example?key=sk-live-123\"",
        ),
    ];

    fn with_api_line(line: &str) -> String {
        let key = line.split('=').next().unwrap_or_default().trim();
        let kept: Vec<&str> = GOOD
            .lines()
            .filter(|l| !l.trim_start().starts_with(&format!("{key} ")))
            .collect();
        kept.join("\n")
            .replacen("[api]", &format!("[api]\n{line}"), 1)
    }

    #[test]
    fn issue_12_snapshot_never_holds_a_literal_secret_in_any_spelling() {
        let mut cases: Vec<(String, String)> = SECRET_SPELLINGS
            .iter()
            .map(|(name, line)| (name.to_string(), with_api_line(line)))
            .collect();
        cases.push((
            "[request] headers".into(),
            GOOD.replace(
                "[request]",
                "[request]\nheaders = { \"X-Item\" = \"{{id}}\", api-key = \"sk-live-123\" }",
            ),
        ));
        for (name, text) in cases {
            let config = Config::parse(Path::new("c.toml"), &text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            let snap = config.snapshot();
            assert!(!snap.contains("live-123"), "{name}:\n{snap}");
            assert!(snap.contains("<redacted>"), "{name}:\n{snap}");
            Config::parse(Path::new("c.toml"), &snap)
                .unwrap_or_else(|e| panic!("{name}: the snapshot parses: {e}\n{snap}"));
            assert!(
                config.sites.iter().any(|s| s.literal_secret),
                "{name}: warned about"
            );
        }
    }

    #[test]
    fn issue_12_request_headers_expand_env_references_but_never_work_list_values() {
        let text = GOOD.replace(
            "[request]",
            "[request]\nheaders = { api-key = \"${KEY}\", \"X-Item\" = \"{{id}}\" }",
        );
        let mut config = Config::parse(Path::new("c.toml"), &text).unwrap();
        let lookup = |var: &str| (var == "KEY" || var == "API_KEY").then(|| format!("v-{var}-1"));
        let resolved = config.resolve_env_with(lookup).unwrap();
        assert_eq!(resolved.headers[0].1, "Bearer v-API_KEY-1");
        let vars = serde_json::json!({"id": "${KEY}"});
        let vars = vars.as_object().unwrap();
        let rendered: Vec<String> = config
            .request
            .headers
            .iter()
            .map(|(_, t)| t.render(vars).unwrap())
            .collect();
        assert_eq!(rendered, ["${KEY}", "v-KEY-1"], "X-Item, then api-key");
        assert_eq!(
            resolved.secrets.mask("a v-KEY-1 b v-API_KEY-1"),
            "a <redacted> b <redacted>"
        );
        assert!(config.snapshot().contains("${KEY}"));
        let mut missing = Config::parse(Path::new("c.toml"), &text).unwrap();
        let err = missing.resolve_env_with(|_| None).unwrap_err().to_string();
        assert!(err.contains("c.toml:4") && err.contains("API_KEY"), "{err}");
    }

    #[test]
    fn interpolation_resolves_and_names_missing_variables() {
        let lookup = |v: &str| (v == "KEY").then(|| "s3cret".to_string());
        assert_eq!(
            interpolate("Bearer ${KEY}", lookup).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(interpolate("x ${NOPE} y", lookup).unwrap_err(), "NOPE");
        assert_eq!(interpolate("no refs", lookup).unwrap(), "no refs");
        assert_eq!(
            interpolate("${NOPE:-dev}/${KEY:-x}", lookup).unwrap(),
            "dev/s3cret"
        );
    }
    #[test]
    fn batch_terms_default_to_a_day_and_a_bad_discount_points_at_its_line() {
        let good =
            format!("{GOOD}\n[pricing.\"m\"]\ninput = 1.0\noutput = 2.0\nbatch_discount = 0.5\n");
        let config = Config::parse(Path::new("c.toml"), &good).unwrap();
        assert_eq!(
            config.batch.get("m"),
            Some(&BatchTerms {
                discount: 0.5,
                window: DEFAULT_BATCH_WINDOW
            })
        );
        let bad = good.replace("batch_discount = 0.5", "batch_discount = 1.5");
        let p = problems(&bad);
        assert!(p[0].message.contains("`1.5`"), "{p:?}");
        assert_eq!(p[0].line, bad.lines().count());
        let orphan = good.replace("batch_discount = 0.5", "batch_window = \"12h\"");
        assert!(problems(&orphan)[0].message.contains("batch_discount"));
    }
}
