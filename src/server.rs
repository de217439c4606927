//! Traffic listeners: accept, serve HTTP/1.1 and h2c on one socket, close
//! idle connections, stop on shutdown.
//!
//! Each accepted connection's protocol is known before hyper reads a byte:
//! over TLS from ALPN, in the clear from a `peek` at the first bytes (the
//! HTTP/2 preface, or anything else for HTTP/1.1). hyper-util's `auto`
//! builder would read the preface itself and hand it back to hyper through
//! a rewinding wrapper, so hyper's read buffer would start with 24 bytes in
//! it and be reallocated (8 KiB copied) on the first request.
//! Idle keep-alive connections are closed by our own per-connection tracker
//! rather than hyper's HTTP/1 `header_read_timeout`: that timer also runs
//! while a long response is still being written, so it would cut downloads
//! that outlive it, and it does nothing for HTTP/2.
//!
//! Shutdown is a `watch` flag: listeners stop accepting, and every
//! connection is asked to finish gracefully (`Connection: close` on HTTP/1,
//! `GOAWAY` on HTTP/2) while its in-flight requests complete.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::lifecycle::{stopped, OpenConnections, OpenGuard};
use crate::proxy::{ConnInfo, Handling, Proxy};

/// Limits applied to every downstream connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Close a connection with no request in flight after this long.
    pub idle_timeout: Duration,
    /// Largest request head; hyper's read buffer is sized from it.
    pub max_request_header_bytes: usize,
    /// Deadline for a request head, from its first byte.
    pub header_read_timeout: Duration,
    /// Longest a response write may wait on a client that reads nothing.
    pub send_timeout: Duration,
}

/// HTTP/2 streams one client may have open at once.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Streams a client may reset before being accepted, before GOAWAY.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the proxy may reset because of a client's errors, before GOAWAY.
const H2_MAX_LOCAL_RESETS: usize = 256;
/// Response bytes hyper may hold per HTTP/2 stream that the client's
/// flow-control window has not let out yet (hyper's default is 400 KiB).
/// Past it the stream stops reading its backend, so this bounds what a
/// client that opens no window pins: 256 streams × 128 KiB = 32 MiB per
/// connection, not 100, and only for `send_timeout`. At 64 KiB a single
/// fast download (4 MiB bodies over loopback) lost about 15 % of its
/// throughput to more wake-ups; at 128 KiB it was level with 400.
const H2_MAX_SEND_BUFFER: usize = 128 << 10;

/// Longest a client may take to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept connections on `listener` until `shutdown` turns true; each
/// connection is counted in `open` until it closes. With `tls`, each
/// connection is a TLS handshake first, using the certificate in force at
/// accept time.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: ConnLimits,
    tls: Option<Arc<crate::tls::ServerTls>>,
    open: Arc<OpenConnections>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builders = Arc::new(connection_builders(&limits));
    let conn_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let guard = open.open();
                    let conn = Connection {
                        proxy: proxy.clone(),
                        builders: builders.clone(),
                        limits,
                        shutdown: conn_shutdown.clone(),
                    };
                    tokio::spawn(connection_task(conn, stream, peer, tls.clone(), guard));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin, and keep serving the connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => break,
        }
    }
}

/// One accepted connection's task, counted in `guard` until it closes.
///
/// The connection's own future is a few KiB (hyper's state for both
/// protocols, rustls's for TLS), and a move copies all of it: spawning
/// moves a task's future four times. Boxed, the task holds a pointer and
/// that future is written once: 4,000 instructions less per connection,
/// which clients that close after one request (curl, health checkers) pay
/// per request.
async fn connection_task(
    conn: Connection,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<crate::tls::ServerTls>>,
    guard: OpenGuard,
) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => Box::pin(conn.run_plain(stream, peer)).await,
        Some(tls) => Box::pin(conn.run_tls(stream, peer, tls)).await,
    }
    drop(guard);
}

/// hyper's two connection builders, set up once per listener.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

