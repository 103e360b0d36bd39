//! `[[kinds.NAME.steps]]`: a kind whose job is several requests, and how a step pages.
//!
//! Owns the keys of a step and of its `paginate` table, their defaults and checks. A kind's
//! steps form a [`Plan`]: each step waits for the steps named in `after` (by default the
//! step above it; `parallel = true` makes it run alongside the step above instead), so a
//! step may only wait for steps written above it and a plan has no cycle. A template may
//! read an earlier step's response as `{{steps.NAME.body.a.b}}` (a field of its JSON body,
//! array elements by index) or `{{steps.NAME.status}}`; naming a step that is unknown, or
//! one that the step does not wait for, is an error pointing at the placeholder.
//!
//! Left to others: rendering and running steps ([`crate::job::steps`],
//! [`crate::runner`]).

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;
use crate::template::{Template, TemplateKind};

/// The keys of a step, for hints.
pub(super) const STEP_KEYS: &str = "name, method, path, body, headers, after, parallel, paginate";
/// The keys of a step's `paginate` table, for hints.
pub(super) const PAGINATE_KEYS: &str =
    "cursor, param, next, link, page_size, size_param, items, max_pages";

/// Pages followed at most when `max_pages` is not given.
pub const DEFAULT_MAX_PAGES: u32 = 10_000;

/// One `[[kinds.NAME.steps]]` entry as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: Spanned<String>,
    method: Option<Spanned<String>>,
    path: Spanned<String>,
    body: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    after: Option<Spanned<Vec<String>>>,
    parallel: Option<Spanned<bool>>,
    paginate: Option<Spanned<RawPaginate>>,
}

/// A step's `paginate` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaginate {
    cursor: Option<Spanned<String>>,
    param: Option<Spanned<String>>,
    next: Option<Spanned<String>>,
    link: Option<bool>,
    page_size: Option<Spanned<i64>>,
    size_param: Option<Spanned<String>>,
    items: Option<Spanned<String>>,
    max_pages: Option<Spanned<i64>>,
}

/// The requests of one job kind, in config order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The steps; `after` indices always point above their step.
    pub steps: Vec<StepSpec>,
}

/// One request of a multi-request job.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// The step's name, unique in its kind (`{{steps.NAME...}}`).
    pub name: String,
    /// HTTP method, upper case (default GET without a body, POST with one).
    pub method: String,
    /// Path and query; values percent-encoded.
    pub path: Template,
    /// JSON body template.
    pub body: Option<Template>,
    /// Extra headers (after `[request] headers`), values inserted raw.
    pub headers: Vec<(String, Template)>,
    /// Indices of the steps this one waits for.
    pub after: Vec<usize>,
    /// How to follow the step's pages, if it is a paginated listing.
    pub paginate: Option<Paginate>,
    /// Line of `path` in the config, for errors.
    pub path_line: usize,
    /// Line of `body` (0 without one).
    pub body_line: usize,
}

/// How a paginated step finds its next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    /// A cursor at a JSON pointer into the body, sent back as query parameter `param`.
    Cursor {
        /// JSON pointer (RFC 6901), e.g. `/meta/after_cursor`.
        pointer: String,
        /// The query parameter that carries it, e.g. `page[after]`.
        param: String,
    },
    /// The next page's URL at a JSON pointer into the body, e.g. `/links/next`.
    Url {
        /// JSON pointer (RFC 6901).
        pointer: String,
    },
    /// The `Link: <...>; rel="next"` response header (RFC 8288).
    Link,
}

/// A step's pagination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paginate {
    /// Where the next page is found; no next page (absent, `null`, `""`) ends the listing.
    pub next: NextPage,
    /// `(query parameter, size)` set on the first page: the provider's maximum page size.
    pub page_size: Option<(String, u64)>,
    /// JSON pointer to each page's records, collected into the step's result; without it
    /// the whole page bodies are collected.
    pub items: Option<String>,
    /// Pages followed at most (a guard against a listing that never ends).
    pub max_pages: u32,
}

/// Checks a kind's steps; `None` when the kind has no steps or a step is invalid (the
/// problems are in `check`).
pub(super) fn check_plan(check: &mut Checker<'_>, kind: &str, raw: Vec<RawStep>) -> Option<Plan> {
    if raw.is_empty() {
        return None;
    }
    let mut steps: Vec<StepSpec> = Vec::new();
    let mut ok = true;
    for (index, step) in raw.iter().enumerate() {
        match check_step(check, kind, step, index, &raw, &steps) {
            Some(s) => steps.push(s),
            None => ok = false,
        }
    }
    ok.then_some(Plan { steps })
}

