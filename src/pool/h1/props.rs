//! The inline client's parsers as one response reader, and its invariants,
//! for the property tests below and the fuzz targets (`crate::fuzzing`): on
//! any bytes, split into reads at any points, the head parser and the body
//! decoder never panic, and give the same response (status, headers,
//! framing, body, trailers, how it ended) whatever the split.
//!
//! The reader does what [`super::conn`] and [`super::body`] do with each
//! read: parse the head (skipping 1xx heads) until it is whole, then decode
//! frames until more bytes are needed.

use bytes::BytesMut;
use http::HeaderMap;

use super::body::next_frame;
use super::head::{parse_head, Chunk, Framing, Parsed, MAX_HEAD_BYTES};

/// Header fields as names and values, in order.
pub(crate) type Fields = Vec<(String, Vec<u8>)>;

/// A final head: status, version, fields, framing and keep-alive.
pub(crate) type Head = (u16, String, Fields, String, bool);

/// A response as the inline client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Read {
    /// Status, version, end-to-end headers, framing and keep-alive of the
    /// final head, once whole.
    pub(crate) head: Option<Head>,
    /// The body's bytes, all frames together.
    pub(crate) body: Vec<u8>,
    /// The trailers, if any came.
    pub(crate) trailers: Option<Fields>,
    /// How it ended.
    pub(crate) end: End,
}

/// How a read response ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The body ended (at the close, if close-delimited), with this many
    /// bytes after it.
    Complete { after: usize },
    /// The bytes ran out first.
    Incomplete,
    /// A malformed response, and why.
    Malformed(&'static str),
}

fn fields(headers: &HeaderMap) -> Fields {
    headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect()
}

/// Decode frames from `read` until more bytes are needed.
fn decode(read: &mut BytesMut, framing: &mut Framing, out: &mut Read) -> Result<(), &'static str> {
    while *framing != Framing::Done && !read.is_empty() {
        match next_frame(read, framing) {
            Ok(Some(frame)) => match frame.into_data() {
                Ok(data) => out.body.extend_from_slice(&data),
                Err(frame) => out.trailers = frame.into_trailers().ok().map(|t| fields(&t)),
            },
            Ok(None) => break,
            Err(super::H1Error::Malformed(why)) => return Err(why),
            Err(e) => unreachable!("decoding bytes fails only as malformed: {e}"),
        }
    }
    Ok(())
}

/// Read a response from `pieces`, one read each, then the close; with
/// `chunked`, read a chunked body alone, without a head.
pub(crate) fn read_response<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, is_head: bool, chunked: bool) -> Read {
    let mut out = Read { head: None, body: Vec::new(), trailers: None, end: End::Incomplete };
    let mut framing = chunked.then_some(Framing::Chunked(Chunk::Size));
    let mut read = BytesMut::new();
    for piece in pieces {
        read.extend_from_slice(piece);
        while framing.is_none() {
            match parse_head(&mut read, is_head) {
                Ok(Parsed::Final(head)) => {
                    let r = &head.response;
                    let version = format!("{:?}", r.version());
                    let summary = (
                        r.status().as_u16(),
                        version,
                        fields(r.headers()),
                        format!("{:?}", head.framing),
                        head.keep_alive,
                    );
                    out.head = Some(summary);
                    framing = Some(head.framing);
                }
                Ok(Parsed::Interim) => {}
                // As the connection does: a head this large is refused.
                Ok(Parsed::Partial) if read.len() >= MAX_HEAD_BYTES => {
                    out.end = End::Malformed("response head too large");
                    return out;
                }
                Ok(Parsed::Partial) => break,
                Err(super::H1Error::Malformed(why)) => {
                    out.end = End::Malformed(why);
                    return out;
                }
                Err(e) => unreachable!("parsing bytes fails only as malformed: {e}"),
            }
        }
        if let Some(framing) = framing.as_mut() {
            if let Err(why) = decode(&mut read, framing, &mut out) {
                out.end = End::Malformed(why);
                return out;
            }
        }
    }
    out.end = match framing {
        Some(Framing::Done) => End::Complete { after: read.len() },
        Some(Framing::UntilClose) => End::Complete { after: 0 },
        _ => End::Incomplete,
    };
    out
}

pub(crate) use crate::reads::split;

