//! A keep-alive connection that idled serves exactly as one that did not
//! (`docs/performance.md`, "Memory per connection").
//!
//! An idle HTTP/1.1 connection holds no read or write buffer: hyper drops
//! both when a read finds the socket empty with nothing buffered, and the
//! next bytes get a fresh buffer. These tests idle a connection (a short
//! pause after a complete exchange, long enough for the proxy to go back
//! to waiting on the socket), then wake it the ways that touch the buffers:
//! two pipelined requests in one write, a head and a body cut into several
//! writes, a pipelined head cut across the idle period, and plain reuse. The
//! upstream records every request off the wire, so each test checks both
//! what the client got and what reached the backend; body-less requests
//! must all arrive on one upstream connection (the pooled connection is
//! reused after the idle).
//!
//! A cleartext HTTP/1.1 connection goes further: once idle for 100 ms it
//! parks, and hyper's whole connection state is freed until the socket
//! wakes (`src/server/serving.rs`; [`IDLE`] is longer than that). So after an idle period a connection is
//! served by a hyper connection built afresh, which must still close at a
//! shutdown, still hold a head that starts after the idle to
//! `header_read_timeout`, and still upgrade.
//!
//! An idle HTTP/2 connection (no stream open, everything written) holds no
//! read, write or HPACK scratch buffer either (h2 is patched for it):
//! streams after an idle period, with and without a body, must be served
//! as before, their headers decoded against the tables earlier streams
//! filled. Its read and write buffers go to its thread's spares, and the
//! next connection there to wake takes them: connections taking turns must
//! each read and write only their own bytes. Nor does it keep, through its
//! HPACK encoder's table, the buffer an upstream response's head was read
//! into.
//!
//! Timing: the pauses only make the idle period and the cut writes happen;
//! no assertion depends on how long anything took.

use crate::support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long a connection idles before it is woken: far longer than the
/// proxy takes to go back to waiting once a response is out, and longer
/// than an HTTP/1.1 connection idles before it parks (100 ms).
const IDLE: Duration = Duration::from_millis(150);

/// A pause between the pieces of one cut write, so that each arrives in a
/// read of its own.
const BETWEEN_PIECES: Duration = Duration::from_millis(30);

/// A proxy in front of one recording upstream, and a client connection
/// that has had one exchange (`GET /first`) and then idled.
async fn idled() -> (RawUpstream, TestProxy, TcpStream) {
    idled_with("").await
}

/// [`idled`], with `[server]` lines `server`.
async fn idled_with(server: &str) -> (RawUpstream, TestProxy, TcpStream) {
    let upstream = RawUpstream::ok().await;
    let config = Config::one_pool(&[upstream.addr]);
    let config = if server.is_empty() { config } else { config.server(server) };
    let proxy = TestProxy::start(&config.build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
    let first = read_one_response(&mut stream).await;
    assert_eq!(first.status, 200, "{first:?}");
    tokio::time::sleep(IDLE).await;
    // The wake paths below are those of a parked connection: see it parked.
    eventually_async(DEADLINE, "the idle connection parked", || async { parked(&proxy).await == 1.0 }).await;
    (upstream, proxy, stream)
}

/// `cutover_client_connections_parked`.
async fn parked(proxy: &TestProxy) -> f64 {
    let metrics = proxy.metrics().await;
    metric(&metrics, "cutover_client_connections_parked ").unwrap_or(-1.0)
}

/// Write `pieces` one by one, pausing between them.
async fn write_in_pieces(stream: &mut TcpStream, pieces: &[&[u8]]) {
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(BETWEEN_PIECES).await;
        }
        stream.write_all(piece).await.expect("write a piece");
    }
}

/// `METHOD /path` of each request the upstream received, which must all
/// have come on one upstream connection (body-less requests share the
/// pooled connection, which is reused after the idle period).
fn seen_on_one_connection(upstream: &RawUpstream) -> Vec<String> {
    let by_conn = upstream.by_conn();
    assert_eq!(by_conn.len(), 1, "the pooled upstream connection was not reused: {by_conn:?}");
    by_conn.into_iter().next().unwrap_or_default()
}

