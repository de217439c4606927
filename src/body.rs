//! Bodies in both directions.
//!
//! [`ProxyBody`] is what the proxy answers with: streamed from a backend or
//! a short body the proxy wrote itself — an enum rather than a boxed trait
//! object, so the common path allocates nothing for the body.
//!
//! [`UpstreamBody`] is a backend's response body on its way to the client.
//! It gives its connection back to the backend only once it has been read
//! to its end: a body dropped half-way (the client went away) leaves the
//! connection mid-message, so it is closed instead. It holds the request's
//! [`Exchange`], so a request counts as in flight until its last byte has
//! passed, which is what draining and `p2c` need.
//!
//! A client's request body is [`crate::request_body`]'s, re-exported here.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::exchange::Exchange;
use crate::pool::session::Answer;
use crate::pool::{BoxError, Conn, H1Body, UpstreamConn, UpstreamFailure};
pub use crate::request_body::{RequestBody, RequestBodyError};

/// A response body.
#[derive(Debug)]
pub enum ProxyBody {
    /// A body the proxy produced, sent in one frame.
    Full(Option<Bytes>),
    /// A body streamed from a backend.
    Upstream(UpstreamBody),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(body) => body.size_hint(),
        }
    }
}

/// A response body streamed from a backend.
#[derive(Debug)]
pub struct UpstreamBody {
    source: Source,
    /// Longest silence between two frames of the body; then it is cut and
    /// counted as an upstream timeout.
    idle_timeout: Duration,
    /// The exchange's timer, re-armed for `idle_timeout` on the first wait
    /// for data and again whenever data arrives.
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    /// Records the exchange (and keeps it in flight) until the body is done.
    exchange: Option<Exchange>,
    /// Whether any of the body has been passed on.
    started: bool,
    /// A failure held back for one poll (see [`UpstreamBody::fail`]).
    held: Option<BoxError>,
}

/// Where the body comes from, with the connection to give back once it
/// has ended.
#[derive(Debug)]
enum Source {
    /// hyper's client reads it.
    Hyper { body: Incoming, conn: Option<UpstreamConn> },
    /// Read here, from the connection the body owns.
    Inline(H1Body),
}

/// A failed read of a response body.
enum BodyError {
    Hyper(hyper::Error),
    Inline(crate::pool::H1Error),
}

