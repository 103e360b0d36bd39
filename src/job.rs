//! A job: one item turned into the request to send and its estimated cost.
//!
//! Owns rendering the request template with an item's fields and estimating what the request
//! will cost before it is sent. Pure: no I/O. Every item is checked once before the first
//! request ([`check`]: a bad placeholder or an invalid JSON body stops the run before
//! anything is sent) and rendered when it is dispatched ([`build`]). The check renders the
//! body too unless its template's [`FactsPlan`] shows every body it renders is valid, with
//! facts that follow from the values.
//!
//! [`FactsPlan`]: crate::template::body::FactsPlan
//!
//! The token estimate follows OpenAI's description of how requests count against a tokens
//! limit (<https://platform.openai.com/docs/guides/rate-limits>): prompt characters / 4 plus
//! `max_tokens`, unless the item gives `tokens`.

pub mod steps;

use serde_json::{Map, Value};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, Plan, RequestSpec};
use crate::limiter::budget::Pricing;
use crate::limiter::{Costs, JobAttrs, Limiter, Route, Unit};
use crate::scheduler::Lane;
use crate::store::PendingRow;
use crate::template::RenderError;
use crate::template::body::BodyFacts;
use crate::worklist::Payload;

/// The HTTP request of one attempt, relative to the API's base URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// HTTP method, upper case.
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Per-item headers (the API's shared headers are added by the transport).
    pub headers: Vec<(String, String)>,
    /// JSON body text, if any.
    pub body: Option<String>,
}

/// An item ready for dispatch.
#[derive(Clone, Debug)]
pub struct Job {
    /// The item's sequence number (file order).
    pub seq: u64,
    /// The item's id.
    pub id: String,
    /// Higher goes first.
    pub priority: i64,
    /// What to send.
    pub request: Request,
    /// The estimated cost, reserved before sending.
    pub costs: Costs,
    /// The limits that apply to this job.
    pub route: Route,
    /// Where it queues: its priority class, tenant and endpoint group.
    pub lane: Lane,
    /// The model named in the body, for pricing the actual usage.
    pub model: Option<String>,
    /// Attempts made so far, over all sessions.
    pub attempts: u32,
    /// Transient failures so far in this session.
    pub failures: u32,
    /// For a kind with steps: the steps and how far they got (`request` then holds only
    /// the headers every step sends).
    pub steps: Option<Box<steps::Steps>>,
}

impl Job {
    /// Goes on from the progress an earlier session stored for this job (JSON text of
    /// [`steps::Progress`], and the records of its listings stored page by page): finished
    /// steps are not sent again, a listing goes on from its next page, and the rest costs
    /// only its unfinished steps.
    ///
    /// # Errors
    /// [`JobError::Payload`] when the stored progress is unreadable.
    pub fn resume(&mut self, progress: &str, pages: &[steps::PageRecords]) -> Result<(), JobError> {
        let Some(steps) = self.steps.as_mut() else {
            return Ok(());
        };
        steps.progress = serde_json::from_str(progress).map_err(|e| JobError::Payload {
            reason: format!("stored step progress: {e}"),
        })?;
        steps.restore_pages(pages)?;
        self.costs = steps.remaining_costs();
        Ok(())
    }
}

/// Why an item cannot be turned into a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// A placeholder names a field the item lacks.
    #[error("field `{field}` is used by the request template but missing from this item")]
    MissingField {
        /// The placeholder's name.
        field: String,
    },
    /// The rendered body is not valid JSON.
    #[error("the rendered request body is not valid JSON: {reason}")]
    InvalidBody {
        /// serde_json's description, with line and column inside the body.
        reason: String,
    },
    /// The item names a kind the config does not define.
    #[error("kind `{kind}` is not defined in the config (defined: {defined})")]
    UnknownKind {
        /// The item's kind.
        kind: String,
        /// The kinds the config defines.
        defined: String,
    },
    /// The stored payload could not be read back.
    #[error("the stored item is unreadable: {reason}")]
    Payload {
        /// What failed.
        reason: String,
    },
}

