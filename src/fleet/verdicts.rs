//! Which verdicts a replica's automatic decisions act on: the fleet's,
//! summed by the leader, or its own.
//!
//! Every replica ticks its guards through an [`EvidenceTap`] and publishes
//! what its judges took ([`Publisher`]). The replica that leads, while it
//! is in step with etcd, also runs a [`FleetJudge`] over every replica's
//! evidence and hands its verdicts to the writer
//! ([`Control::act_on_verdicts_from`]); so a canary that each of fifty
//! sidecars sees too little of is judged on all of its traffic at once.
//! A follower makes no automatic decision (the writer's gate), and a
//! replica cut off from etcd acts on its own verdicts (fail static).
//!
//! The leader's judges follow the running config: a pool gains or loses
//! its judge with its guard, and a guard that starts again (a reset, a new
//! version) starts the pool's fleet evidence again too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Start publishing this replica's evidence and feeding the writer the
/// verdicts to act on. `leading` and `connected` say, as they change,
/// whether this replica leads and is in step with etcd. Returns the
/// publisher (its shutdown revokes the evidence's lease) and the feeding
/// task.
pub(super) fn start(
    control: Arc<Control>,
    client: Client,
    config: &FleetConfig,
    leading: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let tap = Arc::new(EvidenceTap::new());
    control.tap_ticks_with(tap.clone());
    let publisher = Publisher::spawn(client.clone(), tap, PublisherOptions::from_fleet(config));
    let (feed, acting) = watch::channel(Verdicts::default());
    control.act_on_verdicts_from(acting);
    let task = tokio::spawn(feed_verdicts(control, client, config.prefix.clone(), leading, connected, feed));
    (publisher, task)
}

/// Each tick: the fleet judge's verdicts while this replica leads and is
/// connected, its own otherwise.
async fn feed_verdicts(
    control: Arc<Control>,
    client: Client,
    prefix: String,
    leading: watch::Receiver<bool>,
    connected: watch::Receiver<bool>,
    feed: watch::Sender<Verdicts>,
) {
    let own = control.watch_verdicts();
    let mut judge: Option<FleetJudge> = None;
    let mut seen = Seen::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if *leading.borrow() && *connected.borrow() {
            let pools = judged_pools(&control, &mut seen);
            let judge = judge.get_or_insert_with(|| {
                tracing::info!("leading the fleet: judging every replica's evidence");
                let judging = FleetJudging::new(&prefix, pools.configs.clone(), now);
                FleetJudge::spawn(client.clone(), judging, TICK)
            });
            judge.with(|j| {
                j.set_pools(pools.configs, now);
                for pool in &pools.restarted {
                    j.reset(pool, now);
                }
            });
            feed.send_replace(judge.verdicts().borrow().clone());
        } else {
            if judge.take().is_some() {
                tracing::info!("no longer judging the fleet's evidence: acting on this replica's own verdicts");
            }
            seen.clear();
            feed.send_replace(own.borrow().clone());
        }
    }
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
