//! Slow start (issue 26): a backend added by a reload to a pool under
//! steady load ramps its share up over the pool's `slow_start` window.
//!
//! Three real upstreams serve a pool with `slow_start = "3s"`; two clients
//! send requests back to back while a reload adds a fourth. Each answer
//! names its upstream. In the first half of the window the newcomer's
//! factor runs from 0.1 to 0.5, a share of 3 % to 14 % where its full share
//! is 25 %: over at least 300 requests, a share under 17 % is more than
//! four standard deviations above what the ramp gives, and far below the
//! full share. After the window it gets its full share: over 1,000
//! requests, above 19 % (the full 25 % is more than four standard
//! deviations above that bound). `/status` shows the factor below 1 during
//! the window and 1 after it, so the ramp that ran is the one measured. No
//! request fails.
//!
//! A newcomer that fails its first requests while it warms up beside three
//! warm backends is not held against the pool's version: the guard leaves
//! its outcomes out (`warming_excluded` in `/status`) while the backend's
//! own metrics show its failures, and the guard, judging the warm three,
//! stays healthy. The same failures from a backend that is not warming trip
//! the same guard.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::time::Instant;

/// The pool's slow start window.
const WINDOW: Duration = Duration::from_secs(3);

fn config(upstreams: &[&Upstream]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[pools.app]\nbackends = [{}]\nslow_start = \"{}s\"\n[[routes]]\nname = \"r\"\nsplit = {{ app = 1 }}\n",
        list.join(", "),
        WINDOW.as_secs()
    )
}

/// The newcomer's `slow_start` factor in `/status`.
async fn newcomer_factor(proxy: &TestProxy, addr: &str) -> Option<f64> {
    let status = get_json(&proxy.admin_url("/status")).await;
    status["pools"][0]["backends"].as_array()?.iter().find(|b| b["address"] == addr)?["slow_start"].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_added_under_load_ramps_up_to_its_full_share() {
    let ups = [
        Upstream::named("old0").await,
        Upstream::named("old1").await,
        Upstream::named("old2").await,
        Upstream::named("new").await,
    ];
    let proxy = TestProxy::start(&config(&[&ups[0], &ups[1], &ups[2]])).await;
    let url = proxy.url("/");

    // Steady load: every answer recorded with its time and its upstream.
    let answers: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (answers, failures, stop, url) = (answers.clone(), failures.clone(), stop.clone(), url.clone());
        loops.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let a = get(&client, &url, &[]).await;
                if a.status != StatusCode::OK {
                    failures.lock().unwrap().push(format!("{} {}", a.status, a.body));
                }
                answers.lock().unwrap().push((Instant::now(), a.body));
            }
        }));
    }
    eventually(DEADLINE, "load before the reload", || answers.lock().unwrap().len() >= 100).await;

    std::fs::write(&proxy.config_path, with_listeners(&config(&[&ups[0], &ups[1], &ups[2], &ups[3]]))).unwrap();
    let reload = post(&proxy.admin_url("/reload")).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);
    // The newcomer is in the snapshot by now (the watcher or this call).
    let added = Instant::now();
    let addr = ups[3].addr.to_string();
    let early = newcomer_factor(&proxy, &addr).await.expect("the newcomer is in /status");
    assert!(early < 0.5, "the newcomer starts low: factor {early}");

    // Run until the window is over and 1,000 answers came after it.
    let settled = added + WINDOW + Duration::from_millis(200);
    let deadline = added + Duration::from_secs(60);
    loop {
        let after = answers.lock().unwrap().iter().filter(|(t, _)| *t >= settled).count();
        if after >= 1_000 {
            break;
        }
        assert!(Instant::now() < deadline, "only {after} answers after the window");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = newcomer_factor(&proxy, &addr).await.expect("the newcomer is in /status");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(late, 1.0, "the newcomer is warm after the window");
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} requests failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);

    let answers = answers.lock().unwrap();
    let share = |from: Instant, to: Instant| {
        let phase: Vec<_> = answers.iter().filter(|(t, _)| *t >= from && *t < to).collect();
        let new = phase.iter().filter(|(_, body)| body == "new").count();
        (new as f64 / phase.len().max(1) as f64, phase.len())
    };
    let (first_half, n_first) = share(added, added + WINDOW / 2);
    let (after, n_after) = share(settled, Instant::now() + Duration::from_secs(1));
    assert!(n_first >= 300, "too few requests in the first half of the window to judge: {n_first}");
    assert!(first_half < 0.17, "the newcomer took {first_half:.3} of {n_first} requests early in its window");
    assert!(after > 0.19, "the newcomer took {after:.3} of {n_after} requests after its window");
}

/// How many of its first requests the cold backend fails: two in three of
/// its first 60 (a cold cache, an unfilled pool), never five in a row, so
/// passive health does not eject it and all of them reach the guard's door.
const COLD_FAILURES: u64 = 40;

/// A backend cold for its first 60 requests (failing [`COLD_FAILURES`]
/// of them), then answering 200 with `name`.
async fn cold(name: &str) -> Upstream {
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let name = name.to_string();
    Upstream::with_handler(&name.clone(), move |_req| {
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = name.clone();
        async move {
            if n < 60 && n % 3 != 2 {
                text(StatusCode::INTERNAL_SERVER_ERROR, "cold")
            } else {
                text(StatusCode::OK, name)
            }
        }
    })
    .await
}