fn connection_builders(limits: &ConnLimits) -> Builders {
    let mut http1 = http1::Builder::new();
    http1
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper wants at least 8 KiB; leave room for the request line.
        .max_buf_size((limits.max_request_header_bytes + 4096).max(8192));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX))
        // Bounded work per client: streams in parallel, and resets a client
        // may provoke (the "rapid reset" attack) before it gets a GOAWAY.
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        // A peer that stops answering pings is gone: free its streams.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    Builders { http1, http2 }
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// How an HTTP/2 client with prior knowledge opens (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes announce, once they tell: the
/// HTTP/2 preface begins with `PRI `, which no HTTP/1.1 request line does.
/// (hyper's HTTP/2 server checks the rest of the preface.) `None` while all
/// there is are the first one to three bytes of `PRI `.
fn protocol_of(first: &[u8]) -> Option<Protocol> {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n >= 4 {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// The protocol of a cleartext connection, from a look at its first bytes
/// that leaves them in the socket for hyper; `None` if it closes first.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut first = [0u8; 24];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(protocol) = protocol_of(&first[..n]) {
            return Ok(Some(protocol));
        }
        // Only a client that splits `PRI ` (or a request line's first
        // letters) across packets gets here. A peek would return the same
        // bytes at once, again and again: mark the socket as read to the
        // end, so the next peek waits until more bytes arrive (tokio keeps
        // the mark only if no new readiness came in meanwhile).
        let _ = stream.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
    }
}

pin_project_lite::pin_project! {
    /// One connection served by hyper, in the protocol it speaks.
    #[project = ServingProj]
    enum Serving<I, S>
    where
        S: hyper::service::HttpService<hyper::body::Incoming>,
    {
        Http1 { #[pin] conn: http1::UpgradeableConnection<I, S> },
        Http2 { #[pin] conn: http2::Connection<I, S, TokioExecutor> },
    }
}

impl<I, S, B> Serving<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn new(builders: &Builders, protocol: Protocol, io: I, service: S) -> Self {
        match protocol {
            Protocol::Http1 => Serving::Http1 { conn: builders.http1.serve_connection(io, service).with_upgrades() },
            Protocol::Http2 => Serving::Http2 { conn: builders.http2.serve_connection(io, service) },
        }
    }

    /// `Connection: close` on HTTP/1 (at once if idle), `GOAWAY` on HTTP/2.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServingProj::Http1 { conn } => conn.graceful_shutdown(),
            ServingProj::Http2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<I, S, B> std::future::Future for Serving<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ServingProj::Http1 { conn } => conn.poll(cx),
            ServingProj::Http2 { conn } => conn.poll(cx),
        }
    }
}

