//! The batch lifecycle's decisions, pure: how pending items are cut into batches, what a
//! batch's next step is, whether it may be submitted now, and what becomes of each item when
//! its results come back.
//!
//! A batch goes cut → uploaded (OpenAI only) → creating → created → ended → applied; each
//! state is a checkpoint in the store (`crate::store::BatchState`), and the driver does the
//! step each state names. No I/O and no clock here.

use std::collections::HashMap;

use super::dialect::LineResult;
use crate::config::{BatchApi, BatchProvider};
use crate::retry::{Outcome, Response, RetryPolicy, classify};
use crate::store::{BatchRow, BatchState, LineApply};

/// One item as the cutter sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemSize {
    /// The item's sequence number.
    pub seq: u64,
    /// Bytes of its request line (newline included).
    pub bytes: u64,
    /// Its estimated tokens.
    pub tokens: u64,
}

/// A group of items cut into one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// Its items, in scheduler order.
    pub seqs: Vec<u64>,
    /// Bytes of its request lines.
    pub bytes: u64,
    /// Estimated tokens of its requests.
    pub tokens: u64,
}

/// Cuts `items` (in scheduler order) into batches of at most `api`'s requests and bytes,
/// and, under an enqueued-token limit, at most that many tokens (a batch over it could never
/// be accepted). An item larger than a whole batch still goes, alone.
pub fn cut(items: impl IntoIterator<Item = ItemSize>, api: &BatchApi) -> Vec<Cut> {
    let mut cutter = Cutter::default();
    let mut cuts: Vec<Cut> = (items.into_iter())
        .filter_map(|item| cutter.push(item, api))
        .collect();
    cuts.extend(cutter.finish());
    cuts
}

/// [`cut`] one item at a time, for items read a page at a time: holds only the batch
/// being filled.
#[derive(Clone, Debug, Default)]
pub struct Cutter {
    current: Cut,
}

impl Cutter {
    /// Adds the next item; returns the batch it closed when it did not fit in it.
    pub fn push(&mut self, item: ItemSize, api: &BatchApi) -> Option<Cut> {
        let max_tokens = api.enqueued_tokens.map_or(u64::MAX, |t| t.get());
        let current = &self.current;
        let full = current.seqs.len() as u64 >= api.max_requests.get()
            || current.bytes + item.bytes > api.max_bytes.get()
            || current.tokens + item.tokens > max_tokens;
        let closed = (full && !current.seqs.is_empty()).then(|| std::mem::take(&mut self.current));
        let current = &mut self.current;
        current.seqs.push(item.seq);
        current.bytes += item.bytes;
        current.tokens += item.tokens;
        closed
    }

    /// The last batch, if it holds any item.
    pub fn finish(self) -> Option<Cut> {
        (!self.current.seqs.is_empty()).then_some(self.current)
    }
}

/// The step a batch's checkpoint calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Upload its input file (OpenAI), once it may be submitted.
    Upload,
    /// Create it at the provider, once it may be submitted.
    Create,
    /// A create may have been sent before a kill: look it up by its key, create if absent.
    LookUpThenCreate,
    /// Ask the provider how it is doing.
    Poll,
    /// Download its results and apply them.
    Apply,
    /// Nothing: it is closed.
    None,
}

/// What `row`'s checkpoint calls for next.
pub fn next_step(provider: BatchProvider, row: &BatchRow) -> Step {
    match (row.state, provider) {
        (BatchState::Cut, BatchProvider::OpenAi) => Step::Upload,
        (BatchState::Cut, BatchProvider::Anthropic) | (BatchState::Uploaded, _) => Step::Create,
        (BatchState::Creating, _) => Step::LookUpThenCreate,
        (BatchState::Created, _) => Step::Poll,
        (BatchState::Ended, _) => Step::Apply,
        (BatchState::Applied, _) => Step::None,
    }
}

