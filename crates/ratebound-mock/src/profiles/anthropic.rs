//! The Anthropic dialect of the mock: `anthropic-ratelimit-*` headers over the OpenAI
//! profile's chat completions API.
//!
//! Pure formatting over values the provider computed. Source:
//! <https://docs.anthropic.com/en/api/rate-limits#response-headers>: per limit
//! `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`, the reset an RFC 3339
//! time at which the limit is fully replenished, and `retry-after` (seconds) on a 429. The
//! mock reports the request limit and the token limit (its `tpm`); the paths, bodies and
//! errors are the OpenAI profile's.

use std::time::{Duration, UNIX_EPOCH};

use super::openai::{self, TOKEN_KEYS};
use super::{Arrival, BatchApi, Dialect, Reply};
use crate::limits::{Limits, Standing};
use crate::provider::MockRequest;

/// The `anthropic` profile: OpenAI's chat completions with Anthropic's headers.
pub(crate) struct Anthropic;

impl Dialect for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn limit_keys(&self) -> &'static [&'static str] {
        TOKEN_KEYS
    }

    fn batch_api(&self) -> Option<BatchApi> {
        Some(BatchApi::Anthropic)
    }

    fn reply(&self, limits: &mut Limits, req: &MockRequest, at: Arrival<'_>) -> Reply {
        openai::chat_reply(self, limits, req, at)
    }

    fn rate_limit_headers(&self, limits: &Limits, wall_ns: u64) -> Vec<(String, String)> {
        let (requests, tokens) = (limits.requests(wall_ns), limits.tokens());
        rate_limit_headers(requests.as_ref(), tokens.as_ref(), wall_ns)
    }
}

/// The `anthropic-ratelimit-*` headers of the request and token limits as they stand at
/// `wall_ns` (epoch nanoseconds).
pub(crate) fn rate_limit_headers(
    requests: Option<&Standing>,
    tokens: Option<&Standing>,
    wall_ns: u64,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (family, standing) in [("requests", requests), ("tokens", tokens)] {
        if let Some(s) = standing {
            let values = [
                ("limit", s.limit.to_string()),
                ("remaining", s.remaining.to_string()),
                ("reset", rfc3339(wall_ns.saturating_add(s.reset))),
            ];
            headers.extend(
                values.map(|(what, v)| (format!("anthropic-ratelimit-{family}-{what}"), v)),
            );
        }
    }
    headers
}

/// `epoch_ns` as RFC 3339 in whole seconds, rounded up: a reset is a "not before".
fn rfc3339(epoch_ns: u64) -> String {
    let secs = epoch_ns.div_ceil(1_000_000_000);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_round_up_to_the_next_second() {
        assert_eq!(rfc3339(1_767_225_600_000_000_000), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_000_000_001), "2026-01-01T00:00:01Z");
    }
}
