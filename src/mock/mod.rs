//! The built-in mock of a rate-limited API: the test oracle and the zero-setup demo.
//!
//! Owns the `mock://PROFILE?rpm=..&rps=..&tpm=..&latency=..` URL ([`MockSpec`]) and its
//! errors ([`MockError`]). The behaviour lives in [`provider`], a pure type over a
//! [`Clock`](crate::clock::Clock) that tests drive in virtual time; [`server`] is the thin
//! axum shell that puts it on a socket. The mock keeps its own buckets, independent of
//! [`limiter`](crate::limiter), so that it can judge the limiter instead of agreeing with it.
//!
//! Invariant: a spec always describes a mock that can be built; every limit is non-zero.

mod bucket;
mod openai;
pub mod provider;
pub mod server;

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

pub use provider::{MockRequest, MockResponse, MockStats, Provider, Record};
pub use server::{MockHandle, MockServer};

/// The query keys a `mock://` URL accepts.
const KEYS: [&str; 4] = ["rpm", "rps", "tpm", "latency"];

/// Which provider the mock imitates: its paths, bodies, headers and the limits it enforces.
///
/// Adding a provider is adding a variant here and its dialect next to `openai.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// OpenAI's chat completions API with request and token limits.
    OpenAi,
}

impl Profile {
    /// Every profile, in the order hints list them.
    pub const ALL: [Profile; 1] = [Profile::OpenAi];

    /// The profile's name as written in `mock://NAME` and `--profile NAME`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::OpenAi => "openai",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = MockError;

    /// Parses a profile name; the error lists the valid names.
    fn from_str(name: &str) -> Result<Profile, MockError> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| MockError::UnknownProfile {
                profile: name.to_string(),
            })
    }
}

/// What the mock imitates and how strictly: a profile, its limits and its latency.
///
/// A limit left out (`None`) is unlimited. Each limit is a bucket that starts full and
/// refills continuously: `rpm` holds N requests refilled over 60 s, `rps` N requests over
/// 1 s, `tpm` N tokens over 60 s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockSpec {
    /// The provider imitated.
    pub profile: Profile,
    /// Requests per minute.
    pub rpm: Option<NonZeroU64>,
    /// Requests per second.
    pub rps: Option<NonZeroU64>,
    /// Tokens per minute: a request is admitted on its estimate, `ceil(chars / 4) +
    /// max_tokens`, and the bucket is then charged the reply's `usage.total_tokens`.
    pub tpm: Option<NonZeroU64>,
    /// Simulated latency of every response, 429s included.
    pub latency: Duration,
}

impl MockSpec {
    /// An unlimited mock of `profile` with no latency.
    pub fn new(profile: Profile) -> MockSpec {
        MockSpec {
            profile,
            rpm: None,
            rps: None,
            tpm: None,
            latency: Duration::ZERO,
        }
    }

    /// Parses `mock://PROFILE?key=value&...`, with keys `rpm`, `rps`, `tpm` (positive
    /// integers) and `latency` (a humantime duration such as `50ms`).
    ///
    /// # Errors
    /// [`MockError`] naming the bad part (scheme, profile, key or value) with a hint that
    /// lists the valid ones.
    ///
    /// ```
    /// # use ratebound::mock::{MockSpec, Profile};
    /// let spec = MockSpec::parse_url("mock://openai?rpm=600&tpm=100000&latency=50ms").unwrap();
    /// assert_eq!(spec.profile, Profile::OpenAi);
    /// assert_eq!(spec.rpm.map(|n| n.get()), Some(600));
    /// assert_eq!(spec.latency, std::time::Duration::from_millis(50));
    /// ```
    pub fn parse_url(url: &str) -> Result<MockSpec, MockError> {
        let rest = url
            .strip_prefix("mock://")
            .ok_or_else(|| MockError::Scheme {
                url: url.to_string(),
            })?;
        let (profile, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut spec = MockSpec::new(profile.trim_end_matches('/').parse()?);
        let mut seen = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !KEYS.contains(&key) {
                return Err(MockError::UnknownKey {
                    key: key.to_string(),
                });
            }
            if seen.contains(&key) {
                return Err(MockError::DuplicateKey {
                    key: key.to_string(),
                });
            }
            seen.push(key);
            let bad = |expected: &'static str| MockError::BadValue {
                key: key.to_string(),
                value: value.to_string(),
                expected,
            };
            let positive = || {
                value
                    .parse::<NonZeroU64>()
                    .map_err(|_| bad("a positive integer, e.g. `600`"))
            };
            match key {
                "rpm" => spec.rpm = Some(positive()?),
                "rps" => spec.rps = Some(positive()?),
                "tpm" => spec.tpm = Some(positive()?),
                _ => {
                    spec.latency = humantime::parse_duration(value)
                        .map_err(|_| bad("a duration, e.g. `50ms` or `1s`"))?;
                }
            }
        }
        Ok(spec)
    }
}

