//! How the proxy reads an HTTP/1.1 response from a backend (RFC 9112 §6):
//! where the body ends — `Content-Length`, chunked, or the connection's
//! close — which statuses have no body whatever their headers say, what a
//! malformed or cut-short response becomes, and whether the connection may
//! carry the next request afterwards.
//!
//! These tests pin the behaviour of the upstream HTTP/1.1 client as it is,
//! so that a replacement for it can be checked against them. The backend is
//! therefore the harness's [`RawUpstream`], answering with bytes written by
//! hand, exactly as a test spells them — including split into small pieces,
//! so an answer arrives over many reads. Connection reuse is asserted from
//! the backend's side with [`RawUpstream::by_conn`]: `[["GET /1", "GET /2"]]`
//! is one connection carrying two requests, `[["GET /1"], ["GET /2"]]` two.
//!
//! Every wait has a generous deadline; nothing asserts a duration.
//!
//! Covered in `hostile.rs`, so not repeated here: a garbage status line,
//! two different `Content-Length`s in a response, and a body cut short by
//! the backend's close or reset (`upstream_*`).

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// `len` bytes of printable text that is not one repeated byte, so a
/// dropped or repeated piece shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"0123456789abcdefghijklmnopqrstuvwxyz"[(i * 7 + i / 36) % 36]).collect()
}

// ---------------------------------------------------------------------------
// The proxy and its clients.
// ---------------------------------------------------------------------------

