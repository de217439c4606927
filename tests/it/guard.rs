//! Automatic rollback, switchback and the admin API (SPEC §3 "Guard and
//! automatic rollback", "Runtime overrides"; §4; §5), against real upstreams.

use crate::support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// An upstream failing its first `failures` requests with 500, then
/// answering 200 with its own name.
async fn flaky_first(name: &str, failures: usize) -> Upstream {
    let counter = Arc::new(AtomicUsize::new(0));
    let body = name.to_string();
    Upstream::with_handler(name, move |_req| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let body = body.clone();
        async move {
            if n < failures {
                text(StatusCode::INTERNAL_SERVER_ERROR, "boom")
            } else {
                text(StatusCode::OK, body)
            }
        }
    })
    .await
}

async fn admin(proxy: &TestProxy, method: Method, path: &str, body: &str, token: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(proxy.admin_url(path)).header("x-cutover-admin", "1");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let res = tokio::time::timeout(WAIT, client().request(req)).await.expect("admin call hung").expect("admin call");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

fn json(answer: &Answer) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.body))
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"].as_array().unwrap().iter().find(|p| p["name"] == name).expect("pool in status")
}

/// Pools `stable` and `canary` (guarded: 10% errors over at least 40
/// requests) behind route `shop`, 50/50; `extra` comes first.
fn canary_config(stable: &Upstream, canary: &Upstream, extra: &str) -> Config {
    let guard = "[pools.canary.guard]\nmax_error_rate = 0.1\nwindow = \"30s\"\nmin_requests = 40";
    Config::new()
        .raw(extra)
        .pool("stable", &[stable.addr])
        .pool_with("canary", &[canary.addr], guard)
        .route("shop", "stable = 50, canary = 50")
}

/// Send until `cond` on the status holds.
async fn drive_until(proxy: &TestProxy, what: &str, mut cond: impl FnMut(&Value) -> bool) -> Value {
    let client = client();
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..10 {
            get(&client, &proxy.url("/"), &[]).await;
        }
        let status = get_json(&proxy.admin_url("/status")).await;
        if cond(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < end, "never: {what}\n{status:#}");
    }
}

