//! `ratebound export`: finished items as JSONL, CSV or OpenAI Batch output lines, one record
//! per item.
//!
//! Owns the export record, whose field names are pinned by DESIGN.md's contract: `id`,
//! `status`, `http_status`, `body` (parsed JSON where the response was JSON, else text),
//! `attempts`, `latency_ms`, `usage`, plus `error` for failures. On top of it: fields pulled
//! out of bodies by JSON pointer (`--select NAME=/pointer`), the work list's own fields
//! (`--with-input`), and OpenAI's Batch output schema (`--format openai-batch`). Every write
//! error keeps its `std::io::Error` (a closed pipe stays a `BrokenPipe` the caller can end
//! quietly on).
//!
//! Streaming: [`export`] reads one row from the store, writes it and drops it, so memory
//! stays flat whatever the run's size (a CSV with `--with-input` first reads every item's
//! field names, to write its header).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::store::{ResultRow, Store, StoreError, input_fields};

/// Output formats of `export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// A header row, then one row per item; `body` and `usage` as JSON text.
    Csv,
    /// OpenAI Batch output lines: `id`, `custom_id`, `response` {`status_code`,
    /// `request_id`, `body`}, `error`.
    OpenaiBatch,
}

/// Writes the finished items of the run in `store` (only failures when `failed_only`, with
/// their work-list fields when `with_input`) to `out` as `options` says, one at a time.
///
/// Returns the items written; the outer error is the store's, the inner one the writer's
/// own `std::io::Error`.
pub fn export(
    store: &Store,
    failed_only: bool,
    with_input: bool,
    options: &Options,
    out: impl Write,
) -> Result<std::io::Result<u64>, StoreError> {
    let inputs = match options.format {
        Format::Csv if with_input => store.input_keys(failed_only)?,
        _ => Vec::new(),
    };
    store.with_finished(failed_only, with_input, |rows| {
        let rows = rows.map(|(result, payload)| Row {
            result,
            input: payload.as_deref().map(input_fields).unwrap_or_default(),
        });
        write_rows(rows, inputs, options, out)
    })
}

/// The record fields every format starts from; a `--select` name may not repeat one.
const FIELDS: [&str; 8] = [
    "id",
    "status",
    "http_status",
    "body",
    "attempts",
    "latency_ms",
    "usage",
    "error",
];

/// One `--select NAME=/json/pointer`: the value at `pointer` in each body, as field `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select {
    /// The output field (CSV column, JSONL key).
    pub name: String,
    /// An RFC 6901 JSON pointer into the body, e.g. `/choices/0/message/content`.
    pub pointer: String,
}

impl std::str::FromStr for Select {
    type Err = String;

    /// Parses `NAME=/pointer`; the error says what is wrong and how to write it.
    fn from_str(s: &str) -> Result<Select, String> {
        let hint = "write NAME=/json/pointer, e.g. `bio=/choices/0/message/content` or `text=/content/0/text`";
        let Some((name, pointer)) = s.split_once('=') else {
            return Err(format!("`{s}` has no `=`; {hint}"));
        };
        if name.is_empty() {
            return Err(format!("`{s}` has no field name before `=`; {hint}"));
        }
        if FIELDS.contains(&name) {
            return Err(format!(
                "`{name}` is already an export field ({}); pick another name",
                FIELDS.join(", ")
            ));
        }
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "`{pointer}` is not a JSON pointer (it starts with `/`); {hint}"
            ));
        }
        Ok(Select {
            name: name.to_string(),
            pointer: pointer.to_string(),
        })
    }
}

/// What to write and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The output format.
    pub format: Format,
    /// Fields pulled out of bodies, in order.
    pub select: Vec<Select>,
}

impl Options {
    /// Plain records in `format`, nothing selected.
    pub fn of(format: Format) -> Options {
        Options {
            format,
            select: Vec::new(),
        }
    }
}

/// One finished item with the work list's fields it came from (empty without
/// `--with-input`).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// What the store kept of the item's result.
    pub result: ResultRow,
    /// The item's work-list fields, in file order.
    pub input: Map<String, Value>,
}

