//! A client's request body on its way to a backend.
//!
//! [`RequestBody`] enforces `body_read_timeout` (a client that stops sending
//! mid-body — a slow POST — must not hold a backend connection forever) and
//! marks its errors as the client's, so a client that hangs up or stalls
//! mid-upload is never counted as a backend failure. It sits below the
//! upstream clients, which carry it, and imports nothing of the crate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::Sleep;

/// A request body failed on the client's side.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// The client sent nothing for `body_read_timeout`.
    #[error("the client sent no request body data for {0:?}")]
    Timeout(Duration),
    /// The client's connection failed mid-body.
    #[error("reading the request body from the client failed: {0}")]
    Client(hyper::Error),
}

impl RequestBodyError {
    /// Find a request-body error in `err`'s chain of causes: such a failure
    /// is the client's, whatever the upstream exchange reports.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a RequestBodyError> {
        let mut cause: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cause {
            if let Some(found) = e.downcast_ref::<RequestBodyError>() {
                return Some(found);
            }
            cause = e.source();
        }
        None
    }
}

/// A client's request body, with a deadline on each wait for data.
#[derive(Debug)]
pub struct RequestBody {
    /// `None` for the empty body of a request sent again (see
    /// [`RequestBody::empty`]).
    inner: Option<Incoming>,
    timeout: Duration,
    /// Armed on the first wait, reset whenever data arrives; bodies that
    /// arrive whole never allocate it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Where the timeout is counted when it fires; `None` for a body that
    /// has ended already and cannot wait (so a body-less request clones no
    /// counter).
    timed_out: Option<IntCounter>,
}

impl RequestBody {
    /// Wrap `inner`, allowing `timeout` of silence between its frames;
    /// each timeout is counted in `timed_out`.
    pub fn new(inner: Incoming, timeout: Duration, timed_out: &IntCounter) -> RequestBody {
        let timed_out = (!inner.is_end_stream()).then(|| timed_out.clone());
        RequestBody { inner: Some(inner), timeout, timer: None, timed_out }
    }

    /// No body: for a body-less request sent a second time, whose first
    /// (already ended) body went with the first attempt.
    pub fn empty() -> RequestBody {
        RequestBody { inner: None, timeout: Duration::ZERO, timer: None, timed_out: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = this.timeout;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        if let Some(counter) = this.timed_out.take() {
                            counter.inc();
                        }
                        Poll::Ready(Some(Err(RequestBodyError::Timeout(timeout))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}
