//! hyper serving one connection, and an idle HTTP/1.1 connection parked
//! without it.
//!
//! An edge proxy holds idle keep-alive connections by the thousand, and
//! what one costs is what its task keeps while it waits. hyper's HTTP/1
//! connection keeps its state for the connection's whole life (the
//! dispatcher, the codec's state, a box for the request's future and one
//! for the response body), though between two requests none of it carries
//! anything from one to the next: hyper parses each head afresh. So
//! [`Serving`] keeps hyper's HTTP/1 connection in a box of its own, and when
//! asked to [park](Serving::park) a connection that hyper says idles between
//! requests with nothing buffered and the socket read to its end
//! ([`UpgradeableConnection::is_idle`](hyper::server::conn::http1::UpgradeableConnection::is_idle),
//! a vendored addition), it takes the connection apart: the byte stream and
//! the service stay, the rest is freed. When to park is the connection
//! loop's choice ([`connection`](super::connection)). The parked connection waits on the
//! socket's readiness alone; bytes, a close or a shutdown build hyper's
//! connection again from the same stream and service, which then serves as
//! the old one would have. Only cleartext connections park: over TLS the
//! session's own state dwarfs hyper's, and what rustls may hold between
//! reads is its business, not a socket's readiness.
//!
//! HTTP/2's state is several times HTTP/1.1's and lives as long as the
//! connection (its HPACK tables, settings and windows): it sits behind a box
//! too, so that it is not part of every connection's future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Body;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::IntGauge;
use tokio::net::TcpStream;

use super::io::Watched;
use super::limits::Builders;
use super::sniff::Protocol;

/// A byte stream whose idle HTTP/1.1 connection may park: it can say when
/// bytes (or a close) arrive, with nothing read.
pub(super) trait Parkable {
    /// Whether connections over this stream park while idle.
    const PARKS: bool;

