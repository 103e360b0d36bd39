//! Provider rate-limit headers turned into observations.
//!
//! Owns the parsing of what a response says about limits and waiting. Pure: headers and the
//! current wall time go in, durations come out; no I/O, no clock reads. Parsers never panic
//! on any input: an unreadable value is simply no observation.
//!
//! Dialects so far: `Retry-After` (RFC 9110, delta-seconds or HTTP-date) and `retry-after-ms`
//! (OpenAI, Azure).

pub mod retry_after;

pub use retry_after::retry_after;

/// Looks up a header by case-insensitive name in a list of `(name, value)` pairs.
pub fn find<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
