//! A backend that dies with a request in hand (issue 21, defect 7): when
//! the connection closes after the request was written and before any of
//! the answer came, an idempotent request without a body goes once more to
//! another backend of the pool; a request with a body, or with a method that
//! is not idempotent, gets the `502`. Each resend is counted in
//! `cutover_upstream_retries_total{pool,reason}`.

use crate::support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;

/// A raw backend that reads each request whole and closes the connection
/// without answering: a backend killed with the request in hand, made
/// deterministic.
async fn dying() -> RawUpstream {
    RawUpstream::always(Reply::close(Vec::new())).await
}

/// One round-robin pool `app` over `backends`, one route to it.
fn config(backends: &[SocketAddr]) -> String {
    Config::new().pool_with("app", backends, "lb = \"round_robin\"").route("app", "app = 100").build()
}

/// `cutover_upstream_retries_total` of pool `app` for `reason`.
async fn retries(proxy: &TestProxy, reason: &str) -> f64 {
    let text = proxy.metrics().await;
    text.lines()
        .filter(|l| l.starts_with("cutover_upstream_retries_total{"))
        .find(|l| l.contains("pool=\"app\"") && l.contains(&format!("reason=\"{reason}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no retries series for {reason} in:\n{text}"))
}

/// Send `method` to `url` with `body`; the status.
async fn send(url: &str, method: &str, body: &'static str) -> u16 {
    let req = Request::builder().method(method).uri(url).body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap();
    let res = client().request(req).await.expect("request");
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await;
    status
}

#[tokio::test]
async fn a_get_closed_unanswered_goes_once_more_to_another_backend() {
    let dying = dying().await;
    let good = Upstream::named("good").await;
    let proxy = TestProxy::start(&config(&[dying.addr, good.addr])).await;
    let client = client();
    for i in 0..4 {
        let answer = get(&client, &proxy.url(&format!("/get/{i}")), &[]).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "good"), "request {i}");
    }
    // Round robin sent half of them to the dying backend first: the
    // mechanism ran, and every one of those went on to the good backend.
    let died: Vec<String> = dying.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(died.len(), 2, "{died:?}");
    assert!(died.iter().all(|line| line.starts_with("GET /get/")), "{died:?}");
    assert_eq!(good.hits(), 4);
    assert_eq!(retries(&proxy, "closed_unanswered").await, 2.0);
    // The dying backend's failures count against it, not the pool: the
    // client saw no 5xx.
    let text = proxy.metrics().await;
    let value = |pred: &dyn Fn(&str) -> bool| -> f64 {
        text.lines().filter(|l| pred(l)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    };
    let dying_addr = format!("backend=\"{}\"", dying.addr);
    let resets = value(&|l: &str| {
        l.starts_with("cutover_upstream_failures_total{") && l.contains(&dying_addr) && l.contains("kind=\"reset\"")
    });
    assert_eq!(resets, 2.0, "{text}");
    let server_errors = value(&|l: &str| l.starts_with("cutover_requests_total{") && l.contains("code=\"5xx\""));
    assert_eq!(server_errors, 0.0, "{text}");
}

#[tokio::test]
async fn a_request_with_a_body_or_a_post_is_not_sent_again() {
    for (method, body) in [("POST", ""), ("POST", "{\"order\":1}"), ("PUT", "{\"order\":2}")] {
        let dying = dying().await;
        let good = Upstream::named("good").await;
        let proxy = TestProxy::start(&config(&[dying.addr, good.addr])).await;
        let url = proxy.url("/orders");
        // Round robin: one of the two goes to the dying backend.
        let mut statuses = [send(&url, method, body).await, send(&url, method, body).await];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 502], "{method} {body:?}");
        assert_eq!(dying.requests().len(), 1, "{method} {body:?}");
        assert_eq!(good.hits(), 1, "{method} {body:?}: sent again");
        assert_eq!(retries(&proxy, "closed_unanswered").await, 0.0, "{method} {body:?}");
    }
}

#[tokio::test]
async fn the_retry_series_exist_before_the_first_retry() {
    let good = Upstream::named("good").await;
    let proxy = TestProxy::start(&config(&[good.addr])).await;
    assert_eq!(get(&client(), &proxy.url("/"), &[]).await.status, 200);
    for reason in ["connect", "unprocessed", "closed_unanswered"] {
        assert_eq!(retries(&proxy, reason).await, 0.0, "{reason}");
    }
    assert_eq!(good.hits(), 1);
}

/// `retry_unanswered = false`: the pool opts out, so a GET that reached the
/// dying backend is answered `502` and is not sent to the good one.
#[tokio::test]
async fn a_pool_can_turn_the_resend_off() {
    let dying = dying().await;
    let good = Upstream::named("good").await;
    let text = Config::new()
        .pool_with("app", &[dying.addr, good.addr], "lb = \"round_robin\"\nretry_unanswered = false")
        .route("app", "app = 100")
        .build();
    let proxy = TestProxy::start(&text).await;
    let client = client();
    let mut statuses = Vec::new();
    for i in 0..2 {
        statuses.push(get(&client, &proxy.url(&format!("/get/{i}")), &[]).await.status.as_u16());
    }
    statuses.sort_unstable();
    // Round robin: one GET went to the dying backend (the case ran) and
    // got the 502; the other reached the good one, and only it.
    assert_eq!(statuses, [200, 502]);
    assert_eq!(dying.requests().len(), 1);
    assert_eq!(good.hits(), 1, "sent again despite retry_unanswered = false");
    assert_eq!(retries(&proxy, "closed_unanswered").await, 0.0);
}