struct Connection {
    proxy: Arc<Proxy>,
    builders: Arc<Builders>,
    limits: ConnLimits,
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    /// Wait for the first bytes to tell the protocol, then
    /// [`Connection::run`]. The first request head is owed from accept: a
    /// client that sends nothing is closed once `header_read_timeout` (or a
    /// shorter `idle_timeout`) passes, or at shutdown.
    async fn run_plain(mut self, stream: TcpStream, peer: SocketAddr) {
        let accepted = Instant::now();
        let protocol = tokio::select! {
            sniffed = sniff(&stream) => match sniffed {
                Ok(Some(protocol)) => protocol,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "connection failed before its first request");
                    return;
                }
            },
            _ = tokio::time::sleep_until(accepted + self.limits.header_read_timeout.min(self.limits.idle_timeout)) => {
                tracing::debug!(%peer, "no request within header_read_timeout; closing");
                self.proxy.client_timeouts().no_request.inc();
                return;
            }
            _ = stopped(&mut self.shutdown) => return,
        };
        self.run(stream, peer, "http", protocol, accepted).await
    }

    /// The TLS handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`]), then
    /// [`Connection::run`] in the protocol ALPN chose: HTTP/2 over TLS is
    /// negotiated, never assumed (RFC 9113 §3.2).
    async fn run_tls(self, stream: TcpStream, peer: SocketAddr, tls: Arc<crate::tls::ServerTls>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let protocol = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                self.run(stream, peer, "https", protocol, Instant::now()).await
            }
            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                self.proxy.client_timeouts().tls_handshake.inc();
            }
        }
    }

    /// Serve `stream` in `protocol` until it closes; its first request head
    /// is owed from `since`.
    async fn run<I>(mut self, stream: I, peer: SocketAddr, proto: &'static str, protocol: Protocol, since: Instant)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnInfo::new(peer, proto, self.proxy.connection_seed());
        let activity = Arc::new(Activity::new(since));
        activity.h2.store(protocol == Protocol::Http2, Ordering::Relaxed);
        let proxy = self.proxy.clone();
        let tracker = activity.clone();
        // The request is routed and rewritten in this call; the future it
        // returns owns what it needs, so neither the proxy nor the
        // connection's info is cloned per request.
        let service = service_fn(move |req| {
            let ambiguous = tracker.framing_conflict.swap(false, Ordering::Relaxed);
            let active = tracker.begin();
            let handling = if ambiguous {
                // hyper resolved it safely (Transfer-Encoding wins, the
                // connection closes after), but such a request is an
                // attack or a broken client: refuse it (SPEC §3).
                Handling::answered(ProxyError::BadRequest("both content-length and transfer-encoding\n").response())
            } else {
                proxy.handle(&info, req)
            };
            Tracked { handling, active: Some(active) }
        });
        let stream = Watched { io: stream, activity: activity.clone(), scan: HeadScan::default() };
        let conn = Serving::new(&self.builders, protocol, TokioIo::new(stream), service);
        tokio::pin!(conn);
        let probe = self.shutdown.clone();
        let shutdown = Gated::new(stopped(&mut self.shutdown), move |_: &_| probe.has_changed().unwrap_or(true));
        tokio::pin!(shutdown);
        // One timer for both deadlines, re-armed only when it fires: a
        // request costs no timer work and no wake-up of its own. While no
        // head is pending it looks again every `header_read_timeout`, and
        // once a head is pending it fires exactly at that head's deadline.
        // Gated: between firings, a wake-up asks it one atomic load instead
        // of a poll (which registers the waker again).
        let timer = Gated::new(
            tokio::time::sleep(self.limits.header_read_timeout.min(self.limits.idle_timeout)),
            tokio::time::Sleep::is_elapsed,
        );
        tokio::pin!(timer);
        let mut closing = false;
        // Set when an HTTP/2 stream's stall sent the GOAWAY: the other
        // streams may finish until then.
        let mut hard_close: Option<Instant> = None;
        loop {
            // Biased, shutdown first: when the shutdown flag and a backend's
            // answer are ready in the same poll, the answer must already go
            // out with `Connection: close`.
            tokio::select! {
                biased;
                _ = &mut shutdown, if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    let ConnLimits { header_read_timeout, idle_timeout, send_timeout, .. } = self.limits;
                    if activity.head_deadline(header_read_timeout).is_some_and(|d| d <= now) {
                        // Still owing a request head: a slowloris, or a client
                        // gone quiet mid-head. Closing is all it deserves.
                        tracing::debug!(%peer, "request head not received within header_read_timeout; closing");
                        let timeouts = self.proxy.client_timeouts();
                        let silent = activity.silent.load(Ordering::Relaxed);
                        if silent { &timeouts.no_request } else { &timeouts.header_read }.inc();
                        return;
                    }
                    if hard_close.is_some_and(|d| d <= now) {
                        tracing::debug!(%peer, "streams still open send_timeout after the GOAWAY; closing");
                        return;
                    }
                    let write_deadline = activity.write_deadline(send_timeout);
                    if write_deadline.is_some_and(|d| d <= now) {
                        // A response has waited that long on a client that
                        // takes none of it (a slow-read attack, or a client
                        // gone without closing): free the connection and the
                        // upstream exchange it holds.
                        tracing::debug!(%peer, "client read nothing of the response within send_timeout; closing");
                        self.proxy.client_timeouts().send.inc();
                        return;
                    }
                    // Once the GOAWAY is out, only the hard close is left to watch.
                    let mut stall_deadline =
                        if hard_close.is_none() { activity.stream_stall_deadline(send_timeout) } else { None };
                    if stall_deadline.is_some_and(|d| d <= now) {
                        // One HTTP/2 stream has waited that long for the
                        // client to open its window. hyper cannot reset one
                        // stream, so the connection goes, gracefully: a
                        // GOAWAY, and the other streams get one more
                        // send_timeout to finish.
                        tracing::debug!(%peer, "a stream waited send_timeout for the client's window; closing");
                        self.proxy.client_timeouts().send.inc();
                        if !closing {
                            closing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                        hard_close = Some(now + send_timeout);
                        stall_deadline = None;
                    }
                    if !closing && activity.idle_for() >= Some(idle_timeout) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    let mut next = activity.next_check(now, header_read_timeout, idle_timeout, closing);
                    for deadline in [write_deadline, stall_deadline, hard_close].into_iter().flatten() {
                        next = next.min(deadline);
                    }
                    timer.as_mut().rearm().reset(next);
                }
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled only when it may have moved: after its first poll it
    /// is polled again only once `hint` says so, or the task's waker
    /// changed. The connection loop wakes a few times per request, and
    /// polling the shutdown flag's watch each time costs a lock, and
    /// polling its timer registers the waker again; asking the hint costs
    /// one atomic load.
    struct Gated<F, H> {
        #[pin]
        inner: F,
        hint: H,
        waker: Option<std::task::Waker>,
    }
}

impl<F: std::future::Future, H: FnMut(&F) -> bool> Gated<F, H> {
    fn new(inner: F, hint: H) -> Self {
        Gated { inner, hint, waker: None }
    }

    /// The inner future, to change it: its next poll goes through.
    fn rearm(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        *this.waker = None;
        this.inner
    }
}

impl<F: std::future::Future, H: FnMut(&F) -> bool> std::future::Future for Gated<F, H> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !(this.hint)(&this.inner) {
            return Poll::Pending;
        }
        let polled = this.inner.poll(cx);
        if polled.is_pending() {
            *this.waker = Some(cx.waker().clone());
        }
        polled
    }
}

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    active: AtomicUsize,
    /// Milliseconds since `epoch` at which the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds since `epoch` at which the first byte of a request head
    /// arrived that has not become a request yet ([`NO_HEAD`]: none).
    head_started_ms: AtomicU64,
    /// The connection speaks HTTP/2, whose frames between requests are not
    /// request heads: no header timer.
    h2: AtomicBool,
    /// The head just read carried both `Content-Length` and
    /// `Transfer-Encoding` (hyper drops the former before we could see it).
    framing_conflict: AtomicBool,
    /// No byte has arrived yet (after the TLS handshake, if any).
    silent: AtomicBool,
    /// Milliseconds since `epoch` at which a write to the client last found
    /// its socket full, with nothing written since ([`NOT_BLOCKED`]: none).
    write_blocked_ms: AtomicU64,
    /// HTTP/2 only: the stall clock of each response stream that has sent
    /// a chunk (see [`TrackedBody`]). Ended streams' entries are swept
    /// when the list grows.
    stream_stalls: Mutex<Vec<Weak<AtomicU64>>>,
}

