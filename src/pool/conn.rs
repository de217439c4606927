//! Opening upstream connections: TCP (with dead-peer detection), TLS, and
//! the HTTP handshake that makes a [`Conn`] — an inline HTTP/1.1 connection
//! (see [`super::h1`]) or one driven by hyper's client — and the handle a
//! drain uses to cut it. The body a response streams back through is
//! `crate::body::UpstreamBody`, above this layer.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use super::h1::{CutSwitch, H1Conn};
use crate::config::{BackendAddr, UpstreamProtocol};
use crate::request_body::RequestBody;

/// Why no connection to a backend could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect (or name lookup) failed.
    #[error("connect to {addr} failed: {source}")]
    Io {
        /// The backend address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connect did not finish within `connect_timeout`.
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The backend address.
        addr: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The TLS handshake failed (bad certificate, wrong name, no common protocol).
    #[error("TLS with {addr} failed: {source}")]
    Tls {
        /// The backend address.
        addr: String,
        /// The TLS error.
        source: std::io::Error,
    },
    /// The HTTP handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The backend address.
        addr: String,
        /// hyper's error.
        source: hyper::Error,
    },
}

/// The deadlines a backend's new connections are opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `[server] connect_timeout`.
    pub connect: Duration,
    /// `[server] request_timeout`: it bounds how long sent data may stay
    /// unacknowledged before a connection counts as dead (see
    /// `detect_dead_peers`).
    pub request: Duration,
}

impl Timeouts {
    /// The config's defaults.
    pub const DEFAULT: Timeouts =
        Timeouts { connect: crate::config::DEFAULT_CONNECT_TIMEOUT, request: crate::config::DEFAULT_REQUEST_TIMEOUT };
}

/// How a backend is reached: plain or TLS, HTTP/1.1 or HTTP/2.
#[derive(Debug, Clone)]
pub struct Transport {
    /// The HTTP version spoken.
    pub protocol: UpstreamProtocol,
    /// The TLS client config, for `https://` backends.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The extra CA file it trusts (identity for reuse across reloads).
    pub ca_file: Option<std::path::PathBuf>,
    /// A digest of that file's content when the transport was built: a CA
    /// rotated in place is another way to reach the backend.
    pub ca_digest: Option<u64>,
}

impl Transport {
    /// Plain HTTP/1.1.
    pub fn plain() -> Transport {
        Transport { protocol: UpstreamProtocol::Http1, tls: None, ca_file: None, ca_digest: None }
    }

    /// Whether requests without a body can be exchanged inline (see
    /// [`super::h1`]): HTTP/1.1 over plain TCP.
    pub fn is_inline(&self) -> bool {
        self.protocol == UpstreamProtocol::Http1 && self.tls.is_none()
    }

    /// Whether a backend reached by this transport may be kept when
    /// `wanted` is asked for: the same protocol, TLS and CA file, and the
    /// CA file's content unchanged, or unreadable now (a backend that
    /// trusts the CA it read is better kept than rebuilt on the system's
    /// roots alone).
    pub fn same_as(&self, wanted: &Transport) -> bool {
        self.protocol == wanted.protocol
            && self.tls.is_some() == wanted.tls.is_some()
            && self.ca_file == wanted.ca_file
            && (wanted.ca_digest.is_none() || self.ca_digest == wanted.ca_digest)
    }
}

/// A connection to a backend, ready for requests. HTTP/1.1 connections
/// carry one exchange at a time and are pooled; an HTTP/2 connection is
/// shared by all of a backend's requests.
#[derive(Debug)]
pub enum UpstreamConn {
    /// HTTP/1.1.
    H1(http1::SendRequest<RequestBody>),
    /// HTTP/2.
    H2(http2::SendRequest<RequestBody>),
}

impl UpstreamConn {
    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            UpstreamConn::H1(c) => c.is_closed(),
            UpstreamConn::H2(c) => c.is_closed(),
        }
    }

    /// Whether the connection takes a request now, without waiting: `None`
    /// while it is still busy with the last one.
    pub fn ready_now(&mut self) -> Option<Result<(), hyper::Error>> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let polled = match self {
            UpstreamConn::H1(c) => c.poll_ready(&mut cx),
            UpstreamConn::H2(c) => c.poll_ready(&mut cx),
        };
        match polled {
            std::task::Poll::Ready(ready) => Some(ready),
            std::task::Poll::Pending => None,
        }
    }

    /// Wait until the connection takes a request.
    pub async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            UpstreamConn::H1(c) => c.ready().await,
            UpstreamConn::H2(c) => c.ready().await,
        }
    }

    /// Send `request`; if it could not be sent at all, the error gives it back.
    /// The request is handed to the connection now; the future waits for
    /// the response. (Not an `async fn`, which would hold the request a
    /// second time for as long as it waits.)
    pub fn try_send_request(
        &mut self,
        request: Request<RequestBody>,
    ) -> Sending<impl Future<Output = SendResult>, impl Future<Output = SendResult>> {
        match self {
            UpstreamConn::H1(c) => Sending::H1 { sending: c.try_send_request(request) },
            UpstreamConn::H2(c) => Sending::H2 { sending: c.try_send_request(request) },
        }
    }
}

