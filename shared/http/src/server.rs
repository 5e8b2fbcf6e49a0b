//! The HTTP/1 server of `converge serve`: the router over TCP, with limits a slow or hostile
//! client cannot outlast.
//!
//! - **Headers** must arrive within [`ServerSettings::header_timeout`] of the connection opening
//!   (or of the first byte of a later request on a kept-alive connection).
//! - **Bodies** must arrive whole within [`ServerSettings::body_timeout`] of the request's
//!   headers; a body still arriving then fails its read, and the answer is a 408.
//! - **Idle** kept-alive connections close after [`ServerSettings::idle_timeout`].
//! - **At most [`ServerSettings::max_connections`]** are open. When a new one arrives at the
//!   cap, the connection that has waited longest without a request in progress (stalled in its
//!   headers, or idle) is closed to make room; when every connection is busy with a request, the
//!   newcomer is answered 503 and closed. Accepting never stalls, so a flood of half-sent
//!   requests cannot keep `/health/live` from answering.
//! - **Shutdown** stops accepting, lets requests in progress finish for at most
//!   [`ServerSettings::shutdown_grace`], then closes what is left.
//!
//! (API Gateway and Lambda apply their own limits to the functions; this is the one server
//! Converge runs itself.)

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

pub use converge_runtime::config::ServerSettings;

/// Why a request body could not be read: it was still arriving when its time ran out.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimedOut(pub Duration);

/// Serves `router` on `listener` until `shutdown` completes, then drains as
/// [`ServerSettings::shutdown_grace`] allows. Returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Connections::new());
    let (draining, drain) = watch::channel(false);
    let reaper = tokio::spawn(reap(Arc::clone(&connections), settings.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Some(connection) = connections.admit(settings.max_connections) else {
                        shed(stream);
                        continue;
                    };
                    tasks.spawn(serve_connection(
                        stream,
                        router.clone(),
                        settings.clone(),
                        Arc::clone(&connections),
                        connection,
                        drain.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors (or a connection reset before it was accepted):
                    // make room and go on; never stop accepting.
                    tracing::warn!("accept failed: {error}");
                    connections.evict_longest_waiting();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            // Reap finished connection tasks as they end, so the set stays small.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = draining.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(settings.shutdown_grace, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still busy after {:?}: closing them",
            tasks.len(),
            settings.shutdown_grace
        );
        tasks.shutdown().await;
    }
    reaper.abort();
}

/// Answers a connection over the cap (every open one busy) with a 503, and closes it.
fn shed(stream: TcpStream) {
    const BODY: &str =
        r#"{"error":{"code":"unavailable","message":"too many connections: try again shortly"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    // The answer follows the request's head (a client does not expect one before it has
    // asked), and the rest is drained briefly before closing: closing a socket with unread
    // input resets it, and the client would lose the answer. Half a second at most in all.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            let mut head = Vec::new();
            let mut chunk = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    break;
                }
                head.extend_from_slice(&chunk[..read]);
            }
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            while stream.read(&mut chunk).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    settings: ServerSettings,
    connections: Arc<Connections>,
    connection: Arc<Connection>,
    mut drain: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let io = TokioIo::new(Watched {
        inner: stream,
        connection: Arc::clone(&connection),
    });
    let body_timeout = settings.body_timeout;
    let watched = Arc::clone(&connection);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        let in_request = InRequest::begin(Arc::clone(&watched));
        async move {
            let mut request = request.map(|body| Body::new(Deadline::new(body, body_timeout)));
            if let Some(address) = client_address(peer, request.headers()) {
                request.extensions_mut().insert(address);
            }
            let response = router.oneshot(request).await;
            drop(in_request);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    let evicted = connection.evicted.notified();
    tokio::pin!(evicted);
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!("connection closed: {error}");
                }
                break;
            }
            () = &mut evicted => break,
            changed = drain.changed(), if !*drain.borrow() => {
                if changed.is_ok() {
                    // Finish the request in progress, if any, then close.
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
    connections.forget(connection.id);
}

/// Every open connection, for the cap and the reaper.
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// When the server started: connections keep their times as milliseconds since then.
    epoch: Instant,
}

