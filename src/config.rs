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
use crate::template::{Template, TemplateKind};

/// The keys of each table, for hints on unknown keys.
const KEYS: &[(&str, &str)] = &[
    (
        "top level",
        "api, request, limits, workers, retry, limiter, kinds, pricing",
    ),
    ("[api]", "base_url, headers, timeout, dialect"),
    ("[request]", "method, path, body, headers, idempotency_key"),
    (
        "[[limits]]",
        "name, unit, rate, quota, per, burst, reset, pause_at, kind, tenant, path, learn",
    ),
    ("[kinds.NAME]", "cost"),
    (
        "[pricing.\"MODEL\"]",
        "input, output, batch_discount, batch_window",
    ),
    ("[workers]", "max"),
    (
        "[retry]",
        "max_attempts, backoff, max_backoff, quota_markers, on_quota, storm_share",
    ),
    ("[limiter]", "jitter"),
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
}

/// The request sent for each item of the work list.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// HTTP method, upper case.
    pub method: String,
    /// Path (and query) appended to the base URL; `{{field}}` values are percent-encoded.
    pub path: Template,
    /// JSON body template, if the request has a body.
    pub body: Option<Template>,
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
    /// Most requests in flight at once.
    pub workers: usize,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Extra costs per job kind (`[kinds.NAME] cost = { calls = 2 }`).
    pub kinds: BTreeMap<String, Costs>,
    /// Prices per model, for `usd` budgets.
    pub pricing: Pricing,
    /// Batch API terms per model, for models whose pricing gives a `batch_discount`.
    pub batch: BTreeMap<String, BatchTerms>,
    /// How unevenly requests may be delayed on their way to the provider; each bucket's
    /// burst is shrunk by this much so bunched-up arrivals still fit.
    pub jitter: Duration,
    source: String,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimiter {
    jitter: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    base_url: Spanned<String>,
    dialect: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    timeout: Option<Spanned<String>>,
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
    max: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<Spanned<i64>>,
    backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    quota_markers: Option<Vec<String>>,
    on_quota: Option<Spanned<String>>,
    storm_share: Option<Spanned<f64>>,
}

