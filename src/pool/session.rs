//! One upstream session: a checked-out connection that sends one request
//! and says, in the caller's terms, how it failed.
//!
//! Three clients carry requests: the inline HTTP/1.1 client ([`super::h1`])
//! for body-less requests to plain backends, hyper's HTTP/1.1 client for
//! the rest, and hyper's HTTP/2 client. Each fails in its own vocabulary (an
//! [`super::h1::H1Error`], a `TrySendError` that may hand the request back, an
//! `h2::Error` under a `hyper::Error`). A [`Session`] hides which one is in
//! use, as Pingora's `HttpSession::{H1, H2}` does, and classifies a failure
//! where it is detected into the one thing the caller's retry policy needs
//! to know ([`SendFailure`]): nothing was sent; the backend says it
//! processed nothing; the connection closed before any answer; the backend
//! may have acted on the request; the deadline passed; or the client's own
//! body failed.
//!
//! A session also keeps the request in the caller's hands: the inline
//! client only borrows it, and when hyper's client consumes it, the session
//! puts it back when hyper returns it unsent, or puts back a copy of its
//! head that it kept for a failure the caller said it would resend
//! ([`WouldResend`]). The copy is taken only where a resend is plausible
//! (see [`IDLE_BEFORE_COPY`]), so requests in steady traffic never pay for
//! it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::backend::Reuse;
use super::conn::{Conn, UpstreamConn};
use super::failure::UpstreamFailure;
use super::h1::{parse_lengths, H1Conn, H1Error, H1Head};
use crate::request_body::{RequestBody, RequestBodyError};

/// A checked-out connection to a backend, ready for one request.
#[derive(Debug)]
pub struct Session {
    conn: Conn,
    reuse: Reuse,
}

/// A backend's answer (its head; the body follows on the connection).
#[derive(Debug)]
pub enum Answer {
    /// Read by the inline client, which the body keeps reading.
    Inline(H1Head, Box<H1Conn>),
    /// Through hyper's client, on this connection.
    Hyper(Response<Incoming>, UpstreamConn),
}

impl Answer {
    /// The response, if it is hyper's `101 Switching Protocols` (an
    /// upgrade the backend accepted); else the answer back.
    // The answer is moved either way: the `Err` is no larger than `self`.
    #[allow(clippy::result_large_err)]
    pub fn into_switching(self) -> Result<Response<Incoming>, Answer> {
        match self {
            Answer::Hyper(response, _) if response.status() == StatusCode::SWITCHING_PROTOCOLS => Ok(response),
            answer => Err(answer),
        }
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Inline(head, _) => head.response.status(),
            Answer::Hyper(response, _) => response.status(),
        }
    }

    /// The answer's header fields.
    pub fn headers(&self) -> &http::HeaderMap {
        match self {
            Answer::Inline(head, _) => head.response.headers(),
            Answer::Hyper(response, _) => response.headers(),
        }
    }
}

/// Why a request got no answer, in the terms of a retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// No byte of the request reached the backend: the connection was
    /// found closed as the request was written.
    NotSent,
    /// The backend says it processed none of the request (HTTP/2: the
    /// stream refused, or left out by a graceful `GOAWAY`, RFC 9113 §8.7).
    Unprocessed,
    /// The request was written and the connection closed or reset before
    /// any byte of the answer came. The backend may have processed it, so
    /// only a request that may reach it twice can go again.
    ClosedUnanswered,
    /// The exchange failed after the backend may have acted on the request:
    /// a broken or malformed answer, a reset stream.
    MaybeProcessed(UpstreamFailure),
    /// No answer before the request's deadline.
    TimedOut,
    /// The client's request body failed: not the backend's fault.
    Client(ClientFailure),
}

impl SendFailure {
    /// The kind the backend's failure is counted as.
    pub fn kind(self) -> UpstreamFailure {
        match self {
            SendFailure::NotSent | SendFailure::Unprocessed | SendFailure::ClosedUnanswered => UpstreamFailure::Reset,
            SendFailure::MaybeProcessed(kind) => kind,
            SendFailure::TimedOut => UpstreamFailure::Timeout,
            // Never counted against the backend; `Reset` is what the
            // proxy would say if asked.
            SendFailure::Client(_) => UpstreamFailure::Reset,
        }
    }
}

/// How a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// The client sent nothing for `body_read_timeout`.
    Stalled,
    /// The client's connection broke off mid-body.
    Incomplete,
}

/// A failed send: why, and whether the request is back in the caller's
/// hands, whole, so that it can go again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendError {
    /// What went wrong.
    pub failure: SendFailure,
    /// Whether the request (or a copy of its head, for a body-less one) is
    /// in place to be sent again.
    pub resendable: bool,
}

/// The failures after which the caller would send the request again, so
/// that a client that consumes the request keeps what a resend needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WouldResend {
    /// After [`SendFailure::Unprocessed`] (a body-less request).
    pub unprocessed: bool,
    /// After [`SendFailure::ClosedUnanswered`] (a body-less request with
    /// an idempotent method).
    pub closed_unanswered: bool,
}

