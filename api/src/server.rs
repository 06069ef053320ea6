//! The HTTP server: the listener, TLS, and how long a connection may
//! take at each of its steps.
//!
//! Every accepted connection gets a task that, with TLS, first completes
//! the handshake, then serves HTTP/1.1 on it (hyper), upgrades included
//! (`/graphql/ws`). Its socket is wrapped in a [`Guarded`] stream, which
//! holds it to three limits ([`Transport`]):
//!
//! - *read*: a request's headers must arrive within `read_timeout` of
//!   their first byte (of the connection's opening, for its first
//!   request), so a client that trickles headers to hold a connection
//!   open (a slow loris) is cut off. Its body then has as long again
//!   ([`read_body`], which reads it whole, as every handler would). The
//!   TLS handshake has as long too.
//! - *write*: a write that makes no progress for `write_timeout` (the
//!   client stopped reading) ends the connection. It is a stall limit,
//!   not a limit on a whole response: a CSV export may stream for
//!   minutes, as long as the client keeps reading.
//! - *idle*: a kept-alive connection waiting for its next request is
//!   closed after `idle_timeout`.
//!
//! While a request is being answered nothing is read, so no read limit
//! runs then: how long a request may run is the handlers' own limit
//! (`ApiConfig::request_timeout`). A connection upgraded to a WebSocket
//! has no read or idle limit either (a quiet subscription is no idle
//! connection; the protocol has its own timers), only the write limit.
//!
//! At most `max_connections` connections are served at once; more wait
//! in the listen queue until one ends. Each takes a file descriptor, and a
//! process out of them cannot open its logs, store or checkpoints either:
//! idle connections must not be able to stop the rest of its work. The
//! default cap leaves room under the process's limit of open files
//! ([`default_max_connections`]).
//!
//! On shutdown the listener closes, idle connections are closed and busy
//! ones finish their requests first; the server returns when the last
//! has. WebSockets are not waited for.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How connections are served.
#[derive(Clone)]
pub struct Transport {
    /// TLS settings; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Longest time to receive a request's headers (and, separately,
    /// its body), and to complete a TLS handshake.
    pub read_timeout: Duration,
    /// Longest time a write may stall.
    pub write_timeout: Duration,
    /// Longest wait for the next request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// The most connections served at once by default.
pub const MAX_CONNECTIONS: usize = 1024;

/// File descriptors kept for the rest of the process (logs, store,
/// checkpoints, Kafka) when the connection cap is derived from the limit.
const RESERVED_FILES: u64 = 128;

/// [`MAX_CONNECTIONS`], or fewer when the process may open too few files
/// for that and its other work: its limit of open files less
/// [`RESERVED_FILES`], and at least 16.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !known || limit.rlim_cur == libc::RLIM_INFINITY {
        return MAX_CONNECTIONS;
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED_FILES).max(16);
    MAX_CONNECTIONS.min(usize::try_from(room).unwrap_or(MAX_CONNECTIONS))
}

impl Default for Transport {
    fn default() -> Transport {
        let config = crate::ApiConfig::default();
        Transport {
            tls: None,
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: default_max_connections(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits for
/// the connections' requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) {
    let (stop, stopped) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut warned_full: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let room = connections.len() < transport.max_connections;
        if !room && warned_full.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
            warned_full = Some(Instant::now());
            tracing::warn!(
                connections = connections.len(),
                "Connection limit reached; new connections wait until one ends"
            );
        }
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    let task = connection(stream, peer, app.clone(), transport.clone());
                    connections.spawn(until_stopped(task, stopped.clone()));
                }
                // Out of file descriptors, most likely: wait for some to
                // be freed rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// How often a server at its connection limit says so.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// A connection's task, told when to stop.
async fn until_stopped(task: impl Future<Output = Connection>, stopped: watch::Receiver<bool>) {
    let Connection::Http(mut http) = task.await else {
        return;
    };
    let mut stopped = stopped;
    tokio::select! {
        result = http.as_mut() => return log_end(result),
        _ = stopped.wait_for(|s| *s) => http.as_mut().graceful_shutdown(),
    }
    log_end(http.await);
}

fn log_end(result: hyper::Result<()>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "Connection ended with an error");
    }
}

/// A connection once set up: HTTP being served, or nothing to serve.
enum Connection {
    Http(Pin<Box<dyn HttpConnection>>),
    Closed,
}

/// hyper's connection future, whatever the stream under it.
trait HttpConnection: Future<Output = hyper::Result<()>> + Send {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> HttpConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body> + Send,
    S::Future: Send,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

/// Sets up one accepted connection: TLS if configured, then HTTP.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    transport: Transport,
) -> Connection {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let Some(tls) = &transport.tls else {
        let io = Guarded::new(stream, activity.clone(), &transport);
        return http(io, peer, app, activity);
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
    match tokio::time::timeout(transport.read_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let io = Guarded::new(stream, activity.clone(), &transport);
            http(io, peer, app, activity)
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            Connection::Closed
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            Connection::Closed
        }
    }
}

/// HTTP/1.1 on a guarded stream, each request tagged with the peer's
/// address for the handlers' `ConnectInfo`.
fn http<T>(io: Guarded<T>, peer: SocketAddr, app: Router, activity: Arc<Activity>) -> Connection
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        answer(request, peer, app.clone(), activity.clone())
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The guarded stream keeps the header time limit: hyper's own
        // would also cut idle connections at the same time.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    Connection::Http(Box::pin(conn))
}

