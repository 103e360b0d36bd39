//! The built-in mock of a rate-limited API: the test oracle and the zero-setup demo.
//!
//! Owns the `mock://PROFILE?rpm=..&rps=..&tpm=..&window=..&latency=..` URL ([`MockSpec`]),
//! with the fault keys of every profile (`headers`, `quota_requests`, `fail_rate`,
//! `reset_rate`, `slow_rate`, `slow`, `seed`, `auth`: [`Faults`]), and its errors ([`MockError`]).
//! The behaviour lives in [`provider`], a pure type over a [`Clock`](crate::clock::Clock)
//! that tests drive in virtual time; [`server`] is the thin axum shell that puts it on a
//! socket. The mock keeps its own buckets and windows, independent of
//! [`limiter`](crate::limiter), so that it can judge the limiter instead of agreeing with it.
//! One profile per header dialect of [`headers`](crate::headers), each formatted in its own
//! file (`openai.rs`, `anthropic.rs`, `github.rs`, `x.rs`, `generic.rs`, `ietf.rs`,
//! `zendesk.rs`). The request-limited profiles also serve paginated [`listing`]s (a query
//! with `total=N`) and answer anything else with a fresh `id`, for multi-request jobs to
//! chain on.
//!
//! Invariant: a parsed spec always describes a mock that can be built: every limit is
//! non-zero, every window has a length, the profile takes every limit given, and the fault
//! rates add up to at most 1.

mod anthropic;
mod bucket;
pub mod fault;
mod generic;
mod github;
mod ietf;
pub mod listing;
mod openai;
pub mod provider;
pub mod server;
mod window;
mod x;
mod zendesk;

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

pub use fault::{Fault, Faults, Rate};
pub use provider::{MockRequest, MockResponse, MockStats, Provider, Record};
pub use server::{MockHandle, MockServer};

/// The query keys a `mock://` URL accepts, for some profile.
const KEYS: [&str; 13] = [
    "rpm",
    "rps",
    "tpm",
    "window",
    "latency",
    "headers",
    "quota_requests",
    "fail_rate",
    "reset_rate",
    "slow_rate",
    "slow",
    "seed",
    "auth",
];

/// The keys of the profiles that limit requests and tokens: every key.
const TOKEN_PROFILE_KEYS: &[&str] = &KEYS;

/// The keys of the profiles that limit requests only: every key but `tpm`.
const REQUEST_PROFILE_KEYS: [&str; 12] = [
    "rpm",
    "rps",
    "window",
    "latency",
    "headers",
    "quota_requests",
    "fail_rate",
    "reset_rate",
    "slow_rate",
    "slow",
    "seed",
    "auth",
];

/// The keys of the X profile: its window, the latency and the faults.
const X_KEYS: &[&str] = KEYS.split_at(3).1;

/// Which provider the mock imitates: its paths, bodies, headers and the limits it enforces.
///
/// One profile per header dialect of [`crate::headers::Dialect`]. The request limits
/// (`rpm`, `rps`, `window`) feed every dialect's request headers, `tpm` its token headers
/// where it has them. Adding a provider is adding a variant here and its dialect next to
/// `openai.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// OpenAI's chat completions API with request and token limits.
    OpenAi,
    /// Anthropic's headers (`anthropic-ratelimit-*`, RFC 3339 resets) over the OpenAI
    /// profile's chat completions API, with request and token limits.
    Anthropic,
    /// GitHub's REST headers (`x-ratelimit-*` with `-used` and `-resource: core`, epoch
    /// resets): any method and path, request limits counted in anchored fixed windows.
    GitHub,
    /// X (Twitter) API v2: any method and path, limited by a fixed window of API calls,
    /// a request costing its body's `calls` (default 1).
    X,
    /// The de facto `X-RateLimit-{Limit,Remaining,Reset}` (epoch resets): any method and
    /// path, request limits.
    Generic,
    /// The IETF draft's `RateLimit-Policy` and `RateLimit` fields: any method and path,
    /// request limits.
    Ietf,
    /// Zendesk's `ratelimit-*` account headers and a `zendesk-ratelimit-tickets-index`
    /// endpoint limit: any method and path, request limits.
    Zendesk,
}

