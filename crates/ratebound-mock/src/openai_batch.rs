//! OpenAI's Batch API in compressed time: `/v1/files` (upload with `purpose=batch`, content
//! download) and `/v1/batches` (create with metadata, get, list, cancel).
//!
//! Sources: <https://platform.openai.com/docs/guides/batch> and
//! <https://platform.openai.com/docs/api-reference/batch>. The input file is JSONL, one
//! request a line (`custom_id`, `method`, `url`, `body`). A batch is `in_progress` for
//! `batch_delay`, its `request_counts.completed` growing with the time elapsed, then
//! `completed` with an output file (one response a line) and, when some requests failed
//! (`batch_fail_every`), an error file; `cancelled` at once on cancel; `expired` after 24 h
//! if `batch_delay` is longer; `failed` with `token_limit_exceeded` when the batches in
//! progress would hold more than `batch_tokens` enqueued tokens. Progress, failures and
//! expiry are [`batch`](crate::batch)'s, shared with Anthropic's API. Pure.

use std::num::NonZeroU64;

use serde_json::{Value, json};

use crate::batch::{Batch, Outcome, Progress, tokens};
use crate::clock::Nanos;
use crate::profiles::Reply;
use crate::profiles::openai::{completion, error};
use crate::provider::MockRequest;

/// An uploaded file.
struct File {
    id: String,
    filename: String,
    content: String,
    created_s: u64,
}

/// A batch and what OpenAI's batch object adds.
struct OpenAiBatch {
    batch: Batch,
    input_file_id: String,
    endpoint: String,
    metadata: Value,
    /// Refused at creation for the enqueued-token limit.
    failed: Option<String>,
}

/// The files and batches of OpenAI's Batch API.
pub(crate) struct OpenAiBatches {
    files: Vec<File>,
    batches: Vec<OpenAiBatch>,
    progress: Progress,
    max_tokens: Option<NonZeroU64>,
}

impl OpenAiBatches {
    /// No files or batches yet; batches take `delay`, error every `fail_every`th request,
    /// and those in progress hold at most `max_tokens` enqueued tokens.
    pub(crate) fn new(
        delay: Nanos,
        fail_every: Option<NonZeroU64>,
        max_tokens: Option<NonZeroU64>,
    ) -> Self {
        OpenAiBatches {
            files: Vec::new(),
            batches: Vec::new(),
            progress: Progress { delay, fail_every },
            max_tokens,
        }
    }

    /// How many batches were created (failed ones included).
    pub(crate) fn created(&self) -> u64 {
        self.batches.len() as u64
    }

