//! Provider rate-limit headers turned into observations.
//!
//! Owns reading what a response says about the provider's limits ([`observe`] →
//! [`Observations`]) and about waiting ([`retry_after`]). Leaves to others what to do with
//! it: the runner matches observations to configured limits and the limiter resyncs its
//! buckets (DESIGN.md, "Limits and headers").
//!
//! One file per dialect, each linking its provider's docs: [`Dialect::OpenAi`]
//! (`openai.rs`), [`Dialect::Anthropic`], [`Dialect::GitHub`], [`Dialect::X`],
//! [`Dialect::Generic`] (`X-RateLimit-*` without a suffix), [`Dialect::Ietf`]
//! (draft-ietf-httpapi-ratelimit-headers, old and new) and [`Dialect::Zendesk`]. Reset values
//! in every form are resolved in [`reset`]; `structured.rs` parses the RFC 8941 subset the
//! IETF fields use.
//!
//! Invariants:
//! - pure: headers and the wall time go in, values come out; no I/O, no clock reads;
//! - header names are matched case-insensitively;
//! - every reset is a [`Duration`] from the given wall time, and a reset in the past is zero;
//! - parsers never panic on any input: a value that does not parse is absent, and an
//!   observation with no limit, remaining or reset is dropped.

mod anthropic;
mod generic;
mod github;
mod ietf;
mod openai;
pub mod reset;
pub mod retry_after;
mod structured;
mod x;
mod zendesk;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

pub use retry_after::retry_after;

/// What a limit counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Requests (calls).
    Requests,
    /// Tokens, input and output together.
    Tokens,
    /// Input (prompt) tokens only.
    InputTokens,
    /// Output (completion) tokens only.
    OutputTokens,
    /// A provider-named limit: GitHub's `search` or `graphql`, a Zendesk endpoint limit such
    /// as `tickets-index`, X's `app-24hour`, an IETF quota unit such as `content-bytes`.
    Other(String),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Requests => "requests",
            Resource::Tokens => "tokens",
            Resource::InputTokens => "input-tokens",
            Resource::OutputTokens => "output-tokens",
            Resource::Other(name) => name,
        })
    }
}

/// What one response says about one limit. At least one of `limit`, `remaining` and `reset`
/// is present in every observation [`observe`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// What the limit counts.
    pub resource: Resource,
    /// The limit's size: units per window (or the quota).
    pub limit: Option<u64>,
    /// Units left now.
    pub remaining: Option<u64>,
    /// Time from the observation's wall time until the window resets or the bucket is full
    /// again; zero if the provider names a moment already past.
    pub reset: Option<Duration>,
    /// The limit's window, when the dialect states it (IETF policy `w`, Zendesk's
    /// per-minute account limit, X's 24-hour limits).
    pub window: Option<Duration>,
}

impl Observation {
    /// An observation of `resource` with nothing read yet.
    fn of(resource: Resource) -> Self {
        Observation {
            resource,
            limit: None,
            remaining: None,
            reset: None,
            window: None,
        }
    }

    /// Whether the response said anything about this limit.
    fn has_reading(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some() || self.reset.is_some()
    }
}

/// A family of rate-limit headers, as chosen in the config or detected from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// Detect from the header names present (see [`detect`]).
    #[default]
    Auto,
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Go-duration resets.
    OpenAi,
    /// `anthropic-ratelimit-*-{limit,remaining,reset}`, RFC 3339 resets.
    Anthropic,
    /// `x-ratelimit-{limit,remaining,reset,used,resource}`, epoch-second resets.
    GitHub,
    /// `x-rate-limit-{limit,remaining,reset}`, epoch-second resets.
    X,
    /// `X-RateLimit-{Limit,Remaining,Reset}`, resets in any form.
    Generic,
    /// draft-ietf-httpapi-ratelimit-headers: `RateLimit`/`RateLimit-Policy`, or the older
    /// `RateLimit-{Limit,Remaining,Reset}`.
    Ietf,
    /// `ratelimit-*` account headers plus `zendesk-ratelimit-<name>` endpoint limits.
    Zendesk,
}

