//! Progressive rollouts (issue 23) against real upstreams: a canary raised
//! step by step on a healthy verdict, aborted on a failing one, paused when
//! the verdict stays open, steered through the admin API, kept across a
//! restart and restarted by a new version. Holds are a few hundred
//! milliseconds; every wait is on a condition with a generous deadline.

use crate::support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The guard that judges the canary: 10% errors over at least 5 requests
/// in a 2 s window.
const GUARD: &str = "[pools.canary.guard]\nmax_error_rate = 0.1\nwindow = \"2s\"\nmin_requests = 5";

/// Pools `stable` and `canary` (guarded by `guard`) behind route `shop`,
/// the canary at 0 and listed last, with `[routes.rollout]` `rollout`.
fn config(stable: &Upstream, canary: &[&Upstream], guard: &str, rollout: &str, head: &str) -> String {
    let canary: Vec<_> = canary.iter().map(|u| u.addr).collect();
    let text = Config::new()
        .pool("stable", &[stable.addr])
        .pool_with("canary", &canary, guard)
        .route_with("shop", "stable = 100, canary = 0", &format!("[routes.rollout]\npool = \"canary\"\n{rollout}"))
        .build();
    format!("{head}\n{text}")
}

/// An upstream answering 200 with its name, or 500 `boom` while `failing` is set.
async fn switchable(name: &str, failing: Arc<AtomicBool>) -> Upstream {
    let body = name.to_string();
    Upstream::with_handler(name, move |_req| {
        let (body, failing) = (body.clone(), failing.clone());
        async move {
            if failing.load(Ordering::SeqCst) {
                text(StatusCode::INTERNAL_SERVER_ERROR, "boom")
            } else {
                text(StatusCode::OK, body)
            }
        }
    })
    .await
}

