//! Reset values, in whatever form a provider writes them, as a wait from now.
//!
//! Providers disagree on how to say when a window resets or a bucket is full again: epoch
//! seconds (GitHub, X), epoch milliseconds, seconds from now (IETF draft, Zendesk), Go
//! durations such as `6m0s` (OpenAI), RFC 3339 timestamps (Anthropic) or HTTP-dates. This
//! file owns parsing each form and [`resolve`], which reads a value whose form nobody
//! documented. Dialect files pick the parser their provider documents; matching a reset to a
//! configured limit is left to the limiter.
//!
//! Invariants: pure (the wall time is an argument, never read here); never panics; a reset
//! in the past is [`Duration::ZERO`]; negative, non-finite, overflowing or unreadable values
//! are `None`, never a guess.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far from now an epoch reading may lie and still be taken as one when guessing the
/// form: no provider announces a reset more than a year ahead, so a number that would land
/// further away is not an epoch timestamp.
const PLAUSIBLE_EPOCH_DISTANCE: Duration = Duration::from_secs(400 * 24 * 60 * 60);

/// [`resolve`] reads a number above 1e12 as epoch milliseconds (1e12 ms is 2001-09-09).
const EPOCH_MILLIS_ABOVE: Duration = Duration::from_secs(1_000_000_000_000);

/// [`resolve`] reads a number above 1e9 as epoch seconds (1e9 s is 2001-09-09).
const EPOCH_SECONDS_ABOVE: Duration = Duration::from_secs(1_000_000_000);

const NANOS_PER_SECOND: u128 = 1_000_000_000;
const NANOS_PER_MILLI: u128 = 1_000_000;

/// Resolves a reset value of undocumented form to the wait from `wall_now`.
///
/// By form first, then by magnitude:
/// - an RFC 3339 timestamp or an HTTP-date is a point in time;
/// - a number above 1e12 is epoch milliseconds, above 1e9 epoch seconds, provided the
///   instant lies within 400 days of `wall_now`; a larger number that is not such an instant
///   is `None` (no reset rather than a wait of decades);
/// - any other number is seconds from now (fractions allowed);
/// - a Go duration with units (`6m0s`, `20ms`) is a wait.
///
/// A point in the past resolves to zero. Anything else is `None`.
///
/// ```
/// # use std::time::{Duration, UNIX_EPOCH};
/// # use ratebound::headers::reset::resolve;
/// let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
/// assert_eq!(resolve("30", now), Some(Duration::from_secs(30)));
/// assert_eq!(resolve("1767225630", now), Some(Duration::from_secs(30)));
/// assert_eq!(resolve("1767225630000", now), Some(Duration::from_secs(30)));
/// assert_eq!(resolve("2026-01-01T00:00:30Z", now), Some(Duration::from_secs(30)));
/// assert_eq!(resolve("Thu, 01 Jan 2026 00:00:30 GMT", now), Some(Duration::from_secs(30)));
/// assert_eq!(resolve("0.5", now), Some(Duration::from_millis(500)));
/// assert_eq!(resolve("soon", now), None);
/// ```
pub fn resolve(value: &str, wall_now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(wait) = parse_date(value, wall_now) {
        return Some(wait);
    }
    if let Some(number) = parse_decimal(value, NANOS_PER_SECOND) {
        return from_magnitude(value, number, wall_now);
    }
    parse_go_duration(value)
}

/// Seconds from now, as the IETF draft and Zendesk send them: `41`, `1.5`.
pub fn parse_delta_seconds(value: &str) -> Option<Duration> {
    parse_decimal(value.trim(), NANOS_PER_SECOND)
}

/// Epoch seconds, as GitHub and X send them (`1691591363`; a fraction is allowed), as the
/// wait from `wall_now`. No plausibility check: the dialect says it is epoch seconds.
pub fn parse_epoch_seconds(value: &str, wall_now: SystemTime) -> Option<Duration> {
    let secs = parse_decimal(value.trim(), NANOS_PER_SECOND)?;
    Some(until(UNIX_EPOCH.checked_add(secs)?, wall_now))
}

/// An RFC 3339 timestamp (`2026-11-23T12:00:30Z`, offsets allowed) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110) as the wait from `wall_now`.
pub fn parse_date(value: &str, wall_now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let instant = parse_rfc3339(value).or_else(|| httpdate::parse_http_date(value).ok())?;
    Some(until(instant, wall_now))
}