#[tokio::test]
async fn a_failing_canary_trips_gets_nothing_more_and_reset_brings_it_back() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::flaky("canary", 3).await;
    let proxy = TestProxy::start(&canary_config(&stable, &canary, "").build()).await;

    let status = drive_until(&proxy, "canary tripped", |s| !pool(s, "canary")["tripped"].is_null()).await;
    let trip = &pool(&status, "canary")["tripped"];
    assert_eq!(trip["reason"], "error_rate");
    let detail = trip["detail"].as_str().unwrap();
    assert!(detail.starts_with("error rate 0.") && detail.contains("> 0.1 over 30s, n="), "{detail}");
    let route = &status["routes"][0];
    assert_eq!(route["configured"]["canary"], 50);
    assert_eq!(route["effective"]["canary"], 0);
    assert_eq!(route["effective"]["stable"], 50);

    // After the trip: every request answers 200 from stable, none reaches the canary.
    let hits = canary.hits();
    let client = client();
    for _ in 0..100 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "stable"));
    }
    assert_eq!(canary.hits(), hits, "a tripped canary received traffic");

    let metrics = proxy.metrics().await;
    assert_eq!(
        metric(&metrics, r#"cutover_rollbacks_total{pool="canary",reason="error_rate"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, r#"cutover_pool_tripped{pool="canary"}"#), Some(1.0));
    assert_eq!(metric(&metrics, r#"cutover_pool_weight{pool="canary",route="shop"}"#), Some(0.0), "{metrics}");

    // The history records the trip with its figures.
    let history = get_json(&proxy.admin_url("/history")).await;
    let newest = &history[0];
    assert!(newest["cause"].as_str().unwrap().starts_with("guard: pool canary: error rate"), "{history:#}");
    assert_eq!(newest["splits"]["shop"]["canary"], 0);

    let reset = admin(&proxy, Method::POST, "/pools/canary/reset", "", None).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert!(json(&reset)["revision"].as_u64().unwrap() > newest["revision"].as_u64().unwrap());
    let end = tokio::time::Instant::now() + WAIT;
    while canary.hits() == hits {
        assert!(tokio::time::Instant::now() < end, "canary got no traffic after reset");
        get(&client, &proxy.url("/"), &[]).await;
    }
}

/// A canary answering only 4xx, far past `min_requests`, is not tripped:
/// a 4xx is the client's error. Such answers are judged only by the
/// periodic judge, so the test shows it ran after the canary's traffic: a
/// witness pool whose failures all came while its window was below
/// `min_requests` (so that only the periodic judge can catch it) gets its
/// breach counted, and every round of the judge looks at every guard.
#[tokio::test]
async fn a_canary_below_min_requests_or_with_only_4xx_is_not_tripped() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::with_handler("canary", |_req| async { text(StatusCode::NOT_FOUND, "nope") }).await;
    let witness = flaky_first("witness", 5).await;
    let guard = "[pools.witness.guard]\nmax_error_rate = 0.1\nwindow = \"30s\"\nmin_requests = 20";
    let config = canary_config(&stable, &canary, "").pool_with("witness", &[witness.addr], guard).route_with(
        "witness",
        "witness = 1",
        "host = \"witness.test\"",
    );
    let proxy = TestProxy::start(&config.build()).await;
    let client = client();
    for _ in 0..200 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "canary")["guard"]["requests"].as_u64().unwrap() >= 40, "{status:#}");
    let witness_breaches = r#"cutover_guard_breaches_total{pool="witness",reason="error_rate"}"#;
    let breaches = |metrics: &str| metric(metrics, witness_breaches).unwrap_or_else(|| panic!("no series:\n{metrics}"));
    assert_eq!(breaches(&proxy.metrics().await), 0.0);
    // 5 failures below `min_requests`, then 15 successes: 25% of 20.
    for i in 0..20 {
        let a = get(&client, &proxy.url("/"), &[("host", "witness.test")]).await;
        assert_eq!(a.status, if i < 5 { 500 } else { 200 }, "witness request {i}");
    }
    let end = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        let metrics = proxy.metrics().await;
        if breaches(&metrics) >= 1.0 {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < end, "the periodic judge never ran:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for reason in ["error_rate", "latency"] {
        let series = format!(r#"cutover_guard_breaches_total{{pool="canary",reason="{reason}"}}"#);
        assert_eq!(metric(&metrics, &series), Some(0.0), "{metrics}");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "canary")["tripped"].is_null(), "{status:#}");
    assert_eq!(pool(&status, "canary")["guard"]["failures"], 0);
}

/// A blue-green route just switched to green, whose green then fails,
/// goes back to blue by itself.
#[tokio::test]
async fn a_failing_green_switches_the_route_back_to_blue() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::flaky("green", 10).await;
    let config = |blue_w: u32, green_w: u32| {
        let guard = "[pools.green.guard]\nmax_error_rate = 0.05\nwindow = \"30s\"\nmin_requests = 20";
        Config::new()
            .pool("blue", &[blue.addr])
            .pool_with("green", &[green.addr], guard)
            .route("app", &format!("blue = {blue_w}, green = {green_w}"))
            .build()
    };
    let proxy = TestProxy::start(&config(100, 0)).await;
    std::fs::write(&proxy.config_path, with_listeners(&config(0, 100))).unwrap();
    let status = drive_until(&proxy, "green tripped", |s| !pool(s, "green")["tripped"].is_null()).await;
    assert_eq!(status["routes"][0]["effective"]["blue"], 100, "{status:#}");
    assert_eq!(status["routes"][0]["effective"]["green"], 0, "{status:#}");
    let client = client();
    for _ in 0..50 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "blue"));
    }
    // Reloading the same file does not clear the trip: no flapping.
    let same = admin(&proxy, Method::POST, "/reload", "", None).await;
    assert_eq!(json(&same)["changed"], false);
    let text = std::fs::read_to_string(&proxy.config_path).unwrap() + "# touched\n";
    std::fs::write(&proxy.config_path, text).unwrap();
    let r = json(&admin(&proxy, Method::POST, "/reload", "", None).await)["revision"].as_u64().unwrap();
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(status["revision"].as_u64().unwrap() >= r);
    assert!(!pool(&status, "green")["tripped"].is_null(), "a reload cleared the trip");
    assert_eq!(status["routes"][0]["effective"]["blue"], 100);
}

