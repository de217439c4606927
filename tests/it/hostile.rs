//! Hostile clients and broken upstreams (SPEC §3 "Forwarding"; the limits
//! are explained in `docs/security.md`).
//!
//! Every attack is written as exact bytes on a raw TCP socket, since no
//! well-behaved client library would send them, and every test checks three
//! things: what the client got back, what the upstream received (at most the
//! one request the client really sent — never a request smuggled inside
//! another one's body), and that a well-behaved request on a fresh
//! connection right afterwards still succeeds.
//!
//! Most upstreams here are the harness's [`RawUpstream`]s, which record each
//! request as it came off the wire and answer from a script — so a test can
//! also make the upstream itself misbehave (garbage status line, truncated
//! body, reset mid-response) and see whether the proxy reuses the broken
//! connection.
//!
//! Timing: every wait has a generous deadline and nothing asserts an exact
//! duration, so a loaded two-core machine slows the tests down without
//! failing them.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

/// A well-behaved request on a fresh connection: 200 from the upstream,
/// which saw it exactly once.
async fn assert_fresh_request_ok(proxy: &TestProxy, upstream: &RawUpstream, path: &str) {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    let out = exchange(proxy.addr, raw.as_bytes()).await;
    let answer = out.only();
    assert_eq!(answer.status, 200, "a well-behaved request after the attack failed: {}", out.raw);
    assert!(answer.complete, "{}", out.raw);
    let seen = upstream.requests().iter().filter(|r| r.path() == path).count();
    assert_eq!(seen, 1, "the upstream saw the well-behaved request {path} {seen} times");
}

// ---------------------------------------------------------------------------
// 1. Request smuggling.
// ---------------------------------------------------------------------------

/// What must become of one attack.
#[derive(Debug)]
enum Expect {
    /// The proxy answers with this status, closes the connection, and
    /// nothing reaches the upstream.
    Rejected(u16),
    /// Exactly one request reaches the upstream, at `path`, with `body`
    /// (de-framed) and unambiguous framing; the client gets one 200 and the
    /// connection is closed (by the proxy or by the request's
    /// `Connection: close`).
    Forwarded { path: &'static str, body: &'static [u8] },
}

/// A smuggled request hidden after the body of the request carrying it.
const SMUGGLED: &str = "GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n";