/// What sending a request comes to: the response, or the error (with the
/// request, if it was never written).
pub type SendResult = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

pin_project_lite::pin_project! {
    /// A request on its way over an HTTP/1.1 or an HTTP/2 connection.
    #[project = SendingProj]
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    pub enum Sending<A, B> {
        /// HTTP/1.1.
        H1 { #[pin] sending: A },
        /// HTTP/2.
        H2 { #[pin] sending: B },
    }
}

impl<A: Future<Output = SendResult>, B: Future<Output = SendResult>> Future for Sending<A, B> {
    type Output = SendResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendResult> {
        match self.project() {
            SendingProj::H1 { sending } => sending.poll(cx),
            SendingProj::H2 { sending } => sending.poll(cx),
        }
    }
}

/// Open a TCP connection to `addr` within `timeout`, and TLS over it when
/// `tls` is given; `alpn` is then what the backend agreed to. Data it sends
/// may stay unacknowledged for `unacknowledged` (see [`detect_dead_peers`]).
pub(crate) async fn open_stream(
    addr: &BackendAddr,
    resolved: Option<SocketAddr>,
    timeout: Duration,
    unacknowledged: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Stream, ConnectError> {
    let opening = async {
        let stream = match resolved {
            Some(sa) => TcpStream::connect(sa).await,
            None => TcpStream::connect(addr.authority.as_str()).await,
        }
        .map_err(|source| ConnectError::Io { addr: addr.to_string(), source })?;
        // Small request/response exchanges: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        detect_dead_peers(&stream, unacknowledged);
        let Some(config) = tls else { return Ok(Stream::Plain(stream)) };
        let name =
            server_name(&addr.authority).map_err(|source| ConnectError::Tls { addr: addr.to_string(), source })?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .map_err(|source| ConnectError::Tls { addr: addr.to_string(), source })?;
        Ok(Stream::Tls(Box::new(tls)))
    };
    match tokio::time::timeout(timeout, opening).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout { addr: addr.to_string(), timeout }),
    }
}

/// Idle time after which the kernel probes an upstream connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Time between two unanswered probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the connection is closed.
const KEEPALIVE_PROBES: u32 = 3;
/// The least time sent data may stay unacknowledged (or unsent, the
/// backend's window closed) before the kernel closes the connection
/// (`TCP_USER_TIMEOUT`, Linux); a longer `request_timeout` raises it.
pub(crate) const UNACKNOWLEDGED_FLOOR: Duration = Duration::from_secs(30);

/// How long data sent to a backend may stay unacknowledged: never less than
/// `request_timeout`, within which a request may legitimately still be on
/// its way to a backend that reads slowly.
fn unacknowledged_limit(request_timeout: Duration) -> Duration {
    request_timeout.max(UNACKNOWLEDGED_FLOOR)
}

/// Let the kernel find out when a backend vanishes without closing its
/// connections (its node lost, a network partition): such a connection
/// looks open, and what is written on it waits for retransmissions to give
/// up, about 15 minutes. An idle connection is probed after
/// [`KEEPALIVE_IDLE`]; on a busy one, data unacknowledged for
/// `unacknowledged` closes it, which fails its requests and makes the next
/// checkout open a new one (whose connect then fails fast). Most of all for
/// an `h2` pool, whose one shared connection carries every request and is
/// never closed for idleness. A backend that is merely slow to answer still
/// acknowledges at the TCP level, so neither limit cuts a slow answer. One
/// that stops reading a request body keeps the data unsent, which counts
/// too (Linux 5.11 and later); so the limit is at least `request_timeout`,
/// which bounds the sending of a request anyway. Best effort: a socket that
/// refuses the options works as before.
fn detect_dead_peers(stream: &TcpStream, unacknowledged: Duration) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    #[cfg(target_os = "linux")]
    let _ = socket.set_tcp_user_timeout(Some(unacknowledged));
}

/// The name a backend's certificate must carry: its host, without port.
fn server_name(authority: &str) -> Result<ServerName<'static>, std::io::Error> {
    let host = crate::route::strip_port(authority).trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
}

/// A plain or TLS byte stream to a backend.
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A connection to a backend as a checkout hands it out: driven by hyper,
/// or by the request itself (see [`super::h1`]).
#[derive(Debug)]
pub enum Conn {
    /// Through hyper's client: HTTP/2, TLS, and requests with a body or an upgrade.
    Hyper(UpstreamConn),
    /// HTTP/1.1 over plain TCP, for body-less requests.
    Inline(Box<H1Conn>),
}

/// What a backend closes when its drain times out: a connection task to
/// abort, or an inline connection's switch.
#[derive(Debug)]
pub(super) enum Cuttable {
    /// A hyper connection's task.
    Task(AbortHandle),
    /// An inline connection.
    Switch(Arc<CutSwitch>),
}

