//! What the proxy answers itself (SPEC §3): 404 for no route, 431 for an
//! oversize head, 400 for malformed framing, 502 / 504 for upstream
//! failures, the retry-once rule for failed connects — and that none of it
//! panics or stops the proxy serving.
//!
//! Malformed requests are written as raw bytes on a TCP socket, since no
//! well-behaved client library would send them.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Generous bound for anything that should take milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// One pool `app` over `backends`, one route; `route_extra` goes into the
/// route, `server` is an optional `[server]` table with its own `listen`.
fn pool_config(backends: &[SocketAddr], lb: &str, server: &str, route_extra: &str) -> String {
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"{server}
[pools.app]
backends = [{}]
{lb}
[[routes]]
name = "app"
split = {{ app = 100 }}
{route_extra}
"#,
        backends.join(", ")
    )
}

/// What came back on a connection, and whether the proxy closed it.
struct Exchange {
    answer: String,
    closed: bool,
}

/// Send `raw` on a new connection and read until the proxy closes it or the
/// deadline passes.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut out = Vec::new();
    let closed = match timeout(DEADLINE, stream.read_to_end(&mut out)).await {
        Err(_) => false,
        Ok(Ok(_)) => true,
        // A reset after the answer still counts as closed.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Ok(Err(e)) => panic!("read failed: {e}"),
    };
    Exchange { answer: String::from_utf8_lossy(&out).into_owned(), closed }
}

/// Send a malformed request `raw`: expect 400 and the connection closed.
async fn assert_rejected_400_and_closed(addr: SocketAddr, raw: &[u8]) -> String {
    let Exchange { answer, closed } = exchange(addr, raw).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(closed, "connection still open {DEADLINE:?} after the 400: {answer:?}");
    answer
}

/// The status code of a raw HTTP/1.1 answer.
fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 answer: {answer:?}"))
}

/// The body of a raw answer (everything after the head).
fn body_of(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// An address that refuses connections while the returned socket lives: it
/// is bound (without `SO_REUSEADDR`) but never listens. Unlike a port bound
/// and released (`support::dead_addr`), its port cannot be handed to another
/// test's `127.0.0.1:0` listener running in parallel in this binary — which
/// did happen: a "dead" backend turned out to be another test's proxy.
fn refusing_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// An upstream that accepts connections, reads requests and never answers.
async fn silent_upstream() -> Upstream {
    Upstream::with_handler("silent", |_req| std::future::pending::<Response<TestBody>>()).await
}

/// Read one request, its `Content-Length` body included (the proxy never
/// pipelines); false if the connection ended or failed first.
async fn read_head(stream: &mut TcpStream) -> bool {
    read_request(stream, &mut Vec::new()).await.is_some()
}

/// A raw upstream that reads each connection's first request head, writes
/// `response` and closes the connection. Counts the connections it accepted.
async fn answer_once_and_close(response: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, accepted, task)
}

/// A raw upstream that answers every request with a 200 declaring 100 bytes,
/// sends 5 and closes the connection.
async fn truncating_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let (addr, _, task) = answer_once_and_close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").await;
    (addr, task)
}

/// Count panics on the calling thread from now on. `#[tokio::test]` runs a
/// current-thread runtime, so the proxy's tasks run (and would panic) on
/// the test's own thread; panics of tests on other threads are not counted.
fn count_panics_on_this_thread() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let me = std::thread::current().id();
    let counter = count.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    count
}

#[tokio::test]
async fn no_matching_route_is_404_with_a_short_text_body() {
    let upstream = Upstream::named("shop").await;
    let config = pool_config(&[upstream.addr], "", "", "host = \"shop.example.com\"\npath_prefix = \"/api\"");
    let proxy = TestProxy::start(&config).await;
    let client = client();

    for (host, path, why) in [
        ("other.example.com", "/api", "another host"),
        ("shop.example.com", "/web", "a path outside the prefix"),
        ("shop.example.com", "/apiary", "a prefix that is not a whole segment"),
    ] {
        let a = get(&client, &proxy.url(path), &[("host", host)]).await;
        assert_eq!(a.status, 404, "{why}: {host}{path}");
        assert!(!a.body.is_empty() && a.body.len() < 200, "{why}: body {:?}", a.body);
        assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/plain"), "{why}: {:?}", a.headers);
    }
    assert_eq!(upstream.hits(), 0);
    // The route itself works, so the 404s above are the proxy's misses.
    assert_eq!(get(&client, &proxy.url("/api/items"), &[("host", "shop.example.com")]).await.body, "shop");
}

