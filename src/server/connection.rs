//! One downstream connection, from its first byte to its close.
//!
//! [`Connection`] opens a connection (the look at its first bytes, or the
//! TLS handshake) and then serves it with hyper in the protocol it speaks,
//! in [`Running`]: the loop around hyper, where shutdown turns into a
//! graceful close and one timer acts on the [`watchdog`](super::watchdog)'s
//! deadlines (idle, slow head, a client that reads nothing, an HTTP/2
//! stream starved of window). A request that frames its body two ways is
//! answered `400` here, before it reaches the proxy.
//!
//! What a connection holds while it idles is mostly [`Running`], so it is
//! a struct, not an `async fn`: an `async fn` keeps room for its arguments
//! and for every value it moved on, for its whole life. The opening is a
//! future of its own, boxed apart and freed once the connection is open
//! (the accept loop's task runs one, then the other).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::gated::Gated;
use super::io::Watched;
use super::limits::{Builders, ConnLimits};
use super::serving::{Parkable, Serving};
use super::sniff::{sniff, Protocol};
use super::watchdog::{Activity, Close, Tracked, Verdict, Watchdog};
use crate::error::ProxyError;
use crate::lifecycle::{stopped, OpenGuard};
use crate::proxy::{ConnInfo, Handling, Proxy};

/// Longest a client may take to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTP/1.1 connection idles between requests before it parks
/// ([`serving`](super::serving)). Parking frees hyper's state and the next
/// request builds it again: a busy connection, whose next request follows
/// within this, is left as it is, and its timer fires at most once per
/// this period for it; one that idles longer pays the rebuild once.
const PARK_AFTER: Duration = Duration::from_millis(100);

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
    /// Wait for the first bytes to tell the protocol; then the
    /// connection's loop ([`Connection::run`]), or `None` if it closed
    /// first. The first request head is owed from accept: a client that
    /// sends nothing is closed once `header_read_timeout` (or a shorter
    /// `idle_timeout`) passes, or at shutdown.
    pub(super) async fn open_plain(
        mut self,
        stream: TcpStream,
        peer: SocketAddr,
        open: OpenGuard,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let accepted = Instant::now();
        let protocol = tokio::select! {
            sniffed = sniff(&stream) => match sniffed {
                Ok(Some(protocol)) => protocol,
                Ok(None) => return None,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "connection failed before its first request");
                    return None;
                }
            },
            _ = tokio::time::sleep_until(accepted + self.limits.header_read_timeout.min(self.limits.idle_timeout)) => {
                tracing::debug!(%peer, "no request within header_read_timeout; closing");
                self.proxy.client_timeouts().no_request.inc();
                return None;
            }
            _ = stopped(&mut self.shutdown) => return None,
        };
        Some(self.run(stream, peer, "http", protocol, accepted, open))
    }

    /// The TLS handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`]); then the
    /// connection's loop ([`Connection::run`]) in the protocol ALPN chose
    /// (HTTP/2 over TLS is negotiated, never assumed: RFC 9113 §3.2), or
    /// `None` if the handshake failed. Boxed: a TLS session's state is
    /// large, and the task that runs it is moved before it runs.
    pub(super) async fn open_tls(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Arc<crate::tls::ServerTls>,
        open: OpenGuard,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                let protocol = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Http1,
                };
                Some(Box::pin(self.run(stream, peer, "https", protocol, Instant::now(), open)))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                self.proxy.client_timeouts().tls_handshake.inc();
                None
            }
        }
    }

    /// The loop that serves `stream` in `protocol` until it closes; its
    /// first request head is owed from `since`. `open` counts it until
    /// then.
    fn run<I>(
        self,
        stream: I,
        peer: SocketAddr,
        proto: &'static str,
        protocol: Protocol,
        since: Instant,
        open: OpenGuard,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        I: Parkable + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
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
        let probe = self.shutdown.clone();
        let shutdown = Gated::new(raised(self.shutdown), move |_: &_| probe.has_changed().unwrap_or(true));
        // One timer for both deadlines, re-armed only when it fires: a
        // request costs no timer work and no wake-up of its own. While no
        // head is pending it looks again every `header_read_timeout`, and
        // once a head is pending it fires exactly at that head's deadline.
        // Gated: between firings, a wake-up asks it one atomic load instead
        // of a poll (which registers the waker again).
        let timer = Gated::new(
            tokio::time::sleep(self.limits.header_read_timeout.min(self.limits.idle_timeout)),
            Sleep::is_elapsed as fn(&Sleep) -> bool,
        );
        Running {
            conn,
            shutdown,
            timer,
            watchdog: Watchdog::new(self.limits),
            closing: false,
            activity,
            proxy: self.proxy,
            builders: self.builders,
            peer,
            _open: open,
        }
    }
}

