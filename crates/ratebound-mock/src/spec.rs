//! What a mock is: the `mock://PROFILE?key=value&...` URL ([`MockSpec`]), the profile it
//! imitates ([`Profile`]) and the errors of a bad URL ([`MockError`]).
//!
//! Invariant: a parsed spec always describes a mock that can be built: every limit is
//! non-zero, every window has a length, the profile takes every limit given, and the fault
//! rates add up to at most 1.

use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

use crate::fault::{Faults, Rate};
use crate::profiles::{ALL, Dialect};

/// The query keys a `mock://` URL accepts, for some profile: the limits, then `latency`
/// and the fault keys (which every profile takes), then the limits added since.
const KEYS: [&str; 22] = [
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
    "retry_after",
    "fill",
    "rate",
    "burst",
    "nodelay",
    "status",
    "batch_delay",
    "batch_fail_every",
    "batch_tokens",
];

/// The keys every profile takes: `latency` and the faults.
const COMMON_KEYS: &[&str] = KEYS.split_at(4).1.split_at(10).0;

/// Which provider the mock imitates: its paths, bodies, headers and the limits it enforces.
///
/// One profile per file of `profiles/`, each implementing its `Dialect` trait: `openai`, `anthropic`,
/// `github`, `x`, `generic`, `ietf` and `zendesk` (one per header dialect of ratebound's
/// `headers`), and `leaky` (nginx's `limit_req`, no headers).
#[derive(Clone, Copy)]
pub struct Profile(&'static dyn Dialect);

impl Profile {
    /// Every profile, in the order hints list them.
    pub fn all() -> impl Iterator<Item = Profile> {
        ALL.iter().map(|d| Profile(*d))
    }

    /// The profile's name as written in `mock://NAME` and `--profile NAME`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The `mock://` URL keys this profile takes: the limits it enforces, `latency`, and
    /// the fault keys every profile takes.
    pub fn keys(self) -> Vec<&'static str> {
        let limits = self.0.limit_keys().iter().copied();
        let before_faults = limits.clone().filter(|k| KEYS[..4].contains(k));
        let after = limits.filter(|k| !KEYS[..4].contains(k));
        before_faults
            .chain(COMMON_KEYS.iter().copied())
            .chain(after)
            .collect()
    }

    /// How it answers.
    pub(crate) fn dialect(self) -> &'static dyn Dialect {
        self.0
    }
}

