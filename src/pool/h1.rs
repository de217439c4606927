//! The HTTP/1.1 client for plain-TCP backends, run in the request's own
//! task.
//!
//! hyper's client drives each connection from a task of its own: a request
//! travels there through a channel, its answer comes back through another,
//! and both are copied on the way. For the request that almost every
//! proxied request is — a head with no body — that machinery costs more
//! than the rest of the request path. So such a request is written to the
//! backend by its own future, which then parses
//! the response head with `httparse` and streams the response body itself,
//! straight from the connection's read buffer. Everything else (request
//! bodies, upgrades, TLS and HTTP/2 backends) goes through hyper's
//! client, on connections of its own: a plain backend keeps one idle list
//! of each kind (see [`crate::pool::Backend::checkout`]), so a POST never
//! turns an inline connection into a hyper one.
//!
//! The response is read as RFC 9112 §6.3 frames it: no body after `HEAD`,
//! 1xx, 204 and 304; `chunked` (extensions ignored, trailers passed on);
//! `Content-Length`; else until the backend closes. A connection goes back
//! to the pool only if the response ended cleanly, kept alive, and left no
//! stray bytes behind. Nobody reads an idle connection, so a backend that
//! closed it is noticed when it is next checked out: tokio has then seen
//! it readable, and a one-byte read tells end-of-stream from junk
//! ([`H1Conn::is_usable`]) — a connection that saw no event costs nothing
//! to check.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use super::failure::UpstreamFailure;

/// Most header fields in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The largest response head, 1xx heads included, and the largest trailer
/// section: what hyper's client allows for a head.
const MAX_HEAD_BYTES: usize = 400 * 1024;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Room made for a body's reads when more of it is known to be coming.
const BODY_READ_CHUNK: usize = 64 * 1024;

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