impl From<RenderError> for JobError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::MissingField { field } => JobError::MissingField { field },
            e @ (RenderError::ControlInHeader { .. } | RenderError::DotSegment { .. }) => {
                JobError::Payload {
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// What an item costs: the config's kinds and prices.
#[derive(Clone, Debug, Default)]
pub struct CostModel {
    /// Extra costs per kind.
    pub kinds: BTreeMap<String, Costs>,
    /// Prices per model.
    pub pricing: Pricing,
    /// The steps of each kind that has them.
    pub plans: BTreeMap<String, Arc<Plan>>,
}

impl CostModel {
    /// The cost model of `config`.
    pub fn from_config(config: &Config) -> CostModel {
        CostModel {
            kinds: config.kinds.clone(),
            pricing: config.pricing.clone(),
            plans: config.plans.clone(),
        }
    }

    /// The costs a finished request really had: `usage` (the response's usage object)
    /// replaces the token and dollar estimates; other units stay as reserved.
    pub fn actual(&self, reserved: &Costs, model: Option<&str>, usage: &Value) -> Costs {
        let mut actual = reserved.clone();
        if let Some(total) = usage.get("total_tokens").and_then(Value::as_u64) {
            actual = actual.with(Unit::Tokens, total);
        }
        let input = usage
            .get("prompt_tokens")
            .or_else(|| usage.get("input_tokens"))
            .and_then(Value::as_u64);
        let output = usage
            .get("completion_tokens")
            .or_else(|| usage.get("output_tokens"))
            .and_then(Value::as_u64);
        if let (Some(price), Some(input), Some(output)) =
            (model.and_then(|m| self.pricing.get(m)), input, output)
        {
            actual = actual.with(Unit::Usd, price.cost(input, output));
        }
        actual
    }
}

/// An item rendered: its request, estimated cost and what limits match it on.
#[derive(Clone, Debug)]
pub struct Built {
    /// What to send.
    pub request: Request,
    /// Estimated cost.
    pub costs: Costs,
    /// The item's `kind` field.
    pub kind: Option<String>,
    /// The item's `tenant` field.
    pub tenant: Option<String>,
    /// The body's `model`.
    pub model: Option<String>,
    /// For a kind with steps: the steps, and the path of each step's first request (as
    /// previewed before any response).
    pub steps: Option<(steps::Steps, Vec<String>)>,
    /// Estimated prompt (input) tokens: prompt characters / 4.
    pub prompt_tokens: u64,
    /// The most output tokens the body allows (`max_tokens`), 0 when it sets none.
    pub max_tokens: u64,
}

impl Built {
    /// The limits this job falls under: for a kind with steps, those of every step.
    pub fn route(&self, limiter: &Limiter) -> Route {
        let route_of = |path: &str| {
            limiter.route(&JobAttrs {
                kind: self.kind.as_deref(),
                tenant: self.tenant.as_deref(),
                path,
            })
        };
        let mut route = route_of(&self.request.path);
        for path in self.steps.iter().flat_map(|(_, paths)| paths) {
            route.merge(&route_of(path));
        }
        route
    }
}

/// Renders the request for an item and estimates its cost.
///
/// `tokens` (the item's override) replaces the token estimate when given.
pub fn build(
    spec: &RequestSpec,
    payload: &Payload,
    tokens: Option<u64>,
    model: &CostModel,
) -> Result<Built, JobError> {
    build_with(spec, payload, tokens, model, Body::Rendered)
}

/// Checks an item's request and estimates its cost, as [`build`] does, for the checks
/// before the first request: a body whose facts the template gives ([`FactsPlan`]) is
/// checked (every placeholder has a value) but not rendered, and `request.body` is `None`.
/// The same items fail, with the same errors.
///
/// [`FactsPlan`]: crate::template::body::FactsPlan
pub fn check(
    spec: &RequestSpec,
    payload: &Payload,
    tokens: Option<u64>,
    model: &CostModel,
) -> Result<Built, JobError> {
    build_with(spec, payload, tokens, model, Body::Checked)
}

/// Whether a job's body is rendered or, where the template allows, only checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Rendered,
    Checked,
}

fn build_with(
    spec: &RequestSpec,
    payload: &Payload,
    tokens: Option<u64>,
    model: &CostModel,
    want: Body,
) -> Result<Built, JobError> {
    if let Some(built) = build_steps(spec, payload, tokens, model)? {
        return Ok(built);
    }
    let (request, facts) = render_request(spec, payload, want)?;
    let field = |name: &str| match payload {
        Payload::Vars(vars) => text_field(vars, name),
        Payload::Batch { .. } => None,
    };
    let kind = field("kind");
    let tenant = field("tenant");
    let prompt_tokens = facts.prompt_tokens();
    let max_tokens = facts.max_tokens;
    let model_name = facts.model;
    let token_estimate = tokens.unwrap_or(prompt_tokens.saturating_add(max_tokens));
    let mut costs = Costs::request(token_estimate);
    if let Some(price) = model_name.as_deref().and_then(|m| model.pricing.get(m)) {
        costs.add(Unit::Usd, price.cost(prompt_tokens, max_tokens));
    }
    if let Some(kind) = &kind {
        add_kind_costs(model, kind, &mut costs)?;
    }
    Ok(Built {
        request,
        costs,
        kind,
        tenant,
        model: model_name,
        steps: None,
        prompt_tokens,
        max_tokens,
    })
}

/// The request `payload` renders to (its body left out when `want` is [`Body::Checked`]
/// and the template's plan gives its facts), with what the estimate reads of its body
/// (nothing without a body).
fn render_request(
    spec: &RequestSpec,
    payload: &Payload,
    want: Body,
) -> Result<(Request, BodyFacts), JobError> {
    match payload {
        Payload::Vars(vars) => {
            let body = match (&spec.body, &spec.body_facts) {
                (Some(t), Some(_)) if want == Body::Checked => {
                    t.check_fields(vars)?;
                    None
                }
                (Some(t), _) => Some(t.render(vars)?),
                (None, _) => None,
            };
            // Rendered in this order so the first error reported stays the same.
            let headers = render_headers(spec, vars)?;
            let facts = match (&spec.body_facts, &body) {
                (Some(plan), _) => plan.facts(vars),
                (None, Some(text)) => {
                    BodyFacts::parse(text).map_err(|e| JobError::InvalidBody {
                        reason: e.to_string(),
                    })?
                }
                (None, None) => BodyFacts::default(),
            };
            let request = Request {
                method: spec.method.clone(),
                path: spec.path.render(vars)?,
                headers,
                body,
            };
            Ok((request, facts))
        }
        Payload::Batch { method, url, body } => Ok((
            Request {
                method: method.to_ascii_uppercase(),
                path: url.clone(),
                headers: Vec::new(),
                body: Some(body.to_string()),
            },
            BodyFacts::of_value(body),
        )),
    }
}

/// The request's headers, each template rendered with the item's values.
fn render_headers(
    spec: &RequestSpec,
    vars: &Map<String, Value>,
) -> Result<Vec<(String, String)>, JobError> {
    spec.headers
        .iter()
        .map(|(name, t)| Ok((name.clone(), t.render(vars)?)))
        .collect()
}

/// A non-empty text field of the item (`kind`, `tenant`), `None` when absent or not text.
fn text_field(vars: &Map<String, Value>, name: &str) -> Option<String> {
    vars.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Adds what `[kinds.KIND]` costs on top of the request; a kind not defined is an error
/// once any kind is.
fn add_kind_costs(model: &CostModel, kind: &str, costs: &mut Costs) -> Result<(), JobError> {
    match model.kinds.get(kind) {
        Some(extra) => {
            for (unit, amount) in extra.iter() {
                costs.add(unit.clone(), *amount);
            }
            Ok(())
        }
        None if !model.kinds.is_empty() => Err(JobError::UnknownKind {
            kind: kind.to_string(),
            defined: model
                .kinds
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
        None => Ok(()),
    }
}

/// An item of a kind with steps: every step rendered (with `0` for values of earlier
/// responses) and checked, the cost of all steps plus the kind's own reserved together.
/// `None` for an item whose kind has no steps.
fn build_steps(
    spec: &RequestSpec,
    payload: &Payload,
    tokens: Option<u64>,
    model: &CostModel,
) -> Result<Option<Built>, JobError> {
    let Payload::Vars(vars) = payload else {
        return Ok(None);
    };
    let kind = text_field(vars, "kind");
    let Some(plan) = kind.as_ref().and_then(|k| model.plans.get(k)) else {
        return Ok(None);
    };
    let extra = kind.as_ref().and_then(|k| model.kinds.get(k)).cloned();
    let job = steps::Steps::new(Arc::clone(plan), vars.clone(), extra.unwrap_or_default());
    let requests = job.preview()?;
    let bodies: Vec<Value> = requests
        .iter()
        .filter_map(|r| r.body.as_deref())
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    let token_estimate = tokens.unwrap_or_else(|| bodies.iter().map(estimate_tokens).sum());
    let costs = job.remaining_costs().with(Unit::Tokens, token_estimate);
    let headers = render_headers(spec, vars)?;
    let paths = requests.iter().map(|r| r.path.clone()).collect();
    let first = requests.into_iter().next();
    Ok(Some(Built {
        request: Request {
            method: first
                .as_ref()
                .map_or_else(String::new, |r| r.method.clone()),
            path: first.map_or_else(String::new, |r| r.path),
            headers,
            body: None,
        },
        costs,
        kind,
        tenant: text_field(vars, "tenant"),
        model: None,
        steps: Some((job, paths)),
        // Steps are priced by their requests and units, not by a model's tokens.
        prompt_tokens: token_estimate,
        max_tokens: 0,
    }))
}

/// Rebuilds a job from its stored payload (JSON text of a [`Payload`]).
pub fn from_stored(
    spec: &RequestSpec,
    payload: &str,
    tokens: Option<u64>,
    model: &CostModel,
) -> Result<Built, JobError> {
    let payload: Payload = serde_json::from_str(payload).map_err(|e| JobError::Payload {
        reason: e.to_string(),
    })?;
    build(spec, &payload, tokens, model)
}

/// What rebuilding a stored item into its job needs besides the stored row.
pub struct Rebuild<'a> {
    /// The request template.
    pub spec: &'a RequestSpec,
    /// Estimates each job's cost.
    pub cost_model: &'a CostModel,
    /// Routes each job to the limits it falls under.
    pub limiter: &'a Limiter,
    /// The run's work-list fingerprint when every request carries an `Idempotency-Key`.
    pub idempotency: Option<&'a str>,
}

impl Rebuild<'_> {
    /// The job of a pending item as the store holds it, queued in the lane `lane_of` names
    /// for it. Its steps start from the beginning: [`Job::resume`] goes on from where an
    /// earlier session stopped.
    ///
    /// # Errors
    /// A [`JobError`] when the stored payload no longer renders with the template.
    pub fn job(
        &self,
        row: &PendingRow,
        lane_of: impl FnOnce(&Built) -> Lane,
    ) -> Result<Job, JobError> {
        let built = from_stored(self.spec, &row.payload, row.tokens, self.cost_model)?;
        let route = built.route(self.limiter);
        let lane = lane_of(&built);
        let mut request = built.request;
        if let Some(fingerprint) = self.idempotency {
            request.headers.push((
                "Idempotency-Key".to_string(),
                idempotency_key(fingerprint, &row.id),
            ));
        }
        Ok(Job {
            seq: row.seq,
            id: row.id.clone(),
            priority: row.priority,
            request,
            costs: built.costs,
            route,
            lane,
            model: built.model,
            attempts: row.attempts,
            failures: row.failures,
            steps: built.steps.map(|(steps, _)| Box::new(steps)),
        })
    }
}

/// The `Idempotency-Key` of item `id` in the run whose work list has `fingerprint`: the
/// same on every attempt and every rerun, different across runs and items.
///
/// ```
/// let a = ratebound::job::idempotency_key("fp1", "item-1");
/// assert_eq!(a, ratebound::job::idempotency_key("fp1", "item-1"));
/// assert_ne!(a, ratebound::job::idempotency_key("fp1", "item-2"));
/// assert_eq!(a.len(), 32);
/// ```
pub fn idempotency_key(fingerprint: &str, id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(fingerprint.as_bytes())
        .chain_update([0u8])
        .chain_update(id.as_bytes())
        .finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Estimated tokens of a chat request: `ceil(prompt chars / 4) + max_tokens`.
///
/// Prompt characters are those of every message's `content` (text parts of multi-part
/// content too), or of `prompt`/`input` for completion and embedding style bodies.
///
/// ```
/// let body = serde_json::json!({"max_tokens": 100, "messages": [{"role": "user", "content": "12345678"}]});
/// assert_eq!(ratebound::job::estimate_tokens(&body), 2 + 100);
/// ```
pub fn estimate_tokens(body: &Value) -> u64 {
    let facts = BodyFacts::of_value(body);
    facts.prompt_tokens().saturating_add(facts.max_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimate_counts_prompt_chars_and_max_tokens() {
        let body = json!({"max_tokens": 200, "messages": [
            {"role": "system", "content": "abc"},
            {"role": "user", "content": [{"type": "text", "text": "héllo"}]}
        ]});
        assert_eq!(estimate_tokens(&body), 2 + 200, "8 chars -> 2 tokens");
        assert_eq!(estimate_tokens(&json!({"input": "12345"})), 2);
        assert_eq!(estimate_tokens(&json!({})), 0);
    }

    #[test]
    fn checking_costs_what_building_does_without_rendering_the_body() {
        let config = |body: &str| {
            let text = format!(
                "[api]\nbase_url = \"http://x\"\n[request]\npath = \"/v1/{{{{kind}}}}\"\nbody = '{body}'\n"
            );
            crate::config::Config::parse(std::path::Path::new("c.toml"), &text)
                .unwrap()
                .request
        };
        let planned = config(
            r#"{"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "Q: {{q}}"}]}"#,
        );
        let unplanned = config(r#"{"max_tokens": {{n}}, "prompt": "{{q}}"}"#);
        assert!(planned.body_facts.is_some() && unplanned.body_facts.is_none());
        let model = CostModel::default();
        for vars in [
            json!({"kind": "a", "q": "héllo \"world\"", "n": 5}),
            json!({"kind": "a", "n": 5}),
            json!({"q": "x", "n": 5}),
            json!({"kind": "a", "q": "x", "n": "[1"}),
        ] {
            let payload = Payload::Vars(vars.as_object().unwrap().clone());
            for spec in [&planned, &unplanned] {
                let built = build(spec, &payload, None, &model).map(|b| (b.request.path, b.costs));
                let checked = check(spec, &payload, None, &model);
                let body = checked.as_ref().ok().map(|b| b.request.body.is_some());
                assert_eq!(checked.map(|b| (b.request.path, b.costs)), built, "{vars}");
                // Only a planned template's body goes unrendered.
                assert!(body.is_none() || body == Some(spec.body_facts.is_none()));
            }
        }
    }

    #[test]
    fn batch_lines_are_sent_as_they_stand() {
        let spec = crate::config::Config::parse(
            std::path::Path::new("c.toml"),
            "[api]\nbase_url = \"http://x\"\n[request]\npath = \"/unused\"\n",
        )
        .unwrap()
        .request;
        let payload = Payload::Batch {
            method: "post".into(),
            url: "/v1/chat/completions".into(),
            body: json!({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
        };
        let built = build(&spec, &payload, None, &CostModel::default()).unwrap();
        assert_eq!(built.request.method, "POST");
        assert_eq!(built.request.path, "/v1/chat/completions");
        assert_eq!(built.costs.get(&Unit::Tokens), 11);
        let built = build(&spec, &payload, Some(500), &CostModel::default()).unwrap();
        assert_eq!(
            built.costs.get(&Unit::Tokens),
            500,
            "the item's override wins"
        );
    }
}