/// Send `raw`, check `expect`, check no `/admin` ever reached the upstream
/// and that a fresh request still works. `what` names the case.
async fn probe(proxy: &TestProxy, upstream: &RawUpstream, what: &str, raw: &str, expect: Expect) -> Outcome {
    let before = upstream.requests().len();
    let out = exchange(proxy.addr, raw.as_bytes()).await;
    assert!(out.closed, "{what}: connection still open {DEADLINE:?} after the answer: {}", out.raw);
    assert_eq!(out.responses.len(), 1, "{what}: expected exactly one answer, got: {}", out.raw);
    let answer = &out.responses[0];
    let new: Vec<RawRequest> = upstream.requests()[before..].to_vec();
    match expect {
        Expect::Rejected(status) => {
            assert_eq!(answer.status, status, "{what}: {}", out.raw);
            assert!(new.is_empty(), "{what}: rejected, yet the upstream got {new:#?}");
        }
        Expect::Forwarded { path, body } => {
            assert_eq!(answer.status, 200, "{what}: {}", out.raw);
            assert_eq!(new.len(), 1, "{what}: the upstream should get exactly one request: {new:#?}");
            let got = &new[0];
            assert_eq!(got.path(), path, "{what}: {got:#?}");
            assert!(got.complete, "{what}: {got:#?}");
            assert_eq!(got.body, body, "{what}: body {:?}", String::from_utf8_lossy(&got.body));
            got.assert_unambiguous();
        }
    }
    for r in upstream.requests() {
        assert_ne!(r.path(), "/admin", "{what}: a smuggled request reached the upstream: {r:#?}");
    }
    let fresh = format!("/fresh-{}", what.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    assert_fresh_request_ok(proxy, upstream, &fresh).await;
    out
}

/// `Content-Length` with `Transfer-Encoding`, in both orders, each shaped as
/// the classic CL.TE attack (a smuggled `GET /admin` after the chunked
/// terminator, inside the declared length), as TE.CL (the smuggled request
/// inside a chunk, past a short declared length), and with a length that
/// ends exactly at the chunked terminator (the smuggled request would be a
/// pipelined second one).
///
/// SPEC §3: 400 and the connection closed; the upstream receives nothing.
/// (hyper 1.12 drops `Content-Length` while parsing, so the proxy learns of
/// the conflict from its own look at the raw head; hyper's framing and its
/// close after the response remain the safety underneath.)
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closed() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    let cl_te_body = format!("0\r\n\r\n{SMUGGLED}");
    let te_cl_body = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    for (order, framing) in [
        ("cl-first", format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", cl_te_body.len())),
        ("te-first", format!("Transfer-Encoding: chunked\r\nContent-Length: {}\r\n", cl_te_body.len())),
    ] {
        let raw = format!("POST /cl-te HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n{cl_te_body}");
        probe(&proxy, &upstream, &format!("CL.TE {order}"), &raw, Expect::Rejected(400)).await;
    }
    for (order, framing) in [
        ("cl-first", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
        ("te-first", "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
    ] {
        let raw = format!("POST /te-cl HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n{te_cl_body}");
        probe(&proxy, &upstream, &format!("TE.CL {order}"), &raw, Expect::Rejected(400)).await;
    }
    for (order, framing) in [
        ("cl-first", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        ("te-first", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
    ] {
        let raw = format!("POST /cl-te-end HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n0\r\n\r\n{SMUGGLED}");
        probe(&proxy, &upstream, &format!("CL at the terminator {order}"), &raw, Expect::Rejected(400)).await;
    }
}

/// Two different lengths are rejected; two identical ones are accepted as
/// one (RFC 9110 §8.6 allows either) and forwarded with a single header.
#[tokio::test]
async fn duplicate_content_lengths() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let different = format!(
        "POST /dup HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 44\r\n\r\nhello{SMUGGLED}"
    );
    probe(&proxy, &upstream, "different lengths", &different, Expect::Rejected(400)).await;

    let same = "POST /same HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    probe(&proxy, &upstream, "identical lengths", same, Expect::Forwarded { path: "/same", body: b"hello" }).await;
    let got = upstream.requests().into_iter().find(|r| r.path() == "/same").unwrap();
    assert_eq!(got.count("content-length"), 1, "{got:#?}");
    assert_eq!(got.header("content-length"), Some("5"), "{got:#?}");

    // A list in one field is not a length.
    let listed = "POST /listed HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5, 5\r\n\r\nhello";
    probe(&proxy, &upstream, "listed lengths", listed, Expect::Rejected(400)).await;
}

/// Anything but plain digits is not a length. Optional whitespace around
/// the value is just whitespace (RFC 9110 §5.5), so those are accepted;
/// whitespace before the colon is not (RFC 9112 §5.1).
#[tokio::test]
async fn malformed_content_length_is_400() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    for value in ["abc", "-1", "+5", "0x5", "5.0", "5 5", "1_0", "99999999999999999999999"] {
        let raw = format!("POST /bad-cl HTTP/1.1\r\nHost: app.test\r\nContent-Length: {value}\r\n\r\nhello");
        probe(&proxy, &upstream, &format!("Content-Length: {value}"), &raw, Expect::Rejected(400)).await;
    }
    let space_before_colon = "POST /bad-cl HTTP/1.1\r\nHost: app.test\r\nContent-Length : 5\r\n\r\nhello";
    probe(&proxy, &upstream, "Content-Length<SP>:", space_before_colon, Expect::Rejected(400)).await;

    for (what, field) in [
        ("leading spaces", "Content-Length:    5"),
        ("trailing spaces", "Content-Length: 5   "),
        ("tab", "Content-Length:\t5"),
    ] {
        let raw = format!("POST /ows-cl HTTP/1.1\r\nHost: app.test\r\n{field}\r\nConnection: close\r\n\r\nhello");
        probe(&proxy, &upstream, what, &raw, Expect::Forwarded { path: "/ows-cl", body: b"hello" }).await;
    }
}

/// Obfuscated `Transfer-Encoding`: anything whose last coding is not
/// exactly `chunked` is rejected (RFC 9112 §6.3), as is a space before the
/// colon; a tab after it, or a coding list ending in `chunked`, is a valid
/// chunked body, which the proxy de-chunks and re-frames for the upstream.
#[tokio::test]
async fn obfuscated_transfer_encoding() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let chunked_hello = "5\r\nhello\r\n0\r\n\r\n";
    for (what, framing) in [
        ("chunked, identity", "Transfer-Encoding: chunked, identity\r\n"),
        ("space before colon", "Transfer-Encoding : chunked\r\n"),
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("chunked then identity", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
        ("chunked with CL, no final chunked", "Transfer-Encoding: chunked, x\r\nContent-Length: 5\r\n"),
    ] {
        let raw = format!("POST /te HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n{chunked_hello}{SMUGGLED}");
        probe(&proxy, &upstream, what, &raw, Expect::Rejected(400)).await;
    }
    for (what, framing) in
        [("tab after colon", "Transfer-Encoding:\tchunked\r\n"), ("upper case", "Transfer-Encoding: CHUNKED\r\n")]
    {
        let raw = format!(
            "POST /te-ok HTTP/1.1\r\nHost: app.test\r\n{framing}Connection: close\r\n\r\n{chunked_hello}{SMUGGLED}"
        );
        probe(&proxy, &upstream, what, &raw, Expect::Forwarded { path: "/te-ok", body: b"hello" }).await;
    }
    // A valid coding list the proxy cannot decode past `chunked` (it would
    // hand the backend gzip bytes as the plain body): 501, RFC 9112 §6.1.
    for (what, framing) in [
        ("two fields, chunked last", "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        ("gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n"),
    ] {
        let raw = format!("POST /te-gzip HTTP/1.1\r\nHost: app.test\r\n{framing}\r\n{chunked_hello}{SMUGGLED}");
        probe(&proxy, &upstream, what, &raw, Expect::Rejected(501)).await;
    }
}

/// A chunk size that overflows 64 bits: the body fails mid-stream. The
/// client gets one 400 saying the body is incomplete and a closed
/// connection, and nothing after the bad chunk is ever parsed. The head may
/// already be on its way to the upstream (the proxy streams, so whether it
/// left before the bad chunk was read is a race), but the upstream never
/// gets a complete body.
#[tokio::test]
async fn chunk_size_overflow_fails_the_request() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let raw = format!(
        "POST /overflow HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n{SMUGGLED}"
    );
    let out = exchange(proxy.addr, raw.as_bytes()).await;
    assert!(out.closed, "connection still open: {}", out.raw);
    let answer = out.only();
    assert_eq!(answer.status, 400, "{}", out.raw);
    assert_eq!(answer.body, b"request body incomplete\n", "{}", out.raw);
    let seen = upstream.requests();
    assert!(seen.len() <= 1, "{seen:#?}");
    for r in &seen {
        assert_eq!(r.path(), "/overflow", "{r:#?}");
        assert!(!r.complete, "the upstream got a complete body from a broken chunked stream: {r:#?}");
    }
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
}

/// HTTP/1.0 has no chunked coding (RFC 9112 §6.1): `Transfer-Encoding` on
/// a 1.0 request is rejected, whatever the length says.
#[tokio::test]
async fn http10_with_transfer_encoding_is_400() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let raw = format!("POST /old HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}");
    probe(&proxy, &upstream, "HTTP/1.0 chunked", &raw, Expect::Rejected(400)).await;
    let raw = format!(
        "POST /old HTTP/1.0\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello{SMUGGLED}"
    );
    probe(&proxy, &upstream, "HTTP/1.0 chunked with length", &raw, Expect::Rejected(400)).await;
}

/// The control for the cases above: when the client's own framing really
/// holds a second request (pipelining), the upstream does get it — so the
/// absence of `/admin` elsewhere is meaningful.
#[tokio::test]
async fn a_genuinely_pipelined_second_request_is_served() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let raw = "POST /first HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
               GET /admin HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let out = exchange(proxy.addr, raw.as_bytes()).await;
    assert!(out.closed, "{}", out.raw);
    let statuses: Vec<u16> = out.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200], "{}", out.raw);
    let seen = upstream.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/first", "/admin"], "{seen:#?}");
    assert_eq!(seen[0].body, b"hello");
    seen.iter().for_each(RawRequest::assert_unambiguous);
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
}

