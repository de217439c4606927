//! Health (SPEC §3 "Health"): active checks and passive ejection, observed
//! through real upstreams and the proxy's `/status`.
//!
//! Upstreams here count their *traffic* (every request but `/healthz`)
//! separately from the probes, so "gets no traffic" can be asserted while
//! the probes go on.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::*;

/// Longest wait for any condition.
const WAIT: Duration = Duration::from_secs(15);

/// Fast checks: two failed probes (~200 ms) take a backend out, two good
/// ones bring it back.
const HEALTH: &str = "path = \"/healthz\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
                      unhealthy_after = 2\nhealthy_after = 2\n";

/// An upstream whose `/healthz` answers 503 while `failing` is set, and
/// which answers every other request 200 with its name.
struct Checked {
    up: Upstream,
    failing: Arc<AtomicBool>,
    traffic: Arc<AtomicUsize>,
}

impl Checked {
    async fn start(name: &str, failing: bool) -> Checked {
        let flag = Arc::new(AtomicBool::new(failing));
        let traffic = Arc::new(AtomicUsize::new(0));
        let (f, t, body) = (flag.clone(), traffic.clone(), name.to_string());
        let up = Upstream::with_handler(name, move |req| {
            let (f, t, body) = (f.clone(), t.clone(), body.clone());
            async move {
                if req.uri().path() == "/healthz" {
                    if f.load(Ordering::SeqCst) {
                        empty(StatusCode::SERVICE_UNAVAILABLE)
                    } else {
                        empty(StatusCode::OK)
                    }
                } else {
                    t.fetch_add(1, Ordering::SeqCst);
                    text(StatusCode::OK, body)
                }
            }
        })
        .await;
        Checked { up, failing: flag, traffic }
    }

    fn addr(&self) -> SocketAddr {
        self.up.addr
    }

    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn traffic(&self) -> usize {
        self.traffic.load(Ordering::SeqCst)
    }

    fn probes(&self) -> usize {
        self.up.seen().iter().filter(|s| s.uri.path() == "/healthz").count()
    }
}

/// `healthy` of backend `addr` of pool `pool` in `/status`.
async fn healthy(proxy: &TestProxy, pool: &str, addr: SocketAddr) -> Option<bool> {
    let status = get_json(&proxy.admin_url("/status")).await;
    let pool = status["pools"].as_array()?.iter().find(|p| p["name"] == pool)?;
    let backend = pool["backends"].as_array()?.iter().find(|b| b["address"] == addr.to_string())?;
    backend["healthy"].as_bool()
}

