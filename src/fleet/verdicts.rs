//! Which verdicts a replica's automatic decisions act on: the fleet's,
//! summed from every replica's evidence, or its own.
//!
//! Every replica ticks its guards through an [`EvidenceTap`] and publishes
//! what its judges took ([`Publisher`]). Every replica in step with etcd
//! also runs a [`FleetJudge`] over every replica's evidence, the leader
//! and the others alike; only the leader hands its verdicts to the writer
//! ([`Control::act_on_verdicts_from`]), so a canary that each of fifty
//! sidecars sees too little of is judged on all of its traffic at once.
//! The others judge in shadow: when one of them takes over, its judges
//! already hold the evidence from before the failover, and a verdict goes
//! on where the old leader's stood instead of starting over. A follower
//! makes no automatic decision (the writer's gate), and a replica cut off
//! from etcd acts on its own verdicts (fail static).
//!
//! The judges follow the running config: a pool gains or loses its judge
//! with its guard, and a guard that starts again (a reset, a new version)
//! starts the pool's fleet evidence again too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::etcd::Client;
use super::evidence::{EvidenceTap, Publisher, PublisherOptions};
use super::judging::{FleetJudge, FleetJudging};
use super::FleetConfig;
use crate::control::{Control, Verdicts};
use crate::judge::{JudgeConfig, TICK};

/// Where each guarded pool's judge stood at the last tick: its guard's id
/// and how many ticks it had judged (fewer now means it started again).
type Seen = BTreeMap<String, (u64, u64)>;

/// What the writer's side of one verdict feed needs: whether this replica
/// leads and is in step with etcd, as they change, and where to show the
/// fleet's verdicts.
pub(super) struct Feeding {
    /// Whether this replica leads.
    pub(super) leading: watch::Receiver<bool>,
    /// Whether it is in step with etcd.
    pub(super) connected: watch::Receiver<bool>,
    /// The fleet's verdicts as this replica's judges see them, for `/status`.
    pub(super) judged: watch::Sender<Value>,
}

/// Start publishing this replica's evidence and feeding the writer the
/// verdicts to act on. Returns the publisher (its shutdown revokes the
/// evidence's lease) and the feeding task.
pub(super) fn start(
    control: Arc<Control>,
    client: Client,
    config: &FleetConfig,
    feeding: Feeding,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let tap = Arc::new(EvidenceTap::new());
    control.tap_ticks_with(tap.clone());
    let publisher = Publisher::spawn(client.clone(), tap, PublisherOptions::from_fleet(config));
    let (feed, acting) = watch::channel(Verdicts::default());
    control.act_on_verdicts_from(acting);
    let task =
        tokio::spawn(feed_verdicts(control, client, config.prefix.clone(), config.shadow_judging, feeding, feed));
    (publisher, task)
}

/// Each tick: judge the fleet's evidence while connected (in shadow unless
/// leading); feed the writer the fleet's verdicts while this replica leads
/// and is connected, its own otherwise.
async fn feed_verdicts(
    control: Arc<Control>,
    client: Client,
    prefix: String,
    shadow: bool,
    feeding: Feeding,
    feed: watch::Sender<Verdicts>,
) {
    let Feeding { leading, connected, judged } = feeding;
    let own = control.watch_verdicts();
    let mut judge: Option<FleetJudge> = None;
    let mut seen = Seen::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if !*connected.borrow() || !(shadow || *leading.borrow()) {
            if judge.take().is_some() {
                tracing::info!("no longer judging the fleet's evidence: acting on this replica's own verdicts");
                judged.send_replace(Value::Null);
            }
            seen.clear();
            feed.send_replace(own.borrow().clone());
            continue;
        }
        let pools = judged_pools(&control, &mut seen);
        let judge = judge.get_or_insert_with(|| {
            tracing::info!("judging every replica's evidence (acting on it while leading)");
            let judging = FleetJudging::new(&prefix, pools.configs.clone(), now);
            FleetJudge::spawn(client.clone(), judging, TICK)
        });
        let mut verdicts = judge.verdicts().borrow().clone();
        if !pools.restarted.is_empty() {
            // Judged before the reset: not acted on.
            let mut kept = (*verdicts).clone();
            kept.retain(|pool, _| !pools.restarted.contains(pool));
            verdicts = Arc::new(kept);
        }
        judge.with(|j| {
            j.set_pools(pools.configs, now);
            for pool in &pools.restarted {
                j.reset(pool, now);
            }
            judged.send_replace(view(j, &verdicts));
        });
        if *leading.borrow() {
            feed.send_replace(verdicts);
        } else {
            feed.send_replace(own.borrow().clone());
        }
    }
}

/// The fleet's verdict on each judged pool and what it rests on: requests
/// and failures counted since the pool's judge started, and from which
/// replicas.
fn view(judging: &FleetJudging, verdicts: &Verdicts) -> Value {
    let mut pools = serde_json::Map::new();
    for (pool, verdict) in verdicts.iter() {
        let Some(contributions) = judging.contributions(pool) else { continue };
        let requests: u64 = contributions.values().map(|c| c.requests).sum();
        let failures: u64 = contributions.values().map(|c| c.failures).sum();
        let replicas: Vec<&String> = contributions.iter().filter(|(_, c)| c.requests > 0).map(|(r, _)| r).collect();
        pools.insert(
            pool.clone(),
            json!({"verdict": verdict.kind.as_str(), "requests": requests, "failures": failures, "replicas": replicas}),
        );
    }
    Value::Object(pools)
}

/// The guarded pools' judge settings, and the pools whose guard started
/// again since the last look.
struct Pools {
    configs: Vec<(String, JudgeConfig)>,
    restarted: Vec<String>,
}

fn judged_pools(control: &Control, seen: &mut Seen) -> Pools {
    let mut configs = Vec::new();
    let mut restarted = Vec::new();
    let mut now = Seen::new();
    for guard in control.guards() {
        let pool = guard.pool.to_string();
        let ticks = guard.judgement.ticks();
        if let Some(&(id, before)) = seen.get(&pool) {
            if id != guard.id || ticks < before {
                restarted.push(pool.clone());
            }
        }
        now.insert(pool.clone(), (guard.id, ticks));
        configs.push((pool, guard.config.judge()));
    }
    *seen = now;
    Pools { configs, restarted }
}

/// How long a replica that leaves waits for its evidence's lease to be revoked.
pub(super) const SHUTDOWN: Duration = Duration::from_secs(2);
