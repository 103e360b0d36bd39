//! `ratebound export`: finished items as JSONL or CSV, one record per item.
//!
//! Owns the export record, whose field names are pinned by DESIGN.md's contract: `id`,
//! `status`, `http_status`, `body` (parsed JSON where the response was JSON, else text),
//! `attempts`, `latency_ms`, `usage`, plus `error` for failures.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;

use crate::store::ResultRow;

/// Output formats of `export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// A header row, then one row per item; `body` and `usage` as JSON text.
    Csv,
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

/// Writes `rows` to `out` in `format`, one at a time as they come.
pub fn write<R: std::borrow::Borrow<ResultRow>>(
    rows: impl IntoIterator<Item = R>,
    format: Format,
    out: impl Write,
) -> std::io::Result<()> {
    match format {
        Format::Jsonl => {
            let mut out = std::io::BufWriter::new(out);
            for row in rows {
                serde_json::to_writer(&mut out, &record(row.borrow()))?;
                out.write_all(b"\n")?;
            }
            out.flush()
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record([
                "id",
                "status",
                "http_status",
                "body",
                "attempts",
                "latency_ms",
                "usage",
                "error",
            ])?;
            for row in rows {
                let r = record(row.borrow());
                let text = |v: &Value| {
                    if v.is_null() {
                        String::new()
                    } else {
                        v.to_string()
                    }
                };
                w.write_record([
                    r.id.to_string(),
                    r.status.to_string(),
                    r.http_status.map(|s| s.to_string()).unwrap_or_default(),
                    text(&r.body),
                    r.attempts.to_string(),
                    r.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
                    text(&r.usage),
                    r.error.unwrap_or_default().to_string(),
                ])?;
            }
            w.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(body: &str) -> ResultRow {
        ResultRow {
            id: "a1".into(),
            status: "done".into(),
            http_status: Some(200),
            body: Some(body.into()),
            attempts: 2,
            latency_ms: Some(51),
            usage: Some(r#"{"total_tokens":12}"#.into()),
            error: None,
        }
    }

    #[test]
    fn jsonl_parses_json_bodies_and_keeps_text_bodies() {
        let mut out = Vec::new();
        write(
            &[row(r#"{"x":1}"#), row("plain text")],
            Format::Jsonl,
            &mut out,
        )
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["body"]["x"], 1);
        assert_eq!(lines[1]["body"], "plain text");
        assert_eq!(lines[0]["usage"]["total_tokens"], 12);
        assert_eq!(lines[0]["attempts"], 2);
        assert_eq!(lines[0]["latency_ms"], 51);
    }

    #[test]
    fn csv_has_a_header_and_json_text_cells() {
        let mut out = Vec::new();
        write(&[row(r#"{"x":1}"#)], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id,status,http_status,body,attempts,latency_ms,usage,error\n"));
        assert!(text.contains(r#"a1,done,200,"{""x"":1}",2,51,"#), "{text}");
    }
}