impl Profile {
    /// Every profile, in the order hints list them.
    pub const ALL: [Profile; 7] = [
        Profile::OpenAi,
        Profile::Anthropic,
        Profile::GitHub,
        Profile::X,
        Profile::Generic,
        Profile::Ietf,
        Profile::Zendesk,
    ];

    /// The profile's name as written in `mock://NAME` and `--profile NAME`: its header
    /// dialect's name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::OpenAi => "openai",
            Profile::Anthropic => "anthropic",
            Profile::GitHub => "github",
            Profile::X => "x",
            Profile::Generic => "generic",
            Profile::Ietf => "ietf",
            Profile::Zendesk => "zendesk",
        }
    }

    /// The `mock://` URL keys this profile takes: the limits it enforces, `latency`, and
    /// the fault keys every profile takes.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Profile::OpenAi | Profile::Anthropic => TOKEN_PROFILE_KEYS,
            Profile::GitHub | Profile::Generic | Profile::Ietf | Profile::Zendesk => {
                &REQUEST_PROFILE_KEYS
            }
            Profile::X => X_KEYS,
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

/// What the mock imitates and how strictly: a profile, its limits, its latency and the
/// faults it injects.
///
/// A limit left out (`None`) is unlimited. `rpm`, `rps` and `tpm` are buckets that start
/// full and refill continuously: `rpm` holds N requests refilled over 60 s, `rps` N requests
/// over 1 s, `tpm` N tokens over 60 s. `window` is a fixed window aligned to UTC. GitHub
/// counts fixed windows instead, each starting with the first request after the previous
/// one ended: `rpm` N per 60 s window, `rps` N per 1 s, `window` N per its length. Which
/// limits a profile takes: [`Profile::keys`].
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
    /// A fixed window `(N, length)`: at most N units in each window of `length`, a window
    /// starting whenever the clock's wall time since the UNIX epoch is a multiple of
    /// `length`. X counts a request's `calls` (default 1); OpenAI counts requests.
    pub window: Option<(NonZeroU64, Duration)>,
    /// Simulated latency of every response, 429s included (a slow request waits
    /// [`Faults::slow`] instead).
    pub latency: Duration,
    /// The faults injected, and whether rate-limit headers are sent.
    pub faults: Faults,
}

impl MockSpec {
    /// An unlimited mock of `profile` with no latency.
    pub fn new(profile: Profile) -> MockSpec {
        MockSpec {
            profile,
            rpm: None,
            rps: None,
            tpm: None,
            window: None,
            latency: Duration::ZERO,
            faults: Faults::default(),
        }
    }