/// Why an exchange on an [`H1Conn`] failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// The request could not be written: the connection was already
    /// closed, and nothing of the request reached the backend.
    #[error("the connection to the backend was closed before the request was sent: {0}")]
    NotSent(#[source] io::Error),
    /// The request was written but the connection closed (or reset) before
    /// any of the answer came.
    #[error("the backend closed the connection without answering")]
    ClosedUnanswered(#[source] Option<io::Error>),
    /// The connection closed or failed part-way through the answer.
    #[error("the connection to the backend broke mid-response")]
    Broken(#[source] Option<io::Error>),
    /// The backend's answer is not valid HTTP/1.1.
    #[error("the backend sent a malformed response: {0}")]
    Malformed(&'static str),
    /// The backend's drain timed out and closed its connections.
    #[error("the backend's connections were closed when its drain timed out")]
    Cut,
}

impl H1Error {
    /// Whether the failure is the backend speaking bad HTTP (rather than
    /// its connection failing).
    pub fn is_protocol(&self) -> bool {
        matches!(self, H1Error::Malformed(_))
    }

    /// The kind of upstream failure it is.
    pub fn failure(&self) -> UpstreamFailure {
        if self.is_protocol() {
            UpstreamFailure::Protocol
        } else {
            UpstreamFailure::Reset
        }
    }
}

/// An idle or busy HTTP/1.1 connection to a plain-TCP backend, with the
/// buffers it reuses from exchange to exchange.
#[derive(Debug)]
pub struct H1Conn {
    stream: TcpStream,
    /// Bytes read from the backend and not yet passed on.
    read: BytesMut,
    /// The request head being written.
    write: Vec<u8>,
    cut: Arc<CutSwitch>,
}

/// A response head read from a backend, and how its body is framed.
#[derive(Debug)]
pub struct H1Head {
    /// Status, version, and the end-to-end headers: the hop-by-hop ones
    /// are already gone.
    pub response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

/// How the rest of a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, at this point of the coding.
    Chunked(Chunk),
    /// Everything until the backend closes.
    UntilClose,
    /// The body has ended.
    Done,
}

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section, then the end.
    Trailers,
}

impl H1Conn {
    /// A connection over `stream`, cut by `cut`.
    pub fn new(stream: TcpStream, cut: Arc<CutSwitch>) -> H1Conn {
        H1Conn { stream, read: BytesMut::new(), write: Vec::new(), cut }
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
enum ReadError {
    Io(io::Error),
    Cut,
}

/// Read what the backend has sent into `read` (which has room).
fn poll_read(
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
fn closed_by_peer(e: &io::Error) -> bool {
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

/// What the front of the read buffer holds.
enum Parsed {
    /// A final response head, now taken out of the buffer.
    Final(H1Head),
    /// A 1xx interim head, now dropped from the buffer.
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Where one header field sits in the head: name and value as byte ranges.
#[derive(Clone, Copy, Default)]
struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
    /// What the name is, as far as framing and forwarding care.
    kind: FieldKind,
}

/// The header fields a response head's parse treats specially.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum FieldKind {
    /// Passed on as it is.
    #[default]
    Other,
    ContentLength,
    TransferEncoding,
    Connection,
    /// Any other hop-by-hop field (the fixed list in [`crate::headers`]),
    /// never passed on.
    HopByHop,
}

impl FieldKind {
    /// Sorted by length first: most names are ruled out by it alone. The
    /// names are spelled out rather than looked up in `crate::headers`'
    /// list, so the compiler turns the match into a few comparisons per
    /// field; a test keeps the two lists the same.
    fn of(name: &[u8]) -> FieldKind {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => FieldKind::ContentLength,
            17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
            10 if is(b"connection") => FieldKind::Connection,
            10 if is(b"keep-alive") => FieldKind::HopByHop,
            2 if is(b"te") => FieldKind::HopByHop,
            7 if is(b"upgrade") => FieldKind::HopByHop,
            16 if is(b"proxy-connection") => FieldKind::HopByHop,
            18 if is(b"proxy-authenticate") => FieldKind::HopByHop,
            19 if is(b"proxy-authorization") => FieldKind::HopByHop,
            _ => FieldKind::Other,
        }
    }
}

/// Header fields noted on the stack; a head with more notes them on the heap.
const FIELDS_ON_STACK: usize = 32;

/// Parse the response head at the front of `read`.
fn parse_head(read: &mut BytesMut, is_head: bool) -> Result<Parsed, H1Error> {
    // Uninitialised, as hyper does: filling 100 empty fields first would
    // write 3 KiB of stack for every response.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, read, &mut fields);
    let head_len = match parsing {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Malformed("too many header fields")),
        Err(_) => return Err(H1Error::Malformed("invalid response head")),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(H1Error::Malformed("invalid status code"))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Only requests that asked for an upgrade may get one, and
            // those go through hyper.
            return Err(H1Error::Malformed("101 to a request that asked for no upgrade"));
        }
        read.advance(head_len);
        return Ok(Parsed::Interim);
    }
    let http11 = parsed.version == Some(1);
    let base = read.as_ptr() as usize;
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u32, s.len() as u32);
    let count = parsed.headers.len();
    let (mut on_stack, mut on_heap) = ([FieldAt::default(); FIELDS_ON_STACK], Vec::new());
    let spans = if count <= FIELDS_ON_STACK {
        &mut on_stack[..count]
    } else {
        on_heap.resize(count, FieldAt::default());
        &mut on_heap[..]
    };
    let (mut length, mut chunked, mut coded, mut close, mut keep_alive) = (None, false, false, false, false);
    // Whether `Connection` names fields beyond the fixed hop-by-hop ones:
    // then it stays in until `strip_hop_by_hop` has read it.
    let mut names_others = false;
    let (mut length_fields, mut repeated_length) = (0, false);
    for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
        let kind = FieldKind::of(field.name.as_bytes());
        *span = FieldAt { name: at(field.name.as_bytes()), value: at(field.value), kind };
        match kind {
            FieldKind::Other | FieldKind::HopByHop => {}
            FieldKind::ContentLength => {
                let value = parse_lengths(field.value).ok_or(H1Error::Malformed("invalid content-length"))?;
                if length.is_some_and(|seen| seen != value) {
                    return Err(H1Error::Malformed("conflicting content-length"));
                }
                length = Some(value);
                // Repeated, or a list: forwarded as one plain value.
                repeated_length |= length_fields > 0 || field.value.contains(&b',');
                length_fields += 1;
            }
            FieldKind::TransferEncoding => {
                coded = true;
                // Only the last coding counts: is the body chunked in the end?
                let last = field.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            FieldKind::Connection => {
                for token in field.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if !token.is_empty() {
                        names_others = true;
                    }
                }
            }
        }
    }
    let reason = parsed.reason.filter(|r| !r.is_empty() && Some(*r) != status.canonical_reason());
    let reason = reason.map(|r| Bytes::copy_from_slice(r.as_bytes()));
    let head = read.split_to(head_len).freeze();

    // Hop-by-hop fields are left out here rather than inserted and then
    // stripped: nearly every response has `Connection: keep-alive`, and
    // `Transfer-Encoding` is the proxy's own business on each side.
    let mut headers = HeaderMap::with_capacity(count);
    for span in spans.iter() {
        let keep = match span.kind {
            FieldKind::Other => true,
            // The coding frames the body: a length beside it is wrong, and
            // forwarded it would cut the body short (RFC 9112 §6.3).
            FieldKind::ContentLength if coded => false,
            // Identical values (RFC 9110 §8.6) go on as one.
            FieldKind::ContentLength if repeated_length => {
                if !headers.contains_key(header::CONTENT_LENGTH) {
                    if let Some(n) = length {
                        headers.append(header::CONTENT_LENGTH, HeaderValue::from(n));
                    }
                }
                false
            }
            FieldKind::ContentLength => true,
            FieldKind::Connection => names_others,
            FieldKind::TransferEncoding | FieldKind::HopByHop => false,
        };
        if !keep {
            continue;
        }
        let name = &head[span.name.0 as usize..(span.name.0 + span.name.1) as usize];
        let name = HeaderName::from_bytes(name).map_err(|_| H1Error::Malformed("invalid header name"))?;
        let value = head.slice(span.value.0 as usize..(span.value.0 + span.value.1) as usize);
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| H1Error::Malformed("invalid header value"))?;
        headers.append(name, value);
    }
    if names_others {
        crate::headers::strip_hop_by_hop(&mut headers);
    }

    // RFC 9112 §6.3, in its order.
    let no_body = is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let (framing, framed_cleanly) = match (no_body, coded, length) {
        (true, _, _) => (Framing::Done, true),
        // Both: the coding wins, and the connection cannot be trusted after.
        (false, true, _) if chunked => (Framing::Chunked(Chunk::Size), length.is_none() && http11),
        (false, true, _) => (Framing::UntilClose, false),
        (false, false, Some(0)) => (Framing::Done, true),
        (false, false, Some(n)) => (Framing::Length(n), true),
        (false, false, None) => (Framing::UntilClose, false),
    };
    let keep_alive = framed_cleanly && if http11 { !close } else { keep_alive && !close };

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    *response.headers_mut() = headers;
    if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
        response.extensions_mut().insert(reason);
    }
    Ok(Parsed::Final(H1Head { response, framing, keep_alive }))
}

