//! Upgraded connections through the proxy: a real WebSocket echo, a tunnel
//! that outlives its backend's removal until `drain_timeout`, an upgrade
//! the backend refuses, and an HTTP/1.0 request that asks for one.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);

/// A WebSocket echo server on its own port; counts accepted connections.
async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Pool `ws` over `backend` behind route `app`, with `[server]` lines `server`.
fn config(server: &str, backend: std::net::SocketAddr) -> Config {
    let config = if server.is_empty() { Config::new() } else { Config::new().server(server) };
    config.pool("ws", &[backend]).route("app", "ws = 1")
}

async fn connect(proxy: &TestProxy) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let url = format!("ws://{}/chat", proxy.addr);
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake hung")
        .expect("handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, text: &str) -> String {
    ws.send(Message::text(text)).await.expect("send");
    match tokio::time::timeout(WAIT, ws.next()).await.expect("echo hung") {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn websocket_echo_passes_through() {
    let (backend, accepted) = echo_server().await;
    let proxy = TestProxy::start(&config("", backend).build()).await;
    let mut ws = connect(&proxy).await;
    for i in 0..20 {
        assert_eq!(echo(&mut ws, &format!("hello {i}")).await, format!("hello {i}"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_tunnel_survives_its_backends_removal_until_drain_timeout() {
    let (backend, _) = echo_server().await;
    let other = Upstream::named("other").await;
    let server = "drain_timeout = \"1s\"";
    let proxy = TestProxy::start(&config(server, backend).pool("other", &[other.addr]).build()).await;
    let mut ws = connect(&proxy).await;
    assert_eq!(echo(&mut ws, "before").await, "before");

    // Remove the WebSocket pool: the tunnel is in flight, so it drains.
    let revision = get_json(&proxy.admin_url("/status")).await["revision"].as_u64().unwrap();
    let next = Config::new().server(server).pool("other", &[other.addr]).route("app", "other = 1").build();
    std::fs::write(&proxy.config_path, with_listeners(&next)).unwrap();
    eventually_revision_above(&proxy, revision).await;
    // New requests go elsewhere, while the open tunnel still carries messages.
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.body, "other");
    assert_eq!(echo(&mut ws, "after the drain started").await, "after the drain started");

    // At drain_timeout the tunnel is closed.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "tunnel never closed after drain_timeout");
}

async fn eventually_revision_above(proxy: &TestProxy, than: u64) {
    let end = tokio::time::Instant::now() + WAIT;
    while get_json(&proxy.admin_url("/status")).await["revision"].as_u64().unwrap() <= than {
        assert!(tokio::time::Instant::now() < end, "reload never applied");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A backend that answers every request with 200 "plain" and never
/// upgrades, behind a proxy.
async fn plain_backend_behind_proxy() -> (Upstream, TestProxy) {
    let upstream = Upstream::named("plain").await;
    let proxy = TestProxy::start(&Config::one_pool(&[upstream.addr]).build()).await;
    (upstream, proxy)
}

/// A backend that refuses the upgrade (200): the client gets the 200, and
/// bytes it sent after its upgrade request never reach the backend as
/// tunnel data.
#[tokio::test]
async fn a_refused_upgrade_forwards_nothing_after_it() {
    let (upstream, proxy) = plain_backend_behind_proxy().await;
    let raw =
        b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x85GARBAGE-FRAME";
    let out = exchange_within(proxy.addr, raw, Duration::from_secs(3)).await;
    let first = out.responses.first().unwrap_or_else(|| panic!("no answer: {:?}", out.raw));
    assert_eq!((first.status, first.body.as_slice()), (200, &b"plain"[..]), "{}", out.raw);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "the backend saw more than the one request: {seen:?}");
    assert_eq!(seen[0].uri.path(), "/chat");
    assert!(seen[0].headers.get("upgrade").is_some(), "the upgrade request itself is forwarded");
}

/// Upgrading is HTTP/1.1's (RFC 9110 §7.8): an HTTP/1.0 request that asks
/// for one is forwarded as a plain request, without the upgrade headers.
#[tokio::test]
async fn an_http_1_0_request_is_never_upgraded() {
    let (upstream, proxy) = plain_backend_behind_proxy().await;
    let raw = b"GET /chat HTTP/1.0\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let out = exchange_within(proxy.addr, raw, Duration::from_secs(3)).await;
    assert_eq!(out.only().status, 200, "{}", out.raw);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].headers.get("upgrade").is_none(), "an HTTP/1.0 upgrade request went on: {:?}", seen[0].headers);
    let connection = seen[0].headers.get("connection").map(|v| v.to_str().unwrap_or("").to_ascii_lowercase());
    assert_ne!(connection.as_deref(), Some("upgrade"), "{:?}", seen[0].headers);
}
