//! Request templates: `{{field}}` placeholders filled from an item's fields.
//!
//! Owns parsing a template once (at config load) and rendering it per item. Each template
//! has a [`TemplateKind`] that decides how an inserted value is written, so that any text in
//! the work list reaches the API exactly as it stands:
//! - [`TemplateKind::Json`] (request body): inside a JSON string literal of the template the
//!   value is JSON-escaped; outside one a string value is inserted raw (so
//!   `"max_tokens": {{n}}` with `n = "200"` gives `200`) and any other value as its JSON text.
//! - [`TemplateKind::Path`] (URL path and query): the value is percent-encoded, so it stays
//!   one path segment or one query value.
//! - [`TemplateKind::Text`] (header values): the value is inserted raw.
//!
//! Left to others: checking that a rendered body is valid JSON and that placeholders name
//! real columns (`job`, `cli`), and header-value validity (the HTTP client).
//!
//! Invariants: a parsed template has no unclosed or empty placeholder; whether a placeholder
//! stands inside a JSON string is decided once, at parse time, from the template's own text
//! (quotes scanned honouring backslash escapes), never from the inserted values. Names are
//! looked up as they stand: a dotted name like `steps.create.body.id` is one plain key.

pub mod body;

use std::borrow::Cow;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

/// Bytes left as they are in [`TemplateKind::Path`] values: RFC 3986's unreserved
/// characters. Everything else, `/ ? & = #` and space included, is percent-encoded.
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Where a template's output goes, which decides how inserted values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// A JSON request body: values are JSON-escaped inside string literals.
    Json,
    /// A URL path and query: values are percent-encoded.
    Path,
    /// A header value: values are inserted raw.
    Text,
}

/// Why a template's text cannot be parsed. Offsets are bytes into the template's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` has no matching `}}`.
    #[error("`{{{{` at byte {offset} is never closed with `}}}}`")]
    Unclosed {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A placeholder has no name between its braces.
    #[error("placeholder at byte {offset} has no field name")]
    EmptyName {
        /// Byte offset of the `{{`.
        offset: usize,
    },
    /// A placeholder's name holds a brace, as in `{{{x}}}`.
    #[error("placeholder `{name}` at byte {offset} has a brace in its name")]
    BraceInName {
        /// Byte offset of the `{{`.
        offset: usize,
        /// The name as written.
        name: String,
    },
}

/// Why a template cannot be rendered for an item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A placeholder names a field the item lacks.
    #[error("field `{field}` is used by the template but missing from the item")]
    MissingField {
        /// The placeholder's name.
        field: String,
    },
    /// A path placeholder's value would make a whole `.` or `..` segment, which every URL
    /// parser resolves (`/items/../chat` is `/chat`, and so is `%2E%2E`): it would change
    /// which endpoint the request reaches.
    #[error(
        "the value of field `{field}` would be a `.` or `..` path segment, which changes the request's path"
    )]
    DotSegment {
        /// The placeholder's name.
        field: String,
    },
    /// A header value would hold a control character (CR, LF, NUL...), which would end the
    /// header or corrupt the request; the value itself is never shown.
    #[error(
        "the header value rendered from field `{field}` holds a control character (CR, LF or similar)"
    )]
    ControlInHeader {
        /// The placeholder whose value brought it in.
        field: String,
    },
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Text copied as it stands.
    Literal(String),
    /// A `{{name}}`; `in_string` is true when it stands inside a JSON string literal.
    Field { name: String, in_string: bool },
}

/// A template parsed once and rendered per item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    kind: TemplateKind,
    segments: Vec<Segment>,
    /// Placeholder names, each once, in order of first appearance.
    names: Vec<String>,
}

