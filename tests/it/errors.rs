//! What the proxy answers itself (SPEC §3): 404 for no route, 502 / 504
//! for upstream failures, the retry-once rule for failed connects and for
//! pooled connections the backend closed — and that none of it, nor any
//! malformed request, panics or stops the proxy serving.
//!
//! The malformed requests themselves (400, 431, 414, 501: framing, `Host`,
//! header limits) and broken upstream answers are in `hostile.rs`.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// An upstream that accepts connections, reads requests and never answers.
async fn silent_upstream() -> Upstream {
    Upstream::with_handler("silent", |_req| std::future::pending::<Response<TestBody>>()).await
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
    let route = "host = \"shop.example.com\"\npath_prefix = \"/api\"";
    let config = Config::new().pool("app", &[upstream.addr]).route_with("app", "app = 100", route).build();
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
async fn dead_only_backend_is_502() {
    let (dead, _held) = dead_addr();
    let proxy = TestProxy::start(&Config::one_pool(&[dead]).build()).await;
    let a = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(a.status, 502);
    assert!(!a.body.is_empty() && a.body.len() < 200, "body {:?}", a.body);
}

#[tokio::test]
async fn upstream_that_never_answers_is_504_after_request_timeout() {
    let silent = silent_upstream().await;
    let proxy = TestProxy::start(&Config::one_pool(&[silent.addr]).server("request_timeout = \"500ms\"").build()).await;
    let a = timeout(DEADLINE, get(&client(), &proxy.url("/"), &[]))
        .await
        .expect("no answer long after request_timeout (500ms)");
    assert_eq!(a.status, 504);
    assert!(!a.body.is_empty() && a.body.len() < 200, "body {:?}", a.body);
    assert_eq!(silent.hits(), 1, "the request should have reached the upstream");
}

async fn dead_backend_is_retried_on_live_one(lb: &str) {
    let (dead, _held) = dead_addr();
    let live = Upstream::named("live").await;
    let proxy =
        TestProxy::start(&Config::new().pool_with("app", &[dead, live.addr], lb).route("app", "app = 100").build())
            .await;
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
    let (dead, _held) = dead_addr();
    let live = Upstream::named("live").await;
    let proxy = TestProxy::start(
        &Config::new().pool_with("app", &[dead, live.addr], "lb = \"round_robin\"").route("app", "app = 100").build(),
    )
    .await;
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

/// Every kind of bad request above, against one proxy: it answers each,
/// never panics, and still serves a normal request afterwards.
#[tokio::test]
async fn proxy_survives_every_bad_request_without_panicking() {
    let panics = count_panics_on_this_thread();
    let live = Upstream::named("live").await;
    let silent = silent_upstream().await;
    let truncating =
        RawUpstream::always(Reply::close(&b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"[..])).await;
    let (dead, _held) = dead_addr();
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
backends = ["{}"]
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
        live.addr, silent.addr, truncating.addr
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
        let out = exchange(addr, raw).await;
        if let Some(code) = expected {
            assert_eq!(out.only().status, code, "{what}: {}", out.raw);
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

/// A connection the backend has closed is never used for another request
/// (it is not pooled when it closed before its body ended, skipped at
/// checkout when it closed while idle, and a request hyper hands back
/// unsent goes again on a fresh one): every request succeeds, each on a
/// connection of its own.
#[tokio::test]
async fn connections_the_backend_closed_after_one_response_are_not_reused() {
    // A keep-alive 200 (no `Connection: close`), then the close: a backend
    // whose keep-alive timeout is shorter than the proxy's.
    let upstream = RawUpstream::always(Reply::close(OK)).await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    for i in 0..30 {
        let answer = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(upstream.conns(), 30, "one upstream connection per request");
}

/// How a raw upstream leaves a request it does not answer.
#[derive(Clone, Copy, Debug)]
enum Hangup {
    /// It reads the request, then closes: the proxy reads the end of the stream.
    AfterReading,
    /// It resets the connection: the proxy reads a reset.
    Reset,
}

/// A raw upstream that answers a request with a keep-alive 200 `ok` when
/// `answers(n, on_connection)` — `n` counts the requests it received before
/// this one, `on_connection` those before it on the same connection — and
/// otherwise ends the connection the way `hangup` says, answering nothing.
/// This is a backend closing a keep-alive connection as idle just as the
/// proxy writes the next request on it, made deterministic.
async fn closing_upstream(hangup: Hangup, answers: fn(usize, usize) -> bool) -> RawUpstream {
    RawUpstream::scripted(move |n, request| match (answers(n, request.on_conn), hangup) {
        (true, _) => Reply::keep(OK),
        (false, Hangup::AfterReading) => Reply::close(Vec::new()),
        (false, Hangup::Reset) => Reply::reset(Vec::new()),
    })
    .await
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
    let upstream = closing_upstream(hangup, |_, on_connection| on_connection == 0).await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
        }
        let answer = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"), "{hangup:?}: request {i}");
    }
    // Every request after the first met a closed connection first.
    assert_eq!(upstream.requests().len(), 5, "{hangup:?}");
    assert_eq!(upstream.conns(), 3, "{hangup:?}");
    let metrics = proxy.metrics().await;
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
    get_on_a_pooled_connection_closed_unanswered_is_sent_again(Hangup::Reset).await;
}

/// A request that must not reach the backend twice (a POST, or a body the
/// proxy did not keep) is not sent again when its pooled connection closes
/// unanswered: the client gets a 502 and decides. The first request is of
/// the same kind, so the second finds its connection pooled (requests with
/// and without a body keep separate connections).
#[tokio::test]
async fn request_that_may_not_be_repeated_is_not_sent_again() {
    for (method, body) in [("POST", ""), ("POST", "{\"order\":1}"), ("PUT", "{\"order\":2}")] {
        let upstream = closing_upstream(Hangup::AfterReading, |_, on_connection| on_connection == 0).await;
        let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
        let url = proxy.url("/orders");
        assert_eq!(send_with_body(&url, method, "first", body).await, 200, "{method} {body:?}: the first request");
        tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
        assert_eq!(send_with_body(&url, method, "second", body).await, 502, "{method} {body:?}");
        assert_eq!(upstream.requests().len(), 2, "{method} {body:?}: sent again");
    }
}

/// A request is sent again once at most, and only after a pooled
/// connection failed: a backend that closes every connection unanswered
/// gets each request twice, not once per pooled connection.
#[tokio::test]
async fn request_is_sent_again_once_at_most() {
    let upstream = closing_upstream(Hangup::AfterReading, |n, _| n == 0).await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 200);
    tokio::time::sleep(KEEP_ALIVE_EXPIRED).await;
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 502, "nothing answered the second request");
    assert_eq!(upstream.requests().len(), 3, "the second request: once pooled, once fresh");
    // A fresh connection that closes unanswered is the backend's failure.
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 502);
    assert_eq!(upstream.requests().len(), 4, "a request on a fresh connection went again");
}
