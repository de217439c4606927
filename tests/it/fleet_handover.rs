//! Fleet mode when decisions change hands, against a real etcd: an
//! operator's reset racing the leader's automatic trip, a rollout step's
//! hold and a pool's verdict carried across a leader's death, and a new
//! leader taking over the decisions while a write of its own is in flight.
//!
//! Without `etcd` on the PATH each test says it skipped and passes, unless
//! `CUTOVER_REQUIRE_ETCD=1` (CI sets it), where a missing etcd fails.

use crate::support;

use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use support::etcd::Etcd;
use support::eventually_async as eventually;
use support::gate::Gate;
use support::relay::Relay;
use support::{client, get, get_json, pool_tripped, post, put_json, TestProxy, Upstream};

/// Route `shop` splits half and half between blue and green; green has a
/// guard (`guard`, TOML lines under `[pools.green.guard]`); `[fleet]` names
/// etcd at `etcd` (host:port) with `fleet` extra lines.
fn config(etcd: &str, prefix: &str, name: &str, blue: &Upstream, green: &Upstream, guard: &str, fleet: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npool_header = \"x-pool\"\n\
         [pools.blue]\nbackends = [\"{}\"]\n\
         [pools.green]\nbackends = [\"{}\"]\n[pools.green.guard]\n{guard}\
         [[routes]]\nname = \"shop\"\nsplit = {{ blue = 1, green = 1 }}\n\
         [[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nsplit = {{ blue = 1, green = 0 }}\n\
         [fleet]\netcd = [\"http://{etcd}\"]\nprefix = \"{prefix}\"\nreplica = \"{name}\"\n{fleet}",
        blue.addr, green.addr
    )
}

fn etcd_at(etcd: &Etcd) -> String {
    let endpoint = etcd.endpoint();
    format!("{}:{}", endpoint.host, endpoint.port)
}

async fn status(proxy: &TestProxy) -> Value {
    get_json(&proxy.admin_url("/status")).await
}

async fn leader(proxy: &TestProxy) -> Option<String> {
    status(proxy).await["fleet"]["leader"].as_str().map(str::to_string)
}

/// Every cause in `proxy`'s history, newest first.
async fn causes(proxy: &TestProxy) -> Vec<String> {
    let history = get_json(&proxy.admin_url("/history")).await;
    history.as_array().into_iter().flatten().filter_map(|r| r["cause"].as_str().map(str::to_string)).collect()
}

/// Send requests to `proxy` until `n` of them went to green, or green
/// takes no more traffic (tripped).
async fn to_green(proxy: &TestProxy, n: usize) {
    let client = client();
    let mut sent = 0;
    for _ in 0..(n * 20) {
        if sent == n {
            return;
        }
        let answer = get(&client, &proxy.url("/"), &[]).await;
        if answer.headers.get("x-pool").and_then(|v| v.to_str().ok()) == Some("green") {
            sent += 1;
        }
    }
}

/// The fleet's shared state of `key` (e.g. `pools/green`) as etcd holds it.
async fn stored(etcd: &Etcd, prefix: &str, key: &str) -> (Value, i64) {
    read(etcd, prefix, key).await.unwrap_or_else(|| panic!("no {key} in etcd"))
}

/// `key`'s state in etcd and its revision, if it is there.
async fn read(etcd: &Etcd, prefix: &str, key: &str) -> Option<(Value, i64)> {
    let read = etcd.client().get(format!("{prefix}/state/{key}")).await.expect("read etcd");
    read.kvs.first().map(|kv| (serde_json::from_slice(&kv.value).expect("JSON"), kv.mod_revision))
}

