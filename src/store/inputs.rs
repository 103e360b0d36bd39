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
        let filter = if failed_only {
            "status = 'failed'"
        } else {
            "status IN ('done', 'failed')"
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT payload FROM items WHERE {filter} ORDER BY seq"
            ))
            .map_err(self.err("reading the work list's fields"))?;
        let mut rows = stmt
            .query([])
            .map_err(self.err("reading the work list's fields"))?;
        let mut keys: Vec<String> = Vec::new();
        while let Some(row) = rows
            .next()
            .map_err(self.err("reading the work list's fields"))?
        {
            let payload: String = row
                .get(0)
                .map_err(self.err("reading the work list's fields"))?;
            for key in input_fields(&payload).into_iter().map(|(k, _)| k) {
                if !keys.contains(&key) {
                    keys.push(key);
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
    }
}