/// A pooled connection idle at least this long may have been closed by the
/// backend as idle just as a request is written on it, so a request sent on
/// it through hyper's client keeps a copy of its head to send again.
/// Backends' keep-alive timeouts are a second or more (gunicorn 2 s,
/// Node.js and Apache 5 s), so this covers them with room to spare, while a
/// connection in steady use (a request every half second or more often)
/// never pays for the copy.
pub const IDLE_BEFORE_COPY: Duration = Duration::from_millis(500);

impl Session {
    /// A session over `conn`, which came to the request as `reuse` says.
    pub fn new(conn: Conn, reuse: Reuse) -> Session {
        Session { conn, reuse }
    }

    /// Where the connection came from.
    pub fn reuse(&self) -> Reuse {
        self.reuse
    }

    /// Send `request`, begun at `started`, before `timer` fires, and read
    /// the answer's head. On failure, `request` holds what can be sent
    /// again when [`SendError::resendable`] says so. What a resend needs is
    /// decided here, before the future starts, so the future holds only
    /// the client it drives.
    pub fn send<'a>(
        self,
        request: &'a mut Request<RequestBody>,
        would_resend: WouldResend,
        started: Instant,
        timer: &'a mut Pin<Box<Sleep>>,
    ) -> Sent<impl Future<Output = SendResult> + 'a, impl Future<Output = SendResult> + 'a> {
        let Session { conn, reuse } = self;
        let conn = match conn {
            Conn::Inline(conn) => return Sent::Inline { sending: send_inline(conn, request, timer) },
            Conn::Hyper(conn) => conn,
        };
        let h2 = matches!(conn, UpstreamConn::H2(_));
        let keep_copy = if h2 {
            would_resend.unprocessed
        } else {
            would_resend.closed_unanswered
                && match reuse {
                    Reuse::Pooled { last_request } => worth_a_copy(last_request, started),
                    Reuse::New => true,
                    Reuse::Shared => false,
                }
        };
        // Boxed: it is rare, and inline it would grow every request's future.
        let copy = keep_copy.then(|| Box::new(copy_head(request)));
        Sent::Hyper { sending: Box::pin(send_hyper(conn, copy, request, timer)) }
    }
}

/// What a send comes to.
pub type SendResult = Result<Answer, SendError>;