/// A Go duration (`time.Duration.String()`), as OpenAI writes its resets: `6m0s`, `20ms`,
/// `1s`, `1h2m3.5s`, `0.5s`. Units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`; every component
/// may carry a fraction; a bare `0` is zero. Exact to the nanosecond (no float rounding).
/// Negative durations are `None`: a wait cannot be negative, and OpenAI never sends one.
///
/// Go's grammar: <https://pkg.go.dev/time#ParseDuration>.
///
/// ```
/// # use std::time::Duration;
/// # use ratebound::headers::reset::parse_go_duration;
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_go_duration("3.5"), None, "a unit is required");
/// ```
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let text = value.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
    let mut rest = text;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) = rest.split_at(rest.find(|c| !is_number_char(c))?);
        let (unit, next) = after.split_at(after.find(is_number_char).unwrap_or(after.len()));
        let unit_nanos: u128 = match unit {
            "h" => 3600 * NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "s" => NANOS_PER_SECOND,
            "ms" => NANOS_PER_MILLI,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total_nanos = total_nanos.checked_add(decimal_times(number, unit_nanos)?)?;
        rest = next;
    }
    from_nanos(total_nanos)
}

/// The wait from `wall_now` until `instant`; zero when it has passed.
fn until(instant: SystemTime, wall_now: SystemTime) -> Duration {
    instant.duration_since(wall_now).unwrap_or(Duration::ZERO)
}

/// A number read by magnitude (see [`resolve`]): `text` is its digits, `number` the same
/// read as seconds.
fn from_magnitude(text: &str, number: Duration, wall_now: SystemTime) -> Option<Duration> {
    let epoch = if number > EPOCH_MILLIS_ABOVE {
        parse_decimal(text, NANOS_PER_MILLI)?
    } else if number > EPOCH_SECONDS_ABOVE {
        number
    } else {
        return Some(number);
    };
    let instant = UNIX_EPOCH.checked_add(epoch)?;
    let distance = match instant.duration_since(wall_now) {
        Ok(ahead) => ahead,
        Err(behind) => behind.duration(),
    };
    (distance <= PLAUSIBLE_EPOCH_DISTANCE).then(|| until(instant, wall_now))
}

/// A plain non-negative decimal number of `unit_nanos` (`41`, `1.5`, `1691591363.25`),
/// exactly: digits with at most one point. Rejects what `f64::from_str` would also take
/// (`inf`, `NaN`, `1e3`, signs), since no provider writes those.
fn parse_decimal(text: &str, unit_nanos: u128) -> Option<Duration> {
    from_nanos(decimal_times(text, unit_nanos)?)
}

/// A count of nanoseconds as a `Duration`; `None` past `Duration::MAX`.
fn from_nanos(total: u128) -> Option<Duration> {
    let secs = u64::try_from(total / NANOS_PER_SECOND).ok()?;
    let nanos = u32::try_from(total % NANOS_PER_SECOND).ok()?;
    Some(Duration::new(secs, nanos))
}

/// `number` (decimal digits, at most one point) times `unit_nanos`, exactly, in nanoseconds;
/// digits beyond the nanosecond are dropped.
fn decimal_times(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let is_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !is_digits(whole) || !is_digits(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // 18 digits keep the arithmetic in range and are far finer than a nanosecond of an hour.
    let fraction = &fraction[..fraction.len().min(18)];
    let scale = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    whole
        .checked_mul(unit_nanos)?
        .checked_add(fraction.checked_mul(unit_nanos)? / scale)
}

/// An RFC 3339 timestamp (<https://www.rfc-editor.org/rfc/rfc3339#section-5.6>), with `Z`
/// or a numeric offset. humantime reads the UTC forms; an offset is applied here.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.to_ascii_uppercase();
    match split_offset(&text) {
        None => humantime::parse_rfc3339(&text).ok(),
        Some((local, offset_secs)) => {
            let local = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
            let offset = Duration::from_secs(offset_secs.unsigned_abs());
            // Local time is ahead of UTC by a positive offset.
            if offset_secs >= 0 {
                local.checked_sub(offset)
            } else {
                local.checked_add(offset)
            }
        }
    }
}

