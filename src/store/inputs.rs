//! The work list's fields of finished items, as `export --with-input` shows them.
//!
//! Owns reading them back from the items table's `payload` (the item as imported): a CSV
//! or JSONL record gives its fields, an OpenAI Batch input line gives `method`, `url` and
//! `body`. Kept apart from the rest of the store so the export's needs stay in one place.

use serde_json::{Map, Value};

use super::{Store, StoreError};
use crate::worklist::Payload;

impl Store {
    /// Every work-list field name of the finished items (only failures when
    /// `failed_only`), in the order the file first uses them, read one item at a time.
    pub fn input_keys(&self, failed_only: bool) -> Result<Vec<String>, StoreError> {
        let from = self.finished_rows(failed_only)?;
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT payload {from}"))
            .map_err(self.err("reading the work list's fields"))?;
        let mut rows = stmt
            .query([])
            .map_err(self.err("reading the work list's fields"))?;
        let mut keys: Vec<String> = Vec::new();
        let mut last: Vec<String> = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(self.err("reading the work list's fields"))?
        {
            let payload: String = row
                .get(0)
                .map_err(self.err("reading the work list's fields"))?;
            let names = field_names(&payload);
            // Most lists give every item the same fields: nothing new to look for.
            if names != last {
                for key in &names {
                    if !keys.contains(key) {
                        keys.push(key.clone());
                    }
                }
                last = names;
            }
        }
        Ok(keys)
    }
}

/// The work-list fields of a stored payload (JSON text of a [`Payload`]): a record's
/// fields, or a Batch input line's `method`, `url` and `body`; none when it cannot be read.
pub fn input_fields(payload: &str) -> Map<String, Value> {
    match serde_json::from_str::<Payload>(payload) {
        Ok(Payload::Vars(vars)) => vars,
        Ok(Payload::Batch { method, url, body }) => Map::from_iter([
            ("method".to_string(), Value::String(method)),
            ("url".to_string(), Value::String(url)),
            ("body".to_string(), body),
        ]),
        Err(_) => Map::new(),
    }
}

/// The field names [`input_fields`] gives for `payload`, in its order, read without
/// building the values (the header pass of `export --format csv --with-input` reads every
/// finished item's payload once).
fn field_names(payload: &str) -> Vec<String> {
    match serde_json::from_str::<PayloadNames>(payload) {
        Ok(PayloadNames::Vars(Names(names))) => names,
        Ok(PayloadNames::Batch(_)) => in_map_order(["method", "url", "body"].map(String::from)),
        Err(_) => Vec::new(),
    }
}

/// `names` in the order a `Map` of them iterates (the order `input_fields` gives), whatever
/// order `Map` keeps.
fn in_map_order(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let map: Map<String, Value> = names.into_iter().map(|n| (n, Value::Null)).collect();
    map.into_iter().map(|(name, _)| name).collect()
}

/// A stored [`Payload`]'s shape, with only the names of a record's fields.
#[derive(serde::Deserialize)]
enum PayloadNames {
    Vars(Names),
    Batch(serde::de::IgnoredAny),
}

/// The keys of a JSON object, its values skipped.
struct Names(Vec<String>);

impl<'de> serde::Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Names;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    names.push(name);
                }
                Ok(Names(in_map_order(names)))
            }
        }
        d.deserialize_map(Keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_give_their_fields_and_batch_lines_their_request() {
        let vars = serde_json::to_string(&Payload::Vars(Map::from_iter([(
            "artist".to_string(),
            Value::from("Nina Simone"),
        )])))
        .unwrap();
        assert_eq!(input_fields(&vars)["artist"], "Nina Simone");
        let batch = serde_json::to_string(&Payload::Batch {
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: serde_json::json!({"model": "m"}),
        })
        .unwrap();
        assert_eq!(input_fields(&batch)["url"], "/v1/chat/completions");
        assert_eq!(input_fields(&batch)["body"]["model"], "m");
        assert!(input_fields("not json").is_empty());
        // The header pass reads the same names, in the same order, without the values.
        for payload in [
            &vars,
            &batch,
            r#"{"Vars":{"b":1,"a":[2,{"x":3}],"c\u0041":"z"}}"#,
        ] {
            let names: Vec<String> = input_fields(payload).keys().cloned().collect();
            assert_eq!(field_names(payload), names, "{payload}");
        }
        assert!(field_names("not json").is_empty());
    }
}