#[tokio::test]
async fn oversize_request_head_is_431_and_the_proxy_keeps_serving() {
    let upstream = Upstream::named("app").await;
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_request_header_bytes = 2048\n";
    let proxy = TestProxy::start(&pool_config(&[upstream.addr], "", server, "")).await;

    let big = "a".repeat(4096);
    let request = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(proxy.addr, request.as_bytes(), DEADLINE).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    assert_eq!(upstream.hits(), 0);

    // Under the limit is fine, and the proxy still serves.
    let small =
        format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Small: {}\r\nConnection: close\r\n\r\n", "a".repeat(512));
    let answer = raw_exchange(proxy.addr, small.as_bytes(), DEADLINE).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.body, "app");
}

#[tokio::test]
async fn dead_only_backend_is_502() {
    let (dead, _held) = refusing_addr();
    let proxy = TestProxy::start(&pool_config(&[dead], "", "", "")).await;
    let a = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(a.status, 502);
    assert!(!a.body.is_empty() && a.body.len() < 200, "body {:?}", a.body);
}

#[tokio::test]
async fn upstream_that_never_answers_is_504_after_request_timeout() {
    let silent = silent_upstream().await;
    let server = "[server]\nlisten = [\"127.0.0.1:0\"]\nrequest_timeout = \"500ms\"\n";
    let proxy = TestProxy::start(&pool_config(&[silent.addr], "", server, "")).await;
    let a = timeout(DEADLINE, get(&client(), &proxy.url("/"), &[]))
        .await
        .expect("no answer long after request_timeout (500ms)");
    assert_eq!(a.status, 504);
    assert!(!a.body.is_empty() && a.body.len() < 200, "body {:?}", a.body);
    assert_eq!(silent.hits(), 1, "the request should have reached the upstream");
}

#[tokio::test]
async fn upstream_closing_mid_response_never_looks_complete() {
    let (upstream, _task) = truncating_upstream().await;
    let proxy = TestProxy::start(&pool_config(&[upstream], "", "", "")).await;
    let request = Request::get(proxy.url("/")).body(Full::new(Bytes::new())).unwrap();
    let outcome = timeout(DEADLINE, async {
        let response = match client().request(request).await {
            Ok(r) => r,
            Err(e) => return format!("request error: {e}"),
        };
        let status = response.status();
        match response.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                assert!(
                    !(status == StatusCode::OK && body.len() == 100),
                    "a truncated upstream answer arrived as a complete 200 with 100 bytes"
                );
                format!("{status} with {} body bytes", body.len())
            }
            Err(e) => format!("{status}, then body error: {e}"),
        }
    })
    .await
    .expect("the client neither got an answer nor an error");
    eprintln!("truncated upstream answer seen by the client as: {outcome}");
}

async fn dead_backend_is_retried_on_live_one(lb: &str) {
    let (dead, _held) = refusing_addr();
    let live = Upstream::named("live").await;
    let proxy = TestProxy::start(&pool_config(&[dead, live.addr], lb, "", "")).await;
    let client = client();
    for i in 0..200 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, 200, "request {i} ({lb:?}): {}", a.body);
        assert_eq!(a.body, "live");
    }
    assert_eq!(live.hits(), 200, "each request reaches the live backend exactly once");
}

#[tokio::test]
async fn dead_backend_is_retried_on_live_one_round_robin() {
    dead_backend_is_retried_on_live_one("lb = \"round_robin\"").await;
}

#[tokio::test]
async fn dead_backend_is_retried_on_live_one_p2c() {
    dead_backend_is_retried_on_live_one("").await;
}

/// Send `method` with a body and the id `x-request-id: {id}`; the status.
async fn send_with_body(url: &str, method: &str, id: &str, body: &'static str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("x-request-id", id)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response =
        timeout(DEADLINE, client().request(request)).await.expect("request timed out").expect("request failed");
    let status = response.status();
    let _ = response.into_body().collect().await;
    status
}