/// Splits a trailing `±HH:MM` offset off an RFC 3339 timestamp: the text before it and the
/// offset in seconds east of UTC.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let split = text.len().checked_sub(6)?;
    // Shorter than a date and a time: the sign would be a date's hyphen.
    if split < "2026-01-01T00:00:00".len() {
        return None;
    }
    let (local, offset) = (text.get(..split)?, text.get(split..)?.as_bytes());
    let sign = match offset[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two_digits = |a: u8, b: u8| -> Option<i64> {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
    };
    let hours = two_digits(offset[1], offset[2])?;
    let minutes = two_digits(offset[4], offset[5])?;
    (offset[3] == b':' && hours < 24 && minutes < 60)
        .then_some((local, sign * (hours * 3600 + minutes * 60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01T00:00:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    #[test]
    fn go_durations_in_every_form_openai_sends() {
        let cases = [
            ("6m0s", Duration::from_secs(360)),
            ("20ms", Duration::from_millis(20)),
            ("1s", Duration::from_secs(1)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("0.5s", Duration::from_millis(500)),
            ("2.5s", Duration::from_millis(2500)),
            ("1.56s", Duration::from_millis(1560)),
            ("59m59.999s", Duration::from_millis(3_599_999)),
            ("17h0m0s", Duration::from_secs(17 * 3600)),
            ("0s", Duration::ZERO),
            ("0", Duration::ZERO),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("7.s", Duration::from_secs(7)),
            ("300us", Duration::from_micros(300)),
            ("300µs", Duration::from_micros(300)),
            ("42ns", Duration::from_nanos(42)),
            ("0.000000001s", Duration::from_nanos(1)),
            (" 1m30s ", Duration::from_secs(90)),
            ("+2s", Duration::from_secs(2)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Some(expected), "{text:?}");
        }
    }

    #[test]
    fn go_duration_garbage_is_none() {
        for text in [
            "",
            "s",
            "5",
            "3.5",
            "-1s",
            "1x",
            "1.2.3s",
            ".s",
            "1s2",
            "1 s",
            "1e3s",
            "∞s",
            "5m 3s",
            "99999999999999999999999999999999999999999h",
        ] {
            assert_eq!(parse_go_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn epoch_seconds_resolve_against_wall_time_and_past_is_zero() {
        assert_eq!(
            parse_epoch_seconds("1767225630", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_epoch_seconds("1767225600.25", now() - Duration::from_secs(1)),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(
            parse_epoch_seconds("1767225000", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_epoch_seconds("-5", now()), None);
        assert_eq!(parse_epoch_seconds("1e10", now()), None);
    }

    #[test]
    fn rfc3339_with_z_fraction_lowercase_and_offsets() {
        let cases = [
            ("2026-01-01T00:00:30Z", 30_000),
            ("2026-01-01T00:00:30.5Z", 30_500),
            ("2026-01-01t00:00:30z", 30_000),
            ("2026-01-01T00:00:30+00:00", 30_000),
            ("2026-01-01T01:00:30+01:00", 30_000),
            ("2025-12-31T19:00:30-05:00", 30_000),
            ("2026-01-01T05:30:30.250+05:30", 30_250),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_date(text, now()),
                Some(Duration::from_millis(ms)),
                "{text:?}"
            );
        }
        assert_eq!(
            parse_date("2025-12-31T23:59:00Z", now()),
            Some(Duration::ZERO)
        );
        for text in [
            "2026-13-01T00:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:30+25:00",
        ] {
            assert_eq!(parse_date(text, now()), None, "{text:?}");
        }
    }

    #[test]
    fn resolve_reads_each_form_by_form_and_magnitude() {
        let cases = [
            ("30", Some(30_000)),
            ("0", Some(0)),
            ("1.5", Some(1_500)),
            ("86400", Some(86_400_000)),
            ("1767225630", Some(30_000)),
            ("1767225630.5", Some(30_500)),
            ("1767225630000", Some(30_000)),
            ("1767225630250", Some(30_250)),
            ("1767225000", Some(0)),
            ("2026-01-01T00:00:30Z", Some(30_000)),
            ("Thu, 01 Jan 2026 00:00:30 GMT", Some(30_000)),
            ("Thursday, 01-Jan-26 00:00:30 GMT", Some(30_000)),
            ("6m0s", Some(360_000)),
            // Epoch-sized but more than 400 days away: neither a plausible epoch nor a delta.
            ("4102444800", None),
            ("1000000001", None),
            ("99999999999999999", None),
            ("", None),
            ("-30", None),
            ("NaN", None),
            ("inf", None),
            ("1e3", None),
            ("soon", None),
        ];
        for (text, ms) in cases {
            assert_eq!(
                resolve(text, now()),
                ms.map(Duration::from_millis),
                "{text:?}"
            );
        }
    }

    #[test]
    fn resolve_depends_on_wall_time_only_for_epochs() {
        let later = now() + Duration::from_secs(500 * 24 * 3600);
        assert_eq!(
            resolve("1767225630", later),
            None,
            "a stale epoch from another era"
        );
        assert_eq!(resolve("30", later), Some(Duration::from_secs(30)));
    }
}