// ---------------------------------------------------------------------------
// 2. Host.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_or_duplicate_host_is_400() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let out = probe(&proxy, &upstream, "no Host", "GET /no-host HTTP/1.1\r\n\r\n", Expect::Rejected(400)).await;
    let body = &out.only().body;
    assert!(!body.is_empty() && body.len() < 200, "the 400 does not say why in a short text: {}", out.raw);
    let two = "GET /two-hosts HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n";
    probe(&proxy, &upstream, "two Hosts", two, Expect::Rejected(400)).await;
    // HTTP/1.0 may omit Host (it routes to a host-less route).
    let old = "GET /old HTTP/1.0\r\n\r\n";
    probe(&proxy, &upstream, "HTTP/1.0 without Host", old, Expect::Forwarded { path: "/old", body: b"" }).await;
}

/// An HTTP/1.0 request may omit `Host`, but the proxy forwards every
/// request as HTTP/1.1, which must carry exactly one `Host` field (RFC 9112
/// §3.2: with an empty value when there is no authority). A strict backend
/// (nginx, for one) answers 400 to an HTTP/1.1 request without it.
#[tokio::test]
async fn http10_without_host_is_forwarded_with_a_host_field() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let out = exchange(proxy.addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(out.only().status, 200, "{}", out.raw);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].line, "GET /old HTTP/1.1", "{seen:#?}");
    assert_eq!(seen[0].count("host"), 1, "an HTTP/1.1 request without Host reached the upstream: {seen:#?}");
}

/// An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2),
/// both for routing and for the `Host` the upstream sees.
#[tokio::test]
async fn absolute_form_authority_wins_over_host() {
    let a = RawUpstream::named("a").await;
    let b = RawUpstream::named("b").await;
    let config = format!(
        "[pools.a]\nbackends = [\"{}\"]\n[pools.b]\nbackends = [\"{}\"]\n\
         [[routes]]\nname = \"a\"\nhost = \"a.example\"\nsplit = {{ a = 1 }}\n\
         [[routes]]\nname = \"b\"\nhost = \"b.example\"\nsplit = {{ b = 1 }}\n",
        a.addr, b.addr
    );
    let proxy = TestProxy::start(&config).await;
    for (target, host, want, wrong, origin) in
        [("http://a.example/x", "b.example", &a, &b, "/x"), ("http://b.example/y?q=1", "a.example", &b, &a, "/y?q=1")]
    {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let out = exchange(proxy.addr, raw.as_bytes()).await;
        let answer = out.only();
        assert_eq!(answer.status, 200, "{}", out.raw);
        let seen = want.requests();
        assert_eq!(seen.len(), 1, "{target}: {seen:#?}");
        let got = &seen[0];
        assert_eq!(got.path(), origin, "the upstream gets the origin form: {got:#?}");
        assert_eq!(got.count("host"), 1, "{got:#?}");
        let authority = target.trim_start_matches("http://").split('/').next().unwrap();
        assert_eq!(got.header("host"), Some(authority), "{got:#?}");
        assert_eq!(got.header("x-forwarded-host"), Some(authority), "{got:#?}");
        assert!(wrong.requests().is_empty(), "{target} with Host: {host} was routed by Host");
        want.clear();
    }
    let out = exchange(proxy.addr, b"GET /z HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").await;
    assert_eq!(out.only().body, b"a", "{}", out.raw);
}

// ---------------------------------------------------------------------------
// 3. Header limits.
// ---------------------------------------------------------------------------

/// hyper parses at most 100 header fields: the 101st gets 431 and a closed
/// connection; exactly 100 go through.
#[tokio::test]
async fn more_than_100_headers_is_431() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let fields = |n: usize| (0..n).map(|i| format!("X-H{i}: {i}\r\n")).collect::<String>();
    // Host + Connection + 98 = 100 fields.
    let hundred = format!("GET /hundred HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{}\r\n", fields(98));
    probe(&proxy, &upstream, "100 fields", &hundred, Expect::Forwarded { path: "/hundred", body: b"" }).await;
    let got = upstream.requests().into_iter().find(|r| r.path() == "/hundred").unwrap();
    assert_eq!(got.headers.iter().filter(|(k, _)| k.starts_with("x-h")).count(), 98, "{got:#?}");

    let too_many = format!("GET /too-many HTTP/1.1\r\nHost: app.test\r\n{}\r\n", fields(100));
    probe(&proxy, &upstream, "101 fields", &too_many, Expect::Rejected(431)).await;
}

/// `max_request_header_bytes = 4096`: a head over it is 431 — from the
/// proxy's own check up to hyper's read buffer (limit + 4 KiB), from hyper
/// itself beyond it. The same holds for a long request line.
#[tokio::test]
async fn oversize_heads_and_request_lines_are_431() {
    let upstream = RawUpstream::ok().await;
    let proxy =
        TestProxy::start(&Config::one_pool(&[upstream.addr]).server("max_request_header_bytes = 4096").build()).await;
    let head = |path: &str, value: usize| {
        format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(value))
    };
    probe(&proxy, &upstream, "5000-byte field", &head("/big", 5000), Expect::Rejected(431)).await;
    probe(&proxy, &upstream, "20000-byte field", &head("/big", 20_000), Expect::Rejected(431)).await;
    let long_path = |n: usize| format!("/{}", "p".repeat(n));
    probe(&proxy, &upstream, "5000-byte target", &head(&long_path(5000), 1), Expect::Rejected(431)).await;
    probe(&proxy, &upstream, "20000-byte target", &head(&long_path(20_000), 1), Expect::Rejected(431)).await;
    // Just under the limit is fine.
    probe(&proxy, &upstream, "3000-byte field", &head("/fits", 3000), Expect::Forwarded { path: "/fits", body: b"" })
        .await;
}

/// With the default limit (64 KiB, read buffer 68 KiB) a target longer
/// than hyper's URI limit (65534 bytes) that still fits the buffer is
/// answered 414 by hyper.
#[tokio::test]
async fn request_line_over_the_uri_limit_is_414() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let raw = format!("GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n", "u".repeat(66_000));
    probe(&proxy, &upstream, "66000-byte target", &raw, Expect::Rejected(414)).await;
}