impl Dialect {
    /// Every dialect with its config name, `Auto` first.
    pub const ALL: [Dialect; 8] = [
        Dialect::Auto,
        Dialect::OpenAi,
        Dialect::Anthropic,
        Dialect::GitHub,
        Dialect::X,
        Dialect::Generic,
        Dialect::Ietf,
        Dialect::Zendesk,
    ];

    /// The dialect's name in configs and messages: `auto`, `openai`, `anthropic`, `github`,
    /// `x`, `generic`, `ietf`, `zendesk`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Auto => "auto",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::GitHub => "github",
            Dialect::X => "x",
            Dialect::Generic => "generic",
            Dialect::Ietf => "ietf",
            Dialect::Zendesk => "zendesk",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dialect name that is none of [`Dialect::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown header dialect `{name}`, expected one of: auto, openai, anthropic, github, x, generic, ietf, zendesk"
)]
pub struct UnknownDialect {
    /// The name as given.
    pub name: String,
}

impl FromStr for Dialect {
    type Err = UnknownDialect;

    /// Parses a dialect name, ignoring ASCII case and surrounding whitespace.
    ///
    /// ```
    /// # use ratebound::headers::Dialect;
    /// assert_eq!("OpenAI".parse(), Ok(Dialect::OpenAi));
    /// assert!("twitter".parse::<Dialect>().unwrap_err().to_string().contains("zendesk"));
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim();
        Dialect::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownDialect {
                name: text.to_string(),
            })
    }
}

/// Everything one response says about limits and waiting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observations {
    /// The dialect read: the one asked for, or the one detected under [`Dialect::Auto`]
    /// (`None` when no rate-limit headers were recognised). Never `Some(Auto)`.
    pub dialect: Option<Dialect>,
    /// One observation per limit the response reports, in the dialect's order.
    pub limits: Vec<Observation>,
    /// The wait the response asks for ([`retry_after`]: `retry-after-ms`, else
    /// `Retry-After`), whatever the dialect.
    pub retry_after: Option<Duration>,
}

/// The longest wait a response can mean, capped at [`FAR_FUTURE`]: its `Retry-After`, or the
/// reset of a limit it reports exhausted (remaining 0). A date in year 9999 stays a long
/// wait: it never overflows into "at once".
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Observations {
    /// The longest wait this response asks for (see [`FAR_FUTURE`]), if any.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ratebound::headers::Observations;
    /// let seen = Observations { retry_after: Some(Duration::MAX), ..Observations::default() };
    /// assert_eq!(seen.longest_wait(), Some(ratebound::headers::FAR_FUTURE));
    /// ```
    pub fn longest_wait(&self) -> Option<Duration> {
        self.limits
            .iter()
            .filter(|o| o.remaining == Some(0))
            .filter_map(|o| o.reset)
            .chain(self.retry_after)
            .max()
            .map(|wait| wait.min(FAR_FUTURE))
    }
}