impl From<ResultRow> for Row {
    fn from(result: ResultRow) -> Row {
        Row {
            result,
            input: Map::new(),
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    id: &'a str,
    status: &'a str,
    http_status: Option<u16>,
    body: Value,
    attempts: u32,
    latency_ms: Option<u64>,
    usage: Value,
    error: Option<&'a str>,
}

fn record(row: &ResultRow) -> Record<'_> {
    let body = row.body.as_deref().map_or(Value::Null, |b| {
        serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_string()))
    });
    let usage = row
        .usage
        .as_deref()
        .and_then(|u| serde_json::from_str(u).ok())
        .unwrap_or(Value::Null);
    Record {
        id: &row.id,
        status: &row.status,
        http_status: row.http_status,
        body,
        attempts: row.attempts,
        latency_ms: row.latency_ms,
        usage,
        error: row.error.as_deref(),
    }
}

/// The value at `pointer` in `body`; `Null` when the body has no such place.
fn pick(body: &Value, pointer: &str) -> Value {
    body.pointer(pointer).cloned().unwrap_or(Value::Null)
}

/// Writes `rows` to `out` as `options` says. Errors are the writer's own `std::io::Error`.
pub fn write(rows: &[Row], options: &Options, out: impl Write) -> std::io::Result<()> {
    write_rows(rows.iter(), input_keys(rows), options, out).map(|_| ())
}

/// Writes `rows` to `out` as `options` says (a CSV's input columns from the field names
/// `inputs`); returns how many.
fn write_rows(
    rows: impl Iterator<Item = impl Borrow<Row>>,
    inputs: Vec<String>,
    options: &Options,
    out: impl Write,
) -> std::io::Result<u64> {
    match options.format {
        Format::Jsonl => write_lines(rows, out, |row, out| {
            serde_json::to_writer(out, &jsonl(row, &record(&row.result), &options.select))
        }),
        Format::OpenaiBatch => write_lines(rows, out, |row, out| {
            serde_json::to_writer(out, &openai_batch(&row.result))
        }),
        Format::Csv => {
            let inputs = input_columns(inputs, &options.select);
            write_csv(rows, &inputs, &options.select, out).map_err(csv_io)
        }
    }
}