// ---------------------------------------------------------------------------
// 4. Slow clients.
// ---------------------------------------------------------------------------

/// Trickle `stream` one header byte every 100 ms until the proxy closes it
/// (or `limit` passes); how long the proxy took, `None` if it never closed.
async fn trickle_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        if stream.write_all(b"a").await.is_err() {
            return Some(started.elapsed());
        }
        match timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(n)) => panic!("the proxy answered a head that never ended: {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    None
}

/// Slowloris: a head trickled one byte per 100 ms is cut off after
/// `header_read_timeout` (500 ms), without an answer and without the
/// upstream hearing of it.
#[tokio::test]
async fn slowloris_head_is_closed_after_header_read_timeout() {
    let upstream = RawUpstream::ok().await;
    let proxy =
        TestProxy::start(&Config::one_pool(&[upstream.addr]).server("header_read_timeout = \"500ms\"").build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ").await.unwrap();
    let took = trickle_until_closed(&mut stream, Duration::from_secs(8)).await;
    let took = took.expect("a slowloris kept its connection for 8 s with header_read_timeout = 500ms");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the timeout: {took:?}");
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
    assert_eq!(client_timeouts(&proxy, "header_read").await, 1.0, "the cut was not counted");
    assert_eq!(client_timeouts(&proxy, "no_request").await, 0.0, "a slowloris counted as a silent connection");
}

/// A connection that never sends a byte owes its first head from accept.
#[tokio::test]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let upstream = RawUpstream::ok().await;
    let proxy =
        TestProxy::start(&Config::one_pool(&[upstream.addr]).server("header_read_timeout = \"500ms\"").build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(closed, "a silent connection stayed open 8 s with header_read_timeout = 500ms");
    assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes));
    assert!(started.elapsed() >= Duration::from_millis(400), "closed too early: {:?}", started.elapsed());
    assert!(upstream.requests().is_empty());
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
    // Counted apart from the slowloris: a browser's unused preconnect looks the same.
    assert_eq!(client_timeouts(&proxy, "no_request").await, 1.0, "the cut was not counted");
    assert_eq!(client_timeouts(&proxy, "header_read").await, 0.0, "a silent connection counted as a slowloris");
}

/// A connection to `proxy` whose first bytes come in two packets: `first`,
/// then `rest` 50 ms later.
async fn split_first_packet(proxy: &TestProxy, first: &[u8], rest: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(rest).await.unwrap();
    stream
}

/// A client whose first packet holds only the first letter of its request
/// line: the proxy cannot tell HTTP/1.1 from the HTTP/2 preface yet, waits
/// for more, and serves the request once the rest arrives.
#[tokio::test]
async fn a_request_line_split_after_its_first_byte_is_served() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let rest = b"UT /split HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n";
    let mut stream = split_first_packet(&proxy, b"P", rest).await;
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    let lines: Vec<String> = upstream.requests().iter().map(|r| r.line.clone()).collect();
    assert_eq!(lines, ["PUT /split HTTP/1.1"]);
}

/// The HTTP/2 preface split after `PR`: once `I ` arrives the connection is
/// HTTP/2, and the proxy answers the client's SETTINGS with its own (an
/// HTTP/1.1 server would answer `400` instead).
#[tokio::test]
async fn an_h2c_preface_split_after_two_bytes_is_http2() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    // The rest of the preface, then an empty SETTINGS frame.
    let rest = b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut stream = split_first_packet(&proxy, b"PR", rest).await;
    let mut frame_header = [0u8; 9];
    timeout(DEADLINE, stream.read_exact(&mut frame_header))
        .await
        .expect("no answer to the HTTP/2 preface")
        .expect("the proxy closed the connection instead of speaking HTTP/2");
    assert_eq!(frame_header[3], 0x04, "first frame is not SETTINGS: {frame_header:?}");
    assert!(upstream.requests().is_empty());
}

/// Between requests, a keep-alive connection with no bytes pending is
/// governed by `idle_timeout`, not `header_read_timeout`: a pause of twice
/// the header timeout does not close it.
#[tokio::test]
async fn idle_keep_alive_connection_outlives_header_read_timeout() {
    let upstream = RawUpstream::ok().await;
    let server = "header_read_timeout = \"500ms\"\nidle_timeout = \"10s\"";
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(server).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(b"GET /two HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path().to_string()).collect();
    assert_eq!(paths, ["/one", "/two"]);
}

/// A slowloris on the *second* request of a keep-alive connection, started
/// after the connection sat idle longer than `header_read_timeout`, must be
/// cut off like the first one.
#[tokio::test]
async fn slowloris_on_a_later_keep_alive_request_is_closed_after_header_read_timeout() {
    let upstream = RawUpstream::ok().await;
    let server = "header_read_timeout = \"500ms\"\nidle_timeout = \"30s\"";
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(server).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream.write_all(b"GET /two HTTP/1.1\r\nHost: app.test\r\nX-Slow: ").await.unwrap();
    let took = trickle_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a slowloris on a second request kept its connection 5 s with header_read_timeout = 500ms");
    assert_eq!(upstream.requests().len(), 1);
}

/// Slow POST: 10 of 100 promised bytes, then silence. After
/// `body_read_timeout` (500 ms) the client gets 408 and a closed
/// connection; the upstream got that one request (and no complete body);
/// and the pool's guard is not charged — it is the client's failure.
#[tokio::test]
async fn slow_post_is_408_and_not_charged_to_the_pool() {
    let upstream = Upstream::with_handler("app", |req| async move {
        match req.into_body().collect().await {
            Ok(body) => text(StatusCode::OK, format!("{} bytes", body.to_bytes().len())),
            Err(_) => text(StatusCode::BAD_REQUEST, "body broke"),
        }
    })
    .await;
    let proxy = TestProxy::start(&guarded(&upstream, "body_read_timeout = \"500ms\"")).await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (bytes, closed) = read_until_closed(&mut stream, DEADLINE).await;
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    assert!(closed, "connection still open {DEADLINE:?} into a stalled body: {raw}");
    let responses = support::raw_client::parse_responses(&bytes);
    assert_eq!(responses.len(), 1, "expected exactly one answer: {raw:?}");
    assert_eq!(responses[0].status, 408, "{raw}");
    assert!(started.elapsed() >= Duration::from_millis(400), "408 before body_read_timeout: {:?}", started.elapsed());
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].headers["content-length"], "100");

    assert_pool_not_charged(&proxy, "a stalled client").await;

    // A complete upload on a fresh connection goes through.
    let body = "x".repeat(100);
    let raw =
        format!("POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{body}");
    let out = exchange(proxy.addr, raw.as_bytes()).await;
    assert_eq!(out.only().status, 200, "{}", out.raw);
    assert_eq!(out.only().body, b"100 bytes");
    assert_eq!(upstream.hits(), 2);
    assert_no_upstream_failures(&proxy).await;
    assert_eq!(client_timeouts(&proxy, "body_read").await, 1.0, "the 408 was not counted");
}