/// `write_blocked_ms` when the last write went through; a stream's stall
/// clock when hyper holds none of its chunks.
const NOT_BLOCKED: u64 = u64::MAX;

/// `head_started_ms` when no request head is pending.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    /// A connection that owes its first request head from `since` (when
    /// it was accepted, or its TLS handshake ended).
    fn new(since: Instant) -> Activity {
        Activity {
            epoch: since,
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            // A new connection owes its first request head from the start.
            head_started_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            framing_conflict: AtomicBool::new(false),
            silent: AtomicBool::new(true),
            write_blocked_ms: AtomicU64::new(NOT_BLOCKED),
            stream_stalls: Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(self.epoch).as_millis()).unwrap_or(NO_HEAD - 1)
    }

    fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NO_HEAD, Ordering::Relaxed);
        Active { activity: self.clone() }
    }

    /// Bytes arrived: if no request is in flight they start a request head.
    fn saw_bytes(&self) {
        if self.active.load(Ordering::Relaxed) == 0 {
            if self.head_started_ms.load(Ordering::Relaxed) == NO_HEAD {
                self.head_started_ms.store(self.now_ms(), Ordering::Relaxed);
            }
            if self.silent.load(Ordering::Relaxed) {
                self.silent.store(false, Ordering::Relaxed);
            }
        }
    }

    /// When the pending request head (if any) runs out of time.
    fn head_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.h2.load(Ordering::Relaxed) || self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_started_ms.load(Ordering::Relaxed) {
            NO_HEAD => None,
            ms => Some(self.epoch + Duration::from_millis(ms) + timeout),
        }
    }

    /// A write to the client found its socket full (`blocked`), or went
    /// through. Only a block reads the clock, and a write that goes through
    /// costs one load unless a block came before it.
    fn wrote(&self, blocked: bool) {
        let since = self.write_blocked_ms.load(Ordering::Relaxed);
        if blocked && since == NOT_BLOCKED {
            self.write_blocked_ms.store(self.now_ms(), Ordering::Relaxed);
        } else if !blocked && since != NOT_BLOCKED {
            self.write_blocked_ms.store(NOT_BLOCKED, Ordering::Relaxed);
        }
    }

    /// When writes to a client that takes nothing run out of time.
    fn write_deadline(&self, timeout: Duration) -> Option<Instant> {
        match self.write_blocked_ms.load(Ordering::Relaxed) {
            NOT_BLOCKED => None,
            ms => Some(self.epoch + Duration::from_millis(ms) + timeout),
        }
    }

    /// HTTP/2: when the stream that has waited longest for the client to
    /// open its flow-control window (while the client may read everything
    /// else) runs out of time.
    fn stream_stall_deadline(&self, timeout: Duration) -> Option<Instant> {
        if !self.h2.load(Ordering::Relaxed) {
            return None;
        }
        let stalls = self.stream_stalls.lock().unwrap_or_else(PoisonError::into_inner);
        let since = stalls.iter().filter_map(Weak::upgrade).map(|stall| stall.load(Ordering::Relaxed)).min();
        since.filter(|&ms| ms != NOT_BLOCKED).map(|ms| self.epoch + Duration::from_millis(ms) + timeout)
    }

    /// A stall clock for one HTTP/2 response stream, for the connection's
    /// timer to read; it stops counting when the stream's body is dropped.
    fn stream_stall_clock(&self) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(NOT_BLOCKED));
        let mut stalls = self.stream_stalls.lock().unwrap_or_else(PoisonError::into_inner);
        if stalls.len() == stalls.capacity() {
            stalls.retain(|stall| stall.strong_count() > 0);
        }
        stalls.push(Arc::downgrade(&clock));
        clock
    }

    /// How long the connection has been idle, or `None` while busy.
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(Instant::now().saturating_duration_since(since))
    }

    /// When to look again: at the pending head's deadline, when an idle
    /// connection reaches the idle timeout (unless it is `closing`
    /// already: then there is nothing more to do for idleness, and a
    /// deadline already past would fire again at once), and at least every
    /// `header_timeout` while a head may start unseen.
    fn next_check(&self, now: Instant, header_timeout: Duration, idle_timeout: Duration, closing: bool) -> Instant {
        let idle_check = match self.idle_for() {
            Some(idle) if !closing => now + idle_timeout.saturating_sub(idle),
            _ => now + idle_timeout,
        };
        let head_check = match self.head_deadline(header_timeout) {
            Some(deadline) => deadline,
            None if self.h2.load(Ordering::Relaxed) => idle_check,
            None => now + header_timeout,
        };
        idle_check.min(head_check)
    }
}