/// How many requests with `x-request-id: {id}` the upstream received.
fn received(upstream: &Upstream, id: &str) -> usize {
    upstream.seen().iter().filter(|s| s.headers.get("x-request-id").is_some_and(|v| v == id)).count()
}

/// A failed connect is retried only when replaying is safe: a POST with a
/// body is not, a PUT (idempotent) or a body-less POST is.
#[tokio::test]
async fn failed_connect_is_retried_only_when_replay_is_safe() {
    let (dead, _held) = refusing_addr();
    let live = Upstream::named("live").await;
    let proxy = TestProxy::start(&pool_config(&[dead, live.addr], "lb = \"round_robin\"", "", "")).await;
    let url = proxy.url("/orders");

    let mut refused = 0;
    for i in 0..10 {
        let id = format!("post-{i}");
        let status = send_with_body(&url, "POST", &id, "{\"order\":1}").await;
        match status.as_u16() {
            502 => {
                refused += 1;
                assert_eq!(received(&live, &id), 0, "{id}: answered 502 yet reached the live backend");
            }
            200 => assert_eq!(received(&live, &id), 1, "{id}: the live backend got it more or less than once"),
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    assert!(refused >= 1, "no POST with a body ever hit the dead backend first, or it was retried");

    for i in 0..10 {
        let id = format!("put-{i}");
        let status = send_with_body(&url, "PUT", &id, "{\"order\":2}").await;
        assert_eq!(status, 200, "{id}: an idempotent PUT must be retried on the live backend");
        assert_eq!(received(&live, &id), 1, "{id}");
    }
    for i in 0..10 {
        let id = format!("empty-post-{i}");
        let status = send_with_body(&url, "POST", &id, "").await;
        assert_eq!(status, 200, "{id}: a POST without a body must be retried on the live backend");
        assert_eq!(received(&live, &id), 1, "{id}");
    }
}

#[tokio::test]
async fn request_without_host_is_400_and_closed() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&pool_config(&[upstream.addr], "", "", "")).await;
    let answer = assert_rejected_400_and_closed(proxy.addr, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(!body_of(&answer).is_empty(), "{answer}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn two_host_headers_are_400_and_closed() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&pool_config(&[upstream.addr], "", "", "")).await;
    assert_rejected_400_and_closed(proxy.addr, b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").await;
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn conflicting_content_lengths_are_400_and_closed() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&pool_config(&[upstream.addr], "", "", "")).await;
    assert_rejected_400_and_closed(
        proxy.addr,
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
    assert_eq!(upstream.hits(), 0);
}

/// `Content-Length` and `Transfer-Encoding` together, in both orders, with a
/// second request smuggled after the chunked body.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_never_reaches_upstream() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&pool_config(&[upstream.addr], "", "", "")).await;
    let heads =
        ["Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"];
    for (i, framing) in heads.iter().enumerate() {
        let raw = format!(
            "POST /cl-te-{i} HTTP/1.1\r\nHost: a.test\r\n{framing}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"
        );
        let Exchange { answer, closed } = exchange(proxy.addr, raw.as_bytes()).await;
        let status = status_of(&answer);
        // SPEC §3: 400, connection closed, nothing forwarded.
        assert_eq!(status, 400, "{framing:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{framing:?}: more than one answer: {answer}");
        assert!(closed, "{framing:?}: connection still open after the answer: {answer}");
    }
    let seen = upstream.seen();
    assert!(seen.is_empty(), "the upstream received an ambiguous request: {seen:?}");
}

/// Every kind of bad request above, against one proxy: it answers each,
/// never panics, and still serves a normal request afterwards.
#[tokio::test]
async fn proxy_survives_every_bad_request_without_panicking() {
    let panics = count_panics_on_this_thread();
    let live = Upstream::named("live").await;
    let silent = silent_upstream().await;
    let (truncating, _task) = truncating_upstream().await;
    let (dead, _held) = refusing_addr();
    let config = format!(
        r#"[server]
listen = ["127.0.0.1:0"]
request_timeout = "500ms"
max_request_header_bytes = 2048
[pools.live]
backends = ["{}"]
[pools.dead]
backends = ["{dead}"]
[pools.silent]
backends = ["{}"]
[pools.truncating]
backends = ["{truncating}"]
[[routes]]
name = "live"
host = "live.test"
split = {{ live = 1 }}
[[routes]]
name = "dead"
host = "dead.test"
split = {{ dead = 1 }}
[[routes]]
name = "silent"
host = "silent.test"
split = {{ silent = 1 }}
[[routes]]
name = "truncating"
host = "truncating.test"
split = {{ truncating = 1 }}
"#,
        live.addr, silent.addr
    );
    let proxy = TestProxy::start(&config).await;
    let addr = proxy.addr;

    let big = format!("GET / HTTP/1.1\r\nHost: live.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "a".repeat(4096));
    let cases: [(&str, &[u8], Option<u16>); 12] = [
        ("no host", b"GET / HTTP/1.1\r\n\r\n", Some(400)),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: live.test\r\nHost: b\r\n\r\n", Some(400)),
        (
            "two lengths",
            b"POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            Some(400),
        ),
        (
            "length and chunked",
            b"POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            None,
        ),
        ("oversize head", big.as_bytes(), Some(431)),
        ("no route", b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n", Some(404)),
        ("dead pool", b"GET / HTTP/1.1\r\nHost: dead.test\r\nConnection: close\r\n\r\n", Some(502)),
        ("silent pool", b"GET / HTTP/1.1\r\nHost: silent.test\r\nConnection: close\r\n\r\n", Some(504)),
        ("truncating pool", b"GET / HTTP/1.1\r\nHost: truncating.test\r\nConnection: close\r\n\r\n", None),
        ("garbage", b"\x00\x01\x02 not http at all\r\n\r\n", None),
        ("broken h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff", None),
        ("bad method token", b"G(E)T / HTTP/1.1\r\nHost: live.test\r\n\r\n", None),
    ];
    for (what, raw, expected) in cases {
        let answer = raw_exchange(addr, raw, DEADLINE).await;
        if let Some(code) = expected {
            assert_eq!(status_of(&answer), code, "{what}: {answer}");
        }
    }

    // Clients that give up half-way: in the head, and in the body.
    for raw in [&b"GET / HTT"[..], b"POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 100\r\n\r\n0123456789"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw).await.unwrap();
        drop(stream);
    }
    // A client that sends a whole head and hangs up before the slow answer.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: silent.test\r\n\r\n").await.unwrap();
    drop(stream);

    let a = get(&client(), &proxy.url("/"), &[("host", "live.test")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "live");
    assert_eq!(panics.load(Ordering::SeqCst), 0, "the proxy panicked (see the output above)");
}

/// A raw upstream that answers each connection's first request with a
/// keep-alive 200 (no `Connection: close`) and then closes the connection:
/// the pattern of a backend whose keep-alive timeout is shorter than the
/// proxy's.
async fn one_shot_upstream() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    answer_once_and_close(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await
}

/// A connection the backend has closed is never used for another request
/// (it is not pooled when it closed before its body ended, skipped at
/// checkout when it closed while idle, and a request hyper hands back
/// unsent goes again on a fresh one): every request succeeds, each on a
/// connection of its own.
#[tokio::test]
async fn connections_the_backend_closed_after_one_response_are_not_reused() {
    let (addr, accepted, _task) = one_shot_upstream().await;
    let proxy = TestProxy::start(&pool_config(&[addr], "", "", "")).await;
    let client = client();
    for i in 0..30 {
        let answer = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 30, "one upstream connection per request");
}

/// How a raw upstream leaves a request it does not answer.
#[derive(Clone, Copy, Debug)]
enum Hangup {
    /// It reads the request, then closes: the proxy reads the end of the stream.
    AfterReading,
    /// It closes with the request unread in its buffer: the proxy reads a reset.
    WithRequestUnread,
}

/// What a raw upstream has received.
#[derive(Default)]
struct Received {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// A raw upstream that answers a request with a keep-alive 200 `ok` when
/// `answers(n, on_connection)` — `n` counts the requests it received before
/// this one, `on_connection` those before it on the same connection — and
/// otherwise closes the connection the way `hangup` says, answering
/// nothing. This is a backend closing a keep-alive connection as idle just
/// as the proxy writes the next request on it, made deterministic.
async fn closing_upstream(
    hangup: Hangup,
    answers: fn(usize, usize) -> bool,
) -> (SocketAddr, Arc<Received>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Received::default());
    let counts = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut first_byte = [0u8; 1];
                for on_connection in 0.. {
                    // Wait for the request's first bytes without taking them.
                    match stream.peek(&mut first_byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let n = counts.requests.fetch_add(1, Ordering::SeqCst);
                    let answer = answers(n, on_connection);
                    if (answer || matches!(hangup, Hangup::AfterReading)) && !read_head(&mut stream).await {
                        return;
                    }
                    if !answer {
                        return;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received, task)
}

/// Longer than a pooled connection must sit idle before a request on it keeps
/// a copy to send again (500 ms): the backends of these tests close
/// connections idle this long, as a backend with a short keep-alive timeout
/// does. The proxy's own idle timeout is far longer.
const KEEP_ALIVE_EXPIRED: Duration = Duration::from_millis(700);

/// A GET written on a pooled connection that the backend closes unanswered
/// goes again on a new connection: the client never sees the race, and
/// nothing counts against the backend.
async fn get_on_a_pooled_connection_closed_unanswered_is_sent_again(hangup: Hangup) {
    let (addr, received, _task) = closing_upstream(hangup, |_, on_connection| on_connection == 0).await;
    let proxy = TestProxy::start(&pool_config(&[addr], "", "", "")).await;
    let client = client();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
        }
        let answer = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"), "{hangup:?}: request {i}");
    }
    // Every request after the first met a closed connection first.
    assert_eq!(received.requests.load(Ordering::SeqCst), 5, "{hangup:?}");
    assert_eq!(received.connections.load(Ordering::SeqCst), 3, "{hangup:?}");
    let metrics = get(&client, &proxy.admin_url("/metrics"), &[]).await.body;
    let counted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cutover_upstream_failures_total{") || l.contains("code=\"5xx\""))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(counted.is_empty(), "{hangup:?}: the race counted as a failure: {counted:?}");
}

#[tokio::test]
async fn get_on_a_pooled_connection_closed_after_reading_is_sent_again() {
    get_on_a_pooled_connection_closed_unanswered_is_sent_again(Hangup::AfterReading).await;
}

#[tokio::test]
async fn get_on_a_pooled_connection_reset_is_sent_again() {
    get_on_a_pooled_connection_closed_unanswered_is_sent_again(Hangup::WithRequestUnread).await;
}

/// A request that must not reach the backend twice (a POST, or a body the
/// proxy did not keep) is not sent again when its pooled connection closes
/// unanswered: the client gets a 502 and decides. The first request is of
/// the same kind, so the second finds its connection pooled (requests with
/// and without a body keep separate connections).
#[tokio::test]
async fn request_that_may_not_be_repeated_is_not_sent_again() {
    for (method, body) in [("POST", ""), ("POST", "{\"order\":1}"), ("PUT", "{\"order\":2}")] {
        let (addr, received, _task) =
            closing_upstream(Hangup::AfterReading, |_, on_connection| on_connection == 0).await;
        let proxy = TestProxy::start(&pool_config(&[addr], "", "", "")).await;
        let url = proxy.url("/orders");
        assert_eq!(send_with_body(&url, method, "first", body).await, 200, "{method} {body:?}: the first request");
        tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
        assert_eq!(send_with_body(&url, method, "second", body).await, 502, "{method} {body:?}");
        assert_eq!(received.requests.load(Ordering::SeqCst), 2, "{method} {body:?}: sent again");
    }
}

/// A request is sent again once at most, and only after a pooled
/// connection failed: a backend that closes every connection unanswered
/// gets each request twice, not once per pooled connection.
#[tokio::test]
async fn request_is_sent_again_once_at_most() {
    let (addr, received, _task) = closing_upstream(Hangup::AfterReading, |n, _| n == 0).await;
    let proxy = TestProxy::start(&pool_config(&[addr], "", "", "")).await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 200);
    tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 502, "nothing answered the second request");
    assert_eq!(received.requests.load(Ordering::SeqCst), 3, "the second request: once pooled, once fresh");
    // A fresh connection that closes unanswered is the backend's failure.
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 502);
    assert_eq!(received.requests.load(Ordering::SeqCst), 4, "a request on a fresh connection went again");
}