/// A `Content-Length` field's value: one length, or a list of identical
/// ones, which RFC 9110 §8.6 allows a recipient to take as that one.
pub(super) fn parse_lengths(value: &[u8]) -> Option<u64> {
    let mut lengths = value.split(|&b| b == b',').map(parse_length);
    let first = lengths.next()??;
    lengths.all(|other| other == Some(first)).then_some(first)
}

/// A `Content-Length` value: digits only, as RFC 9110 §8.6 allows.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// A response body read from an [`H1Conn`], which it owns until the body
/// ends and then gives back (see [`H1Body::take_reusable`]).
#[derive(Debug)]
pub struct H1Body {
    conn: Option<Box<H1Conn>>,
    framing: Framing,
    keep_alive: bool,
}

impl H1Body {
    /// The body that follows `head` on `conn`.
    pub fn new(conn: Box<H1Conn>, head: &H1Head) -> H1Body {
        H1Body { conn: Some(conn), framing: head.framing, keep_alive: head.keep_alive }
    }

    /// Whether the body has ended.
    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    /// How much body is still to come, if known.
    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The connection, once the body has ended, if it can carry another
    /// exchange: kept alive, cleanly framed, nothing left over.
    pub fn take_reusable(&mut self) -> Option<Box<H1Conn>> {
        let conn = self.conn.take()?;
        (self.framing == Framing::Done && self.keep_alive && conn.read.is_empty()).then_some(conn)
    }