/// A proxy with one pool holding `backend` and one catch-all route.
async fn proxy_for(backend: &RawUpstream) -> TestProxy {
    TestProxy::start(&Config::one_pool(&[backend.addr]).build()).await
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A response as the client read it: the body, or why reading it failed.
#[derive(Debug)]
struct Read {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Result<Bytes, String>,
}

/// Send `method url` from `client` (no body), read the answer whole.
async fn fetch(client: &Client, method: &str, url: &str) -> Read {
    let request = Request::builder().method(method).uri(url).body(Full::new(Bytes::new())).unwrap();
    let response = timeout(DEADLINE, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no response head within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: request failed: {e}"));
    let (parts, body) = response.into_parts();
    let body = timeout(DEADLINE, body.collect())
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: body did not end within {DEADLINE:?}"))
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Read { status: parts.status, version: parts.version, headers: parts.headers, body }
}

/// GET `path` and expect a complete 200 with `body`.
async fn get_ok(client: &Client, proxy: &TestProxy, path: &str, body: &[u8]) -> Read {
    let read = fetch(client, "GET", &proxy.url(path)).await;
    assert_eq!(read.status, 200, "GET {path}: {read:?}");
    let got = read.body.as_ref().unwrap_or_else(|e| panic!("GET {path}: body failed: {e}"));
    assert!(got == body, "GET {path}: body of {} bytes differs from the {} expected: {got:?}", got.len(), body.len());
    read
}

/// GET `/1` and `/2` through `proxy`, answered `first` and `second`, and
/// check each went over a backend connection of its own (`why`: what made
/// the first unusable). Returns both reads for the caller's own checks.
async fn two_gets_on_two_connections(
    backend: &RawUpstream,
    proxy: &TestProxy,
    first: &[u8],
    second: &[u8],
    why: &str,
) -> (Read, Read) {
    let client = client();
    let one = get_ok(&client, proxy, "/1", first).await;
    let two = get_ok(&client, proxy, "/2", second).await;
    assert_eq!(backend.by_conn(), [vec!["GET /1"], vec!["GET /2"]], "{why}");
    (one, two)
}

// ---------------------------------------------------------------------------
// Framing: where the body ends.
// ---------------------------------------------------------------------------

/// A `Content-Length` body arrives byte for byte, with its length, whether
/// it comes in one write or in many small pieces (the head split too); and
/// both requests share one upstream connection.
#[tokio::test]
async fn content_length_body_is_forwarded_exactly_on_one_reused_connection() {
    let big = pattern(70_000);
    let small = b"a small body, sent a few bytes at a time".to_vec();
    let (b, s) = (big.clone(), small.clone());
    let backend = RawUpstream::scripted(move |_, asked| match asked.path() {
        "/big" => Reply::keep(with_length(&b)),
        _ => Reply::keep(with_length(&s)).in_pieces(5),
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    let read = get_ok(&client, &proxy, "/big", &big).await;
    assert_eq!(read.headers["content-length"], "70000");
    let read = get_ok(&client, &proxy, "/pieces", &small).await;
    assert_eq!(read.headers["content-length"], small.len().to_string().as_str());

    assert_eq!(backend.by_conn(), [vec!["GET /big", "GET /pieces"]], "one connection, both requests");
}

/// A chunked body with chunk extensions (bare and quoted), upper-case and
/// zero-padded hex sizes and several chunks is decoded into the bytes the
/// chunks carry — read in one piece, then split every few bytes (mid size
/// line, mid CRLF, mid data) — and the connection carries both requests.
#[tokio::test]
async fn chunked_body_with_extensions_and_upper_case_sizes_is_decoded_on_one_reused_connection() {
    let thirty_one = "ABCDEFGHIJKLMNOPQRSTUVWXYZ01234";
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n\
         1A;name=\"quoted; value\";flag\r\nabcdefghijklmnopqrstuvwxyz\r\n\
         00B\r\n, and more.\r\n\
         1F\r\n{thirty_one}\r\n\
         0;last=yes\r\n\r\n"
    );
    let expected = format!("helloabcdefghijklmnopqrstuvwxyz, and more.{thirty_one}");
    let backend = RawUpstream::scripted(move |n, _| {
        let reply = Reply::keep(chunked.clone());
        if n == 0 {
            reply
        } else {
            reply.in_pieces(3)
        }
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    get_ok(&client, &proxy, "/whole", expected.as_bytes()).await;
    get_ok(&client, &proxy, "/pieces", expected.as_bytes()).await;
    assert_eq!(backend.by_conn(), [vec!["GET /whole", "GET /pieces"]], "one connection, both requests");
}

/// A chunked body ending in trailer fields.
const WITH_TRAILERS: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum, X-Count\r\n\r\n\
    5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\nX-Count: 2\r\n\r\n";

/// The two requests of a trailers test went over one connection: a body
/// that ends in trailers has ended, and gives its connection back.
fn assert_one_connection_carried_both(backend: &RawUpstream) {
    assert_eq!(backend.by_conn(), [vec!["GET /1", "GET /2"]], "the connection was not reused after trailers");
}

/// An HTTP/1.1 client that accepts trailers (`TE: trailers`) gets the body
/// of a chunked response and its trailer fields, and the next request
/// succeeds too, on the same upstream connection. The backend's `Trailer`
/// field must reach the client for that: hyper's server, like any HTTP/1.1
/// sender, writes only the trailer fields it announces.
#[tokio::test]
async fn chunked_body_with_trailers_reaches_an_http1_client_intact() {
    let backend = RawUpstream::always(Reply::keep(WITH_TRAILERS)).await;
    let proxy = proxy_for(&backend).await;
    let client = client();
    for path in ["/1", "/2"] {
        let request = Request::get(proxy.url(path)).header("te", "trailers").body(Full::new(Bytes::new())).unwrap();
        let response = timeout(DEADLINE, client.request(request)).await.expect("no response head").unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let announced = response.headers().get("trailer").map(|v| v.as_bytes().to_vec());
        assert_eq!(announced.as_deref(), Some(&b"X-Checksum, X-Count"[..]), "{path}");
        let collected = timeout(DEADLINE, response.into_body().collect()).await.expect("body did not end").unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_else(|| panic!("{path}: no trailers"));
        assert_eq!(trailers.get("x-checksum").map(|v| v.as_bytes()), Some(&b"abc123"[..]), "{path}: {trailers:?}");
        assert_eq!(trailers.get("x-count").map(|v| v.as_bytes()), Some(&b"2"[..]), "{path}: {trailers:?}");
        assert_eq!(collected.to_bytes(), "hello world", "{path}");
    }
    assert_one_connection_carried_both(&backend);
}

/// An HTTP/2 client gets the trailer fields of an upstream chunked response
/// as trailers (what gRPC-style clients rely on), after the body, on every
/// request.
#[tokio::test]
async fn chunked_trailers_reach_an_http2_client() {
    let backend = RawUpstream::always(Reply::keep(WITH_TRAILERS)).await;
    let proxy = proxy_for(&backend).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(conn);
    for path in ["/1", "/2"] {
        let request = Request::get(format!("http://app.test{path}"))
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = timeout(DEADLINE, sender.send_request(request)).await.expect("no response head").unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let collected = timeout(DEADLINE, response.into_body().collect()).await.expect("body did not end").unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_else(|| panic!("{path}: no trailers"));
        assert_eq!(trailers.get("x-checksum").map(|v| v.as_bytes()), Some(&b"abc123"[..]), "{path}: {trailers:?}");
        assert_eq!(trailers.get("x-count").map(|v| v.as_bytes()), Some(&b"2"[..]), "{path}: {trailers:?}");
        assert_eq!(collected.to_bytes(), "hello world", "{path}");
    }
    assert_one_connection_carried_both(&backend);
}

/// No `Content-Length`, no `Transfer-Encoding`: the body runs to the close
/// of the connection (RFC 9112 §6.3 rule 8). The client gets all of it —
/// far more than one read's worth — and the next request goes on a new
/// connection.
#[tokio::test]
async fn close_delimited_body_is_read_to_the_close_and_the_next_request_uses_a_new_connection() {
    let body = pattern(200_000);
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    answer.extend_from_slice(&body);
    let backend = RawUpstream::always(Reply::close(answer)).await;
    let proxy = proxy_for(&backend).await;
    two_gets_on_two_connections(&backend, &proxy, &body, &body, "one connection per request").await;
}

/// A backend that says `Connection: close` but leaves its side open: the
/// proxy does not put a second request on that connection, and closes it.
#[tokio::test]
async fn connection_close_response_is_not_reused() {
    let backend = RawUpstream::scripted(|n, _| {
        Reply::keep(format!("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n{}", n + 1))
    })
    .await;
    let proxy = proxy_for(&backend).await;
    two_gets_on_two_connections(&backend, &proxy, b"1", b"2", "a `Connection: close` connection was reused").await;
    backend.until_ended(0, "the proxy to close the connection that said `Connection: close`").await;
}

/// An HTTP/1.0 response without `Connection: keep-alive` ends its
/// connection's use (RFC 9112 §9.3), even when the backend leaves it open;
/// the client is answered in the proxy's own version, HTTP/1.1 (RFC 9110
/// §6.2).
#[tokio::test]
async fn http10_response_without_keep_alive_is_not_reused() {
    let backend =
        RawUpstream::scripted(|n, _| Reply::keep(format!("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n{}", n + 1)))
            .await;
    let proxy = proxy_for(&backend).await;
    let (read, _) =
        two_gets_on_two_connections(&backend, &proxy, b"1", b"2", "an HTTP/1.0 connection was reused").await;
    assert_eq!(read.version, Version::HTTP_11, "the backend's HTTP/1.0 reached the client");
    backend.until_ended(0, "the proxy to close the HTTP/1.0 connection").await;
}

/// Interim responses (`100 Continue`, `103 Early Hints`) before the final
/// one are read past: the client gets the final 200 and its body, none of
/// the interim fields, and the connection carries the next request.
#[tokio::test]
async fn informational_responses_before_the_final_one_are_skipped() {
    let backend = RawUpstream::always(Reply::keep(
        &b"HTTP/1.1 100 Continue\r\n\r\n\
           HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n\
           HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: yes\r\n\r\nfinal"[..],
    ))
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    for path in ["/1", "/2"] {
        let read = get_ok(&client, &proxy, path, b"final").await;
        assert_eq!(read.headers["x-final"], "yes", "{path}");
        assert!(read.headers.get("link").is_none(), "{path}: the 103's field reached the final response: {read:?}");
    }
    assert_eq!(backend.by_conn(), [vec!["GET /1", "GET /2"]], "one connection, both requests");
}

/// The answer to HEAD has no body, whatever its `Content-Length` says
/// (RFC 9110 §9.3.2): the client gets the 200 with `content-length: 1234`
/// and nothing after it, and the connection carries the next GET.
#[tokio::test]
async fn head_response_has_no_body_despite_its_content_length() {
    let backend = RawUpstream::scripted(|_, asked| match asked.method() {
        "HEAD" => Reply::keep(&b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/plain\r\n\r\n"[..]),
        _ => Reply::keep(OK),
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    let head = fetch(&client, "HEAD", &proxy.url("/doc")).await;
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.headers["content-length"], "1234", "{head:?}");
    assert_eq!(head.body.as_deref(), Ok(&b""[..]), "{head:?}");
    get_ok(&client, &proxy, "/after", b"ok").await;
    assert_eq!(backend.by_conn(), [vec!["HEAD /doc", "GET /after"]], "one connection, both requests");
}

/// 204 and 304 have no body (RFC 9112 §6.3 rule 1) — a 304's
/// `Content-Length` describes the representation it stands for, not bytes
/// that follow — and the connection carries the next request.
#[tokio::test]
async fn no_body_statuses_204_and_304_leave_the_connection_reusable() {
    let backend = RawUpstream::scripted(|_, asked| match asked.path() {
        "/204" => Reply::keep(&b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"[..]),
        "/304" => Reply::keep(&b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n"[..]),
        _ => Reply::keep(OK),
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    let read = fetch(&client, "GET", &proxy.url("/204")).await;
    assert_eq!((read.status, read.body.as_deref()), (StatusCode::NO_CONTENT, Ok(&b""[..])), "{read:?}");
    assert_eq!(read.headers["x-kind"], "none");
    let read = fetch(&client, "GET", &proxy.url("/304")).await;
    assert_eq!((read.status, read.body.as_deref()), (StatusCode::NOT_MODIFIED, Ok(&b""[..])), "{read:?}");
    assert_eq!(read.headers["etag"], "\"v1\"");
    get_ok(&client, &proxy, "/after", b"ok").await;
    assert_eq!(backend.by_conn(), [vec!["GET /204", "GET /304", "GET /after"]], "one connection, all three requests");
}

/// A status line with a reason phrase (or an empty one, which RFC 9112 §4
/// allows) and `Content-Length: 0`, then nothing more: an empty success
/// each time, on one connection.
#[tokio::test]
async fn empty_body_with_a_reason_phrase_is_a_success_on_one_reused_connection() {
    let backend = RawUpstream::scripted(|n, _| {
        let reason = if n == 0 { "Everything Is Fine" } else { "" };
        Reply::keep(format!("HTTP/1.1 200 {reason}\r\nContent-Length: 0\r\n\r\n"))
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    get_ok(&client, &proxy, "/1", b"").await;
    get_ok(&client, &proxy, "/2", b"").await;
    assert_eq!(backend.by_conn(), [vec!["GET /1", "GET /2"]], "one connection, both requests");
}

// ---------------------------------------------------------------------------
// Broken and surprising backends.
// ---------------------------------------------------------------------------

/// A response head over 1 MiB — many ordinary fields, or a few huge ones —
/// is refused: the client gets 502, and the next request goes on
/// a new connection.
#[tokio::test]
async fn response_head_over_a_mebibyte_is_502() {
    let many: String = (0..1100).map(|i| format!("X-Filler-{i:04}: {}\r\n", "f".repeat(1000))).collect();
    let huge = format!("X-Huge: {}\r\n", "h".repeat(64 * 1024)).repeat(17);
    for (shape, fields) in [("1100 fields of 1 KB", many), ("17 fields of 64 KiB", huge)] {
        assert!(fields.len() > 1024 * 1024, "{shape}");
        let oversize = format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok");
        let backend =
            RawUpstream::scripted(move |n, _| if n == 0 { Reply::keep(oversize.clone()) } else { Reply::keep(OK) })
                .await;
        let proxy = proxy_for(&backend).await;
        let client = client();

        let read = fetch(&client, "GET", &proxy.url("/huge")).await;
        assert_eq!(read.status, 502, "{shape}: {read:?}");
        get_ok(&client, &proxy, "/after", b"ok").await;
        assert_eq!(backend.by_conn(), [vec!["GET /huge"], vec!["GET /after"]], "{shape}");
    }
}

/// The backend answers with keep-alive, then closes the idle connection
/// soon after (a short keep-alive timeout). The next request, sent once the
/// backend has closed, succeeds — on a new connection — and is never a 502.
#[tokio::test]
async fn backend_closing_an_idle_connection_between_requests_is_not_a_502() {
    let backend = RawUpstream::always(Reply::close_after(OK, Duration::from_millis(50))).await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    get_ok(&client, &proxy, "/1", b"ok").await;
    backend.until_ended(0, "the backend to close its idle connection").await;
    get_ok(&client, &proxy, "/2", b"ok").await;
    assert_eq!(backend.by_conn(), [vec!["GET /1"], vec!["GET /2"]]);
}

/// Bytes after a complete `Content-Length` body (`okGARBAGE`, one write)
/// are not the start of the next response: the first request gets `ok`,
/// the second its own answer on a new connection, and the connection with
/// the stray bytes is closed.
#[tokio::test]
async fn bytes_after_a_complete_response_are_not_read_as_the_next_response() {
    let backend = RawUpstream::scripted(|n, _| {
        if n == 0 {
            Reply::keep(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE"[..])
        } else {
            Reply::keep(with_length(b"second"))
        }
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let why = "the connection with stray bytes was reused";
    two_gets_on_two_connections(&backend, &proxy, b"ok", b"second", why).await;
    backend.until_ended(0, "the proxy to close the connection with stray bytes").await;
}

/// `Transfer-Encoding: chunked` and a `Content-Length` together: the coding
/// frames the body (RFC 9112 §6.3), so the client gets all of it and no
/// `Content-Length` that would cut it short; and the connection, whose
/// framing cannot be trusted, is not reused.
#[tokio::test]
async fn a_chunked_body_beside_a_content_length_arrives_whole_and_ends_the_connection() {
    let backend = RawUpstream::always(Reply::keep(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
    ))
    .await;
    let proxy = proxy_for(&backend).await;
    let why = "a connection with ambiguous framing was reused";
    let (read, _) = two_gets_on_two_connections(&backend, &proxy, b"hello", b"hello", why).await;
    assert_ne!(read.headers.get("content-length").map(|v| v.as_bytes()), Some(&b"3"[..]), "{read:?}");
}

/// Requests without a body and requests with one each keep their own
/// upstream connections: a POST in between does not take the connection the
/// GETs use (which would hand it from the inline client to hyper's for
/// good), and each kind reuses its own.
#[tokio::test]
async fn requests_with_and_without_a_body_each_reuse_their_own_connection() {
    let backend = RawUpstream::always(Reply::keep(OK)).await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    for (method, path) in [("GET", "/1"), ("POST", "/2"), ("GET", "/3"), ("POST", "/4"), ("GET", "/5")] {
        let body = if method == "POST" { Bytes::from_static(b"payload") } else { Bytes::new() };
        let request = Request::builder().method(method).uri(proxy.url(path)).body(Full::new(body)).unwrap();
        let response = timeout(DEADLINE, client.request(request)).await.expect("no response head").unwrap();
        assert_eq!(response.status(), 200, "{method} {path}");
        let body = timeout(DEADLINE, response.into_body().collect()).await.expect("body did not end").unwrap();
        assert_eq!(body.to_bytes(), "ok", "{method} {path}");
    }
    assert_eq!(
        backend.by_conn(),
        [vec!["GET /1", "GET /3", "GET /5"], vec!["POST /2", "POST /4"]],
        "one connection for each kind of request"
    );
}

/// A `101 Switching Protocols` to a request that asked for no upgrade is
/// not an answer the proxy can pass on: the client gets a 502, and the
/// next request goes on a new connection.
#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_upgrade_is_502() {
    let backend = RawUpstream::scripted(|n, _| {
        if n == 0 {
            Reply::keep(&b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"[..])
        } else {
            Reply::keep(OK)
        }
    })
    .await;
    let proxy = proxy_for(&backend).await;
    let client = client();

    let read = fetch(&client, "GET", &proxy.url("/1")).await;
    assert_eq!(read.status, 502, "{read:?}");
    get_ok(&client, &proxy, "/2", b"ok").await;
    assert_eq!(backend.by_conn(), [vec!["GET /1"], vec!["GET /2"]]);
}

/// The same through hyper's client, which carries requests with a body:
/// a response ending in trailers gives its connection back there too.
#[tokio::test]
async fn a_response_ending_in_trailers_to_a_request_with_a_body_gives_its_connection_back() {
    let backend = RawUpstream::always(Reply::keep(WITH_TRAILERS)).await;
    let proxy = proxy_for(&backend).await;
    let client = client();
    for path in ["/1", "/2"] {
        let request = Request::post(proxy.url(path))
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap();
        let response = timeout(DEADLINE, client.request(request)).await.expect("no response head").unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = timeout(DEADLINE, response.into_body().collect()).await.expect("body did not end").unwrap();
        assert_eq!(body.to_bytes(), "hello world", "{path}");
    }
    assert_eq!(backend.by_conn(), [vec!["POST /1", "POST /2"]], "the connection was not reused after trailers");
}
