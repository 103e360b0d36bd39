//! A multi-request job: which of its steps go out next, how they are rendered from the item
//! and the responses so far, how a page leads to the next, and what is stored at the end.
//!
//! Owns a job's [`Steps`]: its kind's [`Plan`], the item's fields and its [`Progress`] (each
//! finished step's status and body; each paginated step's next page and the records so
//! far). Progress is plain data, stored after every dispatch together with the records of
//! the pages fetched since (one row per page, so a long listing costs one write per page),
//! so a rerun after a crash goes on from the next page instead of starting the listing
//! again. Pure: no I/O, no clock. The runner sends the requests ([`crate::runner`]).
//!
//! Invariants: a step is sent only when every step it waits for is finished; a finished
//! step is never sent again; `{{steps.NAME...}}` is rendered only from a finished step (the
//! config checks that NAME is one the step waits for), with the same JSON escaping as any
//! field; a paginated step is finished only when its last page is absorbed.

use std::collections::BTreeMap;
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{JobError, Request};
use crate::config::{NextPage, Plan, StepSpec};
use crate::limiter::{Costs, Unit};
use crate::template::{RenderError, Template};

/// Query values are percent-encoded but for RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a finished step returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The HTTP status of its (last) response.
    pub status: u16,
    /// Its JSON body (text that is not JSON is kept as a string); for a paginated step,
    /// `{"pages": N, "items": [...]}` with every page's records.
    pub body: Value,
}

/// A paginated step part way through its listing.
///
/// Serialized without its records: those are stored a page at a time
/// ([`Steps::unsaved_pages`]), so a long listing costs one write per page, not a rewrite
/// of everything fetched so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paging {
    /// Path and query of the next page.
    pub next: String,
    /// Pages absorbed so far.
    pub pages: u32,
    /// Records of those pages, in order.
    #[serde(skip)]
    pub items: Vec<Value>,
    /// How many of `items` are stored already.
    #[serde(skip)]
    pub saved: usize,
}

/// A page's records to store: the step's name, the page number (1-based) and the
/// records as JSON text.
pub type PageRecords = (String, u32, String);

/// How far a job has got: kept in the store between dispatches and sessions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Finished steps by name.
    #[serde(default)]
    pub done: BTreeMap<String, StepResult>,
    /// Paginated steps with more pages to fetch, by name.
    #[serde(default)]
    pub paging: BTreeMap<String, Paging>,
}

/// What absorbing a response did to its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absorbed {
    /// The step is finished.
    Finished,
    /// The step has another page to fetch.
    MorePages,
}

/// A job of a kind with `[[kinds.NAME.steps]]`.
#[derive(Clone, Debug)]
pub struct Steps {
    /// The kind's steps.
    pub plan: Arc<Plan>,
    /// The item's fields.
    pub vars: Map<String, Value>,
    /// The kind's own costs (`[kinds.NAME] cost`), charged with the job's first requests.
    pub extra: Costs,
    /// What is done so far.
    pub progress: Progress,
    /// The last dispatch ended in a failure, so the next one is a retry.
    pub retrying: bool,
    /// The step whose request failed in the last dispatch, if one did.
    pub failed_step: Option<String>,
}

/// Where `{{steps.NAME...}}` values come from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The responses so far.
    Real(&'a Progress),
    /// Before the first request: every reference renders as `0`, which is valid JSON both
    /// inside and outside a string, so the rest of the body can be checked.
    Preview,
}

impl Steps {
    /// A job of `plan` for an item with `vars`, nothing done yet; `extra` is the kind's own
    /// cost.
    pub fn new(plan: Arc<Plan>, vars: Map<String, Value>, extra: Costs) -> Steps {
        Steps {
            plan,
            vars,
            extra,
            progress: Progress::default(),
            retrying: false,
            failed_step: None,
        }
    }

    /// Renders every step as it would go out, with `0` for values of earlier responses,
    /// checking placeholders and JSON bodies before the first request. Returns the
    /// requests (each step's first page).
    pub fn preview(&self) -> Result<Vec<Request>, JobError> {
        (0..self.plan.steps.len())
            .map(|i| self.render(i, Source::Preview))
            .collect()
    }

    /// The steps to send now: not finished, and every step they wait for finished.
    pub fn wave(&self) -> Vec<usize> {
        let done = |i: usize| {
            self.plan
                .steps
                .get(i)
                .is_some_and(|s| self.progress.done.contains_key(&s.name))
        };
        (0..self.plan.steps.len())
            .filter(|&i| !done(i) && self.plan.steps[i].after.iter().all(|&a| done(a)))
            .collect()
    }