    /// Close the connection: the body broke, or nobody will read the rest.
    pub fn abandon(&mut self) {
        self.conn = None;
    }

    /// The body broke with `error`: the connection is closed with it.
    fn fail(&mut self, error: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.abandon();
        Poll::Ready(Some(Err(error)))
    }

    /// The next frame of the body.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            if self.framing == Framing::Done {
                return Poll::Ready(None);
            }
            if !conn.read.is_empty() {
                match next_frame(&mut conn.read, &mut self.framing) {
                    Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                }
                if self.framing == Framing::Done {
                    return Poll::Ready(None);
                }
            }
            let room = match self.framing {
                Framing::Length(n) if n as usize > READ_CHUNK => BODY_READ_CHUNK.min(n as usize),
                Framing::UntilClose => BODY_READ_CHUNK,
                _ => READ_CHUNK,
            };
            if conn.read.len() >= MAX_HEAD_BYTES {
                // Only a chunk-size line or a trailer section can grow the
                // buffer this far without a frame coming out.
                return self.fail(H1Error::Malformed("chunk head or trailers too large"));
            }
            conn.read.reserve(room);
            let read = match poll_read(&mut conn.stream, &mut conn.read, &conn.cut, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(read) => read,
            };
            match read {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail(H1Error::Broken(None)),
                Ok(_) => {}
                Err(ReadError::Io(e)) => return self.fail(H1Error::Broken(Some(e))),
                Err(ReadError::Cut) => return self.fail(H1Error::Cut),
            }
        }
    }
}

