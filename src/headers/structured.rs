//! The subset of HTTP Structured Field Values (RFC 8941) that the IETF rate-limit fields use.
//!
//! `RateLimit: "default";r=50;t=30` and `RateLimit-Policy: "burst";q=100;w=60, "day";q=1000`
//! are Lists of Items with Parameters; the older `RateLimit: limit=100, remaining=50,
//! reset=30` is a Dictionary. This file reads both into one shape, [`Member`], and owns
//! nothing about their meaning (that is `ietf.rs`). Spec:
//! <https://www.rfc-editor.org/rfc/rfc8941>.
//!
//! Deliberately lenient where leniency cannot change a meaning (optional whitespace around
//! `;` and `,`, upper-case keys), strict elsewhere: inner lists, non-ASCII and malformed
//! items make the whole field unreadable (`None`), as RFC 8941 §4.2 requires of a parser.
//! Never panics.

/// A bare item (RFC 8941 §3.3). Byte sequences are recognised but their content dropped:
/// nothing here needs it (the draft's `pk` partition key is opaque).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bare {
    Integer(i64),
    Decimal(f64),
    String(String),
    Token(String),
    Bytes,
    Boolean(bool),
}

impl Bare {
    /// A non-negative integer as a count.
    pub(super) fn as_count(&self) -> Option<u64> {
        match self {
            Bare::Integer(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    /// A non-negative integer or decimal as seconds.
    pub(super) fn as_seconds(&self) -> Option<std::time::Duration> {
        let secs = match self {
            // Integers are at most 15 digits (RFC 8941 §3.3.1): exact in an f64.
            Bare::Integer(n) => *n as f64,
            Bare::Decimal(d) => *d,
            _ => return None,
        };
        std::time::Duration::try_from_secs_f64(secs).ok()
    }

    /// A string or token as text.
    pub(super) fn as_text(&self) -> Option<&str> {
        match self {
            Bare::String(s) | Bare::Token(s) => Some(s),
            _ => None,
        }
    }
}

/// One member of a List (`key` is `None`) or a Dictionary (`key` is the member's name), with
/// its parameters in order. A Dictionary member written without a value (`a;x=1`) reads as a
/// List token; nothing here tells them apart, and nothing needs to.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Member {
    pub key: Option<String>,
    pub value: Bare,
    pub params: Vec<(String, Bare)>,
}

impl Member {
    /// The value of parameter `name`, if present.
    pub(super) fn param(&self, name: &str) -> Option<&Bare> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// Parses a List or Dictionary field value. An empty value is an empty list; any syntax
/// error is `None`.
pub(super) fn parse_members(input: &str) -> Option<Vec<Member>> {
    let mut cursor = Cursor {
        bytes: input.as_bytes(),
        pos: 0,
    };
    let mut members = Vec::new();
    cursor.skip_whitespace();
    if cursor.peek().is_none() {
        return Some(members);
    }
    loop {
        members.push(parse_member(&mut cursor)?);
        cursor.skip_whitespace();
        match cursor.bump() {
            None => return Some(members),
            Some(b',') => {
                cursor.skip_whitespace();
                // A trailing comma is an error (RFC 8941 §4.2.1).
                cursor.peek()?;
            }
            Some(_) => return None,
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn eat(&mut self, expected: u8) -> bool {
        let matched = self.peek() == Some(expected);
        if matched {
            self.pos += 1;
        }
        matched
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// Consumes bytes while `accept` holds and returns them as text (ASCII only).
    fn take_while(&mut self, accept: impl Fn(u8) -> bool) -> String {
        let mut text = String::new();
        while let Some(b) = self.peek().filter(|&b| accept(b)) {
            text.push(char::from(b));
            self.pos += 1;
        }
        text
    }
}

fn parse_member(cursor: &mut Cursor) -> Option<Member> {
    let first = parse_bare(cursor)?;
    let (key, value) = match first {
        Bare::Token(key) if cursor.eat(b'=') => {
            (Some(key.to_ascii_lowercase()), parse_bare(cursor)?)
        }
        value => (None, value),
    };
    let params = parse_params(cursor)?;
    Some(Member { key, value, params })
}

fn parse_params(cursor: &mut Cursor) -> Option<Vec<(String, Bare)>> {
    let mut params = Vec::new();
    loop {
        cursor.skip_whitespace();
        if !cursor.eat(b';') {
            return Some(params);
        }
        cursor.skip_whitespace();
        let key = cursor.take_while(is_key_char).to_ascii_lowercase();
        if key.is_empty() {
            return None;
        }
        let value = if cursor.eat(b'=') {
            parse_bare(cursor)?
        } else {
            Bare::Boolean(true)
        };
        params.push((key, value));
    }
}

fn parse_bare(cursor: &mut Cursor) -> Option<Bare> {
    match cursor.peek()? {
        b'-' | b'0'..=b'9' => parse_number(cursor),
        b'"' => parse_string(cursor),
        b':' => parse_bytes(cursor),
        b'?' => {
            cursor.bump();
            match cursor.bump()? {
                b'0' => Some(Bare::Boolean(false)),
                b'1' => Some(Bare::Boolean(true)),
                _ => None,
            }
        }
        b if b.is_ascii_alphabetic() || b == b'*' => {
            Some(Bare::Token(cursor.take_while(is_token_char)))
        }
        _ => None,
    }
}

/// RFC 8941 §4.2.4: at most 15 integer digits, at most 3 fraction digits.
fn parse_number(cursor: &mut Cursor) -> Option<Bare> {
    let negative = cursor.eat(b'-');
    let whole = cursor.take_while(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 {
        return None;
    }
    let sign = if negative { -1 } else { 1 };
    if !cursor.eat(b'.') {
        return Some(Bare::Integer(sign * whole.parse::<i64>().ok()?));
    }
    let fraction = cursor.take_while(|b| b.is_ascii_digit());
    if fraction.is_empty() || fraction.len() > 3 || whole.len() > 12 {
        return None;
    }
    let value: f64 = format!("{whole}.{fraction}").parse().ok()?;
    Some(Bare::Decimal(if negative { -value } else { value }))
}

/// RFC 8941 §4.2.5: printable ASCII, `\"` and `\\` the only escapes.
fn parse_string(cursor: &mut Cursor) -> Option<Bare> {
    cursor.bump();
    let mut text = String::new();
    loop {
        match cursor.bump()? {
            b'"' => return Some(Bare::String(text)),
            b'\\' => match cursor.bump()? {
                b @ (b'"' | b'\\') => text.push(char::from(b)),
                _ => return None,
            },
            b @ 0x20..=0x7e => text.push(char::from(b)),
            _ => return None,
        }
    }
}

/// RFC 8941 §4.2.7: `:base64:`; the content is checked for its alphabet and dropped.
fn parse_bytes(cursor: &mut Cursor) -> Option<Bare> {
    cursor.bump();
    cursor.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    cursor.eat(b':').then_some(Bare::Bytes)
}

/// `tchar / ":" / "/"` (RFC 8941 §3.3.4).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
}

/// `lcalpha / DIGIT / "_" / "-" / "." / "*"` (RFC 8941 §3.1.2), upper case tolerated.
fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_-.*".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(value: Bare, params: &[(&str, Bare)]) -> Member {
        Member {
            key: None,
            value,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn list_of_named_items_with_integer_params() {
        let parsed = parse_members(r#""burst";q=100;w=60, "day";q=1000;w=86400"#);
        assert_eq!(
            parsed,
            Some(vec![
                member(
                    Bare::String("burst".into()),
                    &[("q", Bare::Integer(100)), ("w", Bare::Integer(60))]
                ),
                member(
                    Bare::String("day".into()),
                    &[("q", Bare::Integer(1000)), ("w", Bare::Integer(86400))]
                ),
            ])
        );
    }

    #[test]
    fn tokens_bytes_spaces_after_semicolons_and_escapes() {
        let parsed = parse_members(r#"default; r=95; t=30; pk=:cHsdsRa894==:, "a\"b";q=1.5;flag"#)
            .expect("valid field");
        assert_eq!(parsed[0].value, Bare::Token("default".into()));
        assert_eq!(parsed[0].param("r"), Some(&Bare::Integer(95)));
        assert_eq!(parsed[0].param("pk"), Some(&Bare::Bytes));
        assert_eq!(parsed[1].value, Bare::String("a\"b".into()));
        assert_eq!(parsed[1].param("q"), Some(&Bare::Decimal(1.5)));
        assert_eq!(parsed[1].param("flag"), Some(&Bare::Boolean(true)));
    }

    #[test]
    fn dictionary_members_carry_their_key() {
        let parsed = parse_members("limit=100, remaining=50, reset=30").expect("valid field");
        let keys: Vec<_> = parsed.iter().map(|m| m.key.as_deref()).collect();
        assert_eq!(keys, [Some("limit"), Some("remaining"), Some("reset")]);
        assert_eq!(parsed[2].value, Bare::Integer(30));
    }

    #[test]
    fn bare_integer_items_as_in_older_drafts() {
        let parsed = parse_members("10, 10;w=1, 50;w=60").expect("valid field");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[2].value.as_count(), Some(50));
        assert_eq!(
            parsed[2].param("w").and_then(Bare::as_seconds),
            Some(std::time::Duration::from_secs(60))
        );
    }

    #[test]
    fn malformed_fields_are_none() {
        for text in [
            "a,",
            ",a",
            "\"unterminated",
            "(inner list)",
            "a;=1",
            "1234567890123456",
            "1.2345",
            "a b",
            "\"é\"",
            "é",
            "?2",
            ":abc",
            "a;q=",
        ] {
            assert_eq!(parse_members(text), None, "{text:?}");
        }
        assert_eq!(parse_members("  "), Some(vec![]));
    }
}
