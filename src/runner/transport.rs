//! How a request reaches the API: over HTTP, or straight into the mock provider.
//!
//! [`HttpTransport`] is reqwest with rustls; the API's shared headers (secrets included) are
//! marked sensitive and live only here, never in a request that is stored or logged.
//! Every configured secret value is masked (`<redacted>`) in the response's body, headers
//! and transport errors before the runner sees them, so a body echoing the key (a 401 that
//! repeats the request) is never stored or printed.
//!
//! Redirects are never followed. A followed redirect would be a request the limiter never
//! admitted (a loop would put unbounded requests on the wire), and reqwest re-sends every
//! default header but `Authorization` to whatever origin the `Location` names, so an
//! `x-api-key` would leave for another host. A 3xx answer instead fails its item with a
//! body that says where it pointed and what to change.
//! [`MockTransport`] hands the request to the mock's pure provider in memory and waits the
//! provider's latency with tokio's clock, so runner tests run hours of limits in
//! milliseconds of paused time without a socket (tokio#4522).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::SystemClock;
use crate::config::Secrets;
use crate::job::Request;
use crate::mock::provider::{MockRequest, Provider};

/// A response as the runner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// Why no response came back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No response before the configured timeout.
    #[error("timed out")]
    Timeout,
    /// Connecting, sending or reading failed.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The response's body is larger than `[api] max_response_bytes`: a permanent failure
    /// of the item (the same request would bring the same body back).
    #[error(
        "the response body (HTTP {status}) is larger than [api] max_response_bytes ({max} bytes); raise the setting or ask the API for less"
    )]
    TooLarge {
        /// The response's status code.
        status: u16,
        /// The limit, in bytes.
        max: u64,
    },
}

/// Sends one request and returns what came back.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request`; errors are transport failures, not HTTP error statuses.
    fn send(
        &self,
        request: &Request,
    ) -> impl Future<Output = Result<Response, TransportError>> + Send;
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A configured header name or value is not valid HTTP.
    #[error(
        "header `{name}` has an invalid name or value\n  hint: header values must be visible ASCII; check the environment variable it references"
    )]
    Header {
        /// The header's name (its value is never shown).
        name: String,
    },
    /// reqwest could not build a client.
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Real HTTP through one pooled reqwest client.
pub struct HttpTransport {
    client: reqwest::Client,
    base_url: String,
    secrets: Secrets,
    max_response_bytes: u64,
}

/// The API's shared headers (resolved values) as a header map, every value marked sensitive
/// so reqwest never shows it in a debug print.
pub fn sensitive_headers(headers: &[(String, String)]) -> Result<HeaderMap, ClientError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let bad = || ClientError::Header { name: name.clone() };
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| bad())?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    Ok(map)
}

