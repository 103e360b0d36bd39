//! Secrets in the config: where they may stand, how the stored snapshot redacts them, and
//! how their resolved values are masked in whatever comes back from the API.
//!
//! A secret may stand in any header value (`[api] headers`, `[request] headers`, a step's
//! `headers`) and in `base_url` (its user info and credential-like query values). The
//! config is meant to name them as `${VAR}` references; [`redact_header_value`] and
//! [`redact_url`] turn each such value into what the snapshot in the db keeps: references
//! and `{{field}}` placeholders as written, every literal word (and every `${VAR:-default}`
//! default) replaced by `<redacted>`. [`Secrets`] holds the resolved values of a run and
//! masks them in response bodies, headers and transport errors before anything is stored
//! or printed.
//!
//! Invariants: redaction works on the parsed value and the snapshot re-emits it as a TOML
//! basic string over the value's whole span, so no spelling (escapes, literal strings,
//! multi-line strings) carries a literal through; a redacted value is still valid TOML and
//! still parses as the same kind of value.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// What replaces a secret in the snapshot and in anything masked.
pub const REDACTED: &str = "<redacted>";

/// Authorization schemes kept in a redacted value (`Bearer <redacted>`), lower case.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "bot", "digest"];

/// Name fragments that mark a header or query parameter as carrying a credential.
const CREDENTIAL_NAMES: &[&str] = &[
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "cookie",
    "sig",
    "session",
    "credential",
];

/// Where a secret may stand in the config: one header value, or `base_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The table and key as a user reads it, e.g. `[request] headers.x-api-key`.
    pub key: String,
    /// The header's name (empty for `base_url`).
    pub header: String,
    /// 1-based line of the value.
    pub line: usize,
    /// Byte span of the value's TOML token (quotes included) in the config text.
    pub span: Range<usize>,
    /// The value as parsed.
    pub value: String,
    /// The redacted value the snapshot keeps.
    pub redacted: String,
    /// Whether a literal credential was redacted (the user should move it to the
    /// environment).
    pub literal_secret: bool,
}

impl Site {
    /// A header value's site.
    pub fn header(table: &str, name: &str, line: usize, span: Range<usize>, value: &str) -> Site {
        let (redacted, literal) = redact_header_value(value);
        Site {
            key: format!("{table} headers.{name}"),
            header: name.to_string(),
            line,
            span,
            value: value.to_string(),
            literal_secret: literal && is_credential_name(name),
            redacted,
        }
    }

    /// `base_url`'s site.
    pub fn base_url(line: usize, span: Range<usize>, value: &str) -> Site {
        let (redacted, literal) = redact_url(value);
        Site {
            key: "[api] base_url".to_string(),
            header: String::new(),
            line,
            span,
            value: value.to_string(),
            literal_secret: literal,
            redacted,
        }
    }

    /// The values never to echo: each `${VAR}` reference's value (or default) and, for a
    /// credential header or a credential query parameter of `base_url`, its literal words.
    pub fn secret_parts(&self, lookup: &impl Fn(&str) -> Option<String>) -> Vec<String> {
        if !self.header.is_empty() {
            return secret_parts(&self.header, &self.value, lookup);
        }
        let mut out = secret_parts("", &self.value, lookup);
        let (base, query) = self.value.split_once('?').unwrap_or((&self.value, ""));
        if let Some((_, pass)) = base
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next()?.rsplit_once('@'))
            .and_then(|(info, _)| info.split_once(':'))
        {
            out.extend(secret_parts("password", pass, lookup));
        }
        for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            if is_credential_name(name) {
                out.extend(secret_parts(name, value, lookup));
            }
        }
        out
    }

    /// The warning for a literal secret, naming the line and what to write instead.
    pub fn warning(&self, path: &std::path::Path) -> Option<String> {
        self.literal_secret.then(|| {
            format!(
                "{}:{}: `{}` holds a literal secret; it is redacted from the run's db, but move it to the environment\n  hint: write the secret as a reference such as `${{API_KEY}}` (with no `:-default`) and export API_KEY=... before running",
                path.display(),
                self.line,
                self.key
            )
        })
    }
}

/// Whether a header or query parameter `name` looks like it carries a credential.
pub fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_NAMES.iter().any(|n| name.contains(n))
}

