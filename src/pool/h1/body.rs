//! A response body read from an inline connection: length-delimited,
//! chunked (extensions ignored, trailers passed on) or until the backend
//! closes, straight from the connection's read buffer; the connection goes
//! back to the pool only if the body ended cleanly.

use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};

use super::conn::{poll_read, H1Conn, ReadError, READ_CHUNK};
use super::error::H1Error;
use super::head::{Chunk, Framing, H1Head, MAX_HEADERS, MAX_HEAD_BYTES};

/// The longest chunk-size line, extensions included.
pub(super) const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made for a body's reads when more of it is known to be coming.
pub(super) const BODY_READ_CHUNK: usize = 64 * 1024;

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
pub(super) fn next_frame(read: &mut BytesMut, framing: &mut Framing) -> Result<Option<Frame<Bytes>>, H1Error> {
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
                // Judged on the line, not on how much of it a read held.
                if line_end > MAX_CHUNK_LINE {
                    return Err(H1Error::Malformed("chunk-size line too long"));
                }
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
pub(super) fn parse_chunk_size(line: &[u8]) -> Option<u64> {
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
