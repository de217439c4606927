//! Request header names with an underscore (issue 21, defect 4).
//!
//! CGI, WSGI, PHP and Rack map both `X-Forwarded-For` and
//! `X_Forwarded_For` to `HTTP_X_FORWARDED_FOR`, so a client's
//! `X_Forwarded_For: 6.6.6.6` beside the proxy's own `X-Forwarded-For`
//! could spoof the address the proxy vouches for. By default such headers
//! never reach the backend (and are counted); `[server]
//! allow_underscores_in_headers = true` forwards them.

use crate::support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

/// The drop counter's series.
const DROPPED: &str = "cutover_request_headers_dropped_total{reason=\"underscore\"} ";

fn config(upstream: SocketAddr, allow: Option<bool>) -> String {
    let server = match allow {
        None => String::new(),
        Some(allow) => format!("[server]\nlisten = [\"127.0.0.1:0\"]\nallow_underscores_in_headers = {allow}\n"),
    };
    format!("{server}[pools.app]\nbackends = [\"{upstream}\"]\n[[routes]]\nname = \"app\"\nsplit = {{ app = 1 }}\n")
}

/// Send a GET (the inline upstream client) and a POST with a body (hyper's
/// client), each with the spoofing header; return what the upstream saw.
async fn send_spoofed(proxy: &TestProxy, upstream: &Upstream) -> Vec<Seen> {
    let client = client();
    let a = get(&client, &proxy.url("/get"), &[("X_Forwarded_For", "6.6.6.6"), ("x-plain", "kept")]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let req = Request::post(proxy.url("/post"))
        .header("X_Forwarded_For", "6.6.6.6")
        .header("x-plain", "kept")
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let res = client.request(req).await.expect("POST through the proxy");
    assert_eq!(res.status(), StatusCode::OK);
    let _ = res.into_body().collect().await;
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.headers["x-plain"], "kept", "an ordinary header must pass: {s:?}");
        assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1", "the proxy's own X-Forwarded-For: {s:?}");
    }
    seen
}

async fn dropped(proxy: &TestProxy) -> f64 {
    let text = proxy.metrics().await;
    metric(&text, DROPPED).unwrap_or_else(|| panic!("no {DROPPED}in:\n{text}"))
}

#[tokio::test]
async fn underscore_headers_never_reach_the_backend_by_default() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, None)).await;
    assert_eq!(dropped(&proxy).await, 0.0, "the series exists at 0 before any drop");
    for s in send_spoofed(&proxy, &upstream).await {
        assert!(s.headers.get("x_forwarded_for").is_none(), "the underscore header reached the backend: {s:?}");
        assert!(
            s.headers.values().all(|v| v.as_bytes() != b"6.6.6.6"),
            "the spoofed address reached the backend: {s:?}"
        );
    }
    assert_eq!(dropped(&proxy).await, 2.0, "each dropped header is counted");
}

#[tokio::test]
async fn allow_underscores_in_headers_forwards_them() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, Some(true))).await;
    for s in send_spoofed(&proxy, &upstream).await {
        assert_eq!(s.headers.get("x_forwarded_for").map(|v| v.as_bytes()), Some(&b"6.6.6.6"[..]), "{s:?}");
    }
    assert_eq!(dropped(&proxy).await, 0.0);
}

#[tokio::test]
async fn allow_underscores_in_headers_false_is_the_default() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, Some(false))).await;
    for s in send_spoofed(&proxy, &upstream).await {
        assert!(s.headers.get("x_forwarded_for").is_none(), "{s:?}");
    }
}

#[tokio::test]
async fn allow_underscores_in_headers_takes_effect_on_reload() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, None)).await;
    let client = client();
    let a = get(&client, &proxy.url("/"), &[("X_Forwarded_For", "6.6.6.6")]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(upstream.seen()[0].headers.get("x_forwarded_for").is_none());

    let revision = || async { get_json(&proxy.admin_url("/status")).await["revision"].as_u64().expect("revision") };
    let before = revision().await;
    std::fs::write(&proxy.config_path, with_listeners(&config(upstream.addr, Some(true)))).unwrap();
    // The reload is seen in `/status`; after it, the header passes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while revision().await <= before {
        assert!(tokio::time::Instant::now() < deadline, "the rewritten config was never reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    get(&client, &proxy.url("/"), &[("X_Forwarded_For", "6.6.6.6")]).await;
    let seen = upstream.seen();
    assert_eq!(seen.last().unwrap().headers.get("x_forwarded_for").map(|v| v.as_bytes()), Some(&b"6.6.6.6"[..]));
}