/// Requests sent in a loop until dropped: (status, body) counts.
struct Load {
    answers: Arc<Mutex<HashMap<(u16, String), usize>>>,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Load {
    fn start(url: String) -> Load {
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let (sent, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (a, n, s) = (answers.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            let client = client();
            while !s.load(Ordering::SeqCst) {
                let answer = get(&client, &url, &[]).await;
                *a.lock().unwrap().entry((answer.status.as_u16(), answer.body)).or_insert(0) += 1;
                n.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Load { answers, sent, stop }
    }

    fn count(&self, status: u16, body: &str) -> usize {
        self.answers.lock().unwrap().get(&(status, body.to_string())).copied().unwrap_or(0)
    }

    fn failed(&self) -> Vec<((u16, String), usize)> {
        self.answers.lock().unwrap().iter().filter(|((s, _), _)| *s != 200).map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Wait until `n` more requests have been answered.
    async fn more(&self, n: usize) {
        let target = self.sent.load(Ordering::SeqCst) + n;
        let sent = self.sent.clone();
        eventually(WAIT, "more requests answered", || sent.load(Ordering::SeqCst) >= target).await;
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn shop_rollout(proxy: &TestProxy) -> Value {
    let all = get_json(&proxy.admin_url("/rollouts")).await;
    all.as_array().and_then(|a| a.iter().find(|r| r["route"] == "shop")).cloned().expect("shop's rollout")
}

/// Poll `/rollouts` until shop's rollout satisfies `cond`; returns it.
async fn wait_rollout(proxy: &TestProxy, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let r = shop_rollout(proxy).await;
        if cond(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < end, "timed out waiting for {what}; last: {r}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn causes(proxy: &TestProxy) -> Vec<String> {
    let history = get_json(&proxy.admin_url("/history")).await;
    history.as_array().unwrap().iter().rev().map(|r| r["cause"].as_str().unwrap().to_string()).collect()
}

async fn admin(proxy: &TestProxy, method: Method, path: &str, token: Option<&str>) -> Answer {
    let mut req = Request::builder().method(method).uri(proxy.admin_url(path)).header("x-cutover-admin", "1");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let res = tokio::time::timeout(WAIT, client().request(req)).await.expect("admin call hung").expect("admin call");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

#[tokio::test]
async fn a_healthy_canary_is_promoted_through_every_step_without_a_failed_request() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let proxy =
        TestProxy::start(&config(&stable, &[&canary], GUARD, "steps = [10, 50, 100]\nhold = \"300ms\"", "")).await;
    let load = Load::start(proxy.url("/"));
    let promoted = wait_rollout(&proxy, "promotion", |r| r["state"] == "promoted").await;
    assert_eq!(promoted["canary_share"], 100);
    // Promoted: the canary takes the route's whole share.
    load.more(50).await;
    let before = load.count(200, "stable");
    load.more(50).await;
    assert_eq!(load.count(200, "stable"), before, "stable still served after promotion");
    assert!(load.failed().is_empty(), "failed requests: {:?}", load.failed());
    let causes = causes(&proxy).await;
    for expected in [
        "rollout started",
        "rollout step 1: canary 10%",
        "rollout step 2: canary 50%",
        "rollout step 3: canary 100%",
        "rollout promoted",
    ] {
        assert!(causes.iter().any(|c| c.contains(expected)), "no {expected:?} in history: {causes:#?}");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "cutover_rollout_state{route=\"shop\",state=\"promoted\"}"), Some(1.0));
    assert_eq!(metric(&metrics, "cutover_rollout_state{route=\"shop\",state=\"progressing\"}"), Some(0.0));
    assert_eq!(metric(&metrics, "cutover_rollout_weight{route=\"shop\"}"), Some(100.0));
    assert_eq!(metric(&metrics, "cutover_rollout_step{route=\"shop\"}"), Some(3.0));
    proxy.stop().await;
}

#[tokio::test]
async fn a_canary_failing_at_step_two_is_aborted_there_and_the_route_goes_back_to_stable() {
    let stable = Upstream::named("stable").await;
    let failing = Arc::new(AtomicBool::new(false));
    let canary = switchable("canary", failing.clone()).await;
    let rollout = "steps = [10, { weight = 50, hold = \"1h\" }, 100]\nhold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], GUARD, rollout, "")).await;
    let load = Load::start(proxy.url("/"));
    wait_rollout(&proxy, "step 2", |r| r["step"] == 1 && r["state"] == "progressing").await;
    failing.store(true, Ordering::SeqCst);
    let aborted = wait_rollout(&proxy, "the abort", |r| r["state"] == "aborted").await;
    assert_eq!(aborted["step"], 1, "aborted at step 2: {aborted}");
    assert!(aborted["reason"].as_str().unwrap().contains("error rate"), "{aborted}");
    assert_eq!(aborted["canary_share"], Value::Null);
    // Back on stable: new requests all go there.
    load.more(20).await;
    let (stable_before, canary_before) =
        (load.count(200, "stable"), load.count(500, "boom") + load.count(200, "canary"));
    load.more(50).await;
    assert!(load.count(200, "stable") >= stable_before + 50, "not all on stable: {:?}", load.answers);
    assert_eq!(load.count(500, "boom") + load.count(200, "canary"), canary_before, "{:?}", load.answers);
    // Only the canary's own answers failed.
    for ((status, body), _) in load.failed() {
        assert_eq!((status, body.as_str()), (500, "boom"));
    }
    let status = get_json(&proxy.admin_url("/status")).await;
    let canary_pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").unwrap();
    assert!(canary_pool["tripped"].is_object(), "{canary_pool}");
    let causes = causes(&proxy).await;
    assert!(causes.iter().any(|c| c.contains("rollout aborted: error rate")), "{causes:#?}");
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "cutover_rollout_aborts_total{reason=\"failing\",route=\"shop\"}"), Some(1.0));
    proxy.stop().await;
}

#[tokio::test]
async fn a_canary_failing_during_the_bake_switches_the_route_back() {
    let stable = Upstream::named("stable").await;
    let failing = Arc::new(AtomicBool::new(false));
    let canary = switchable("canary", failing.clone()).await;
    // Blue-green: one step of 100% and a bake.
    let rollout = "steps = [100]\nhold = \"300ms\"\nbake = \"1h\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], GUARD, rollout, "")).await;
    let load = Load::start(proxy.url("/"));
    let baking = wait_rollout(&proxy, "the bake", |r| r["state"] == "promoted").await;
    assert_eq!(baking["baking"], true, "{baking}");
    assert!(baking["hold_left_ms"].as_u64().is_some(), "the bake's time left: {baking}");
    failing.store(true, Ordering::SeqCst);
    let aborted = wait_rollout(&proxy, "the switchback", |r| r["state"] == "aborted").await;
    assert!(aborted["reason"].as_str().unwrap().starts_with("failed during bake"), "{aborted}");
    load.more(20).await;
    let stable_before = load.count(200, "stable");
    load.more(30).await;
    assert!(load.count(200, "stable") >= stable_before + 30, "not back on stable: {:?}", load.answers);
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, "cutover_rollout_aborts_total{reason=\"bake\",route=\"shop\"}"), Some(1.0));
    proxy.stop().await;
}

#[tokio::test]
async fn an_inconclusive_verdict_past_max_hold_pauses() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    // min_requests that the test never reaches: the verdict stays open.
    let guard = "[pools.canary.guard]\nmax_error_rate = 0.1\nmin_requests = 1000000";
    let rollout = "steps = [10, 100]\nhold = \"200ms\"\nmax_hold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], guard, rollout, "")).await;
    let _load = Load::start(proxy.url("/"));
    let paused = wait_rollout(&proxy, "the pause", |r| r["state"] == "paused").await;
    assert_eq!(paused["step"], 0);
    assert_eq!(paused["verdict"]["kind"], "inconclusive", "{paused}");
    assert!(paused["reason"].as_str().unwrap().contains("inconclusive"), "{paused}");
    assert_eq!(paused["canary_share"], 10, "a pause keeps the step's share");
    proxy.stop().await;
}

#[tokio::test]
async fn operators_steer_the_rollout_through_the_admin_api_under_the_token() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret\n").unwrap();
    let head = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"", token_path.display());
    let rollout = "steps = [10, 50]\nhold = \"1h\"\nstart = \"manual\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], GUARD, rollout, &head)).await;
    let token = Some("s3cret");
    assert_eq!(rollout_state(&proxy).await, "idle");