    /// Parses `mock://PROFILE?key=value&...`, with keys `rpm`, `rps`, `tpm` (positive
    /// integers), `window` (`N/DURATION`, see [`parse_window`]) and `latency` (a humantime
    /// duration such as `50ms`); the profile must take each key given ([`Profile::keys`]).
    /// Every profile takes the fault keys ([`Faults`]): `headers` (`true` or `false`),
    /// `quota_requests` (a count, 0 allowed), `fail_rate`, `reset_rate`, `slow_rate` (shares
    /// from 0 to 1 adding up to at most 1), `slow` (a duration), `seed` (an integer) and
    /// `auth` (a token: requests without `Authorization: Bearer TOKEN` are answered 401).
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
    ///
    /// let spec = MockSpec::parse_url("mock://x?window=180/15m").unwrap();
    /// assert_eq!(spec.profile, Profile::X);
    /// let (n, length) = spec.window.unwrap();
    /// assert_eq!((n.get(), length.as_secs()), (180, 900));
    ///
    /// let spec = MockSpec::parse_url("mock://github?rpm=60&fail_rate=0.1&headers=false").unwrap();
    /// assert_eq!(spec.faults.fail_rate.get(), 0.1);
    /// assert!(!spec.faults.headers);
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
            if !spec.profile.keys().contains(&key) {
                return Err(MockError::KeyNotForProfile {
                    key: key.to_string(),
                    profile: spec.profile,
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
            let rate = || {
                (value.parse::<f64>().ok())
                    .and_then(Rate::new)
                    .ok_or_else(|| bad("a share of requests from 0 to 1, e.g. `0.1`"))
            };
            let faults = &mut spec.faults;
            match key {
                "rpm" => spec.rpm = Some(positive()?),
                "rps" => spec.rps = Some(positive()?),
                "tpm" => spec.tpm = Some(positive()?),
                "window" => spec.window = Some(parse_window(value)?),
                "latency" => {
                    spec.latency = humantime::parse_duration(value)
                        .map_err(|_| bad("a duration, e.g. `50ms` or `1s`"))?;
                }
                "headers" => {
                    faults.headers = value
                        .parse()
                        .map_err(|_| bad("`true` or `false` (no rate-limit headers)"))?;
                }
                "quota_requests" => {
                    let n = value.parse().map_err(|_| {
                        bad("a number of requests, e.g. `100` (0: every request is refused)")
                    })?;
                    faults.quota_requests = Some(n);
                }
                "fail_rate" => faults.fail_rate = rate()?,
                "reset_rate" => faults.reset_rate = rate()?,
                "slow_rate" => faults.slow_rate = rate()?,
                "slow" => {
                    faults.slow = humantime::parse_duration(value)
                        .map_err(|_| bad("a duration, e.g. `30s`"))?;
                }
                "auth" => {
                    let token = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()))
                        .then(|| value.to_string());
                    faults.auth = Some(token.ok_or_else(|| {
                        bad("a token of visible ASCII characters, e.g. `s3cret` (requests must then send `Authorization: Bearer s3cret`)")
                    })?);
                }
                _ => {
                    faults.seed = value
                        .parse()
                        .map_err(|_| bad("a non-negative integer, e.g. `42`"))?;
                }
            }
        }
        spec.check()?;
        Ok(spec)
    }

    /// Checks what [`MockSpec::parse_url`] checks of a spec built by hand (the CLI's flags):
    /// that the profile takes every limit given, that a window has a length, and that the
    /// fault rates add up to at most 1.
    ///
    /// # Errors
    /// [`MockError::KeyNotForProfile`] for the first limit the profile does not take;
    /// [`MockError::BadValue`] for a window of length zero;
    /// [`MockError::FaultRatesOverOne`] for rates adding up to more than 1.
    pub fn check(&self) -> Result<(), MockError> {
        let given = [
            ("rpm", self.rpm.is_some()),
            ("rps", self.rps.is_some()),
            ("tpm", self.tpm.is_some()),
            ("window", self.window.is_some()),
        ];
        if let Some((key, _)) =
            (given.into_iter()).find(|(key, given)| *given && !self.profile.keys().contains(key))
        {
            return Err(MockError::KeyNotForProfile {
                key: key.to_string(),
                profile: self.profile,
            });
        }
        if let Some((n, length)) = self.window.filter(|(_, length)| length.is_zero()) {
            return Err(MockError::BadValue {
                key: "window".into(),
                value: format!("{n}/{}", humantime::format_duration(length)),
                expected: WINDOW_EXPECTED,
            });
        }
        let faults = &self.faults;
        if !faults.rates_fit() {
            return Err(MockError::FaultRatesOverOne {
                fail: faults.fail_rate,
                reset: faults.reset_rate,
                slow: faults.slow_rate,
            });
        }
        Ok(())
    }
}

/// What `window` takes, as its errors say.
const WINDOW_EXPECTED: &str =
    "`N/DURATION`: at most N in each UTC-aligned window of DURATION, e.g. `180/15m`";

/// Parses a fixed window `N/DURATION` (`180/15m`: at most 180 in each 15-minute window),
/// N a positive integer and DURATION a non-zero humantime duration. Used by the `window`
/// URL key and by `ratebound mock --window`.
///
/// # Errors
/// [`MockError::BadValue`] for key `window`, with an example.
///
/// ```
/// # use ratebound::mock::parse_window;
/// let (n, length) = parse_window("180/15s").unwrap();
/// assert_eq!((n.get(), length), (180, std::time::Duration::from_secs(15)));
/// assert!(parse_window("180").is_err());
/// ```
pub fn parse_window(text: &str) -> Result<(NonZeroU64, Duration), MockError> {
    let bad = || MockError::BadValue {
        key: "window".into(),
        value: text.to_string(),
        expected: WINDOW_EXPECTED,
    };
    let (n, length) = text.split_once('/').ok_or_else(bad)?;
    let n = n.parse::<NonZeroU64>().map_err(|_| bad())?;
    let length = humantime::parse_duration(length).map_err(|_| bad())?;
    if length.is_zero() {
        return Err(bad());
    }
    Ok((n, length))
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
    /// A limit the profile does not enforce.
    #[error(
        "`{key}` does not apply to the `{profile}` mock profile\n  hint: `{profile}` takes: {}",
        profile.keys().join(", ")
    )]
    KeyNotForProfile {
        /// The key (or flag) as given.
        key: String,
        /// The profile, which lists the keys it takes.
        profile: Profile,
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
    /// Fault rates whose shares add up to more than all requests.
    #[error(
        "the fault rates add up to more than 1: fail_rate {fail} + reset_rate {reset} + slow_rate {slow}\n  hint: a request gets at most one fault; lower the rates so that they add up to at most 1"
    )]
    FaultRatesOverOne {
        /// `fail_rate`.
        fail: Rate,
        /// `reset_rate`.
        reset: Rate,
        /// `slow_rate`.
        slow: Rate,
    },
}