/// An endless response body that says when it is dropped: whoever read it
/// let go of the exchange.
struct EndlessBody {
    chunk: Bytes,
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for EndlessBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
    }
}

impl Drop for EndlessBody {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A proxy with `[server]` settings `limits` in front of an upstream whose
/// every response is endless (but `/held`'s: that one waits for `release`,
/// then answers `held`), its pool guarded, so a charge would show.
struct EndlessProxy {
    proxy: TestProxy,
    _upstream: Upstream,
    /// Turns true when the proxy lets go of an endless response.
    dropped: Arc<std::sync::atomic::AtomicBool>,
    release: watch::Sender<bool>,
}

async fn proxy_before_endless_upstream(limits: &str) -> EndlessProxy {
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (release, released) = watch::channel(false);
    let flag = dropped.clone();
    let upstream = Upstream::with_handler("app", move |req| {
        let body = EndlessBody { chunk: Bytes::from(vec![b'x'; 64 << 10]), dropped: flag.clone() };
        let mut released = released.clone();
        async move {
            if req.uri().path() == "/held" {
                let _ = released.wait_for(|r| *r).await;
                return text(StatusCode::OK, "held");
            }
            http::Response::new(body.map_err(|e| match e {}).boxed())
        }
    })
    .await;
    let proxy = TestProxy::start(&guarded(&upstream, limits)).await;
    EndlessProxy { proxy, _upstream: upstream, dropped, release }
}

/// Slow read: a client asks for a response and reads none of it, so the
/// proxy's writes stay blocked. After `send_timeout` (500 ms) the proxy
/// closes the connection and lets go of the upstream exchange, which would
/// otherwise hold an upstream connection for as long as the client likes;
/// and the pool is not charged: it is the client's failure.
#[tokio::test]
async fn a_client_that_reads_nothing_is_closed_after_send_timeout() {
    // The connection's timer looks in at least every header_read_timeout.
    let EndlessProxy { proxy, _upstream, dropped, .. } =
        proxy_before_endless_upstream("send_timeout = \"500ms\"\nheader_read_timeout = \"500ms\"").await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /endless HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    eventually(Duration::from_secs(20), "the proxy to let go of a response its client reads none of", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
    // What the socket buffers held still arrives, then the end.
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    assert!(closed, "the connection of a client that read nothing stayed open");

    assert_pool_not_charged(&proxy, "a client that read nothing").await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0, "the cut was not counted");
}

/// One pool `app` over `upstream`, guarded so that a charge would show,
/// with `[server]` settings `limits`.
fn guarded(upstream: &Upstream, limits: &str) -> String {
    let guard = "[pools.app.guard]\nmax_error_rate = 0.5\nmin_requests = 1";
    Config::new().server(limits).pool_with("app", &[upstream.addr], guard).route("app", "app = 100").build()
}

/// The client's failure was not charged to pool `app`: its guard counted no
/// failure, it is not tripped, and no upstream failure was counted.
async fn assert_pool_not_charged(proxy: &TestProxy, client: &str) {
    let status = get_json(&proxy.admin_url("/status")).await;
    let pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "app").expect("pool app");
    assert_eq!(pool["guard"]["failures"], 0, "{client} was charged to the pool: {status:#}");
    assert!(pool["tripped"].is_null(), "{status:#}");
    assert_no_upstream_failures(proxy).await;
}

/// Every `cutover_upstream_failures_total` series is still 0.
async fn assert_no_upstream_failures(proxy: &TestProxy) {
    let metrics = proxy.metrics().await;
    let series: Vec<&str> = metrics.lines().filter(|l| l.starts_with("cutover_upstream_failures_total{")).collect();
    assert!(series.iter().any(|l| l.contains("pool=\"app\"")), "no failure series for pool app:\n{metrics}");
    for line in series {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(value, 0.0, "an upstream failure was counted: {line}");
    }
}

// ---------------------------------------------------------------------------
// 5. HTTP/2 abuse.
// ---------------------------------------------------------------------------

/// HTTP/2 framing by hand (RFC 9113 §4, §6), just enough to misbehave.
mod frame {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;

    pub const ACK: u8 = 0x1;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    /// The client connection preface followed by an empty SETTINGS frame.
    pub fn preface() -> Vec<u8> {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend((stream & 0x7fff_ffff).to_be_bytes());
        out.extend(payload);
        out
    }

    /// An HPACK block for `GET http://h2.test{path}`, without Huffman or
    /// the dynamic table: indexed `:method GET` and `:scheme http`, then
    /// `:path` and `:authority` as literals without indexing.
    pub fn get_block(path: &str) -> Vec<u8> {
        let mut out = vec![0x82, 0x86];
        for (index, value) in [(0x04u8, path), (0x01, "h2.test")] {
            assert!(value.len() < 127);
            out.push(index);
            out.push(value.len() as u8);
            out.extend(value.as_bytes());
        }
        out
    }

    /// A complete GET request on `stream`.
    pub fn get(stream: u32, path: &str) -> Vec<u8> {
        frame(HEADERS, END_STREAM | END_HEADERS, stream, &get_block(path))
    }

    pub fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// Room for `bytes` more on `stream` (0: the whole connection).
    pub fn window_update(stream: u32, bytes: usize) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &(bytes as u32).to_be_bytes())
    }

    /// One frame received.
    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            self.payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
}