impl PartialEq for Profile {
    fn eq(&self, other: &Profile) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Profile {}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Profile({})", self.name())
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
        Profile::all()
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
    /// How full every bucket starts, a share of its capacity: `None` (or 1) full, 0 empty,
    /// as after another client drained it.
    pub fill: Option<Rate>,
    /// A leaky bucket's rate `(N, per)`: N requests per `per`, as nginx's `rate=Nr/s`.
    pub rate: Option<(NonZeroU64, Duration)>,
    /// A leaky bucket's burst: requests admitted above the rate (nginx's `burst`).
    pub burst: u64,
    /// Whether a leaky bucket serves its burst at once (nginx's `nodelay`) instead of
    /// queueing each admitted request until the excess drains.
    pub nodelay: bool,
    /// The status of a leaky bucket's refusal: 429 (the default) or 503 (nginx's).
    pub status: u16,
    /// How long a message batch takes to end (Anthropic's take up to 24 h).
    pub batch_delay: Duration,
    /// Every Nth request of a batch errors: a partial failure.
    pub batch_fail_every: Option<NonZeroU64>,
    /// The most tokens (request estimates) the batches in progress may hold; a batch that
    /// would exceed it is refused with a 429.
    pub batch_tokens: Option<NonZeroU64>,
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
            fill: None,
            rate: None,
            burst: 0,
            nodelay: false,
            status: 429,
            batch_delay: DEFAULT_BATCH_DELAY,
            batch_fail_every: None,
            batch_tokens: None,
            faults: Faults::default(),
        }
    }

    /// Parses `mock://PROFILE?key=value&...`, with keys `rpm`, `rps`, `tpm` (positive
    /// integers), `window` (`N/DURATION`, see [`parse_window`]) and `latency` (a humantime
    /// duration such as `50ms`); the profile must take each key given ([`Profile::keys`]).
    /// Every profile takes the fault keys ([`Faults`]): `headers` (`true` or `false`),
    /// `quota_requests` (a count, 0 allowed), `fail_rate`, `reset_rate`, `slow_rate` (shares
    /// from 0 to 1 adding up to at most 1), `slow` (a duration), `seed` (an integer) and
    /// `auth` (a token: requests without `Authorization: Bearer TOKEN` are answered 401) and
    /// `retry_after` (`true`: a 429 keeps a plain `retry-after` under `headers=false`).
    /// Bucket profiles take `fill` (a share from 0 to 1 of every bucket at the start);
    /// `leaky` takes `rate` (`Nr/s` or `Nr/m`), `burst` (a count), `nodelay` (`true` or
    /// `false`, bare: `true`) and `status` (429 or 503).
    ///
    /// # Errors
    /// [`MockError`] naming the bad part (scheme, profile, key or value) with a hint that
    /// lists the valid ones.
    ///
    /// ```
    /// # use ratebound_mock::{MockSpec, Profile};
    /// let spec = MockSpec::parse_url("mock://openai?rpm=600&tpm=100000&latency=50ms").unwrap();
    /// assert_eq!(spec.profile.name(), "openai");
    /// assert_eq!(spec.rpm.map(|n| n.get()), Some(600));
    /// assert_eq!(spec.latency, std::time::Duration::from_millis(50));
    ///
    /// let spec = MockSpec::parse_url("mock://x?window=180/15m").unwrap();
    /// assert_eq!(spec.profile.name(), "x");
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
            spec.set(key, value)?;
        }
        spec.check()?;
        Ok(spec)
    }

    /// Sets `key` (a limit, `latency`, or a fault key) to `value`, as a URL gives them.
    fn set(&mut self, key: &str, value: &str) -> Result<(), MockError> {
        let bad = |expected: &'static str| bad_value(key, value, expected);
        let positive = || {
            value
                .parse::<NonZeroU64>()
                .map_err(|_| bad("a positive integer, e.g. `600`"))
        };
        let boolean = |meaning: &'static str| match value {
            "" | "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad(meaning)),
        };
        match key {
            "rpm" => self.rpm = Some(positive()?),
            "rps" => self.rps = Some(positive()?),
            "tpm" => self.tpm = Some(positive()?),
            "window" => self.window = Some(parse_window(value)?),
            "latency" => {
                self.latency = humantime::parse_duration(value)
                    .map_err(|_| bad("a duration, e.g. `50ms` or `1s`"))?;
            }
            "fill" => {
                let share = value.parse::<f64>().ok().and_then(Rate::new);
                self.fill = Some(share.ok_or_else(|| {
                    bad("a share of every bucket from 0 (empty) to 1 (full), e.g. `0`")
                })?);
            }
            "rate" => self.rate = Some(parse_rate(value).ok_or_else(|| bad(RATE_EXPECTED))?),
            "burst" => {
                self.burst = value
                    .parse()
                    .map_err(|_| bad("a number of requests above the rate, e.g. `10`"))?;
            }
            "nodelay" => self.nodelay = boolean("`true` or `false` (queue the burst)")?,
            "status" => {
                self.status = match value {
                    "429" => 429,
                    "503" => 503,
                    _ => return Err(bad("`429` or `503` (nginx's default)")),
                };
            }
            "batch_delay" => {
                self.batch_delay = humantime::parse_duration(value)
                    .map_err(|_| bad("a duration, e.g. `10s` (how long a batch takes)"))?;
            }
            "batch_fail_every" => self.batch_fail_every = Some(positive()?),
            "batch_tokens" => self.batch_tokens = Some(positive()?),
            _ => self.set_fault(key, value)?,
        }
        Ok(())
    }

    /// Sets the fault key `key` to `value`.
    fn set_fault(&mut self, key: &str, value: &str) -> Result<(), MockError> {
        let bad = |expected: &'static str| bad_value(key, value, expected);
        let rate = || {
            (value.parse::<f64>().ok())
                .and_then(Rate::new)
                .ok_or_else(|| bad("a share of requests from 0 to 1, e.g. `0.1`"))
        };
        let faults = &mut self.faults;
        match key {
            "headers" => {
                faults.headers = value
                    .parse()
                    .map_err(|_| bad("`true` or `false` (no rate-limit headers)"))?;
            }
            "retry_after" => {
                faults.retry_after = value.parse().map_err(|_| {
                    bad("`true` or `false` (a `retry-after` without the other headers)")
                })?;
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
                faults.slow =
                    humantime::parse_duration(value).map_err(|_| bad("a duration, e.g. `30s`"))?;
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
        Ok(())
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
            ("fill", self.fill.is_some()),
            ("rate", self.rate.is_some()),
            ("burst", self.burst != 0),
            ("nodelay", self.nodelay),
            ("status", self.status != 429),
            ("batch_delay", self.batch_delay != DEFAULT_BATCH_DELAY),
            ("batch_fail_every", self.batch_fail_every.is_some()),
            ("batch_tokens", self.batch_tokens.is_some()),
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

/// How long a message batch takes to end unless `batch_delay` says otherwise.
const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(10);

/// What `rate` takes, as its errors say.
const RATE_EXPECTED: &str =
    "`Nr/s` or `Nr/m`, N a positive integer: N requests per second or minute, e.g. `50r/s`";

/// Parses nginx's `Nr/s` or `Nr/m` (the `r` may be left out) into N per second or minute.
fn parse_rate(text: &str) -> Option<(NonZeroU64, Duration)> {
    let (n, per) = text.split_once('/')?;
    let n = n
        .strip_suffix('r')
        .unwrap_or(n)
        .parse::<NonZeroU64>()
        .ok()?;
    let per = match per {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        _ => return None,
    };
    Some((n, per))
}

/// The error of `key` given a bad `value`.
fn bad_value(key: &str, value: &str, expected: &'static str) -> MockError {
    MockError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        expected,
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
/// # use ratebound_mock::parse_window;
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
    Profile::all()
        .map(Profile::name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Profile {
        name.parse().unwrap()
    }

    fn n(v: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(v)
    }

    #[test]
    fn parse_url_reads_every_key() {
        let spec = MockSpec::parse_url("mock://openai?rpm=600&tpm=100000&latency=50ms").unwrap();
        assert_eq!(
            spec,
            MockSpec {
                profile: named("openai"),
                rpm: n(600),
                rps: None,
                tpm: n(100_000),
                window: None,
                latency: Duration::from_millis(50),
                ..MockSpec::new(named("openai"))
            }
        );
        let spec = MockSpec::parse_url("mock://openai?window=3/10s&rpm=5").unwrap();
        assert_eq!(spec.window, Some((n(3).unwrap(), Duration::from_secs(10))));
        let spec = MockSpec::parse_url("mock://x?window=180/15s&latency=20ms").unwrap();
        assert_eq!(
            spec,
            MockSpec {
                profile: named("x"),
                window: Some((n(180).unwrap(), Duration::from_secs(15))),
                latency: Duration::from_millis(20),
                ..MockSpec::new(named("x"))
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
                Ok(MockSpec::new(named("openai"))),
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
        const FAULT_KEYS: &[&str] = KEYS.split_at(5).1.split_at(8).0;
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
        for profile in Profile::all() {
            assert_eq!(profile.name().parse::<Profile>(), Ok(profile));
            assert_eq!(profile.to_string(), profile.name());
            for key in FAULT_KEYS.iter().chain(["retry_after"].iter()) {
                assert!(profile.keys().contains(key), "{profile} takes {key}");
            }
            for key in profile.keys() {
                assert!(KEYS.contains(&key), "{profile}: {key} is a known key");
            }
        }
        let x_keys: Vec<_> = ["window", "latency"]
            .into_iter()
            .chain(FAULT_KEYS.iter().copied())
            .collect();
        let x_keys: Vec<_> = x_keys.into_iter().chain(["retry_after"]).collect();
        assert_eq!(named("x").keys(), x_keys);
        let token_keys: Vec<_> = KEYS[..15].to_vec();
        let batch_keys = ["batch_delay", "batch_fail_every", "batch_tokens"];
        let anthropic_keys: Vec<_> = token_keys.iter().copied().chain(batch_keys).collect();
        assert_eq!(named("anthropic").keys(), anthropic_keys);
        assert_eq!(named("openai").keys(), anthropic_keys);
        for profile in [
            named("github"),
            named("generic"),
            named("ietf"),
            named("zendesk"),
        ] {
            let without_tpm: Vec<_> = (token_keys.iter().copied())
                .filter(|k| *k != "tpm" && (profile.name() != "github" || *k != "fill"))
                .collect();
            assert_eq!(profile.keys(), without_tpm, "{profile}: requests only");
        }
    }

    #[test]
    fn parse_url_reads_every_fault_key_for_every_profile() {
        for profile in Profile::all() {
            let url = format!(
                "mock://{profile}?headers=false&quota_requests=0&fail_rate=0.1&reset_rate=0.2&slow_rate=0.25&slow=5s&seed=7&auth=s3cret"
            );
            let spec = MockSpec::parse_url(&url).unwrap();
            let expected = Faults {
                headers: false,
                retry_after: false,
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
            ..MockSpec::new(named("x"))
        };
        assert_eq!(
            spec.check(),
            Err(MockError::KeyNotForProfile {
                key: "rpm".into(),
                profile: named("x"),
            })
        );
        let spec = MockSpec {
            window: Some((n(5).unwrap(), Duration::ZERO)),
            ..MockSpec::new(named("x"))
        };
        let message = spec.check().unwrap_err().to_string();
        assert!(message.contains("bad value `5/0s`"), "{message}");
        let spec = MockSpec {
            rpm: n(60),
            tpm: n(1000),
            window: Some((n(5).unwrap(), Duration::from_secs(1))),
            ..MockSpec::new(named("openai"))
        };
        assert_eq!(spec.check(), Ok(()));
        assert_eq!(MockSpec::new(named("x")).check(), Ok(()));
        let spec = MockSpec {
            tpm: n(1000),
            ..MockSpec::new(named("zendesk"))
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
            ..MockSpec::new(named("openai"))
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
                "profiles: openai, anthropic, github, x, generic, ietf, zendesk, leaky".to_string()
            )
        );
    }
}