impl Template {
    /// Parses `src`. Whitespace around a name is ignored (`{{ prompt }}` is `{{prompt}}`).
    ///
    /// # Errors
    /// [`TemplateError`] with the byte offset of the bad `{{`: unclosed, empty name, or a
    /// brace inside the name.
    ///
    /// ```
    /// use ratebound::template::{Template, TemplateKind};
    ///
    /// let t = Template::parse("/v1/users/{{user}}/posts?tag={{ tag }}", TemplateKind::Path)?;
    /// assert_eq!(t.placeholders().collect::<Vec<_>>(), ["user", "tag"]);
    /// assert!(Template::parse("{\"a\": \"{{x\"}", TemplateKind::Json).is_err());
    /// # Ok::<(), ratebound::template::TemplateError>(())
    /// ```
    pub fn parse(src: &str, kind: TemplateKind) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut quotes = JsonQuotes::default();
        let mut rest = src;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            let (literal, after) = (&rest[..open], &rest[open + 2..]);
            let start = offset + open;
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed { offset: start })?;
            let name = after[..close].trim();
            if name.is_empty() {
                return Err(TemplateError::EmptyName { offset: start });
            }
            if name.contains(['{', '}']) {
                return Err(TemplateError::BraceInName {
                    offset: start,
                    name: name.to_owned(),
                });
            }
            if !literal.is_empty() {
                quotes.scan(literal);
                segments.push(Segment::Literal(literal.to_owned()));
            }
            quotes.escaped = false;
            segments.push(Segment::Field {
                name: name.to_owned(),
                in_string: kind == TemplateKind::Json && quotes.in_string,
            });
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
            let consumed = open + 2 + close + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Template {
            kind,
            segments,
            names,
        })
    }

    /// The same template with every literal piece rewritten by `f` (placeholders and the
    /// values later inserted are untouched): how `${VAR}` references in header templates are
    /// resolved at run start without ever expanding a work-list value.
    ///
    /// # Errors
    /// The first error `f` returns.
    pub fn map_literals<E>(
        &self,
        mut f: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<Template, E> {
        let segments = self
            .segments
            .iter()
            .map(|segment| match segment {
                Segment::Literal(text) => f(text).map(Segment::Literal),
                field => Ok(field.clone()),
            })
            .collect::<Result<_, E>>()?;
        Ok(Template {
            kind: self.kind,
            segments,
            names: self.names.clone(),
        })
    }

    /// The `"model"` of a JSON body template when it is written as a literal string, for
    /// checking prices before the first request (`None` when absent or a placeholder).
    pub fn literal_model(&self) -> Option<String> {
        // Every placeholder as `0`: valid JSON inside a string and outside one.
        let vars: Map<String, Value> = self
            .names
            .iter()
            .map(|n| (n.clone(), Value::String("0".into())))
            .collect();
        let body: Value = serde_json::from_str(&self.render(&vars).ok()?).ok()?;
        let model = body.get("model")?.as_str()?;
        (model != "0").then(|| model.to_string())
    }

    /// Checks that `vars` has a value for every placeholder, without rendering.
    ///
    /// # Errors
    /// [`RenderError::MissingField`] for the first placeholder `vars` lacks: the error
    /// [`Template::render`] gives first when there is one.
    pub fn check_fields(&self, vars: &Map<String, Value>) -> Result<(), RenderError> {
        match self
            .names
            .iter()
            .find(|name| !vars.contains_key(name.as_str()))
        {
            Some(name) => Err(RenderError::MissingField {
                field: name.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Whether every placeholder stands inside a JSON string literal of the template's
    /// text (always false for other kinds): an inserted value then changes only the text
    /// of a string, never the body's structure.
    pub fn fields_in_strings(&self) -> bool {
        self.kind == TemplateKind::Json
            && self.segments.iter().all(|segment| match segment {
                Segment::Literal(_) => true,
                Segment::Field { in_string, .. } => *in_string,
            })
    }

    /// The kind this template was parsed as.
    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// The placeholder names, each once, in order of first appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Fills every placeholder from `vars`, writing values as the template's kind requires
    /// (see the module docs). A string value is inserted as its text; any other value as
    /// its JSON text (`42`, `true`, `null`, `{"a":1}`).
    ///
    /// # Errors
    /// [`RenderError::MissingField`] for the first placeholder whose name is not in `vars`.
    ///
    /// ```
    /// use ratebound::template::{Template, TemplateKind};
    /// use serde_json::json;
    ///
    /// let t = Template::parse(r#"{"n": {{n}}, "q": "{{q}}"}"#, TemplateKind::Json)?;
    /// let vars = json!({"n": "200", "q": "say \"hi\""});
    /// let body = t.render(vars.as_object().expect("an object"))?;
    /// assert_eq!(body, r#"{"n": 200, "q": "say \"hi\""}"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn render(&self, vars: &Map<String, Value>) -> Result<String, RenderError> {
        // The literals plus each text value and a little room for escapes: one allocation
        // for most renders.
        let size: usize = (self.segments.iter())
            .map(|s| match s {
                Segment::Literal(text) => text.len(),
                Segment::Field { name, .. } => match vars.get(name) {
                    Some(Value::String(s)) => s.len() + 8,
                    _ => 32,
                },
            })
            .sum();
        let mut out = String::with_capacity(size);
        // Path values that are all dots, with where they landed, to check their segments.
        let mut dots: Vec<(usize, &str)> = Vec::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field { name, in_string } => {
                    let value = vars.get(name).ok_or_else(|| RenderError::MissingField {
                        field: name.clone(),
                    })?;
                    let text = match value {
                        Value::String(s) => Cow::Borrowed(s.as_str()),
                        other => Cow::Owned(other.to_string()),
                    };
                    match self.kind {
                        TemplateKind::Json if *in_string => push_json_escaped(&mut out, &text),
                        TemplateKind::Text
                            if text.contains(|c: char| c.is_control() && c != '\t') =>
                        {
                            return Err(RenderError::ControlInHeader {
                                field: name.clone(),
                            });
                        }
                        TemplateKind::Json | TemplateKind::Text => out.push_str(&text),
                        TemplateKind::Path => {
                            if matches!(&*text, "." | "..") {
                                dots.push((out.len(), name));
                            }
                            out.extend(utf8_percent_encode(&text, PATH_VALUE));
                        }
                    }
                }
            }
        }
        if let Some((_, field)) = dots.iter().find(|(at, _)| is_dot_segment(&out, *at)) {
            return Err(RenderError::DotSegment {
                field: (*field).to_string(),
            });
        }
        Ok(out)
    }
}

/// Whether the path segment of `path` holding byte `at` (before any `?` or `#`) is `.`
/// or `..`.
fn is_dot_segment(path: &str, at: usize) -> bool {
    let end_of_path = path.find(['?', '#']).unwrap_or(path.len());
    if at >= end_of_path {
        return false;
    }
    let start = path[..at].rfind('/').map_or(0, |i| i + 1);
    let end = path[at..end_of_path]
        .find('/')
        .map_or(end_of_path, |i| at + i);
    matches!(&path[start..end], "." | "..")
}

/// Tracks whether a scan of JSON text stands inside a string literal.
#[derive(Debug, Default)]
struct JsonQuotes {
    in_string: bool,
    /// The previous character was a backslash inside a string.
    escaped: bool,
}

impl JsonQuotes {
    fn scan(&mut self, text: &str) {
        for c in text.chars() {
            if !self.in_string {
                self.in_string = c == '"';
            } else if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.in_string = false;
            }
        }
    }
}

