//! Hot reload and draining (SPEC §3 "Hot reload", "Draining"), through the
//! file watcher and the admin API, against real upstreams.

use crate::support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// Pools `list` (one backend each) and route `app` with `split`, after
/// the `[server]` lines `server` (none when empty).
fn app_with(server: &str, list: &[(&str, &Upstream)], split: &str) -> String {
    let config = if server.is_empty() { Config::new() } else { Config::new().server(server) };
    list.iter().fold(config, |c, (name, u)| c.pool(name, &[u.addr])).route("app", split).build()
}

/// Pools `list` (one backend each) and route `app` with `split`.
fn app(list: &[(&str, &Upstream)], split: &str) -> String {
    app_with("", list, split)
}

async fn revision(proxy: &TestProxy) -> u64 {
    get_json(&proxy.admin_url("/status")).await["revision"].as_u64().expect("revision")
}

/// Wait until the proxy's revision passes `than`.
async fn wait_revision_above(proxy: &TestProxy, than: u64) -> u64 {
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let r = revision(proxy).await;
        if r > than {
            return r;
        }
        assert!(tokio::time::Instant::now() < end, "revision stayed at {r}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Wait until every one of 20 consecutive answers is `body`.
async fn wait_all_answers(proxy: &TestProxy, body: &str) {
    let client = client();
    let end = tokio::time::Instant::now() + WAIT;
    'outer: loop {
        assert!(tokio::time::Instant::now() < end, "traffic never moved to {body}");
        for _ in 0..20 {
            let a = get(&client, &proxy.url("/"), &[]).await;
            assert_eq!(a.status, StatusCode::OK);
            if a.body != body {
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue 'outer;
            }
        }
        return;
    }
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn in_place_write_changes_the_split() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let base = [("blue", &blue), ("green", &green)];
    let proxy = TestProxy::start(&app(&base, "blue = 100, green = 0")).await;
    wait_all_answers(&proxy, "blue").await;
    let text = with_listeners(&app(&base, "blue = 0, green = 100"));
    std::fs::write(&proxy.config_path, text).unwrap();
    wait_all_answers(&proxy, "green").await;
}

#[tokio::test]
async fn atomic_rename_changes_the_split() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let base = [("blue", &blue), ("green", &green)];
    let proxy = TestProxy::start(&app(&base, "blue = 100, green = 0")).await;
    wait_all_answers(&proxy, "blue").await;
    write_atomically(&proxy.config_path, &with_listeners(&app(&base, "blue = 0, green = 1")));
    wait_all_answers(&proxy, "green").await;
    // Delete, then recreate: also picked up.
    std::fs::remove_file(&proxy.config_path).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&proxy.config_path, with_listeners(&app(&base, "blue = 1, green = 0"))).unwrap();
    wait_all_answers(&proxy, "blue").await;
}

/// The layout kubelet gives a ConfigMap volume: the file is a symlink
/// through `..data`, which is swapped atomically on update.
#[tokio::test]
async fn configmap_data_symlink_swap_changes_the_split() {
    use std::os::unix::fs::symlink;
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let base = [("blue", &blue), ("green", &green)];
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("..2026_11_26_10_00_00.000000001");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("cutover.toml"), with_listeners(&app(&base, "blue = 1, green = 0"))).unwrap();
    symlink(first.file_name().unwrap(), dir.path().join("..data")).unwrap();
    symlink("..data/cutover.toml", dir.path().join("cutover.toml")).unwrap();
    let config_path = dir.path().join("cutover.toml");
    let proxy = TestProxy::start_at(dir, config_path, Some(1)).await;
    wait_all_answers(&proxy, "blue").await;

    let root = proxy.dir.path();
    let second = root.join("..2026_11_26_10_05_00.000000002");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("cutover.toml"), with_listeners(&app(&base, "blue = 0, green = 1"))).unwrap();
    symlink(second.file_name().unwrap(), root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    wait_all_answers(&proxy, "green").await;
}