impl MockError {
    /// The problem and the hint apart, for callers that format hints themselves (the CLI's
    /// usage errors): the message is `PROBLEM\n  hint: HINT`.
    pub fn parts(&self) -> (String, String) {
        let text = self.to_string();
        match text.split_once("\n  hint: ") {
            Some((problem, hint)) => (problem.to_string(), hint.to_string()),
            None => (text, String::new()),
        }
    }
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
                window: None,
                latency: Duration::from_millis(50),
                faults: Faults::default(),
            }
        );
        let spec = MockSpec::parse_url("mock://openai?window=3/10s&rpm=5").unwrap();
        assert_eq!(spec.window, Some((n(3).unwrap(), Duration::from_secs(10))));
        let spec = MockSpec::parse_url("mock://x?window=180/15s&latency=20ms").unwrap();
        assert_eq!(
            spec,
            MockSpec {
                profile: Profile::X,
                window: Some((n(180).unwrap(), Duration::from_secs(15))),
                latency: Duration::from_millis(20),
                ..MockSpec::new(Profile::X)
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
                "mock://bing?rpm=1",
                "profile `bing`",
                "profiles: openai, anthropic, github, x, generic, ietf, zendesk",
            ),
            (
                "mock://openai?rpn=5",
                "key `rpn`",
                "valid keys: rpm, rps, tpm, window, latency, headers, quota_requests, fail_rate, reset_rate, slow_rate, slow, seed, auth",
            ),
            (
                "mock://github?tpm=5",
                "`tpm` does not apply to the `github` mock profile",
                "`github` takes: rpm, rps, window, latency, headers",
            ),
            (
                "mock://x?rpm=5",
                "`rpm` does not apply to the `x` mock profile",
                "`x` takes: window, latency",
            ),
            (
                "mock://x?window=180",
                "key `window` has a bad value `180`",
                "`N/DURATION`: at most N in each UTC-aligned window of DURATION, e.g. `180/15m`",
            ),
            (
                "mock://x?window=0/15s",
                "bad value `0/15s`",
                "e.g. `180/15m`",
            ),
            (
                "mock://x?window=180/0s",
                "bad value `180/0s`",
                "e.g. `180/15m`",
            ),
            (
                "mock://x?window=180/soon",
                "bad value `180/soon`",
                "N/DURATION",
            ),
            ("mock://x?window=/15s", "bad value `/15s`", "N/DURATION"),
            ("mock://openai?window=", "bad value ``", "N/DURATION"),
            (
                "mock://x?window=1/1s&window=2/1s",
                "`window` is given twice",
                "keep one",
            ),
            ("mock://openai?rpm=0", "bad value `0`", "a positive integer"),
            ("mock://twitter", "profile `twitter`", "openai, anthropic"),
            (
                "mock://openai?headers=no",
                "key `headers` has a bad value `no`",
                "`headers` takes `true` or `false`",
            ),
            (
                "mock://openai?quota_requests=-1",
                "bad value `-1`",
                "a number of requests, e.g. `100`",
            ),
            (
                "mock://openai?quota_requests=",
                "bad value ``",
                "a number of requests",
            ),
            (
                "mock://x?fail_rate=1.5",
                "key `fail_rate` has a bad value `1.5`",
                "a share of requests from 0 to 1, e.g. `0.1`",
            ),
            (
                "mock://zendesk?reset_rate=-0.1",
                "key `reset_rate` has a bad value `-0.1`",
                "from 0 to 1",
            ),
            (
                "mock://ietf?slow_rate=NaN",
                "key `slow_rate` has a bad value `NaN`",
                "from 0 to 1",
            ),
            (
                "mock://openai?slow_rate=half",
                "bad value `half`",
                "from 0 to 1",
            ),
            (
                "mock://openai?slow=forever",
                "key `slow` has a bad value `forever`",
                "a duration, e.g. `30s`",
            ),
            (
                "mock://openai?seed=-3",
                "key `seed` has a bad value `-3`",
                "a non-negative integer, e.g. `42`",
            ),
            (
                "mock://openai?auth=",
                "key `auth` has a bad value ``",
                "a token of visible ASCII characters, e.g. `s3cret`",
            ),
            (
                "mock://github?auth",
                "key `auth` has a bad value ``",
                "`Authorization: Bearer s3cret`",
            ),
            (
                "mock://openai?auth=two words",
                "bad value `two words`",
                "visible ASCII",
            ),
            (
                "mock://x?auth=a&auth=b",
                "`auth` is given twice",
                "keep one",
            ),
            (
                "mock://openai?seed=1&seed=2",
                "`seed` is given twice",
                "keep one",
            ),
            (
                "mock://openai?fail_rate=0.6&reset_rate=0.3&slow_rate=0.2",
                "fault rates add up to more than 1: fail_rate 0.6 + reset_rate 0.3 + slow_rate 0.2",
                "a request gets at most one fault",
            ),
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

    #[test]
    fn parse_window_reads_a_count_over_a_duration() {
        let cases = [
            ("180/15m", 180, Duration::from_secs(900)),
            ("180/15s", 180, Duration::from_secs(15)),
            ("1/1ms", 1, Duration::from_millis(1)),
            ("15/1h 30m", 15, Duration::from_secs(5400)),
        ];
        for (text, count, length) in cases {
            assert_eq!(
                parse_window(text),
                Ok((n(count).unwrap(), length)),
                "{text}"
            );
        }
        for text in ["180", "180/", "-1/15s", "1.5/15s", "180/15", "180/0ms"] {
            assert!(
                matches!(parse_window(text), Err(MockError::BadValue { ref key, .. }) if key == "window"),
                "{text}"
            );
        }
    }

    #[test]
    fn profiles_parse_by_name_and_list_their_keys() {
        const FAULT_KEYS: &[&str] = KEYS.split_at(5).1;
        assert_eq!(
            FAULT_KEYS,
            [
                "headers",
                "quota_requests",
                "fail_rate",
                "reset_rate",
                "slow_rate",
                "slow",
                "seed",
                "auth"
            ]
        );
        for profile in Profile::ALL {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
            assert_eq!(profile.to_string(), profile.name());
            let dialect = profile.name().parse::<crate::headers::Dialect>();
            assert_eq!(
                dialect.map(|d| d.name()),
                Ok(profile.name()),
                "every profile speaks the header dialect of its name"
            );
            for key in FAULT_KEYS {
                assert!(profile.keys().contains(key), "{profile} takes {key}");
            }
            for key in profile.keys() {
                assert!(KEYS.contains(key), "{profile}: {key} is a known key");
            }
        }
        let x_keys: Vec<_> = ["window", "latency"]
            .into_iter()
            .chain(FAULT_KEYS.iter().copied())
            .collect();
        assert_eq!(Profile::X.keys(), x_keys);
        assert_eq!(Profile::OpenAi.keys(), KEYS);
        assert_eq!(Profile::Anthropic.keys(), KEYS);
        for profile in [
            Profile::GitHub,
            Profile::Generic,
            Profile::Ietf,
            Profile::Zendesk,
        ] {
            let without_tpm: Vec<_> = KEYS.into_iter().filter(|k| *k != "tpm").collect();
            assert_eq!(profile.keys(), without_tpm, "{profile}: requests only");
        }
    }

    #[test]
    fn parse_url_reads_every_fault_key_for_every_profile() {
        for profile in Profile::ALL {
            let url = format!(
                "mock://{profile}?headers=false&quota_requests=0&fail_rate=0.1&reset_rate=0.2&slow_rate=0.25&slow=5s&seed=7&auth=s3cret"
            );
            let spec = MockSpec::parse_url(&url).unwrap();
            let expected = Faults {
                headers: false,
                quota_requests: Some(0),
                fail_rate: Rate::new(0.1).unwrap(),
                reset_rate: Rate::new(0.2).unwrap(),
                slow_rate: Rate::new(0.25).unwrap(),
                slow: Duration::from_secs(5),
                seed: 7,
                auth: Some("s3cret".into()),
            };
            assert_eq!(spec.faults, expected, "{url}");
        }
        let spec = MockSpec::parse_url("mock://openai?headers=true&fail_rate=1").unwrap();
        assert!(spec.faults.headers);
        assert_eq!(spec.faults.fail_rate.get(), 1.0);
        let defaults = MockSpec::parse_url("mock://github").unwrap().faults;
        assert_eq!(defaults, Faults::default());
        assert_eq!(
            (defaults.slow, defaults.seed),
            (Duration::from_secs(30), 42)
        );
        assert!(defaults.headers);
        let spec = MockSpec::parse_url("mock://x?quota_requests=100").unwrap();
        assert_eq!(spec.faults.quota_requests, Some(100));
        let spec = MockSpec::parse_url("mock://ietf?fail_rate=0.1&reset_rate=0.2&slow_rate=0.7");
        assert!(spec.is_ok(), "rates adding up to 1, give or take rounding");
    }

    #[test]
    fn parse_url_reads_the_auth_token() {
        let spec = MockSpec::parse_url("mock://openai?auth=s3cret&rpm=60").unwrap();
        assert_eq!(spec.faults.auth.as_deref(), Some("s3cret"));
        assert_eq!(spec.rpm, n(60));
        let spec = MockSpec::parse_url("mock://x?auth=sk-proj_A.b~1").unwrap();
        assert_eq!(spec.faults.auth.as_deref(), Some("sk-proj_A.b~1"));
        assert_eq!(
            MockSpec::parse_url("mock://openai").unwrap().faults.auth,
            None
        );
        let e = MockSpec::parse_url("mock://openai?auth=").unwrap_err();
        assert!(
            matches!(e, MockError::BadValue { ref key, .. } if key == "auth"),
            "{e}"
        );
    }

    #[test]
    fn check_refuses_hand_built_specs_the_url_would_refuse() {
        let spec = MockSpec {
            rpm: n(60),
            ..MockSpec::new(Profile::X)
        };
        assert_eq!(
            spec.check(),
            Err(MockError::KeyNotForProfile {
                key: "rpm".into(),
                profile: Profile::X,
            })
        );
        let spec = MockSpec {
            window: Some((n(5).unwrap(), Duration::ZERO)),
            ..MockSpec::new(Profile::X)
        };
        let message = spec.check().unwrap_err().to_string();
        assert!(message.contains("bad value `5/0s`"), "{message}");
        let spec = MockSpec {
            rpm: n(60),
            tpm: n(1000),
            window: Some((n(5).unwrap(), Duration::from_secs(1))),
            ..MockSpec::new(Profile::OpenAi)
        };
        assert_eq!(spec.check(), Ok(()));
        assert_eq!(MockSpec::new(Profile::X).check(), Ok(()));
        let spec = MockSpec {
            tpm: n(1000),
            ..MockSpec::new(Profile::Zendesk)
        };
        assert!(matches!(
            spec.check(),
            Err(MockError::KeyNotForProfile { .. })
        ));
        let faults = Faults {
            fail_rate: Rate::new(0.5).unwrap(),
            slow_rate: Rate::new(0.75).unwrap(),
            ..Faults::default()
        };
        let spec = MockSpec {
            faults,
            ..MockSpec::new(Profile::OpenAi)
        };
        let message = spec.check().unwrap_err().to_string();
        assert!(
            message.contains("fail_rate 0.5 + reset_rate 0 + slow_rate 0.75"),
            "{message}"
        );
    }

    #[test]
    fn parts_split_the_problem_from_the_hint() {
        let e = "bing".parse::<Profile>().unwrap_err();
        assert_eq!(
            e.parts(),
            (
                "unknown mock profile `bing`".to_string(),
                "profiles: openai, anthropic, github, x, generic, ietf, zendesk".to_string()
            )
        );
    }
}