/// The next frame, or `None` at end of stream, on a reset or at `end`.
async fn read_frame(stream: &mut (impl AsyncRead + Unpin), end: Instant) -> Option<frame::Frame> {
    let mut head = [0u8; 9];
    timeout_at(end, stream.read_exact(&mut head)).await.ok()?.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    timeout_at(end, stream.read_exact(&mut payload)).await.ok()?.ok()?;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(frame::Frame { kind: head[3], flags: head[4], stream: stream_id, payload })
}

/// Read frames until the proxy closes the connection (or `DEADLINE`):
/// the GOAWAY seen, if any, and whether the connection closed.
async fn until_goaway_and_close(stream: &mut (impl AsyncRead + Unpin)) -> (Option<frame::Frame>, bool) {
    let end = Instant::now() + DEADLINE;
    let mut goaway = None;
    loop {
        match read_frame(stream, end).await {
            Some(f) if f.kind == frame::GOAWAY => goaway = Some(f),
            Some(_) => {}
            None => return (goaway, Instant::now() < end),
        }
    }
}

/// One GET over an h2c (prior knowledge) connection with hyper's client.
async fn h2_get(addr: SocketAddr, path: &str) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("http://h2.test{path}")).body(Empty::<Bytes>::new()).unwrap();
    let response = timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("h2 request timed out")
        .expect("h2 request failed");
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

/// An upstream that holds every request (except `/warm`) until released,
/// and counts how many it holds at once.
struct Held {
    upstream: Upstream,
    holding: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

/// Decrements the held count however the handler ends.
struct Holding(Arc<AtomicUsize>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn held_upstream() -> Held {
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (release, released) = watch::channel(false);
    let (h, m) = (holding.clone(), most.clone());
    let upstream = Upstream::with_handler("held", move |req| {
        let (h, m, mut released) = (h.clone(), m.clone(), released.clone());
        async move {
            if req.uri().path() != "/warm" {
                m.fetch_max(h.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                let _holding = Holding(h);
                let _ = released.wait_for(|r| *r).await;
            }
            text(StatusCode::OK, "released")
        }
    })
    .await;
    Held { upstream, holding, most, release }
}

/// 300 requests at once from hyper's client: the client honours the
/// proxy's SETTINGS_MAX_CONCURRENT_STREAMS (256) and queues the rest, so at
/// most 256 are in flight at the upstream, and every one is answered once
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_concurrent_streams_are_capped_at_256_and_none_is_lost() {
    let held = held_upstream().await;
    let proxy = TestProxy::start(&Config::one_pool(&[held.upstream.addr]).build()).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(conn);
    // One round trip first, so the client has the proxy's SETTINGS.
    let warm = Request::get("http://h2.test/warm").body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(timeout(DEADLINE, sender.send_request(warm)).await.unwrap().unwrap().status(), 200);

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut sender = sender.clone();
        tasks.spawn(async move {
            let request = Request::get(format!("http://h2.test/held/{i}")).body(Empty::<Bytes>::new()).unwrap();
            let response = sender.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        });
    }
    let holding = held.holding.clone();
    eventually(DEADLINE, "256 requests held at the upstream", || holding.load(Ordering::SeqCst) >= 256).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(held.most.load(Ordering::SeqCst), 256, "streams in flight at once at the upstream");

    held.release.send(true).unwrap();
    let mut statuses = Vec::new();
    while let Some(joined) = timeout(DEADLINE, tasks.join_next()).await.expect("responses after release") {
        statuses.push(joined.unwrap().expect("a stream failed"));
    }
    assert_eq!(statuses.len(), 300);
    assert!(statuses.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(held.upstream.hits(), 301);
    assert!(held.most.load(Ordering::SeqCst) <= 256);
    assert_eq!(h2_get(proxy.addr, "/warm").await, 200);
}

/// The same with raw frames, from a client that ignores the limit: 300
/// HEADERS at once. The proxy accepts 256, refuses the other 44 with
/// RST_STREAM(REFUSED_STREAM) (RFC 9113 §5.1.2: not processed, safe to
/// retry), and answers all 256 accepted once the upstream lets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_over_the_limit_are_refused() {
    let held = held_upstream().await;
    let proxy = TestProxy::start(&Config::one_pool(&[held.upstream.addr]).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut out = frame::preface();
    for i in 0..300u32 {
        out.extend(frame::get(2 * i + 1, &format!("/raw/{i}")));
    }
    stream.write_all(&out).await.unwrap();

    let end = Instant::now() + DEADLINE;
    let mut refused = std::collections::BTreeSet::new();
    let mut answered = std::collections::BTreeSet::new();
    let mut finished = std::collections::BTreeSet::new();
    let mut released = false;
    while finished.len() + refused.len() < 300 {
        let f = read_frame(&mut stream, end).await.unwrap_or_else(|| {
            panic!("connection ended or stalled: {} answered, {} refused", answered.len(), refused.len())
        });
        match f.kind {
            frame::SETTINGS if f.flags & 1 == 0 => {
                stream.write_all(&frame::frame(frame::SETTINGS, 1, 0, &[])).await.unwrap()
            }
            frame::RST_STREAM => {
                assert_eq!(f.error_code(), Some(frame::REFUSED_STREAM), "{f:?}");
                refused.insert(f.stream);
            }
            frame::GOAWAY => panic!("GOAWAY: {f:?}"),
            // `:status 200` is the static-table entry 8.
            frame::HEADERS => {
                assert_eq!(f.payload.first(), Some(&0x88), "not a 200: {f:?}");
                answered.insert(f.stream);
            }
            frame::DATA if f.flags & frame::END_STREAM != 0 => {
                finished.insert(f.stream);
            }
            _ => {}
        }
        if !released && refused.len() == 44 {
            let holding = held.holding.clone();
            eventually(DEADLINE, "256 requests held", || holding.load(Ordering::SeqCst) >= 256).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            released = true;
            held.release.send(true).unwrap();
        }
    }
    assert_eq!(refused.len(), 44, "refused streams");
    assert_eq!(answered.len(), 256, "answered streams");
    assert!(refused.is_disjoint(&answered));
    assert_eq!(held.most.load(Ordering::SeqCst), 256, "streams in flight at once at the upstream");
    assert_eq!(held.upstream.hits(), 256, "a refused stream reached the upstream");
    assert_eq!(h2_get(proxy.addr, "/warm").await, 200);
}

/// Rapid reset (CVE-2023-44487): HEADERS + RST_STREAM(CANCEL), 1000 times.
/// Streams reset before the proxy accepted them count against
/// `max_pending_accept_reset_streams` (20): the proxy sends GOAWAY
/// (ENHANCE_YOUR_CALM) and closes, the upstream sees at most a handful of
/// the requests, and other clients are served as before.
#[tokio::test]
async fn h2_rapid_reset_flood_gets_goaway() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut out = frame::preface();
    for i in 0..1000u32 {
        out.extend(frame::get(2 * i + 1, "/reset"));
        out.extend(frame::rst(2 * i + 1, frame::CANCEL));
    }
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&out).await;
        // Keep the write half open: only the proxy may end this connection.
        tokio::time::sleep(DEADLINE).await;
    });
    let (goaway, closed) = until_goaway_and_close(&mut read).await;
    writer.abort();
    let goaway = goaway.expect("no GOAWAY after 1000 rapid resets");
    assert_eq!(goaway.error_code(), Some(frame::ENHANCE_YOUR_CALM), "{goaway:?}");
    assert!(closed, "the proxy kept the connection open after its GOAWAY");
    let reached = upstream.requests().len();
    eprintln!("rapid reset: GOAWAY {goaway:?}; {reached} of 1000 requests reached the upstream");
    assert!(reached <= 256, "{reached} reset streams reached the upstream");

    assert_eq!(h2_get(proxy.addr, "/after").await, 200);
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
}