    let refused = admin(&proxy, Method::POST, "/routes/shop/rollout/start", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let refused = admin(&proxy, Method::POST, "/routes/shop/rollout/start", Some("wrong")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(rollout_state(&proxy).await, "idle", "a refused call changes nothing");

    for (command, state) in
        [("start", "progressing"), ("pause", "paused"), ("resume", "progressing"), ("promote", "promoted")]
    {
        let ok = admin(&proxy, Method::POST, &format!("/routes/shop/rollout/{command}"), token).await;
        assert_eq!(ok.status, StatusCode::OK, "{command}: {}", ok.body);
        assert_eq!(rollout_state(&proxy).await, state, "after {command}");
    }
    let conflict = admin(&proxy, Method::POST, "/routes/shop/rollout/pause", token).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert!(conflict.body.contains("cannot pause a rollout that is promoted"), "{}", conflict.body);
    let restart = admin(&proxy, Method::POST, "/routes/shop/rollout/restart", token).await;
    assert_eq!(restart.status, StatusCode::OK, "{}", restart.body);
    let r = shop_rollout(&proxy).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_u64(), r["canary_share"].as_u64()),
        (Some("progressing"), Some(0), Some(10))
    );

    let abort = admin(&proxy, Method::POST, "/routes/shop/rollout/abort", token).await;
    assert_eq!(abort.status, StatusCode::OK, "{}", abort.body);
    let r = shop_rollout(&proxy).await;
    assert_eq!(r["state"], "aborted");
    assert_eq!(r["reason"], "aborted by an operator");
    let status = get_json(&proxy.admin_url("/status")).await;
    let canary_pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").unwrap();
    assert!(canary_pool["tripped"].is_object(), "an abort trips the canary: {canary_pool}");

