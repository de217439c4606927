//! The admin API against a web browser (issue 21, defect 8).
//!
//! Any page open in a browser that can reach the admin port can make it
//! send a form POST, a simple `fetch`, or (by DNS rebinding) requests under
//! the page's own name. Each attack is sent here as the browser would send
//! it, on a raw socket so every header is exactly as written, and must be
//! refused with the pool left untripped; the calls an operator makes (curl
//! with the admin header, JSON writes, a same-origin page, probes and
//! scrapes by IP) must still work.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

/// Longest wait for one exchange.
const WAIT: Duration = Duration::from_secs(10);

fn config(upstream: SocketAddr, admin: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n[pools.blue]\nbackends = [\"{upstream}\"]\n\
         [pools.green]\nbackends = [\"{upstream}\"]\n[[routes]]\nname = \"app\"\nsplit = {{ blue = 1, green = 1 }}\n"
    )
}

/// Send `method path` to the admin listener with exactly `headers` (each a
/// whole `Name: value` line; `Host` included only when given) and `body`;
/// returns the status code and the body.
async fn call(proxy: &TestProxy, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    let answer = exchange_within(proxy.admin, raw.as_bytes(), WAIT).await.raw;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// `Host: 127.0.0.1:PORT` of the admin listener.
fn own_host(proxy: &TestProxy) -> String {
    format!("Host: {}", proxy.admin)
}

/// Whether pool `name` is tripped, read through `/status`.
async fn tripped(proxy: &TestProxy, name: &str) -> bool {
    let status = get_json(&proxy.admin_url("/status")).await;
    let pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == name).expect("pool in /status");
    !pool["tripped"].is_null()
}

#[tokio::test]
async fn cross_site_writes_are_refused_and_operator_writes_accepted() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, "")).await;
    let host = own_host(&proxy);
    let trip = "/pools/blue/trip";

    let attacks: [(&str, Vec<&str>, &str); 7] = [
        // The case: a form POST from another site.
        (
            "form POST with a foreign Origin",
            vec![&host, "Origin: http://evil.example", "Content-Type: application/x-www-form-urlencoded"],
            "x=1",
        ),
        // A foreign Origin fails even with a JSON type (a page cannot send
        // one without a preflight, but the rule does not rely on that).
        (
            "JSON POST with a foreign Origin",
            vec![&host, "Origin: http://evil.example", "Content-Type: application/json"],
            "",
        ),
        // Sandboxed frames and privacy modes send `Origin: null`.
        ("POST with Origin: null", vec![&host, "Origin: null", "X-Cutover-Admin: 1"], ""),
        // Old browsers send no Origin on a form POST: the type refuses it.
        ("text/plain POST without the admin header", vec![&host, "Content-Type: text/plain"], "{\"x\":1}"),
        ("multipart form POST", vec![&host, "Content-Type: multipart/form-data; boundary=b"], "--b--\r\n"),
        // `fetch(url, {method: "POST", mode: "no-cors"})` without a body.
        ("bodiless POST without a type or the admin header", vec![&host], ""),
        // A browser sends Basic credentials it has cached on its own.
        ("POST with only Basic credentials", vec![&host, "Authorization: Basic YTpi"], ""),
    ];
    for (what, headers, body) in &attacks {
        let (status, answer) = call(&proxy, "POST", trip, headers, body).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert!(answer.contains("\"error\""), "{what}: a JSON error: {answer}");
    }
    let (_, answer) = call(&proxy, "POST", trip, &[&host], "").await;
    assert!(answer.contains("X-Cutover-Admin"), "the refusal says what to send: {answer}");
    // The mechanism ran and refused: the same listener answers reads, and
    // the pool is untouched.
    assert!(!tripped(&proxy, "blue").await, "a refused write tripped the pool");

    // What operators send.
    let (status, answer) = call(&proxy, "POST", trip, &[&host, "X-Cutover-Admin: 1"], "").await;
    assert_eq!(status, 200, "curl with the admin header: {answer}");
    assert!(tripped(&proxy, "blue").await);
    let (status, answer) =
        call(&proxy, "POST", "/pools/blue/reset", &[&host, "Content-Type: application/json"], "").await;
    assert_eq!(status, 200, "a JSON write: {answer}");
    assert!(!tripped(&proxy, "blue").await);
    let same_origin = format!("Origin: http://{}", proxy.admin);
    let (status, answer) =
        call(&proxy, "POST", trip, &[&host, &same_origin, "Content-Type: application/json"], "").await;
    assert_eq!(status, 200, "a page served by the admin listener itself: {answer}");
    let (status, answer) = call(
        &proxy,
        "PUT",
        "/routes/app/split",
        &[&host, "Content-Type: application/json; charset=utf-8"],
        "{\"blue\":0,\"green\":1}",
    )
    .await;
    assert_eq!(status, 200, "PUT with a JSON body: {answer}");
    // A PUT with curl's default form type and no admin header is refused like a POST.
    let (status, answer) =
        call(&proxy, "PUT", "/routes/app/split", &[&host, "Content-Type: application/x-www-form-urlencoded"], "{}")
            .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(&proxy, "DELETE", "/routes/app/split", &[&host, "X-Cutover-Admin: 1"], "").await;
    assert_eq!(status, 200, "DELETE with the admin header: {answer}");
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_ip_literals_and_localhost_are_served() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, "")).await;
    let port = proxy.admin.port();
    let rebound = format!("Host: evil.example:{port}");

    // DNS rebinding: the page's own name in Host, same-origin to the browser.
    for (method, path) in [("GET", "/status"), ("GET", "/history"), ("GET", "/metrics")] {
        let (status, answer) = call(&proxy, method, path, &[&rebound], "").await;
        assert_eq!(status, 421, "{method} {path} under a foreign name: {answer}");
        assert!(answer.contains("allowed_hosts"), "the refusal says how to allow a name: {answer}");
    }
    let origin = format!("Origin: http://evil.example:{port}");
    let (status, answer) =
        call(&proxy, "POST", "/pools/blue/trip", &[&rebound, &origin, "Content-Type: application/json"], "").await;
    assert_eq!(status, 421, "a rebound write: {answer}");
    assert!(!tripped(&proxy, "blue").await, "a refused write tripped the pool");

    // Probes are served whatever the Host: they say nothing to a page.
    for path in ["/healthz", "/ready"] {
        let (status, answer) = call(&proxy, "GET", path, &[&rebound], "").await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    // The kubelet and Prometheus use the pod IP; port-forwards use another port.
    let accepted = [
        format!("Host: {}", proxy.admin),
        format!("Host: 10.1.2.3:{port}"),
        "Host: 10.1.2.3".to_string(),
        format!("Host: [::1]:{port}"),
        format!("Host: localhost:{port}"),
        "Host: localhost:19901".to_string(),
    ];
    for host in &accepted {
        for path in ["/metrics", "/status"] {
            let (status, answer) = call(&proxy, "GET", path, &[host], "").await;
            assert_eq!(status, 200, "{host} GET {path}: {answer}");
        }
    }
    // HTTP/1.0 without a Host: no browser sends that.
    let (status, answer) = call(&proxy, "GET", "/status", &[], "").await;
    assert_eq!(status, 200, "{answer}");
    // Two Host headers are ambiguous.
    let two = format!("Host: {}", proxy.admin);
    let (status, _) = call(&proxy, "GET", "/status", &[&two, &rebound], "").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn allowed_hosts_adds_names_and_cors_is_never_granted() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, "allowed_hosts = [\"cutover\", \"Admin.Internal\"]\n")).await;
    let port = proxy.admin.port();
    for host in [format!("Host: cutover:{port}"), format!("Host: admin.internal:{port}"), "Host: ADMIN.internal".into()]
    {
        let (status, answer) = call(&proxy, "GET", "/metrics", &[&host], "").await;
        assert_eq!(status, 200, "{host}: {answer}");
    }
    let (status, _) = call(&proxy, "GET", "/status", &[&format!("Host: other.internal:{port}")], "").await;
    assert_eq!(status, 421);
    // A configured name works for writes from its own origin.
    let host = format!("Host: admin.internal:{port}");
    let origin = format!("Origin: http://admin.internal:{port}");
    let (status, answer) = call(&proxy, "POST", "/pools/green/trip", &[&host, &origin, "X-Cutover-Admin: 1"], "").await;
    assert_eq!(status, 200, "{answer}");

    // A preflight gets no permission: no Access-Control-* header, no 2xx.
    let raw = format!(
        "OPTIONS /pools/blue/trip HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-cutover-admin\r\n\
         Connection: close\r\n\r\n",
        proxy.admin
    );
    let answer = exchange_within(proxy.admin, raw.as_bytes(), WAIT).await.raw;
    assert!(!answer.starts_with("HTTP/1.1 2"), "a preflight was granted: {answer}");
    assert!(!answer.to_ascii_lowercase().contains("access-control-"), "a CORS header: {answer}");
}

