//! What a job's cost estimate reads of its JSON body (`model`, prompt characters, the most
//! output tokens), read straight from the rendered text, or worked out once from the
//! template ([`FactsPlan`]).
//!
//! Every item's body is checked before the first request, a million or more at import;
//! building a `serde_json::Value` tree of each only to read three things from it was most
//! of that time. [`BodyFacts::parse`] walks the text once and keeps only what the estimate
//! reads; [`BodyFacts::of_value`] reads the same from a body already parsed (a Batch
//! line's); [`FactsPlan::facts`] needs no body at all, only the values.
//!
//! Invariant: `parse(text)` equals `of_value(&serde_json::from_str(text)?)` for every text,
//! and fails exactly when that parse fails, with the same error. Every value goes through
//! serde_json's `deserialize_any`, as building a `Value` does, so the syntax checks, the
//! number ranges, the string escapes and the nesting limit are the same ones (serde's
//! `IgnoredAny` would skip values with laxer checks). A key given twice counts with its
//! last value, as in a `Value`'s map.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Template, TemplateKind};

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

/// The facts of every body a JSON template renders, worked out once from the template: the
/// import renders a million bodies from one template, and parsing each again only to count
/// the characters its values brought into the prompt was a third of its validation.
///
/// Holds when every placeholder stands inside a string value (not a key, not after a
/// dangling escape or inside a surrogate pair): an inserted value is escaped, so it changes
/// the text of that string and nothing else. Then a body is valid JSON exactly when the
/// template with empty values is, `model` and the token limit are the template's, and the
/// prompt has the template's characters plus each value's, times the prompt strings it
/// stands in. [`FactsPlan::of`] finds all of that by rendering the template with empty
/// values and with a probe character in each placeholder in turn, and parsing those.
///
/// Invariant: `plan.facts(vars)` equals `BodyFacts::parse(&template.render(vars)?)` for
/// every `vars` the template renders with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactsPlan {
    /// The facts of the body with every value empty.
    base: BodyFacts,
    /// The placeholders whose characters count as prompt, with how many times each.
    prompt: Vec<(String, usize)>,
}

impl FactsPlan {
    /// The plan of `template`, `None` when some body it renders may differ in structure or
    /// in validity from another (a placeholder outside a string, in a key or in `model`).
    pub fn of(template: &Template) -> Option<FactsPlan> {
        if template.kind() != TemplateKind::Json || !template.fields_in_strings() {
            return None;
        }
        let empty: Map<String, Value> = (template.placeholders())
            .map(|name| (name.to_string(), Value::String(String::new())))
            .collect();
        let bare = template.render(&empty).ok()?;
        let base = BodyFacts::parse(&bare).ok()?;
        // A character the template's own text lacks: a key holding it holds a value.
        let probe = ('\u{e000}'..='\u{f8ff}').find(|&c| !bare.contains(c))?;
        let mut prompt = Vec::new();
        for name in template.placeholders() {
            let mut vars = empty.clone();
            vars.insert(name.to_string(), Value::String(probe.to_string()));
            let text = template.render(&vars).ok()?;
            let tree: Value = serde_json::from_str(&text).ok()?;
            let facts = BodyFacts::parse(&text).ok()?;
            if has_key_with(&tree, probe)
                || facts.model != base.model
                || facts.max_tokens != base.max_tokens
            {
                return None;
            }
            match facts.prompt_chars.checked_sub(base.prompt_chars)? {
                0 => {}
                times => prompt.push((name.to_string(), times)),
            }
        }
        Some(FactsPlan { base, prompt })
    }

    /// The facts of the body the template renders with `vars` (a placeholder `vars` lacks
    /// counts no characters: rendering refuses it first).
    pub fn facts(&self, vars: &Map<String, Value>) -> BodyFacts {
        let values = self.prompt.iter().map(|(name, times)| {
            let chars = match vars.get(name) {
                Some(Value::String(s)) => s.chars().count(),
                Some(other) => other.to_string().chars().count(),
                None => 0,
            };
            chars * times
        });
        BodyFacts {
            prompt_chars: self.base.prompt_chars + values.sum::<usize>(),
            ..self.base.clone()
        }
    }
}