/// `key`'s state in etcd once `done` says yes of it: a replica commits a
/// change first and writes it to etcd after, so a test that saw the change
/// on the replica waits for the write.
async fn stored_when(etcd: &Etcd, prefix: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match read(etcd, prefix, key).await.map(|(unit, _)| unit) {
            Some(unit) if done(&unit) => return unit,
            unit => assert!(Instant::now() < deadline, "{key} in etcd never became what was waited for: {unit:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A and B; A leads and reaches etcd through a relay the test holds.
struct Race {
    etcd: Etcd,
    relay: Relay,
    a: TestProxy,
    b: TestProxy,
    prefix: &'static str,
    _upstreams: (Upstream, Upstream),
}

impl Race {
    async fn start(prefix: &'static str) -> Option<Race> {
        let etcd = Etcd::start().await?;
        let (blue, green) = (Upstream::named("blue").await, Upstream::flaky("green", 10).await);
        let target = etcd_at(&etcd).parse().expect("etcd address");
        let relay = Relay::start(target).await;
        // A stall of a second must stay well inside the etcd timeout and the lease.
        let fleet = "lease_ttl = \"5s\"\ntimeout = \"5s\"\n";
        let guard = "max_error_rate = 0.2\nwindow = \"30s\"\nmin_requests = 10\n";
        let a = TestProxy::start_seeded(
            &config(&relay.addr.to_string(), prefix, "a", &blue, &green, guard, fleet),
            Some(7),
        )
        .await;
        // A's fleet task has taken the lead (it decides automatically) and
        // listed A: it is idle when the test holds its traffic.
        eventually(Duration::from_secs(10), "a leads and decides", || async {
            let fleet = status(&a).await["fleet"].clone();
            fleet["leader"] == "a" && fleet["automatic_decisions"] == true && fleet["replicas"][0]["name"] == "a"
        })
        .await;
        let b =
            TestProxy::start_seeded(&config(&etcd_at(&etcd), prefix, "b", &blue, &green, guard, fleet), Some(7)).await;
        Some(Race { etcd, relay, a, b, prefix, _upstreams: (blue, green) })
    }

    /// With A's traffic to etcd held: `meanwhile` changes green's key, then
    /// A's guard trips green on A's failing traffic (an automatic trip made
    /// on the state A last saw); then A's write reaches etcd, and loses.
    async fn trip_on_a_after(&self, meanwhile: impl std::future::Future<Output = ()>) {
        self.relay.hold();
        meanwhile.await;
        to_green(&self.a, 20).await;
        eventually(Duration::from_secs(5), "a tripped green on its own traffic", || async {
            pool_tripped(&self.a, "green").await
        })
        .await;
        self.relay.release();
    }

    /// Wait until A has handled every decision made so far: a change of
    /// route `other` made on A after them is answered only once A's task
    /// has written it, after the ones before.
    async fn settle_a(&self, round: u32) {
        let (code, answer) =
            put_json(&self.a.admin_url("/routes/other/split"), json!({"blue": 1 + round, "green": 0})).await;
        assert_eq!((code, answer["fleet"].as_str()), (StatusCode::OK, Some("written")), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_reset_wins_over_a_trip_made_on_evidence_from_before_it() {
    let Some(race) = Race::start("/cutover/test-reset-wins").await else { return };
    let (a, b) = (&race.a, &race.b);

    // B's operator trips green and resets it while A cannot hear of it; A's
    // guard trips green on its evidence from before the reset.
    race.trip_on_a_after(async {
        assert_eq!(post(&b.admin_url("/pools/green/trip")).await.status, StatusCode::OK);
        assert_eq!(post(&b.admin_url("/pools/green/reset")).await.status, StatusCode::OK);
    })
    .await;
    let (reset, reset_at) = stored(&race.etcd, race.prefix, "pools/green").await;
    assert_eq!((reset["trip"].is_null(), reset["maker"].as_str()), (true, Some("operator")), "{reset}");

    // A's write lost to the reset: A applies it, and drops its own trip.
    eventually(Duration::from_secs(10), "a applied the operator's reset", || async {
        causes(a).await.iter().any(|c| c == "fleet: admin: reset pool green (b)")
    })
    .await;
    race.settle_a(0).await;
    let history = causes(a).await;
    assert!(history.iter().any(|c| c.starts_with("guard: pool green")), "a made its trip first: {history:?}");
    assert!(!history.iter().any(|c| c.contains("tripped again")), "the lost trip is not made again: {history:?}");
    assert!(!pool_tripped(a, "green").await && !pool_tripped(b, "green").await, "the operator's reset stands");
    let (now, version) = stored(&race.etcd, race.prefix, "pools/green").await;
    assert_eq!((version, now["trip"].is_null()), (reset_at, true), "nothing written over the reset: {now}");

    // Green still fails: new evidence, after the reset, trips it again.
    to_green(a, 20).await;
    eventually(Duration::from_secs(10), "green tripped again on new evidence", || async {
        pool_tripped(b, "green").await
    })
    .await;
    // Made automatically, by whichever replica leads by then: on a loaded
    // machine A's lease may have lapsed meanwhile and B judged the fleet.
    let (after, _) = stored(&race.etcd, race.prefix, "pools/green").await;
    assert_eq!(after["maker"].as_str(), Some("automatic"), "{after}");
    assert!(matches!(after["by"].as_str(), Some("a" | "b")), "{after}");
    for proxy in [race.a, race.b] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_that_loses_to_any_other_change_is_made_again() {
    let Some(race) = Race::start("/cutover/test-retrip").await else { return };
    let (a, b) = (&race.a, &race.b);
    // Another replica rewrites green's key, clearing nothing an operator
    // asked for (an automatic change, e.g. written back after a cut-off).
    let key = format!("{}/state/pools/green", race.prefix);
    let unrelated = json!({"by": "c", "cause": "fleet test: an unrelated change", "time": "2026-12-06T00:00:00Z",
                           "maker": "automatic", "trip": null});
    race.trip_on_a_after(async {
        race.etcd.client().put(key.clone(), unrelated.to_string(), None).await.expect("write to etcd");
    })
    .await;
    eventually(Duration::from_secs(10), "a made its trip again on the new state", || async {
        causes(a).await.iter().any(|c| c.contains("tripped again after a concurrent change"))
    })
    .await;
    eventually(Duration::from_secs(10), "the trip again is in etcd and on b", || async {
        let (now, _) = stored(&race.etcd, race.prefix, "pools/green").await;
        !now["trip"].is_null() && now["by"] == "a" && pool_tripped(b, "green").await
    })
    .await;
    for proxy in [race.a, race.b] {
        proxy.stop().await;
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis())
        .unwrap_or(u64::MAX)
}

async fn shop_rollout(proxy: &TestProxy) -> Value {
    let list = get_json(&proxy.admin_url("/rollouts")).await;
    list.as_array().and_then(|l| l.iter().find(|r| r["route"] == "shop").cloned()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_steps_hold_goes_on_where_it_stood_when_the_leader_dies() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-hold";
    const HOLD: u64 = 10_000;
    let guard = "max_error_rate = 0.5\nmin_requests = 3\n";
    let text = |name: &str| {
        config(&etcd_at(&etcd), prefix, name, &blue, &green, guard, "lease_ttl = \"2s\"\ntimeout = \"1s\"\n").replace(
            "split = { blue = 1, green = 1 }\n",
            &format!(
                "split = {{ blue = 1, green = 1 }}\n[routes.rollout]\npool = \"green\"\nsteps = [50, 100]\n\
                 hold = \"{HOLD}ms\"\nstart = \"manual\"\n"
            ),
        )
    };
    let a = TestProxy::start_seeded(&text("a"), Some(7)).await;
    eventually(Duration::from_secs(10), "a leads", || async { leader(&a).await.as_deref() == Some("a") }).await;
    let answer = post(&a.admin_url("/routes/shop/rollout/start")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let started = Instant::now();
    let unit = stored_when(&etcd, prefix, "routes/shop", |unit| !unit["rollout"].is_null()).await;
    let began = unit["rollout"]["began_ms"].as_u64().unwrap_or_else(|| panic!("the step's start is shared: {unit}"));
    assert_eq!((unit["rollout"]["state"].as_str(), unit["rollout"]["step"].as_u64()), (Some("progressing"), Some(0)));

    // Half the hold is served on A; then B joins, and A dies.
    eventually(Duration::from_secs(15), "half the hold served", || async {
        shop_rollout(&a).await["hold_left_ms"].as_u64().is_some_and(|left| left <= HOLD / 2)
    })
    .await;
    let b = TestProxy::start_seeded(&text("b"), Some(7)).await;
    let joined = unix_ms();
    let asked = Instant::now();
    let left_on_b = shop_rollout(&b).await["hold_left_ms"].as_u64().expect("b holds the step");
    // At least `asked - started` of the hold has passed since it began: B
    // counts from the step's start, not from when it joined. (250 ms for
    // the two clocks and millisecond rounding.)
    let served_at_least = u64::try_from(asked.duration_since(started).as_millis()).unwrap_or(u64::MAX);
    assert!(
        left_on_b <= (HOLD - served_at_least.min(HOLD)) + 250,
        "b holds {left_on_b} ms more, the step began {served_at_least} ms or more ago"
    );
    drop(a);
    eventually(Duration::from_secs(10), "b leads", || async { leader(&b).await.as_deref() == Some("b") }).await;

    // Healthy traffic on B: it steps when the hold it inherited is served.
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop_rollout(&b).await["step"].as_u64() != Some(1) {
        assert!(Instant::now() < deadline, "b never stepped: {}", shop_rollout(&b).await);
        let _ = get(&client, &b.url("/"), &[]).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unit = stored_when(&etcd, prefix, "routes/shop", |unit| unit["rollout"]["step"].as_u64() == Some(1)).await;
    let next = unit["rollout"]["began_ms"].as_u64().expect("the next step's start");
    assert_eq!(unit["by"], "b", "{unit}");
    assert!(next >= began + HOLD, "the hold was served in full: began {began}, next step {next}");
    assert!(next < joined + HOLD, "b did not hold the step again from when it joined ({joined}): next step {next}");
    let history = causes(&b).await;
    assert!(history.iter().any(|c| c == "route shop: rollout step 2: green 100%"), "b stepped: {history:?}");
    b.stop().await;
}

/// `proxy`'s fleet view of green: what its judges counted, and the verdict.
async fn judged_green(proxy: &TestProxy) -> Value {
    status(proxy).await["fleet"]["judged"]["green"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_judges_with_the_evidence_from_before_the_failover() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::flaky("green", 10).await);
    let prefix = "/cutover/test-verdict-failover";
    let guard = "max_error_rate = 0.2\nwindow = \"1m\"\nmin_requests = 60\n";
    let fleet = "lease_ttl = \"2s\"\ntimeout = \"1s\"\n";
    let names = ["a", "b", "c"];
    let mut replicas = Vec::new();
    for name in names {
        let text = config(&etcd_at(&etcd), prefix, name, &blue, &green, guard, fleet);
        replicas.push(TestProxy::start_seeded(&text, Some(7)).await);
    }
    eventually(Duration::from_secs(10), "a leader", || async { leader(&replicas[0]).await.is_some() }).await;

    // 15 failing requests on each replica, spread over 3 s (longer than the
    // last second a replica's evidence key holds): 45, under the 60 needed.
    for _ in 0..15 {
        for proxy in &replicas {
            to_green(proxy, 1).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for proxy in &replicas {
        eventually(Duration::from_secs(10), "every replica's judges counted all 45", || async {
            judged_green(proxy).await["requests"] == 45
        })
        .await;
        assert_ne!(judged_green(proxy).await["verdict"], "failing");
        assert!(!pool_tripped(proxy, "green").await);
    }

    // The leader dies; another takes over with the evidence counted so far.
    let old = leader(&replicas[0]).await.expect("a leader");
    drop(replicas.remove(names.iter().position(|n| *n == old).expect("a known leader")));
    eventually(Duration::from_secs(10), "a new leader", || async {
        leader(&replicas[0]).await.is_some_and(|l| l != old)
    })
    .await;
    let new = leader(&replicas[0]).await.expect("a leader");
    let mut survivors = Vec::new();
    for proxy in &replicas {
        survivors.push((status(proxy).await["fleet"]["replica"].as_str().unwrap_or_default().to_string(), proxy));
    }
    let (_, leading) = survivors.iter().find(|(name, _)| *name == new).expect("the new leader is a survivor");
    let before = judged_green(leading).await;
    assert_eq!(before["requests"], 45, "the new leader holds the evidence from before: {before}");
    assert!(!pool_tripped(leading, "green").await, "45 requests are not enough yet");

    // 20 more after the failover (alone far under 60): with the 45 before,
    // the new leader trips green.
    for (_, proxy) in &survivors {
        to_green(proxy, 10).await;
    }
    for (_, proxy) in &survivors {
        eventually(Duration::from_secs(10), "green tripped by the new leader", || async {
            pool_tripped(proxy, "green").await
        })
        .await;
    }
    let history = causes(leading).await;
    assert!(history.iter().any(|c| c.starts_with("guard: green failing")), "the new leader tripped: {history:?}");
    let after = judged_green(leading).await;
    let counted = after["requests"].as_u64().unwrap_or(0);
    assert!(counted >= 60, "the verdict counted the evidence from before the failover: {after}");
    let from = after["replicas"].as_array().cloned().unwrap_or_default();
    assert!(from.iter().any(|r| r == old.as_str()), "the dead leader's evidence counts: {after}");
    for proxy in replicas {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_shadow_judging_only_the_leader_judges_the_fleets_evidence() {
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::flaky("green", 10).await);
    let prefix = "/cutover/test-no-shadow";
    let guard = "max_error_rate = 0.2\nwindow = \"1m\"\nmin_requests = 60\n";
    let fleet = "lease_ttl = \"2s\"\ntimeout = \"1s\"\nshadow_judging = false\n";
    let a = TestProxy::start_seeded(&config(&etcd_at(&etcd), prefix, "a", &blue, &green, guard, fleet), Some(7)).await;
    eventually(Duration::from_secs(10), "a leads", || async { leader(&a).await.as_deref() == Some("a") }).await;
    let b = TestProxy::start_seeded(&config(&etcd_at(&etcd), prefix, "b", &blue, &green, guard, fleet), Some(7)).await;
    to_green(&b, 5).await;
    eventually(Duration::from_secs(10), "the leader counts b's evidence", || async {
        judged_green(&a).await["requests"] == 5
    })
    .await;
    let follower = status(&b).await["fleet"].clone();
    assert_eq!(follower["connected"], true, "{follower}");
    assert!(follower["judged"].is_null(), "b does not judge the fleet's evidence: {follower}");
    for proxy in [a, b] {
        proxy.stop().await;
    }
}

/// Wait until `proxy` sees `leader` lead, and decides automatically or
/// not as `automatic` says.
async fn sees_leading(proxy: &TestProxy, leader: &str, automatic: bool) {
    eventually(Duration::from_secs(10), "the leader seen, and who decides", || async {
        let fleet = status(proxy).await["fleet"].clone();
        fleet["leader"] == leader && fleet["automatic_decisions"] == automatic
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_decides_at_once_while_a_write_of_its_own_is_still_in_flight() {
    use base64::Engine;
    let Some(etcd) = Etcd::start().await else { return };
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-authority";
    let guard = "max_error_rate = 0.5\nmin_requests = 3\n";
    // Replica `name`'s config: etcd at `at`, calls given up after `timeout`.
    let text = |name: &str, at: String, timeout: &str| {
        let fleet = format!("lease_ttl = \"2s\"\ntimeout = \"{timeout}\"\n");
        config(&at, prefix, name, &blue, &green, guard, &fleet)
    };
    let a = TestProxy::start_seeded(&text("a", etcd_at(&etcd), "1s"), Some(7)).await;
    // B reaches etcd through a gate, with a timeout far longer than any
    // deadline below: a call held at the gate stays in flight throughout.
    let gate = Gate::start(etcd_at(&etcd).parse().expect("etcd address")).await;
    sees_leading(&a, "a", true).await;
    let b = TestProxy::start_seeded(&text("b", gate.addr.to_string(), "60s"), Some(7)).await;
    sees_leading(&b, "a", false).await;

    // An operator's change of route `other` on B: B's fleet task writes it
    // to etcd and stays inside that call, which the gate holds. The answer
    // comes once the write is done.
    let key = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}/state/routes/other"));
    gate.hold_bodies_with(key.as_bytes());
    let url = b.admin_url("/routes/other/split");
    let change = tokio::spawn(async move { put_json(&url, json!({"blue": 2, "green": 0})).await });
    eventually(Duration::from_secs(5), "b's write of route other waits at the gate", || async { gate.waiting() >= 1 })
        .await;

    // A dies (killed: its lease runs out, nothing is resigned). B wins the
    // election and takes over the automatic decisions at once, not when
    // its fleet task is out of the held call (up to the 60 s timeout).
    drop(a);
    eventually(Duration::from_secs(10), "b leads", || async { leader(&b).await.as_deref() == Some("b") }).await;
    eventually(Duration::from_secs(10), "b, leading, decides automatically", || async {
        status(&b).await["fleet"]["automatic_decisions"] == true
    })
    .await;
    assert!(gate.waiting() >= 1 && !change.is_finished(), "b's write was still in flight when b took over");

    gate.release();
    let (code, answer) = change.await.expect("the change's task");
    assert_eq!((code, answer["fleet"].as_str()), (StatusCode::OK, Some("written")), "{answer}");
    let unit = stored_when(&etcd, prefix, "routes/other", |unit| {
        unit["override"]["split"] == json!([["blue", 2], ["green", 0]])
    })
    .await;
    assert_eq!(unit["by"], "b", "{unit}");
    b.stop().await;
}
