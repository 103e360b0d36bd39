//! The `[batch]` table: how the provider's Batch API is reached and how big its batches are.
//!
//! Owns parsing and checking `provider`, `max_requests`, `max_bytes`, `window`, `poll` and
//! `enqueued_tokens`, with each provider's documented defaults (OpenAI: 50,000 requests and
//! 200 MB per batch, <https://platform.openai.com/docs/guides/batch>; Anthropic: 100,000
//! requests and 256 MB, <https://docs.anthropic.com/en/docs/build-with-claude/batch-processing>).
//! The batch lane itself lives in `crate::batch`; every problem here is reported with its line
//! and column like the rest of the config.

use std::num::NonZeroU64;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Checker;

/// The keys of `[batch]`, for hints.
pub(super) const BATCH_KEYS: &str =
    "provider, max_requests, max_bytes, window, turnaround, poll, enqueued_tokens";

/// Which provider's Batch API the batch lane speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchProvider {
    /// OpenAI: upload a JSONL file to `/v1/files`, create at `/v1/batches`, download the
    /// output and error files.
    OpenAi,
    /// Anthropic: `/v1/messages/batches` with the requests inline, results as JSONL.
    Anthropic,
}

impl BatchProvider {
    /// Most requests per batch the provider takes.
    pub fn max_requests(self) -> u64 {
        match self {
            BatchProvider::OpenAi => 50_000,
            BatchProvider::Anthropic => 100_000,
        }
    }

    /// Largest batch in bytes the provider takes.
    pub fn max_bytes(self) -> u64 {
        match self {
            BatchProvider::OpenAi => 200_000_000,
            BatchProvider::Anthropic => 256_000_000,
        }
    }

    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchProvider::OpenAi => "openai",
            BatchProvider::Anthropic => "anthropic",
        }
    }
}

/// `[batch]`: the batch lane's provider and sizes, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchApi {
    /// The provider's Batch API dialect.
    pub provider: BatchProvider,
    /// Most requests cut into one batch.
    pub max_requests: NonZeroU64,
    /// Most bytes of request lines cut into one batch.
    pub max_bytes: NonZeroU64,
    /// The completion window asked for (and the longest a batch is expected to take).
    pub window: Duration,
    /// How long a batch is expected to take, for plans (`run --via auto`, `estimate`);
    /// `None`: the whole window.
    pub turnaround: Option<Duration>,
    /// How often open batches are polled.
    pub poll: Duration,
    /// The provider's enqueued-token limit: most estimated tokens in open batches at once.
    pub enqueued_tokens: Option<NonZeroU64>,
}

impl BatchApi {
    /// The defaults for `provider`.
    pub fn new(provider: BatchProvider) -> BatchApi {
        BatchApi {
            provider,
            max_requests: NonZeroU64::new(provider.max_requests()).unwrap_or(NonZeroU64::MIN),
            max_bytes: NonZeroU64::new(provider.max_bytes()).unwrap_or(NonZeroU64::MIN),
            window: Duration::from_secs(24 * 3600),
            turnaround: None,
            poll: Duration::from_secs(30),
            enqueued_tokens: None,
        }
    }
}

/// `[batch]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    provider: Option<Spanned<String>>,
    max_requests: Option<Spanned<i64>>,
    max_bytes: Option<Spanned<i64>>,
    window: Option<Spanned<String>>,
    turnaround: Option<Spanned<String>>,
    poll: Option<Spanned<String>>,
    enqueued_tokens: Option<Spanned<i64>>,
}

/// Checks `[batch]`; `None` when the table is absent (the batch lane is then unavailable).
pub(super) fn check_batch_api(check: &mut Checker<'_>, raw: Option<RawBatch>) -> Option<BatchApi> {
    let raw = raw?;
    let provider = match raw.provider.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "openai")) => BatchProvider::OpenAi,
        Some((_, "anthropic")) => BatchProvider::Anthropic,
        Some((p, other)) => {
            check.problem(
                p.span(),
                format!("`provider` must be `openai` or `anthropic`, found `{other}`"),
                "openai: /v1/files and /v1/batches; anthropic: /v1/messages/batches",
            );
            BatchProvider::OpenAi
        }
    };
    let mut api = BatchApi::new(provider);
    let capped = |check: &mut Checker<'_>, v: &Spanned<i64>, key: &str, most: u64| {
        let n = check.positive(v, key, &format!("at most {most} for {}", provider.as_str()))?;
        if n.get() > most {
            check.problem(
                v.span(),
                format!(
                    "`{key}` is more than {} allows, found `{n}`",
                    provider.as_str()
                ),
                format!("at most {most}; leave it out for that default"),
            );
            return None;
        }
        Some(n)
    };
    if let Some(v) = &raw.max_requests {
        api.max_requests = capped(check, v, "max_requests", provider.max_requests())?;
    }
    if let Some(v) = &raw.max_bytes {
        api.max_bytes = capped(check, v, "max_bytes", provider.max_bytes())?;
    }
    if let Some(v) = &raw.window {
        api.window = check.duration(v, "window")?;
    }
    if let Some(v) = &raw.turnaround {
        api.turnaround = Some(check.duration(v, "turnaround")?);
    }
    if let Some(v) = &raw.poll {
        api.poll = check.duration(v, "poll")?;
    }
    if let Some(v) = &raw.enqueued_tokens {
        api.enqueued_tokens = Some(check.positive(
            v,
            "enqueued_tokens",
            "the provider's enqueued-token limit for the model, e.g. 2000000",
        )?);
    }
    Some(api)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str =
        "[api]\nbase_url = \"http://x\"\n[request]\npath = \"/v1/chat/completions\"\n";

    #[test]
    fn batch_table_takes_provider_defaults_and_overrides() {
        let config = Config::parse(
            Path::new("c.toml"),
            &format!(
                "{BASE}[batch]\nprovider = \"anthropic\"\npoll = \"5s\"\nenqueued_tokens = 900\n"
            ),
        )
        .expect("valid");
        let api = config.batch_api.expect("[batch] given");
        assert_eq!(api.provider, BatchProvider::Anthropic);
        assert_eq!(api.max_requests.get(), 100_000);
        assert_eq!(api.poll, Duration::from_secs(5));
        assert_eq!(api.enqueued_tokens.map(NonZeroU64::get), Some(900));
        let none = Config::parse(Path::new("c.toml"), BASE).expect("valid");
        assert!(none.batch_api.is_none());
    }

    #[test]
    fn batch_table_refuses_bad_values_with_their_line() {
        let err = Config::parse(
            Path::new("c.toml"),
            &format!("{BASE}[batch]\nprovider = \"google\"\nmax_requests = 60000\n"),
        )
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("c.toml:6:"), "{err}");
        assert!(err.contains("`provider` must be"), "{err}");
        let err = Config::parse(
            Path::new("c.toml"),
            &format!("{BASE}[batch]\nmax_requests = 60000\n"),
        )
        .expect_err("invalid")
        .to_string();
        assert!(err.contains("more than openai allows"), "{err}");
    }
}