/// Whether any object key inside `value` holds `c`.
fn has_key_with(value: &Value, c: char) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(key, v)| key.contains(c) || has_key_with(v, c)),
        Value::Array(items) => items.iter().any(|v| has_key_with(v, c)),
        _ => false,
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
        nested(leaf, key)
    }

    /// JSON text of arrays and objects (keys from `key`) nested around `leaf` texts.
    fn nested(
        leaf: impl Strategy<Value = String> + 'static,
        key: impl Strategy<Value = &'static str> + Clone + 'static,
    ) -> impl Strategy<Value = String> {
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

    fn plan(src: &str) -> Option<(Template, FactsPlan)> {
        let template = Template::parse(src, TemplateKind::Json).unwrap();
        FactsPlan::of(&template).map(|plan| (template, plan))
    }

    /// The plan's facts are those parsed from the body `template` renders.
    fn plan_agrees((template, plan): &(Template, FactsPlan), vars: &Map<String, Value>) {
        let text = template.render(vars).unwrap();
        assert_eq!(
            plan.facts(vars),
            BodyFacts::parse(&text).unwrap(),
            "body: {text}"
        );
    }

    #[test]
    fn a_plan_counts_each_values_characters_where_they_land() {
        let plan = plan(
            r#"{"model": "m", "max_tokens": 16, "user": "{{id}}", "messages": [
                {"role": "system", "content": "Be brief about \"{{topic}}\"."},
                {"role": "user", "content": [{"type": "text", "text": "{{q}} or {{q}}"}]}]}"#,
        )
        .expect("every placeholder is in a string value");
        let facts = &plan.1;
        assert_eq!(facts.base.model.as_deref(), Some("m"));
        assert_eq!(facts.base.max_tokens, 16);
        let times: Vec<_> = facts.prompt.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        assert_eq!(times, [("topic", 1), ("q", 2)]);
        for (topic, q) in [("", ""), ("héllo \"x\"\n\u{1}", "q"), ("1", "\\ud800")] {
            let vars = serde_json::json!({"id": "i-1", "topic": topic, "q": q});
            plan_agrees(&plan, vars.as_object().unwrap());
        }
        let numbers = serde_json::json!({"id": 7, "topic": {"a": [1, "b"]}, "q": 2.5});
        plan_agrees(&plan, numbers.as_object().unwrap());
    }

    #[test]
    fn no_plan_when_a_value_can_change_the_structure() {
        for src in [
            r#"{"max_tokens": {{n}}, "prompt": "x"}"#,
            r#"{"{{key}}": "v", "prompt": "x"}"#,
            r#"{"": 1, "x": 2, "{{key}}": "v"}"#,
            r#"{"model": "gpt-{{size}}", "prompt": "x"}"#,
            r#"{"prompt": "a\{{x}}"}"#,
            r#"{"prompt": "a\u00{{x}}"}"#,
            r#"{"prompt": "\ud83d{{x}}\ude00"}"#,
            r#"{"prompt": "{{x}}" "#,
        ] {
            assert!(plan(src).is_none(), "{src}");
        }
    }

    /// A JSON template: keys mostly ones the facts come from, some a placeholder; strings
    /// holding placeholders `{{a}}` and `{{b}}` among other text.
    fn template() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec![
            "model",
            "messages",
            "prompt",
            "input",
            "content",
            "text",
            "max_tokens",
            "role",
            "{{a}}",
        ]);
        let piece = prop::sample::select(vec!["{{a}}", "{{b}}", "x", "é", "\\n", "\\\"", " "]);
        let string = prop::collection::vec(piece, 0..5).prop_map(|p| format!("\"{}\"", p.concat()));
        let leaf = prop_oneof![
            Just("16".to_string()),
            Just("null".to_string()),
            string.clone(),
            string,
        ];
        nested(leaf, key)
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,12}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(serde_json::json!({"k": ["é", 1]})),
        ]
    }

    proptest! {
        #[test]
        fn a_plan_agrees_with_parsing_every_body(src in template(), a in value(), b in value()) {
            let Ok(template) = Template::parse(&src, TemplateKind::Json) else {
                return Ok(());
            };
            let vars: Map<String, Value> = [("a".to_string(), a), ("b".to_string(), b)].into_iter().collect();
            if let Some(plan) = FactsPlan::of(&template) {
                plan_agrees(&(template, plan), &vars);
            } else {
                // Only a placeholder in a key or in `model` leaves a valid template
                // without a plan here.
                let keyed = src.contains("\"{{a}}\":");
                let model = src.contains("\"model\": \"") ;
                prop_assert!(keyed || model, "no plan for {src}");
            }
        }
    }
}
