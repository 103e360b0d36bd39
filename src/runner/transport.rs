//! How a request reaches the API: over HTTP, or straight into the mock provider.
//!
//! [`HttpTransport`] is reqwest with rustls; the API's shared headers (secrets included) are
//! marked sensitive and live only here, never in a request that is stored or logged.
//! [`MockTransport`] hands the request to the mock's pure provider in memory and waits the
//! provider's latency with tokio's clock, so runner tests run hours of limits in
//! milliseconds of paused time without a socket (tokio#4522).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::SystemClock;
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
            .build()
            .map_err(ClientError::Build)?;
        Ok(HttpTransport {
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }
}

impl Transport for HttpTransport {
    async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            TransportError::Connection(format!("invalid method `{}`", request.method))
        })?;
        let mut builder = self
            .client
            .request(method, format!("{}{}", self.base_url, request.path));
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = builder.send().await.map_err(from_reqwest)?;
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
        let body = response.bytes().await.map_err(from_reqwest)?.to_vec();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn from_reqwest(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Drop the URL: a provider may carry a key in the query string.
        let e = e.without_url();
        let mut text = e.to_string();
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
