//! HTTP/2 backends that turn a request away unprocessed (RFC 9113 §8.7):
//! a stream refused with `RST_STREAM(REFUSED_STREAM)`, or left out by a
//! `GOAWAY`. The proxy sends such a request again, once, when it has no body,
//! whatever its method; and never a request the backend may have processed.
//! The backends are real HTTP/2 servers: h2's own server, and a few raw
//! frames where a test needs a `GOAWAY` that h2 would not send.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);

/// A proxy whose only route goes to one HTTP/2 backend.
async fn proxy_to(backend: SocketAddr) -> TestProxy {
    let config = Config::new().pool_with("grpc", &[backend], "protocol = \"h2\"").route("app", "grpc = 1");
    TestProxy::start(&config.build()).await
}

/// Send `method path` with `body` through the proxy; status and body.
async fn send(proxy: &TestProxy, method: Method, path: &str, body: &'static str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let response = tokio::time::timeout(WAIT, client().request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// What an HTTP/2 backend saw: each stream's method and path, and whether
/// it refused it.
type Streams = Arc<Mutex<Vec<(String, bool)>>>;

/// An h2c backend (h2's server) that refuses the streams `refuse` picks by
/// their number (0, 1, ... over all connections) and answers the others
/// `200 served`.
async fn refusing_backend(refuse: fn(usize) -> bool) -> (SocketAddr, Streams) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let streams: Streams = Arc::default();
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else { return };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let name = format!("{} {}", request.method(), request.uri().path());
                    let refused = {
                        let mut seen = seen.lock().unwrap();
                        let refused = refuse(seen.len());
                        seen.push((name, refused));
                        refused
                    };
                    if refused {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let Ok(mut stream) = respond.send_response(http::Response::new(()), false) else { continue };
                    let _ = stream.send_data(Bytes::from_static(b"served"), true);
                }
            });
        }
    });
    (addr, streams)
}

fn seen(streams: &Streams) -> Vec<(String, bool)> {
    streams.lock().unwrap().clone()
}

fn stream(name: &str, refused: bool) -> (String, bool) {
    (name.to_string(), refused)
}

#[tokio::test]
async fn a_request_without_a_body_whose_stream_is_refused_goes_again_whatever_its_method() {
    // Every other stream is refused: each request's first try.
    let (backend, streams) = refusing_backend(|n| n % 2 == 0).await;
    let proxy = proxy_to(backend).await;

    assert_eq!(send(&proxy, Method::GET, "/a", "").await, (StatusCode::OK, "served".to_string()));
    // Not idempotent, but the backend said it did not process it.
    assert_eq!(send(&proxy, Method::POST, "/b", "").await, (StatusCode::OK, "served".to_string()));
    assert_eq!(
        seen(&streams),
        [stream("GET /a", true), stream("GET /a", false), stream("POST /b", true), stream("POST /b", false)]
    );

    // A body streams to the backend as it comes and is not kept: it cannot
    // go again, so the refusal is the client's 502.
    let (status, _) = send(&proxy, Method::POST, "/c", "payload").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen(&streams)[4..], [stream("POST /c", true)], "a request with a body is not sent again");
}

#[tokio::test]
async fn a_stream_refused_twice_gets_a_502_after_two_tries() {
    let (backend, streams) = refusing_backend(|_| true).await;
    let proxy = proxy_to(backend).await;

    let (status, _) = send(&proxy, Method::GET, "/a", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(seen(&streams), [stream("GET /a", true), stream("GET /a", true)], "sent again once, not more");
}

/// An h2c backend whose first connection reads the first request's
/// HEADERS and answers with a `GOAWAY` naming `last_stream_id` as the last
/// stream it processed, then closes. Later connections are served by
/// hyper, answering `200 second connection`. Counts the connections.
async fn goaway_backend(last_stream_id: u32) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::spawn(goaway_after_first_headers(tcp, last_stream_id));
                continue;
            }
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(text(StatusCode::OK, "second connection"))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

/// The raw side of [`goaway_backend`]'s first connection.
async fn goaway_after_first_headers(mut tcp: TcpStream, last_stream_id: u32) {
    const SETTINGS: u8 = 0x4;
    const HEADERS: u8 = 0x1;
    const GOAWAY: u8 = 0x7;
    let frame = |kind: u8, flags: u8, payload: &[u8]| {
        let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        frame
    };
    let mut preface = [0u8; 24];
    if tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    // Our SETTINGS (none changed), and an ACK of the client's.
    let mut hello = frame(SETTINGS, 0, &[]);
    hello.extend(frame(SETTINGS, 0x1, &[]));
    if tcp.write_all(&hello).await.is_err() {
        return;
    }
    // Skip frames until the request's HEADERS.
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        if head[3] == HEADERS {
            break;
        }
    }
    // GOAWAY: the last stream processed, and NO_ERROR.
    let mut goaway = last_stream_id.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    let _ = tcp.write_all(&frame(GOAWAY, 0, &goaway)).await;
    let _ = tcp.shutdown().await;
}

#[tokio::test]
async fn a_request_a_goaway_leaves_out_goes_again_on_a_new_connection() {
    // Stream 1 is the request; the GOAWAY says nothing was processed.
    let (backend, connections) = goaway_backend(0).await;
    let proxy = proxy_to(backend).await;

    let answer = send(&proxy, Method::DELETE, "/a", "").await;
    assert_eq!(answer, (StatusCode::OK, "second connection".to_string()));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_a_goaway_may_have_processed_is_not_sent_again() {
    // The GOAWAY names stream 1, the request, as processed; then the
    // connection closes unanswered. It may have done its work: a `POST` is
    // not sent twice.
    let (backend, connections) = goaway_backend(1).await;
    let proxy = proxy_to(backend).await;

    let (status, _) = send(&proxy, Method::POST, "/a", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(connections.load(Ordering::SeqCst), 1, "not sent again");
}