fn check_step(
    check: &mut Checker<'_>,
    kind: &str,
    raw: &RawStep,
    index: usize,
    all: &[RawStep],
    above: &[StepSpec],
) -> Option<StepSpec> {
    let name = raw.name.get_ref().trim().to_string();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name || all[..index].iter().any(|s| s.name.get_ref().trim() == name) {
        check.problem(
            raw.name.span(),
            format!("kind `{kind}`: step name `{name}` is empty, not a plain name, or used twice"),
            "give each step of a kind its own name of letters, digits, `_` or `-`, e.g. `create`",
        );
        return None;
    }
    let after = check_after(check, kind, raw, index, all, above)?;
    let default_method = if raw.body.is_some() { "POST" } else { "GET" };
    let method = check.method(raw.method.as_ref(), default_method);
    let (path, path_line) = check.request_path(&raw.path);
    let body = match &raw.body {
        Some(b) => Some(check.template(b, TemplateKind::Json, "body")?),
        None => None,
    };
    let body_line = raw.body.as_ref().map_or(0, |b| check.position(b.span()).0);
    let mut headers = Vec::new();
    for (header, value) in &raw.headers {
        check.header_site(&format!("[[kinds.{kind}.steps]] {name}"), header, value);
        headers.push((
            header.clone(),
            check.template(value, TemplateKind::Text, "headers")?,
        ));
    }
    let path = path?;
    let ancestors = ancestors(above, &after);
    let mut refs_ok = true;
    let templates = std::iter::once((&path, &raw.path))
        .chain(body.as_ref().zip(raw.body.as_ref()))
        .chain(headers.iter().map(|(n, t)| (t, &raw.headers[n])));
    for (template, source) in templates {
        for placeholder in template.placeholders() {
            if let Some(problem) = check_reference(placeholder, above, &ancestors) {
                let span = placeholder_span(check.source, source.span(), placeholder);
                check.problem(span, format!("kind `{kind}`, step `{name}`: {problem}"), format!(
                    "write `{{{{steps.NAME.body.FIELD}}}}` or `{{{{steps.NAME.status}}}}` with NAME one of the steps this step waits for ({}); list it in `after`",
                    names(above, &ancestors)
                ));
                refs_ok = false;
            }
        }
    }
    let paginate = match &raw.paginate {
        Some(p) => Some(check_paginate(check, p)?),
        None => None,
    };
    refs_ok.then_some(StepSpec {
        name,
        method,
        path,
        body,
        headers,
        after,
        paginate,
        path_line,
        body_line,
    })
}

/// The indices this step waits for: `after`, or the step above's own (`parallel`), or the
/// step above.
fn check_after(
    check: &mut Checker<'_>,
    kind: &str,
    raw: &RawStep,
    index: usize,
    all: &[RawStep],
    above: &[StepSpec],
) -> Option<Vec<usize>> {
    let parallel = raw.parallel.as_ref().is_some_and(|p| *p.get_ref());
    match (&raw.after, parallel) {
        (Some(after), _) if raw.parallel.is_some() => {
            check.problem(
                after.span(),
                "a step takes `after` or `parallel`, not both",
                "`after = [\"a\", \"b\"]` names what the step waits for; `parallel = true` runs it alongside the step above",
            );
            None
        }
        (Some(after), _) => {
            let mut indices = Vec::new();
            for name in after.get_ref() {
                match all[..index]
                    .iter()
                    .position(|s| s.name.get_ref().trim() == name)
                {
                    Some(i) => indices.push(i),
                    None => {
                        check.problem(
                            after.span(),
                            format!("kind `{kind}`: `after` names `{name}`, which is not a step above this one"),
                            "a step may only wait for steps written above it in the same kind",
                        );
                        return None;
                    }
                }
            }
            Some(indices)
        }
        (None, true) => Some(
            index
                .checked_sub(1)
                .and_then(|i| above.get(i))
                .map_or_else(Vec::new, |s| s.after.clone()),
        ),
        (None, false) => Some(index.checked_sub(1).into_iter().collect()),
    }
}

/// Every step `after` waits for, directly or not.
fn ancestors(above: &[StepSpec], after: &[usize]) -> Vec<usize> {
    let mut seen: Vec<usize> = Vec::new();
    let mut todo: Vec<usize> = after.to_vec();
    while let Some(i) = todo.pop() {
        if !seen.contains(&i) {
            seen.push(i);
            if let Some(s) = above.get(i) {
                todo.extend(&s.after);
            }
        }
    }
    seen.sort_unstable();
    seen
}