/// Appends `text` escaped for the inside of a JSON string literal (RFC 8259 section 7):
/// quote, backslash and control characters are escaped, everything else is kept, as
/// `serde_json` writes it.
pub(crate) fn push_json_escaped(out: &mut String, text: &str) {
    out.reserve(text.len());
    let bytes = text.as_bytes();
    // Runs of characters that need no escape are copied whole: every byte that needs one
    // is ASCII, so `start..end` always falls on character boundaries.
    let mut start = 0;
    loop {
        let end = start + plain_prefix(&bytes[start..]);
        out.push_str(&text[start..end]);
        let Some(&b) = bytes.get(end) else {
            return;
        };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        }
        start = end + 1;
    }
}

/// The length of the longest prefix of `bytes` with nothing to escape in a JSON string.
/// Blocks of 16 bytes are tested whole, as arrays with no exit inside one: the compiler
/// makes each a few vector compares instead of 16 branches (5 times faster on prompts,
/// which rarely need an escape at all).
fn plain_prefix(bytes: &[u8]) -> usize {
    const BLOCK: usize = 16;
    // `|`, not `||`: with no branch per byte the block's test vectorizes.
    let needs = |b: u8| (b == b'"') | (b == b'\\') | (b < b' ');
    let mut plain = 0;
    for block in bytes.chunks_exact(BLOCK) {
        let Ok(block) = <&[u8; BLOCK]>::try_from(block) else {
            break;
        };
        if block.iter().fold(false, |any, &b| any | needs(b)) {
            break;
        }
        plain += BLOCK;
    }
    let rest = &bytes[plain..];
    plain + rest.iter().position(|&b| needs(b)).unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Map<String, Value> {
        v.as_object().expect("test vars are an object").clone()
    }

    fn render(src: &str, kind: TemplateKind, v: Value) -> String {
        Template::parse(src, kind)
            .unwrap()
            .render(&vars(v))
            .unwrap()
    }

    #[test]
    fn issue_12_dot_values_never_change_the_path() {
        let t = Template::parse("/v1/items/{{v}}/chat?q={{v}}", TemplateKind::Path).unwrap();
        for v in [".", ".."] {
            let err = t.render(&vars(json!({ "v": v }))).unwrap_err();
            assert_eq!(err, RenderError::DotSegment { field: "v".into() }, "{v}");
        }
        // Inside a longer segment, or in the query, dots are plain text.
        let t = Template::parse("/v1/items/x{{v}}/chat?q={{v}}", TemplateKind::Path).unwrap();
        assert_eq!(
            t.render(&vars(json!({"v": ".."}))).unwrap(),
            "/v1/items/x../chat?q=.."
        );
        assert_eq!(
            render("/a/{{v}}", TemplateKind::Path, json!({"v": "../b"})),
            "/a/..%2Fb",
            "a slash stays inside the segment"
        );
    }

    #[test]
    fn issue_12_a_header_value_with_a_line_break_is_refused() {
        let t = Template::parse("{{h}}", TemplateKind::Text).unwrap();
        let err = t.render(&vars(json!({"h": "a\r\nX: 1"}))).unwrap_err();
        assert_eq!(err, RenderError::ControlInHeader { field: "h".into() });
    }

    #[test]
    fn json_string_values_round_trip_exactly() {
        let nasty = "He said \"hi\" \\ back\nslash\ttab \u{1} </script> ünïcødé 🎸 '\r\u{7f}";
        let body = render(
            r#"{"content": "{{prompt}}"}"#,
            TemplateKind::Json,
            json!({ "prompt": nasty }),
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["content"], nasty);
    }

    #[test]
    fn json_placeholder_mid_string_keeps_surrounding_text() {
        let body = render(
            r#"{"m": "Bio of {{name}}, a \"{{genre}}\" artist"}"#,
            TemplateKind::Json,
            json!({ "name": "O'Brien \"K\"", "genre": "drill" }),
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["m"], "Bio of O'Brien \"K\", a \"drill\" artist");
    }

    #[test]
    fn json_outside_strings_inserts_raw_text_and_json_values() {
        let body = render(
            r#"{"max_tokens": {{n}}, "stream": {{s}}, "meta": {{m}}, "tags": {{t}}}"#,
            TemplateKind::Json,
            json!({ "n": "200", "s": false, "m": { "k": "v" }, "t": [1, "two"] }),
        );
        assert_eq!(
            body,
            r#"{"max_tokens": 200, "stream": false, "meta": {"k":"v"}, "tags": [1,"two"]}"#
        );
    }

    #[test]
    fn json_non_string_value_inside_string_is_escaped_json_text() {
        let body = render(
            r#"{"c": "data: {{m}} n={{n}}"}"#,
            TemplateKind::Json,
            json!({ "m": { "k": "v" }, "n": 7 }),
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["c"], r#"data: {"k":"v"} n=7"#);
    }

    #[test]
    fn json_escaped_quotes_in_template_do_not_end_the_string() {
        // The `\"` and `\\` inside the first string must not flip the in-string state.
        let src = r#"{"a": "x\"y\\", "b": {{n}}, "c": "{{s}}"}"#;
        let body = render(src, TemplateKind::Json, json!({ "n": "1", "s": "q\"" }));
        assert_eq!(body, r#"{"a": "x\"y\\", "b": 1, "c": "q\""}"#);
    }

    #[test]
    fn path_values_are_percent_encoded() {
        let path = render(
            "/v1/users/{{user}}/posts?q={{q}}&n={{n}}",
            TemplateKind::Path,
            json!({ "user": "a/b c", "q": "x&y=z?#ü", "n": 3 }),
        );
        assert_eq!(
            path,
            "/v1/users/a%2Fb%20c/posts?q=x%26y%3Dz%3F%23%C3%BC&n=3"
        );
    }

    #[test]
    fn path_keeps_unreserved_characters() {
        let path = render("/{{id}}", TemplateKind::Path, json!({ "id": "aZ09-._~" }));
        assert_eq!(path, "/aZ09-._~");
    }

    #[test]
    fn text_values_are_inserted_raw() {
        let text = render(
            "Bearer {{token}} \"{{n}}\"",
            TemplateKind::Text,
            json!({ "token": "a/b \"c\"", "n": 5 }),
        );
        assert_eq!(text, "Bearer a/b \"c\" \"5\"");
    }

    #[test]
    fn placeholders_are_listed_once_in_order_with_dotted_names() {
        let t = Template::parse(
            "{{b}}-{{ a }}-{{b}}-{{steps.create.body.id}}",
            TemplateKind::Text,
        )
        .unwrap();
        assert_eq!(
            t.placeholders().collect::<Vec<_>>(),
            ["b", "a", "steps.create.body.id"]
        );
        let out = t
            .render(&vars(
                json!({ "a": "1", "b": "2", "steps.create.body.id": "x" }),
            ))
            .unwrap();
        assert_eq!(out, "2-1-2-x");
    }

    #[test]
    fn template_without_placeholders_renders_as_is() {
        let t = Template::parse(r#"{"a": [{"b": 1}]}"#, TemplateKind::Json).unwrap();
        assert_eq!(t.placeholders().count(), 0);
        assert_eq!(t.render(&Map::new()).unwrap(), r#"{"a": [{"b": 1}]}"#);
    }

    #[test]
    fn missing_field_is_named() {
        let t = Template::parse("/x/{{id}}/{{other}}", TemplateKind::Path).unwrap();
        let err = t.render(&vars(json!({ "id": "1" }))).unwrap_err();
        assert_eq!(
            err,
            RenderError::MissingField {
                field: "other".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "field `other` is used by the template but missing from the item"
        );
    }

    #[test]
    fn unclosed_placeholder_reports_its_offset() {
        let err = Template::parse(r#"{"a": "{{x}}", "b": "{{y"}"#, TemplateKind::Json).unwrap_err();
        assert_eq!(err, TemplateError::Unclosed { offset: 21 });
        assert_eq!(err.to_string(), "`{{` at byte 21 is never closed with `}}`");
    }

    #[test]
    fn empty_name_reports_its_offset() {
        let err = Template::parse("/a/{{ }}", TemplateKind::Path).unwrap_err();
        assert_eq!(err, TemplateError::EmptyName { offset: 3 });
        assert_eq!(err.to_string(), "placeholder at byte 3 has no field name");
    }

    #[test]
    fn brace_in_name_is_refused() {
        let err = Template::parse("x{{{y}}}", TemplateKind::Text).unwrap_err();
        assert_eq!(
            err,
            TemplateError::BraceInName {
                offset: 1,
                name: "{y".into()
            }
        );
    }

    #[test]
    fn json_escaping_matches_serde_json_on_any_text() {
        let text = "caf\u{e9} \"q\" back\\slash\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f} \u{1f600} end";
        let mut out = String::new();
        push_json_escaped(&mut out, text);
        let quoted = serde_json::to_string(text).unwrap();
        assert_eq!(out, quoted[1..quoted.len() - 1]);
    }

    proptest::proptest! {
        /// Escapes anywhere in long text (past the 16-byte blocks, at their edges, none at
        /// all) come out as serde_json writes them.
        #[test]
        fn json_escaping_matches_serde_json_at_any_position(
            text in "([a-z \u{e9}\u{1f600}]{0,40}[\"\\\\\n\u{1}\u{1f}\t]?){0,6}"
        ) {
            let mut out = String::from("x");
            push_json_escaped(&mut out, &text);
            let quoted = serde_json::to_string(&text).unwrap();
            proptest::prop_assert_eq!(&out[1..], &quoted[1..quoted.len() - 1]);
        }
    }
}
