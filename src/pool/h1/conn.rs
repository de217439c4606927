//! An inline HTTP/1.1 connection: writing a body-less request's head and
//! reading the response head, in the request's own task, and the switch a
//! drain uses to cut it.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use bytes::BytesMut;
use http::header::{self};
use http::{Method, Request};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::error::H1Error;
use super::head::{parse_head, H1Head, Parsed, MAX_HEAD_BYTES};

/// Room made in the read buffer before each read.
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// Raised to close a backend's connections mid-exchange: a drain that ran
/// out of time. Shared between a connection and its backend.
#[derive(Debug, Default)]
pub struct CutSwitch {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl CutSwitch {
    /// Fail the exchange on this connection, waking it if it waits.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the connection was cut; if not, `cx` is woken when it is.
    fn poll_cut(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.cut.load(Ordering::Acquire)
    }
}

/// An idle or busy HTTP/1.1 connection to a plain-TCP backend, with the
/// buffers it reuses from exchange to exchange.
#[derive(Debug)]
pub struct H1Conn {
    pub(super) stream: TcpStream,
    /// Bytes read from the backend and not yet passed on.
    pub(super) read: BytesMut,
    /// The request head being written.
    pub(super) write: Vec<u8>,
    pub(super) cut: Arc<CutSwitch>,
}

impl H1Conn {
    /// A connection over `stream`, cut by `cut`.
    pub fn new(stream: TcpStream, cut: Arc<CutSwitch>) -> H1Conn {
        H1Conn { stream, read: BytesMut::new(), write: Vec::new(), cut }
    }

    /// Drop the buffers while the connection sits in its backend's idle
    /// list: a burst can leave hundreds of upstream connections idle,
    /// each holding a read buffer of [`READ_CHUNK`] or more. The next
    /// exchange allocates afresh. Bytes read and not passed on (none, on a
    /// connection whose response was read to its end) keep theirs.
    pub fn release_idle_buffers(&mut self) {
        if self.read.is_empty() {
            self.read = BytesMut::new();
        }
        self.write = Vec::new();
    }

    /// The bytes its buffers hold room for, for tests of their release.
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.read.capacity() + self.write.capacity()
    }

    /// Room in both buffers, as an exchange leaves them, for tests.
    #[cfg(test)]
    pub(crate) fn with_buffers(mut self) -> H1Conn {
        self.read.reserve(READ_CHUNK);
        self.write.reserve(256);
        self
    }

    /// The socket, for handing a new connection, which has nothing
    /// buffered, to hyper's client.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Whether an idle connection can carry a request: the backend has not
    /// closed it nor sent anything unasked. Costs a system call only if
    /// the socket turned readable while idle.
    pub fn is_usable(&self) -> bool {
        if self.cut.cut.load(Ordering::Acquire) {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Write `request`'s head (it has no body) and read the answer's head,
    /// skipping 1xx interim responses.
    pub async fn exchange<B>(&mut self, request: &Request<B>) -> Result<H1Head, H1Error> {
        encode_head(request, &mut self.write);
        self.send().await?;
        let is_head = request.method() == Method::HEAD;
        let mut answered = false;
        loop {
            if !self.read.is_empty() {
                answered = true;
                match parse_head(&mut self.read, is_head)? {
                    Parsed::Final(head) => return Ok(head),
                    Parsed::Interim => continue,
                    Parsed::Partial if self.read.len() >= MAX_HEAD_BYTES => {
                        return Err(H1Error::Malformed("response head too large"))
                    }
                    Parsed::Partial => {}
                }
            }
            self.read.reserve(READ_CHUNK);
            let read = std::future::poll_fn(|cx| poll_read(&mut self.stream, &mut self.read, &self.cut, cx)).await;
            match read {
                Ok(0) if answered => return Err(H1Error::Broken(None)),
                Ok(0) => return Err(H1Error::ClosedUnanswered(None)),
                Ok(_) => {}
                Err(ReadError::Cut) => return Err(H1Error::Cut),
                Err(ReadError::Io(e)) if answered => return Err(H1Error::Broken(Some(e))),
                Err(ReadError::Io(e)) if closed_by_peer(&e) => return Err(H1Error::ClosedUnanswered(Some(e))),
                Err(ReadError::Io(e)) => return Err(H1Error::Broken(Some(e))),
            }
        }
    }

    /// Write the encoded head. A failure before the first byte went out
    /// means the request never reached the backend.
    async fn send(&mut self) -> Result<(), H1Error> {
        let mut sent = 0;
        while sent < self.write.len() {
            let written =
                std::future::poll_fn(|cx| match Pin::new(&mut self.stream).poll_write(cx, &self.write[sent..]) {
                    Poll::Pending if self.cut.poll_cut(cx) => Poll::Ready(Err(None)),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(result) => Poll::Ready(result.map_err(Some)),
                })
                .await;
            match written {
                Ok(0) => return Err(H1Error::Broken(Some(io::ErrorKind::WriteZero.into()))),
                Ok(n) => sent += n,
                Err(None) => return Err(H1Error::Cut),
                Err(Some(e)) if sent == 0 => return Err(H1Error::NotSent(e)),
                Err(Some(e)) => return Err(H1Error::Broken(Some(e))),
            }
        }
        Ok(())
    }
}

/// Why a read from the backend failed.
pub(super) enum ReadError {
    Io(io::Error),
    Cut,
}

/// Read what the backend has sent into `read` (which has room).
pub(super) fn poll_read(
    stream: &mut TcpStream,
    read: &mut BytesMut,
    cut: &CutSwitch,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, ReadError>> {
    // tokio's `read_buf` fills the buffer's spare capacity without zeroing
    // it first; its future is made for one poll and dropped.
    match pin!(stream.read_buf(read)).poll(cx) {
        Poll::Ready(result) => Poll::Ready(result.map_err(ReadError::Io)),
        Poll::Pending if cut.poll_cut(cx) => Poll::Ready(Err(ReadError::Cut)),
        Poll::Pending => Poll::Pending,
    }
}

/// Whether a read error means the backend closed the connection.
pub(super) fn closed_by_peer(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

/// `request`'s head as HTTP/1.1 bytes, into `out`. The request was
/// rewritten for the backend already: origin-form target, `Host` set,
/// hop-by-hop headers gone.
pub fn encode_head<B>(request: &Request<B>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.uri().path_and_query().map_or("/", |pq| pq.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method whose requests usually carry a body, sent without one: say
    // so, as hyper's client does, rather than leave the backend to decide.
    let may_carry_body = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE);
    if may_carry_body && !request.headers().contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