    let unknown = admin(&proxy, Method::POST, "/routes/shop/rollout/fly", token).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let no_route = admin(&proxy, Method::POST, "/routes/nope/rollout/start", token).await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);

    // A manual override pauses a rollout under way; a switchback aborts it.
    assert_eq!(admin(&proxy, Method::POST, "/routes/shop/rollout/start", token).await.status, StatusCode::OK);
    let put = Request::put(proxy.admin_url("/routes/shop/split"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer s3cret")
        .body(Full::new(Bytes::from_static(b"{\"stable\": 80, \"canary\": 20}")))
        .unwrap();
    let res = client().request(put).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let r = shop_rollout(&proxy).await;
    assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("paused"), Some("the route's split was overridden")));
    assert_eq!(admin(&proxy, Method::POST, "/routes/shop/switchback", token).await.status, StatusCode::OK);
    let r = shop_rollout(&proxy).await;
    assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("aborted"), Some("the route was switched back")));
    proxy.stop().await;
}

async fn rollout_state(proxy: &TestProxy) -> String {
    shop_rollout(proxy).await["state"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_restart_mid_rollout_resumes_the_same_step() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let state_dir = tempfile::tempdir().unwrap();
    let head = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
        state_dir.path().join("state.json").display()
    );
    let rollout = "steps = [10, { weight = 50, hold = \"1h\" }, 100]\nhold = \"300ms\"";
    let text = config(&stable, &[&canary], GUARD, rollout, &head);
    let proxy = TestProxy::start(&text).await;
    let load = Load::start(proxy.url("/"));
    wait_rollout(&proxy, "step 2", |r| r["step"] == 1).await;
    drop(load);
    proxy.stop().await;

    let proxy = TestProxy::start(&text).await;
    let r = shop_rollout(&proxy).await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_u64(), r["canary_share"].as_u64()),
        (Some("progressing"), Some(1), Some(50)),
        "{r}"
    );
    assert!(r["hold_left_ms"].as_u64().unwrap() <= 3_600_000, "{r}");
    // The share is in force: the canary takes traffic at once.
    let client = client();
    let mut canary_seen = false;
    for _ in 0..60 {
        canary_seen |= get(&client, &proxy.url("/"), &[]).await.body == "canary";
    }
    assert!(canary_seen, "the canary gets its 50% after the restart");
    proxy.stop().await;
}