/// The invariant: `bytes` in one read, split at `cuts`, and one byte per
/// read give the same response. Panics (for the fuzzer) if not.
pub(crate) fn check_response(bytes: &[u8], cuts: &[usize], is_head: bool, chunked: bool) {
    let whole = read_response([bytes], is_head, chunked);
    let split_read = read_response(split(bytes, cuts), is_head, chunked);
    assert_eq!(whole, split_read, "differs when split at {cuts:?}: {:?}", String::from_utf8_lossy(bytes));
    if bytes.len() <= 4096 {
        let bytewise = read_response(bytes.chunks(1), is_head, chunked);
        assert_eq!(whole, bytewise, "differs byte by byte: {:?}", String::from_utf8_lossy(bytes));
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use super::{check_response, read_response, split, End};

    fn pick<'a>(rng: &mut SmallRng, from: &[&'a [u8]]) -> &'a [u8] {
        from[rng.random_range(0..from.len())]
    }

    /// Some random bytes, or a few bytes of the text changed.
    fn noise(rng: &mut SmallRng, out: &mut Vec<u8>) {
        if rng.random_ratio(1, 6) && !out.is_empty() {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..out.len());
                out[at] = rng.random();
            }
        }
        if rng.random_ratio(1, 10) {
            out.extend((0..rng.random_range(0..16)).map(|_| rng.random::<u8>()));
        }
    }

    /// A chunked body: sizes right or wrong, extensions, trailers, both
    /// line endings.
    fn chunked_body(rng: &mut SmallRng) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let data: Vec<u8> = (0..rng.random_range(1..20)).map(|_| b'a' + rng.random_range(0..26)).collect();
            let size = if rng.random_ratio(1, 8) { data.len() + 1 } else { data.len() };
            out.extend(format!("{size:x}").as_bytes());
            out.extend(pick(rng, &[b"", b";ext=1", b" ;x", b";q=\"a b\""]));
            out.extend(pick(rng, &[b"\r\n", b"\r\n", b"\n"]));
            out.extend(&data);
            out.extend(pick(rng, &[b"\r\n", b"\r\n", b"\n", b""]));
        }
        out.extend(pick(rng, &[b"0\r\n", b"000\r\n", b"0;end\r\n"]));
        out.extend(pick(rng, &[b"", b"Expires: never\r\n", b"X-Sum: 1\r\nX-Sum: 2\r\n", b"bad trailer\r\n"]));
        out.extend(pick(rng, &[b"\r\n", b"\r\n", b""]));
        out
    }

    /// A response: 1xx heads, a status line, framing fields agreeing or
    /// not, then a body framed one way or another.
    fn response(rng: &mut SmallRng) -> Vec<u8> {
        let mut out = Vec::new();
        if rng.random_ratio(1, 6) {
            out.extend(pick(
                rng,
                &[b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"],
            ));
        }
        out.extend(pick(
            rng,
            &[
                b"HTTP/1.1 200 OK\r\n",
                b"HTTP/1.0 200 OK\r\n",
                b"HTTP/1.1 204 No Content\r\n",
                b"HTTP/1.1 304 Not Modified\r\n",
                b"HTTP/1.1 502 Bad\r\n",
            ],
        ));
        let chunked = rng.random_ratio(1, 2);
        for _ in 0..rng.random_range(0..5) {
            out.extend(pick(
                rng,
                &[
                    b"Content-Length: 5\r\n",
                    b"Content-Length: 5, 5\r\n",
                    b"Content-Length: 7\r\n",
                    b"Transfer-Encoding: chunked\r\n",
                    b"Transfer-Encoding: gzip\r\n",
                    b"Connection: close\r\n",
                    b"Connection: keep-alive, X-Hop\r\n",
                    b"X-Hop: 1\r\n",
                    b"Keep-Alive: timeout=5\r\n",
                    b"Server: x\r\n",
                    b" folded\r\n",
                    b"X-Bare: lf\n",
                ],
            ));
        }
        if chunked {
            out.extend(b"Transfer-Encoding: chunked\r\n");
        }
        out.extend(pick(rng, &[b"\r\n", b"\r\n", b"\n"]));
        noise(rng, &mut out);
        if chunked {
            out.extend(chunked_body(rng));
        } else {
            out.extend(pick(rng, &[b"", b"hello", b"hello, world", b"hi"]));
        }
        noise(rng, &mut out);
        out
    }

    fn cuts(rng: &mut SmallRng, len: usize) -> Vec<usize> {
        (0..rng.random_range(0..6)).map(|_| rng.random_range(0..=len)).collect()
    }

    #[test]
    fn responses_read_the_same_whatever_the_split() {
        let mut rng = SmallRng::seed_from_u64(21);
        for _ in 0..3_000 {
            let bytes = response(&mut rng);
            let is_head = rng.random_ratio(1, 8);
            check_response(&bytes, &cuts(&mut rng, bytes.len()), is_head, false);
        }
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_split() {
        let mut rng = SmallRng::seed_from_u64(2021);
        for _ in 0..3_000 {
            let mut bytes = chunked_body(&mut rng);
            noise(&mut rng, &mut bytes);
            check_response(&bytes, &cuts(&mut rng, bytes.len()), false, true);
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let bytes: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            let mut with_status = b"HTTP/1.1 200 OK\r\n".to_vec();
            with_status.extend(&bytes);
            check_response(&with_status, &cuts(&mut rng, with_status.len()), false, false);
            check_response(&bytes, &cuts(&mut rng, bytes.len()), false, true);
        }
    }

    /// A chunk-size line longer than the limit is refused however it
    /// arrives, not only when a read happens to end inside it.
    #[test]
    fn a_long_chunk_extension_is_refused_whatever_the_split() {
        let mut bytes = b"5;".to_vec();
        bytes.extend(vec![b'x'; super::super::body::MAX_CHUNK_LINE]);
        bytes.extend(b"\r\nhello\r\n0\r\n\r\n");
        let whole = read_response([&bytes[..]], false, true);
        assert_eq!(whole.end, End::Malformed("chunk-size line too long"), "{whole:?}");
        assert_eq!(read_response(split(&bytes, &[4_500]), false, true), whole);
    }

    /// A head larger than the limit is refused however it arrives.
    #[test]
    fn a_head_over_the_limit_is_refused_whatever_the_split() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        while bytes.len() <= super::MAX_HEAD_BYTES {
            bytes.extend(b"X-Filler: ");
            bytes.extend(vec![b'f'; 8 * 1024]);
            bytes.extend(b"\r\n");
        }
        bytes.extend(b"Content-Length: 0\r\n\r\n");
        let whole = read_response([&bytes[..]], false, false);
        assert_eq!(whole.end, End::Malformed("response head too large"));
        assert_eq!(read_response(split(&bytes, &[super::MAX_HEAD_BYTES - 10]), false, false), whole);
    }
}
