//! Mirroring (issue 26): copies of a route's requests go to a shadow pool,
//! and the primary never waits for or fails because of them.
//!
//! Real upstreams on both sides. The shadow records what it receives
//! (method, path, headers, body), so the copies are compared with what the
//! clients sent; the share of copies is checked against `percent` with a
//! seeded proxy; a shadow that answers after 5 s, and a dead one, leave the
//! primary's requests prompt and successful; bodies over `max_body` are
//! not copied and are counted; the primary pool's guard never sees a copy,
//! the shadow pool's guard sees each one.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

/// What the shadow received: method, path, headers, body.
type Copies = Arc<Mutex<Vec<(http::Method, String, http::HeaderMap, Bytes)>>>;

/// A shadow upstream that records each request whole and answers after `delay`.
async fn shadow(delay: Duration) -> (Upstream, Copies) {
    let copies: Copies = Arc::default();
    let seen = copies.clone();
    let up = Upstream::with_handler("shadow", move |req| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            seen.lock().unwrap().push((parts.method, parts.uri.path().to_string(), parts.headers, body));
            tokio::time::sleep(delay).await;
            text(StatusCode::OK, "shadow")
        }
    })
    .await;
    (up, copies)
}

fn config(prod: &str, shadow: &str, mirror: &str) -> String {
    format!(
        "[pools.prod]\nbackends = [\"{prod}\"]\n[pools.prod.guard]\nmax_error_rate = 0.5\nmin_requests = 1000\n\
         [pools.shadow]\nbackends = [\"{shadow}\"]\n[pools.shadow.guard]\nmax_error_rate = 0.5\nmin_requests = 1000\n\
         [[routes]]\nname = \"shop\"\nsplit = {{ prod = 1 }}\n[routes.mirror]\npool = \"shadow\"\n{mirror}"
    )
}

async fn send(url: &str, method: &str, body: &'static [u8], headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::builder().method(method).uri(url).header("host", "shop.example.com");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        client().request(req.body(Full::new(Bytes::from_static(body))).unwrap()),
    )
    .await
    .expect("request timed out")
    .expect("request failed");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

async fn mirror_count(proxy: &TestProxy, result: &str) -> f64 {
    let metrics = proxy.metrics().await;
    let series = format!("cutover_mirror_requests_total{{result=\"{result}\",route=\"shop\"}} ");
    metric(&metrics, &series).unwrap_or_else(|| panic!("no {series}in:\n{metrics}"))
}

async fn guard_of(proxy: &TestProxy, pool: &str) -> serde_json::Value {
    let status = get_json(&proxy.admin_url("/status")).await;
    let pools = status["pools"].as_array().unwrap().clone();
    pools.into_iter().find(|p| p["name"] == pool).unwrap()["guard"].clone()
}

