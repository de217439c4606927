//! Forwarding (SPEC §3): what the proxy changes on the way through, and what
//! it must leave alone — hop-by-hop headers, `X-Forwarded-*`, `Host`, the
//! request target, streaming bodies both ways, HTTP/2 downstream, upstream
//! keep-alive and the downstream idle timeout.
//!
//! Every test runs a real proxy in front of real upstreams on 127.0.0.1.
//! Streaming is proven, not assumed: the far side holds the rest of a body
//! back until the near side has seen the first chunk, so a proxy that
//! buffers whole bodies deadlocks and the test fails on a deadline with a
//! message that says so.

use crate::support;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// A body fed chunk by chunk through a channel; it ends when every sender
/// is dropped.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// `total` bytes made of one repeated chunk, generated as they are polled.
struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        let n = usize::try_from(n).expect("chunk length fits usize");
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn boxed<B>(body: B) -> TestBody
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static,
{
    body.map_err(|e| match e {}).boxed()
}

/// Read frames from `body` until at least `want` bytes arrived.
async fn read_at_least(body: &mut Incoming, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let frame = body.frame().await.expect("body ended early").expect("body failed");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

/// Read `body` to its end, returning the bytes.
async fn read_rest(body: &mut Incoming) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body failed").into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

/// The value of header `name` as the upstream saw it in request `seen`.
fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(|v| v.to_str().expect("ASCII header"))
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let a = get(
        &client(),
        &proxy.url("/"),
        &[
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("upgrade", "foo"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    for name in ["connection", "x-drop-me", "keep-alive", "proxy-connection", "proxy-authorization", "te", "upgrade"] {
        assert_eq!(header(&seen[0], name), None, "hop-by-hop `{name}` reached the upstream: {:?}", seen[0].headers);
    }
    assert_eq!(header(&seen[0], "x-kept"), Some("yes"));
    // End-to-end since RFC 9110: an HTTP/1.1 peer sends only the trailer
    // fields it announces.
    assert_eq!(header(&seen[0], "trailer"), Some("x-checksum"));
}

/// `TE: trailers` is the one `TE` value that travels (gRPC relies on it).
#[tokio::test]
async fn te_trailers_reaches_the_upstream() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    assert_eq!(get(&client(), &proxy.url("/"), &[("te", "trailers")]).await.status, 200);
    assert_eq!(header(&upstream.seen()[0], "te"), Some("trailers"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let upstream = Upstream::with_handler("app", |_req| async {
        let mut r = text(StatusCode::OK, "secret-free");
        let h = r.headers_mut();
        h.insert("connection", "x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5, max=100".parse().unwrap());
        h.insert("proxy-authenticate", "Basic realm=\"upstream\"".parse().unwrap());
        h.insert("x-ordinary", "kept".parse().unwrap());
        r
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let a = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "secret-free");
    for name in ["connection", "x-secret", "keep-alive", "proxy-authenticate"] {
        assert!(a.headers.get(name).is_none(), "hop-by-hop `{name}` reached the client: {:?}", a.headers);
    }
    assert_eq!(a.headers["x-ordinary"], "kept");
}

#[tokio::test]
async fn forwarded_headers_are_set_and_forged_ones_replaced() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    let forged = get(
        &client,
        &proxy.url("/"),
        &[
            ("host", "shop.example.com:8080"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await;
    assert_eq!(forged.status, 200);
    let plain = get(&client, &proxy.url("/"), &[("host", "plain.example.com")]).await;
    assert_eq!(plain.status, 200);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    let (first, second) = (&seen[0], &seen[1]);
    assert_eq!(header(first, "host"), Some("shop.example.com:8080"), "Host must pass through unchanged");
    assert_eq!(header(first, "x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
    assert_eq!(first.headers.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(header(first, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(first, "x-forwarded-host"), Some("shop.example.com:8080"));
    assert_eq!(first.headers.get_all("x-forwarded-host").iter().count(), 1);

    assert_eq!(header(second, "host"), Some("plain.example.com"));
    assert_eq!(header(second, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header(second, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(second, "x-forwarded-host"), Some("plain.example.com"));
}

/// A client that names the proxy's own headers in `Connection` must not make
/// the proxy drop them: that would hide the client's address from a backend
/// that trusts `X-Forwarded-For`, or send an HTTP/1.1 request with no `Host`.
/// What the client sent under those names goes (it declared them
/// hop-by-hop); what the proxy sets afterwards stays.
#[tokio::test]
async fn connection_cannot_strip_the_proxys_own_headers() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let a = get(
        &client(),
        &proxy.url("/"),
        &[
            ("host", "shop.example.com"),
            ("connection", "x-forwarded-for, x-forwarded-proto, x-forwarded-host, host"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(header(&seen[0], "x-forwarded-for"), Some("127.0.0.1"), "{:?}", seen[0].headers);
    assert_eq!(header(&seen[0], "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&seen[0], "x-forwarded-host"), Some("shop.example.com"));
    assert_eq!(header(&seen[0], "host"), Some("shop.example.com"));
}
#[tokio::test]
async fn path_and_query_are_forwarded_as_sent() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    let targets = ["/a/b?x=1&y=2", "/a%20b/c%2Fd?q=%2F&empty=&x=1&x=2", "/trailing/?"];
    for target in targets {
        assert_eq!(get(&client, &proxy.url(target), &[]).await.status, 200);
    }
    let seen: Vec<String> = upstream.seen().iter().map(|s| s.uri.to_string()).collect();
    assert_eq!(seen, targets);
}

/// The upstream sends its first chunk and then holds the rest back until the
/// client has seen that chunk through the proxy.
#[tokio::test]
async fn response_body_streams_before_the_upstream_finishes() {
    const FIRST: &[u8] = b"first chunk;";
    const REST: &[u8] = b"the rest, sent only after the client saw the first chunk";
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let upstream = Upstream::with_handler("app", move |_req| {
        let rx = rx.lock().unwrap().take();
        async move {
            match rx {
                Some(rx) => Response::new(boxed(ChannelBody { rx })),
                None => text(StatusCode::INTERNAL_SERVER_ERROR, "one request expected"),
            }
        }
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    tx.send(Bytes::from_static(FIRST)).await.unwrap();
    let request = Request::get(proxy.url("/stream")).body(Full::new(Bytes::new())).unwrap();
    let response = timeout(DEADLINE, client().request(request))
        .await
        .expect("response head did not arrive while the upstream held its body open: the proxy buffers responses")
        .expect("request failed");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = timeout(DEADLINE, read_at_least(&mut body, FIRST.len())).await.expect(
        "first chunk did not reach the client while the upstream held the rest back: the proxy buffers response bodies",
    );
    assert_eq!(first, FIRST);

    tx.send(Bytes::from_static(REST)).await.unwrap();
    drop(tx);
    let rest = timeout(DEADLINE, read_rest(&mut body)).await.expect("rest of the body did not arrive");
    assert_eq!(rest, REST);
}

/// The client sends its first chunk and holds the rest back until the
/// upstream has seen that chunk through the proxy.
#[tokio::test]
async fn request_body_streams_before_the_client_finishes() {
    const FIRST: &[u8] = b"first upload chunk;";
    const REST: &[u8] = b"the rest, sent only after the upstream saw the first chunk";
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let upstream = Upstream::with_handler("app", move |req: Request<Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut body = req.into_body();
            let mut got = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return text(StatusCode::BAD_REQUEST, "request body failed");
                };
                if let Ok(data) = frame.into_data() {
                    if got.is_empty() {
                        let _ = seen_tx.send(data.to_vec());
                    }
                    got.extend_from_slice(&data);
                }
            }
            text(StatusCode::OK, got)
        }
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let request = Request::post("/upload").header("host", proxy.addr.to_string()).body(ChannelBody { rx }).unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });

    tx.send(Bytes::from_static(FIRST)).await.unwrap();
    let first = timeout(DEADLINE, seen_rx.recv())
        .await
        .expect("upstream did not get the first chunk while the client held the rest back: the proxy buffers request bodies")
        .expect("upstream handler gone");
    assert!(FIRST.starts_with(&first), "upstream's first chunk {first:?}");

    tx.send(Bytes::from_static(REST)).await.unwrap();
    drop(tx);
    let response = timeout(DEADLINE, response)
        .await
        .expect("no response after the upload ended")
        .unwrap()
        .expect("request failed");
    assert_eq!(response.status(), 200);
    let echoed = timeout(DEADLINE, response.into_body().collect()).await.unwrap().unwrap().to_bytes();
    assert_eq!(echoed, [FIRST, REST].concat());
}

/// A body far larger than any buffer passes through whole, generated on the
/// fly upstream and counted (not stored) by the client.
#[tokio::test]
async fn large_response_body_passes_through_whole() {
    const TOTAL: u64 = 256 * 1024 * 1024;
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let upstream = Upstream::with_handler("app", move |_req| {
        let chunk = chunk.clone();
        async move { Response::new(boxed(RepeatBody { chunk, remaining: TOTAL })) }
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    let request = Request::get(proxy.url("/big")).body(Full::new(Bytes::new())).unwrap();
    let response = timeout(DEADLINE, client().request(request)).await.expect("no response head").unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let counted = timeout(Duration::from_secs(60), async {
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body failed").into_data() {
                n += data.len() as u64;
            }
        }
        n
    })
    .await
    .expect("large body did not finish within 60 s");
    assert_eq!(counted, TOTAL);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served_and_forwarded_as_http1() {
    let upstream = Upstream::named("h1-upstream").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;

    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c handshake with the proxy");
    tokio::spawn(conn);
    let request = Request::get("http://h2.example.com/over-h2?q=1").body(Empty::<Bytes>::new()).unwrap();
    let response = timeout(DEADLINE, sender.send_request(request)).await.expect("h2 request timed out").unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let body = timeout(DEADLINE, response.into_body().collect()).await.unwrap().unwrap().to_bytes();
    assert_eq!(body, "h1-upstream");

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/over-h2?q=1");
    assert_eq!(header(&seen[0], "host"), Some("h2.example.com"), "the :authority must become the upstream's Host");
    assert_eq!(header(&seen[0], "x-forwarded-host"), Some("h2.example.com"));
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let client = client();
    for _ in 0..3 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body, "ok");
    }
    assert_eq!(upstream.conns(), 1, "the proxy opened a new upstream connection per request");
}

/// A [`RawUpstream`] behind a proxy whose `upstream_idle_timeout` is
/// `upstream_idle_timeout`.
async fn counted_behind_proxy(upstream_idle_timeout: &str) -> (RawUpstream, TestProxy) {
    let upstream = RawUpstream::ok().await;
    let server = format!("upstream_idle_timeout = \"{upstream_idle_timeout}\"");
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(&server).build()).await;
    (upstream, proxy)
}

#[tokio::test]
async fn an_idle_pooled_upstream_connection_is_closed_after_upstream_idle_timeout() {
    let (upstream, proxy) = counted_behind_proxy("300ms").await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 200);
    assert_eq!(upstream.conns(), 1);

    // Left idle in the pool, the connection is closed by the proxy, not the backend.
    upstream.until_ended(0, "the proxy to close its idle upstream connection").await;
    // The next request opens a new one and succeeds.
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 200);
    assert_eq!(upstream.conns(), 2);
}

#[tokio::test]
async fn a_pooled_upstream_connection_in_steady_use_is_kept() {
    // The gaps between requests (50 ms) are a small fraction of the timeout,
    // so even a slow machine keeps them well inside it.
    let (upstream, proxy) = counted_behind_proxy("1s").await;
    let client = client();
    let started = tokio::time::Instant::now();
    // Longer than the timeout in all, so an expiry that counted from the
    // first use (rather than the last) would close it.
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.conns(), 1, "a connection reused every 50 ms was replaced");
    assert!(!upstream.ended(0), "the connection in steady use was closed");
}

const IDLE_300MS: &str = "idle_timeout = \"300ms\"";

#[tokio::test]
async fn idle_timeout_closes_an_idle_downstream_connection() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(IDLE_300MS).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n").await.unwrap();
    let answer = read_one_response(&mut stream).await;
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"app"[..]), "{answer:?}");

    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "idle connection still open 5 s after its last response (idle_timeout = 300ms)");
    assert!(rest.is_empty(), "unexpected bytes on an idle connection: {:?}", String::from_utf8_lossy(&rest));
}

/// A request that outlives `idle_timeout` upstream is in flight, not idle.
#[tokio::test]
async fn idle_timeout_spares_a_slow_in_flight_request() {
    let upstream = Upstream::with_handler("slow", |_req| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        text(StatusCode::OK, "slow but complete")
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(IDLE_300MS).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n").await.unwrap();
    let answer = read_one_response(&mut stream).await;
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"slow but complete"[..]), "{answer:?}");
}

/// A response body still streaming past `idle_timeout` is not cut either.
#[tokio::test]
async fn idle_timeout_spares_a_slow_response_body() {
    let upstream = Upstream::with_handler("slow", |_req| async {
        let (tx, rx) = mpsc::channel::<Bytes>(2);
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"start;")).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = tx.send(Bytes::from_static(b"end")).await;
        });
        Response::new(boxed(ChannelBody { rx }))
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server(IDLE_300MS).build()).await;
    let request = Request::get(proxy.url("/")).body(Full::new(Bytes::new())).unwrap();
    let response = timeout(DEADLINE, client().request(request)).await.expect("no response head").unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let got = timeout(DEADLINE, read_rest(&mut body)).await.expect("body did not finish");
    assert_eq!(got, b"start;end");
}