    /// The answer to `req` if it is a Files or Batch API request, at `now` (`wall_s`: epoch
    /// seconds); `None` for any other path.
    pub(crate) fn handle(&mut self, req: &MockRequest, now: Nanos, wall_s: u64) -> Option<Reply> {
        let path = req.path.split('?').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let progress = self.progress;
        Some(match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["v1", "files"]) => self.upload(req, wall_s),
            ("GET", ["v1", "files", id, "content"]) => self.content(id, now),
            ("POST", ["v1", "batches"]) => self.create(&req.body, now, wall_s),
            ("GET", ["v1", "batches"]) => {
                let data: Vec<Value> = self
                    .batches
                    .iter()
                    .rev()
                    .map(|b| b.view(now, &progress))
                    .collect();
                let ok = json!({"object": "list", "first_id": data.first().map(|b| b["id"].clone()),
                    "last_id": data.last().map(|b| b["id"].clone()), "has_more": false, "data": data});
                Reply::new(200, Vec::new(), ok)
            }
            ("GET", ["v1", "batches", id]) => match self.find(id) {
                Some(b) => Reply::new(200, Vec::new(), b.view(now, &progress)),
                None => not_found(id),
            },
            ("POST", ["v1", "batches", id, "cancel"]) => match self.find(id) {
                Some(b) => {
                    if !b.batch.ended(now, progress.delay) && b.failed.is_none() {
                        b.batch.canceled = Some(now);
                    }
                    Reply::new(200, Vec::new(), b.view(now, &progress))
                }
                None => not_found(id),
            },
            (_, ["v1", "files" | "batches", ..]) => not_found(path),
            _ => return None,
        })
    }

    fn find(&mut self, id: &str) -> Option<&mut OpenAiBatch> {
        self.batches.iter_mut().find(|b| b.batch.id == *id)
    }

    /// `POST /v1/files`: a multipart form with `purpose=batch` and the `file`.
    fn upload(&mut self, req: &MockRequest, wall_s: u64) -> Reply {
        let form = multipart(req);
        let field = |name: &str| form.iter().find(|(n, _, _)| n == name);
        if field("purpose").map(|(_, _, v)| v.as_str()) != Some("batch") {
            return bad("purpose: the mock takes `batch` files only");
        }
        let Some((_, filename, content)) = field("file") else {
            return bad("file: a multipart field `file` is required");
        };
        let file = File {
            id: format!("file-mock-{}", self.files.len() + 1),
            filename: filename.clone(),
            content: content.clone(),
            created_s: wall_s,
        };
        let view = json!({"id": file.id, "object": "file", "bytes": file.content.len(),
            "created_at": file.created_s, "filename": file.filename, "purpose": "batch"});
        self.files.push(file);
        Reply::new(200, Vec::new(), view)
    }

    /// `GET /v1/files/ID/content`: an upload, or a batch's output or error file.
    fn content(&self, id: &str, now: Nanos) -> Reply {
        let text = match self.files.iter().find(|f| f.id == id) {
            Some(file) => Some(file.content.clone()),
            None => (self.batches.iter()).find_map(|b| b.file(id, now, &self.progress)),
        };
        match text {
            Some(text) => Reply {
                text: Some(text),
                ..Reply::new(200, Vec::new(), Value::Null)
            },
            None => not_found(id),
        }
    }

    /// `POST /v1/batches`.
    fn create(&mut self, body: &[u8], now: Nanos, wall_s: u64) -> Reply {
        let body = serde_json::from_slice::<Value>(body).unwrap_or_default();
        let input = body["input_file_id"].as_str().unwrap_or_default();
        let Some(file) = self.files.iter().find(|f| f.id == input) else {
            return bad("input_file_id: no such file; upload one with purpose `batch`");
        };
        let requests: Vec<(String, Value)> = (file.content.lines())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|r| {
                (
                    r["custom_id"].as_str().unwrap_or_default().to_string(),
                    r["body"].clone(),
                )
            })
            .collect();
        let delay = self.progress.delay;
        let enqueued: u64 = (self.batches.iter())
            .filter(|b| b.failed.is_none() && !b.batch.ended(now, delay))
            .map(|b| tokens(&b.batch.requests))
            .sum();
        let failed = self.max_tokens.filter(|max| enqueued + tokens(&requests) > max.get()).map(|max| {
            format!("Enqueued token limit reached for gpt-mock in organization org-mock. Limit: {max} enqueued tokens. Please try again once some in_progress batches have been completed.")
        });
        let batch = OpenAiBatch {
            batch: Batch {
                id: format!("batch_mock_{}", self.batches.len() + 1),
                requests,
                created: now,
                created_s: wall_s,
                canceled: None,
            },
            input_file_id: input.to_string(),
            endpoint: body["endpoint"]
                .as_str()
                .unwrap_or("/v1/chat/completions")
                .to_string(),
            metadata: body["metadata"].clone(),
            failed,
        };
        let view = batch.view(now, &self.progress);
        self.batches.push(batch);
        Reply::new(200, Vec::new(), view)
    }
}