/// One request counted as in flight on its connection.
#[derive(Debug)]
struct Active {
    activity: Arc<Activity>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let a = &self.activity;
        let now = Instant::now().saturating_duration_since(a.epoch).as_millis();
        a.idle_since_ms.store(u64::try_from(now).unwrap_or(u64::MAX), Ordering::Relaxed);
        a.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request being served, counted in its connection's activity until
    /// its response body ends. (A small future rather than an `async`
    /// block, which would hold the inner future twice.)
    struct Tracked<F> {
        #[pin]
        handling: F,
        active: Option<Active>,
    }
}

impl<F: std::future::Future<Output = Response<ProxyBody>>> std::future::Future for Tracked<F> {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.handling.poll(cx));
        let active = this.active.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody { body, active, stall: None })))
    }
}

/// The response body, holding its connection's activity count until it
/// ends. Over HTTP/2 it also clocks how long each chunk waits for the
/// client's flow-control window: hyper asks for the next chunk only once the
/// last one has gone into the stream's send buffer, which waits for window,
/// so the time from handing a chunk over until hyper comes back (or drops
/// the body) is time the client has given this stream no room.
#[derive(Debug)]
struct TrackedBody {
    body: ProxyBody,
    /// `None` only if the future was polled after it was ready.
    active: Option<Active>,
    /// HTTP/2, once a chunk went out: when the chunk hyper holds was handed
    /// over (ms since the connection's epoch; [`NOT_BLOCKED`]: none held).
    stall: Option<Arc<AtomicU64>>,
}