fn names(above: &[StepSpec], indices: &[usize]) -> String {
    let list: Vec<String> = indices
        .iter()
        .filter_map(|&i| above.get(i))
        .map(|s| format!("`{}`", s.name))
        .collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// What is wrong with a `steps.` placeholder, if anything.
fn check_reference(placeholder: &str, above: &[StepSpec], ancestors: &[usize]) -> Option<String> {
    let rest = placeholder.strip_prefix("steps.")?;
    let mut parts = rest.splitn(3, '.');
    let step = parts.next().unwrap_or_default();
    let field = parts.next();
    let Some(index) = above.iter().position(|s| s.name == step) else {
        return Some(format!(
            "placeholder `{{{{{placeholder}}}}}` names step `{step}`, which is not a step above this one"
        ));
    };
    if !ancestors.contains(&index) {
        return Some(format!(
            "placeholder `{{{{{placeholder}}}}}` reads step `{step}`, which this step does not wait for"
        ));
    }
    match (field, parts.next()) {
        (Some("body"), _) | (Some("status"), None) => None,
        _ => Some(format!(
            "placeholder `{{{{{placeholder}}}}}` must read `body` (optionally `.FIELD...`) or `status` of step `{step}`"
        )),
    }
}

/// The span of `{{placeholder}}` inside the value at `span`, or the value's span.
fn placeholder_span(source: &str, span: Range<usize>, placeholder: &str) -> Range<usize> {
    source
        .get(span.clone())
        .and_then(|text| {
            let at = text.find(placeholder)?;
            Some(text[..at].rfind("{{").unwrap_or(at))
        })
        .map_or(span.clone(), |at| {
            let start = span.start + at;
            start..start + placeholder.len()
        })
}

/// Checks a kind's `paginate` table: how the next page is found, its size and the items.
fn check_paginate(check: &mut Checker<'_>, raw: &Spanned<RawPaginate>) -> Option<Paginate> {
    let p = raw.get_ref();
    let next = check_next_page(check, raw)?;
    let page_size = check_page_size(check, p)?;
    let items = match &p.items {
        Some(i) => Some(json_pointer(check, i, "items")?),
        None => None,
    };
    let max_pages = match &p.max_pages {
        Some(m) => check
            .positive(m, "max_pages", "the most pages to follow, e.g. 1000")
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))?,
        None => DEFAULT_MAX_PAGES,
    };
    Some(Paginate {
        next,
        page_size,
        items,
        max_pages,
    })
}

/// A `paginate` key that holds a JSON pointer (empty, or starting with `/`).
fn json_pointer(check: &mut Checker<'_>, value: &Spanned<String>, key: &str) -> Option<String> {
    let text = value.get_ref();
    if !(text.is_empty() || text.starts_with('/')) {
        check.problem(
            value.span(),
            format!("`{key}` must be a JSON pointer starting with `/`, found `{text}`"),
            "e.g. \"/meta/after_cursor\" for {\"meta\": {\"after_cursor\": \"...\"}}",
        );
        return None;
    }
    Some(text.clone())
}

/// How the next page is found: exactly one of `cursor` (with `param`), `next` or `link`.
fn check_next_page(check: &mut Checker<'_>, raw: &Spanned<RawPaginate>) -> Option<NextPage> {
    let p = raw.get_ref();
    let ways = usize::from(p.cursor.is_some())
        + usize::from(p.next.is_some())
        + usize::from(p.link == Some(true));
    if ways != 1 {
        check.problem(
            raw.span(),
            "`paginate` needs exactly one of `cursor` (with `param`), `next` or `link = true`",
            "cursor = \"/meta/after_cursor\" and param = \"page[after]\"; or next = \"/links/next\"; or link = true for the `Link: rel=\"next\"` header",
        );
        return None;
    }
    Some(match (&p.cursor, &p.param, &p.next) {
        (Some(cursor), Some(param), None) => NextPage::Cursor {
            pointer: json_pointer(check, cursor, "cursor")?,
            param: param.get_ref().clone(),
        },
        (Some(cursor), None, None) => {
            check.problem(
                cursor.span(),
                "`cursor` needs `param`: the query parameter that sends the cursor back",
                "e.g. param = \"page[after]\" (Zendesk) or param = \"cursor\" (Slack)",
            );
            return None;
        }
        (None, _, Some(next)) => NextPage::Url {
            pointer: json_pointer(check, next, "next")?,
        },
        _ => NextPage::Link,
    })
}

