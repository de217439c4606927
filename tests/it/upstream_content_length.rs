//! A backend's repeated `Content-Length` (issue 21, defect 1): both
//! upstream clients — the inline one that a GET takes and hyper's that a
//! POST with a body takes — give the same answer. Identical values, in one
//! field as a list or in several fields, are one length (RFC 9110 §8.6) and
//! reach the client as one `Content-Length: 5`; differing values are a
//! malformed answer: `502`, nothing of the backend's answer forwarded, and
//! the connection to the backend closed rather than reused.

use crate::support;

use std::time::Duration;

use support::*;

/// Generous bound for anything that should take milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// A raw backend that answers every request with `framing` as its
/// `Content-Length` field(s) and the body `hello`, keeping the connection
/// open.
async fn upstream(framing: &'static str) -> RawUpstream {
    RawUpstream::always(Reply::keep(format!("HTTP/1.1 200 OK\r\n{framing}Content-Type: text/plain\r\n\r\nhello"))).await
}

/// The request `method` sends: a GET without a body (the inline client),
/// or a POST with one (hyper's client).
fn request(method: &str) -> String {
    match method {
        "GET" => "GET /cl HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n".to_string(),
        _ => "POST /cl HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx".to_string(),
    }
}

/// The `Content-Length` fields of a raw response head.
fn lengths(raw: &str) -> Vec<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

#[tokio::test]
async fn identical_lengths_go_on_as_one() {
    for framing in ["Content-Length: 5, 5\r\n", "Content-Length: 5\r\nContent-Length: 5\r\n", "Content-Length: 5,5\r\n"]
    {
        for method in ["GET", "POST"] {
            let backend = upstream(framing).await;
            let proxy = TestProxy::start(&Config::one_pool(&[backend.addr]).build()).await;
            let raw = exchange_within(proxy.addr, request(method).as_bytes(), DEADLINE).await.raw;
            assert!(raw.starts_with("HTTP/1.1 200"), "{method} {framing:?}: {raw}");
            assert_eq!(lengths(&raw), ["5"], "{method} {framing:?}: {raw}");
            assert!(raw.ends_with("\r\n\r\nhello"), "{method} {framing:?}: {raw}");
        }
    }
}

#[tokio::test]
async fn differing_lengths_are_a_502_and_close_the_connection() {
    for framing in ["Content-Length: 5, 6\r\n", "Content-Length: 5\r\nContent-Length: 6\r\n"] {
        for method in ["GET", "POST"] {
            let backend = upstream(framing).await;
            let proxy = TestProxy::start(&Config::one_pool(&[backend.addr]).build()).await;
            let raw = exchange_within(proxy.addr, request(method).as_bytes(), DEADLINE).await.raw;
            assert!(raw.starts_with("HTTP/1.1 502"), "{method} {framing:?}: {raw}");
            assert!(!raw.contains("hello"), "{method} {framing:?}: the backend's body was forwarded: {raw}");
            backend.until_ended(0, "the proxy closes the backend's connection").await;
        }
    }
}