impl Connections {
    fn new() -> Connections {
        Connections {
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection, making room at the cap by closing the one waiting longest
    /// without a request in progress; `None` when every open connection is busy.
    fn admit(&self, max: usize) -> Option<Arc<Connection>> {
        let now = self.now_ms();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= max {
            let victim = longest_waiting(&open)?;
            if let Some(evicted) = open.remove(&victim) {
                evicted.evicted.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id,
            epoch: self.epoch,
            waiting_since_ms: AtomicU64::new(now),
            idle: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            evicted: Notify::new(),
        });
        open.insert(id, Arc::clone(&connection));
        Some(connection)
    }

    fn evict_longest_waiting(&self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(evicted) = longest_waiting(&open).and_then(|id| open.remove(&id)) {
            evicted.evicted.notify_one();
        }
    }

    fn forget(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}

/// The open connection without a request in progress that has waited longest.
fn longest_waiting(open: &HashMap<u64, Arc<Connection>>) -> Option<u64> {
    open.values()
        .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
        .min_by_key(|c| c.waiting_since_ms.load(Ordering::Acquire))
        .map(|c| c.id)
}

/// Closes connections that waited too long for their headers or sat idle too long.
async fn reap(connections: Arc<Connections>, settings: ServerSettings) {
    let shortest = settings.header_timeout.min(settings.idle_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let header_ms = u64::try_from(settings.header_timeout.as_millis()).unwrap_or(u64::MAX);
    let idle_ms = u64::try_from(settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        tokio::time::sleep(tick).await;
        let now = connections.now_ms();
        let mut open = connections.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, c| {
            if c.in_flight.load(Ordering::Acquire) > 0 {
                return true;
            }
            let waited = now.saturating_sub(c.waiting_since_ms.load(Ordering::Acquire));
            let limit = if c.idle.load(Ordering::Acquire) {
                idle_ms
            } else {
                header_ms
            };
            if waited > limit {
                c.evicted.notify_one();
                false
            } else {
                true
            }
        });
    }
}

/// One open connection: whether a request is in progress, and since when it has waited for
/// one (idle after a response, or reading a request's headers).
struct Connection {
    id: u64,
    epoch: Instant,
    /// Since when (ms from the server's epoch) it waits: for headers, or idle.
    waiting_since_ms: AtomicU64,
    /// True between a response and the first byte of the next request.
    idle: AtomicBool,
    in_flight: AtomicUsize,
    evicted: Notify,
}

impl Connection {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: an idle connection starts a request (its headers' time starts now).
    fn on_read(&self) {
        if self.idle.swap(false, Ordering::AcqRel) {
            self.waiting_since_ms
                .store(self.now_ms(), Ordering::Release);
        }
    }

    /// Bytes of a response left while no request is in progress (the tail of a body): the
    /// idle time starts after them.
    fn on_write(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.idle.load(Ordering::Acquire) {
            self.waiting_since_ms
                .store(self.now_ms(), Ordering::Release);
        }
    }
}

/// A request in progress on a connection, from its headers to its response.
struct InRequest(Arc<Connection>);

impl InRequest {
    fn begin(connection: Arc<Connection>) -> InRequest {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        InRequest(connection)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        let connection = &self.0;
        connection
            .waiting_since_ms
            .store(connection.now_ms(), Ordering::Release);
        connection.idle.store(true, Ordering::Release);
        connection.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, telling its connection when bytes move.
struct Watched {
    inner: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.connection.on_write();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.connection.on_write();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must arrive whole by a deadline, counted from the request's headers.
struct Deadline {
    body: Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(body: Incoming, timeout: Duration) -> Deadline {
        Deadline {
            body,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl HttpBody for Deadline {
    type Data = hyper::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Whether reading a body failed because its time ran out (anywhere in the error's causes).
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The client a request is from: the TCP peer; behind a proxy on this machine (a loopback
/// peer), the last address that proxy appended to `X-Forwarded-For`; a local client without a
/// proxy (the operator's own tools) is no one to throttle.
fn client_address(
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
) -> Option<crate::auth::ClientAddress> {
    let peer = peer?;
    if !peer.is_loopback() {
        return Some(crate::auth::ClientAddress(peer));
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .next_back()
        .map(crate::auth::ClientAddress)
}
