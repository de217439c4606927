//! The inline client's parse and framing, on bytes.

use super::body::*;
use super::conn::*;
use super::error::*;
use super::head::*;
use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};

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
    assert_eq!(framing(both, false).ok(), Some((Framing::Chunked(Chunk::Size), false)), "the coding wins, no reuse");
    let gzip_only = b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n";
    assert_eq!(framing(gzip_only, false).ok(), Some((Framing::UntilClose, false)));
    assert_eq!(framing(b"HTTP/1.1 200 OK\r\n\r\n", false).ok(), Some((Framing::UntilClose, false)));
    assert_eq!(
        framing(b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 1\r\n\r\n", false).ok(),
        Some((Framing::Length(1), false))
    );
    assert_eq!(framing(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false).ok(), Some((Framing::Length(1), false)));
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
    let naming = b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nx-hop: 1\r\nx-end: 2\r\ncontent-length: 0\r\n\r\n";
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

/// The response head's map comes from hyper's spares, which an answered
/// request's map goes back to: given with its room, it comes back empty
/// with that room; a map too large to keep is not kept.
#[test]
fn a_map_given_back_comes_back_empty_with_its_room() {
    // A thread of its own: the spares are per thread, and other tests on
    // this one take and give maps too.
    std::thread::spawn(|| {
        let mut map = HeaderMap::with_capacity(12);
        map.insert(header::HOST, HeaderValue::from_static("app.test"));
        map.append("x-many", HeaderValue::from_static("1"));
        map.append("x-many", HeaderValue::from_static("2"));
        let room = map.capacity();
        hyper::ext::give_header_map(map);
        let again = hyper::ext::take_header_map(4);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room);

        hyper::ext::give_header_map(HeaderMap::with_capacity(1000));
        let fresh = hyper::ext::take_header_map(1);
        assert!(fresh.capacity() < 1000, "a map over the bound was kept: {}", fresh.capacity());

        // A head parsed into a map given back holds its own fields alone.
        let mut used = HeaderMap::with_capacity(12);
        used.insert("x-stale", HeaderValue::from_static("from the request"));
        hyper::ext::give_header_map(used);
        let parsed = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\n\r\n", false).expect("a head");
        let names: Vec<&str> = parsed.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-length", "x-a"]);
        assert!(parsed.response.headers().capacity() >= 12, "the spare was taken");
    })
    .join()
    .expect("the test's thread");
}