/// Pool `app` over `upstreams` with a 10 s slow start and a guard that
/// trips at 1% errors over 10 s (the cold backend's failures are far over
/// it whenever they count), and `stable` to take its traffic on a trip.
fn guarded(stable: &Upstream, upstreams: &[&Upstream]) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[pools.app]\nbackends = [{}]\nslow_start = \"10s\"\n[pools.app.guard]\nmax_error_rate = 0.01\n\
         window = \"10s\"\nmin_requests = 20\n[pools.stable]\nbackends = [\"{}\"]\n\
         [[routes]]\nname = \"r\"\nsplit = {{ app = 90, stable = 10 }}\n",
        list.join(", "),
        stable.addr
    )
}

/// Requests sent back to back by two clients until stopped.
struct Steady {
    stop: Arc<std::sync::atomic::AtomicBool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Steady {
    fn start(url: String) -> Steady {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let loops = (0..2)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        get(&client, &url, &[]).await;
                    }
                })
            })
            .collect();
        Steady { stop, loops }
    }

    /// Stop, and wait for the requests in flight.
    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for l in self.loops {
            l.await.expect("load loop");
        }
    }
}

/// Pool `app` in `/status`.
async fn app_pool(proxy: &TestProxy) -> serde_json::Value {
    let status = get_json(&proxy.admin_url("/status")).await;
    status["pools"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "app")).cloned().expect("app in /status")
}

/// `cutover_requests_total` of class 5xx for the backend at `addr`.
async fn backend_5xx(proxy: &TestProxy, addr: &str) -> f64 {
    let metrics = proxy.metrics().await;
    metrics
        .lines()
        .filter(|l| l.starts_with("cutover_requests_total{") && l.contains(addr) && l.contains("code=\"5xx\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warming_backends_failures_do_not_count_against_an_unchanged_version() {
    let ups = [
        Upstream::named("old0").await,
        Upstream::named("old1").await,
        Upstream::named("old2").await,
        cold("new").await,
    ];
    let stable = Upstream::named("stable").await;
    let proxy = TestProxy::start(&guarded(&stable, &[&ups[0], &ups[1], &ups[2]])).await;
    let load = Steady::start(proxy.url("/"));
    eventually(DEADLINE, "load before the reload", || ups[0].hits() >= 20).await;

    std::fs::write(&proxy.config_path, with_listeners(&guarded(&stable, &[&ups[0], &ups[1], &ups[2], &ups[3]])))
        .unwrap();
    let reload = post(&proxy.admin_url("/reload")).await;
    assert_eq!(reload.status, StatusCode::OK, "{}", reload.body);

    // The newcomer fails its first requests while it warms up; the guard
    // leaves every one of them out and goes on judging the warm three.
    let addr = ups[3].addr.to_string();
    let end = Instant::now() + Duration::from_secs(60);
    let pool = loop {
        let pool = app_pool(&proxy).await;
        assert!(pool["tripped"].is_null(), "the warm-up tripped the pool: {pool:#}");
        let excluded = pool["guard"]["warming_excluded"].as_u64().unwrap_or(0);
        if excluded >= COLD_FAILURES && backend_5xx(&proxy, &addr).await >= COLD_FAILURES as f64 {
            break pool;
        }
        assert!(Instant::now() < end, "the newcomer's cold start never showed: {pool:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let guard = &pool["guard"];
    let newcomer = pool["backends"].as_array().unwrap().iter().find(|b| b["address"] == addr.as_str()).unwrap();
    assert!(newcomer["slow_start"].as_f64().unwrap() < 1.0, "still warming: {newcomer}");
    // The guard judged (its window is past min_requests) and saw no failure.
    assert!(guard["requests"].as_u64().unwrap() >= 20, "the guard judged the warm backends: {guard:#}");
    assert_eq!(guard["failures"], 0, "a warm-up failure reached the guard: {guard:#}");
    assert_eq!(guard["verdict"]["kind"], "healthy", "{guard:#}");
    let metrics = proxy.metrics().await;
    let counted = metric(&metrics, r#"cutover_guard_warming_excluded_total{pool="app"}"#).expect("the metric");
    assert!(counted >= COLD_FAILURES as f64, "{counted}");
    // A moment later still no trip: the breach would be on its way by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app_pool(&proxy).await["tripped"].is_null());
    load.stop().await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failures_from_a_backend_not_warming_up_trip_the_pool() {
    // The same four backends and the same guard, all there from the start:
    // nobody warms up, so the cold backend's failures are the version's.
    let ups = [
        Upstream::named("old0").await,
        Upstream::named("old1").await,
        Upstream::named("old2").await,
        cold("new").await,
    ];
    let stable = Upstream::named("stable").await;
    let proxy = TestProxy::start(&guarded(&stable, &[&ups[0], &ups[1], &ups[2], &ups[3]])).await;
    let load = Steady::start(proxy.url("/"));
    let end = Instant::now() + Duration::from_secs(60);
    let pool = loop {
        let pool = app_pool(&proxy).await;
        if pool["tripped"].is_object() {
            break pool;
        }
        assert!(Instant::now() < end, "the failures never tripped the pool: {pool:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pool["tripped"]["reason"], "error_rate", "{pool:#}");
    assert_eq!(pool["guard"]["warming_excluded"], 0, "{pool:#}");
    let metrics = proxy.metrics().await;
    assert_eq!(metric(&metrics, r#"cutover_guard_warming_excluded_total{pool="app"}"#), Some(0.0));
    load.stop().await;
    proxy.stop().await;
}