pin_project_lite::pin_project! {
    /// [`Session::send`]'s future: over the inline client or hyper's.
    ///
    /// hyper's is boxed. It is three times the inline client's, and inline
    /// it would set the size of every forwarding future, which the request
    /// allocates (see `proxy::forward`): boxed, the inline path keeps that
    /// allocation small, and a request through hyper allocates a second,
    /// small one instead of one large one.
    #[project = SentProj]
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    #[derive(Debug)]
    pub enum Sent<A, B> {
        /// The inline HTTP/1.1 client.
        Inline { #[pin] sending: A },
        /// hyper's HTTP/1.1 or HTTP/2 client.
        Hyper { sending: Pin<Box<B>> },
    }
}

impl<A: Future<Output = SendResult>, B: Future<Output = SendResult>> Future for Sent<A, B> {
    type Output = SendResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SendResult> {
        match self.project() {
            SentProj::Inline { sending } => sending.poll(cx),
            SentProj::Hyper { sending } => sending.as_mut().poll(cx),
        }
    }
}

/// Exchange a body-less request inline. The client only borrows the
/// request, so it stays whole for any resend.
async fn send_inline(
    mut conn: Box<H1Conn>,
    request: &mut Request<RequestBody>,
    timer: &mut Pin<Box<Sleep>>,
) -> SendResult {
    match before(timer, conn.exchange(request)).await {
        None => Err(SendError { failure: SendFailure::TimedOut, resendable: true }),
        Some(Ok(head)) => Ok(Answer::Inline(head, conn)),
        Some(Err(err)) => {
            tracing::debug!(error = %err, "upstream request failed");
            let failure = match err {
                H1Error::NotSent(_) => SendFailure::NotSent,
                H1Error::ClosedUnanswered(_) => SendFailure::ClosedUnanswered,
                err => SendFailure::MaybeProcessed(err.failure()),
            };
            Err(SendError { failure, resendable: true })
        }
    }
}

/// Send a request through hyper's client, which consumes it: it comes back
/// into `request` when hyper returns it unsent, or as `copy` (a copy of its
/// head) after a failure the caller would resend.
async fn send_hyper(
    mut conn: UpstreamConn,
    copy: Option<Box<Request<RequestBody>>>,
    request: &mut Request<RequestBody>,
    timer: &mut Pin<Box<Sleep>>,
) -> SendResult {
    let sent = std::mem::replace(request, Request::new(RequestBody::empty()));
    let h2 = matches!(conn, UpstreamConn::H2(_));
    let err = match before(timer, conn.try_send_request(sent)).await {
        None => return Err(SendError { failure: SendFailure::TimedOut, resendable: false }),
        Some(Ok(mut response)) => {
            if one_content_length(response.headers_mut()) {
                return Ok(Answer::Hyper(response, conn));
            }
            // Dropping the connection closes it: its framing is lost.
            tracing::debug!("the backend sent conflicting content-length values");
            let failure = SendFailure::MaybeProcessed(UpstreamFailure::Protocol);
            return Err(SendError { failure, resendable: false });
        }
        Some(Err(err)) => err,
    };
    let mut err = err;
    if let Some(unsent) = err.take_message() {
        *request = unsent;
        return Err(SendError { failure: SendFailure::NotSent, resendable: true });
    }
    let err = err.into_error();
    let failure = if let Some(cause) = RequestBodyError::find(&err) {
        tracing::debug!(error = %cause, "request body failed");
        SendFailure::Client(match cause {
            RequestBodyError::Timeout(_) => ClientFailure::Stalled,
            RequestBodyError::Client(_) => ClientFailure::Incomplete,
        })
    } else if h2 && unprocessed(&err) {
        SendFailure::Unprocessed
    } else if !h2 && closed_unanswered(&err) {
        SendFailure::ClosedUnanswered
    } else {
        SendFailure::MaybeProcessed(UpstreamFailure::of_hyper(&err))
    };
    tracing::debug!(error = %err, ?failure, "upstream request failed");
    let resendable = match (failure, copy) {
        (SendFailure::Unprocessed | SendFailure::ClosedUnanswered, Some(copy)) => {
            *request = *copy;
            true
        }
        _ => false,
    };
    Err(SendError { failure, resendable })
}

/// Make a response's `Content-Length` one plain value, as the inline client
/// does: repeated fields or a list of identical values become one field
/// (RFC 9110 §8.6); differing values (which hyper takes as the first) are
/// `false`, a malformed answer.
fn one_content_length(headers: &mut HeaderMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (first, more) = (values.next(), values.next().is_some());
    let Some(first) = first else { return true };
    if !more && first.as_bytes().iter().all(u8::is_ascii_digit) {
        return true;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter().map(|v| parse_lengths(v.as_bytes()));
    let Some(Some(length)) = lengths.next() else { return false };
    if !lengths.all(|other| other == Some(length)) {
        return false;
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    true
}

/// Whether a request begun at `started` on a pooled connection whose last
/// request began at `last_request` keeps a copy of its head (see
/// [`IDLE_BEFORE_COPY`]).
fn worth_a_copy(last_request: Instant, started: Instant) -> bool {
    started.saturating_duration_since(last_request) >= IDLE_BEFORE_COPY
}

/// The head of a body-less request, to send it again.
fn copy_head(request: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether a request written on an HTTP/1.1 connection failed because the
/// connection closed before any of the answer came: the end of the stream,
/// or a reset (a backend that closes with the request unread in its buffer
/// resets).
fn closed_unanswered(err: &hyper::Error) -> bool {
    use std::error::Error as _;
    if err.is_incomplete_message() {
        return true;
    }
    let io = err.source().and_then(|cause| cause.downcast_ref::<std::io::Error>());
    matches!(
        io.map(std::io::Error::kind),
        Some(
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        )
    )
}

/// Whether an HTTP/2 backend says it did not process the request, so that
/// it may go again whatever its method (RFC 9113 §8.7): it refused the
/// stream (`RST_STREAM` with `REFUSED_STREAM`, as a server does to streams
/// over its concurrency limit that the client opened before it learned the
/// limit), or its `GOAWAY` left the stream out (a server shutting down tells
/// which streams it will still answer; h2 fails only the others with the
/// `GOAWAY`'s own error). Only a `GOAWAY` without error: one with an error
/// code ends every stream still open with that error, answered ones too.
fn unprocessed(err: &hyper::Error) -> bool {
    use std::error::Error as _;
    let Some(h2) = err.source().and_then(|cause| cause.downcast_ref::<h2::Error>()) else {
        return false;
    };
    let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
    let left_out = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
    h2.is_remote() && (refused || left_out)
}

/// The output of `work`, or `None` if `timer` fires first.
pub fn before<F: Future>(timer: &mut Pin<Box<Sleep>>, work: F) -> Before<'_, F> {
    Before { timer, work }
}

pin_project_lite::pin_project! {
    /// [`before`]'s future: a plain struct rather than an `async fn`, which
    /// would hold `work` twice (as its argument and as the pinned local).
    #[derive(Debug)]
    pub struct Before<'t, F> {
        timer: &'t mut Pin<Box<Sleep>>,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for Before<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.work.poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => this.timer.as_mut().poll(cx).map(|()| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_connection_idle_long_enough_makes_a_request_keep_a_copy() {
        let last = Instant::now();
        assert!(!worth_a_copy(last, last + Duration::from_millis(20)), "in steady use");
        assert!(!worth_a_copy(last, last + Duration::from_millis(100)), "10 requests a second");
        assert!(worth_a_copy(last, last + IDLE_BEFORE_COPY));
        assert!(worth_a_copy(last, last + Duration::from_secs(5)), "a Node.js keep-alive timeout");
        // Not a panic if the clocks disagree.
        assert!(!worth_a_copy(last + IDLE_BEFORE_COPY, last));
    }
}