#[tokio::test]
async fn invalid_file_keeps_old_routing_and_reports_the_error() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let base = [("blue", &blue), ("green", &green)];
    let proxy = TestProxy::start(&app(&base, "blue = 1, green = 0")).await;
    let before = revision(&proxy).await;

    // Line 9 (after the two listener lines and two pools) names a pool that does not exist.
    let bad = with_listeners(&app(&base, "blue = 1, purple = 1"));
    std::fs::write(&proxy.config_path, &bad).unwrap();
    let end = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let status = get_json(&proxy.admin_url("/status")).await;
        if status["last_reload"]["ok"] == false {
            break status;
        }
        assert!(tokio::time::Instant::now() < end, "reload error never reported: {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = status["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("cutover.toml:"), "{error}");
    assert!(error.contains("purple"), "{error}");
    assert_eq!(status["revision"].as_u64(), Some(before));
    // The old config still serves.
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "blue");
    }
    // POST /reload reports the same error with 400.
    let answer = post(&proxy.admin_url("/reload")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("purple"), "{}", answer.body);

    std::fs::write(&proxy.config_path, with_listeners(&app(&base, "blue = 0, green = 1"))).unwrap();
    wait_all_answers(&proxy, "green").await;
    assert!(revision(&proxy).await > before);
}

#[tokio::test]
async fn admin_reload_applies_changes_and_unchanged_content_keeps_the_revision() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let base = [("blue", &blue), ("green", &green)];
    let proxy = TestProxy::start(&app(&base, "blue = 1, green = 0")).await;
    let r0 = revision(&proxy).await;
    let same = post(&proxy.admin_url("/reload")).await;
    assert_eq!(same.status, StatusCode::OK);
    let same: serde_json::Value = serde_json::from_str(&same.body).unwrap();
    assert_eq!(same["revision"].as_u64(), Some(r0));
    assert_eq!(same["changed"], false);

    std::fs::write(&proxy.config_path, with_listeners(&app(&base, "blue = 0, green = 1"))).unwrap();
    // Either the watcher or this call applies it; the revision moves once.
    let answer = post(&proxy.admin_url("/reload")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let r1 = wait_revision_above(&proxy, r0).await;
    assert_eq!(r1, r0 + 1);
    wait_all_answers(&proxy, "green").await;
    let again = post(&proxy.admin_url("/reload")).await;
    let again: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(again["revision"].as_u64(), Some(r1));
}

/// Clients send continuously while the file is rewritten 24 times with
/// changing weights and pools coming and going: nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let c = Upstream::named("c").await;
    let variants = [
        app(&[("a", &a), ("b", &b)], "a = 90, b = 10"),
        app(&[("a", &a), ("b", &b)], "a = 50, b = 50"),
        app(&[("b", &b), ("c", &c)], "b = 70, c = 30"),
        app(&[("c", &c)], "c = 1"),
        app(&[("a", &a), ("c", &c)], "a = 1, c = 3"),
        app(&[("a", &a), ("b", &b), ("c", &c)], "a = 1, b = 1, c = 1"),
    ];
    let proxy = TestProxy::start(&variants[0]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), proxy.url("/"));
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let req = http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(res)) if res.status() == StatusCode::OK => {
                        use http_body_util::BodyExt;
                        match res.into_body().collect().await {
                            Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                failed.lock().unwrap().push(format!("body: {e}"));
                                0
                            }
                        };
                    }
                    Ok(Ok(res)) => failed.lock().unwrap().push(format!("status {}", res.status())),
                    Ok(Err(e)) => failed.lock().unwrap().push(format!("error: {e:?}")),
                    Err(_) => failed.lock().unwrap().push("timeout".into()),
                }
            }
        }));
    }
    let mut last = revision(&proxy).await;
    for i in 1..=24 {
        let text = with_listeners(&format!("{}# rewrite {i}\n", variants[i % variants.len()]));
        if i % 2 == 0 {
            write_atomically(&proxy.config_path, &text);
        } else {
            std::fs::write(&proxy.config_path, &text).unwrap();
        }
        last = wait_revision_above(&proxy, last).await;
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok.load(Ordering::SeqCst),
        &failed[..failed.len().min(5)]
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "too little traffic: {}", ok.load(Ordering::SeqCst));
    assert!(a.hits() > 0 && b.hits() > 0 && c.hits() > 0);
}

/// An upstream that holds each request until `release` is notified.
async fn held_upstream(name: &str, release: Arc<tokio::sync::Notify>, received: Arc<tokio::sync::Notify>) -> Upstream {
    let body = name.to_string();
    Upstream::with_handler(name, move |_req| {
        let (release, received, body) = (release.clone(), received.clone(), body.clone());
        async move {
            received.notify_one();
            release.notified().await;
            text(StatusCode::OK, body)
        }
    })
    .await
}