#[tokio::test]
async fn a_rollout_added_while_its_canary_is_tripped_does_not_undo_the_rollback() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let state_dir = tempfile::tempdir().unwrap();
    let head = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
        state_dir.path().join("state.json").display()
    );
    let plain = Config::new()
        .pool("stable", &[stable.addr])
        .pool_with("canary", &[canary.addr], GUARD)
        .route("shop", "stable = 90, canary = 10")
        .build();
    let proxy = TestProxy::start(&format!("{head}\n{plain}")).await;
    assert_eq!(admin(&proxy, Method::POST, "/pools/canary/trip", None).await.status, StatusCode::OK);
    proxy.stop().await;

    let proxy =
        TestProxy::start(&config(&stable, &[&canary], GUARD, "steps = [10, 100]\nhold = \"300ms\"", &head)).await;
    let r = shop_rollout(&proxy).await;
    assert_eq!(r["state"], "aborted", "{r}");
    let status = get_json(&proxy.admin_url("/status")).await;
    let canary_pool = status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").unwrap();
    assert!(canary_pool["tripped"].is_object(), "still tripped: {canary_pool}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_with_new_canary_backends_restarts_the_rollout() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let canary2 = Upstream::named("canary").await;
    let rollout = "steps = [10, { weight = 50, hold = \"1h\" }, 100]\nhold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], GUARD, rollout, "")).await;
    let _load = Load::start(proxy.url("/"));
    wait_rollout(&proxy, "step 2", |r| r["step"] == 1).await;
    let before = causes(&proxy).await.len();
    std::fs::write(&proxy.config_path, with_listeners(&config(&stable, &[&canary2], GUARD, rollout, ""))).unwrap();
    assert_eq!(admin(&proxy, Method::POST, "/reload", None).await.status, StatusCode::OK);
    let causes = causes(&proxy).await;
    assert!(
        causes[before..]
            .iter()
            .any(|c| c.starts_with("reload") && c.contains("rollout started") && c.contains("step 1: canary 10%")),
        "{causes:#?}"
    );
    // The restarted rollout makes its way up again.
    wait_rollout(&proxy, "step 2 again", |r| r["step"] == 1).await;
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_that_removes_the_rollout_leaves_the_configured_split() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let rollout = "steps = [50, 100]\nhold = \"1h\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], GUARD, rollout, "")).await;
    assert_eq!(shop_rollout(&proxy).await["canary_share"], 50);
    let plain = Config::new()
        .pool("stable", &[stable.addr])
        .pool_with("canary", &[canary.addr], GUARD)
        .route("shop", "stable = 100, canary = 0")
        .build();
    std::fs::write(&proxy.config_path, with_listeners(&plain)).unwrap();
    assert_eq!(admin(&proxy, Method::POST, "/reload", None).await.status, StatusCode::OK);
    assert_eq!(get_json(&proxy.admin_url("/rollouts")).await, serde_json::json!([]));
    let client = client();
    for _ in 0..40 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "stable");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn sticky_users_only_ever_move_into_the_canary() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let rollout = "steps = [10, 30, 60, 100]\nhold = \"300ms\"";
    let text = config(&stable, &[&canary], GUARD, rollout, "").replace(
        "split = { stable = 100, canary = 0 }",
        "split = { stable = 100, canary = 0 }\nsticky = { header = \"x-user\" }",
    );
    let proxy = TestProxy::start(&text).await;
    let client = client();
    let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let mut in_canary: HashMap<String, bool> = HashMap::new();
    let mut moved = 0;
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        for user in &users {
            let body = get(&client, &proxy.url("/"), &[("x-user", user)]).await.body;
            let now = body == "canary";
            let was = in_canary.insert(user.clone(), now).unwrap_or(false);
            assert!(!was || now, "{user} moved back from the canary to stable");
            moved += usize::from(!was && now);
        }
        if shop_rollout(&proxy).await["state"] == "promoted" {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no promotion: {}", shop_rollout(&proxy).await);
    }
    assert!(moved >= 50, "users moved into the canary as the steps rose: {moved}");
    proxy.stop().await;
}

/// The canary judged against `stable` (its baseline) rather than by a
/// threshold of its own: the judge's verdict over the same time. The
/// allowance of 20 points lets a canary as good as its baseline be shown
/// healthy on the few hundred requests a short hold sees; a canary failing
/// every request is far beyond it.
const BASELINE_GUARD: &str = "[pools.canary.guard]\nbaseline = \"stable\"\nmax_error_increase = 0.2\nmin_requests = 20";

fn canary_pool(status: &Value) -> &Value {
    status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").expect("canary in status")
}