#[tokio::test]
async fn a_pool_serving_alone_with_no_earlier_split_keeps_its_weight_and_counts_the_breach() {
    let only = Upstream::flaky("only", 10).await;
    let guard = "[pools.only.guard]\nmax_error_rate = 0.1\nmin_requests = 10";
    let config = Config::new().pool_with("only", &[only.addr], guard).route("app", "only = 1").build();
    let proxy = TestProxy::start(&config).await;
    let client = client();
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..20 {
            get(&client, &proxy.url("/"), &[]).await;
        }
        let metrics = proxy.metrics().await;
        if metric(&metrics, r#"cutover_guard_breaches_total{pool="only",reason="error_rate"}"#).unwrap_or(0.0) >= 1.0 {
            assert_eq!(
                metric(&metrics, r#"cutover_rollbacks_total{pool="only",reason="error_rate"}"#),
                Some(0.0),
                "{metrics}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < end, "breach never counted");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "only")["tripped"].is_null());
    assert_eq!(status["routes"][0]["effective"]["only"], 1);
}

#[tokio::test]
async fn override_then_switchback_then_delete() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config = Config::new()
        .pool("blue", &[blue.addr])
        .pool("green", &[green.addr])
        .route("app", "blue = 100, green = 0")
        .build();
    let proxy = TestProxy::start(&config).await;
    let client = client();

    let set = admin(&proxy, Method::PUT, "/routes/app/split", r#"{"blue":0,"green":100}"#, None).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    let r1 = json(&set)["revision"].as_u64().unwrap();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "green");
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["routes"][0]["override"]["green"], 100);
    assert_eq!(status["routes"][0]["configured"]["blue"], 100);

    let back = admin(&proxy, Method::POST, "/routes/app/switchback", "", None).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    assert!(json(&back)["revision"].as_u64().unwrap() > r1);
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "blue");
    }
    // A second switchback undoes the first, like `cd -`.
    admin(&proxy, Method::POST, "/routes/app/switchback", "", None).await;
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "green");
    }
    let del = admin(&proxy, Method::DELETE, "/routes/app/split", "", None).await;
    assert_eq!(del.status, StatusCode::OK);
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "blue");
    }
    assert!(get_json(&proxy.admin_url("/status")).await["routes"][0]["override"].is_null());

    // Causes are in the history, newest first.
    let history = get_json(&proxy.admin_url("/history")).await;
    let causes: Vec<&str> = history.as_array().unwrap().iter().map(|r| r["cause"].as_str().unwrap()).collect();
    assert!(causes[0].starts_with("admin: cleared override"), "{causes:?}");
    assert!(causes[1].starts_with("admin: switchback"), "{causes:?}");
}

#[tokio::test]
async fn an_override_holds_until_the_file_changes_that_route() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config = |split: &str, comment: &str| {
        Config::new().raw(comment).pool("blue", &[blue.addr]).pool("green", &[green.addr]).route("app", split).build()
    };
    let proxy = TestProxy::start(&config("blue = 100, green = 0", "")).await;
    admin(&proxy, Method::PUT, "/routes/app/split", r#"{"green":1}"#, None).await;
    // An edit elsewhere in the file keeps the override.
    std::fs::write(&proxy.config_path, with_listeners(&config("blue = 100, green = 0", "# other edit"))).unwrap();
    admin(&proxy, Method::POST, "/reload", "", None).await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "green");
    // A new split for the route in the file is a newer intent: the override goes.
    std::fs::write(&proxy.config_path, with_listeners(&config("blue = 99, green = 0", ""))).unwrap();
    admin(&proxy, Method::POST, "/reload", "", None).await;
    assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "blue");
    assert!(get_json(&proxy.admin_url("/status")).await["routes"][0]["override"].is_null());
}