impl UpstreamBody {
    /// Wrap `body`, which arrived through hyper on `conn` for `exchange`; a
    /// backend silent for `idle_timeout` mid-body is cut off, timed by
    /// `timer` (the exchange's, so a request registers one timer, not one
    /// per phase).
    pub fn new(
        body: Incoming,
        conn: UpstreamConn,
        exchange: Exchange,
        idle_timeout: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> UpstreamBody {
        UpstreamBody::from_source(Source::Hyper { body, conn: Some(conn) }, exchange, idle_timeout, timer)
    }

    /// The client's response for a backend's `answer`: its head without
    /// hop-by-hop fields, and its body streamed for `exchange`, cut off
    /// after `idle_timeout` of silence (timed by `timer`).
    pub fn respond(
        answer: Answer,
        exchange: Exchange,
        idle_timeout: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> Response<ProxyBody> {
        match answer {
            Answer::Inline(head, conn) => {
                let body = H1Body::new(conn, &head);
                // The parse left the hop-by-hop fields out.
                let (parts, ()) = head.response.into_parts();
                let body = UpstreamBody::inline(body, exchange, idle_timeout, timer);
                Response::from_parts(parts, ProxyBody::Upstream(body))
            }
            Answer::Hyper(response, conn) => {
                let (mut parts, body) = response.into_parts();
                crate::headers::strip_hop_by_hop(&mut parts.headers);
                let body = UpstreamBody::new(body, conn, exchange, idle_timeout, timer);
                Response::from_parts(parts, ProxyBody::Upstream(body))
            }
        }
    }

    /// The same for a body read inline (see [`crate::pool::h1`]).
    pub fn inline(
        body: H1Body,
        exchange: Exchange,
        idle_timeout: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> UpstreamBody {
        UpstreamBody::from_source(Source::Inline(body), exchange, idle_timeout, timer)
    }

    fn from_source(
        source: Source,
        exchange: Exchange,
        idle_timeout: Duration,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> UpstreamBody {
        let mut this = UpstreamBody {
            source,
            idle_timeout,
            timer,
            armed: false,
            exchange: Some(exchange),
            started: false,
            held: None,
        };
        if this.is_end_stream() {
            this.finish();
        }
        this
    }

    /// The body ended: give the connection back if it can be reused, and
    /// let the exchange know (a gRPC answer's status may be all it lacks).
    fn finish(&mut self) {
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.body_ended(None);
        }
        let conn = match &mut self.source {
            Source::Hyper { conn, .. } => conn.take().map(Conn::Hyper),
            Source::Inline(body) => body.take_reusable().map(Conn::Inline),
        };
        if let (Some(conn), Some(exchange)) = (conn, self.exchange.as_ref()) {
            exchange.backend().release(conn, exchange.started());
        }
        self.exchange = None;
    }

    /// The body broke: its connection is closed, never reused.
    fn drop_conn(&mut self) {
        match &mut self.source {
            Source::Hyper { conn, .. } => *conn = None,
            Source::Inline(body) => body.abandon(),
        }
    }

    /// The body broke with `error`. If some of it went out already, the
    /// error waits one poll: hyper's server drops what it has buffered
    /// when a body fails, and the response head and the data before the
    /// break should reach the client, which then sees a 200 cut short (as
    /// from nginx) rather than a connection closed with no answer.
    fn fail(&mut self, error: BoxError, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.started {
            return Poll::Ready(Some(Err(error)));
        }
        self.held = Some(error);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.source {
            Source::Hyper { body, .. } => {
                Pin::new(body).poll_frame(cx).map(|frame| frame.map(|result| result.map_err(BodyError::Hyper)))
            }
            Source::Inline(body) => {
                body.poll_frame(cx).map(|frame| frame.map(|result| result.map_err(BodyError::Inline)))
            }
        }
    }
}

/// The backend went silent mid-body for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent no response body data for {0:?}")]
pub struct UpstreamBodyTimeout(pub Duration);

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(error) = this.held.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let polled = this.poll_source(cx);
        if polled.is_pending() {
            let timeout = this.idle_timeout;
            if !this.armed {
                this.armed = true;
                this.timer.as_mut().reset(tokio::time::Instant::now() + timeout);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                this.drop_conn();
                if let Some(mut exchange) = this.exchange.take() {
                    exchange.failed(UpstreamFailure::Timeout);
                }
                return Poll::Ready(Some(Err(Box::new(UpstreamBodyTimeout(timeout)))));
            }
            return Poll::Pending;
        }
        if this.armed {
            this.timer.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
        }
        match polled {
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // A broken body leaves the connection unusable: drop it, and
                // count the exchange as the backend's failure — unless it
                // broke because the client's request body did.
                this.drop_conn();
                let mut exchange = this.exchange.take();
                let error: BoxError = match e {
                    BodyError::Hyper(e) => {
                        if let Some(exchange) = exchange.as_mut() {
                            if RequestBodyError::find(&e).is_some() {
                                exchange.client_failed();
                            } else {
                                exchange.failed(UpstreamFailure::of_hyper(&e));
                            }
                        }
                        Box::new(e)
                    }
                    BodyError::Inline(e) => {
                        if let Some(exchange) = exchange.as_mut() {
                            exchange.failed(e.failure());
                        }
                        Box::new(e)
                    }
                };
                this.fail(error, cx)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.started = true;
                if let (Some(data), Some(exchange)) = (frame.data_ref(), this.exchange.as_mut()) {
                    exchange.wrote(data.len());
                }
                // Trailers are a body's last frame, whatever `is_end_stream`
                // says yet, and hyper's server polls no further after them.
                if let (Some(trailers), Some(exchange)) = (frame.trailers_ref(), this.exchange.as_mut()) {
                    exchange.body_ended(Some(trailers));
                }
                if frame.is_trailers() || this.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Hyper { body, .. } => body.is_end_stream(),
            Source::Inline(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Hyper { body, .. } => body.size_hint(),
            Source::Inline(body) => body.size_hint(),
        }
    }
}
