//! What a job's cost estimate reads of its JSON body (`model`, prompt characters, the most
//! output tokens), read straight from the rendered text.
//!
//! Every item's body is rendered and checked before the first request, a million or more
//! at import; building a `serde_json::Value` tree of each only to read three things from it
//! was most of that time. [`BodyFacts::parse`] walks the text once and keeps only what the
//! estimate reads; [`BodyFacts::of_value`] reads the same from a body already parsed (a
//! Batch line's).
//!
//! Invariant: `parse(text)` equals `of_value(&serde_json::from_str(text)?)` for every text,
//! and fails exactly when that parse fails, with the same error. Every value goes through
//! serde_json's `deserialize_any`, as building a `Value` does, so the syntax checks, the
//! number ranges, the string escapes and the nesting limit are the same ones (serde's
//! `IgnoredAny` would skip values with laxer checks). A key given twice counts with its
//! last value, as in a `Value`'s map.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The keys whose value is a limit on output tokens, the first present one wins.
const MAX_TOKEN_KEYS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// What the estimate reads of a request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyFacts {
    /// The body's `model`, when it is a string.
    pub model: Option<String>,
    /// Characters of the prompt: every message's `content` (the text parts of multi-part
    /// content too), `prompt` and `input`.
    pub prompt_chars: usize,
    /// The first of `max_tokens`, `max_completion_tokens`, `max_output_tokens` that is a
    /// whole number, 0 when none is.
    pub max_tokens: u64,
}

impl BodyFacts {
    /// Reads the facts from a body's JSON text.
    ///
    /// # Errors
    /// serde_json's error when `text` is not valid JSON (the one `serde_json::from_str`
    /// gives for a `Value`).
    pub fn parse(text: &str) -> Result<BodyFacts, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let found = Shape::Body.deserialize(&mut de)?;
        de.end()?;
        Ok(match found {
            Found::Body(facts) => facts,
            _ => BodyFacts::default(),
        })
    }

    /// Reads the facts from a parsed body.
    pub fn of_value(body: &Value) -> BodyFacts {
        let messages = body.get("messages").and_then(Value::as_array);
        let prompt_chars = messages
            .into_iter()
            .flatten()
            .map(|m| text_chars(m.get("content")));
        let other_chars = ["prompt", "input"].map(|key| text_chars(body.get(key)));
        BodyFacts {
            model: body
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string),
            prompt_chars: prompt_chars.chain(other_chars).sum(),
            max_tokens: MAX_TOKEN_KEYS
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_u64))
                .unwrap_or(0),
        }
    }

    /// Estimated prompt tokens: `ceil(prompt chars / 4)`.
    pub fn prompt_tokens(&self) -> u64 {
        u64::try_from(self.prompt_chars.div_ceil(4)).unwrap_or(u64::MAX)
    }
}

/// Characters of a prompt value: a string's, or those of an array's strings and of its
/// objects' `text`.
fn text_chars(value: Option<&Value>) -> usize {
    match value {
        Some(Value::String(s)) => s.chars().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.chars().count(),
                other => text_chars(other.get("text")),
            })
            .sum(),
        _ => 0,
    }
}

/// What a value is read as, by where it stands in the body.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// The body itself: an object's keys are read.
    Body,
    /// `model`: a string.
    Model,
    /// A limit on output tokens: a whole number.
    Count,
    /// `messages`: an array of messages.
    Messages,
    /// One message: an object's `content` is prompt text.
    Message,
    /// Prompt text: a string, or an array of parts.
    Text,
    /// One part of prompt text: a string, or an object's `text`.
    Part,
    /// Nothing is read (but the value is checked as a `Value` parse checks it).
    Skip,
}

/// What reading a value found.
enum Found {
    Nothing,
    Body(BodyFacts),
    Model(String),
    Count(u64),
    Chars(usize),
}

impl Found {
    fn chars(&self) -> usize {
        match self {
            Found::Chars(n) => *n,
            _ => 0,
        }
    }
}

/// The body's keys the facts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Model,
    Messages,
    Prompt,
    Input,
    /// An index into [`MAX_TOKEN_KEYS`].
    MaxTokens(usize),
    /// `content` of a message.
    Content,
    /// `text` of a part.
    PartText,
    Other,
}

