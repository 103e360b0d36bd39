//! The two Batch API dialects as pure text: request lines in, batch objects and result
//! lines out.
//!
//! OpenAI (<https://platform.openai.com/docs/api-reference/batch>): input is a JSONL file of
//! `{custom_id, method, url, body}` lines uploaded to `/v1/files`; a batch object has a
//! `status` (`validating`, `in_progress`, `finalizing`, `cancelling` while open; `completed`,
//! `expired`, `cancelled`, `failed` once ended), `request_counts` and, once ended, an
//! `output_file_id` and an `error_file_id` whose lines carry `custom_id` and a `response`
//! (`status_code`, `body`) or an `error` (`code`, `message`).
//! Anthropic (<https://docs.anthropic.com/en/api/creating-message-batches>): the requests
//! `{custom_id, params}` go inline; `processing_status` is `in_progress`, `canceling` or
//! `ended`; results are JSONL lines with `custom_id` and a `result` of type `succeeded`,
//! `errored`, `canceled` or `expired`. No I/O here.

use serde_json::Value;

use crate::config::BatchProvider;

/// The provider's view of one batch, as the lifecycle needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchView {
    /// The provider's batch id.
    pub id: String,
    /// The provider's status word.
    pub status: String,
    /// Whether it has ended (no more progress; results can be fetched).
    pub ended: bool,
    /// Requests succeeded so far.
    pub completed: u64,
    /// Requests failed so far (errored, expired, cancelled).
    pub failed: u64,
    /// All requests in it.
    pub total: u64,
    /// OpenAI's output file id, or Anthropic's results URL.
    pub output: Option<String>,
    /// OpenAI's error file id.
    pub errors: Option<String>,
    /// The first error code of a batch that failed as a whole (`token_limit_exceeded`).
    pub failure: Option<String>,
    /// OpenAI: `metadata.ratebound_key`, our key for it.
    pub key: Option<String>,
}

/// What came back for one request of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum LineResult {
    /// A response with this status and body (JSON text).
    Response {
        /// The HTTP status the request got.
        status: u16,
        /// The response body as JSON text.
        body: String,
    },
    /// An error without a response, with the provider's error code or type.
    Error {
        /// `server_error`, `invalid_request_error`, ...
        code: String,
        /// The error object as JSON text.
        body: String,
    },
    /// Not attempted: the batch expired or was cancelled before it ran.
    NotRun,
}

/// The metadata key carrying our batch key (OpenAI).
pub const KEY_FIELD: &str = "ratebound_key";

/// One request line of a batch: `custom_id` is the item's id, `body` its JSON text.
pub fn request_line(
    provider: BatchProvider,
    custom_id: &str,
    method: &str,
    path: &str,
    body: &str,
) -> String {
    let id = Value::from(custom_id);
    match provider {
        BatchProvider::OpenAi => format!(
            "{{\"custom_id\":{id},\"method\":{},\"url\":{},\"body\":{body}}}",
            Value::from(method),
            Value::from(path)
        ),
        BatchProvider::Anthropic => format!("{{\"custom_id\":{id},\"params\":{body}}}"),
    }
}

/// Parses a batch object of `provider`.
pub fn parse_batch(provider: BatchProvider, text: &[u8]) -> Option<BatchView> {
    let v: Value = serde_json::from_slice(text).ok()?;
    let id = v.get("id")?.as_str()?.to_string();
    let counts = &v["request_counts"];
    let n = |key: &str| counts[key].as_u64().unwrap_or(0);
    let string = |key: &str| v[key].as_str().map(str::to_string);
    Some(match provider {
        BatchProvider::OpenAi => {
            let status = string("status").unwrap_or_default();
            BatchView {
                id,
                ended: matches!(
                    status.as_str(),
                    "completed" | "expired" | "cancelled" | "failed"
                ),
                status,
                completed: n("completed"),
                failed: n("failed"),
                total: n("total"),
                output: string("output_file_id"),
                errors: string("error_file_id"),
                failure: v["errors"]["data"][0]["code"].as_str().map(str::to_string),
                key: v["metadata"][KEY_FIELD].as_str().map(str::to_string),
            }
        }
        BatchProvider::Anthropic => {
            let status = string("processing_status").unwrap_or_default();
            let failed = n("errored") + n("canceled") + n("expired");
            BatchView {
                id,
                ended: status == "ended",
                status,
                completed: n("succeeded"),
                failed,
                total: n("succeeded") + failed + n("processing"),
                output: string("results_url"),
                errors: None,
                failure: None,
                key: None,
            }
        }
    })
}

