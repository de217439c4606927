//! One downstream connection, from its first byte to its close.
//!
//! [`Connection`] serves a connection with hyper in the protocol it speaks,
//! and runs the loop around it: shutdown turns into a graceful close, and
//! one timer acts on the [`watchdog`](super::watchdog)'s deadlines (idle,
//! slow head, a client that reads nothing, an HTTP/2 stream starved of
//! window). A request that frames its body two ways is answered `400`
//! here, before it reaches the proxy.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Body;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::gated::Gated;
use super::io::Watched;
use super::limits::{Builders, ConnLimits};
use super::sniff::{sniff, Protocol};
use super::watchdog::{Activity, Close, Tracked, Verdict, Watchdog};
use crate::error::ProxyError;
use crate::lifecycle::stopped;
use crate::proxy::{ConnInfo, Handling, Proxy};

/// Longest a client may take to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pin_project_lite::pin_project! {
    /// One connection served by hyper, in the protocol it speaks.
    ///
    /// HTTP/2's state is several times HTTP/1.1's and sits behind a box of
    /// its own: inline, every HTTP/1.1 connection (most of them, and most
    /// of the idle ones) would carry its size in the connection's future.
    #[project = ServingProj]
    enum Serving<I, S>
    where
        S: hyper::service::HttpService<hyper::body::Incoming>,
    {
        Http1 { #[pin] conn: http1::UpgradeableConnection<I, S> },
        Http2 { conn: Pin<Box<http2::Connection<I, S, TokioExecutor>>> },
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
            Protocol::Http2 => Serving::Http2 { conn: Box::pin(builders.http2.serve_connection(io, service)) },
        }
    }

    /// `Connection: close` on HTTP/1 (at once if idle), `GOAWAY` on HTTP/2.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            ServingProj::Http1 { conn } => conn.graceful_shutdown(),
            ServingProj::Http2 { conn } => conn.as_mut().graceful_shutdown(),
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
            ServingProj::Http2 { conn } => conn.as_mut().poll(cx),
        }
    }
}

/// What one connection is served with.
pub(super) struct Connection {
    /// The proxy its requests go to.
    pub(super) proxy: Arc<Proxy>,
    /// hyper's builders, shared by the listener's connections.
    pub(super) builders: Arc<Builders>,
    /// Its timeouts.
    pub(super) limits: ConnLimits,
    /// Raised when the proxy starts closing.
    pub(super) shutdown: watch::Receiver<bool>,
    /// The listener's address as configured.
    pub(super) listener: SocketAddr,
}

impl Connection {
    /// Wait for the first bytes to tell the protocol, then
    /// [`Connection::run`]. The first request head is owed from accept: a
    /// client that sends nothing is closed once `header_read_timeout` (or a
    /// shorter `idle_timeout`) passes, or at shutdown.
    pub(super) async fn run_plain(mut self, stream: TcpStream, peer: SocketAddr) {
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
    pub(super) async fn run_tls(self, stream: TcpStream, peer: SocketAddr, tls: Arc<crate::tls::ServerTls>) {
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
        let info = ConnInfo::new(peer, proto, self.proxy.connection_seed()).on_listener(self.listener);
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
                let err = ProxyError::BadRequest("both content-length and transfer-encoding\n");
                Handling::answered(proxy.refuse(&info, req, err))
            } else {
                proxy.handle(&info, req)
            };
            Tracked::new(handling, active)
        });
        let stream = Watched::new(stream, activity.clone(), proto == "http");
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
        let mut watchdog = Watchdog::new(self.limits);
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
                    let timeouts = self.proxy.client_timeouts();
                    match watchdog.check(&activity, Instant::now(), closing) {
                        Verdict::Close(reason) => {
                            match reason {
                                Close::NoRequest | Close::HeadTooSlow => {
                                    tracing::debug!(%peer, "request head not received within header_read_timeout; closing");
                                    if reason == Close::NoRequest { &timeouts.no_request } else { &timeouts.header_read }.inc();
                                }
                                Close::ClientReadsNothing => {
                                    tracing::debug!(%peer, "client read nothing of the response within send_timeout; closing");
                                    timeouts.send.inc();
                                }
                                Close::StreamsOutlivedGoaway => {
                                    tracing::debug!(%peer, "streams still open send_timeout after the GOAWAY; closing");
                                }
                            }
                            return;
                        }
                        Verdict::Continue { stream_stalled, close_gracefully, next } => {
                            if stream_stalled {
                                tracing::debug!(%peer, "a stream waited send_timeout for the client's window; closing");
                                timeouts.send.inc();
                            }
                            if close_gracefully {
                                closing = true;
                                conn.as_mut().graceful_shutdown();
                            }
                            timer.as_mut().rearm().reset(next);
                        }
                    }
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
