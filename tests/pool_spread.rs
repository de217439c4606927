//! A large pool with one backend out of rotation still spreads its traffic
//! over every other backend (issue 21, defect 2).
//!
//! 100 real upstreams form one pool; one of them answers every request 500,
//! so passive tracking ejects it (and `/status` shows it ejected: the
//! mechanism ran). From then on every request picks among the 99 eligible
//! backends, and each of them must receive traffic in a spread that passes a
//! chi-square test of uniformity.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// Longest wait for any condition.
const WAIT: Duration = Duration::from_secs(30);

/// Backends in the pool: well past any small fixed-size candidate buffer.
const BACKENDS: usize = 100;

/// The backend that fails (and is ejected): in the middle, so a picker that
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
async fn round_robin_spreads_over_a_large_pool_with_one_backend_ejected() {
    spread_with_one_ejected("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_a_large_pool_with_one_backend_ejected() {
    spread_with_one_ejected("random").await;
}

async fn spread_with_one_ejected(lb: &str) {
    let mut upstreams = Vec::with_capacity(BACKENDS);
    for i in 0..BACKENDS {
        let name = format!("b{i}");
        let up = if i == FAILING {
            Upstream::with_handler(&name, |_req| async { text(StatusCode::INTERNAL_SERVER_ERROR, "failing") }).await
        } else {
            Upstream::named(&name).await
        };
        upstreams.push(up);
    }
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    let config = format!(
        "[pools.big]\nbackends = [{}]\nlb = \"{lb}\"\n\n[[routes]]\nname = \"r\"\nsplit = {{ big = 1 }}\n",
        list.join(", ")
    );
    let proxy = TestProxy::start_seeded(&config, Some(21)).await;
    let client = client();

    // Drive traffic until passive tracking has ejected the failing backend.
    let failing_addr = upstreams[FAILING].addr.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for _ in 0..BACKENDS {
            get(&client, &proxy.url("/"), &[]).await;
        }
        if ejected(&proxy, &failing_addr).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "backend {failing_addr} was never ejected");
    }

    // Measure: every request now goes to one of the 99 eligible backends.
    let before: Vec<usize> = upstreams.iter().map(Upstream::hits).collect();
    let eligible = BACKENDS - 1;
    let total = eligible * PER_BACKEND;
    for _ in 0..total {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "a request went to the ejected backend: {}", a.body);
    }
    assert!(ejected(&proxy, &failing_addr).await, "the failing backend came back during the measurement");
    let counts: Vec<(usize, usize)> =
        upstreams.iter().enumerate().filter(|(i, _)| *i != FAILING).map(|(i, u)| (i, u.hits() - before[i])).collect();
    let starved: Vec<usize> = counts.iter().filter(|(_, c)| *c == 0).map(|(i, _)| *i).collect();
    assert!(starved.is_empty(), "{} of {eligible} eligible backends got no request: {starved:?}", starved.len());
    let expected = total as f64 / eligible as f64;
    let chi_square: f64 = counts.iter().map(|(_, c)| (*c as f64 - expected).powi(2) / expected).sum();
    assert!(
        chi_square < CHI_SQUARE_CRITICAL,
        "spread is not uniform: chi-square {chi_square:.1} >= {CHI_SQUARE_CRITICAL} (counts {counts:?})"
    );
}

/// Whether `/status` shows backend `addr` as passively ejected.
async fn ejected(proxy: &TestProxy, addr: &str) -> bool {
    let status = get_json(&proxy.admin_url("/status")).await;
    status["pools"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["address"] == addr))
        .is_some_and(|b| b["ejected"] == true)
}
