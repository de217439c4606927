//! Fleet mode end to end: several cutover replicas, each a real proxy on
//! loopback, sharing one state through a real etcd (the `etcd` binary of
//! Debian's `etcd-server`).
//!
//! Without `etcd` on the PATH each test says it skipped and passes, unless
//! `CUTOVER_REQUIRE_ETCD=1` (CI sets it), where a missing etcd fails.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use support::etcd::Etcd;
use support::eventually_async as eventually;
use support::{client, get, get_json, metric, pool_tripped, post, put_json, with_listeners, TestProxy, Upstream};

/// How soon a change made on one replica must be in force on the others.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Two pools behind route `shop`, half each, and route `other` on blue
/// alone; `[fleet]` names `etcd` under `prefix` as replica `name`.
/// `guard` adds a guard to green.
fn config(etcd: &Etcd, prefix: &str, name: &str, blue: &Upstream, green: &Upstream, guard: bool) -> String {
    let endpoint = etcd.endpoint();
    let guard =
        if guard { "[pools.green.guard]\nmax_error_rate = 0.2\nwindow = \"30s\"\nmin_requests = 10\n" } else { "" };
    with_listeners(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npool_header = \"x-pool\"\n\
         [pools.blue]\nbackends = [\"{}\"]\n\
         [pools.green]\nbackends = [\"{}\"]\n{guard}\
         [[routes]]\nname = \"shop\"\npath_prefix = \"/shop\"\nsplit = {{ blue = 1, green = 1 }}\n\
         [[routes]]\nname = \"other\"\nsplit = {{ blue = 1, green = 0 }}\n\
         [fleet]\netcd = [\"http://{}:{}\"]\nprefix = \"{prefix}\"\nreplica = \"{name}\"\n\
         lease_ttl = \"2s\"\ntimeout = \"1s\"\n",
        blue.addr, green.addr, endpoint.host, endpoint.port
    ))
}

async fn replica(etcd: &Etcd, prefix: &str, name: &str, blue: &Upstream, green: &Upstream, guard: bool) -> TestProxy {
    TestProxy::start_seeded(&config(etcd, prefix, name, blue, green, guard), Some(7)).await
}

async fn status(proxy: &TestProxy) -> Value {
    get_json(&proxy.admin_url("/status")).await
}

/// Route `route`'s effective split on `proxy`.
async fn effective(proxy: &TestProxy, route: &str) -> Value {
    let status = status(proxy).await;
    let routes = status["routes"].as_array().cloned().unwrap_or_default();
    routes.into_iter().find(|r| r["name"] == route).map(|r| r["effective"].clone()).unwrap_or(Value::Null)
}

async fn gauge(proxy: &TestProxy, name: &str) -> Option<f64> {
    metric(&proxy.metrics().await, name)
}