impl Cuttable {
    /// Whether the connection is gone already.
    pub(super) fn is_gone(&self) -> bool {
        match self {
            Cuttable::Task(task) => task.is_finished(),
            // The connection holds the other reference.
            Cuttable::Switch(switch) => Arc::strong_count(switch) == 1,
        }
    }

    /// Close the connection, failing what is in flight on it.
    pub(super) fn cut(&self) {
        match self {
            Cuttable::Task(task) => task.abort(),
            Cuttable::Switch(switch) => switch.cut(),
        }
    }
}

/// Open a new connection to `addr` over `transport`, and the handle that
/// closes it if the backend is cut (a drain that ran out of time). Plain
/// HTTP/1.1 connections start out inline; [`into_hyper`] hands one to
/// hyper for a request that needs it.
pub(super) async fn connect(
    addr: &BackendAddr,
    resolved: Option<SocketAddr>,
    timeouts: Timeouts,
    transport: &Transport,
) -> Result<(Conn, Cuttable), ConnectError> {
    let unacknowledged = unacknowledged_limit(timeouts.request);
    let (conn, task) =
        match open_stream(addr, resolved, timeouts.connect, unacknowledged, transport.tls.as_ref()).await? {
            Stream::Plain(io) if transport.is_inline() => {
                let switch = Arc::new(CutSwitch::default());
                return Ok((Conn::Inline(Box::new(H1Conn::new(io, switch.clone()))), Cuttable::Switch(switch)));
            }
            Stream::Plain(io) => handshake(io, addr, transport.protocol).await?,
            Stream::Tls(io) => handshake(io, addr, transport.protocol).await?,
        };
    Ok((Conn::Hyper(conn), Cuttable::Task(task)))
}

/// Hand a new inline connection (nothing read or written yet) to hyper's
/// client, for a request with a body or an upgrade.
pub(super) async fn into_hyper(
    conn: Box<H1Conn>,
    addr: &BackendAddr,
) -> Result<(UpstreamConn, Cuttable), ConnectError> {
    let (conn, task) = handshake(conn.into_stream(), addr, UpstreamProtocol::Http1).await?;
    Ok((conn, Cuttable::Task(task)))
}

async fn handshake<I>(
    io: I,
    addr: &BackendAddr,
    protocol: UpstreamProtocol,
) -> Result<(UpstreamConn, AbortHandle), ConnectError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let failed = |source| ConnectError::Handshake { addr: addr.to_string(), source };
    // The connection task polls nothing but its connection: a cut is an
    // abort from outside, so the hot path pays no per-poll check for it.
    match protocol {
        UpstreamProtocol::Http1 => {
            let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(io)).await.map_err(failed)?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
            Ok((UpstreamConn::H1(sender), task.abort_handle()))
        }
        UpstreamProtocol::H2 => {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(failed)?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "upstream h2 connection ended with an error");
                }
            });
            Ok((UpstreamConn::H2(sender), task.abort_handle()))
        }
    }
}

/// Errors of bodies streamed to clients.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend is kept while its CA file's content is unchanged, or
    /// unreadable now; a rotated file, or one readable again, rebuilds it.
    #[test]
    fn a_backend_is_kept_while_its_ca_is_the_same_or_unreadable() {
        let with = |digest| Transport {
            protocol: UpstreamProtocol::Http1,
            tls: None,
            ca_file: Some("/ca.pem".into()),
            ca_digest: digest,
        };
        assert!(with(Some(1)).same_as(&with(Some(1))));
        assert!(!with(Some(1)).same_as(&with(Some(2))), "rotated");
        assert!(with(Some(1)).same_as(&with(None)), "unreadable now: kept");
        assert!(!with(None).same_as(&with(Some(1))), "readable again: rebuilt");
    }

    #[tokio::test]
    async fn upstream_connections_detect_a_vanished_backend() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = BackendAddr {
            scheme: crate::config::Scheme::Http,
            authority: listener.local_addr().expect("addr").to_string(),
        };
        let unacknowledged = Duration::from_secs(45);
        let stream = open_stream(&addr, None, Duration::from_secs(5), unacknowledged, None).await.expect("connect");
        let Stream::Plain(stream) = stream else { panic!("a plain backend gets a plain stream") };
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().expect("TCP_KEEPCNT"), KEEPALIVE_PROBES);
        #[cfg(target_os = "linux")]
        assert_eq!(socket.tcp_user_timeout().expect("TCP_USER_TIMEOUT"), Some(unacknowledged));
    }

    #[test]
    fn the_unacknowledged_limit_is_never_below_the_request_timeout() {
        assert_eq!(unacknowledged_limit(Duration::from_secs(5)), UNACKNOWLEDGED_FLOOR);
        assert_eq!(unacknowledged_limit(Duration::from_secs(300)), Duration::from_secs(300));
    }
}