    /// Whether every step is finished.
    pub fn is_finished(&self) -> bool {
        self.unfinished() == 0
    }

    fn unfinished(&self) -> usize {
        (self.plan.steps.iter())
            .filter(|s| !self.progress.done.contains_key(&s.name))
            .count()
    }

    /// What the rest of the job costs: one request per unfinished step (a paginated step's
    /// next page; later pages are reserved one by one as they are found), and the kind's
    /// own cost while no request has succeeded yet.
    pub fn remaining_costs(&self) -> Costs {
        let left = u64::try_from(self.unfinished()).unwrap_or(u64::MAX);
        let mut costs = Costs::request(0).with(Unit::Requests, left);
        if self.progress.done.is_empty() && self.progress.paging.is_empty() {
            for (unit, amount) in self.extra.iter() {
                costs.add(unit.clone(), *amount);
            }
        }
        costs
    }

    /// The request of step `index` now: its next page, or its first rendered from the item
    /// and the responses so far.
    ///
    /// # Errors
    /// [`JobError::MissingField`] when a placeholder's value is missing (a field of an
    /// earlier response that is not there), [`JobError::InvalidBody`] for a body that is
    /// not JSON once rendered.
    pub fn request(&self, index: usize) -> Result<Request, JobError> {
        let step = self.step(index)?;
        let mut request = self.render(index, Source::Real(&self.progress))?;
        if let Some(paging) = self.progress.paging.get(&step.name) {
            request.path = paging.next.clone();
        }
        Ok(request)
    }