#[tokio::test]
async fn a_canary_as_healthy_as_its_baseline_is_promoted() {
    let stable = Upstream::named("stable").await;
    let canary = Upstream::named("canary").await;
    let rollout = "steps = [10, 50, 100]\nhold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], BASELINE_GUARD, rollout, "")).await;
    let load = Load::start(proxy.url("/"));
    let promoted = wait_rollout(&proxy, "promotion", |r| r["state"] == "promoted").await;
    assert_eq!(promoted["canary_share"], 100, "{promoted}");
    assert!(load.failed().is_empty(), "failed requests: {:?}", load.failed());
    let causes = causes(&proxy).await;
    for expected in ["rollout step 2: canary 50%", "rollout step 3: canary 100%", "rollout promoted"] {
        assert!(causes.iter().any(|c| c.contains(expected)), "no {expected:?} in history: {causes:#?}");
    }
    // The judge, not a threshold, let it through: it weighed both pools.
    let status = get_json(&proxy.admin_url("/status")).await;
    let guard = &canary_pool(&status)["guard"];
    assert_eq!(guard["baseline"], "stable", "{guard:#}");
    assert!(guard["evidence"]["pool"]["requests"].as_u64().unwrap_or(0) > 0, "{guard:#}");
    assert!(guard["evidence"]["baseline"]["requests"].as_u64().unwrap_or(0) > 0, "{guard:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_canary_failing_more_than_its_baseline_is_aborted_to_weight_zero() {
    let stable = Upstream::named("stable").await;
    let failing = Arc::new(AtomicBool::new(false));
    let canary = switchable("canary", failing.clone()).await;
    let rollout = "steps = [10, { weight = 50, hold = \"1h\" }, 100]\nhold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], BASELINE_GUARD, rollout, "")).await;
    let load = Load::start(proxy.url("/"));
    wait_rollout(&proxy, "step 2", |r| r["step"] == 1 && r["state"] == "progressing").await;
    failing.store(true, Ordering::SeqCst);
    let aborted = wait_rollout(&proxy, "the abort", |r| r["state"] == "aborted").await;
    assert_eq!(aborted["step"], 1, "aborted at step 2: {aborted}");
    let reason = aborted["reason"].as_str().unwrap();
    assert!(reason.contains("canary failing") && reason.contains("vs stable"), "judged against stable: {aborted}");
    assert_eq!(aborted["canary_share"], Value::Null);
    let status = get_json(&proxy.admin_url("/status")).await;
    assert_eq!(status["routes"][0]["effective"]["canary"], 0, "{status:#}");
    assert!(canary_pool(&status)["tripped"].is_object(), "{status:#}");
    assert_eq!(canary_pool(&status)["guard"]["verdict"]["kind"], "failing", "{status:#}");
    let causes = causes(&proxy).await;
    assert!(
        causes
            .iter()
            .any(|c| c.contains("rollout aborted: ") && c.contains("canary failing") && c.contains("vs stable")),
        "the cause is in the history: {causes:#?}"
    );
    // Back on stable; only the canary's own answers failed.
    load.more(20).await;
    let stable_before = load.count(200, "stable");
    load.more(40).await;
    assert!(load.count(200, "stable") >= stable_before + 40, "not all on stable: {:?}", load.answers);
    for ((status, body), _) in load.failed() {
        assert_eq!((status, body.as_str()), (500, "boom"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_outage_the_baseline_shares_does_not_abort_the_rollout() {
    // Both fail 3 in 10: far over the absolute limit, and just as the baseline.
    let stable = Upstream::flaky("stable", 3).await;
    let canary = Upstream::flaky("canary", 3).await;
    let guard = format!("{BASELINE_GUARD}\nmax_error_rate = 0.1");
    let rollout = "steps = [50, 100]\nhold = \"300ms\"";
    let proxy = TestProxy::start(&config(&stable, &[&canary], &guard, rollout, "")).await;
    let _load = Load::start(proxy.url("/"));
    // The judge weighed plenty of both pools' outcomes, and the rollout
    // neither aborted nor advanced: over the absolute limit is never
    // healthy, and no worse than the baseline is never failing.
    let end = tokio::time::Instant::now() + WAIT;
    let guard = loop {
        let r = shop_rollout(&proxy).await;
        assert_eq!((r["state"].as_str(), r["step"].as_u64()), (Some("progressing"), Some(0)), "{r}");
        let status = get_json(&proxy.admin_url("/status")).await;
        let guard = canary_pool(&status)["guard"].clone();
        assert!(canary_pool(&status)["tripped"].is_null(), "a shared outage tripped the canary:\n{status:#}");
        let weighed = |side: &str| guard["evidence"][side]["requests"].as_u64().unwrap_or(0);
        if weighed("pool") >= 300 && weighed("baseline") >= 300 {
            break guard;
        }
        assert!(tokio::time::Instant::now() < end, "the judge never weighed enough: {guard:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(guard["verdict"]["kind"], "inconclusive", "{guard:#}");
    assert!(guard["evidence"]["pool"]["failures"].as_u64().unwrap() > 0, "{guard:#}");
    assert!(guard["evidence"]["baseline"]["failures"].as_u64().unwrap() > 0, "{guard:#}");
    let r = shop_rollout(&proxy).await;
    assert_eq!(r["verdict"]["kind"], "inconclusive", "the rollout took the judge's verdict: {r}");
    assert!(!causes(&proxy).await.iter().any(|c| c.contains("aborted")));
    proxy.stop().await;
}