/// One request through the router, the connection marked busy until its
/// response's body is sent.
async fn answer(
    mut request: hyper::Request<Incoming>,
    peer: SocketAddr,
    app: Router,
    activity: Arc<Activity>,
) -> Result<Response, Infallible> {
    request.extensions_mut().insert(ConnectInfo(peer));
    let busy = Busy::start(activity.clone());
    let response = match app.oneshot(request.map(Body::new)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        activity.lock().upgraded = true;
    }
    Ok(response.map(|body| Body::new(BusyBody { body, _busy: busy })))
}

/// What a connection is doing, as its stream's time limits need it.
struct Activity(Mutex<Steps>);

/// Where a connection is.
struct Steps {
    /// Requests being answered.
    busy: usize,
    /// Requests answered.
    answered: u64,
    /// When the connection opened or its last answer ended.
    idle_since: Instant,
    /// When the first byte of the next request came.
    head_started: Option<Instant>,
    /// Upgraded to another protocol: no read or idle limit.
    upgraded: bool,
    /// The reader waiting, woken when a request ends so that its idle
    /// limit starts.
    reader: Option<Waker>,
}

impl Activity {
    fn new() -> Activity {
        Activity(Mutex::new(Steps {
            busy: 0,
            answered: 0,
            idle_since: Instant::now(),
            head_started: None,
            upgraded: false,
            reader: None,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Steps> {
        // A panic while holding the lock leaves plain counters behind.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Marks its connection busy while it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        {
            let mut state = activity.lock();
            state.busy += 1;
            state.head_started = None;
        }
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.busy = state.busy.saturating_sub(1);
        state.answered += 1;
        state.idle_since = Instant::now();
        if state.busy == 0 {
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

/// A response body that keeps its connection busy until it is sent.
struct BusyBody {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's stream held to the read, write and idle limits.
pub struct Guarded<T> {
    io: T,
    activity: Arc<Activity>,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    read_sleep: Pin<Box<Sleep>>,
    read_deadline: Option<Instant>,
    write_sleep: Pin<Box<Sleep>>,
    write_stalled: bool,
}

impl<T> Guarded<T> {
    fn new(io: T, activity: Arc<Activity>, transport: &Transport) -> Guarded<T> {
        Guarded {
            io,
            activity,
            read_timeout: transport.read_timeout,
            write_timeout: transport.write_timeout,
            idle_timeout: transport.idle_timeout,
            read_sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            read_deadline: None,
            write_sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            write_stalled: false,
        }
    }

    /// When a read waiting now must have given up; `None` while a
    /// request is being answered or after an upgrade.
    fn read_deadline(&self, waker: &Waker) -> Option<Instant> {
        let mut state = self.activity.lock();
        if state.busy > 0 || state.upgraded {
            state.reader = Some(waker.clone());
            return None;
        }
        Some(match state.head_started {
            Some(start) => start + self.read_timeout,
            None if state.answered == 0 => state.idle_since + self.read_timeout,
            None => state.idle_since + self.idle_timeout,
        })
    }

    /// Notes bytes read: the start of a request's headers, between
    /// requests.
    fn bytes_read(&self) {
        let mut state = self.activity.lock();
        if state.busy == 0 && !state.upgraded && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
        }
    }

    /// A write's outcome, with the stall limit applied to a pending one.
    fn write_limit<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.write_stalled = false;
            return r;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.write_timeout;
            self.write_sleep.as_mut().reset(deadline);
        }
        match self.write_sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = this.read_deadline(cx.waker()) else {
                    return Poll::Pending;
                };
                if this.read_deadline != Some(deadline) {
                    this.read_deadline = Some(deadline);
                    this.read_sleep.as_mut().reset(deadline);
                }
                match this.read_sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing in time",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_limit(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_limit(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.write_limit(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_limit(cx, r)
    }
}

/// Middleware: reads a request's body whole within the read limit, and
/// within the body size limit, before the handler sees it. A body still
/// coming after `read_timeout` is answered 408 and the connection closed.
pub async fn read_body(
    State(limits): State<(Duration, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (read_timeout, max_bytes) = limits;
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(read_timeout, axum::body::to_bytes(body, max_bytes)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if too_large(&e) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max_bytes} bytes\n"),
        )
            .into_response(),
        Ok(Err(_)) => (StatusCode::BAD_REQUEST, "the body could not be read\n").into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, HeaderValue::from_static("close"))],
            "the body took too long to arrive\n",
        )
            .into_response(),
    }
}

/// Whether a body failed for being over its size limit.
fn too_large(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn transport(read: u64, write: u64, idle: u64) -> Transport {
        Transport {
            tls: None,
            read_timeout: Duration::from_millis(read),
            write_timeout: Duration::from_millis(write),
            idle_timeout: Duration::from_millis(idle),
            max_connections: MAX_CONNECTIONS,
        }
    }

    #[tokio::test]
    async fn a_write_the_peer_never_reads_gives_up_after_the_write_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let mut io = Guarded::new(near, activity, &transport(10_000, 200, 10_000));
        let started = std::time::Instant::now();
        let error = io.write_all(&[b'x'; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_busy_connection_has_no_read_limit_and_an_idle_one_has() {
        let (near, mut far) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        let mut io = Guarded::new(near, activity.clone(), &transport(100, 10_000, 300));

        // A request in progress: reading waits past every limit.
        let busy = Busy::start(activity.clone());
        let mut byte = [0u8; 1];
        let wait = tokio::time::timeout(Duration::from_millis(500), io.read(&mut byte)).await;
        assert!(wait.is_err(), "a read while busy must not time out");

        // Answered: the idle limit runs, from the end of the answer.
        drop(busy);
        let started = std::time::Instant::now();
        let error = io.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        far.write_all(b"x").await.unwrap();
    }
}