    /// Takes in a successful (2xx) response of step `index` to the request for `path`:
    /// records the step's result, or the page and where the next one is.
    pub fn absorb(
        &mut self,
        index: usize,
        path: &str,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Absorbed, JobError> {
        let step = self.step(index)?.clone();
        let text = String::from_utf8_lossy(body);
        let parsed: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.into_owned()));
        let Some(paginate) = &step.paginate else {
            self.progress.done.insert(
                step.name,
                StepResult {
                    status,
                    body: parsed,
                },
            );
            return Ok(Absorbed::Finished);
        };
        let mut paging = self.progress.paging.remove(&step.name).unwrap_or(Paging {
            next: String::new(),
            pages: 0,
            items: Vec::new(),
            saved: 0,
        });
        paging.pages += 1;
        match &paginate.items {
            Some(pointer) => match parsed.pointer(pointer) {
                Some(Value::Array(records)) => paging.items.extend(records.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(other) => paging.items.push(other.clone()),
            },
            None => paging.items.push(parsed.clone()),
        }
        let next = match &paginate.next {
            NextPage::Cursor { pointer, param } => {
                cursor_text(parsed.pointer(pointer)).map(|c| set_query(path, param, &c))
            }
            NextPage::Url { pointer } => parsed
                .pointer(pointer)
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .map(|u| relative_url(path, u)),
            NextPage::Link => headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("link"))
                .find_map(|(_, v)| link_next(v))
                .map(|u| relative_url(path, &u)),
        };
        match next.filter(|n| n != path && paging.pages < paginate.max_pages) {
            Some(next) => {
                paging.next = next;
                self.progress.paging.insert(step.name, paging);
                Ok(Absorbed::MorePages)
            }
            None => {
                let body = json!({"pages": paging.pages, "items": paging.items});
                self.progress
                    .done
                    .insert(step.name, StepResult { status, body });
                Ok(Absorbed::Finished)
            }
        }
    }

    /// The records absorbed since the last call, per paginated step still part way
    /// through, to be stored together with the progress; marks them stored.
    pub fn unsaved_pages(&mut self) -> Vec<PageRecords> {
        let mut pages = Vec::new();
        for (name, paging) in &mut self.progress.paging {
            if paging.items.len() > paging.saved {
                let items = Value::Array(paging.items[paging.saved..].to_vec());
                pages.push((name.clone(), paging.pages, items.to_string()));
                paging.saved = paging.items.len();
            }
        }
        pages
    }

    /// Puts back the records stored page by page (in page order) into the progress read
    /// back from the store. Pages past a step's stored page count are ignored: their
    /// progress never committed, so they will be fetched again.
    pub fn restore_pages(&mut self, pages: &[PageRecords]) -> Result<(), JobError> {
        for (name, page, items) in pages {
            let Some(paging) = self.progress.paging.get_mut(name) else {
                continue;
            };
            if *page > paging.pages {
                continue;
            }
            let records: Vec<Value> =
                serde_json::from_str(items).map_err(|e| JobError::Payload {
                    reason: format!("stored page {page} of step `{name}`: {e}"),
                })?;
            paging.items.extend(records);
            paging.saved = paging.items.len();
        }
        Ok(())
    }

    /// The item's stored result body: a one-step kind stores its step's body; several
    /// steps store `{"steps": {NAME: {"status": .., "body": ..}}}`.
    pub fn result_body(&self) -> String {
        if let [only] = self.plan.steps.as_slice()
            && let Some(result) = self.progress.done.get(&only.name)
        {
            return result.body.to_string();
        }
        let steps: Map<String, Value> = self
            .plan
            .steps
            .iter()
            .filter_map(|s| {
                let r = self.progress.done.get(&s.name)?;
                Some((s.name.clone(), json!({"status": r.status, "body": r.body})))
            })
            .collect();
        json!({ "steps": steps }).to_string()
    }

    /// The name of step `index`.
    pub fn name(&self, index: usize) -> &str {
        self.plan.steps.get(index).map_or("", |s| s.name.as_str())
    }

    fn step(&self, index: usize) -> Result<&StepSpec, JobError> {
        self.plan.steps.get(index).ok_or_else(|| JobError::Payload {
            reason: format!("the kind has no step {index}"),
        })
    }

    fn render(&self, index: usize, source: Source<'_>) -> Result<Request, JobError> {
        let step = self.step(index)?;
        let vars = |t: &Template| self.vars_for(t, source);
        let path = step.path.render(&vars(&step.path))?;
        let path = match step.paginate.as_ref().and_then(|p| p.page_size.as_ref()) {
            Some((param, size)) => set_query(&path, param, &size.to_string()),
            None => path,
        };
        let body = match &step.body {
            Some(t) => {
                let text = t.render(&vars(t))?;
                serde_json::from_str::<Value>(&text).map_err(|e| JobError::InvalidBody {
                    reason: format!("step `{}`: {e}", step.name),
                })?;
                Some(text)
            }
            None => None,
        };
        let headers = step
            .headers
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.render(&vars(t))?)))
            .collect::<Result<Vec<_>, RenderError>>()?;
        Ok(Request {
            method: step.method.clone(),
            path,
            headers,
            body,
        })
    }

    /// The item's fields plus the `steps.` values `template` reads.
    fn vars_for(&self, template: &Template, source: Source<'_>) -> Map<String, Value> {
        let mut vars = self.vars.clone();
        for name in template.placeholders().filter(|n| n.starts_with("steps.")) {
            let value = match source {
                Source::Preview => Some(Value::from(0)),
                Source::Real(progress) => lookup(progress, name),
            };
            if let Some(value) = value {
                vars.insert(name.to_string(), value);
            }
        }
        vars
    }
}

/// The value of `steps.NAME.status` or `steps.NAME.body[.FIELD...]` in `progress`.
fn lookup(progress: &Progress, placeholder: &str) -> Option<Value> {
    let mut parts = placeholder.strip_prefix("steps.")?.split('.');
    let result = progress.done.get(parts.next()?)?;
    match parts.next()? {
        "status" => Some(Value::from(result.status)),
        "body" => {
            let mut at = &result.body;
            for key in parts {
                at = match at {
                    Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                    other => other.get(key)?,
                };
            }
            Some(at.clone())
        }
        _ => None,
    }
}

/// A cursor's text: a non-empty string or a number; anything else ends the listing.
fn cursor_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `path` with query parameter `param` set to `value` (percent-encoded), replacing it if
/// present (as written or percent-encoded).
///
/// ```
/// use ratebound::job::steps::set_query;
/// assert_eq!(set_query("/a?x=1&c=old", "c", "n w"), "/a?x=1&c=n%20w");
/// assert_eq!(set_query("/a", "page[size]", "100"), "/a?page[size]=100");
/// ```
pub fn set_query(path: &str, param: &str, value: &str) -> String {
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let encoded_param: String = utf8_percent_encode(param, QUERY_VALUE).collect();
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split('=').next().unwrap_or_default();
            key != param && key != encoded_param
        })
        .map(str::to_string)
        .collect();
    pairs.push(format!(
        "{param}={}",
        utf8_percent_encode(value, QUERY_VALUE)
    ));
    format!("{base}?{}", pairs.join("&"))
}