/// The sum of every series in Prometheus `text` that starts with `prefix`.
fn sum(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// The pool that served one request to `/shop` on `proxy`.
async fn served_by(proxy: &TestProxy) -> String {
    let answer = get(&client(), &proxy.url("/shop"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.headers.get("x-pool").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_is_in_force_on_every_replica_and_on_one_that_joins_later() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-propagation";
    let a = replica(&etcd, prefix, "a", &blue, &green, false).await;
    let b = replica(&etcd, prefix, "b", &blue, &green, false).await;
    let c = replica(&etcd, prefix, "c", &blue, &green, false).await;

    // An override on A is in force on B and C.
    let (code, answer) = put_json(&a.admin_url("/routes/shop/split"), json!({"blue": 0, "green": 100})).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["fleet"], "written", "{answer}");
    for other in [&b, &c] {
        eventually(PROPAGATION, "the override in force on the others", || async {
            effective(other, "shop").await == json!({"blue": 0, "green": 100})
        })
        .await;
    }

    // A switchback sent to A is in force on B and C.
    let answer = post(&a.admin_url("/routes/shop/switchback")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    for other in [&b, &c] {
        eventually(PROPAGATION, "the switchback in force on the others", || async {
            effective(other, "shop").await == json!({"blue": 1, "green": 1})
        })
        .await;
    }
    // The others' history says where the change came from.
    let history = get_json(&b.admin_url("/history")).await;
    let cause = history[0]["cause"].as_str().unwrap_or_default().to_string();
    assert!(cause.starts_with("fleet: admin: switchback of route shop") && cause.ends_with("(a)"), "{cause}");

    // A trip made on B is in force on A and C.
    let answer = post(&b.admin_url("/pools/green/trip")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    for other in [&a, &c] {
        eventually(PROPAGATION, "the trip in force on the others", || async { pool_tripped(other, "green").await })
            .await;
    }

    // A replica started after the trip serves its first request with it.
    let d = replica(&etcd, prefix, "d", &blue, &green, false).await;
    for _ in 0..20 {
        assert_eq!(served_by(&d).await, "blue", "green is tripped in the fleet");
    }

    // /status names the replicas, the leader, and who runs another config.
    eventually(Duration::from_secs(5), "every replica listed", || async {
        status(&a).await["fleet"]["replicas"].as_array().map_or(0, Vec::len) == 4
    })
    .await;
    let fleet = status(&a).await["fleet"].clone();
    assert_eq!(fleet["replica"], "a");
    assert_eq!(fleet["connected"], true);
    // Each replica's file names itself, so each runs a different config.
    assert_eq!(fleet["different_config"].as_array().map_or(0, Vec::len), 3, "{fleet}");
    eventually(Duration::from_secs(5), "a leader", || async { status(&c).await["fleet"]["leader"].is_string() }).await;
    let leaders = [&a, &b, &c, &d];
    let mut leading = 0;
    for proxy in leaders {
        leading += usize::from(gauge(proxy, "cutover_fleet_leader").await == Some(1.0));
        assert_eq!(gauge(proxy, "cutover_fleet_connected").await, Some(1.0));
    }
    assert_eq!(leading, 1, "exactly one leader");
    for proxy in [a, b, c, d] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_changing_the_same_route_at_once_one_wins_and_no_replica_applies_a_mix() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-race";
    let a = replica(&etcd, prefix, "a", &blue, &green, false).await;
    let b = replica(&etcd, prefix, "b", &blue, &green, false).await;
    let c = replica(&etcd, prefix, "c", &blue, &green, false).await;
    let mut conflicts = 0;
    for round in 0..20u32 {
        let (wa, wb) = (json!({"blue": 100 + round, "green": 1}), json!({"blue": 1, "green": 100 + round}));
        let (url_a, url_b) = (a.admin_url("/routes/shop/split"), b.admin_url("/routes/shop/split"));
        let ((code_a, answer_a), (code_b, answer_b)) =
            tokio::join!(put_json(&url_a, wa.clone()), put_json(&url_b, wb.clone()));
        let winner = match (code_a, code_b) {
            (StatusCode::OK, StatusCode::CONFLICT) => {
                assert!(answer_b["current"].is_object(), "{answer_b}");
                conflicts += 1;
                wa
            }
            (StatusCode::CONFLICT, StatusCode::OK) => {
                assert!(answer_a["current"].is_object(), "{answer_a}");
                conflicts += 1;
                wb
            }
            // One after the other: the later one stands everywhere.
            (StatusCode::OK, StatusCode::OK) => {
                eventually(PROPAGATION, "the replicas agree", || async {
                    let split = effective(&c, "shop").await;
                    split == effective(&a, "shop").await && split == effective(&b, "shop").await
                })
                .await;
                continue;
            }
            other => panic!("unexpected answers {other:?}: {answer_a} {answer_b}"),
        };
        for proxy in [&a, &b, &c] {
            eventually(PROPAGATION, "the winner's split in force everywhere", || async {
                effective(proxy, "shop").await == winner
            })
            .await;
        }
        if conflicts >= 2 {
            break;
        }
    }
    assert!(conflicts > 0, "no round raced; the conflict path never ran");

    // Changes to different routes do not conflict.
    let (url_a, url_b) = (a.admin_url("/routes/shop/split"), b.admin_url("/routes/other/split"));
    let (one, two) = tokio::join!(
        put_json(&url_a, json!({"blue": 3, "green": 1})),
        put_json(&url_b, json!({"blue": 1, "green": 1}))
    );
    assert_eq!((one.0, two.0), (StatusCode::OK, StatusCode::OK), "{} {}", one.1, two.1);
    for proxy in [&a, &b, &c] {
        eventually(PROPAGATION, "both changes in force", || async {
            effective(proxy, "shop").await == json!({"blue": 3, "green": 1})
                && effective(proxy, "other").await == json!({"blue": 1, "green": 1})
        })
        .await;
    }
    for proxy in [a, b, c] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_replicas_serve_on_and_a_local_trip_reaches_etcd_when_it_is_back() {
    let Some(mut etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-fail-static";
    let a = replica(&etcd, prefix, "a", &blue, &green, false).await;
    let b = replica(&etcd, prefix, "b", &blue, &green, false).await;
    let (code, _) = put_json(&a.admin_url("/routes/other/split"), json!({"blue": 1, "green": 3})).await;
    assert_eq!(code, StatusCode::OK);
    eventually(PROPAGATION, "override on b", || async {
        effective(&b, "other").await == json!({"blue": 1, "green": 3})
    })
    .await;

    // Traffic runs the whole time etcd is away; none of it may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for url in [a.url("/shop"), b.url("/shop")] {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::Relaxed) {
                let answer = get(&client, &url, &[]).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if answer.status != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    etcd.stop();
    for proxy in [&a, &b] {
        eventually(Duration::from_secs(10), "the loss of etcd noticed", || async {
            gauge(proxy, "cutover_fleet_connected").await == Some(0.0)
        })
        .await;
        assert_eq!(effective(proxy, "other").await, json!({"blue": 1, "green": 3}), "state unchanged");
    }
    // A trip made meanwhile acts here at once, and says its write is pending.
    let answer = post(&a.admin_url("/pools/green/trip")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(body["fleet"], "pending", "{body}");
    assert!(pool_tripped(&a, "green").await);
    let served = sent.load(Ordering::Relaxed);
    eventually(Duration::from_secs(5), "traffic still flowing", || async {
        sent.load(Ordering::Relaxed) > served + 50
    })
    .await;

    etcd.restart().await;
    for proxy in [&a, &b] {
        eventually(Duration::from_secs(10), "etcd reached again", || async {
            gauge(proxy, "cutover_fleet_connected").await == Some(1.0)
        })
        .await;
    }
    eventually(PROPAGATION * 5, "the local trip written and in force on b", || async {
        pool_tripped(&b, "green").await
    })
    .await;
    let stored = etcd.client().get(format!("{prefix}/state/pools/green")).await.expect("read etcd");
    let value: Value = serde_json::from_slice(&stored.kvs[0].value).expect("json");
    assert_eq!(value["by"], "a");
    assert_eq!(value["trip"]["reason"], "manual", "{value}");
    // Green's trip takes its share of `other`; the override itself stands.
    let routes = status(&b).await["routes"].clone();
    let other = routes.as_array().and_then(|r| r.iter().find(|r| r["name"] == "other").cloned()).expect("route");
    assert_eq!(other["override"], json!({"blue": 1, "green": 3}), "state kept");

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    assert!(sent.load(Ordering::Relaxed) > 100, "too little traffic to show anything");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed while etcd was away");
    for proxy in [a, b] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_dies_another_leads_within_the_ttl_and_trips_once() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::flaky("green", 5).await);
    let prefix = "/cutover/test-leader";
    let names = vec!["a", "b", "c"];
    let mut replicas = Vec::new();
    for name in &names {
        replicas.push(replica(&etcd, prefix, name, &blue, &green, true).await);
    }
    eventually(Duration::from_secs(5), "a leader", || async {
        status(&replicas[0]).await["fleet"]["leader"].is_string()
    })
    .await;
    let leader = status(&replicas[0]).await["fleet"]["leader"].as_str().unwrap_or_default().to_string();
    let at = names.iter().position(|n| *n == leader).expect("a known leader");
    // Killed, not stopped: its lease runs out instead of being revoked.
    drop(replicas.remove(at));
    let mut names = names;
    names.remove(at);
    // Within the lease's TTL (2 s), plus etcd's expiry sweep and polling.
    eventually(Duration::from_secs(4), "another leader", || async {
        let fleet = status(&replicas[0]).await["fleet"].clone();
        fleet["leader"].is_string() && fleet["leader"] != leader.as_str()
    })
    .await;
    let new_leader = status(&replicas[0]).await["fleet"]["leader"].as_str().unwrap_or_default().to_string();
    let (leader, follower) = match names.iter().position(|n| *n == new_leader) {
        Some(0) => (&replicas[0], &replicas[1]),
        Some(_) => (&replicas[1], &replicas[0]),
        None => panic!("the new leader {new_leader} is one of {names:?}"),
    };

    // The canary fails behind the follower alone. Its guard judges the
    // failures but leaves the decision to the leader, which has served
    // none of them and trips the canary on the fleet's evidence, once.
    let client = client();
    eventually(Duration::from_secs(10), "the follower's guard breached", || async {
        let _ = get(&client, &follower.url("/shop"), &[]).await;
        sum(&follower.metrics().await, "cutover_guard_breaches_total{pool=\"green\"") >= 1.0
    })
    .await;
    for proxy in [leader, follower] {
        eventually(Duration::from_secs(5), "green tripped everywhere", || async { pool_tripped(proxy, "green").await })
            .await;
    }
    let rollbacks = |text: &str| sum(text, "cutover_rollbacks_total{pool=\"green\"");
    let served_green = |text: &str| {
        let green = text.lines().filter(|l| l.starts_with("cutover_requests_total{") && l.contains("pool=\"green\""));
        sum(&green.collect::<Vec<_>>().join("\n"), "cutover_requests_total")
    };
    let (leader_text, follower_text) = (leader.metrics().await, follower.metrics().await);
    assert_eq!(rollbacks(&leader_text), 1.0, "the leader trips the canary once");
    assert_eq!(rollbacks(&follower_text), 0.0, "the follower leaves the trip to the leader");
    assert_eq!(served_green(&leader_text), 0.0, "the leader judged on the follower's evidence alone");
    assert!(served_green(&follower_text) >= 10.0, "the follower served the failures");
    for proxy in replicas {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_commands_on_one_replica_move_the_rollout_on_every_replica() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-rollout";
    let rollout = "split = { blue = 1, green = 1 }\n[routes.rollout]\npool = \"green\"\nsteps = [25, 50]\n\
                   hold = \"1h\"\nstart = \"manual\"\n";
    let with_rollout = |name: &str| {
        config(&etcd, prefix, name, &blue, &green, false).replace("split = { blue = 1, green = 1 }\n", rollout)
    };
    let a = TestProxy::start_seeded(&with_rollout("a"), Some(7)).await;
    let b = TestProxy::start_seeded(&with_rollout("b"), Some(7)).await;
    let rollout_of = |proxy: &TestProxy| {
        let url = proxy.admin_url("/rollouts");
        async move {
            let list = get_json(&url).await;
            list.as_array().and_then(|l| l.iter().find(|r| r["route"] == "shop").cloned()).unwrap_or(Value::Null)
        }
    };
    assert_eq!(rollout_of(&b).await["state"], "idle");

    let answer = post(&a.admin_url("/routes/shop/rollout/start")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    eventually(PROPAGATION, "the rollout started on b", || async {
        let r = rollout_of(&b).await;
        r["state"] == "progressing" && r["step"] == 0 && r["canary_share"] == 25
    })
    .await;
    eventually(PROPAGATION, "b sends the canary its share", || async {
        effective(&b, "shop").await == json!({"blue": 3, "green": 1})
    })
    .await;

    let answer = post(&b.admin_url("/routes/shop/rollout/pause")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    eventually(PROPAGATION, "the pause in force on a", || async { rollout_of(&a).await["state"] == "paused" }).await;
    for proxy in [a, b] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_etcd_at_startup_serves_from_its_state_file_and_joins_later() {
    let Some(mut etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-cold-start";
    let state = tempfile::tempdir().expect("temp dir");
    let state_file = state.path().join("state.json");
    let text = config(&etcd, prefix, "a", &blue, &green, false).replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"\n", state_file.display()),
    );
    assert!(text.contains("state_file"), "{text}");
    let a = TestProxy::start_seeded(&text, Some(7)).await;
    let answer = post(&a.admin_url("/pools/green/trip")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    a.stop().await;

    etcd.stop();
    let started = Instant::now();
    let a = TestProxy::start_seeded(&text, Some(7)).await;
    for _ in 0..20 {
        assert_eq!(served_by(&a).await, "blue", "the state file's trip is in force");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "startup waits for etcd only within its bound");
    let fleet = status(&a).await["fleet"].clone();
    assert_eq!(fleet["connected"], false, "{fleet}");
    assert_eq!(gauge(&a, "cutover_fleet_connected").await, Some(0.0));

    etcd.restart().await;
    eventually(Duration::from_secs(10), "in step once etcd answers", || async {
        gauge(&a, "cutover_fleet_connected").await == Some(1.0)
    })
    .await;
    assert!(pool_tripped(&a, "green").await, "the trip, in etcd too, stays");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_steps_a_rollout_and_every_replica_follows() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-rollout-steps";
    let rollout = "split = { blue = 1, green = 1 }\n[routes.rollout]\npool = \"green\"\nsteps = [25, 50, 100]\n\
                   hold = \"300ms\"\nstart = \"manual\"\n";
    let with_rollout = |name: &str| {
        config(&etcd, prefix, name, &blue, &green, false).replace("split = { blue = 1, green = 1 }\n", rollout).replace(
            "[[routes]]\nname = \"shop\"",
            "[pools.green.guard]\nmax_error_rate = 0.5\nmin_requests = 3\n[[routes]]\nname = \"shop\"",
        )
    };
    let a = TestProxy::start_seeded(&with_rollout("a"), Some(7)).await;
    let b = TestProxy::start_seeded(&with_rollout("b"), Some(7)).await;
    eventually(Duration::from_secs(5), "a leader", || async { status(&a).await["fleet"]["leader"].is_string() }).await;
    let answer = post(&b.admin_url("/routes/shop/rollout/start")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // Healthy traffic on both; the leader's verdict moves the steps.
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for proxy in [&a, &b] {
            let _ = get(&client, &proxy.url("/shop"), &[]).await;
        }
        let promoted = |list: Value| list.as_array().is_some_and(|l| l.iter().any(|r| r["state"] == "promoted"));
        if promoted(get_json(&a.admin_url("/rollouts")).await) && promoted(get_json(&b.admin_url("/rollouts")).await) {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout was not promoted on both replicas");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = status(&a).await["fleet"]["leader"].as_str().unwrap_or_default().to_string();
    for (name, proxy) in [("a", &a), ("b", &b)] {
        let history = get_json(&proxy.admin_url("/history")).await;
        let steps: Vec<String> = history
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["cause"].as_str())
            // The operator's start (made on b) is not the leader's to make.
            .filter(|c| !c.contains("admin:") && (c.contains("rollout step") || c.contains("rollout promoted")))
            .map(str::to_string)
            .collect();
        assert!(!steps.is_empty(), "{name}: no steps in the history");
        for cause in &steps {
            if name == leader {
                assert!(cause.starts_with("route shop:"), "{name} leads and steps itself: {cause}");
            } else {
                assert!(cause.starts_with("fleet: ") && cause.ends_with(&format!("({leader})")), "{name}: {cause}");
            }
        }
    }
    for proxy in [a, b] {
        proxy.stop().await;
    }
}

/// Fleet judgement: five replicas each see a fifth of a failing canary's
/// traffic, too little for any of them to reach `min_requests` alone; the
/// leader sums their published evidence and trips it everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_replicas_each_seeing_too_little_trip_a_failing_canary_together() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::flaky("green", 10).await);
    let prefix = "/cutover/test-judgement";
    let endpoint = etcd.endpoint();
    let mut replicas = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npool_header = \"x-pool\"\n\
             [pools.blue]\nbackends = [\"{}\"]\n\
             [pools.green]\nbackends = [\"{}\"]\n\
             [pools.green.guard]\nmax_error_rate = 0.2\nwindow = \"1m\"\nmin_requests = 60\n\
             [[routes]]\nname = \"shop\"\nsplit = {{ blue = 1, green = 1 }}\n\
             [fleet]\netcd = [\"http://{}:{}\"]\nprefix = \"{prefix}\"\nreplica = \"{name}\"\n\
             lease_ttl = \"2s\"\ntimeout = \"1s\"\n",
            blue.addr, green.addr, endpoint.host, endpoint.port
        );
        replicas.push(TestProxy::start_seeded(&text, Some(7)).await);
    }
    eventually(Duration::from_secs(5), "a leader", || async {
        status(&replicas[0]).await["fleet"]["leader"].is_string()
    })
    .await;

    // Each replica sends 15 requests to green (75 in all, over the 60 the
    // guard needs; 15 each is far under it).
    let client = client();
    for proxy in &replicas {
        let mut to_green = 0;
        while to_green < 15 {
            let answer = get(&client, &proxy.url("/"), &[]).await;
            if answer.headers.get("x-pool").and_then(|v| v.to_str().ok()) == Some("green") {
                assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "green fails every request");
                to_green += 1;
            }
        }
    }
    // The leader trips it on the fleet's verdict (the judgement's lag plus
    // a publishing round); the others have it within a second of that.
    let leader = status(&replicas[0]).await["fleet"]["leader"].as_str().unwrap_or_default().to_string();
    let at = ["a", "b", "c", "d", "e"].iter().position(|n| *n == leader).expect("a known leader");
    eventually(Duration::from_secs(10), "green tripped by the leader", || async {
        pool_tripped(&replicas[at], "green").await
    })
    .await;
    for proxy in &replicas {
        eventually(PROPAGATION, "the leader's trip in force on every replica", || async {
            pool_tripped(proxy, "green").await
        })
        .await;
    }

    // No replica could judge green on its own traffic: the trip came from
    // the fleet's verdict, made once, by the leader (its one breach).
    let (mut rollbacks, mut breaches) = (0.0, 0.0);
    for proxy in &replicas {
        let text = proxy.metrics().await;
        breaches += sum(&text, "cutover_guard_breaches_total{pool=\"green\"");
        let own = status(proxy).await;
        let pools = own["pools"].as_array().cloned().unwrap_or_default();
        let green = pools.into_iter().find(|p| p["name"] == "green").unwrap_or(Value::Null);
        assert_ne!(green["guard"]["verdict"]["kind"], "failing", "alone, a replica cannot judge: {green}");
        rollbacks += sum(&text, "cutover_rollbacks_total{pool=\"green\"");
    }
    assert_eq!(rollbacks, 1.0, "the trip is made once, by the leader");
    assert_eq!(breaches, 1.0, "one breach, the leader's verdict on the fleet's evidence");
    for proxy in replicas {
        proxy.stop().await;
    }
}
