//! The admin listener's protections against clients that hold connections
//! (it serves a page to browsers, so it gets the traffic side's): a client
//! that sends nothing, or half a request head, or half a body, is cut off;
//! an oversized head is refused; and past the connection limit a new
//! connection is closed unanswered, until one of the others closes.
//!
//! Each wait is on the event (an answer, a close) with a deadline well past
//! the admin's own; none asserts a timing.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cutover::admin::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES};
use support::{Config, TestProxy, Upstream};

/// Everything the admin sends until it closes, or `None` if it has not
/// closed within twice its own deadline plus a margin.
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let deadline = HEADER_READ_TIMEOUT * 2 + Duration::from_secs(20);
    let mut out = Vec::new();
    match tokio::time::timeout(deadline, stream.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

async fn proxy() -> (TestProxy, Upstream) {
    let blue = Upstream::named("blue").await;
    let proxy = TestProxy::start(&Config::one_pool(&[blue.addr]).build()).await;
    (proxy, blue)
}

async fn status_over(stream: &mut TcpStream, admin: SocketAddr) -> String {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {admin}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_half_a_head_is_closed() {
    let (proxy, _blue) = proxy().await;
    let mut silent = TcpStream::connect(proxy.admin).await.unwrap();
    let mut half = TcpStream::connect(proxy.admin).await.unwrap();
    half.write_all(format!("GET /status HTTP/1.1\r\nHost: {}\r\n", proxy.admin).as_bytes()).await.unwrap();
    let (silent, half) = tokio::join!(until_closed(&mut silent), until_closed(&mut half));
    assert_eq!(silent.as_deref(), Some(""), "a silent connection stays open, or is answered");
    let half = half.expect("a connection with half a head stays open");
    assert!(!half.contains("200 OK"), "{half}");
    // The listener still serves.
    let mut fresh = TcpStream::connect(proxy.admin).await.unwrap();
    assert!(status_over(&mut fresh, proxy.admin).await.starts_with("HTTP/1.1 200"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_write_whose_body_stalls_gets_408() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
    let head = format!(
        "PUT /routes/app/split HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        proxy.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stream).await.expect("an answer or a close");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let (proxy, _blue) = proxy().await;
    let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
    let big = "a".repeat(MAX_HEAD_BYTES + 1024);
    let req = format!("GET /status HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n", proxy.admin);
    let _ = stream.write_all(req.as_bytes()).await;
    let answer = until_closed(&mut stream).await.unwrap_or_default();
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(!answer.contains("\"routes\""), "an oversized head was served: {answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn past_the_connection_limit_a_new_connection_is_closed_unanswered() {
    let (proxy, _blue) = proxy().await;
    // The limit's worth of connections, each shown open by an answer.
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
        assert!(status_over(&mut stream, proxy.admin).await.starts_with("HTTP/1.1 200"));
        open.push(stream);
    }
    let mut extra = TcpStream::connect(proxy.admin).await.unwrap();
    let _ = extra.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.admin).as_bytes()).await;
    let answer = until_closed(&mut extra).await.unwrap_or_default();
    assert!(answer.is_empty(), "a connection past the limit was served: {answer}");
    // One closes: a new connection is served again.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut stream = TcpStream::connect(proxy.admin).await.unwrap();
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.admin);
        let _ = stream.write_all(req.as_bytes()).await;
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        if let Ok(Ok(n)) = read {
            if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no connection served after one closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.stop().await;
}

/// A client that sends only the first bytes of the HTTP/2 preface never
/// lets hyper learn the protocol, so hyper's head deadline never starts:
/// the connection must still be closed, or such clients would hold every
/// slot and shut the probes out.
#[tokio::test]
async fn a_connection_stalled_inside_the_http2_preface_is_closed() {
    let (proxy, _blue) = proxy().await;
    let mut one_byte = TcpStream::connect(proxy.admin).await.unwrap();
    one_byte.write_all(b"P").await.unwrap();
    let mut most = TcpStream::connect(proxy.admin).await.unwrap();
    most.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..23]).await.unwrap();
    let (one_byte, most) = tokio::join!(until_closed(&mut one_byte), until_closed(&mut most));
    assert!(one_byte.is_some(), "a connection that sent one byte of the preface stays open");
    assert!(most.is_some(), "a connection that sent 23 bytes of the preface stays open");
    let mut fresh = TcpStream::connect(proxy.admin).await.unwrap();
    assert!(status_over(&mut fresh, proxy.admin).await.starts_with("HTTP/1.1 200"));
    proxy.stop().await;
}

/// HTTP/2 has no deadline between requests in hyper: an admin connection
/// that asked once and then holds still is closed once it has idled for
/// `IDLE_TIMEOUT`, after its request was answered.
#[tokio::test]
async fn an_http2_connection_that_stops_asking_is_closed() {
    use http_body_util::{BodyExt, Empty};
    let (proxy, _blue) = proxy().await;
    let stream = TcpStream::connect(proxy.admin).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let request =
        http::Request::get(format!("http://{}/healthz", proxy.admin)).body(Empty::<bytes::Bytes>::new()).unwrap();
    let response = send.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("its body");
    let deadline = cutover::admin::IDLE_TIMEOUT * 2 + Duration::from_secs(20);
    let ended = tokio::time::timeout(deadline, conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection is still open");
    proxy.stop().await;
}
