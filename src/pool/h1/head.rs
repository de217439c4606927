//! Parsing a response head with `httparse`: the end-to-end fields kept,
//! the hop-by-hop ones left out, and the body's framing decided as RFC 9112
//! §6.3 says.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};

use super::error::H1Error;

/// Most header fields in a response head (hyper's limit too).
pub(super) const MAX_HEADERS: usize = 100;
/// The largest response head, 1xx heads included, and the largest trailer
/// section: about what hyper's client allows, judged on the head's length
/// rather than on how full one read left the buffer.
pub(super) const MAX_HEAD_BYTES: usize = 400 * 1024;

/// A response head read from a backend, and how its body is framed.
#[derive(Debug)]
pub struct H1Head {
    /// Status, version, and the end-to-end headers: the hop-by-hop ones
    /// are already gone.
    pub response: Response<()>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

/// How the rest of a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
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
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section, then the end.
    Trailers,
}

/// What the front of the read buffer holds.
pub(super) enum Parsed {
    /// A final response head, now taken out of the buffer.
    Final(H1Head),
    /// A 1xx interim head, now dropped from the buffer.
    Interim,
    /// Not a whole head yet.
    Partial,
}

/// Where one header field sits in the head: name and value as byte ranges.
#[derive(Clone, Copy, Default)]
pub(super) struct FieldAt {
    name: (u32, u32),
    value: (u32, u32),
    /// What the name is, as far as framing and forwarding care.
    kind: FieldKind,
}

/// The header fields a response head's parse treats specially.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum FieldKind {
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
    pub(super) fn of(name: &[u8]) -> FieldKind {
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
pub(super) const FIELDS_ON_STACK: usize = 32;

/// Parse the response head at the front of `read`.
pub(super) fn parse_head(read: &mut BytesMut, is_head: bool) -> Result<Parsed, H1Error> {
    // Uninitialised, as hyper does: filling 100 empty fields first would
    // write 3 KiB of stack for every response.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut parsed, read, &mut fields);
    let head_len = match parsing {
        // The same limit as on a head still partial (in `conn`), so that
        // the answer does not depend on how much of it one read held.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD_BYTES => {
            return Err(H1Error::Malformed("response head too large"))
        }
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
    // Room for the request ID and the pool's name, which the proxy adds to
    // the response: inserted into a full map they would make it grow.
    let mut headers = hyper::ext::take_header_map(count + 2);
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
pub(in crate::pool) fn parse_lengths(value: &[u8]) -> Option<u64> {
    let mut lengths = value.split(|&b| b == b',').map(parse_length);
    let first = lengths.next()??;
    lengths.all(|other| other == Some(first)).then_some(first)
}

/// A `Content-Length` value: digits only, as RFC 9110 §8.6 allows.
pub(super) fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}