/// Resolves once the proxy starts closing (or can no longer say so).
/// Written out rather than through [`stopped`], whose future is twice the
/// size, and every open connection holds one.
async fn raised(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

pin_project_lite::pin_project! {
    /// One open connection: the shutdown flag, the watchdog's timer (which
    /// also parks an HTTP/1.1 connection idle for [`PARK_AFTER`]) and hyper
    /// serving it, polled in that order.
    struct Running<I, S, F, H>
    where
        S: hyper::service::HttpService<hyper::body::Incoming>,
    {
        conn: Serving<I, S>,
        #[pin]
        shutdown: Gated<F, H>,
        #[pin]
        timer: Gated<Sleep, fn(&Sleep) -> bool>,
        watchdog: Watchdog,
        // Set once a graceful close has begun.
        closing: bool,
        activity: Arc<Activity>,
        proxy: Arc<Proxy>,
        builders: Arc<Builders>,
        peer: SocketAddr,
        // Counts the connection as open until it is dropped.
        _open: OpenGuard,
    }
}

impl<I, S, B, F, H> Future for Running<I, S, F, H>
where
    I: Parkable + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    hyper_util::rt::TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    F: Future<Output = ()>,
    H: FnMut(&F) -> bool,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let peer = *this.peer;
        loop {
            // Shutdown first: when the shutdown flag and a backend's answer
            // are ready in the same poll, the answer must already go out
            // with `Connection: close`.
            if !*this.closing && this.shutdown.as_mut().poll(cx).is_ready() {
                *this.closing = true;
                this.conn.graceful_shutdown(this.builders);
                continue;
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                // Idle since at least the last poll that asked for this
                // firing (or idle again already): park.
                this.conn.park(this.proxy.parked_connections());
                let timeouts = this.proxy.client_timeouts();
                match this.watchdog.check(this.activity, Instant::now(), *this.closing) {
                    Verdict::Close(reason) => {
                        match reason {
                            Close::NoRequest | Close::HeadTooSlow => {
                                tracing::debug!(%peer, "request head not received within header_read_timeout; closing");
                                if reason == Close::NoRequest { &timeouts.no_request } else { &timeouts.header_read }
                                    .inc();
                            }
                            Close::ClientReadsNothing => {
                                tracing::debug!(%peer, "client read nothing of the response within send_timeout; closing");
                                timeouts.send.inc();
                            }
                            Close::StreamsOutlivedGoaway => {
                                tracing::debug!(%peer, "streams still open send_timeout after the GOAWAY; closing");
                            }
                        }
                        return Poll::Ready(());
                    }
                    Verdict::Continue { stream_stalled, close_gracefully, next } => {
                        if stream_stalled {
                            tracing::debug!(%peer, "a stream waited send_timeout for the client's window; closing");
                            timeouts.send.inc();
                        }
                        if close_gracefully {
                            *this.closing = true;
                            this.conn.graceful_shutdown(this.builders);
                        }
                        this.timer.as_mut().rearm().reset(next);
                    }
                }
                continue;
            }
            if let Poll::Ready(result) = this.conn.poll(this.builders, cx) {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return Poll::Ready(());
            }
            // Idle between requests: the timer fires by `PARK_AFTER` from
            // now, to park the connection if it is idle then. Under load
            // the deadline is that near already, so this costs a clock
            // read and a comparison.
            if this.conn.can_park() {
                let park_at = Instant::now() + PARK_AFTER;
                if this.timer.get_ref().deadline() > park_at {
                    this.timer.as_mut().rearm().reset(park_at);
                    if this.timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
            }
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::Connection;
    use crate::lifecycle::OpenGuard;
    use crate::server::sniff::Protocol;

    /// An idle connection's memory is mostly its loop: hyper's connection
    /// and HTTP/2's state sit behind boxes of their own (freed while an
    /// HTTP/1.1 connection is parked), and no room is kept for values
    /// moved on.
    #[test]
    fn an_open_cleartext_connection_holds_little_inline() {
        fn size<F, Fut>(_f: F) -> usize
        where
            F: FnOnce(Connection, TcpStream, SocketAddr, &'static str, Protocol, Instant, OpenGuard) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let size = size(Connection::run::<TcpStream>);
        eprintln!("open cleartext connection: {size} bytes");
        assert!(size <= 1024, "an open cleartext connection's loop is {size} bytes");
    }
}