fn write_lines<W: Write>(
    rows: impl Iterator<Item = impl Borrow<Row>>,
    out: W,
    line: impl Fn(&Row, &mut std::io::BufWriter<W>) -> serde_json::Result<()>,
) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
    let mut written = 0;
    for row in rows {
        line(row.borrow(), &mut out)?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

/// A value of a JSONL record, borrowed from the row where it can be.
#[derive(Serialize)]
#[serde(untagged)]
enum Field<'a> {
    Json(&'a Value),
    Picked(Value),
    Text(Option<&'a str>),
    Number(Option<u64>),
    Input(&'a Map<String, Value>),
}

/// One JSONL record: the contract's fields, then each selected field, then `input`, keyed
/// as a JSON object of them is (a later field of the same name replaces an earlier one,
/// keys in `Map`'s order), without copying the body or the input into one.
fn jsonl<'a>(
    row: &'a Row,
    r: &'a Record<'a>,
    select: &'a [Select],
) -> BTreeMap<&'a str, Field<'a>> {
    let mut line = BTreeMap::from([
        ("id", Field::Text(Some(r.id))),
        ("status", Field::Text(Some(r.status))),
        ("http_status", Field::Number(r.http_status.map(u64::from))),
        ("body", Field::Json(&r.body)),
        ("attempts", Field::Number(Some(u64::from(r.attempts)))),
        ("latency_ms", Field::Number(r.latency_ms)),
        ("usage", Field::Json(&r.usage)),
        ("error", Field::Text(r.error)),
    ]);
    for s in select {
        line.insert(s.name.as_str(), Field::Picked(pick(&r.body, &s.pointer)));
    }
    if !row.input.is_empty() {
        line.insert("input", Field::Input(&row.input));
    }
    line
}

/// One line of OpenAI's Batch output
/// (<https://platform.openai.com/docs/guides/batch>): the response as ratebound got it, or
/// `error` when no response came. `request_id` is the body's `id` where it has one (the
/// store keeps no response headers).
fn openai_batch(row: &ResultRow) -> Value {
    let r = record(row);
    let response = r.http_status.map(|status| {
        let request_id = r.body.get("id").and_then(Value::as_str).unwrap_or_default();
        json!({"status_code": status, "request_id": request_id, "body": r.body})
    });
    let error = match (&response, r.error) {
        (None, Some(message)) => json!({"code": "request_failed", "message": message}),
        (None, None) => json!({"code": "request_failed", "message": "no response was recorded"}),
        _ => Value::Null,
    };
    json!({
        "id": format!("batch_req_{}", r.id),
        "custom_id": r.id,
        "response": response,
        "error": error,
    })
}

/// Every work-list field name of `rows`, in first-seen order.
fn input_keys(rows: &[Row]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        for key in row.input.keys() {
            if !seen.contains(key) {
                seen.push(key.clone());
            }
        }
    }
    seen
}

/// The CSV's input columns: the work-list fields `keys` (in first-seen order) except `id`;
/// a field named like another column is prefixed `input.`.
fn input_columns(keys: Vec<String>, select: &[Select]) -> Vec<(String, String)> {
    (keys.into_iter())
        .filter(|key| key != "id")
        .map(|key| {
            let clash = FIELDS.contains(&key.as_str()) || select.iter().any(|s| s.name == key);
            let column = if clash {
                format!("input.{key}")
            } else {
                key.clone()
            };
            (key, column)
        })
        .collect()
}

fn write_csv(
    rows: impl Iterator<Item = impl Borrow<Row>>,
    inputs: &[(String, String)],
    select: &[Select],
    out: impl Write,
) -> csv::Result<u64> {
    let mut w = csv::Writer::from_writer(out);
    let mut written = 0;
    let header = (FIELDS.iter().map(|f| f.to_string()))
        .chain(inputs.iter().map(|(_, column)| column.clone()))
        .chain(select.iter().map(|s| s.name.clone()));
    w.write_record(header.collect::<Vec<_>>())?;
    // Cells go straight to the writer; those that are JSON or number text are written
    // into one buffer, reused row after row.
    let mut cells = Cells {
        w,
        text: Vec::new(),
    };
    for row in rows {
        let row = row.borrow();
        let r = record(&row.result);
        cells.w.write_field(r.id)?;
        cells.w.write_field(r.status)?;
        cells.number(r.http_status)?;
        cells.json(&r.body)?;
        cells.number(Some(r.attempts))?;
        cells.number(r.latency_ms)?;
        cells.json(&r.usage)?;
        cells.w.write_field(r.error.unwrap_or_default())?;
        for (key, _) in inputs {
            cells.value(row.input.get(key))?;
        }
        for s in select {
            cells.value(r.body.pointer(&s.pointer))?;
        }
        cells.w.write_record(None::<&[u8]>)?;
        written += 1;
    }
    cells.w.flush()?;
    Ok(written)
}

/// A CSV writer and the buffer its JSON and number cells are written into.
struct Cells<W: Write> {
    w: csv::Writer<W>,
    text: Vec<u8>,
}

impl<W: Write> Cells<W> {
    /// A number's cell, empty for none.
    fn number(&mut self, n: Option<impl std::fmt::Display>) -> csv::Result<()> {
        self.text.clear();
        if let Some(n) = n {
            write!(self.text, "{n}")?;
        }
        self.w.write_field(&self.text)
    }

    /// A cell of the record's own JSON columns: JSON text, null as empty.
    fn json(&mut self, v: &Value) -> csv::Result<()> {
        self.text.clear();
        if !v.is_null() {
            serde_json::to_writer(&mut self.text, v).map_err(std::io::Error::from)?;
        }
        self.w.write_field(&self.text)
    }

    /// A JSON value's cell: strings as they are, null (or nothing) as empty, the rest as
    /// JSON text.
    fn value(&mut self, v: Option<&Value>) -> csv::Result<()> {
        match v {
            Some(Value::String(s)) => self.w.write_field(s),
            Some(v) => self.json(v),
            None => self.w.write_field(""),
        }
    }
}

/// A CSV error as the `std::io::Error` underneath, so a closed pipe stays a `BrokenPipe`.
fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests;
