//! What a previous run tells the estimate: its latencies and its token usage.
//!
//! Owns turning a run's recorded attempts and `usage` objects (read read-only by
//! [`crate::store::Recorded`]) into a latency model and per-item token counts. An item of
//! the work list that the previous run finished settles to exactly what it used; any other
//! item settles to its estimated prompt plus the mean output the previous run saw (capped at
//! its `max_tokens`). Pure: no I/O.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::latency::Latency;

/// Tokens one response used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
}

/// A previous run, as the estimate uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRun {
    /// Latencies of its successful attempts (never empty).
    pub latency: Latency,
    /// Share of its attempts that failed transiently (5xx, timeouts, connection errors).
    pub failure_share: f64,
    by_id: HashMap<String, Usage>,
    mean_output: Option<f64>,
}

/// A previous run that cannot inform an estimate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the run has no successful attempt to take latencies from")]
pub struct NothingRecorded;

impl RecordedRun {
    /// From the latencies (ms) of successful attempts, each done item's `usage` JSON, and
    /// the counts of transient failures among all attempts.
    pub fn new(
        latencies_ms: &[u64],
        usage: &[(String, String)],
        transient: u64,
        attempts: u64,
    ) -> Result<RecordedRun, NothingRecorded> {
        if latencies_ms.is_empty() {
            return Err(NothingRecorded);
        }
        let by_id: HashMap<String, Usage> = usage
            .iter()
            .filter_map(|(id, text)| Some((id.clone(), parse_usage(text)?)))
            .collect();
        let mean_output = (!by_id.is_empty())
            .then(|| by_id.values().map(|u| u.output as f64).sum::<f64>() / by_id.len() as f64);
        Ok(RecordedRun {
            latency: Latency::Recorded(
                latencies_ms
                    .iter()
                    .map(|&ms| Duration::from_millis(ms))
                    .collect(),
            ),
            failure_share: if attempts > 0 {
                (transient as f64 / attempts as f64).min(1.0)
            } else {
                0.0
            },
            by_id,
            mean_output,
        })
    }

    /// The usage to expect of item `id` whose prompt is estimated at `prompt_tokens` and
    /// whose output is capped at `max_tokens` (0: no cap), or `None` when the previous run
    /// recorded no usage at all.
    pub fn usage_of(&self, id: &str, prompt_tokens: u64, max_tokens: u64) -> Option<Usage> {
        if let Some(u) = self.by_id.get(id) {
            return Some(*u);
        }
        let mean = self.mean_output?;
        let output = mean.round() as u64;
        Some(Usage {
            input: prompt_tokens,
            output: if max_tokens > 0 {
                output.min(max_tokens)
            } else {
                output
            },
        })
    }

    /// How many items the previous run recorded usage for.
    pub fn items(&self) -> usize {
        self.by_id.len()
    }
}

/// Reads OpenAI's (`prompt_tokens`, `completion_tokens`) or Anthropic's (`input_tokens`,
/// `output_tokens`) usage; `None` when neither is there.
fn parse_usage(text: &str) -> Option<Usage> {
    let v: Value = serde_json::from_str(text).ok()?;
    let get = |keys: [&str; 2]| keys.iter().find_map(|k| v.get(*k).and_then(Value::as_u64));
    let input = get(["prompt_tokens", "input_tokens"]);
    let output = get(["completion_tokens", "output_tokens"]);
    match (input, output, v.get("total_tokens").and_then(Value::as_u64)) {
        (Some(input), Some(output), _) => Some(Usage { input, output }),
        (None, None, Some(total)) => Some(Usage {
            input: total,
            output: 0,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_seen_before_use_their_usage_and_others_the_mean_output() {
        let usage = [
            (
                "a".to_string(),
                r#"{"prompt_tokens":10,"completion_tokens":30,"total_tokens":40}"#.to_string(),
            ),
            (
                "b".to_string(),
                r#"{"input_tokens":5,"output_tokens":10}"#.to_string(),
            ),
        ];
        let run = RecordedRun::new(&[50, 70], &usage, 1, 4).unwrap();
        assert_eq!(
            run.usage_of("a", 999, 999),
            Some(Usage {
                input: 10,
                output: 30
            })
        );
        assert_eq!(
            run.usage_of("new", 7, 200),
            Some(Usage {
                input: 7,
                output: 20
            }),
            "mean output of a and b"
        );
        assert_eq!(run.usage_of("new", 7, 12).map(|u| u.output), Some(12));
        assert_eq!(run.latency.mean(), Duration::from_millis(60));
        assert_eq!(run.failure_share, 0.25);
        assert_eq!(RecordedRun::new(&[], &usage, 0, 0), Err(NothingRecorded));
    }
}