impl TrackedBody {
    fn handed_over_chunk(&mut self) {
        let Some(active) = &self.active else { return };
        let activity = &active.activity;
        if !activity.h2.load(Ordering::Relaxed) {
            return;
        }
        let stall = self.stall.get_or_insert_with(|| activity.stream_stall_clock());
        stall.store(activity.now_ms(), Ordering::Relaxed);
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::pool::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(stall) = &this.stall {
            // hyper came back: the chunk before has found room.
            stall.store(NOT_BLOCKED, Ordering::Relaxed);
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(&polled, Poll::Ready(Some(Ok(frame))) if frame.is_data()) {
            this.handed_over_chunk();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The downstream byte stream, telling the connection's [`Activity`] when
/// bytes arrive between requests (the start of a request head), and whether
/// a request head framed its body two ways.
#[derive(Debug)]
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    scan: HeadScan,
}

/// A look at the header names of HTTP/1 request heads read while no request
/// is in flight, for the one thing hyper resolves without telling: a head
/// with both `Content-Length` and `Transfer-Encoding`. hyper's framing is
/// the safety (it drops the length and closes the connection after); this
/// scan only turns such a request into the 400 the spec asks for. It checks
/// line starts only, and a header name split across two reads goes unseen,
/// which costs nothing but the 400.
#[derive(Debug, Default)]
struct HeadScan {
    in_head: bool,
    at_line_start: bool,
    saw_length: bool,
    saw_chunked: bool,
}

impl HeadScan {
    /// Scan `bytes`, which continue the current head or start a new one.
    /// Returns true when a head ended that framed its body both ways.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.in_head {
            *self = HeadScan { in_head: true, at_line_start: true, ..HeadScan::default() };
        }
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if self.at_line_start {
                if rest.starts_with(b"\r\n") || rest[0] == b'\n' {
                    let conflict = self.saw_length && self.saw_chunked;
                    *self = HeadScan::default();
                    return conflict;
                }
                // Most lines start with neither letter: one byte decides.
                match rest[0] {
                    b'c' | b'C' => self.saw_length |= starts_with_ignore_case(rest, b"content-length:"),
                    b't' | b'T' => self.saw_chunked |= starts_with_ignore_case(rest, b"transfer-encoding:"),
                    _ => {}
                }
            }
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    at += end + 1;
                    self.at_line_start = true;
                }
                None => {
                    self.at_line_start = false;
                    break;
                }
            }
        }
        false
    }
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            if !fresh.is_empty() {
                let idle = this.activity.active.load(Ordering::Relaxed) == 0;
                if idle && !this.activity.h2.load(Ordering::Relaxed) {
                    if this.scan.feed(fresh) {
                        this.activity.framing_conflict.store(true, Ordering::Relaxed);
                    }
                } else {
                    this.scan.in_head = false;
                }
                this.activity.saw_bytes();
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TLS accepts a write into its buffer and blocks in the flush.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.activity.wrote(polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Activity, Gated, HeadScan};
    use super::{Connection, OpenGuard};
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;
    use tokio::time::Instant;

    /// A future that counts its polls and never finishes.
    struct Counted(Arc<AtomicUsize>);

    impl Future for Counted {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_gated_future_is_polled_again_only_when_the_hint_says_so_or_the_waker_changed() {
        let polls = Arc::new(AtomicUsize::new(0));
        let moved = Arc::new(AtomicBool::new(false));
        let hint = moved.clone();
        let mut gated = Box::pin(Gated::new(Counted(polls.clone()), move |_: &_| hint.load(Ordering::Relaxed)));
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "only the first poll reaches the inner future");
        moved.store(true, Ordering::Relaxed);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2, "the hint lets the next poll through");
        moved.store(false, Ordering::Relaxed);
        let other = Waker::from(Arc::new(Noop));
        assert!(gated.as_mut().poll(&mut Context::from_waker(&other)).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 3, "a new waker must be registered with the inner future");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_timer_fires_at_its_deadline_and_again_once_rearmed() {
        let timer = Gated::new(tokio::time::sleep(Duration::from_secs(10)), tokio::time::Sleep::is_elapsed);
        tokio::pin!(timer);
        let start = Instant::now();
        // Polled again and again meanwhile, as the connection loop does.
        let wake_ups = async {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        };
        tokio::select! {
            _ = &mut timer => {}
            _ = wake_ups => unreachable!(),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        timer.as_mut().rearm().reset(Instant::now() + Duration::from_secs(5));
        (&mut timer).await;
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_timer_fires_at_a_pending_heads_deadline_and_otherwise_looks_again() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let activity = Arc::new(Activity::new(Instant::now()));
        let start = Instant::now();
        // A new connection owes its first head from the start.
        assert_eq!(activity.next_check(start, header, idle, false), start + header);
        // A request in flight: no head deadline, look again after the idle
        // timeout at the latest, and every header_read_timeout for a head.
        let active = activity.begin();
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        assert_eq!(activity.next_check(now, header, idle, false), now + header);
        drop(active);
        // Idle, then a head starts 4 s later: the check lands on its deadline.
        tokio::time::advance(Duration::from_secs(4)).await;
        activity.saw_bytes();
        let head_started = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(activity.next_check(Instant::now(), header, idle, false), head_started + header);
        // HTTP/2 has no head timer: only the idle check is left.
        let h2 = Arc::new(Activity::new(Instant::now()));
        h2.h2.store(true, Ordering::Relaxed);
        let _busy = h2.begin();
        let now = Instant::now();
        assert_eq!(h2.next_check(now, header, idle, false), now + idle);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_to_a_client_that_reads_nothing_run_out_of_time_from_the_first_block() {
        let send = Duration::from_secs(60);
        let activity = Activity::new(Instant::now());
        assert_eq!(activity.write_deadline(send), None, "nothing written yet");
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.wrote(false);
        assert_eq!(activity.write_deadline(send), None, "a write that went through");
        activity.wrote(true);
        let blocked = Instant::now();
        // Still blocked later: the deadline counts from the first block.
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.wrote(true);
        assert_eq!(activity.write_deadline(send), Some(blocked + send));
        // The client took some: a new block starts a new count.
        activity.wrote(false);
        assert_eq!(activity.write_deadline(send), None);
        activity.wrote(true);
        assert_eq!(activity.write_deadline(send), Some(Instant::now() + send));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_already_closing_is_not_checked_for_idleness_again_at_once() {
        let (header, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        // HTTP/2, idle past its timeout, GOAWAY sent but the connection not
        // gone yet (a client that does not read): the idle deadline is in
        // the past, and re-arming the timer there would spin.
        let activity = Arc::new(Activity::new(Instant::now()));
        activity.h2.store(true, Ordering::Relaxed);
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(90)).await;
        let now = Instant::now();
        assert_eq!(activity.next_check(now, header, idle, false), now, "an idle connection is due now");
        assert!(activity.next_check(now, header, idle, true) > now, "a closing one is not due again at once");
    }

    #[test]
    fn a_head_with_both_framings_is_flagged() {
        let mut scan = HeadScan::default();
        assert!(
            scan.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello")
        );
        let mut scan = HeadScan::default();
        assert!(scan.feed(b"POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\ncontent-length: 5\r\n\r\n"));
    }

    #[test]
    fn ordinary_heads_are_not_flagged() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nTransfer-Encoding: x\r\n"));
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nX-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn a_head_spread_over_reads_is_followed() {
        let mut scan = HeadScan::default();
        assert!(!scan.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n"));
        assert!(!scan.feed(b"Transfer-Encoding: chunked\r\n"));
        assert!(scan.feed(b"\r\n0\r\n\r\n"));
        // The next head starts clean.
        assert!(!scan.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn the_first_bytes_tell_http1_from_the_http2_preface() {
        use super::{protocol_of, Protocol};
        assert_eq!(protocol_of(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PUT /x"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"POST"), Some(Protocol::Http1));
        assert_eq!(protocol_of(b"PRO"), Some(Protocol::Http1), "PROPFIND parts from PRI at its third byte");
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(Protocol::Http2));
        assert_eq!(protocol_of(b"PRI "), Some(Protocol::Http2));
        // Too few bytes to tell: wait for more.
        for undecided in [&b"P"[..], b"PR", b"PRI"] {
            assert_eq!(protocol_of(undecided), None, "{undecided:?}");
        }
    }

    /// The future `f` returns, measured without calling `f`.
    fn future_size<F, Fut>(_f: F) -> usize
    where
        F: FnOnce(
            Connection,
            tokio::net::TcpStream,
            std::net::SocketAddr,
            Option<Arc<crate::tls::ServerTls>>,
            OpenGuard,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Spawning copies a task's future several times: the connection's
    /// state (KiB of it) must sit behind a box, not in the task itself.
    #[test]
    fn a_connection_task_holds_its_connection_boxed() {
        let size = future_size(super::connection_task);
        assert!(size <= 512, "a connection task's future is {size} bytes");
    }
}