#[tokio::test]
async fn admin_errors_are_404_and_400_with_json() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let config = Config::new().pool("blue", &[blue.addr]).pool("green", &[green.addr]).route("app", "blue = 1").build();
    let proxy = TestProxy::start(&config).await;
    for (method, path, body, code) in [
        (Method::PUT, "/routes/nope/split", r#"{"blue":1}"#, StatusCode::NOT_FOUND),
        (Method::POST, "/pools/nope/trip", "", StatusCode::NOT_FOUND),
        (Method::POST, "/pools/nope/reset", "", StatusCode::NOT_FOUND),
        (Method::PUT, "/routes/app/split", "not json", StatusCode::BAD_REQUEST),
        (Method::PUT, "/routes/app/split", r#"{"blue":-1}"#, StatusCode::BAD_REQUEST),
        (Method::PUT, "/routes/app/split", r#"{"blue":0}"#, StatusCode::BAD_REQUEST),
        (Method::PUT, "/routes/app/split", r#"{"green":1}"#, StatusCode::BAD_REQUEST),
        (Method::GET, "/nothing-here", "", StatusCode::NOT_FOUND),
    ] {
        let a = admin(&proxy, method.clone(), path, body, None).await;
        assert_eq!(a.status, code, "{method} {path} {body}: {}", a.body);
        assert!(json(&a)["error"].is_string(), "{}", a.body);
    }
    // The admin API is not reachable through the traffic listener.
    let a = get(&client(), &proxy.url("/status"), &[]).await;
    assert_eq!(a.body, "blue");
}

#[tokio::test]
async fn mutating_calls_need_the_bearer_token() {
    let blue = Upstream::named("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "  s3cret-token\n").unwrap();
    let admin_section = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"", token_path.display());
    let config = Config::new().raw(&admin_section).pool("blue", &[blue.addr]).route("app", "blue = 1").build();
    let proxy = TestProxy::start(&config).await;
    assert_eq!(admin(&proxy, Method::POST, "/pools/blue/trip", "", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin(&proxy, Method::POST, "/pools/blue/trip", "", Some("wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(admin(&proxy, Method::POST, "/reload", "", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(admin(&proxy, Method::GET, "/status", "", None).await.status, StatusCode::OK);
    let ok = admin(&proxy, Method::POST, "/pools/blue/reset", "", Some("s3cret-token")).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
}

#[tokio::test]
async fn a_trip_survives_a_restart_through_the_state_file() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state").join("cutover.json");
    let extra = format!("[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"", state.display());
    let config = canary_config(&stable, &canary, &extra).build();

    let first = TestProxy::start(&config).await;
    let trip = admin(&first, Method::POST, "/pools/canary/trip", "", None).await;
    assert_eq!(trip.status, StatusCode::OK);
    let revision = json(&trip)["revision"].as_u64().unwrap();
    first.stop().await;
    assert!(state.exists());

    let second = TestProxy::start(&config).await;
    let status = get_json(&second.admin_url("/status")).await;
    assert_eq!(pool(&status, "canary")["tripped"]["reason"], "manual", "{status:#}");
    assert!(status["revision"].as_u64().unwrap() > revision, "revisions continue after a restart");
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &second.url("/"), &[]).await.body, "stable");
    }
    assert_eq!(canary.hits(), 0);
    second.stop().await;

    // A corrupt state file is reported and ignored, never fatal.
    std::fs::write(&state, "{ not json").unwrap();
    let third = TestProxy::start(&config).await;
    let status = get_json(&third.admin_url("/status")).await;
    assert!(pool(&status, "canary")["tripped"].is_null());
}

#[tokio::test]
async fn a_new_version_of_the_pool_clears_its_trip() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let canary_v2 = Upstream::named("canary-v2").await;
    let proxy = TestProxy::start(&canary_config(&stable, &canary, "").build()).await;
    admin(&proxy, Method::POST, "/pools/canary/trip", "", None).await;
    // Weights-only edit: the trip stays.
    let text = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(&proxy.config_path, text.replace("stable = 50, canary = 50", "stable = 40, canary = 60")).unwrap();
    admin(&proxy, Method::POST, "/reload", "", None).await;
    assert!(!pool(&get_json(&proxy.admin_url("/status")).await, "canary")["tripped"].is_null());
    // New backends: a new version, the trip is cleared.
    let text = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(&proxy.config_path, text.replace(&canary.addr.to_string(), &canary_v2.addr.to_string())).unwrap();
    admin(&proxy, Method::POST, "/reload", "", None).await;
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "canary")["tripped"].is_null(), "{status:#}");
    assert_eq!(status["routes"][0]["effective"]["canary"], 60);
}

/// A pool's version is its set of backends: a file that lists the same
/// backends in another order (a generator's, a template's) keeps the trip,
/// where another set clears it.
#[tokio::test]
async fn the_same_backends_in_another_order_are_the_same_version() {
    let stable = Upstream::named("stable").await;
    let (a, b, c) = (Upstream::named("a").await, Upstream::named("b").await, Upstream::named("c").await);
    let guard = "[pools.canary.guard]\nmax_error_rate = 0.1\nwindow = \"30s\"\nmin_requests = 40";
    let config = |first: &Upstream, second: &Upstream| {
        Config::new()
            .pool("stable", &[stable.addr])
            .pool_with("canary", &[first.addr, second.addr], guard)
            .route("shop", "stable = 50, canary = 50")
            .build()
    };
    let proxy = TestProxy::start(&config(&a, &b)).await;
    admin(&proxy, Method::POST, "/pools/canary/trip", "", None).await;
    let revision = |answer: &Answer| json(answer)["revision"].as_u64().expect("a revision");
    let before = revision(&admin(&proxy, Method::POST, "/reload", "", None).await);
    std::fs::write(&proxy.config_path, config(&b, &a)).unwrap();
    let reordered = admin(&proxy, Method::POST, "/reload", "", None).await;
    assert!(revision(&reordered) > before, "the reordered file was applied: {}", reordered.body);
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(!pool(&status, "canary")["tripped"].is_null(), "{status:#}");
    std::fs::write(&proxy.config_path, config(&b, &c)).unwrap();
    admin(&proxy, Method::POST, "/reload", "", None).await;
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "canary")["tripped"].is_null(), "another set is a new version: {status:#}");
}