#[tokio::test]
async fn removed_pool_finishes_its_in_flight_request_and_gets_no_new_one() {
    let release = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let slow = held_upstream("slow", release.clone(), received.clone()).await;
    let fast = Upstream::named("fast").await;
    let proxy = TestProxy::start(&app(&[("fast", &fast), ("slow", &slow)], "fast = 0, slow = 1")).await;
    let url = proxy.url("/");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    tokio::time::timeout(WAIT, received.notified()).await.expect("slow upstream never got the request");

    let r0 = revision(&proxy).await;
    std::fs::write(&proxy.config_path, with_listeners(&app(&[("fast", &fast)], "fast = 1"))).unwrap();
    wait_revision_above(&proxy, r0).await;

    let status = get_json(&proxy.admin_url("/status")).await;
    let slow_pool =
        status["pools"].as_array().unwrap().iter().find(|p| p["name"] == "slow").expect("draining pool listed");
    assert_eq!(slow_pool["backends"][0]["draining"], true, "{status}");
    assert_eq!(slow_pool["backends"][0]["in_flight"], 1, "{status}");

    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "fast");
    }
    assert_eq!(slow.hits(), 1, "a new request reached the removed backend");

    release.notify_one();
    let answer = tokio::time::timeout(WAIT, in_flight).await.expect("in-flight request hung").unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "slow");
    let end = tokio::time::Instant::now() + WAIT;
    loop {
        let status = get_json(&proxy.admin_url("/status")).await;
        if !status.to_string().contains("\"draining\":true") {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "backend still draining: {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn drain_timeout_cuts_what_is_still_in_flight() {
    let release = Arc::new(tokio::sync::Notify::new());
    let received = Arc::new(tokio::sync::Notify::new());
    let stuck = held_upstream("stuck", release.clone(), received.clone()).await;
    let fast = Upstream::named("fast").await;
    let server = "drain_timeout = \"300ms\"";
    let proxy = TestProxy::start(&app_with(server, &[("fast", &fast), ("stuck", &stuck)], "fast = 0, stuck = 1")).await;
    let url = proxy.url("/");
    let in_flight = tokio::spawn(async move {
        let req = http::Request::get(&url).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
        client().request(req).await.map(|r| r.status())
    });
    tokio::time::timeout(WAIT, received.notified()).await.expect("stuck upstream never got the request");
    let r0 = revision(&proxy).await;
    std::fs::write(&proxy.config_path, with_listeners(&app_with(server, &[("fast", &fast)], "fast = 1"))).unwrap();
    wait_revision_above(&proxy, r0).await;
    // Cut after 300 ms: the client gets the proxy's 502, well before the
    // upstream would ever answer.
    let result = tokio::time::timeout(WAIT, in_flight).await.expect("in-flight request was never cut").unwrap();
    assert_eq!(result.expect("proxy answered"), StatusCode::BAD_GATEWAY);
}

/// The watcher must not feed on the proxy's own reads of the file: after a
/// reload the watcher goes quiet. Every reload the watcher asks for counts
/// in `cutover_config_reloads_total{result="ok"}` (unchanged content too),
/// so the test first sees the watcher's startup check counted, then pokes
/// the directory and sees that answered with exactly one more reload — the
/// watcher is live and re-reads the file — and only then watches the count
/// stay flat for several debounce periods.
#[tokio::test]
async fn an_idle_proxy_does_not_reload_in_a_loop() {
    let blue = Upstream::named("blue").await;
    let proxy = TestProxy::start(&app(&[("blue", &blue)], "blue = 1")).await;
    let reloads = || async {
        let metrics = proxy.metrics().await;
        metric(&metrics, r#"cutover_config_reloads_total{result="ok"}"#).expect("reload series") as u64
    };
    let wait_reloads = |at_least: u64, what: &'static str| async move {
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let n = reloads().await;
            if n >= at_least {
                return n;
            }
            assert!(tokio::time::Instant::now() < end, "{what}: reloads stayed at {n}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    let started = wait_reloads(1, "the watcher's startup check").await;
    // An event in the directory is a hint the watcher answers with a re-read.
    std::fs::write(proxy.dir.path().join("unrelated.txt"), "poke").unwrap();
    let poked = wait_reloads(started + 1, "the watcher answering an event").await;
    // A loop would re-read within a debounce period (150 ms) of each read.
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < end {
        let now = reloads().await;
        assert!(now <= poked + 1, "the idle proxy reloaded {} times after one event", now - started);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
