//! Export formats: the contract's record, `--select`, `--with-input`, OpenAI Batch lines,
//! and a closed pipe surfacing as `BrokenPipe`.

use super::*;

fn result(id: &str, body: &str) -> ResultRow {
    ResultRow {
        id: id.into(),
        status: "done".into(),
        http_status: Some(200),
        body: Some(body.into()),
        attempts: 2,
        latency_ms: Some(51),
        usage: Some(r#"{"total_tokens":12}"#.into()),
        error: None,
    }
}

fn row(body: &str) -> Row {
    result("a1", body).into()
}

const OPENAI: &str = r#"{"id":"chatcmpl-7","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Nina Simone, pianist"}}],"usage":{"total_tokens":12}}"#;
const ANTHROPIC: &str = r#"{"id":"msg_01","type":"message","content":[{"type":"text","text":"Miles Davis, trumpeter"}],"usage":{"input_tokens":5,"output_tokens":7}}"#;

fn export(rows: &[Row], options: &Options) -> String {
    let mut out = Vec::new();
    write(rows, options, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn selecting(format: Format, select: &[&str]) -> Options {
    Options {
        format,
        select: select.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn jsonl_parses_json_bodies_and_keeps_text_bodies() {
    let text = export(
        &[row(r#"{"x":1}"#), row("plain text")],
        &Options::of(Format::Jsonl),
    );
    let lines: Vec<Value> = text
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
    let text = export(&[row(r#"{"x":1}"#)], &Options::of(Format::Csv));
    assert!(text.starts_with("id,status,http_status,body,attempts,latency_ms,usage,error\n"));
    assert!(text.contains(r#"a1,done,200,"{""x"":1}",2,51,"#), "{text}");
}

#[test]
fn select_pulls_text_out_of_openai_and_anthropic_bodies() {
    let options = selecting(
        Format::Csv,
        &["bio=/choices/0/message/content", "text=/content/0/text"],
    );
    let rows = csv_rows(&export(&[row(OPENAI), row(ANTHROPIC)], &options));
    assert_eq!(rows[0][8..], ["bio", "text"]);
    assert_eq!(rows[1][8..], ["Nina Simone, pianist", ""]);
    assert_eq!(rows[2][8..], ["", "Miles Davis, trumpeter"]);
}

#[test]
fn a_missing_pointer_is_an_empty_cell_and_a_null_field() {
    let rows = csv_rows(&export(
        &[row(OPENAI), row("not json")],
        &selecting(Format::Csv, &["x=/no/such/place"]),
    ));
    assert_eq!(rows[1][8], "");
    assert_eq!(rows[2][8], "");
    let line = export(
        &[row(OPENAI)],
        &selecting(
            Format::Jsonl,
            &["bio=/choices/0/message/content", "x=/nope"],
        ),
    );
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["bio"], "Nina Simone, pianist");
    assert!(v["x"].is_null(), "{v}");
    assert_eq!(v["id"], "a1", "the contract's fields stay");
}

#[test]
fn selected_numbers_and_objects_are_json_text_cells() {
    let rows = csv_rows(&export(
        &[row(OPENAI)],
        &selecting(
            Format::Csv,
            &["tokens=/usage/total_tokens", "msg=/choices/0/message"],
        ),
    ));
    assert_eq!(rows[1][8], "12");
    assert_eq!(
        serde_json::from_str::<Value>(&rows[1][9]).unwrap()["role"],
        "assistant"
    );
}

#[test]
fn select_refuses_a_bad_spec_with_a_hint() {
    let no_eq = "bio".parse::<Select>().unwrap_err();
    assert!(no_eq.contains("NAME=/json/pointer"), "{no_eq}");
    let not_pointer = "bio=choices".parse::<Select>().unwrap_err();
    assert!(not_pointer.contains("JSON pointer"), "{not_pointer}");
    let clash = "body=/x".parse::<Select>().unwrap_err();
    assert!(clash.contains("already an export field"), "{clash}");
    assert_eq!(
        "whole=".parse::<Select>().unwrap().pointer,
        "",
        "the empty pointer is the whole body"
    );
}

fn with_input(id: &str, body: &str, fields: Value) -> Row {
    Row {
        result: result(id, body),
        input: fields.as_object().unwrap().clone(),
    }
}

#[test]
fn with_input_puts_the_work_lists_fields_next_to_the_selected_ones() {
    let rows = [
        with_input(
            "1",
            OPENAI,
            json!({"id": "1", "artist": "Nina Simone", "prompt": "p"}),
        ),
        with_input(
            "2",
            OPENAI,
            json!({"id": "2", "artist": "Miles Davis", "status": "x"}),
        ),
    ];
    let options = selecting(Format::Csv, &["bio=/choices/0/message/content"]);
    let table = csv_rows(&export(&rows, &options));
    assert_eq!(table[0][8..], ["artist", "prompt", "input.status", "bio"]);
    assert_eq!(
        table[1][8..],
        ["Nina Simone", "p", "", "Nina Simone, pianist"]
    );
    assert_eq!(
        table[2][8..],
        ["Miles Davis", "", "x", "Nina Simone, pianist"]
    );

    let line = export(&rows[..1], &Options::of(Format::Jsonl));
    let v: Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["input"]["artist"], "Nina Simone");
}

/// The fields and types of OpenAI's Batch output lines
/// (<https://platform.openai.com/docs/api-reference/batch/request-output>).
fn assert_batch_output_schema(v: &Value) {
    assert!(v["id"].is_string(), "{v}");
    assert!(v["custom_id"].is_string(), "{v}");
    let object = v.as_object().unwrap();
    assert_eq!(
        object.len(),
        4,
        "exactly id, custom_id, response, error: {v}"
    );
    match &v["response"] {
        Value::Null => {
            assert!(v["error"]["code"].is_string(), "{v}");
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        Value::Object(r) => {
            assert!(r["status_code"].is_u64(), "{v}");
            assert!(r["request_id"].is_string(), "{v}");
            assert!(r.contains_key("body"), "{v}");
            assert!(v["error"].is_null(), "{v}");
        }
        other => panic!("response is an object or null, got {other}"),
    }
}

#[test]
fn openai_batch_lines_follow_the_batch_output_schema() {
    let failed = ResultRow {
        status: "failed".into(),
        http_status: None,
        body: None,
        error: Some("connection refused".into()),
        ..result("b2", "")
    };
    let refused = ResultRow {
        status: "failed".into(),
        http_status: Some(400),
        body: Some(r#"{"error":{"message":"bad"}}"#.into()),
        ..result("c3", "")
    };
    let rows: Vec<Row> = vec![result("a1", OPENAI).into(), failed.into(), refused.into()];
    let text = export(&rows, &Options::of(Format::OpenaiBatch));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    lines.iter().for_each(assert_batch_output_schema);
    assert_eq!(lines[0]["custom_id"], "a1");
    assert_eq!(lines[0]["response"]["status_code"], 200);
    assert_eq!(lines[0]["response"]["request_id"], "chatcmpl-7");
    assert_eq!(
        lines[0]["response"]["body"]["choices"][0]["message"]["content"],
        "Nina Simone, pianist"
    );
    assert_eq!(lines[1]["error"]["message"], "connection refused");
    assert_eq!(lines[2]["response"]["status_code"], 400);
}

/// A writer whose reader went away, as stdout is after `| head` closes it.
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

#[test]
fn a_closed_pipe_is_a_broken_pipe_in_every_format() {
    for format in [Format::Jsonl, Format::Csv, Format::OpenaiBatch] {
        let err = write(&[row(OPENAI)], &Options::of(format), ClosedPipe).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe,
            "{format:?}: {err}"
        );
    }
}

#[test]
fn a_jsonl_line_is_the_json_object_of_its_fields_byte_for_byte() {
    // Written field by field (nothing copied into an object first), the line must still be
    // exactly the object's text: keys in `Map` order, the body compacted, a selected field
    // named `input` replaced by the input.
    let row = with_input(
        "7",
        r#"{ "z": 1, "choices": [ {"message": {"content": "hi"}} ] }"#,
        json!({"id": "7", "prompt": "p"}),
    );
    let options = selecting(
        Format::Jsonl,
        &["aa=/choices/0/message/content", "input=/z", "zz=/missing"],
    );
    let line = export(std::slice::from_ref(&row), &options);
    let mut object = serde_json::to_value(record(&row.result)).unwrap();
    let body = object["body"].clone();
    let map = object.as_object_mut().unwrap();
    for s in &options.select {
        map.insert(s.name.clone(), pick(&body, &s.pointer));
    }
    map.insert("input".into(), Value::Object(row.input.clone()));
    assert_eq!(line, format!("{object}\n"));
    assert!(
        line.starts_with(r#"{"aa":"hi","attempts":2,"body":{"choices""#),
        "{line}"
    );
}
