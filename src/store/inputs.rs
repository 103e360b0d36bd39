//! The work list's fields of finished items, as `export --with-input` shows them.
//!
//! Owns reading them back from the items table's `payload` (the item as imported): a CSV
//! or JSONL record gives its fields, an OpenAI Batch input line gives `method`, `url` and
//! `body`. Kept apart from the rest of the store so the export's needs stay in one place.

use std::borrow::Cow;

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
        // The names of the last item, as its payload lists them.
        let mut last: Vec<String> = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(self.err("reading the work list's fields"))?
        {
            let payload = (row.get_ref(0))
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(self.err("reading the work list's fields"))?;
            let names = field_names(payload);
            // Most lists give every item the same fields: nothing new to look for, and
            // nothing copied out of the row.
            if names
                .iter()
                .map(|n| n.as_ref())
                .ne(last.iter().map(String::as_str))
            {
                last = names.into_iter().map(Cow::into_owned).collect();
                for key in in_map_order(last.iter().cloned()) {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
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

/// The field names of `payload` as it lists them (an item's own order, which
/// [`in_map_order`] turns into the one [`input_fields`] gives), read without building the
/// values and borrowed from the text where they hold no escape: the header pass of
/// `export --format csv --with-input` reads every finished item's payload once.
fn field_names(payload: &str) -> Vec<Cow<'_, str>> {
    match serde_json::from_str::<PayloadNames<'_>>(payload) {
        Ok(PayloadNames::Vars(Names(names))) => names,
        Ok(PayloadNames::Batch(_)) => ["method", "url", "body"].map(Cow::Borrowed).to_vec(),
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
enum PayloadNames<'a> {
    #[serde(borrow)]
    Vars(Names<'a>),
    Batch(serde::de::IgnoredAny),
}

/// The keys of a JSON object, its values skipped.
struct Names<'a>(Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Names<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Names<'a>, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Names<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Names<'de>, A::Error> {
                let mut names = Vec::new();
                while let Some(Key(name)) = map.next_key()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    names.push(name);
                }
                Ok(Names(names))
            }
        }
        d.deserialize_map(Keys)
    }
}

/// An object key, borrowed from the text unless it holds an escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Lane;
    use crate::store::ImportRow;

    #[test]
    fn the_header_pass_gives_each_finished_items_new_names_in_first_use_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("i.db")).unwrap();
        let batch = r#"{"Batch":{"method":"POST","url":"/v1/x","body":{}}}"#;
        let payloads = [
            r#"{"Vars":{"b":1,"id":"a"}}"#,
            r#"{"Vars":{"b":2,"id":"b"}}"#,
            r#"{"Vars":{"z":1,"c":2,"id":"c"}}"#,
            batch,
            r#"{"Vars":{"q":1}}"#,
        ];
        let rows: Vec<ImportRow> = (payloads.iter().enumerate())
            .map(|(seq, payload)| ImportRow {
                seq: seq as u64,
                line: seq as u64 + 2,
                id: format!("i{seq}"),
                priority: 0,
                tokens: None,
                payload: payload.to_string(),
                lane: Lane::default(),
            })
            .collect();
        let mut importing = store.begin_import().unwrap();
        importing.insert_items(&rows).unwrap();
        importing
            .install(&mut store, rows.len() as u64, &[])
            .unwrap();
        // Every item but the last finished.
        store
            .conn
            .execute_batch(
                "UPDATE items SET status = 'done' WHERE seq < 4;
                 UPDATE counters SET n = 4 WHERE name = 'done';",
            )
            .unwrap();
        let keys = store.input_keys(false).unwrap();
        assert_eq!(keys, ["b", "id", "c", "z", "body", "method", "url"]);
    }

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
            let read = field_names(payload).into_iter().map(Cow::into_owned);
            assert_eq!(in_map_order(read), names, "{payload}");
        }
        assert!(field_names("not json").is_empty());
        // As the item lists them, borrowed unless escaped.
        let names = field_names(r#"{"Vars":{"b":1,"a\u0041":2}}"#);
        assert!(matches!(names[..], [Cow::Borrowed("b"), Cow::Owned(ref a)] if a == "aA"));
    }
}