/// Reads a response's rate-limit headers in `dialect` (detected from the header names under
/// [`Dialect::Auto`]). Resets are resolved against `wall_now`. Never panics; values that do
/// not parse are left out.
///
/// ```
/// # use std::time::{Duration, UNIX_EPOCH};
/// # use ratebound::headers::{observe, Dialect, Resource};
/// let headers = vec![
///     ("x-ratelimit-limit-requests".to_string(), "60".to_string()),
///     ("x-ratelimit-remaining-requests".to_string(), "59".to_string()),
///     ("x-ratelimit-reset-requests".to_string(), "1s".to_string()),
/// ];
/// let seen = observe(&headers, UNIX_EPOCH, Dialect::Auto);
/// assert_eq!(seen.dialect, Some(Dialect::OpenAi));
/// assert_eq!(seen.limits[0].resource, Resource::Requests);
/// assert_eq!(seen.limits[0].remaining, Some(59));
/// assert_eq!(seen.limits[0].reset, Some(Duration::from_secs(1)));
/// ```
pub fn observe(
    headers: &[(String, String)],
    wall_now: SystemTime,
    dialect: Dialect,
) -> Observations {
    let dialect = match dialect {
        Dialect::Auto => detect(headers),
        chosen => Some(chosen),
    };
    let mut limits = match dialect {
        None | Some(Dialect::Auto) => Vec::new(),
        Some(Dialect::OpenAi) => openai::observe(headers, wall_now),
        Some(Dialect::Anthropic) => anthropic::observe(headers, wall_now),
        Some(Dialect::GitHub) => github::observe(headers, wall_now),
        Some(Dialect::X) => x::observe(headers, wall_now),
        Some(Dialect::Generic) => generic::observe(headers, wall_now),
        Some(Dialect::Ietf) => ietf::observe(headers, wall_now),
        Some(Dialect::Zendesk) => zendesk::observe(headers, wall_now),
    };
    limits.retain(Observation::has_reading);
    Observations {
        dialect,
        limits,
        retry_after: retry_after(headers, wall_now),
    }
}

/// The dialect a response speaks, judged by header names alone; `None` if it sends no
/// rate-limit headers this module knows. Never returns `Some(Auto)`.
///
/// Checked from the most specific names to the least, because the families overlap:
/// Anthropic (`anthropic-ratelimit-*`), OpenAI (`x-ratelimit-*-requests|tokens`), Zendesk
/// (`zendesk-ratelimit-*` or a bare `x-rate-limit`, which it sends beside IETF-style and
/// X-style names), GitHub (`x-ratelimit-resource` or `-used`), X (`x-rate-limit-*`), IETF
/// (`RateLimit*`), and last the generic `X-RateLimit-*`.
pub fn detect(headers: &[(String, String)]) -> Option<Dialect> {
    const MOST_SPECIFIC_FIRST: [Dialect; 7] = [
        Dialect::Anthropic,
        Dialect::OpenAi,
        Dialect::Zendesk,
        Dialect::GitHub,
        Dialect::X,
        Dialect::Ietf,
        Dialect::Generic,
    ];
    MOST_SPECIFIC_FIRST
        .into_iter()
        .find(|&dialect| is_spoken(headers, dialect))
}

/// Whether the response carries any header name of `dialect`.
fn is_spoken(headers: &[(String, String)], dialect: Dialect) -> bool {
    match dialect {
        Dialect::Auto => false,
        Dialect::OpenAi => openai::is_present(headers),
        Dialect::Anthropic => anthropic::is_present(headers),
        Dialect::GitHub => github::is_present(headers),
        Dialect::X => x::is_present(headers),
        Dialect::Generic => generic::is_present(headers),
        Dialect::Ietf => ietf::is_present(headers),
        Dialect::Zendesk => zendesk::is_present(headers),
    }
}

/// Looks up a header by case-insensitive name in a list of `(name, value)` pairs; the first
/// one wins when a name repeats.
pub fn find<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A header's value as a count (`700`): ASCII digits only, surrounding whitespace ignored.
fn find_count(headers: &[(String, String)], name: &str) -> Option<u64> {
    parse_count(find(headers, name)?)
}

/// A count (`700`): ASCII digits only, surrounding whitespace ignored.
fn parse_count(value: &str) -> Option<u64> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Whether any header name starts with `prefix` (ASCII case-insensitive).
fn has_prefix(headers: &[(String, String)], prefix: &str) -> bool {
    headers
        .iter()
        .any(|(name, _)| strip_prefix(name, prefix).is_some())
}

/// `name` without `prefix`, comparing ASCII case-insensitively.
fn strip_prefix<'n>(name: &'n str, prefix: &str) -> Option<&'n str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| name.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests;