/// CONTINUATION flood (h2 ≥ 0.4.4): HEADERS without END_HEADERS, then
/// thousands of CONTINUATION frames that never end the block. The proxy
/// sends GOAWAY after a handful and closes, the header block is never
/// buffered whole, nothing reaches the upstream.
#[tokio::test]
async fn h2_continuation_flood_gets_goaway() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut out = frame::preface();
    // `:method GET`, `:scheme http`, `:path /`, then a literal field whose
    // name claims 100 000 bytes: every CONTINUATION adds to it, none ends it.
    let mut block = vec![0x82, 0x86, 0x84, 0x00, 0x7f];
    let mut rest = 100_000u32 - 127;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
    out.extend(frame::frame(frame::HEADERS, frame::END_STREAM, 1, &block));
    let junk = [b'a'; 64];
    for _ in 0..10_000 {
        out.extend(frame::frame(frame::CONTINUATION, 0, 1, &junk));
    }
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&out).await;
        tokio::time::sleep(DEADLINE).await;
    });
    let (goaway, closed) = until_goaway_and_close(&mut read).await;
    writer.abort();
    let goaway = goaway.expect("no GOAWAY during a CONTINUATION flood");
    eprintln!("CONTINUATION flood: {goaway:?} ({:?})", String::from_utf8_lossy(&goaway.payload[8..]));
    assert_eq!(goaway.error_code(), Some(frame::ENHANCE_YOUR_CALM), "{goaway:?}");
    assert!(closed, "the proxy kept the connection open after its GOAWAY");
    assert!(upstream.requests().is_empty(), "{:#?}", upstream.requests());

    assert_eq!(h2_get(proxy.addr, "/after").await, 200);
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
}

/// Slow read the HTTP/2 way: the client reads every byte, so no write is
/// ever stuck, but never opens stream 1's flow-control window, so its
/// response stops after the first 64 KiB. Meanwhile it keeps stream 3
/// flowing, so the connection looks busy, and has stream 5 waiting on the
/// backend. After `send_timeout` (500 ms) of stream 1 waiting, hyper cannot
/// reset that one stream, so the proxy closes the connection, gracefully: a
/// GOAWAY, then stream 5 (answered only now) still completes, and one
/// `send_timeout` later the connection is closed, the upstream exchanges
/// let go, and the pool is not charged.
#[tokio::test]
async fn an_h2_stream_given_no_window_is_closed_after_send_timeout() {
    // A busy HTTP/2 connection's timer looks in every idle_timeout.
    let EndlessProxy { proxy, _upstream, dropped, release } =
        proxy_before_endless_upstream("send_timeout = \"500ms\"\nidle_timeout = \"500ms\"").await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut hello = frame::preface();
    hello.extend(frame::get(1, "/stalled"));
    hello.extend(frame::get(3, "/flowing"));
    hello.extend(frame::get(5, "/held"));
    stream.write_all(&hello).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let (mut flowing, mut goaway, mut held_answered) = (0, None, false);
    let closed = loop {
        let Some(f) = read_frame(&mut stream, end).await else { break Instant::now() < end };
        // Otherwise a well-behaved client: settings and pings answered.
        let reply = match f.kind {
            frame::SETTINGS if f.flags & frame::ACK == 0 => frame::frame(frame::SETTINGS, frame::ACK, 0, &[]),
            frame::PING if f.flags & frame::ACK == 0 => frame::frame(frame::PING, frame::ACK, 0, &f.payload),
            frame::GOAWAY => {
                goaway = Some(Instant::now());
                release.send_replace(true);
                continue;
            }
            frame::DATA => {
                held_answered |= f.stream == 5 && f.flags & frame::END_STREAM != 0;
                if f.payload.is_empty() {
                    continue;
                }
                // Everything is read: the connection's window reopens for
                // every stream, but stream 1's own window never does.
                let mut reply = frame::window_update(0, f.payload.len());
                if f.stream != 1 {
                    reply.extend(frame::window_update(f.stream, f.payload.len()));
                }
                flowing += if f.stream == 3 { f.payload.len() } else { 0 };
                reply
            }
            _ => continue,
        };
        if stream.write_all(&reply).await.is_err() {
            break true;
        }
    };
    assert!(closed, "a connection with a stream given no window stayed open");
    assert!(goaway.is_some(), "the connection was closed without a GOAWAY");
    assert!(held_answered, "a stream answered after the GOAWAY did not complete before the close");
    assert!(flowing > 256 << 10, "stream 3 did not flow meanwhile: {flowing} bytes");
    eventually(DEADLINE, "the proxy to let go of the stalled exchanges", || dropped.load(Ordering::SeqCst)).await;

    assert_pool_not_charged(&proxy, "a client that opened no window").await;
    assert_eq!(client_timeouts(&proxy, "send").await, 1.0, "the cut was not counted");
}