/// The page size and the query parameter that sets it: both or neither
/// (`Some(None)` for neither, `None` when broken).
fn check_page_size(check: &mut Checker<'_>, p: &RawPaginate) -> Option<Option<(String, u64)>> {
    match (&p.page_size, &p.size_param) {
        (Some(size), Some(param)) => {
            let n = check.positive(
                size,
                "page_size",
                "the provider's largest page size, e.g. 100",
            )?;
            Some(Some((param.get_ref().clone(), n.get())))
        }
        (None, None) => Some(None),
        (Some(size), None) => {
            check.problem(
                size.span(),
                "`page_size` needs `size_param`: the query parameter that sets it",
                "e.g. size_param = \"page[size]\" (Zendesk) or \"per_page\" (GitHub)",
            );
            None
        }
        (None, Some(param)) => {
            check.problem(
                param.span(),
                "`size_param` needs `page_size`",
                "set page_size to the provider's largest page size, e.g. 100",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError, ConfigProblem, NextPage};

    const HEAD: &str = "[api]\nbase_url = \"http://x\"\n[request]\npath = \"/\"\n";

    fn problems(steps: &str) -> Vec<ConfigProblem> {
        match Config::parse(Path::new("c.toml"), &format!("{HEAD}{steps}")) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn steps_default_to_sequential_and_parallel_runs_alongside_the_step_above() {
        let text = format!(
            "{HEAD}[[kinds.c.steps]]\nname = \"a\"\npath = \"/a\"\n[[kinds.c.steps]]\nname = \"b\"\npath = \"/b\"\nbody = '{{}}'\n[[kinds.c.steps]]\nname = \"c\"\nparallel = true\npath = \"/c\"\n[[kinds.c.steps]]\nname = \"d\"\nafter = [\"b\", \"c\"]\npath = \"/d\"\n[kinds.c.steps.paginate]\nlink = true\n"
        );
        let config = Config::parse(Path::new("c.toml"), &text).unwrap();
        let plan = &config.plans["c"];
        let after: Vec<_> = plan.steps.iter().map(|s| s.after.clone()).collect();
        assert_eq!(after, [vec![], vec![0], vec![0], vec![1, 2]]);
        let methods: Vec<_> = plan.steps.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(methods, ["GET", "POST", "GET", "GET"], "POST with a body");
        assert_eq!(
            plan.steps[3].paginate.as_ref().unwrap().next,
            NextPage::Link
        );
    }

    #[test]
    fn a_reference_to_an_unknown_step_points_at_the_placeholder() {
        let p = problems(
            "[[kinds.c.steps]]\nname = \"create\"\npath = \"/c\"\n[[kinds.c.steps]]\nname = \"get\"\npath = \"/c/{{steps.craete.body.id}}\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].col), (10, 12), "{p:?}");
        assert!(p[0].message.contains("`craete`"), "{}", p[0].message);
        assert!(p[0].hint.contains("`create`"), "{}", p[0].hint);
    }

    #[test]
    fn a_step_may_read_only_steps_it_waits_for() {
        let p = problems(
            "[[kinds.c.steps]]\nname = \"a\"\npath = \"/a\"\n[[kinds.c.steps]]\nname = \"b\"\nparallel = true\npath = \"/b/{{steps.a.status}}\"\n[[kinds.c.steps]]\nname = \"c\"\npath = \"/c/{{steps.b.headers}}\"\nafter = [\"z\"]\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].message.contains("does not wait for"),
            "{}",
            p[0].message
        );
        assert_eq!(p[0].line, 11);
        assert!(p[1].message.contains("`z`"), "{}", p[1].message);
    }

    #[test]
    fn pagination_needs_exactly_one_way_to_the_next_page() {
        let p = problems(
            "[[kinds.c.steps]]\nname = \"a\"\npath = \"/a\"\npaginate = { link = true, next = \"/links/next\" }\n[[kinds.c.steps]]\nname = \"b\"\npath = \"/b\"\npaginate = { cursor = \"meta.cursor\", param = \"c\", page_size = 0, size_param = \"n\" }\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].message.contains("exactly one"), "{}", p[0].message);
        assert_eq!(p[0].line, 8);
        assert!(p[1].message.contains("JSON pointer"), "{}", p[1].message);
        assert_eq!(p[1].line, 12);
    }
}
