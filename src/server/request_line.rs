//! The first line of a cleartext connection that does not open with `PRI `,
//! checked to be an HTTP/1.x request line as it arrives.
//!
//! A plain listener speaks HTTP/1.1 and HTTP/2 with prior knowledge on one
//! port, and [`sniff`](super::sniff) gives every connection whose first
//! bytes are not `PRI ` to HTTP/1. Such a connection's first line is still
//! either protocol's opening: if it is no HTTP/1.x request line either, it
//! is an invalid HTTP/2 connection preface, a connection error of type
//! PROTOCOL_ERROR (RFC 9113 §3.4), and is refused the same way as one that
//! starts with `PRI ` ([`preface`](super::preface)): a `GOAWAY`, then the
//! close. Left to hyper, it would get an HTTP/1.1 `400`, bytes that an
//! HTTP/2 client reads as a frame header announcing a 4 MiB frame.
//!
//! The grammar is the shape hyper's parser (httparse) holds a request line
//! to, so a first line it would refuse for its shape is refused here
//! first, before hyper sees the byte that breaks it, whatever the reads it
//! arrives in: leading empty lines, a method token, one space, a target of
//! visible bytes, one space, `HTTP/1.0` or `HTTP/1.1`, the end of the line
//! (`\r\n` or `\n`). A line of that shape is HTTP/1's, even one hyper
//! still refuses (a target that is not UTF-8 gets its `400`). Only the
//! connection's first line is looked at: on a connection that has spoken
//! HTTP/1, a bad request is HTTP/1's to answer (`400`).

use super::preface::Preface;

/// The version a request line ends with, but for its last byte (the
/// minor version, `0` or `1`).
const VERSION: &[u8] = b"HTTP/1.x";

/// Where in the first line the bytes so far have reached.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Before the method, skipping empty lines.
    #[default]
    Start,
    /// The `\r` of an empty line: its `\n` must follow.
    EmptyLineCr,
    /// Inside the method (one byte or more of it).
    Method,
    /// Right after the space that ends the method.
    TargetStart,
    /// Inside the target (one byte or more of it).
    Target,
    /// This many bytes of [`VERSION`] matched.
    Version(usize),
    /// The `\r` after the version: its `\n` must follow.
    EndCr,
}

/// How far a cleartext HTTP/1 connection's first line is checked: a
/// position in the grammar, independent of how reads split the bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RequestLineCheck {
    at: Part,
}

/// A `tchar` (RFC 9110 §5.6.2): what a method is made of.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A byte a request target may hold: visible ASCII, or any byte above it.
fn is_target(byte: u8) -> bool {
    matches!(byte, b'!'..=b'~' | 0x80..=0xff)
}

impl RequestLineCheck {
    /// Check `bytes`, which continue what came before. `Valid` once the line
    /// ended well (the bytes after it are not looked at), `Invalid` at the
    /// first byte no HTTP/1.x request line has at its place.
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Preface {
        for &byte in bytes {
            let next = match (self.at, byte) {
                (Part::Start, b'\r') => Some(Part::EmptyLineCr),
                (Part::Start, b'\n') | (Part::EmptyLineCr, b'\n') => Some(Part::Start),
                (Part::Start | Part::Method, b) if is_token(b) => Some(Part::Method),
                (Part::Method, b' ') => Some(Part::TargetStart),
                (Part::TargetStart | Part::Target, b) if is_target(b) => Some(Part::Target),
                (Part::Target, b' ') => Some(Part::Version(0)),
                (Part::Version(n), b) if n + 1 == VERSION.len() && matches!(b, b'0' | b'1') => {
                    Some(Part::Version(VERSION.len()))
                }
                (Part::Version(n), b) if n + 1 < VERSION.len() && b == VERSION[n] => Some(Part::Version(n + 1)),
                (Part::Version(n), b'\r') if n == VERSION.len() => Some(Part::EndCr),
                (Part::Version(n), b'\n') if n == VERSION.len() => return Preface::Valid,
                (Part::EndCr, b'\n') => return Preface::Valid,
                _ => None,
            };
            match next {
                Some(part) => self.at = part,
                None => return Preface::Invalid,
            }
        }
        Preface::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::{Preface, RequestLineCheck};

    fn check(bytes: &[u8]) -> Preface {
        RequestLineCheck::default().feed(bytes)
    }

    #[test]
    fn http1_request_lines_are_valid() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"GET / HTTP/1.0\n",
            b"\r\n\nPOST /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"GET http://example.com/%20\xc3\xa9 HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
        ] {
            assert_eq!(check(line), Preface::Valid, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_line_that_is_not_http1_is_invalid() {
        for line in [
            &b"INVALID CONNECTION PREFACE\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.2\r\n",
            b"GET /\r\n",
            b"GET  / HTTP/1.1\r\n",
            b"GET / HTTP/1.1 \r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"G(E)T / HTTP/1.1\r\n",
            b"\x00\x01\x02 not http at all\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
            b"\r\r\n",
            b"GET / HTTP/1.1\r\r\n",
            b" GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(check(line), Preface::Invalid, "{:?}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn a_line_cut_short_is_pending() {
        let line = b"GET /index.html HTTP/1.1\r\n";
        for end in 0..line.len() {
            assert_eq!(check(&line[..end]), Preface::Pending, "{end} bytes");
        }
    }

    #[test]
    fn any_split_gives_the_same_answer() {
        for bytes in
            [&b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], b"INVALID CONNECTION PREFACE\r\n\r\n", b"GET / HTTP/1.1\r"]
        {
            let whole = check(bytes);
            for at in 0..=bytes.len() {
                let mut split = RequestLineCheck::default();
                let first = split.feed(&bytes[..at]);
                let answer = if first == Preface::Pending { split.feed(&bytes[at..]) } else { first };
                assert_eq!(answer, whole, "{:?} split at {at}", String::from_utf8_lossy(bytes));
            }
        }
    }
}
