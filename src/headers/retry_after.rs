//! How long a provider asks us to wait: `retry-after-ms` and `Retry-After`.
//!
//! `Retry-After` is delta-seconds or an HTTP-date
//! (<https://www.rfc-editor.org/rfc/rfc9110#field.retry-after>); `retry-after-ms` is
//! milliseconds, sent by OpenAI and Azure OpenAI
//! (<https://learn.microsoft.com/azure/ai-services/openai/how-to/quota>). The millisecond
//! form wins when both are present because it is more precise.

use std::time::{Duration, SystemTime};

use super::find;

/// The wait a response asks for, if any. `wall_now` resolves HTTP-dates; a date in the past
/// means "now" (zero wait).
pub fn retry_after(headers: &[(String, String)], wall_now: SystemTime) -> Option<Duration> {
    if let Some(ms) = find(headers, "retry-after-ms").and_then(parse_millis) {
        return Some(ms);
    }
    let value = find(headers, "retry-after")?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(wall_now).unwrap_or(Duration::ZERO))
}

fn parse_millis(value: &str) -> Option<Duration> {
    let ms = value.trim().parse::<f64>().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms.min(1e12) / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn delta_seconds_and_milliseconds() {
        let now = UNIX_EPOCH;
        assert_eq!(
            retry_after(&h(&[("Retry-After", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&h(&[("retry-after", "2"), ("retry-after-ms", "1500")]), now),
            Some(Duration::from_millis(1500)),
            "the precise form wins"
        );
    }

    #[test]
    fn http_date_is_resolved_against_wall_time() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_770);
        let headers = h(&[("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let past = now + Duration::from_secs(60);
        assert_eq!(retry_after(&headers, past), Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_no_observation() {
        for v in ["soon", "-3", "NaN", "", "inf"] {
            assert_eq!(
                retry_after(&h(&[("retry-after", v)]), UNIX_EPOCH),
                None,
                "{v:?}"
            );
        }
    }
}
