//! Opening upstream connections, and the response body that gives its
//! connection back.
//!
//! A connection is returned to its backend's idle list only once the
//! response body has been read to its end: a body dropped half-way (the
//! client went away) leaves the connection mid-message, so it is closed
//! instead. The same body type holds the request's [`Exchange`], so a
//! request counts as in flight until its last byte has passed, which is what
//! draining and `p2c` need.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::backend::UpstreamConn;
use crate::config::{BackendAddr, Scheme};
use crate::exchange::Exchange;

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
    /// The HTTP/1 handshake failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The backend address.
        addr: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The backend needs a transport this build does not speak yet.
    #[error("backend {addr}: {what} is not supported yet")]
    Unsupported {
        /// The backend address.
        addr: String,
        /// What is missing.
        what: &'static str,
    },
}

/// Open a new HTTP/1.1 connection to `addr`.
pub(super) async fn connect(
    addr: &BackendAddr,
    resolved: Option<SocketAddr>,
    timeout: Duration,
    mut cut: tokio::sync::watch::Receiver<bool>,
) -> Result<UpstreamConn, ConnectError> {
    if addr.scheme == Scheme::Https {
        return Err(ConnectError::Unsupported { addr: addr.to_string(), what: "TLS to backends" });
    }
    let connecting = async {
        match resolved {
            Some(sa) => TcpStream::connect(sa).await,
            None => TcpStream::connect(addr.authority.as_str()).await,
        }
    };
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => return Err(ConnectError::Io { addr: addr.to_string(), source }),
        Err(_) => return Err(ConnectError::Timeout { addr: addr.to_string(), timeout }),
    };
    // Small request/response exchanges: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake { addr: addr.to_string(), source })?;
    tokio::spawn(async move {
        tokio::select! {
            result = connection.with_upgrades() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            }
            // A drain ran out of time: dropping the connection closes it and
            // fails whatever is still in flight on it.
            _ = cut.wait_for(|cut| *cut) => {}
        }
    });
    Ok(sender)
}

/// A response body streamed from a backend.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    /// The connection to give back once the body has ended.
    conn: Option<UpstreamConn>,
    /// Records the exchange (and keeps it in flight) until the body is done.
    exchange: Option<Exchange>,
}

impl UpstreamBody {
    /// Wrap `body`, which arrived on `conn` for `exchange`.
    pub fn new(body: Incoming, conn: UpstreamConn, exchange: Exchange) -> UpstreamBody {
        let mut this = UpstreamBody { body, conn: Some(conn), exchange: Some(exchange) };
        if this.body.is_end_stream() {
            this.finish();
        }
        this
    }

    fn finish(&mut self) {
        if let (Some(conn), Some(exchange)) = (self.conn.take(), self.exchange.as_ref()) {
            exchange.backend().release(conn);
        }
        self.exchange = None;
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(e))) => {
                // A broken body leaves the connection unusable: drop it, and
                // count the exchange as the backend's failure.
                this.conn = None;
                if let Some(mut exchange) = this.exchange.take() {
                    exchange.failed(crate::error::UpstreamFailure::classify(e));
                }
            }
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(),
            _ => {}
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