#[tokio::test]
async fn every_spec_metric_is_exported_with_its_labels() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::flaky("canary", 3).await;
    let proxy = TestProxy::start(&canary_config(&stable, &canary, "").build()).await;
    drive_until(&proxy, "canary tripped", |s| !pool(s, "canary")["tripped"].is_null()).await;
    admin(&proxy, Method::POST, "/reload", "", None).await;
    let metrics = proxy.metrics().await;
    let c = canary.addr.to_string();
    for series in [
        format!(r#"cutover_requests_total{{backend="{c}",code="5xx",pool="canary",route="shop"}}"#),
        format!(r#"cutover_requests_total{{backend="{c}",code="2xx",pool="canary",route="shop"}}"#),
        format!(r#"cutover_upstream_failures_total{{backend="{c}",kind="connect",pool="canary"}}"#),
        format!(r#"cutover_request_duration_seconds_bucket{{backend="{c}",pool="canary",le="0.001"}}"#),
        format!(r#"cutover_in_flight_requests{{backend="{c}",pool="canary"}}"#),
        r#"cutover_pool_weight{pool="canary",route="shop"}"#.to_string(),
        r#"cutover_pool_tripped{pool="canary"}"#.to_string(),
        r#"cutover_rollbacks_total{pool="canary",reason="error_rate"}"#.to_string(),
        r#"cutover_guard_breaches_total{pool="canary",reason="error_rate"}"#.to_string(),
        format!(r#"cutover_backend_healthy{{backend="{c}",pool="canary"}}"#),
        format!(r#"cutover_backend_draining{{backend="{c}",pool="canary"}}"#),
        r#"cutover_config_reloads_total{result="ok"}"#.to_string(),
        "cutover_config_revision".to_string(),
        "# TYPE cutover_drain_cut_requests_total counter".to_string(),
    ] {
        assert!(metrics.contains(&series), "missing {series}\n{metrics}");
    }
}

#[tokio::test]
async fn a_force_rule_does_not_override_a_trip() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let force = "\n[[routes.force]]\nheader = \"x-beta\"\nvalue = \"1\"\npool = \"canary\"\n";
    let proxy = TestProxy::start(&canary_config(&stable, &canary, "").raw(force).build()).await;
    let client = client();
    assert_eq!(get(&client, &proxy.url("/"), &[("x-beta", "1")]).await.body, "canary");
    assert_eq!(admin(&proxy, Method::POST, "/pools/canary/trip", "", None).await.status, StatusCode::OK);
    let hits = canary.hits();
    for _ in 0..30 {
        assert_eq!(get(&client, &proxy.url("/"), &[("x-beta", "1")]).await.body, "stable");
    }
    assert_eq!(canary.hits(), hits);
    admin(&proxy, Method::POST, "/pools/canary/reset", "", None).await;
    assert_eq!(get(&client, &proxy.url("/"), &[("x-beta", "1")]).await.body, "canary");
}

#[tokio::test]
async fn rollback_and_reload_error_series_exist_before_the_first_event() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let proxy = TestProxy::start(&canary_config(&stable, &canary, "").build()).await;
    let metrics = proxy.metrics().await;
    for series in [
        r#"cutover_rollbacks_total{pool="canary",reason="error_rate"} 0"#,
        r#"cutover_rollbacks_total{pool="stable",reason="manual"} 0"#,
        r#"cutover_guard_breaches_total{pool="canary",reason="latency"} 0"#,
        r#"cutover_config_reloads_total{result="error"} 0"#,
    ] {
        assert!(metrics.contains(series), "missing {series}\n{metrics}");
    }
}

/// Issue 21, defect 3: failures still in flight to a superseded version's
/// backends breach that version's guard after a reload deployed new
/// backends; the new version must not be tripped by them. The breach is
/// seen to reach the control side (it is counted apart), so the test shows
/// the mechanism ran, not only that nothing happened.
#[tokio::test]
async fn a_superseded_versions_breach_does_not_trip_the_new_version() {
    const SLOW: usize = 12;
    let stable = Upstream::named("stable").await;
    let old = Upstream::with_handler("canary-old", |_req| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        text(StatusCode::INTERNAL_SERVER_ERROR, "boom")
    })
    .await;
    let new = Upstream::named("canary-new").await;
    let config = |canary: std::net::SocketAddr| {
        let guard = "[pools.canary.guard]\nmax_error_rate = 0.1\nwindow = \"30s\"\nmin_requests = 10";
        Config::new()
            .pool("stable", &[stable.addr])
            .pool_with("canary", &[canary], guard)
            .route_with(
                "shop",
                "stable = 50, canary = 50",
                "[[routes.force]]\nheader = \"x-canary\"\nvalue = \"1\"\npool = \"canary\"\n",
            )
            .build()
    };
    let proxy = TestProxy::start(&config(old.addr)).await;
    let client = client();
    let url = proxy.url("/");
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url, &[("x-canary", "1")]).await })
        })
        .collect();
    eventually(WAIT, "every slow request reached the old canary", || old.hits() >= SLOW).await;

    std::fs::write(&proxy.config_path, with_listeners(&config(new.addr))).unwrap();
    let reload = admin(&proxy, Method::POST, "/reload", "", None).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    for request in slow {
        assert_eq!(request.await.unwrap().status, StatusCode::INTERNAL_SERVER_ERROR, "answered by the old version");
    }

    // The old guard's breach reached the control side...
    let series = r#"cutover_guard_superseded_breaches_total{pool="canary"}"#;
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = proxy.metrics().await;
        if metric(&metrics, series).unwrap_or(0.0) >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the old version's breach was never seen:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and left the new version alone.
    let status = get_json(&proxy.admin_url("/status")).await;
    assert!(pool(&status, "canary")["tripped"].is_null(), "the new version was tripped:\n{status:#}");
    assert_eq!(status["routes"][0]["effective"]["canary"], 50, "{status:#}");
    let a = get(&client, &url, &[("x-canary", "1")]).await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "canary-new"));
}
