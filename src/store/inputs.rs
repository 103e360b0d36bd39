//! The work list's fields of finished items, as `export --with-input` shows them.
//!
//! Owns reading them back from the items table's `payload` (the item as imported): a CSV
//! or JSONL record gives its fields, an OpenAI Batch input line gives `method`, `url` and
//! `body`. Kept apart from the rest of the store so the export's needs stay in one place.

use serde_json::{Map, Value};

use super::{Store, StoreError};
use crate::worklist::Payload;

/// An item's id and its work-list fields.
pub type Input = (String, Map<String, Value>);

impl Store {
    /// Each finished item's id and work-list fields (only failures when `failed_only`); an
    /// item whose payload cannot be read has no fields.
    pub fn inputs(&self, failed_only: bool) -> Result<Vec<Input>, StoreError> {
        let filter = if failed_only {
            "status = 'failed'"
        } else {
            "status IN ('done', 'failed')"
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, payload FROM items WHERE {filter} ORDER BY seq"
            ))
            .map_err(self.err("reading the work list's fields"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err("reading the work list's fields"))?;
        Ok((rows.into_iter())
            .map(|(id, payload)| (id, fields(&payload)))
            .collect())
    }
}

/// The fields of a stored payload (JSON text of a [`Payload`]).
fn fields(payload: &str) -> Map<String, Value> {
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
        assert_eq!(fields(&vars)["artist"], "Nina Simone");
        let batch = serde_json::to_string(&Payload::Batch {
            method: "POST".into(),
            url: "/v1/chat/completions".into(),
            body: serde_json::json!({"model": "m"}),
        })
        .unwrap();
        assert_eq!(fields(&batch)["url"], "/v1/chat/completions");
        assert_eq!(fields(&batch)["body"]["model"], "m");
        assert!(fields("not json").is_empty());
    }
}
