//! The mock on a socket: axum as a thin shell over [`Provider`].
//!
//! Owns the HTTP plumbing only: every request, whatever its path, becomes a [`MockRequest`],
//! the provider decides, and the shell waits the response's simulated latency before sending
//! it, or before cutting the connection when the provider says to drop it. Cutting needs
//! the socket, which an axum handler never sees: each connection is a `CuttableStream`
//! whose switch the handler receives as its connect info; once it is thrown, every read and
//! write fails, so hyper abandons the connection without writing a byte, and the socket
//! closes with a TCP reset. [`serve`] takes a bound listener and a shutdown future (as mini-redis does), so callers
//! choose the port. [`MockServer`] runs it on its own thread and runtime for blocking tests;
//! [`start_in_runtime`] spawns it on the caller's runtime for `base_url = "mock://..."`.
//! Both stop when dropped.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::MockSpec;
use crate::clock::{Clock, TokioClock};
use crate::provider::{MockRequest, MockStats, Provider, Record};

/// Serves `provider` on `listener` until `shutdown` completes, then finishes the requests
/// in flight.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve<C: Clock>(
    listener: TcpListener,
    provider: Arc<Provider<C>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = Router::new().fallback(respond::<C>).with_state(provider);
    let service = router.into_make_service_with_connect_info::<Cut>();
    axum::serve(CuttableListener(listener), service)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn respond<C: Clock>(
    State(provider): State<Arc<Provider<C>>>,
    ConnectInfo(cut): ConnectInfo<Cut>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = MockRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        body: body.to_vec(),
    };
    let reply = provider.handle(&request);
    tokio::time::sleep(reply.delay).await;
    if reply.drop_connection {
        // The response is never written: the connection fails first.
        cut.0.store(true, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    response.body(Body::from(reply.body)).unwrap_or_else(|e| {
        tracing::error!("mock: cannot build a response: {e}");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// Accepts TCP connections as [`CuttableStream`]s.
struct CuttableListener(TcpListener);

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        // axum's accept for a `TcpListener` logs and retries errors.
        let (inner, addr) = Listener::accept(&mut self.0).await;
        let cut = Arc::new(AtomicBool::new(false));
        (CuttableStream { inner, cut }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The switch that cuts one connection, handed to the handler as its connect info.
#[derive(Clone)]
struct Cut(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, CuttableListener>> for Cut {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Cut {
        Cut(Arc::clone(&stream.io().cut))
    }
}

/// A TCP connection that fails every read and write once its [`Cut`] is thrown.
struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    /// An error once cut. The socket then closes with a reset (zero linger) rather than a
    /// clean end of stream, as a crashed server or a proxy dropping the connection does.
    fn check(&self) -> Result<(), io::Error> {
        if !self.cut.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Err(e) = self.inner.set_zero_linger() {
            tracing::debug!("mock: cannot set a zero linger before a reset: {e}");
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by the mock",
        ))
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A mock serving on `127.0.0.1` from its own thread and current-thread runtime, so that
/// test code may block (assert_cmd) while it serves. Dropping it stops the server and
/// waits for its thread.
pub struct MockServer {
    addr: SocketAddr,
    provider: Arc<Provider<TokioClock>>,
    /// Dropped first to signal shutdown.
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl MockServer {
    /// Binds a free port on `127.0.0.1` and starts serving `spec` there.
    ///
    /// # Errors
    /// When the runtime, the socket or the thread cannot be created.
    pub fn start(spec: MockSpec) -> io::Result<MockServer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        // Inside the server's runtime, so its clock is that runtime's (real) time even when
        // the caller runs under a paused tokio clock.
        let (listener, provider) = {
            let _entered = runtime.enter();
            let provider = Arc::new(Provider::new(spec, TokioClock::new()));
            (TcpListener::from_std(socket)?, provider)
        };
        let (shutdown, signal) = oneshot::channel::<()>();
        let served = Arc::clone(&provider);
        let thread = std::thread::Builder::new()
            .name(format!("mock-{addr}"))
            .spawn(move || {
                runtime.block_on(serve(listener, served, async {
                    let _ = signal.await;
                }))
            })?;
        Ok(MockServer {
            addr,
            provider,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, to use as an API base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn records(&self) -> Vec<Record> {
        self.provider.records()
    }

    /// Counts of the requests received so far.
    pub fn stats(&self) -> MockStats {
        self.provider.stats()
    }

    /// Changes the quota while serving, as [`Provider::set_quota_requests`] does: `None`
    /// lifts it, so a test can restore the quota and rerun.
    pub fn set_quota_requests(&self, quota: Option<u64>) {
        self.provider.set_quota_requests(quota);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("mock on {}: {e}", self.addr),
                Err(_) => tracing::warn!("mock on {}: the server thread panicked", self.addr),
            }
        }
    }
}

/// A mock spawned on the caller's tokio runtime; it stops serving when this is dropped.
pub struct MockHandle {
    addr: SocketAddr,
    provider: Arc<Provider<TokioClock>>,
    /// Its drop is the shutdown signal.
    _shutdown: oneshot::Sender<()>,
}

impl MockHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The provider serving, for its records and counts.
    pub fn provider(&self) -> &Arc<Provider<TokioClock>> {
        &self.provider
    }
}

/// Binds a free port on `127.0.0.1` and serves `spec` there as a task of the current tokio
/// runtime, for runs whose `base_url` is `mock://...`.
///
/// # Errors
/// When the socket cannot be bound.
///
/// # Panics
/// Outside a tokio runtime.
pub async fn start_in_runtime(spec: MockSpec) -> io::Result<MockHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let provider = Arc::new(Provider::new(spec, TokioClock::new()));
    let (shutdown, signal) = oneshot::channel::<()>();
    let served = Arc::clone(&provider);
    tokio::spawn(async move {
        let stopped = async {
            let _ = signal.await;
        };
        if let Err(e) = serve(listener, served, stopped).await {
            tracing::warn!("mock on {addr}: {e}");
        }
    });
    Ok(MockHandle {
        addr,
        provider,
        _shutdown: shutdown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends one HTTP/1.1 request by hand and returns the status, lower-cased headers and
    /// body of the answer.
    async fn post(
        addr: SocketAddr,
        path: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-item: a1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect();
        (status, headers, body.to_string())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    const CHAT: &str =
        r#"{"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}"#;

    #[tokio::test]
    async fn mock_server_answers_over_loopback_with_openai_headers_and_records() {
        let url = "mock://openai?rpm=2&tpm=1000&latency=5ms";
        let server = MockServer::start(MockSpec::parse_url(url).unwrap()).unwrap();
        assert_eq!(
            server.base_url(),
            format!("http://127.0.0.1:{}", server.addr().port())
        );

        let (status, headers, body) = post(server.addr(), "/v1/chat/completions", CHAT).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "x-ratelimit-limit-requests"), Some("2"));
        assert_eq!(
            header(&headers, "x-ratelimit-remaining-requests"),
            Some("1")
        );
        assert_eq!(
            header(&headers, "x-ratelimit-remaining-tokens"),
            Some("988")
        );
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["usage"]["total_tokens"], 12);

        post(server.addr(), "/v1/chat/completions", CHAT).await;
        let (status, headers, _) = post(server.addr(), "/v1/chat/completions", CHAT).await;
        assert_eq!(status, 429);
        assert!(header(&headers, "retry-after-ms").is_some(), "{headers:?}");

        let records = server.records();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].body, CHAT);
        assert!(
            records[0]
                .headers
                .contains(&("x-item".to_string(), "a1".to_string()))
        );
        assert_eq!(server.stats().rate_limited, 1);
        drop(server);
    }

    #[tokio::test]
    async fn an_in_runtime_mock_serves_until_its_handle_drops() {
        let mock = start_in_runtime(MockSpec::parse_url("mock://openai").unwrap())
            .await
            .unwrap();
        let addr = mock.addr();
        let (status, _, _) = post(addr, "/nowhere", "{}").await;
        assert_eq!(status, 404);
        assert_eq!(mock.provider().stats().requests, 1);
        drop(mock);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "stopped listening"
        );
    }

    #[tokio::test]
    async fn a_dropped_connection_is_cut_without_a_byte_of_response() {
        let url = "mock://openai?reset_rate=1&latency=5ms";
        let server = MockServer::start(MockSpec::parse_url(url).unwrap()).unwrap();
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{CHAT}",
            server.addr(),
            CHAT.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw).await;
        assert!(
            raw.is_empty(),
            "no response at all, got {:?}",
            String::from_utf8_lossy(&raw)
        );
        if let Err(e) = read {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
        let stats = server.stats();
        assert_eq!((stats.requests, stats.dropped), (1, 1));
        assert_eq!(server.records()[0].status, 0);
    }

    #[tokio::test]
    async fn reqwest_sees_dropped_connections_as_errors_and_the_rest_as_answers() {
        let url = "mock://github?reset_rate=0.5&seed=9";
        let server = MockServer::start(MockSpec::parse_url(url).unwrap()).unwrap();
        let client = reqwest::Client::new();
        let (mut answered, mut cut) = (0, 0);
        for i in 0..20 {
            let sent = client
                .get(format!("{}/repos/o/r/issues/{i}", server.base_url()))
                .send()
                .await;
            match sent {
                Ok(response) => {
                    assert_eq!(response.status(), 200);
                    answered += 1;
                }
                Err(e) => {
                    assert!(!e.is_timeout() && e.status().is_none(), "{e:?}");
                    cut += 1;
                }
            }
        }
        let stats = server.stats();
        assert!(cut > 0 && answered > 0, "{stats:?}");
        assert_eq!((stats.dropped, stats.ok), (cut, answered), "{stats:?}");
    }
}
