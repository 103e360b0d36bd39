//! The `[limiter] backend` URL as config checks and shows it: parsed without connecting,
//! and with its password hidden in every message.
//!
//! Owns only the URL's text; connecting is `shared::redis`'s job.

/// `url` with the password (if any) replaced by `***`, for messages.
///
/// ```
/// # use ratebound::config::redis_url::redact;
/// assert_eq!(redact("redis://:hunter2@10.0.0.5:6379/0"), "redis://***@10.0.0.5:6379/0");
/// assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Checks that `url` is a Redis URL the client accepts, without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
        return Err("it must start with `redis://`".to_string());
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