/// Tokens the provider holds for `rows` now: those of batches submitted and not ended.
pub fn enqueued(rows: &[BatchRow]) -> u64 {
    rows.iter()
        .filter(|r| matches!(r.state, BatchState::Creating | BatchState::Created))
        .map(|r| r.tokens)
        .sum()
}

/// Whether a batch of `tokens` may be submitted while `enqueued` tokens are held, under
/// `api`'s enqueued-token limit. With nothing enqueued a batch always may: the cutter keeps
/// every batch within the limit.
pub fn may_submit(api: &BatchApi, enqueued: u64, tokens: u64) -> bool {
    enqueued == 0
        || api
            .enqueued_tokens
            .is_none_or(|max| enqueued + tokens <= max.get())
}

/// One item of a finished batch: its id, seq and transient failures so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The item's id (the line's `custom_id`).
    pub id: String,
    /// The item's sequence number.
    pub seq: u64,
    /// Its transient failures before this batch.
    pub failures: u32,
}

/// What becomes of each of `held` given the result lines of its batch, by error class as
/// online: a success is done; a transient failure (5xx, a server error) is retried in a
/// later batch while attempts remain; a 429 or a request the batch never ran (expired,
/// cancelled, missing from the files) goes back to the queue without spending an attempt;
/// any other error fails the item.
pub fn fates(
    held: &[Held],
    mut results: HashMap<String, LineResult>,
    policy: &RetryPolicy,
) -> Vec<LineApply> {
    held.iter()
        .map(|item| fate(item, results.remove(&item.id), policy))
        .collect()
}