    /// Ready once the stream has something to read, or has closed.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl Parkable for TcpStream {
    const PARKS: bool = true;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Parkable for tokio_rustls::server::TlsStream<TcpStream> {
    const PARKS: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The byte stream hyper reads and writes.
type Io<I> = TokioIo<Watched<I>>;

/// One connection, served by hyper in the protocol it speaks, or parked.
pub(super) enum Serving<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
{
    /// HTTP/1.1 (or 1.0), hyper's connection boxed so that a parked
    /// connection does not carry its size.
    Http1(Box<http1::UpgradeableConnection<Io<I>, S>>),
    /// HTTP/2.
    Http2(Pin<Box<http2::Connection<Io<I>, S, TokioExecutor>>>),
    /// HTTP/1.1 between requests, hyper's state freed: the stream and the
    /// service wait for the next bytes.
    Parked {
        /// The stream, with nothing buffered on hyper's side.
        io: Io<I>,
        /// The service, handed back by hyper.
        service: S,
        /// Counts the connection as parked while it is.
        _counted: Counted,
    },
    /// Only while moving from one state to another.
    Moving,
}

impl<I, S, B> Serving<I, S>
where
    I: Parkable + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B> + Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    pub(super) fn new(builders: &Builders, protocol: Protocol, io: Io<I>, service: S) -> Self {
        match protocol {
            Protocol::Http1 => Serving::Http1(Box::new(builders.http1.serve_connection(io, service).with_upgrades())),
            Protocol::Http2 => Serving::Http2(Box::pin(builders.http2.serve_connection(io, service))),
        }
    }

    /// `Connection: close` on HTTP/1 (at once if idle), `GOAWAY` on HTTP/2.
    /// A parked connection gets hyper's connection back first, so that it
    /// closes exactly as an idle one always has.
    pub(super) fn graceful_shutdown(&mut self, builders: &Builders) {
        self.unpark(builders);
        match self {
            Serving::Http1(conn) => Pin::new(&mut **conn).graceful_shutdown(),
            Serving::Http2(conn) => conn.as_mut().graceful_shutdown(),
            Serving::Parked { .. } | Serving::Moving => {}
        }
    }

    /// Drive the connection; a parked one whose socket wakes is served
    /// again.
    pub(super) fn poll(&mut self, builders: &Builders, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        loop {
            match self {
                Serving::Http1(conn) => return Pin::new(&mut **conn).poll(cx),
                Serving::Http2(conn) => return conn.as_mut().poll(cx),
                Serving::Parked { io, .. } => match io.inner().get_ref().poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    // hyper's read finds the close, or the error, and
                    // ends the connection as it always has.
                    Poll::Ready(_) => self.unpark(builders),
                },
                // Never left in this state: `park` and `unpark` replace it.
                Serving::Moving => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Whether this is an HTTP/1.1 connection that could park now: hyper
    /// says it idles between requests, and the stream lets it wait.
    pub(super) fn can_park(&self) -> bool {
        matches!(self, Serving::Http1(conn) if I::PARKS && conn.is_idle())
    }

    /// Park the connection if it [can](Serving::can_park): free hyper's
    /// state, keeping the stream and the service. The caller polls it
    /// again, so that it waits on its socket.
    pub(super) fn park(&mut self, parked: &IntGauge) {
        if !self.can_park() {
            return;
        }
        let Serving::Http1(conn) = std::mem::replace(self, Serving::Moving) else {
            return;
        };
        *self = match conn.into_parts() {
            Some(parts) if parts.read_buf.is_empty() => {
                Serving::Parked { io: parts.io, service: parts.service, _counted: Counted::new(parked) }
            }
            // `is_idle` rules both out; should hyper ever disagree, the
            // connection ends rather than lose bytes.
            _ => Serving::Moving,
        };
    }

    /// Build hyper's connection again for a parked one.
    fn unpark(&mut self, builders: &Builders) {
        if !matches!(self, Serving::Parked { .. }) {
            return;
        }
        if let Serving::Parked { io, service, .. } = std::mem::replace(self, Serving::Moving) {
            *self = Serving::Http1(Box::new(builders.http1.serve_connection(io, service).with_upgrades()));
        }
    }
}

/// One parked connection in `cutover_client_connections_parked`, from
/// parking to waking or closing, however the connection ends.
pub(super) struct Counted(IntGauge);

impl Counted {
    fn new(parked: &IntGauge) -> Counted {
        parked.inc();
        Counted(parked.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use prometheus::IntGauge;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::time::{timeout, Instant};

    use super::{Parkable, Serving};
    use crate::server::io::Watched;
    use crate::server::limits::{connection_builders, Builders};
    use crate::server::sniff::Protocol;
    use crate::server::watchdog::Activity;
    use crate::server::ConnLimits;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn builders() -> Builders {
        connection_builders(&ConnLimits {
            idle_timeout: Duration::from_secs(60),
            max_request_header_bytes: 8192,
            header_read_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
        })
    }

    /// Read one response to a `GET` off `stream` (bodies are `ok`, sent
    /// with a length): its bytes.
    async fn read_response(stream: &mut TcpStream) -> String {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 1024];
        while !bytes.ends_with(b"\r\n\r\nok") {
            let n = timeout(DEADLINE, stream.read(&mut buf)).await.expect("a response in time").expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&bytes));
            bytes.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Drive `serving` until `done` finishes, failing if the connection ends.
    async fn drive_until<I, S, T>(
        serving: &mut Serving<I, S>,
        builders: &Builders,
        done: impl std::future::Future<Output = T>,
    ) -> T
    where
        I: Parkable + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Full<Bytes>> + Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        hyper_util::rt::TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, Full<Bytes>>,
    {
        tokio::pin!(done);
        tokio::select! {
            ended = std::future::poll_fn(|cx| serving.poll(builders, cx)) => panic!("the connection ended: {ended:?}"),
            out = &mut done => out,
            _ = tokio::time::sleep(DEADLINE) => panic!("not done in time"),
        }
    }

    /// A keep-alive connection that answered its request and found the
    /// socket empty parks: hyper's state is freed, and the next request
    /// on the same socket is served by a connection built afresh.
    #[tokio::test]
    async fn an_idle_http1_connection_parks_and_serves_its_next_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let builders = builders();
        let activity = Arc::new(Activity::new(Instant::now()));
        let service =
            service_fn(|_req| async { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok")))) });
        let io = TokioIo::new(Watched::new(accepted, activity, true));
        let mut serving = Serving::new(&builders, Protocol::Http1, io, service);
        let parked = IntGauge::new("parked", "parked").expect("gauge");

        for path in ["/first", "/second", "/third"] {
            assert!(!matches!(serving, Serving::Moving));
            let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
            client.write_all(request.as_bytes()).await.expect("write");
            let response = drive_until(&mut serving, &builders, read_response(&mut client)).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
            // Once hyper has found the socket empty again (at the latest a
            // poll or two after the response), the connection can park.
            let parkable = async {
                while !serving.can_park() {
                    let polled = std::future::poll_fn(|cx| {
                        let polled = serving.poll(&builders, cx);
                        if serving.can_park() {
                            return std::task::Poll::Ready(None);
                        }
                        polled.map(Some)
                    });
                    if let Some(ended) = timeout(DEADLINE, polled).await.expect("parkable in time") {
                        panic!("the connection ended: {ended:?}");
                    }
                }
            };
            parkable.await;
            assert_eq!(parked.get(), 0, "{path}: counted as parked only while it is");
            serving.park(&parked);
            assert!(matches!(serving, Serving::Parked { .. }));
            assert_eq!(parked.get(), 1, "{path}");
        }
        // A client that closes a parked connection ends it.
        drop(client);
        let ended = timeout(DEADLINE, std::future::poll_fn(|cx| serving.poll(&builders, cx))).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        drop(serving);
        assert_eq!(parked.get(), 0, "no longer counted once it ends");
    }
}