/// The other side of the rule above: a client on a slow link that opens the
/// window a little at a time, every 100 ms, waits on flow control over and
/// over but never for `send_timeout` (2 s) in one go, and is served for as
/// long as it keeps up.
#[tokio::test]
async fn an_h2_stream_whose_window_opens_slowly_is_served() {
    let EndlessProxy { proxy, _upstream, dropped, .. } =
        proxy_before_endless_upstream("send_timeout = \"2s\"\nidle_timeout = \"500ms\"").await;

    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut hello = frame::preface();
    hello.extend(frame::get(1, "/slow"));
    write.write_all(&hello).await.unwrap();
    // The reader counts response bytes until the connection ends. (No
    // SETTINGS ack and no PING answer: the proxy needs neither within 5 s.)
    let received = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            let end = Instant::now() + Duration::from_secs(60);
            while let Some(f) = read_frame(&mut read, end).await {
                if f.kind == frame::DATA {
                    received.fetch_add(f.payload.len(), Ordering::SeqCst);
                }
            }
        }
    });
    let served_for = Instant::now() + Duration::from_secs(5);
    let mut granted = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < served_for {
        tick.tick().await;
        let now = received.load(Ordering::SeqCst);
        if now > granted {
            let mut update = frame::window_update(0, now - granted);
            update.extend(frame::window_update(1, now - granted));
            write.write_all(&update).await.expect("the proxy closed a connection whose client kept up");
            granted = now;
        }
        assert!(!reader.is_finished(), "the proxy closed a connection whose client kept up");
    }
    let received = received.load(Ordering::SeqCst);
    // The first window and the send buffer are 192 KiB: beyond that,
    // every byte came through a stall on flow control.
    assert!(received > 512 << 10, "only {received} bytes in 5 s");
    assert!(!dropped.load(Ordering::SeqCst), "the proxy let go of the response");
    assert_eq!(client_timeouts(&proxy, "send").await, 0.0, "a client that kept up was counted as cut off");
    reader.abort();
}

// ---------------------------------------------------------------------------
// 6. Broken upstreams.
// ---------------------------------------------------------------------------

/// The upstream answers its first request with `broken`, every later one
/// correctly. The client's first request gets `Outcome` (checked by the
/// caller), and the connection is closed; the second (on a fresh client
/// connection) succeeds on a *new* upstream connection — the broken one is
/// never reused.
async fn broken_then_good(broken: Reply) -> Outcome {
    let upstream = RawUpstream::scripted(move |n, _| if n == 0 { broken.clone() } else { Reply::keep(OK) }).await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    let out = exchange(proxy.addr, b"GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await;
    assert!(out.closed, "{}", out.raw);
    assert_eq!(upstream.requests().len(), 1, "{:#?}", upstream.requests());

    assert_fresh_request_ok(&proxy, &upstream, "/second").await;
    let seen = upstream.requests();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1].conn, 1, "the second request went over the broken connection: {seen:#?}");
    assert_eq!(upstream.conns(), 2);
    out
}

/// The proxy's own 502, in a short plain text.
fn assert_proxy_502(out: &Outcome) {
    let answer = out.only();
    assert_eq!(answer.status, 502, "{}", out.raw);
    assert!(answer.header("content-type").is_some_and(|v| v.starts_with("text/plain")), "{}", out.raw);
    assert!(answer.complete && !answer.body.is_empty(), "{}", out.raw);
}

/// A body cut short: the upstream's 200 head has already gone on to the
/// client with its `Content-Length: 100`, then the 5 bytes that came, then
/// the close — a response that can never look complete.
fn assert_cut_short(out: &Outcome) {
    let answer = out.only();
    assert_eq!(answer.status, 200, "{}", out.raw);
    assert_eq!(answer.header("content-length"), Some("100"), "{}", out.raw);
    assert_eq!(answer.body, b"short", "{}", out.raw);
    assert!(!answer.complete, "a truncated upstream answer reached the client as complete: {}", out.raw);
}

#[tokio::test]
async fn upstream_garbage_status_line_is_502() {
    assert_proxy_502(&broken_then_good(Reply::keep(&b"HTTP/1.1 abc\r\n\r\n"[..])).await);
}

#[tokio::test]
async fn upstream_conflicting_content_lengths_is_502() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec();
    assert_proxy_502(&broken_then_good(Reply::keep(reply)).await);
}

/// The backend promises 100 bytes, sends 5 and closes.
#[tokio::test]
async fn upstream_truncated_body_never_looks_complete() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec();
    assert_cut_short(&broken_then_good(Reply::close(reply)).await);
}

/// The backend promises 100 bytes, sends 5 and resets the connection.
#[tokio::test]
async fn upstream_reset_mid_response_never_looks_complete() {
    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec();
    assert_cut_short(&broken_then_good(Reply::reset(reply)).await);
}

/// An upstream that sends its head and 5 of 100 body bytes, then goes
/// silent with the connection open. `request_timeout` covers only the
/// response head, so nothing bounds the rest: the client connection and the
/// upstream connection stay open for as long as the upstream likes. Expected:
/// the exchange is cut off (connection closed, counted as an upstream
/// timeout) after a bounded silence.
#[tokio::test]
async fn upstream_stalling_mid_body_is_cut_off() {
    let stall = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort".to_vec();
    let upstream =
        RawUpstream::scripted(move |n, _| if n == 0 { Reply::stall(stall.clone()) } else { Reply::keep(OK) }).await;
    let limits = "request_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nidle_timeout = \"1s\"";
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(limits).build()).await;
    let request = b"GET /stall HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let out = exchange_within(proxy.addr, request, Duration::from_secs(6)).await;
    assert!(
        out.closed,
        "a response stalled mid-body was still open after 6 s with every timeout at 1 s: {:?}",
        out.raw
    );
    assert_cut_short(&out);
    assert_fresh_request_ok(&proxy, &upstream, "/fresh").await;
}