/// Wait until `/status` shows backend `addr` of `pool` as `want`.
async fn wait_healthy(proxy: &TestProxy, pool: &str, addr: SocketAddr, want: bool) {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let now = healthy(proxy, pool, addr).await;
        if now == Some(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < end, "{pool}/{addr} never became healthy={want} (now {now:?})");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `[pools.<name>.health]` table of fast checks, for [`Config::pool_with`].
fn checked(name: &str) -> String {
    format!("[pools.{name}.health]\n{HEALTH}")
}

#[tokio::test]
async fn failing_backend_is_taken_out_and_returns_when_it_recovers() {
    let good = Checked::start("good", false).await;
    let bad = Checked::start("bad", false).await;
    let config =
        Config::new().pool_with("app", &[good.addr(), bad.addr()], &checked("app")).route("app", "app = 100").build();
    let proxy = TestProxy::start(&config).await;
    let client = client();
    assert_eq!(healthy(&proxy, "app", bad.addr()).await, Some(true));

    bad.set_failing(true);
    wait_healthy(&proxy, "app", bad.addr(), false).await;
    assert_eq!(healthy(&proxy, "app", good.addr()).await, Some(true));
    let before = bad.traffic();
    for _ in 0..50 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "good");
    }
    assert_eq!(bad.traffic(), before, "an unhealthy backend got traffic");

    bad.set_failing(false);
    wait_healthy(&proxy, "app", bad.addr(), true).await;
    let end = tokio::time::Instant::now() + WAIT;
    while bad.traffic() == before {
        assert!(tokio::time::Instant::now() < end, "recovered backend never got traffic again");
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn probes_are_get_with_host_and_user_agent() {
    let up = Checked::start("up", false).await;
    let config = Config::new().pool_with("app", &[up.addr()], &checked("app")).route("app", "app = 1").build();
    let _proxy = TestProxy::start(&config).await;
    let end = tokio::time::Instant::now() + WAIT;
    while up.probes() == 0 {
        assert!(tokio::time::Instant::now() < end, "no probe arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let seen = up.up.seen();
    let probe = seen.iter().find(|s| s.uri.path() == "/healthz").expect("a probe");
    assert_eq!(probe.method, http::Method::GET);
    assert_eq!(probe.headers["host"], up.addr().to_string().as_str());
    assert_eq!(probe.headers["user-agent"], "cutover-health");
}

#[tokio::test]
async fn unhealthy_pool_share_goes_to_the_other_pool() {
    let blue = Checked::start("blue", false).await;
    // The canary holds 90% of the split and fails its checks from the start.
    let canary = Checked::start("canary", true).await;
    let config = Config::new()
        .pool_with("blue", &[blue.addr()], &checked("blue"))
        .pool_with("canary", &[canary.addr()], &checked("canary"))
        .route("app", "blue = 10, canary = 90")
        .build();
    let proxy = TestProxy::start(&config).await;
    let client = client();
    wait_healthy(&proxy, "canary", canary.addr(), false).await;
    let before = canary.traffic();
    for _ in 0..100 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "blue");
    }
    assert_eq!(canary.traffic(), before);

    // Healthy again: it takes its share back.
    canary.set_failing(false);
    wait_healthy(&proxy, "canary", canary.addr(), true).await;
    let end = tokio::time::Instant::now() + WAIT;
    while canary.traffic() == before {
        assert!(tokio::time::Instant::now() < end, "canary never got traffic back");
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn no_healthy_backend_in_any_pool_answers_503() {
    let blue = Checked::start("blue", true).await;
    let green = Checked::start("green", true).await;
    let config = Config::new()
        .pool_with("blue", &[blue.addr()], &checked("blue"))
        .pool_with("green", &[green.addr()], &checked("green"))
        .route("app", "blue = 50, green = 50")
        .build();
    let proxy = TestProxy::start(&config).await;
    wait_healthy(&proxy, "blue", blue.addr(), false).await;
    wait_healthy(&proxy, "green", green.addr(), false).await;
    let client = client();
    for _ in 0..10 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    }
    assert_eq!(blue.traffic() + green.traffic(), 0);
}

#[tokio::test]
async fn a_zero_weight_pool_is_still_checked() {
    let blue = Checked::start("blue", false).await;
    let green = Checked::start("green", true).await;
    let config = Config::new()
        .pool("blue", &[blue.addr()])
        .pool_with("green", &[green.addr()], &checked("green"))
        .route("app", "blue = 100, green = 0")
        .build();
    let proxy = TestProxy::start(&config).await;
    wait_healthy(&proxy, "green", green.addr(), false).await;
    assert!(green.probes() >= 2);
    assert_eq!(green.traffic(), 0);
    assert_eq!(blue.probes(), 0, "blue has no [health] section");
}

#[tokio::test]
async fn a_removed_backend_is_no_longer_probed() {
    let kept = Checked::start("kept", false).await;
    let removed = Checked::start("removed", false).await;
    let before =
        Config::new().pool_with("app", &[kept.addr(), removed.addr()], &checked("app")).route("app", "app = 1").build();
    let proxy = TestProxy::start(&before).await;
    let end = tokio::time::Instant::now() + WAIT;
    while removed.probes() < 2 {
        assert!(tokio::time::Instant::now() < end, "no probes arrived");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = Config::new().pool_with("app", &[kept.addr()], &checked("app")).route("app", "app = 1").build();
    std::fs::write(&proxy.config_path, with_listeners(&after)).unwrap();
    let answer = post(&proxy.admin_url("/reload")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // A probe already under way may still land; after that, none. Checks
    // run on the same 100 ms interval, so while the kept backend gets five
    // more probes a still-running check of the removed one would add some.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = removed.probes();
    let kept_before = kept.probes();
    eventually(WAIT, "five more probes of the kept backend", || kept.probes() >= kept_before + 5).await;
    assert_eq!(removed.probes(), settled, "removed backend still probed");
}

#[tokio::test]
async fn passive_ejection_takes_a_5xx_backend_out_for_a_while() {
    let good = Upstream::named("good").await;
    let bad = Upstream::with_handler("bad", |_req| async { text(StatusCode::INTERNAL_SERVER_ERROR, "bad") }).await;
    // No [health] section: only passive tracking is at work.
    let config = Config::new().pool("app", &[good.addr, bad.addr]).route("app", "app = 1").build();
    let proxy = TestProxy::start(&config).await;
    let client = client();

    // Until the threshold (5 consecutive 5xx), the bad backend gets its share.
    let end = tokio::time::Instant::now() + WAIT;
    while bad.hits() < 5 {
        assert!(tokio::time::Instant::now() < end, "bad backend never reached 5 requests");
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert!(a.status == StatusCode::OK || a.status == StatusCode::INTERNAL_SERVER_ERROR);
    }
    // A little slack in case the outcome is recorded just after the answer
    // reaches us; then the count must stand still.
    for _ in 0..5 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    let ejected_at = bad.hits();
    assert!(ejected_at <= 10, "ejected only after {ejected_at} failures");
    for _ in 0..50 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, "good");
    }
    assert_eq!(bad.hits(), ejected_at, "an ejected backend got traffic");

    // The ejection (10 s at first) ends by itself: the backend is tried again.
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while bad.hits() == ejected_at {
        assert!(tokio::time::Instant::now() < end, "ejection never ended");
        get(&client, &proxy.url("/"), &[]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_single_backend_pool_is_never_passively_ejected() {
    let bad = Upstream::with_handler("bad", |_req| async { text(StatusCode::INTERNAL_SERVER_ERROR, "bad") }).await;
    let config = Config::new().pool("app", &[bad.addr]).route("app", "app = 1").build();
    let proxy = TestProxy::start(&config).await;
    let client = client();
    for _ in 0..30 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.body);
    }
    assert_eq!(bad.hits(), 30);
}