/// A next-page URL as a path relative to the API's base URL: an absolute URL loses its
/// scheme and host, a query-only URL keeps `current`'s path.
fn relative_url(current: &str, url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    {
        return rest
            .find('/')
            .map_or_else(|| "/".to_string(), |i| rest[i..].to_string());
    }
    if url.starts_with('?') {
        let base = current.split('?').next().unwrap_or(current);
        return format!("{base}{url}");
    }
    url.to_string()
}

/// The target of the `rel="next"` link in a `Link` header value (RFC 8288).
///
/// ```
/// use ratebound::job::steps::link_next;
/// let v = r#"<https://api.x/a?page=1>; rel="prev", <https://api.x/a?page=3>; rel="next""#;
/// assert_eq!(link_next(v).as_deref(), Some("https://api.x/a?page=3"));
/// assert_eq!(link_next(r#"<https://api.x/a?page=1>; rel="prev""#), None);
/// ```
pub fn link_next(value: &str) -> Option<String> {
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>')? + open;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find('<').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let Some((key, value)) = p.split_once('=') else {
                return false;
            };
            key.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_string());
        }
        rest = &rest[params_end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn plan(steps: &str) -> Arc<Plan> {
        let text =
            format!("[api]\nbase_url = \"http://x\"\n[request]\npath = \"/\"\n[kinds.k]\n{steps}");
        let config = Config::parse(Path::new("c.toml"), &text).unwrap();
        Arc::clone(&config.plans["k"])
    }

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    const CHAIN: &str = r#"
[[kinds.k.steps]]
name = "create"
path = "/campaigns"
body = '{"name": "{{name}}"}'
[[kinds.k.steps]]
name = "a"
path = "/campaigns/{{steps.create.body.id}}/a"
[[kinds.k.steps]]
name = "b"
parallel = true
path = "/campaigns/{{steps.create.body.id}}/b"
body = '{"note": "{{steps.create.body.tags.1}}", "n": {{steps.create.status}}}'
"#;

    #[test]
    fn later_steps_wait_and_read_earlier_responses_json_escaped() {
        let mut s = Steps::new(
            plan(CHAIN),
            vars(json!({"name": "Q \"1\""})),
            Costs::default(),
        );
        assert_eq!(s.wave(), [0], "only the first step can go");
        let first = s.request(0).unwrap();
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("POST", "/campaigns")
        );
        assert_eq!(first.body.as_deref(), Some(r#"{"name": "Q \"1\""}"#));
        let reply = br#"{"id": "c/7", "tags": ["x", "say \"hi\"\n"]}"#;
        assert_eq!(
            s.absorb(0, "/campaigns", 201, &[], reply).unwrap(),
            Absorbed::Finished
        );
        assert_eq!(s.wave(), [1, 2], "a and b go out together");
        assert_eq!(s.request(1).unwrap().path, "/campaigns/c%2F7/a");
        let b = s.request(2).unwrap();
        assert_eq!(b.method, "POST");
        let body: Value = serde_json::from_str(b.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"note": "say \"hi\"\n", "n": 201}));
        assert_eq!(s.remaining_costs().get(&Unit::Requests), 2);
        s.absorb(1, "/x", 200, &[], b"{}").unwrap();
        s.absorb(2, "/x", 200, &[], b"[1]").unwrap();
        assert!(s.is_finished());
        let stored: Value = serde_json::from_str(&s.result_body()).unwrap();
        assert_eq!(stored["steps"]["create"]["body"]["id"], "c/7");
        assert_eq!(stored["steps"]["b"], json!({"status": 200, "body": [1]}));
    }

    #[test]
    fn a_field_missing_from_a_response_is_named() {
        let mut s = Steps::new(plan(CHAIN), vars(json!({"name": "n"})), Costs::default());
        s.absorb(0, "/campaigns", 200, &[], br#"{"no_id": 1}"#)
            .unwrap();
        let err = s.request(1).unwrap_err();
        assert_eq!(
            err,
            JobError::MissingField {
                field: "steps.create.body.id".into()
            }
        );
    }

    #[test]
    fn preview_renders_every_step_with_zero_for_response_values() {
        let s = Steps::new(plan(CHAIN), vars(json!({"name": "n"})), Costs::default());
        let all = s.preview().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].path, "/campaigns/0/a");
        assert_eq!(all[2].body.as_deref(), Some(r#"{"note": "0", "n": 0}"#));
    }

    #[test]
    fn a_cursor_listing_asks_the_largest_page_and_follows_until_no_cursor() {
        let p = plan(
            r#"
[[kinds.k.steps]]
name = "articles"
path = "/api/v2/help_center/articles?locale={{locale}}"
paginate = { cursor = "/meta/after_cursor", param = "page[after]", page_size = 100, size_param = "page[size]", items = "/articles" }
"#,
        );
        let mut s = Steps::new(p, vars(json!({"locale": "en-us"})), Costs::default());
        let first = s.request(0).unwrap().path;
        assert_eq!(
            first,
            "/api/v2/help_center/articles?locale=en-us&page[size]=100"
        );
        let page1 = br#"{"articles": [{"id": 1}, {"id": 2}], "meta": {"after_cursor": "c2"}}"#;
        assert_eq!(
            s.absorb(0, &first, 200, &[], page1).unwrap(),
            Absorbed::MorePages
        );
        assert!(!s.is_finished());
        assert_eq!(s.wave(), [0]);
        let second = s.request(0).unwrap().path;
        assert_eq!(
            second,
            "/api/v2/help_center/articles?locale=en-us&page[size]=100&page[after]=c2"
        );
        let page2 = br#"{"articles": [{"id": 3}], "meta": {"after_cursor": null}}"#;
        assert_eq!(
            s.absorb(0, &second, 200, &[], page2).unwrap(),
            Absorbed::Finished
        );
        let stored: Value = serde_json::from_str(&s.result_body()).unwrap();
        assert_eq!(
            stored,
            json!({"pages": 2, "items": [{"id": 1}, {"id": 2}, {"id": 3}]})
        );
    }

    #[test]
    fn next_links_in_the_body_or_the_link_header_are_followed_as_paths() {
        let p = plan(
            r#"
[[kinds.k.steps]]
name = "users"
path = "/users"
paginate = { link = true }
[[kinds.k.steps]]
name = "tickets"
after = []
path = "/tickets"
paginate = { next = "/links/next", items = "/tickets", max_pages = 2 }
"#,
        );
        let calls = Costs::default().with(Unit::from_name("calls"), 3);
        let mut s = Steps::new(p, Map::new(), calls);
        assert_eq!(s.remaining_costs().get(&Unit::from_name("calls")), 3);
        assert_eq!(s.wave(), [0, 1], "`after = []` starts at once");
        let link = vec![(
            "Link".to_string(),
            r#"<http://127.0.0.1:9/users?page=2>; rel="next""#.to_string(),
        )];
        assert_eq!(
            s.absorb(0, "/users", 200, &link, b"[1]").unwrap(),
            Absorbed::MorePages
        );
        assert_eq!(s.request(0).unwrap().path, "/users?page=2");
        assert_eq!(
            s.remaining_costs().get(&Unit::from_name("calls")),
            0,
            "the kind's cost went with the first requests"
        );
        let next = br#"{"tickets": [1], "links": {"next": "https://h.example/tickets?p=2"}}"#;
        assert_eq!(
            s.absorb(1, "/tickets", 200, &[], next).unwrap(),
            Absorbed::MorePages
        );
        assert_eq!(s.request(1).unwrap().path, "/tickets?p=2");
        assert_eq!(
            s.absorb(1, "/tickets?p=2", 200, &[], next).unwrap(),
            Absorbed::Finished,
            "max_pages stops a listing that never ends"
        );
        let stored = s.unsaved_pages();
        let whole_page = "[[1]]".to_string();
        assert_eq!(
            stored,
            [("users".to_string(), 1, whole_page)],
            "no `items`: whole pages"
        );
        assert!(s.unsaved_pages().is_empty(), "each page is stored once");
        let json = serde_json::to_string(&s.progress).unwrap();
        let listed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            listed["paging"]["users"],
            json!({"next": "/users?page=2", "pages": 1}),
            "records are stored by page"
        );
        let mut back = Steps::new(Arc::clone(&s.plan), Map::new(), Costs::default());
        back.progress = serde_json::from_str(&json).unwrap();
        let uncommitted = ("users".to_string(), 2, "[[2]]".to_string());
        back.restore_pages(&[stored[0].clone(), uncommitted])
            .unwrap();
        assert_eq!(back.progress, s.progress, "progress survives the store");
    }
}
