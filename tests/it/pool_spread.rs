//! A large pool with one backend out of rotation still spreads its traffic
//! over every other backend (issue 21, defect 2).
//!
//! 100 real upstreams form one pool with active health checks; one of them
//! fails its checks for the whole test, so it is out of rotation (and
//! `/status` shows it unhealthy before and after the measurement: the
//! mechanism ran, and held). Every request then picks among the 99 eligible
//! backends, and each of them must receive traffic in a spread that passes a
//! chi-square test of uniformity. Upstreams count their traffic apart from
//! the probes.

use crate::support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// Longest wait for any condition.
const WAIT: Duration = Duration::from_secs(30);

/// Checks every second; two failures take a backend out. A probe to a
/// healthy local backend never takes a second, even on a loaded machine,
/// twice in a row.
const HEALTH: &str = "[pools.big.health]\npath = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
                      unhealthy_after = 2\nhealthy_after = 1\n";

/// Backends in the pool: well past any small fixed-size candidate buffer.
const BACKENDS: usize = 100;

/// The backend that fails its health checks: in the middle, so a picker that
/// only ever looks at a prefix of the pool is caught on both sides of it.
const FAILING: usize = 50;

/// Requests per eligible backend in the measured phase.
const PER_BACKEND: usize = 20;

/// The chi-square critical value for 98 degrees of freedom (99 eligible
/// backends) at p = 1e-6 (Wilson–Hilferty: 179.7). A uniform picker fails
/// the check with probability at most 1e-6 per run. Round robin from one
/// sequential client is exact rotation, so its statistic is near 0; random
/// picking is seeded (`start_seeded`), and the bound covers the case where
/// concurrency in the runtime makes the draw order vary anyway.
const CHI_SQUARE_CRITICAL: f64 = 179.7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_over_a_large_pool_with_one_backend_failing_its_checks() {
    spread_with_one_failing("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_a_large_pool_with_one_backend_failing_its_checks() {
    spread_with_one_failing("random").await;
}

async fn spread_with_one_failing(lb: &str) {
    let mut upstreams = Vec::with_capacity(BACKENDS);
    for i in 0..BACKENDS {
        let failing = i == FAILING;
        let up = Upstream::with_handler(&format!("b{i}"), move |req| async move {
            match (req.uri().path(), failing) {
                ("/healthz", true) => empty(StatusCode::SERVICE_UNAVAILABLE),
                ("/healthz", false) => empty(StatusCode::OK),
                (_, true) => text(StatusCode::INTERNAL_SERVER_ERROR, "failing"),
                (_, false) => text(StatusCode::OK, "ok"),
            }
        })
        .await;
        upstreams.push(up);
    }
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    let config = format!(
        "[pools.big]\nbackends = [{}]\nlb = \"{lb}\"\n{HEALTH}\n[[routes]]\nname = \"r\"\nsplit = {{ big = 1 }}\n",
        list.join(", ")
    );
    let proxy = TestProxy::start_seeded(&config, Some(21)).await;
    let client = client();

    // Wait until the checks have taken the failing backend out, and only it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !out_of_rotation_is_only(&proxy, &upstreams[FAILING].addr.to_string()).await {
        assert!(tokio::time::Instant::now() < deadline, "the failing backend was never taken out alone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Measure: every request now goes to one of the 99 eligible backends.
    let before: Vec<usize> = upstreams.iter().map(traffic).collect();
    let eligible = BACKENDS - 1;
    let total = eligible * PER_BACKEND;
    for _ in 0..total {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "a request went to the failing backend: {}", a.body);
    }
    assert!(
        out_of_rotation_is_only(&proxy, &upstreams[FAILING].addr.to_string()).await,
        "the backends in rotation changed during the measurement"
    );
    let counts: Vec<(usize, usize)> =
        upstreams.iter().enumerate().filter(|(i, _)| *i != FAILING).map(|(i, u)| (i, traffic(u) - before[i])).collect();
    assert_eq!(counts.iter().map(|(_, c)| c).sum::<usize>(), total, "every request reached one eligible backend");
    let starved: Vec<usize> = counts.iter().filter(|(_, c)| *c == 0).map(|(i, _)| *i).collect();
    assert!(starved.is_empty(), "{} of {eligible} eligible backends got no request: {starved:?}", starved.len());
    let expected = total as f64 / eligible as f64;
    let chi_square: f64 = counts.iter().map(|(_, c)| (*c as f64 - expected).powi(2) / expected).sum();
    assert!(
        chi_square < CHI_SQUARE_CRITICAL,
        "spread is not uniform: chi-square {chi_square:.1} >= {CHI_SQUARE_CRITICAL} (counts {counts:?})"
    );
}

/// Requests `up` received that were not health probes.
fn traffic(up: &Upstream) -> usize {
    up.seen().iter().filter(|s| s.uri.path() != "/healthz").count()
}

/// Whether `/status` shows backend `addr` out of rotation and every other
/// backend in it.
async fn out_of_rotation_is_only(proxy: &TestProxy, addr: &str) -> bool {
    let status = get_json(&proxy.admin_url("/status")).await;
    let Some(backends) = status["pools"][0]["backends"].as_array() else { return false };
    backends.len() == BACKENDS && backends.iter().all(|b| (b["healthy"] == false) == (b["address"] == addr))
}