#[tokio::test]
async fn an_idled_connection_serves_a_pipelined_pair() {
    let (upstream, _proxy, mut stream) = idled().await;
    stream
        .write_all(
            b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n\
              GET /third HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write the pair");
    let (bytes, closed) = read_until_closed(&mut stream, DEADLINE).await;
    let responses = parse_responses_of(&bytes);
    assert!(closed, "the connection stayed open after `Connection: close`");
    assert_eq!(responses, [(200, true), (200, true)], "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(seen_on_one_connection(&upstream), ["GET /first", "GET /second", "GET /third"]);
}

#[tokio::test]
async fn an_idled_connection_serves_a_head_and_body_in_pieces() {
    let (upstream, _proxy, mut stream) = idled().await;
    write_in_pieces(
        &mut stream,
        &[b"PO", b"ST /second HTTP/1.1\r\nHo", b"st: app.test\r\nContent-Len", b"gth: 11\r\n", b"\r\nhello", b" world"],
    )
    .await;
    let answer = read_one_response(&mut stream).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // The connection is still good for another request after that.
    write_in_pieces(&mut stream, &[b"GET /third HTTP/1.1\r\n", b"Host: app.test\r\n\r\n"]).await;
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    // A request with a body goes upstream through a client of its own (its
    // own upstream connection), so only the order is checked here.
    let seen: Vec<String> = upstream.requests().iter().map(|r| format!("{} {}", r.method(), r.path())).collect();
    assert_eq!(seen, ["GET /first", "POST /second", "GET /third"]);
    let post = upstream.requests().into_iter().find(|r| r.path() == "/second").expect("the POST");
    assert_eq!(post.body, b"hello world", "{post:#?}");
    post.assert_unambiguous();
}

/// The second request's head starts in the write that carries the first
/// and ends only after an idle period: the part already read must survive
/// the idle.
#[tokio::test]
async fn a_pipelined_head_cut_across_an_idle_period_is_served() {
    let (upstream, _proxy, mut stream) = idled().await;
    stream.write_all(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\nGET /third HTTP/1.1\r\nHo").await.expect("write");
    let second = read_one_response(&mut stream).await;
    assert_eq!(second.status, 200, "{second:?}");
    tokio::time::sleep(IDLE).await;
    stream.write_all(b"st: app.test\r\n\r\n").await.expect("write the rest");
    let third = read_one_response(&mut stream).await;
    assert_eq!(third.status, 200, "{third:?}");
    assert_eq!(seen_on_one_connection(&upstream), ["GET /first", "GET /second", "GET /third"]);
}

#[tokio::test]
async fn an_idled_connection_is_reused_again_and_again() {
    let (upstream, _proxy, mut stream) = idled().await;
    for path in ["/second", "/third", "/fourth"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        stream.write_all(raw.as_bytes()).await.expect("write");
        let answer = read_one_response(&mut stream).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert!(answer.header("connection").is_none_or(|v| !v.eq_ignore_ascii_case("close")), "{answer:?}");
        tokio::time::sleep(IDLE).await;
    }
    assert_eq!(seen_on_one_connection(&upstream), ["GET /first", "GET /second", "GET /third", "GET /fourth"]);
}

/// An idle keep-alive connection parks about 100 ms after its last
/// exchange, by its own timer: long before the watchdog's next regular
/// look at it, a `header_read_timeout` later. It is counted as parked until
/// it wakes, parks again after its next exchange, and is no longer counted
/// once it closes, parked or not.
#[tokio::test]
async fn an_idle_connection_parks_soon_and_is_counted_while_parked() {
    let upstream = RawUpstream::ok().await;
    let config = Config::one_pool(&[upstream.addr]).server("header_read_timeout = \"120s\"");
    let proxy = TestProxy::start(&config.build()).await;
    assert_eq!(parked(&proxy).await, 0.0, "nothing parked before any connection");
    let mut first = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    let mut second = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    for (n, stream) in [&mut first, &mut second].into_iter().enumerate() {
        stream.write_all(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
        assert_eq!(read_one_response(stream).await.status, 200);
        let want = (n + 1) as f64;
        eventually_async(DEADLINE, "idle connections parked by their timers", || async {
            parked(&proxy).await == want
        })
        .await;
    }
    // Woken by its next request, served, and parked again.
    first.write_all(b"GET /two HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
    assert_eq!(read_one_response(&mut first).await.status, 200);
    eventually_async(DEADLINE, "both parked again", || async { parked(&proxy).await == 2.0 }).await;
    drop(first);
    eventually_async(DEADLINE, "a closed parked connection is no longer counted", || async {
        parked(&proxy).await == 1.0
    })
    .await;
    drop(second);
    eventually_async(DEADLINE, "none counted once all closed", || async { parked(&proxy).await == 0.0 }).await;
    assert_eq!(upstream.requests().len(), 3);
}

/// A connection that idles hands its header map (which last held a
/// response's fields) to its thread's spares, and the next request head on
/// any connection is parsed into a spare: each request must reach the
/// backend with its own fields and nothing a response or another request
/// left behind.
#[tokio::test]
async fn a_header_map_reused_after_an_idle_period_carries_nothing_over() {
    let response = b"HTTP/1.1 200 OK\r\nX-Left-Behind: by-a-response\r\nSet-Cookie: s=1\r\nContent-Length: 2\r\n\r\nok";
    let upstream = RawUpstream::always(Reply::keep(&response[..])).await;
    let config = Config::one_pool(&[upstream.addr]).server("workers = 1");
    let proxy = TestProxy::start(&config.build()).await;
    let mut first = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    first.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\nX-First: 1\r\n\r\n").await.expect("write");
    let answer = read_one_response(&mut first).await;
    assert_eq!(answer.header("x-left-behind"), Some("by-a-response"), "{answer:?}");
    eventually_async(DEADLINE, "the first connection parked", || async { parked(&proxy).await == 1.0 }).await;
    let mut second = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    second.write_all(b"GET /second HTTP/1.1\r\nHost: app.test\r\nX-Second: 2\r\n\r\n").await.expect("write");
    assert_eq!(read_one_response(&mut second).await.status, 200);
    first.write_all(b"GET /third HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
    assert_eq!(read_one_response(&mut first).await.status, 200);
    let requests = upstream.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    for request in &requests {
        for name in ["x-left-behind", "set-cookie", "content-length"] {
            assert_eq!(request.count(name), 0, "{name} reached the backend: {request:#?}");
        }
        let mine = match request.path() {
            "/first" => ("x-first", Some("1")),
            "/second" => ("x-second", Some("2")),
            _ => ("x-first", None),
        };
        assert_eq!(request.header(mine.0), mine.1, "{request:#?}");
        assert_eq!(request.count("x-second"), usize::from(request.path() == "/second"), "{request:#?}");
        assert_eq!(request.count("host"), 1, "{request:#?}");
        assert_eq!(request.count("x-forwarded-for"), 1, "{request:#?}");
    }
}

/// The proxy reads a client's socket while a request is with the backend
/// (to notice the client leave), into the room left in the buffer that
/// request's head came in, still shared with it. Heads sent then, one
/// short and one too long for that room, are served in order and reach
/// the backend whole.
#[tokio::test]
async fn requests_sent_while_the_one_before_is_with_the_backend_are_served() {
    let slow = with_length(&[b'x'; 64]);
    let upstream = RawUpstream::scripted(move |n, _| {
        let reply = Reply::keep(if n == 0 { slow.clone() } else { OK.to_vec() });
        // The first answer trickles in, so the heads below come while it is
        // still with the backend.
        if n == 0 {
            reply.in_pieces(1)
        } else {
            reply
        }
    })
    .await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
    eventually(DEADLINE, "the first request reached the backend", || upstream.requests().len() == 1).await;
    let long = "v".repeat(9 * 1024);
    let next = format!(
        "GET /second HTTP/1.1\r\nHost: app.test\r\nX-Long: {long}\r\n\r\nGET /third HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(next.as_bytes()).await.expect("write");
    let (bytes, closed) = read_until_closed(&mut stream, DEADLINE).await;
    assert!(closed, "the connection stayed open after `Connection: close`");
    let responses = parse_responses_of(&bytes);
    assert_eq!(responses, [(200, true), (200, true), (200, true)], "{}", String::from_utf8_lossy(&bytes));
    let requests = upstream.requests();
    let seen: Vec<String> = requests.iter().map(|r| format!("{} {}", r.method(), r.path())).collect();
    assert_eq!(seen, ["GET /first", "GET /second", "GET /third"]);
    assert_eq!(requests[1].header("x-long"), Some(long.as_str()));
    for request in &requests {
        request.assert_unambiguous();
    }
}

/// A shutdown closes an idled (parked) connection at once, as it closes
/// any idle one: no `Connection: close` response, just the close.
#[tokio::test]
async fn an_idled_connection_closes_at_shutdown() {
    let (_upstream, mut proxy, mut stream) = idled().await;
    proxy.begin_stop();
    let (rest, closed) = read_until_closed(&mut stream, DEADLINE).await;
    assert!(closed, "an idle connection stayed open through a shutdown");
    assert!(rest.is_empty(), "bytes on an idle connection at shutdown: {:?}", String::from_utf8_lossy(&rest));
}

/// A head that starts after the idle period and never completes is closed
/// at `header_read_timeout`, counted as a slow head.
#[tokio::test]
async fn a_head_started_after_an_idle_period_still_has_a_deadline() {
    let (_upstream, proxy, mut stream) = idled_with("header_read_timeout = \"500ms\"").await;
    stream.write_all(b"GET /second HTTP/1.1\r\nHo").await.expect("write part of a head");
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(closed, "a head cut short after an idle period kept its connection 8 s (header_read_timeout = 500ms)");
    assert!(rest.is_empty(), "answered a head never completed: {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(client_timeouts(&proxy, "header_read").await, 1.0);
}

/// A WebSocket upgrade on a connection that served a request and idled:
/// the connection built afresh still upgrades, and the tunnel carries
/// bytes both ways.
#[tokio::test]
async fn an_idled_connection_still_upgrades() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the echo server");
    let backend = listener.local_addr().expect("echo server address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // A plain request first (the one before the idle), then the upgrade.
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let upstream = RawUpstream::ok().await;
    let config = Config::new().pool("plain", &[upstream.addr]).pool("ws", &[backend]);
    let config = config.route_with("chat", "ws = 1", "path_prefix = \"/chat\"").route("app", "plain = 1");
    let proxy = TestProxy::start(&config.build()).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    stream.write_all(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write");
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    tokio::time::sleep(IDLE).await;
    let url = format!("ws://{}/chat", proxy.addr);
    let (mut ws, response) = timeout(DEADLINE, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    for text in ["one", "two"] {
        ws.send(Message::text(text)).await.expect("send");
        match timeout(DEADLINE, ws.next()).await.expect("echo in time") {
            Some(Ok(Message::Text(echoed))) => assert_eq!(echoed.as_str(), text),
            other => panic!("no echo: {other:?}"),
        }
    }
}

/// Over h2c, streams one after another on one connection, each after an
/// idle period: header values the client sends as indexes into the HPACK
/// table (the same long value every time) and Huffman-coded ones (a new
/// value every time) arrive intact, and so does a body.
#[tokio::test]
async fn an_idled_h2_connection_serves_streams_as_before() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(conn);
    const KEPT: &str = "the same value on every stream, long enough to be worth indexing";
    let rounds = ["/first", "/second", "/third", "/fourth"];
    for (round, path) in rounds.iter().enumerate() {
        let posts = round % 2 == 1;
        let builder = Request::builder()
            .method(if posts { "POST" } else { "GET" })
            .uri(format!("http://app.test{path}"))
            .header("x-kept", KEPT)
            .header("x-round", format!("round number {round} of the idle test"));
        let body = if posts { Bytes::from(format!("body of round {round}")) } else { Bytes::new() };
        let request = builder.body(Full::new(body)).expect("request");
        let response =
            timeout(DEADLINE, sender.send_request(request)).await.expect("h2 answer in time").expect("h2 answer");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.version(), Version::HTTP_2);
        let body = timeout(DEADLINE, response.into_body().collect()).await.expect("body in time").expect("body");
        assert_eq!(body.to_bytes(), "ok", "{path}");
        tokio::time::sleep(IDLE).await;
    }
    let seen = upstream.requests();
    let paths: Vec<String> = seen.iter().map(|r| format!("{} {}", r.method(), r.path())).collect();
    assert_eq!(paths, ["GET /first", "POST /second", "GET /third", "POST /fourth"]);
    for (round, request) in seen.iter().enumerate() {
        assert_eq!(request.header("x-kept"), Some(KEPT), "{request:#?}");
        let expected = format!("round number {round} of the idle test");
        assert_eq!(request.header("x-round"), Some(expected.as_str()), "{request:#?}");
        if round % 2 == 1 {
            assert_eq!(request.body, format!("body of round {round}").as_bytes(), "{request:#?}");
        }
    }
}

/// An idle HTTP/2 connection gives its read and write buffers to its
/// thread's spares, and the next connection on that thread to wake takes
/// them: two h2c connections on one worker, taking turns with an idle
/// period between streams, each get their own answers, and each request
/// reaches the backend with its own fields and body, nothing the other
/// connection's frames left in a buffer.
#[tokio::test]
async fn h2_connections_taking_turns_with_spare_buffers_keep_their_own_bytes() {
    let upstream = RawUpstream::ok().await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).server("workers = 1").build()).await;
    let mut senders = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
        tokio::spawn(conn);
        senders.push(sender);
    }
    let mut sent = Vec::new();
    for round in 0..3 {
        for (conn, sender) in senders.iter_mut().enumerate() {
            let path = format!("/c{conn}r{round}");
            // Bodies of different lengths, so a buffer left with another
            // connection's bytes would show in what the backend reads.
            let body = format!("{path} {}", "xy".repeat(50 * (conn + 1) + round));
            let request = Request::post(format!("http://app.test{path}"))
                .header("x-conn", conn.to_string())
                .body(Full::new(Bytes::from(body.clone())))
                .expect("request");
            let response =
                timeout(DEADLINE, sender.send_request(request)).await.expect("h2 answer in time").expect("h2 answer");
            assert_eq!(response.status(), 200, "{path}");
            let answer = timeout(DEADLINE, response.into_body().collect()).await.expect("body in time").expect("body");
            assert_eq!(answer.to_bytes(), "ok", "{path}");
            sent.push((path, conn, body));
            tokio::time::sleep(IDLE).await;
        }
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), sent.len(), "{seen:#?}");
    for (request, (path, conn, body)) in seen.iter().zip(&sent) {
        assert_eq!(request.path(), path, "{request:#?}");
        assert_eq!(request.header("x-conn"), Some(conn.to_string().as_str()), "{request:#?}");
        assert_eq!(request.count("x-conn"), 1, "{request:#?}");
        assert_eq!(request.body, body.as_bytes(), "{request:#?}");
    }
}

/// An HTTP/2 connection's HPACK encoder keeps the response header values
/// it indexes for as long as the client may refer to them, on an idle
/// connection for good. The proxy's response header values are slices of
/// the buffer the upstream's response head was read into (8 KiB or more):
/// the table keeps copies of its own, so that an idle connection does not
/// keep that buffer too. Here hyper's own server answers with a value
/// sliced from a buffer the test holds; once the answer is out, the open,
/// idle connection holds no part of it.
#[tokio::test]
async fn an_idle_h2_connection_keeps_no_buffer_a_response_header_was_sliced_from() {
    let read_buffer = Bytes::from(vec![b'v'; 8192]);
    let handed = Arc::new(Mutex::new(Some(read_buffer.clone())));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // The service takes the buffer on the first request and keeps
        // nothing of it after answering.
        let service = service_fn(move |_req| {
            let buffer = handed.lock().expect("lock").take();
            async move {
                let mut response = http::Response::new(Full::new(Bytes::from("ok")));
                if let Some(buffer) = buffer {
                    let value = HeaderValue::from_maybe_shared(buffer.slice(..40)).expect("header value");
                    response.headers_mut().insert("x-from-upstream", value);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), service)
            .await;
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.expect("h2c handshake");
    tokio::spawn(conn);
    let request = Request::get("http://app.test/").body(Full::new(Bytes::new())).expect("request");
    let response = timeout(DEADLINE, sender.send_request(request)).await.expect("answer in time").expect("answer");
    assert_eq!(response.headers()["x-from-upstream"].as_bytes(), &read_buffer[..40]);
    let body = timeout(DEADLINE, response.into_body().collect()).await.expect("body in time").expect("body");
    assert_eq!(body.to_bytes(), "ok");
    // The connection stays open, and idle, while this is checked.
    eventually(DEADLINE, "the open h2 connection let go of the buffer", || read_buffer.is_unique()).await;
    assert!(!server.is_finished(), "the connection is still open");
    drop(sender);
}

/// Status and completeness of each response in `bytes`.
fn parse_responses_of(bytes: &[u8]) -> Vec<(u16, bool)> {
    support::raw_client::parse_responses(bytes).iter().map(|r| (r.status, r.complete)).collect()
}