impl HttpTransport {
    /// A client for `base_url` sending `headers` (resolved values, marked sensitive) with
    /// every request.
    pub fn new(
        base_url: &str,
        headers: &[(String, String)],
        timeout: Duration,
        workers: usize,
    ) -> Result<HttpTransport, ClientError> {
        let client = reqwest::Client::builder()
            .default_headers(sensitive_headers(headers)?)
            .timeout(timeout)
            .pool_max_idle_per_host(workers)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientError::Build)?;
        Ok(HttpTransport {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            secrets: Secrets::default(),
            max_response_bytes: crate::config::DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// The URL for `path`: appended to `base_url`'s path, with a query in `base_url` (a key
    /// some providers take there) kept after the path's own.
    fn url_for(&self, path: &str) -> String {
        match self.base_url.split_once('?') {
            Some((base, query)) => {
                let join = if path.contains('?') { '&' } else { '?' };
                format!("{}{path}{join}{query}", base.trim_end_matches('/'))
            }
            None => format!("{}{path}", self.base_url),
        }
    }

    /// The same transport reading at most `max` bytes of a response body; a longer body
    /// fails the attempt with an error saying so (`[api] max_response_bytes`).
    pub fn with_max_response_bytes(mut self, max: u64) -> HttpTransport {
        self.max_response_bytes = max;
        self
    }

    /// Reads `response`'s body, at most `max_response_bytes` of it.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, TransportError> {
        let max = self.max_response_bytes;
        let status = response.status().as_u16();
        let too_large = || TransportError::TooLarge { status, max };
        if response.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.mask_error(from_reqwest(e)))?
        {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The same transport masking `secrets` in everything that comes back.
    pub fn with_secrets(mut self, secrets: Secrets) -> HttpTransport {
        self.secrets = secrets;
        self
    }

    /// Masks secrets in a response, and replaces a redirect's body with why it was not
    /// followed.
    fn clean(&self, mut response: Response) -> Response {
        if (300..400).contains(&response.status) {
            response.body = redirect_body(response.status, &response.headers);
        }
        for (_, value) in &mut response.headers {
            if let std::borrow::Cow::Owned(masked) = self.secrets.mask(value) {
                *value = masked;
            }
        }
        response.body = self.secrets.mask_bytes(std::mem::take(&mut response.body));
        response
    }
}

/// The body stored for a redirect: where it pointed (origin and path, never the query,
/// which may carry a key) and what to do.
fn redirect_body(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let location = headers
        .iter()
        .find(|(name, _)| name == "location")
        .map_or("", |(_, value)| value.as_str());
    let shown = location.split(['?', '#']).next().unwrap_or_default();
    serde_json::json!({
        "error": {
            "message": format!("the API answered {status} (a redirect to `{shown}`); ratebound does not follow redirects, so that no request bypasses the limits and no key reaches another host"),
            "hint": "point base_url (or the request path) at where the redirect leads, then run `ratebound retry-failed --db ...`",
            "location": shown,
        }
    })
    .to_string()
    .into_bytes()
}

impl Transport for HttpTransport {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            TransportError::Connection(format!("invalid method `{}`", request.method))
        })?;
        let mut builder = self.client.request(method, self.url_for(&request.path));
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.mask_error(from_reqwest(e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = self.read_body(response).await?;
        Ok(self.clean(Response {
            status,
            headers,
            body,
        }))
    }
}

impl HttpTransport {
    fn mask_error(&self, e: TransportError) -> TransportError {
        match e {
            TransportError::Connection(text) => {
                TransportError::Connection(self.secrets.mask(&text).into_owned())
            }
            other => other,
        }
    }
}

fn from_reqwest(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Drop the URL: a provider may carry a key in the query string.
        let connect = e.is_connect();
        let e = e.without_url();
        let mut text = e.to_string();
        if connect {
            // No connection at all (refused, DNS, unroutable): retry::is_unreachable.
            text.insert_str(0, crate::retry::UNREACHABLE);
        }
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        TransportError::Connection(text)
    }
}

/// The mock provider in memory: no socket, latency waited on tokio's clock.
pub struct MockTransport {
    provider: Arc<Provider<SystemClock>>,
}

impl MockTransport {
    /// A transport into `provider`.
    pub fn new(provider: Arc<Provider<SystemClock>>) -> MockTransport {
        MockTransport { provider }
    }
}