/// One piece of a header value: a `${...}` reference, a `{{...}}` placeholder or literal
/// text.
enum Piece<'a> {
    Reference {
        var: &'a str,
        default: Option<&'a str>,
    },
    Placeholder(&'a str),
    Literal(&'a str),
}

fn pieces(value: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = value;
    loop {
        let next = [rest.find("${"), rest.find("{{")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else { break };
        let reference = rest[at..].starts_with("${");
        let close = if reference { "}" } else { "}}" };
        let Some(end) = rest[at + 2..].find(close) else {
            break;
        };
        if at > 0 {
            out.push(Piece::Literal(&rest[..at]));
        }
        let inner = &rest[at + 2..at + 2 + end];
        out.push(if reference {
            match inner.split_once(":-") {
                Some((var, default)) => Piece::Reference {
                    var,
                    default: Some(default),
                },
                None => Piece::Reference {
                    var: inner,
                    default: None,
                },
            }
        } else {
            Piece::Placeholder(&rest[at..at + 2 + end + close.len()])
        });
        rest = &rest[at + 2 + end + close.len()..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    out
}

/// Redacts literal words (all but whitespace and an authorization scheme) in `text`;
/// returns whether anything was redacted.
fn redact_literal(text: &str, out: &mut String) -> bool {
    let mut redacted = false;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String, redacted: &mut bool| {
        if word.is_empty() {
            return;
        }
        if SCHEMES.contains(&word.to_ascii_lowercase().as_str()) {
            out.push_str(word);
        } else {
            out.push_str(REDACTED);
            *redacted = true;
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() {
            flush(&mut word, out, &mut redacted);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, out, &mut redacted);
    redacted
}

/// A header value as the snapshot keeps it: `${VAR}` references and `{{field}}`
/// placeholders as written, `${VAR:-default}` with its default redacted, every literal
/// word but an authorization scheme redacted. Also says whether anything was redacted.
///
/// ```
/// use ratebound::config::secrets::redact_header_value;
///
/// assert_eq!(redact_header_value("Bearer ${KEY}").0, "Bearer ${KEY}");
/// assert_eq!(redact_header_value("Bearer sk-1").0, "Bearer <redacted>");
/// assert_eq!(redact_header_value("${KEY:-sk-dev}").0, "${KEY:-<redacted>}");
/// ```
pub fn redact_header_value(value: &str) -> (String, bool) {
    let mut out = String::with_capacity(value.len());
    let mut redacted = false;
    for piece in pieces(value) {
        match piece {
            Piece::Reference { var, default } => {
                out.push_str("${");
                out.push_str(var);
                if let Some(default) = default {
                    out.push_str(":-");
                    if !default.is_empty() {
                        out.push_str(REDACTED);
                        redacted = true;
                    }
                }
                out.push('}');
            }
            Piece::Placeholder(text) => out.push_str(text),
            Piece::Literal(text) => redacted |= redact_literal(text, &mut out),
        }
    }
    (out, redacted)
}

/// `base_url` as the snapshot keeps it: a password in its user info and the values of
/// credential-like query parameters redacted (`${VAR}` references kept).
///
/// ```
/// use ratebound::config::secrets::redact_url;
///
/// assert_eq!(redact_url("https://a.example/v1?key=abc&n=2").0, "https://a.example/v1?key=<redacted>&n=2");
/// assert_eq!(redact_url("https://a.example/v1?key=${KEY}").0, "https://a.example/v1?key=${KEY}");
/// ```
pub fn redact_url(url: &str) -> (String, bool) {
    let mut redacted = false;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let authority = match authority.rsplit_once('@') {
                Some((info, host)) => {
                    let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                    let (pass, r) = redact_header_value(pass);
                    redacted |= r;
                    if pass.is_empty() {
                        format!("{user}@{host}")
                    } else {
                        format!("{user}:{pass}@{host}")
                    }
                }
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, value)) if is_credential_name(name) => {
                    let (value, r) = redact_header_value(value);
                    redacted |= r;
                    format!("{name}={value}")
                }
                _ => param.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    (out, redacted)
}

/// The values of `${VAR}` references in `value`, resolved with `lookup` (defaults
/// included), and for a credential `name` its literal words: what must never be echoed.
pub fn secret_parts(
    name: &str,
    value: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for piece in pieces(value) {
        match piece {
            Piece::Reference { var, default } => {
                out.extend(lookup(var).or(default.map(str::to_string)));
            }
            Piece::Literal(text) if is_credential_name(name) => {
                out.extend(
                    text.split_whitespace()
                        .filter(|w| !SCHEMES.contains(&w.to_ascii_lowercase().as_str()))
                        .map(str::to_string),
                );
            }
            Piece::Literal(_) | Piece::Placeholder(_) => {}
        }
    }
    out
}

/// Writes `value` as a TOML basic string.
pub fn toml_string(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Secret values resolved for a run, masked in everything that comes back from the API.
///
/// Values shorter than [`Secrets::MIN_LEN`] bytes are not masked: they cannot be told
/// apart from ordinary text.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Longest first, so a value containing another is masked whole.
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// The shortest value masked, in bytes.
    pub const MIN_LEN: usize = 4;

    /// Adds a secret value, and its JSON-escaped spellings where they differ.
    pub fn add(&mut self, value: &str) {
        if value.len() < Self::MIN_LEN || self.values.iter().any(|v| v == value) {
            return;
        }
        self.values.push(value.to_string());
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json.trim_matches('"');
        // JSON may also escape `/` (`\/`), as PHP's json_encode does.
        for spelling in [json.to_string(), json.replace('/', "\\/")] {
            if spelling != value && !spelling.is_empty() && !self.values.contains(&spelling) {
                self.values.push(spelling);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by `<redacted>`.
    pub fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = Cow::Owned(out.replace(value.as_str(), REDACTED));
            }
        }
        out
    }

    /// `bytes` with every secret value replaced by `<redacted>` (bytes need not be UTF-8).
    pub fn mask_bytes(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for value in &self.values {
            let needle = value.as_bytes();
            if !out.windows(needle.len()).any(|w| w == needle) {
                continue;
            }
            let mut masked = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(needle) {
                    masked.extend_from_slice(REDACTED.as_bytes());
                    i += needle.len();
                } else {
                    masked.push(out[i]);
                    i += 1;
                }
            }
            out = masked;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_keep_references_and_redact_literals() {
        let cases = [
            ("Bearer ${KEY}", "Bearer ${KEY}", false),
            ("Bearer sk-live-1", "Bearer <redacted>", true),
            ("${KEY:-sk-dev}", "${KEY:-<redacted>}", true),
            ("${KEY:-}", "${KEY:-}", false),
            ("{{id}}", "{{id}}", false),
            ("sk-abc", "<redacted>", true),
            ("Bearer ${A}${B}", "Bearer ${A}${B}", false),
        ];
        for (value, want, redacted) in cases {
            assert_eq!(
                redact_header_value(value),
                (want.to_string(), redacted),
                "{value}"
            );
        }
    }

    #[test]
    fn urls_redact_user_info_and_credential_query_values() {
        assert_eq!(
            redact_url("https://u:pw@h.example/p?api_key=abc&model=x").0,
            "https://u:<redacted>@h.example/p?api_key=<redacted>&model=x"
        );
        assert_eq!(
            redact_url("mock://openai?rpm=600&tpm=100000"),
            ("mock://openai?rpm=600&tpm=100000".to_string(), false)
        );
    }

    #[test]
    fn masking_replaces_every_value_and_its_json_spelling() {
        let mut s = Secrets::default();
        s.add("sk-live/abc");
        s.add("ab");
        assert_eq!(s.mask("k=sk-live/abc"), "k=<redacted>");
        assert_eq!(s.mask("ab"), "ab", "too short to mask");
        let body = br#"{"echo": "sk-live\/abc", "raw": "sk-live/abc"}"#.to_vec();
        let masked = String::from_utf8(s.mask_bytes(body)).unwrap();
        assert!(!masked.contains("sk-live"), "{masked}");
    }

    #[test]
    fn toml_strings_round_trip() {
        let value = "a\"b\\c\nd";
        let parsed: toml::Value = toml::from_str(&format!("x = {}", toml_string(value))).unwrap();
        assert_eq!(parsed["x"].as_str(), Some(value));
    }
}