/// Wait until `cond` of the proxy holds.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(tokio::time::Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_receives_faithful_copies_at_the_configured_share() {
    let prod = Upstream::named("prod").await;
    let (shadow, copies) = shadow(Duration::ZERO).await;
    let proxy =
        TestProxy::start_seeded(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "percent = 30\n"), Some(26))
            .await;
    const N: usize = 600;
    for i in 0..N {
        let (method, body): (&str, &'static [u8]) =
            if i.is_multiple_of(2) { ("GET", b"") } else { ("POST", b"order=42") };
        let a = send(&proxy.url(&format!("/item/{i}")), method, body, &[("x-trace", "t")]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "prod", "the client gets the primary's answer");
    }
    until("every copy answered", || async {
        let done = mirror_count(&proxy, "sent").await as usize;
        done > 0 && done == copies.lock().unwrap().len()
    })
    .await;
    let copies = copies.lock().unwrap().clone();
    // 30 % of 600 is 180, with a standard deviation of 11: 120..240 is
    // more than five of them either way.
    assert!((120..=240).contains(&copies.len()), "{} copies of {N} requests at 30 %", copies.len());
    assert_eq!(prod.hits(), N, "every request reached the primary once");
    for (method, path, headers, body) in &copies {
        let i: usize = path.strip_prefix("/item/").and_then(|n| n.parse().ok()).expect("a path the client sent");
        let (want_method, want_body): (&str, &[u8]) =
            if i.is_multiple_of(2) { ("GET", b"") } else { ("POST", b"order=42") };
        assert_eq!(method.as_str(), want_method, "{path}");
        assert_eq!(&body[..], want_body, "{path}");
        assert_eq!(headers["x-cutover-mirror"], "1");
        assert_eq!(headers["host"], "shop.example.com-shadow");
        assert_eq!(headers["x-trace"], "t");
        assert!(headers.contains_key("x-forwarded-for"));
    }
    assert!(copies.iter().any(|c| c.0 == "POST") && copies.iter().any(|c| c.0 == "GET"));
    // The shadow's outcomes count under its own pool, never the primary's.
    assert_eq!(guard_of(&proxy, "prod").await["requests"].as_u64(), Some(N as u64));
    assert_eq!(guard_of(&proxy, "shadow").await["requests"].as_u64(), Some(copies.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_with_the_header_are_mirrored() {
    let prod = Upstream::named("prod").await;
    let (shadow, copies) = shadow(Duration::ZERO).await;
    let proxy =
        TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "header = \"x-mirror\"\n")).await;
    for i in 0..20 {
        let headers: &[(&str, &str)] = if i < 5 { &[("x-mirror", "yes")] } else { &[] };
        assert_eq!(send(&proxy.url("/h"), "GET", b"", headers).await.status, StatusCode::OK);
    }
    until("the five copies answered", || async { mirror_count(&proxy, "sent").await == 5.0 }).await;
    assert_eq!(copies.lock().unwrap().len(), 5);
    assert!(copies.lock().unwrap().iter().all(|c| c.2["x-mirror"] == "yes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_costs_the_primary_nothing() {
    let prod = Upstream::named("prod").await;
    let (shadow, copies) = shadow(Duration::from_secs(5)).await;
    let proxy = TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "percent = 100\n")).await;
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let a = send(&proxy.url("/slow"), "POST", b"payload", &[]).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let primary = started.elapsed();
    // Every primary request is done while the shadow has answered none of
    // its copies, though it has received them: nothing waited on it.
    until("the shadow received copies", || async { !copies.lock().unwrap().is_empty() }).await;
    assert_eq!(mirror_count(&proxy, "sent").await, 0.0, "the shadow answered already? primary took {primary:?}");
    assert!(primary < Duration::from_secs(5), "the primary took {primary:?}, as long as the shadow's answer");
    until("the shadow's answers read", || async { mirror_count(&proxy, "sent").await == 20.0 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_shadow_fails_no_primary_request() {
    let prod = Upstream::named("prod").await;
    let (dead, _socket) = dead_addr();
    let proxy = TestProxy::start(&config(&prod.addr.to_string(), &dead.to_string(), "")).await;
    for _ in 0..30 {
        assert_eq!(send(&proxy.url("/"), "GET", b"", &[]).await.status, StatusCode::OK);
    }
    until("30 copies failed", || async { mirror_count(&proxy, "failed").await == 30.0 }).await;
    let prod_guard = guard_of(&proxy, "prod").await;
    assert_eq!(prod_guard["requests"].as_u64(), Some(30));
    assert_eq!(prod_guard["failures"].as_u64(), Some(0), "a copy's failure never counts against the primary");
    let shadow_guard = guard_of(&proxy, "shadow").await;
    assert_eq!(shadow_guard["failures"].as_u64(), Some(30), "each copy's failure counts once, never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_bound_are_not_mirrored_and_are_counted() {
    static BIG: [u8; 2048] = [b'x'; 2048];
    let prod = Upstream::named("prod").await;
    let (shadow, copies) = shadow(Duration::ZERO).await;
    let proxy =
        TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "max_body = \"1KiB\"\n")).await;
    for _ in 0..5 {
        assert_eq!(send(&proxy.url("/big"), "POST", &BIG, &[]).await.status, StatusCode::OK);
        assert_eq!(send(&proxy.url("/small"), "POST", &BIG[..1024], &[]).await.status, StatusCode::OK);
    }
    until("the small bodies' copies answered", || async { mirror_count(&proxy, "sent").await == 5.0 }).await;
    assert_eq!(mirror_count(&proxy, "too_large").await, 5.0);
    let copies = copies.lock().unwrap();
    assert_eq!(copies.len(), 5);
    assert!(copies.iter().all(|c| c.1 == "/small" && c.3.len() == 1024));
    assert_eq!(prod.hits(), 10, "the primary got every body, large or not");
}

/// A chunked body of `chunks` chunks of `size` bytes each, on its own
/// connection: no `Content-Length`, so only the copy taken as the body
/// streams can tell its length.
async fn send_chunked(proxy: &TestProxy, path: &str, chunks: usize, size: usize) -> u16 {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: shop.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..chunks {
        raw.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        raw.extend(std::iter::repeat_n(b'c', size));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    support::raw_client::exchange(proxy.addr, &raw).await.only().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_is_copied_up_to_the_bound_as_it_passes() {
    // A backend that reads the whole body before it answers, as a real one does.
    let prod = Upstream::with_handler("prod", |req| async move {
        let _ = req.into_body().collect().await;
        text(StatusCode::OK, "prod")
    })
    .await;
    let (shadow, copies) = shadow(Duration::ZERO).await;
    let proxy =
        TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "max_body = \"1KiB\"\n")).await;
    for _ in 0..3 {
        assert_eq!(send_chunked(&proxy, "/streamed-big", 3, 600).await, 200);
        assert_eq!(send_chunked(&proxy, "/streamed-small", 2, 300).await, 200);
    }
    until("the small bodies' copies answered", || async { mirror_count(&proxy, "sent").await == 3.0 }).await;
    assert_eq!(mirror_count(&proxy, "too_large").await, 3.0);
    let copies = copies.lock().unwrap();
    assert_eq!(copies.len(), 3);
    assert!(copies.iter().all(|c| c.1 == "/streamed-small" && c.3.len() == 600 && c.3.iter().all(|&b| b == b'c')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_are_bounded_and_the_excess_dropped() {
    let prod = Upstream::named("prod").await;
    let (shadow, copies) = shadow(Duration::from_secs(30)).await;
    let proxy = TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "")).await;
    // More requests than copies may be in flight (256 per route), each
    // copy held by the shadow far longer than the run.
    for _ in 0..300 {
        assert_eq!(send(&proxy.url("/"), "GET", b"", &[]).await.status, StatusCode::OK);
    }
    until("the excess counted as dropped", || async { mirror_count(&proxy, "dropped").await >= 44.0 }).await;
    until("the copies in flight reached the shadow", || async { copies.lock().unwrap().len() == 256 }).await;
    assert_eq!(mirror_count(&proxy, "dropped").await, 44.0);
    assert_eq!(mirror_count(&proxy, "sent").await, 0.0, "no copy has been answered yet");
    assert_eq!(prod.hits(), 300, "every primary request answered meanwhile");
}

/// Only the proxy marks a copy: a client's own `X-Cutover-Mirror` never
/// reaches the primary (whose backend may skip charging or writing for a
/// marked request), while the proxy's copies still carry theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_mirror_marker_never_reaches_the_primary() {
    let prod = Upstream::with_handler("prod", |req| async move {
        let marked = req.headers().get_all("x-cutover-mirror").iter().count();
        text(StatusCode::OK, format!("markers {marked}"))
    })
    .await;
    let (shadow, copies) = shadow(Duration::ZERO).await;
    let proxy = TestProxy::start(&config(&prod.addr.to_string(), &shadow.addr.to_string(), "percent = 100\n")).await;
    let spoofed = [("x-cutover-mirror", "1"), ("X-Cutover-Mirror", "yes")];
    let a = send(&proxy.url("/checkout"), "POST", b"order=42", &spoofed).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "markers 0"), "the primary saw the client's marker");
    until("the copy answered", || async { copies.lock().unwrap().len() == 1 }).await;
    let copy = copies.lock().unwrap()[0].2.clone();
    let markers: Vec<_> = copy.get_all("x-cutover-mirror").iter().collect();
    assert_eq!(markers, ["1"], "the copy carries the proxy's marker alone");
}
