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

mod support;

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