/// Collects problems while validating, turning spans into line and column.
struct Checker<'a> {
    source: &'a str,
    problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    fn position(&self, span: Range<usize>) -> (usize, usize) {
        line_col(self.source, span.start)
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
        };
        let api = check_api(&mut check, raw.api);
        let request = check_request(&mut check, raw.request);
        let limits = check_limits(&mut check, raw.limits);
        let workers = raw.workers.max.as_ref().and_then(|m| {
            check.positive(
                m,
                "max",
                "set `[workers] max` to the most requests in flight at once, e.g. 16",
            )
        });
        let retry = check_retry(&mut check, raw.retry);
        let kinds = check_kinds(&mut check, raw.kinds);
        let batch = check_batch(&mut check, &raw.pricing);
        let pricing = check_pricing(&mut check, raw.pricing);
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
                retry,
                kinds,
                pricing,
                batch,
                jitter,
                source: source.to_string(),
            }),
            _ => Err(invalid(Vec::new())),
        }
    }

    /// The config text as stored with a run: `${VAR}` references kept, literal header values
    /// (which may be secrets) replaced by `"<redacted>"`.
    pub fn snapshot(&self) -> String {
        let mut text = self.source.clone();
        for (_, value, line) in &self.api.headers {
            if !value.contains("${") && !value.is_empty() {
                text = redact_on_line(&text, *line, value);
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

fn check_api(check: &mut Checker<'_>, raw: RawApi) -> Option<Api> {
    let url = raw.base_url.get_ref();
    let known = ["https://", "http://", "mock://"];
    if !known.iter().any(|scheme| url.starts_with(scheme)) {
        check.problem(
            raw.base_url.span(),
            format!("`base_url` must start with http://, https:// or mock://, found `{url}`"),
            "for example `https://api.openai.com` or `mock://openai?rpm=600&tpm=100000`",
        );
    }
    let headers = raw
        .headers
        .into_iter()
        .map(|(name, value)| {
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
    Some(Api {
        dialect,
        base_url: raw.base_url.into_inner(),
        headers,
        timeout,
    })
}

fn check_request(check: &mut Checker<'_>, raw: RawRequest) -> Option<RequestSpec> {
    let method = raw
        .method
        .as_ref()
        .map_or_else(|| "POST".to_string(), |m| m.get_ref().to_ascii_uppercase());
    if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
        if let Some(m) = &raw.method {
            check.problem(
                m.span(),
                format!("`method` must be an HTTP method, found `{}`", m.get_ref()),
                "use GET, POST, PUT, PATCH or DELETE",
            );
        }
    }
    if !raw.path.get_ref().starts_with('/') {
        check.problem(
            raw.path.span(),
            format!("`path` must start with `/`, found `{}`", raw.path.get_ref()),
            "write the path relative to base_url, e.g. `/v1/chat/completions`",
        );
    }
    let path_line = check.position(raw.path.span()).0;
    let path = check.template(&raw.path, TemplateKind::Path, "path");
    let (body, body_line) = match &raw.body {
        Some(b) => (
            Some(check.template(b, TemplateKind::Json, "body")?),
            check.position(b.span()).0,
        ),
        None => (None, 0),
    };
    let mut headers = Vec::new();
    for (name, value) in &raw.headers {
        headers.push((
            name.clone(),
            check.template(value, TemplateKind::Text, "headers")?,
        ));
    }
    Some(RequestSpec {
        method,
        path: path?,
        body,
        headers,
        body_line,
        path_line,
        idempotency_key: raw.idempotency_key.unwrap_or(false),
    })
}

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
        let scope = check_scope(check, &l);
        let per = l.per.as_ref().and_then(|p| check.duration(p, "per"));
        let kind = match (&l.rate, &l.quota) {
            (Some(rate), None) => {
                let Some(per_value) = &l.per else {
                    check.problem(
                        l.name.span(),
                        format!("limit `{name}` has `rate` but no `per`"),
                        "add the period, e.g. per = \"1m\"",
                    );
                    continue;
                };
                let rate = check.amount(rate, "rate", &unit);
                let burst = l
                    .burst
                    .as_ref()
                    .and_then(|b| check.amount(b, "burst", &unit));
                if l.pause_at.is_some() || l.reset.is_some() {
                    check.problem(
                        per_value.span(),
                        format!("limit `{name}`: `pause_at` and `reset` apply to quotas only"),
                        "use `quota` instead of `rate` for a calendar quota, or remove them",
                    );
                }
                match (rate, per) {
                    (Some(rate), Some(per)) => LimitKind::Rolling { rate, per, burst },
                    _ => continue,
                }
            }
            (None, Some(quota)) => {
                let limit = check.amount(quota, "quota", &unit);
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
                match limit {
                    Some(limit) => LimitKind::Window {
                        limit,
                        per,
                        reset: reset.unwrap_or_default(),
                        pause_at,
                    },
                    None => continue,
                }
            }
            _ => {
                check.problem(
                    l.name.span(),
                    format!("limit `{name}` needs exactly one of `rate` (a rolling rate) or `quota` (a fixed calendar window)"),
                    "write rate = 5000 and per = \"1m\" for a rate, or quota = 10000 and per = \"1d\" for a quota",
                );
                continue;
            }
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

fn check_kinds(check: &mut Checker<'_>, raw: BTreeMap<String, RawKind>) -> BTreeMap<String, Costs> {
    raw.into_iter()
        .map(|(name, kind)| {
            let mut costs = Costs::default();
            for (unit, amount) in &kind.cost {
                let unit = Unit::from_name(unit);
                if let Some(n) = check.amount(amount, "cost", &unit) {
                    costs.add(unit, n.get());
                }
            }
            (name, costs)
        })
        .collect()
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
    Some(RetryPolicy {
        max_attempts: max_attempts?,
        base: base?,
        max: max?,
        quota_markers: raw.quota_markers.unwrap_or(default.quota_markers),
        on_quota: on_quota?,
        storm_share: storm_share?,
    })
}

impl Api {
    /// Resolves `${VAR}` references in header values from the environment.
    ///
    /// The values are returned for the HTTP client only; they must not be stored or logged.
    pub fn resolve_headers(&self, path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
        self.headers
            .iter()
            .map(|(name, value, line)| {
                interpolate(value, |var| std::env::var(var).ok())
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