impl OpenAiBatch {
    fn status(&self, now: Nanos, progress: &Progress) -> &'static str {
        let b = &self.batch;
        match () {
            _ if self.failed.is_some() => "failed",
            _ if b.canceled.is_some() => "cancelled",
            _ if b.expired(now, progress.delay) => "expired",
            _ if b.ended(now, progress.delay) => "completed",
            _ => "in_progress",
        }
    }

    /// The batch object.
    fn view(&self, now: Nanos, progress: &Progress) -> Value {
        let b = &self.batch;
        let outcomes: Vec<Outcome> = (0..b.requests.len())
            .map(|i| b.outcome(i, now, progress))
            .collect();
        let done = |o: &Outcome| matches!(o, Outcome::Succeeded);
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Errored | Outcome::Expired))
            .count();
        let ended = self.failed.is_none() && b.ended(now, progress.delay);
        let errors = self.failed.as_ref().map(
            |m| json!({"object": "list", "data": [{"code": "token_limit_exceeded", "message": m}]}),
        );
        json!({
            "id": b.id, "object": "batch", "endpoint": self.endpoint, "errors": errors,
            "input_file_id": self.input_file_id, "completion_window": "24h",
            "status": self.status(now, progress),
            "output_file_id": ended.then(|| format!("file-{}-output", b.id)),
            "error_file_id": (ended && failed > 0).then(|| format!("file-{}-errors", b.id)),
            "created_at": b.created_s,
            "request_counts": {"total": b.requests.len(), "completed": outcomes.iter().filter(|o| done(o)).count(), "failed": failed},
            "metadata": self.metadata,
        })
    }

    /// The output or error file `id` of this batch, once it has ended.
    fn file(&self, id: &str, now: Nanos, progress: &Progress) -> Option<String> {
        let b = &self.batch;
        let errors = id == format!("file-{}-errors", b.id);
        if !(errors || id == format!("file-{}-output", b.id)) || !b.ended(now, progress.delay) {
            return None;
        }
        let lines = (b.requests.iter().enumerate()).filter_map(|(i, (custom_id, body))| {
            let line = match (b.outcome(i, now, progress), errors) {
                (Outcome::Succeeded, false) => json!({"id": format!("batch_req_{i}"), "custom_id": custom_id,
                    "response": {"status_code": 200, "request_id": format!("req_{i}"), "body": completion(body, i as u64 + 1, b.created_s)}, "error": null}),
                (Outcome::Errored, true) => json!({"id": format!("batch_req_{i}"), "custom_id": custom_id, "response": null,
                    "error": {"code": "server_error", "message": "mock: this request fails (batch_fail_every)"}}),
                (Outcome::Expired, true) => json!({"id": format!("batch_req_{i}"), "custom_id": custom_id, "response": null,
                    "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
                _ => return None,
            };
            Some(line.to_string() + "\n")
        });
        Some(lines.collect())
    }
}

/// The fields of a `multipart/form-data` body: name, filename (empty for a plain field)
/// and value.
fn multipart(req: &MockRequest) -> Vec<(String, String, String)> {
    let content_type = (req.headers.iter())
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let boundary = format!("--{}", boundary.trim_matches('"'));
    let body = String::from_utf8_lossy(&req.body);
    (body.split(boundary.as_str()))
        .filter_map(|part| {
            let (head, value) = part.split_once("\r\n\r\n")?;
            let quoted = |key: &str| {
                let start = head.find(&format!(" {key}=\""))? + key.len() + 3;
                Some(head[start..].split('"').next()?.to_string())
            };
            let value = value.strip_suffix("\r\n").unwrap_or(value);
            Some((
                quoted("name")?,
                quoted("filename").unwrap_or_default(),
                value.to_string(),
            ))
        })
        .collect()
}

fn bad(message: &str) -> Reply {
    Reply::new(
        400,
        Vec::new(),
        error(message, "invalid_request_error", None),
    )
}

fn not_found(what: &str) -> Reply {
    let message = format!("No such File or Batch object: {what}");
    Reply::new(
        404,
        Vec::new(),
        error(&message, "invalid_request_error", None),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::MockResponse;
    use crate::provider::MockRequest;
    use crate::provider::tests::{json, provider, send};

    /// A multipart upload of `n` chat requests as a batch input file.
    fn upload(n: usize, purpose: &str) -> MockRequest {
        let lines: String = (0..n)
            .map(|i| {
                let body = json!({"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
                json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions", "body": body}).to_string() + "\n"
            })
            .collect();
        let body = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{lines}\r\n--XyZ--\r\n"
        );
        MockRequest {
            method: "POST".into(),
            path: "/v1/files".into(),
            headers: vec![(
                "content-type".into(),
                "multipart/form-data; boundary=XyZ".into(),
            )],
            body: body.into_bytes(),
        }
    }

    fn create(file: &str) -> MockRequest {
        let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"job": "bios"}});
        send("POST", "/v1/batches", body)
    }

    fn lines(r: MockResponse) -> Vec<Value> {
        (String::from_utf8(r.body).unwrap().lines())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_batch_runs_from_an_uploaded_file_to_output_and_error_files() {
        let (p, clock) = provider("mock://openai?batch_delay=10s&batch_fail_every=3");
        let file = json(&p.handle(&upload(6, "batch")));
        assert_eq!(
            (file["id"].as_str(), file["purpose"].as_str()),
            (Some("file-mock-1"), Some("batch"))
        );
        let content = p.handle(&send("GET", "/v1/files/file-mock-1/content", Value::Null));
        assert_eq!(lines(content).len(), 6, "the upload comes back as sent");
        let batch = json(&p.handle(&create("file-mock-1")));
        assert_eq!(
            (batch["id"].as_str(), batch["status"].as_str()),
            (Some("batch_mock_1"), Some("in_progress"))
        );
        assert_eq!(batch["metadata"]["job"], "bios");
        assert_eq!(batch["request_counts"]["total"], 6);
        clock.advance(Duration::from_secs(5));
        let get = send("GET", "/v1/batches/batch_mock_1", Value::Null);
        let half = json(&p.handle(&get));
        assert_eq!(
            (
                half["request_counts"]["completed"].as_u64(),
                half["request_counts"]["failed"].as_u64()
            ),
            (Some(2), Some(1))
        );
        assert_eq!(half["output_file_id"], Value::Null);
        clock.advance(Duration::from_secs(5));
        let done = json(&p.handle(&get));
        assert_eq!(done["status"], "completed");
        let output = p.handle(&send(
            "GET",
            &format!(
                "/v1/files/{}/content",
                done["output_file_id"].as_str().unwrap()
            ),
            Value::Null,
        ));
        let output = lines(output);
        let ids: Vec<&str> = output
            .iter()
            .map(|l| l["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r0", "r1", "r3", "r4"]);
        assert_eq!(output[0]["response"]["status_code"], 200);
        let errors = p.handle(&send(
            "GET",
            &format!(
                "/v1/files/{}/content",
                done["error_file_id"].as_str().unwrap()
            ),
            Value::Null,
        ));
        let errors = lines(errors);
        let ids: Vec<&str> = errors
            .iter()
            .map(|l| l["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["r2", "r5"], "every third request fails");
        let list = json(&p.handle(&send("GET", "/v1/batches", Value::Null)));
        assert_eq!(list["data"][0]["id"], "batch_mock_1");
        assert_eq!(p.batches_created(), 1);
    }

    #[test]
    fn cancel_expiry_and_the_enqueued_token_limit() {
        let (p, clock) = provider("mock://openai?batch_delay=30h&batch_tokens=100");
        p.handle(&upload(4, "batch"));
        assert_eq!(
            json(&p.handle(&create("file-mock-1")))["status"],
            "in_progress",
            "44 tokens"
        );
        assert_eq!(
            json(&p.handle(&create("file-mock-1")))["status"],
            "in_progress",
            "88 tokens"
        );
        let refused = json(&p.handle(&create("file-mock-1")));
        assert_eq!(refused["status"], "failed");
        assert_eq!(refused["errors"]["data"][0]["code"], "token_limit_exceeded");
        let cancelled = json(&p.handle(&send(
            "POST",
            "/v1/batches/batch_mock_2/cancel",
            Value::Null,
        )));
        assert_eq!(cancelled["status"], "cancelled");
        clock.advance(Duration::from_secs(24 * 3600));
        let expired = json(&p.handle(&send("GET", "/v1/batches/batch_mock_1", Value::Null)));
        assert_eq!(expired["status"], "expired", "30 h is over the 24 h window");
        assert_eq!(
            expired["request_counts"]["failed"], 1,
            "24/30 of 4 processed, 1 expired"
        );
        assert_eq!(p.batches_created(), 3);
    }

    #[test]
    fn bad_uploads_and_unknown_ids_are_refused() {
        let (p, _) = provider("mock://openai");
        assert_eq!(p.handle(&upload(1, "fine-tune")).status, 400);
        assert_eq!(p.handle(&create("file-nope")).status, 400);
        assert_eq!(
            p.handle(&send("GET", "/v1/batches/batch_nope", Value::Null))
                .status,
            404
        );
        assert_eq!(
            p.handle(&send("GET", "/v1/files/file-nope/content", Value::Null))
                .status,
            404
        );
    }
}