/// Reads an object key in the place `Shape` stands for.
struct KeyOf(Shape);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Visitor<'_> for KeyOf {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Key, E> {
        Ok(match (self.0, key) {
            (Shape::Body, "model") => Key::Model,
            (Shape::Body, "messages") => Key::Messages,
            (Shape::Body, "prompt") => Key::Prompt,
            (Shape::Body, "input") => Key::Input,
            (Shape::Body, key) => MAX_TOKEN_KEYS
                .iter()
                .position(|k| *k == key)
                .map_or(Key::Other, Key::MaxTokens),
            (Shape::Message, "content") => Key::Content,
            (Shape::Part, "text") => Key::PartText,
            _ => Key::Other,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Shape {
    type Value = Found;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Found, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Shape {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        Ok(self.empty())
    }

    fn visit_i64<E>(self, n: i64) -> Result<Found, E> {
        // A `Value` keeps a non-negative i64 as an unsigned number.
        Ok(match (self, u64::try_from(n)) {
            (Shape::Count, Ok(n)) => Found::Count(n),
            _ => self.empty(),
        })
    }

    fn visit_u64<E>(self, n: u64) -> Result<Found, E> {
        Ok(match self {
            Shape::Count => Found::Count(n),
            _ => self.empty(),
        })
    }

    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        Ok(self.empty())
    }

    fn visit_str<E>(self, s: &str) -> Result<Found, E> {
        Ok(match self {
            Shape::Model => Found::Model(s.to_string()),
            Shape::Text | Shape::Part => Found::Chars(s.chars().count()),
            _ => self.empty(),
        })
    }

    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(self.empty())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let element = match self {
            Shape::Messages => Shape::Message,
            Shape::Text => Shape::Part,
            _ => Shape::Skip,
        };
        let mut chars = 0;
        while let Some(found) = seq.next_element_seed(element)? {
            chars += found.chars();
        }
        Ok(match self {
            Shape::Messages | Shape::Text => Found::Chars(chars),
            _ => self.empty(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        // Each key's last value counts, as in a `Value`'s map.
        let mut model = None;
        let mut chars = [0; 4];
        let mut max_tokens = [None; MAX_TOKEN_KEYS.len()];
        while let Some(key) = map.next_key_seed(KeyOf(self))? {
            let (shape, slot) = match key {
                Key::Model => (Shape::Model, None),
                Key::Messages => (Shape::Messages, Some(0)),
                Key::Prompt => (Shape::Text, Some(1)),
                Key::Input => (Shape::Text, Some(2)),
                Key::Content | Key::PartText => (Shape::Text, Some(3)),
                Key::MaxTokens(_) => (Shape::Count, None),
                Key::Other => (Shape::Skip, None),
            };
            let found = map.next_value_seed(shape)?;
            match key {
                Key::Model => {
                    model = match found {
                        Found::Model(m) => Some(m),
                        _ => None,
                    }
                }
                Key::MaxTokens(i) => {
                    max_tokens[i] = match found {
                        Found::Count(n) => Some(n),
                        _ => None,
                    }
                }
                _ => {
                    if let Some(slot) = slot {
                        chars[slot] = found.chars();
                    }
                }
            }
        }
        Ok(match self {
            Shape::Body => Found::Body(BodyFacts {
                model,
                prompt_chars: chars[..3].iter().sum(),
                max_tokens: max_tokens.into_iter().flatten().next().unwrap_or(0),
            }),
            Shape::Message | Shape::Part => Found::Chars(chars[3]),
            _ => self.empty(),
        })
    }
}

impl Shape {
    /// What a value of a type this place does not read counts as.
    fn empty(self) -> Found {
        match self {
            Shape::Body => Found::Body(BodyFacts::default()),
            Shape::Messages | Shape::Message | Shape::Text | Shape::Part => Found::Chars(0),
            Shape::Model | Shape::Count | Shape::Skip => Found::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The facts read from the text and from its `Value` agree, and so do the errors.
    fn agree(text: &str) {
        let typed = BodyFacts::parse(text).map_err(|e| e.to_string());
        let tree = serde_json::from_str::<Value>(text)
            .map(|v| BodyFacts::of_value(&v))
            .map_err(|e| e.to_string());
        assert_eq!(typed, tree, "body: {text}");
    }

    #[test]
    fn reads_what_the_estimate_needs() {
        let body = r#"{"model": "gpt", "max_tokens": 200, "messages": [
            {"role": "system", "content": "abc"},
            {"role": "user", "content": [{"type": "text", "text": "héllo"}, "xy"]}
        ], "prompt": "1234", "input": ["5", {"text": ["67", {"text": "8"}]}]}"#;
        let facts = BodyFacts::parse(body).unwrap();
        assert_eq!(facts.model.as_deref(), Some("gpt"));
        assert_eq!(facts.prompt_chars, 3 + 5 + 2 + 4 + 1 + 3);
        assert_eq!(facts.max_tokens, 200);
        agree(body);
    }

    #[test]
    fn agrees_with_a_value_on_odd_bodies() {
        for text in [
            "",
            "null",
            "[1, {\"model\": \"m\"}]",
            "\"text\"",
            r#"{"model": 3}"#,
            r#"{"model": "a", "model": 3}"#,
            r#"{"model": 3, "model": "b"}"#,
            r#"{"max_tokens": -1, "max_completion_tokens": 7}"#,
            r#"{"max_tokens": 1.0, "max_output_tokens": 9}"#,
            r#"{"max_tokens": 5, "max_tokens": "5"}"#,
            r#"{"max_tokens": 1e400}"#,
            r#"{"max_tokens": -0}"#,
            r#"{"messages": "hello"}"#,
            r#"{"messages": [1, "two", {"content": "abc"}, {"content": null}]}"#,
            r#"{"messages": [{"content": "ab"}], "messages": [{"content": "c"}]}"#,
            r#"{"prompt": "\ud800"}"#,
            r#"{"x": "\ud800"}"#,
            r#"{"x": "\q"}"#,
            r#"{"x": [1, 2,]}"#,
            r#"{"x": 1} trailing"#,
            "{\"x\": \"a\u{1}b\"}",
            r#"{"prompt": "a\nb\u00e9"}"#,
            &format!("{}1{}", "[".repeat(200), "]".repeat(200)),
            &format!("{{\"x\": {}1{}}}", "[".repeat(127), "]".repeat(127)),
        ] {
            agree(text);
        }
    }

    /// JSON text whose keys are mostly ones the facts come from, and may repeat.
    fn json() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "model",
            "messages",
            "prompt",
            "input",
            "content",
            "text",
            "max_tokens",
            "max_completion_tokens",
            "max_output_tokens",
            "role",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..500).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ]
        .prop_map(|v| v.to_string());
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|entries| {
                    let fields = entries.into_iter().map(|(k, v)| format!("\"{k}\": {v}"));
                    format!("{{{}}}", fields.collect::<Vec<_>>().join(", "))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_value_on_any_body(text in json(), cut in 0usize..400) {
            agree(&text);
            // And on the text cut short, which is not valid JSON.
            let cut = (0..=cut.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            agree(&text[..cut]);
        }
    }
}