impl Transport for MockTransport {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let response = self.provider.handle(&MockRequest {
            method: request.method.clone(),
            path: request.path.clone(),
            headers: request.headers.clone(),
            body: request.body.clone().unwrap_or_default().into_bytes(),
        });
        tokio::time::sleep(response.delay).await;
        if response.drop_connection {
            return Err(TransportError::Connection(
                "connection reset by the mock".into(),
            ));
        }
        Ok(Response {
            status: response.status,
            headers: response.headers,
            body: response.body,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap as Headers, StatusCode};
    use axum::response::IntoResponse;

    use super::*;

    type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

    /// Serves `app` on a free loopback port; the server lives as long as the test runtime.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    /// An origin that records every request's headers and echoes them in a 401 body.
    async fn recorder() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |headers: Headers| {
            let log = Arc::clone(&log);
            async move {
                let pairs: Vec<(String, String)> = headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                let echo = format!("{pairs:?}");
                log.lock().unwrap().push(pairs);
                (StatusCode::UNAUTHORIZED, echo)
            }
        });
        (serve(app).await, seen)
    }

    /// An origin that answers every request with `status` and `Location: target`.
    async fn redirector(status: u16, target: String) -> String {
        let app = axum::Router::new().fallback(move || {
            let target = target.clone();
            async move {
                (
                    StatusCode::from_u16(status).unwrap(),
                    [(axum::http::header::LOCATION, target)],
                )
                    .into_response()
            }
        });
        serve(app).await
    }

    fn request(headers: Vec<(String, String)>) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/x".into(),
            headers,
            body: Some("{}".into()),
        }
    }

    #[tokio::test]
    async fn issue_12_no_key_header_follows_a_redirect_to_another_origin() {
        let key = "sk-live-0123456789";
        for name in ["Authorization", "x-api-key", "api-key"] {
            for status in [301, 302, 307, 308] {
                let (other, seen) = recorder().await;
                let origin = redirector(status, format!("{other}/steal?k=1")).await;
                let shared = vec![(name.to_string(), key.to_string())];
                let transport = HttpTransport::new(&origin, &shared, Duration::from_secs(5), 2)
                    .unwrap()
                    .with_secrets(secrets_of(key));
                // The key both as a configured API header and as a per-request header.
                let response = transport
                    .send(&request(vec![(format!("{name}-item"), key.to_string())]))
                    .await
                    .unwrap();
                assert_eq!(response.status, status, "{name}");
                assert!(
                    seen.lock().unwrap().is_empty(),
                    "{name} {status}: redirect followed"
                );
                let body = String::from_utf8(response.body).unwrap();
                assert!(body.contains("does not follow redirects"), "{body}");
                assert!(body.contains(&other) && !body.contains("k=1"), "{body}");
            }
        }
    }

    #[tokio::test]
    async fn issue_12_a_redirect_loop_puts_one_request_on_the_wire_per_send() {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(axum::http::header::LOCATION, "/v1/x")],
                )
            }
        });
        let origin = serve(app).await;
        let transport = HttpTransport::new(&origin, &[], Duration::from_secs(5), 1).unwrap();
        for sent in 1..=3 {
            let response = transport.send(&request(Vec::new())).await.unwrap();
            assert_eq!(response.status, 307);
            // Each send is one admitted request: one request on the wire, never a hop more.
            assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), sent);
        }
    }

    #[tokio::test]
    async fn issue_12_a_body_echoing_the_key_comes_back_masked() {
        let key = "sk-live-0123456789";
        let (origin, seen) = recorder().await;
        let shared = vec![("x-api-key".to_string(), key.to_string())];
        let transport = HttpTransport::new(&origin, &shared, Duration::from_secs(5), 2)
            .unwrap()
            .with_secrets(secrets_of(key));
        let response = transport
            .send(&request(vec![("api-key".into(), key.into())]))
            .await
            .unwrap();
        assert_eq!(response.status, 401);
        let sent = seen.lock().unwrap()[0].clone();
        assert!(
            sent.iter().any(|(_, v)| v == key),
            "the key is sent: {sent:?}"
        );
        let body = String::from_utf8(response.body).unwrap();
        assert!(!body.contains(key) && body.contains("<redacted>"), "{body}");
    }

    #[tokio::test]
    async fn issue_12_a_response_over_max_response_bytes_fails_with_a_clear_error() {
        let app = axum::Router::new().fallback(|| async { "x".repeat(4096) });
        let origin = serve(app).await;
        let transport = HttpTransport::new(&origin, &[], Duration::from_secs(5), 1)
            .unwrap()
            .with_max_response_bytes(1000);
        let err = transport.send(&request(Vec::new())).await.unwrap_err();
        assert!(
            err.to_string().contains("max_response_bytes (1000 bytes)"),
            "{err}"
        );
        let transport = transport.with_max_response_bytes(4096);
        assert_eq!(
            transport
                .send(&request(Vec::new()))
                .await
                .unwrap()
                .body
                .len(),
            4096
        );
    }

    #[tokio::test]
    async fn issue_12_a_refused_connection_is_marked_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let transport =
            HttpTransport::new(&format!("http://{addr}"), &[], Duration::from_secs(5), 1).unwrap();
        match transport.send(&request(Vec::new())).await {
            Err(TransportError::Connection(text)) => {
                assert!(crate::retry::is_unreachable(&text), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_query_in_base_url_follows_the_path() {
        let (origin, _) = recorder().await;
        let transport =
            HttpTransport::new(&format!("{origin}/?key=k1"), &[], Duration::from_secs(5), 1)
                .unwrap();
        assert_eq!(transport.url_for("/v1/x"), format!("{origin}/v1/x?key=k1"));
        assert_eq!(
            transport.url_for("/v1/x?a=1"),
            format!("{origin}/v1/x?a=1&key=k1")
        );
    }

    fn secrets_of(key: &str) -> Secrets {
        let mut secrets = Secrets::default();
        secrets.add(key);
        secrets
    }
}