fn fate(item: &Held, result: Option<LineResult>, policy: &RetryPolicy) -> LineApply {
    let seq = item.seq;
    let (status, body, outcome) = match result {
        None | Some(LineResult::NotRun) => return LineApply::Requeue { seq },
        Some(LineResult::Response { status, body }) => {
            let outcome =
                crate::retry::classify_body(Response::Status(status), &body, &policy.quota_markers);
            (Some(status), body, outcome)
        }
        Some(LineResult::Error { code, body }) => {
            let outcome = match code.as_str() {
                "rate_limit_exceeded" | "rate_limit_error" => Outcome::RateLimited,
                "server_error" | "api_error" | "overloaded_error" | "timeout" => {
                    classify(Response::Status(500))
                }
                _ => Outcome::Failed,
            };
            (None, body, outcome)
        }
    };
    let error = || {
        let text = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.get("error").unwrap_or(&v);
                (e.get("code").or(e.get("type")))
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            });
        text.unwrap_or_else(|| format!("batch line failed with status {}", status.unwrap_or(0)))
    };
    match outcome {
        Outcome::Done => LineApply::Done {
            seq,
            http_status: status.unwrap_or(200),
            usage: serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("usage").map(ToString::to_string)),
            body,
        },
        // A line the provider could not pass on is sent again in a later batch.
        Outcome::RateLimited | Outcome::QuotaExhausted | Outcome::Unreachable => {
            LineApply::Requeue { seq }
        }
        Outcome::Transient if policy.allows_another(item.failures + 1) => LineApply::Retry {
            seq,
            http_status: status,
            error: error(),
        },
        Outcome::Transient | Outcome::Failed | Outcome::Fatal => LineApply::Failed {
            seq,
            http_status: status,
            error: error(),
            body: Some(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    fn api(requests: u64, bytes: u64, tokens: Option<u64>) -> BatchApi {
        BatchApi {
            max_requests: NonZeroU64::new(requests).expect("positive"),
            max_bytes: NonZeroU64::new(bytes).expect("positive"),
            enqueued_tokens: tokens.and_then(NonZeroU64::new),
            ..BatchApi::new(BatchProvider::OpenAi)
        }
    }

    fn items(n: u64, bytes: u64, tokens: u64) -> Vec<ItemSize> {
        (1..=n).map(|seq| ItemSize { seq, bytes, tokens }).collect()
    }

    #[test]
    fn cut_respects_requests_bytes_and_the_enqueued_token_limit() {
        let sizes = |cuts: Vec<Cut>| cuts.iter().map(|c| c.seqs.len()).collect::<Vec<_>>();
        assert_eq!(
            sizes(cut(items(10, 1, 1), &api(4, 100, None))),
            vec![4, 4, 2]
        );
        assert_eq!(
            sizes(cut(items(10, 10, 1), &api(100, 35, None))),
            vec![3, 3, 3, 1]
        );
        assert_eq!(
            sizes(cut(items(10, 1, 30), &api(100, 100, Some(100)))),
            vec![3, 3, 3, 1]
        );
        let huge = cut(items(2, 1, 500), &api(100, 100, Some(100)));
        assert_eq!(sizes(huge), vec![1, 1], "an item over the limit goes alone");
        let order: Vec<u64> = cut(items(5, 1, 1), &api(2, 100, None))
            .into_iter()
            .flat_map(|c| c.seqs)
            .collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5], "batches keep scheduler order");
    }

    #[test]
    fn submission_waits_for_enqueued_tokens_to_drain() {
        let a = api(100, 100, Some(100));
        assert!(may_submit(&a, 0, 100));
        assert!(may_submit(&a, 60, 40));
        assert!(!may_submit(&a, 61, 40));
        assert!(may_submit(&api(100, 100, None), 1_000_000, 1_000_000));
    }

    #[test]
    fn line_fates_follow_the_error_class() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let held = |id: &str, seq, failures| Held {
            id: id.into(),
            seq,
            failures,
        };
        let items = [
            held("ok", 1, 0),
            held("5xx", 2, 0),
            held("5xx-last", 3, 1),
            held("400", 4, 0),
            held("gone", 5, 0),
            held("429", 6, 0),
        ];
        let response = |status: u16, body: &str| LineResult::Response {
            status,
            body: body.into(),
        };
        let results = HashMap::from([
            (
                "ok".to_string(),
                response(200, r#"{"usage":{"total_tokens":3}}"#),
            ),
            (
                "5xx".to_string(),
                LineResult::Error {
                    code: "server_error".into(),
                    body: "{}".into(),
                },
            ),
            ("5xx-last".to_string(), response(500, "{}")),
            (
                "400".to_string(),
                response(400, r#"{"error":{"code":"bad"}}"#),
            ),
            ("429".to_string(), response(429, "{}")),
        ]);
        let fates = fates(&items, results, &policy);
        assert!(
            matches!(&fates[0], LineApply::Done { usage: Some(u), .. } if u.contains("total_tokens"))
        );
        assert!(matches!(fates[1], LineApply::Retry { seq: 2, .. }));
        assert!(
            matches!(fates[2], LineApply::Failed { seq: 3, .. }),
            "no attempts left"
        );
        assert!(matches!(&fates[3], LineApply::Failed { seq: 4, error, .. } if error == "bad"));
        assert_eq!(
            fates[4],
            LineApply::Requeue { seq: 5 },
            "a missing line is requeued"
        );
        assert_eq!(fates[5], LineApply::Requeue { seq: 6 });
    }

    #[test]
    fn each_checkpoint_names_its_step() {
        let mut row = BatchRow {
            local_id: 1,
            key: "k".into(),
            state: BatchState::Cut,
            requests: 1,
            tokens: 10,
            bytes: 10,
            file_id: None,
            batch_id: None,
            status: None,
            completed: 0,
            failed: 0,
            output_file_id: None,
            error_file_id: None,
            created_at_ms: None,
        };
        assert_eq!(next_step(BatchProvider::OpenAi, &row), Step::Upload);
        assert_eq!(next_step(BatchProvider::Anthropic, &row), Step::Create);
        row.state = BatchState::Creating;
        assert_eq!(
            next_step(BatchProvider::OpenAi, &row),
            Step::LookUpThenCreate
        );
        assert_eq!(enqueued(std::slice::from_ref(&row)), 10);
        row.state = BatchState::Ended;
        assert_eq!(next_step(BatchProvider::OpenAi, &row), Step::Apply);
        assert_eq!(enqueued(&[row]), 0);
    }
}
