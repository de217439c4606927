//! The verdict against a baseline (issue 22; docs/rollback.md, "How the
//! verdict is reached"), with real upstreams: a failure both pools share
//! never trips, a low-traffic canary failing half its requests does, the
//! verdict and its evidence show in `/status` and the metrics, a reset and
//! new backends clear the evidence, and the absolute limits still trip with
//! and without a baseline.

use crate::support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::*;

/// Generous: CI is a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(60);

async fn post_admin(proxy: &TestProxy, path: &str) -> Answer {
    let req = Request::builder()
        .method(Method::POST)
        .uri(proxy.admin_url(path))
        .header("x-cutover-admin", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = tokio::time::timeout(WAIT, client().request(req)).await.expect("admin call hung").expect("admin call");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"].as_array().unwrap().iter().find(|p| p["name"] == name).expect("pool in status")
}

fn verdict(status: &Value, name: &str) -> String {
    pool(status, name)["guard"]["verdict"]["kind"].as_str().unwrap_or("none").to_string()
}

fn evidence_requests(status: &Value, name: &str, side: &str) -> u64 {
    pool(status, name)["guard"]["evidence"][side]["requests"].as_u64().unwrap_or(0)
}

/// `stable` and `canary` (guarded by `guard`, the lines of its
/// `[pools.canary.guard]`), split 50/50 in route `shop`.
fn config(stable: &[std::net::SocketAddr], canary: &[std::net::SocketAddr], guard: &str) -> String {
    Config::new()
        .pool("stable", stable)
        .pool_with("canary", canary, &format!("[pools.canary.guard]\n{guard}"))
        .route("shop", "stable = 50, canary = 50")
        .build()
}

/// Send `per_round` requests, then read the status, until `cond` holds;
/// `pause` between rounds sets the traffic's pace.
async fn drive_until(
    proxy: &TestProxy,
    what: &str,
    per_round: usize,
    pause: Duration,
    mut cond: impl FnMut(&Value) -> bool,
) -> Value {
    let client = client();
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..per_round {
            get(&client, &proxy.url("/"), &[]).await;
        }
        let status = get_json(&proxy.admin_url("/status")).await;
        if cond(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < end, "never: {what}\n{status:#}");
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn a_failure_both_pools_share_never_trips_the_canary() {
    // Both fail 30%: far over the absolute limit, and just as the baseline.
    let stable = Upstream::flaky("stable", 3).await;
    let canary = Upstream::flaky("canary", 3).await;
    let guard = "baseline = \"stable\"\nmax_error_rate = 0.1\nmin_requests = 20\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;

    // The judge ran on plenty of both pools' outcomes, and never tripped.
    let status = drive_until(&proxy, "the judge weighed 300 requests of each pool", 20, Duration::ZERO, |s| {
        assert!(pool(s, "canary")["tripped"].is_null(), "a shared failure tripped the canary:\n{s:#}");
        evidence_requests(s, "canary", "pool") >= 300 && evidence_requests(s, "canary", "baseline") >= 300
    })
    .await;
    let guard = &pool(&status, "canary")["guard"];
    assert_eq!(guard["baseline"], "stable");
    assert_ne!(guard["verdict"]["kind"], "failing", "{guard:#}");
    assert!(guard["evidence"]["pool"]["failures"].as_u64().unwrap() > 0, "{guard:#}");
    assert!(guard["evidence"]["baseline"]["failures"].as_u64().unwrap() > 0, "{guard:#}");
    assert!(guard["error_rate"].as_f64().unwrap() > 0.1, "over the absolute limit: {guard:#}");
    assert_eq!(status["routes"][0]["effective"]["canary"], 50);

    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_guard_verdict{pool="canary",verdict="failing"}"#), Some(0.0), "{text}");
    let ones: f64 = ["healthy", "inconclusive", "failing"]
        .iter()
        .map(|v| metric(&text, &format!("cutover_guard_verdict{{pool=\"canary\",verdict=\"{v}\"}}")).unwrap_or(0.0))
        .sum();
    assert_eq!(ones, 1.0, "one verdict series at 1:\n{text}");
    assert_eq!(metric(&text, r#"cutover_rollbacks_total{pool="canary",reason="error_increase"}"#), Some(0.0));
}

#[tokio::test]
async fn a_low_traffic_canary_failing_half_its_requests_trips() {
    // A few requests a second: a window would never hold min_requests.
    let stable = Upstream::named("stable").await;
    let canary = Upstream::flaky("canary", 5).await;
    let guard = "baseline = \"stable\"\nmin_requests = 1000\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;

    let status = drive_until(&proxy, "the canary tripped", 1, Duration::from_millis(200), |s| {
        !pool(s, "canary")["tripped"].is_null()
    })
    .await;
    let canary_status = pool(&status, "canary");
    assert_eq!(canary_status["tripped"]["reason"], "error_increase", "{status:#}");
    let reason = canary_status["guard"]["verdict"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("canary failing: ") && reason.contains(" vs stable "), "{reason}");
    assert_eq!(canary_status["tripped"]["detail"], reason);
    assert_eq!(canary_status["guard"]["verdict"]["kind"], "failing");
    assert!(canary_status["guard"]["verdict"]["since"].is_string());
    let evidence = &canary_status["guard"]["evidence"];
    assert_eq!(evidence["rule"], "error_increase");
    assert!(evidence["pool"]["requests"].as_u64().unwrap() < 1000, "judged below min_requests: {evidence:#}");
    assert!(evidence["bound"].as_f64().unwrap() > evidence["allowed"].as_f64().unwrap(), "{evidence:#}");
    assert_eq!(status["routes"][0]["effective"]["canary"], 0);

    let history = get_json(&proxy.admin_url("/history")).await;
    assert_eq!(history[0]["cause"], format!("guard: {reason}"), "{history:#}");

    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_rollbacks_total{pool="canary",reason="error_increase"}"#), Some(1.0), "{text}");
    assert_eq!(metric(&text, r#"cutover_guard_breaches_total{pool="canary",reason="error_increase"}"#), Some(1.0));
    assert_eq!(metric(&text, r#"cutover_guard_verdict{pool="canary",verdict="failing"}"#), Some(1.0));
    assert_eq!(metric(&text, r#"cutover_guard_verdict{pool="canary",verdict="healthy"}"#), Some(0.0));
}

#[tokio::test]
async fn a_reset_and_new_backends_clear_the_evidence() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let canary2 = Upstream::named("canary-2").await;
    let guard = "baseline = \"stable\"\nmax_error_increase = 0.05\nmin_requests = 20\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;

    let status =
        drive_until(&proxy, "a healthy verdict", 20, Duration::ZERO, |s| verdict(s, "canary") == "healthy").await;
    let evidence = &pool(&status, "canary")["guard"]["evidence"];
    assert!(evidence["pool"]["requests"].as_u64().unwrap() >= 20, "{evidence:#}");
    assert!(evidence["bound"].as_f64().unwrap() < 0.05, "{evidence:#}");
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_guard_verdict{pool="canary",verdict="healthy"}"#), Some(1.0), "{text}");

    // A reset: no traffic since, so the evidence is empty again.
    assert_eq!(post_admin(&proxy, "/pools/canary/reset").await.status, StatusCode::OK);
    let cleared = |s: &Value| verdict(s, "canary") == "inconclusive" && evidence_requests(s, "canary", "pool") == 0;
    drive_until(&proxy, "the reset cleared the evidence", 0, Duration::from_millis(50), cleared).await;

    // Evidence again, then new backends: a new version starts empty.
    drive_until(&proxy, "evidence after the reset", 10, Duration::ZERO, |s| evidence_requests(s, "canary", "pool") > 0)
        .await;
    std::fs::write(&proxy.config_path, with_listeners(&config(&[stable.addr], &[canary2.addr], guard))).unwrap();
    assert_eq!(post_admin(&proxy, "/reload").await.status, StatusCode::OK);
    drive_until(&proxy, "new backends cleared the evidence", 0, Duration::from_millis(50), cleared).await;
}

#[tokio::test]
async fn the_absolute_limit_trips_with_a_baseline_when_the_pool_is_worse() {
    // The relative rule allows 90 points: only max_error_rate can trip.
    let stable = Upstream::named("stable").await;
    let canary = Upstream::flaky("canary", 4).await;
    let guard = "baseline = \"stable\"\nmax_error_increase = 0.9\nmax_error_rate = 0.1\nmin_requests = 20\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;
    let status =
        drive_until(&proxy, "the canary tripped", 10, Duration::ZERO, |s| !pool(s, "canary")["tripped"].is_null())
            .await;
    let canary_status = pool(&status, "canary");
    assert_eq!(canary_status["tripped"]["reason"], "error_rate", "{status:#}");
    let reason = canary_status["guard"]["verdict"]["reason"].as_str().unwrap();
    assert!(reason.contains("error rate") && reason.contains("vs stable"), "{reason}");
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_rollbacks_total{pool="canary",reason="error_rate"}"#), Some(1.0), "{text}");
}

#[tokio::test]
async fn without_a_baseline_the_absolute_limit_trips_and_the_verdict_shows_it() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::flaky("canary", 4).await;
    let guard = "max_error_rate = 0.1\nmin_requests = 20\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;
    let status =
        drive_until(&proxy, "the canary tripped", 10, Duration::ZERO, |s| !pool(s, "canary")["tripped"].is_null())
            .await;
    let canary_status = pool(&status, "canary");
    assert_eq!(canary_status["tripped"]["reason"], "error_rate", "{status:#}");
    assert!(canary_status["guard"]["baseline"].is_null());
    // The verdict follows within a tick or two.
    let failing =
        drive_until(&proxy, "a failing verdict", 0, Duration::from_millis(50), |s| verdict(s, "canary") == "failing")
            .await;
    let evidence = &pool(&failing, "canary")["guard"]["evidence"];
    assert_eq!(evidence["rule"], "error_rate", "{evidence:#}");
    assert!(evidence["pool"]["failures"].as_u64().unwrap() > 0, "{evidence:#}");
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_guard_verdict{pool="canary",verdict="failing"}"#), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_canary_slower_than_its_baseline_trips_on_the_latency_ratio() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::with_handler("canary", |_req| async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        text(StatusCode::OK, "canary")
    })
    .await;
    let guard = "baseline = \"stable\"\nmax_latency_ratio = 1.5\nmin_requests = 20\n";
    let proxy = TestProxy::start(&config(&[stable.addr], &[canary.addr], guard)).await;
    let status =
        drive_until(&proxy, "the canary tripped", 10, Duration::ZERO, |s| !pool(s, "canary")["tripped"].is_null())
            .await;
    let canary_status = pool(&status, "canary");
    assert_eq!(canary_status["tripped"]["reason"], "latency_ratio", "{status:#}");
    let reason = canary_status["guard"]["verdict"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("canary slow: ") && reason.contains("stable p99"), "{reason}");
    assert_eq!(canary_status["guard"]["evidence"]["rule"], "latency_ratio");
    assert!(canary_status["guard"]["evidence"]["pool"]["slow"].as_u64().unwrap() > 0, "{canary_status:#}");
    let text = proxy.metrics().await;
    assert_eq!(metric(&text, r#"cutover_rollbacks_total{pool="canary",reason="latency_ratio"}"#), Some(1.0), "{text}");
}