/// Decode the next frame from `read`; `None` when more bytes are needed
/// (or the body just ended).
fn next_frame(read: &mut BytesMut, framing: &mut Framing) -> Result<Option<Frame<Bytes>>, H1Error> {
    loop {
        match *framing {
            Framing::Done => return Ok(None),
            Framing::UntilClose => return Ok(Some(Frame::data(read.split().freeze()))),
            Framing::Length(left) => {
                let take = left.min(read.len() as u64);
                let left = left - take;
                *framing = if left == 0 { Framing::Done } else { Framing::Length(left) };
                return Ok(Some(Frame::data(read.split_to(take as usize).freeze())));
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let take = left.min(read.len() as u64);
                let left = left - take;
                *framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                return Ok(Some(Frame::data(read.split_to(take as usize).freeze())));
            }
            Framing::Chunked(Chunk::DataEnd) => {
                if read.len() < 2 {
                    return Ok(None);
                }
                if &read[..2] != b"\r\n" {
                    return Err(H1Error::Malformed("chunk data not followed by CRLF"));
                }
                read.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(line_end) = memchr::memchr(b'\n', read) else {
                    if read.len() > MAX_CHUNK_LINE {
                        return Err(H1Error::Malformed("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let size = parse_chunk_size(&read[..line_end]).ok_or(H1Error::Malformed("invalid chunk-size line"))?;
                read.advance(line_end + 1);
                *framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                if read.is_empty() {
                    return Ok(None);
                }
            }
            Framing::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, fields) = match httparse::parse_headers(read, &mut fields) {
                    Ok(httparse::Status::Complete(parsed)) => parsed,
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(H1Error::Malformed("invalid trailer section")),
                };
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for field in fields.iter() {
                    let name = HeaderName::from_bytes(field.name.as_bytes());
                    let value = HeaderValue::from_bytes(field.value);
                    let (Ok(name), Ok(value)) = (name, value) else {
                        return Err(H1Error::Malformed("invalid trailer field"));
                    };
                    trailers.append(name, value);
                }
                read.advance(len);
                *framing = Framing::Done;
                return Ok((!trailers.is_empty()).then(|| Frame::trailers(trailers)));
            }
        }
    }
}

/// The size on a chunk-size line (without its LF): hex digits, then
/// optional extensions, which are ignored, then CR.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], is_head: bool) -> Result<H1Head, H1Error> {
        let mut read = BytesMut::from(bytes);
        loop {
            match parse_head(&mut read, is_head)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => panic!("partial head"),
            }
        }
    }

    /// Decode a whole body from `bytes`, fed one byte at a time so every
    /// boundary is crossed.
    fn decode(framing: Framing, bytes: &[u8]) -> Result<(Vec<u8>, Option<HeaderMap>, Framing, usize), H1Error> {
        let (mut framing, mut read, mut body, mut trailers) = (framing, BytesMut::new(), Vec::new(), None);
        for &byte in bytes {
            read.extend_from_slice(&[byte]);
            while let Some(frame) = next_frame(&mut read, &mut framing)? {
                match frame.into_data() {
                    Ok(data) => body.extend_from_slice(&data),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
                if read.is_empty() {
                    break;
                }
            }
        }
        Ok((body, trailers, framing, read.len()))
    }

    #[test]
    fn the_framing_follows_rfc_9112() {
        let framing = |bytes: &[u8], is_head| head(bytes, is_head).map(|h| (h.framing, h.keep_alive));
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", false).ok(),
            Some((Framing::Length(12), true))
        );
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", true).ok(), Some((Framing::Done, true)));
        assert_eq!(framing(b"HTTP/1.1 204 No Content\r\n\r\n", false).ok(), Some((Framing::Done, true)));
        assert_eq!(
            framing(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false).ok(),
            Some((Framing::Done, true))
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(framing(chunked, false).ok(), Some((Framing::Chunked(Chunk::Size), true)));
        let both = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(
            framing(both, false).ok(),
            Some((Framing::Chunked(Chunk::Size), false)),
            "the coding wins, no reuse"
        );
        let gzip_only = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n";
        assert_eq!(framing(gzip_only, false).ok(), Some((Framing::UntilClose, false)));
        assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n", false).ok(), Some((Framing::UntilClose, false)));
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\n", false).ok(),
            Some((Framing::Length(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false).ok(),
            Some((Framing::Length(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n", false).ok(),
            Some((Framing::Length(1), true))
        );
        let same_twice = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(framing(same_twice, false).ok(), Some((Framing::Length(2), true)));
    }

    #[test]
    fn a_head_with_more_fields_than_fit_on_the_stack_keeps_them_all() {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
        for i in 0..FIELDS_ON_STACK + 8 {
            bytes.extend_from_slice(format!("x-field-{i}: value {i}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        let response = head(&bytes, false).map(|h| h.response).expect("a valid head");
        assert_eq!(response.headers().len(), FIELDS_ON_STACK + 9);
        let last = format!("x-field-{}", FIELDS_ON_STACK + 7);
        assert_eq!(
            response.headers().get(last.as_str()).map(|v| v.as_bytes()),
            Some(format!("value {}", FIELDS_ON_STACK + 7).as_bytes())
        );
    }

    #[test]
    fn hop_by_hop_fields_are_left_out() {
        let names = |bytes: &[u8]| {
            let response = head(bytes, false).map(|h| h.response).expect("a valid head");
            response.headers().keys().map(|name| name.as_str().to_owned()).collect::<Vec<_>>()
        };
        let plain = b"HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
            Transfer-Encoding: chunked\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTrailer: x-sum\r\nx-end: 1\r\n\r\n";
        assert_eq!(names(plain), ["server", "trailer", "x-end"], "`Trailer` is end-to-end");
        let naming =
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nx-hop: 1\r\nx-end: 2\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(names(naming), ["x-end", "content-length"], "Connection's own list goes too");
    }

    #[test]
    fn the_parse_drops_exactly_the_fixed_hop_by_hop_fields_of_headers() {
        for hop in &crate::headers::HOP_BY_HOP {
            for name in [hop.as_str().to_owned(), hop.as_str().to_ascii_uppercase()] {
                assert!(FieldKind::of(name.as_bytes()) != FieldKind::Other, "{name} is not dropped");
                assert!(crate::headers::is_fixed_hop_by_hop(name.as_bytes()), "{name}");
            }
        }
        for end_to_end in ["trailer", "content-type", "x-connection", "keep-alive-x", "t", "date"] {
            assert!(FieldKind::of(end_to_end.as_bytes()) == FieldKind::Other, "{end_to_end} is dropped");
            assert!(!crate::headers::is_fixed_hop_by_hop(end_to_end.as_bytes()), "{end_to_end}");
        }
    }

    #[test]
    fn a_bad_head_is_a_protocol_error() {
        for bad in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let result = head(bad, false);
            assert!(matches!(result, Err(ref e) if e.is_protocol()), "{:?}: {result:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_reasons_kept() {
        let bytes = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 Fine Thanks\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 0\r\n\r\n";
        let parsed = head(bytes, false).ok().map(|h| h.response);
        let response = parsed.as_ref();
        assert_eq!(response.map(Response::status), Some(StatusCode::OK));
        assert_eq!(response.map(|r| r.headers().get_all("x-a").iter().count()), Some(2));
        assert_eq!(response.and_then(|r| r.headers().get("link")), None, "the interim head's fields are dropped");
        let reason = response.and_then(|r| r.extensions().get::<hyper::ext::ReasonPhrase>());
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Fine Thanks"[..]));
    }

    #[test]
    fn chunked_bodies_decode_across_every_split() {
        let wire = b"5;ext=\"a b\"\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-sum: 9\r\n\r\n";
        let (body, trailers, framing, left) = decode(Framing::Chunked(Chunk::Size), wire).expect("decodes");
        assert_eq!(body, b"hello, world!!!");
        assert_eq!(trailers.and_then(|t| t.get("x-sum").cloned()), Some(HeaderValue::from_static("9")));
        assert_eq!((framing, left), (Framing::Done, 0));

        let plain_end = decode(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n");
        let (body, trailers, framing, _) = plain_end.expect("decodes");
        assert_eq!((body.as_slice(), trailers.is_none(), framing), (&b"abc"[..], true, Framing::Done));

        for bad in [&b"x\r\n"[..], b"3\r\nabcXY", b"3 junk\r\n", b"12345678901234567\r\n", b"3\nabc"] {
            assert!(decode(Framing::Chunked(Chunk::Size), bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (body, _, framing, left) = decode(Framing::Length(3), b"abcNEXT").expect("decodes");
        assert_eq!((body.as_slice(), framing, left), (&b"abc"[..], Framing::Done, 4), "the rest stays in the buffer");
    }

    #[test]
    fn a_body_less_post_says_so() {
        let mut out = Vec::new();
        let request = Request::post("/x").header("host", "a").body(()).expect("a valid request");
        encode_head(&request, &mut out);
        assert_eq!(out, b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n");
        let request = Request::get("/y?q=1").header("host", "a").body(()).expect("a valid request");
        encode_head(&request, &mut out);
        assert_eq!(out, b"GET /y?q=1 HTTP/1.1\r\nhost: a\r\n\r\n");
    }

    #[test]
    fn a_list_of_identical_lengths_is_that_length() {
        assert_eq!(parse_lengths(b"5"), Some(5));
        assert_eq!(parse_lengths(b"5, 5"), Some(5));
        assert_eq!(parse_lengths(b" 5 ,5 , 5 "), Some(5));
        assert_eq!(parse_lengths(b"5, 6"), None);
        assert_eq!(parse_lengths(b"5,,5"), None);
        assert_eq!(parse_lengths(b","), None);
        assert_eq!(parse_lengths(b""), None);
    }

    #[test]
    fn identical_lengths_are_forwarded_as_one() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
        ] {
            let head = head(raw, false).expect("parses");
            let values: Vec<_> = head.response.headers().get_all(header::CONTENT_LENGTH).iter().collect();
            assert_eq!(values, [&HeaderValue::from_static("5")]);
            assert_eq!(head.framing, Framing::Length(5));
        }
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false).is_err());
    }
}