#[tokio::test]
async fn with_a_token_the_bearer_header_is_enough_and_a_foreign_origin_still_fails() {
    let upstream = Upstream::named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let admin = format!("token_file = \"{}\"\n", token.display());
    let proxy = TestProxy::start(&config(upstream.addr, &admin)).await;
    let host = own_host(&proxy);
    let bearer = "Authorization: Bearer s3cret";
    let (status, answer) = call(&proxy, "POST", "/pools/blue/trip", &[&host, bearer], "").await;
    assert_eq!(status, 200, "a bearer token makes the write one no form can send: {answer}");
    let (status, answer) =
        call(&proxy, "POST", "/pools/blue/reset", &[&host, bearer, "Origin: http://evil.example"], "").await;
    assert_eq!(status, 403, "{answer}");
    assert!(tripped(&proxy, "blue").await, "the refused reset changed nothing");
    // Without the token, the admin header passes the browser check and the token check refuses.
    let (status, _) = call(&proxy, "POST", "/pools/blue/reset", &[&host, "X-Cutover-Admin: 1"], "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn allowed_hosts_takes_effect_on_reload() {
    let upstream = Upstream::named("app").await;
    let proxy = TestProxy::start(&config(upstream.addr, "")).await;
    let host = format!("Host: cutover:{}", proxy.admin.port());
    assert_eq!(call(&proxy, "GET", "/metrics", &[&host], "").await.0, 421);

    let revision = || async { get_json(&proxy.admin_url("/status")).await["revision"].as_u64().expect("revision") };
    let before = revision().await;
    let text = config(upstream.addr, "allowed_hosts = [\"cutover\"]\n");
    std::fs::write(&proxy.config_path, with_listeners(&text)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while revision().await <= before {
        assert!(tokio::time::Instant::now() < deadline, "the rewritten config was never reloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(call(&proxy, "GET", "/metrics", &[&host], "").await.0, 200);
}
