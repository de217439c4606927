//! A client's request body on its way to a backend.
//!
//! [`RequestBody`] enforces `body_read_timeout` (a client that stops sending
//! mid-body — a slow POST — must not hold a backend connection forever) and
//! marks its errors as the client's, so a client that hangs up or stalls
//! mid-upload is never counted as a backend failure. It sits below the
//! upstream clients, which carry it, and imports nothing of the crate.
//!
//! For mirroring it can also copy the body as it streams through (a
//! [`BodyTap`], bounded, handed over when the body ends), and carry a whole
//! copy to a shadow backend ([`RequestBody::full`]). For the access log it
//! counts the body bytes read from the client ([`RequestBody::count_into`]):
//! the decoded data, so a chunked body counts the same as one with a
//! `Content-Length`, and only what was read, so a body the backend never
//! asked for counts nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
    /// A copy being taken for a mirror, or a copy being sent to one;
    /// boxed, as it is rare.
    extra: Option<Box<Extra>>,
    /// Where the data bytes read are added up, for a logged request.
    read: Option<Arc<AtomicU64>>,
}

/// What a body carries besides the client's stream.
enum Extra {
    /// Copying the client's body for a mirror.
    Tap(BodyTap),
    /// A mirror's copy, sent whole.
    Full(Option<Bytes>),
}

impl std::fmt::Debug for Extra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Extra::Tap(tap) => write!(f, "Tap({} bytes)", tap.copy.len()),
            Extra::Full(b) => write!(f, "Full({:?} bytes)", b.as_ref().map(Bytes::len)),
        }
    }
}

/// A copy of a request body up to `limit` bytes, handed to `done` when the
/// body ends: `Some(copy)`, or `None` when the body outgrew the limit. A
/// body that fails or is dropped half-way hands nothing over.
pub struct BodyTap {
    copy: Vec<u8>,
    limit: usize,
    done: Option<Box<dyn FnOnce(Option<Bytes>) + Send + Sync>>,
}

impl BodyTap {
    /// A tap copying up to `limit` bytes for `done`.
    pub fn new(limit: usize, done: Box<dyn FnOnce(Option<Bytes>) + Send + Sync>) -> BodyTap {
        BodyTap { copy: Vec::new(), limit, done: Some(done) }
    }

    fn data(&mut self, data: &[u8]) {
        if self.done.is_none() {
            return;
        }
        if self.copy.len() + data.len() > self.limit {
            self.copy = Vec::new();
            if let Some(done) = self.done.take() {
                done(None);
            }
            return;
        }
        self.copy.extend_from_slice(data);
    }

    fn end(&mut self) {
        if let Some(done) = self.done.take() {
            done(Some(Bytes::from(std::mem::take(&mut self.copy))));
        }
    }
}

impl RequestBody {
    /// Wrap `inner`, allowing `timeout` of silence between its frames;
    /// each timeout is counted in `timed_out`.
    pub fn new(inner: Incoming, timeout: Duration, timed_out: &IntCounter) -> RequestBody {
        let timed_out = (!inner.is_end_stream()).then(|| timed_out.clone());
        RequestBody { inner: Some(inner), timeout, timer: None, timed_out, extra: None, read: None }
    }

    /// A whole body known in advance: a mirror's copy.
    pub fn full(bytes: Bytes) -> RequestBody {
        let extra = (!bytes.is_empty()).then(|| Box::new(Extra::Full(Some(bytes))));
        RequestBody { inner: None, timeout: Duration::ZERO, timer: None, timed_out: None, extra, read: None }
    }

    /// Copy the body, as it streams through, for `tap`.
    pub fn tap(&mut self, tap: BodyTap) {
        self.extra = Some(Box::new(Extra::Tap(tap)));
    }

    /// Add the data bytes read from the client to `read` as they pass.
    pub fn count_into(&mut self, read: Arc<AtomicU64>) {
        self.read = Some(read);
    }

    /// No body: for a body-less request sent a second time, whose first
    /// (already ended) body went with the first attempt.
    pub fn empty() -> RequestBody {
        RequestBody { inner: None, timeout: Duration::ZERO, timer: None, timed_out: None, extra: None, read: None }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(match this.extra.as_deref_mut() {
                Some(Extra::Full(bytes)) => bytes.take().map(|b| Ok(Frame::data(b))),
                _ => None,
            });
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + this.timeout);
                }
                if let (Some(read), Some(data)) = (&this.read, frame.data_ref()) {
                    read.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if let Some(Extra::Tap(tap)) = this.extra.as_deref_mut() {
                    if let Some(data) = frame.data_ref() {
                        tap.data(data);
                    }
                    if inner.is_end_stream() {
                        tap.end();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => {
                if let Some(Extra::Tap(tap)) = this.extra.as_deref_mut() {
                    tap.end();
                }
                Poll::Ready(None)
            }
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
        match (&self.inner, self.extra.as_deref()) {
            (Some(inner), _) => inner.is_end_stream(),
            (None, Some(Extra::Full(bytes))) => bytes.is_none(),
            (None, _) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, self.extra.as_deref()) {
            (Some(inner), _) => inner.size_hint(),
            (None, Some(Extra::Full(bytes))) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            (None, _) => SizeHint::with_exact(0),
        }
    }
}