/// Why a `mock://` URL or profile name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MockError {
    /// The URL does not start with `mock://`.
    #[error(
        "`{url}` is not a mock URL\n  hint: write `mock://PROFILE?key=value`, e.g. `mock://openai?rpm=600&tpm=100000`"
    )]
    Scheme {
        /// The URL as given.
        url: String,
    },
    /// No profile has this name.
    #[error(
        "unknown mock profile `{profile}`\n  hint: profiles: {}",
        profile_names()
    )]
    UnknownProfile {
        /// The name as given.
        profile: String,
    },
    /// A query key the mock does not know.
    #[error("unknown mock URL key `{key}`\n  hint: valid keys: {}", KEYS.join(", "))]
    UnknownKey {
        /// The key as given.
        key: String,
    },
    /// A query key given twice.
    #[error("mock URL key `{key}` is given twice\n  hint: keep one `{key}=...`")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A value that does not parse for its key.
    #[error("mock URL key `{key}` has a bad value `{value}`\n  hint: `{key}` takes {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
        /// What the key takes, with an example.
        expected: &'static str,
    },
}

fn profile_names() -> String {
    Profile::ALL.map(Profile::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(v)
    }

    #[test]
    fn parse_url_reads_every_key() {
        let spec = MockSpec::parse_url("mock://openai?rpm=600&tpm=100000&latency=50ms").unwrap();
        assert_eq!(
            spec,
            MockSpec {
                profile: Profile::OpenAi,
                rpm: n(600),
                rps: None,
                tpm: n(100_000),
                latency: Duration::from_millis(50),
            }
        );
        let spec = MockSpec::parse_url("mock://openai?rps=100").unwrap();
        assert_eq!((spec.rps, spec.rpm, spec.tpm), (n(100), None, None));
    }

    #[test]
    fn a_bare_profile_is_unlimited_with_no_latency() {
        for url in ["mock://openai", "mock://openai/", "mock://openai?"] {
            assert_eq!(
                MockSpec::parse_url(url),
                Ok(MockSpec::new(Profile::OpenAi)),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_urls_name_the_bad_part_and_list_the_valid_ones() {
        let cases = [
            (
                "http://openai",
                "`http://openai` is not a mock URL",
                "mock://PROFILE",
            ),
            (
                "mock://anthropic?rpm=1",
                "profile `anthropic`",
                "profiles: openai",
            ),
            (
                "mock://openai?rpn=5",
                "key `rpn`",
                "valid keys: rpm, rps, tpm, latency",
            ),
            ("mock://openai?rpm=0", "bad value `0`", "a positive integer"),
            (
                "mock://openai?tpm=lots",
                "bad value `lots`",
                "`tpm` takes a positive integer",
            ),
            (
                "mock://openai?rps",
                "key `rps` has a bad value ``",
                "positive integer",
            ),
            (
                "mock://openai?latency=fast",
                "bad value `fast`",
                "a duration, e.g. `50ms`",
            ),
            (
                "mock://openai?rpm=1&rpm=2",
                "`rpm` is given twice",
                "keep one",
            ),
        ];
        for (url, problem, hint) in cases {
            let message = MockSpec::parse_url(url).unwrap_err().to_string();
            let (first, rest) = message.split_once("\n  hint: ").unwrap();
            assert!(first.contains(problem), "{url}: {message}");
            assert!(rest.contains(hint), "{url}: {message}");
        }
    }
}