/// The batches of a list response (`data`), and the id to page on from when there are more.
pub fn parse_list(provider: BatchProvider, text: &[u8]) -> (Vec<BatchView>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(text) else {
        return (Vec::new(), None);
    };
    let views: Vec<BatchView> = (v["data"].as_array().into_iter().flatten())
        .filter_map(|b| parse_batch(provider, b.to_string().as_bytes()))
        .collect();
    let more = v["has_more"].as_bool().unwrap_or(false);
    let next = (more)
        .then(|| v["last_id"].as_str().map(str::to_string))
        .flatten()
        .or_else(|| more.then(|| views.last().map(|b| b.id.clone())).flatten());
    (views, next)
}

/// Parses one result line into its `custom_id` and result; `None` for a line that is not
/// JSON or has no `custom_id`.
pub fn parse_line(provider: BatchProvider, line: &str) -> Option<(String, LineResult)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let custom_id = v.get("custom_id")?.as_str()?.to_string();
    let result = match provider {
        BatchProvider::OpenAi => match (&v["response"], &v["error"]) {
            (Value::Object(r), _) => LineResult::Response {
                status: r
                    .get("status_code")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(0),
                body: r.get("body").map_or_else(String::new, Value::to_string),
            },
            (_, Value::Object(e)) => {
                let code = e.get("code").and_then(Value::as_str).unwrap_or_default();
                if code == "batch_expired" || code == "batch_cancelled" {
                    LineResult::NotRun
                } else {
                    LineResult::Error {
                        code: code.to_string(),
                        body: v["error"].to_string(),
                    }
                }
            }
            _ => LineResult::NotRun,
        },
        BatchProvider::Anthropic => {
            let result = &v["result"];
            match result["type"].as_str().unwrap_or_default() {
                "succeeded" => LineResult::Response {
                    status: 200,
                    body: result["message"].to_string(),
                },
                "errored" => LineResult::Error {
                    code: (result["error"]["error"]["type"].as_str())
                        .or(result["error"]["type"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                    body: result["error"].to_string(),
                },
                _ => LineResult::NotRun,
            }
        }
    };
    Some((custom_id, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_carry_the_body_as_it_stands() {
        let line = request_line(
            BatchProvider::OpenAi,
            "a\"1",
            "POST",
            "/v1/chat/completions",
            "{\"model\":\"m\"}",
        );
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["custom_id"], "a\"1");
        assert_eq!(v["body"]["model"], "m");
        let line = request_line(BatchProvider::Anthropic, "b", "POST", "/v1/messages", "{}");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["params"], serde_json::json!({}));
    }

    #[test]
    fn batch_objects_of_both_dialects_parse() {
        let openai = br#"{"id":"batch_1","status":"failed","request_counts":{"total":3,"completed":0,"failed":0},
            "errors":{"data":[{"code":"token_limit_exceeded"}]},"metadata":{"ratebound_key":"k-1"}}"#;
        let view = parse_batch(BatchProvider::OpenAi, openai).expect("parses");
        assert!(view.ended);
        assert_eq!(view.failure.as_deref(), Some("token_limit_exceeded"));
        assert_eq!(view.key.as_deref(), Some("k-1"));
        let anthropic = br#"{"id":"msgbatch_1","processing_status":"in_progress","request_counts":
            {"processing":2,"succeeded":1,"errored":1,"canceled":0,"expired":0},"results_url":null}"#;
        let view = parse_batch(BatchProvider::Anthropic, anthropic).expect("parses");
        assert!(!view.ended);
        assert_eq!((view.completed, view.failed, view.total), (1, 1, 4));
    }

    #[test]
    fn result_lines_map_to_responses_errors_and_not_run() {
        let ok = r#"{"custom_id":"a","response":{"status_code":200,"body":{"x":1}},"error":null}"#;
        assert_eq!(
            parse_line(BatchProvider::OpenAi, ok),
            Some((
                "a".into(),
                LineResult::Response {
                    status: 200,
                    body: "{\"x\":1}".into()
                }
            ))
        );
        let expired = r#"{"custom_id":"b","response":null,"error":{"code":"batch_expired"}}"#;
        assert_eq!(
            parse_line(BatchProvider::OpenAi, expired).map(|l| l.1),
            Some(LineResult::NotRun)
        );
        let errored = r#"{"custom_id":"c","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error"}}}}"#;
        let Some((_, LineResult::Error { code, .. })) =
            parse_line(BatchProvider::Anthropic, errored)
        else {
            panic!("an errored line is an error");
        };
        assert_eq!(code, "invalid_request_error");
        assert_eq!(parse_line(BatchProvider::OpenAi, "not json"), None);
    }
}
