//! [`FleetJudging`] run against etcd, on the leader: read the evidence
//! prefix, watch it from the read's revision on, tick every 250 ms and
//! publish the verdicts on a [`watch`] channel.
//!
//! The leader starts a [`FleetJudge`] when it begins to lead and drops it
//! when it stops. A watch that breaks resumes by itself; one that etcd has
//! compacted away ends, and the prefix is read again (the slices' numbers
//! keep the re-read from counting anything twice). While etcd cannot be
//! read the judges keep ticking on what they have.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::FleetJudging;
use crate::fleet::etcd::{Client, EtcdError, EventKind, Range, WatchMessage, Watcher};
use crate::judge::Verdict;

/// Every judged pool's latest fleet verdict, by pool name (the same shape
/// as the local guards' verdicts).
pub type Verdicts = Arc<BTreeMap<String, Verdict>>;

/// Pause before reading again after a failed read.
const RETRY: Duration = Duration::from_millis(500);

/// A [`FleetJudging`] running on the leader; dropping it stops it.
#[derive(Debug)]
pub struct FleetJudge {
    judging: Arc<Mutex<FleetJudging>>,
    verdicts: watch::Receiver<Verdicts>,
    task: JoinHandle<()>,
}

impl FleetJudge {
    /// Read and watch the evidence with `client`, and tick `judging` every
    /// `every` (the judges' tick, [`crate::judge::TICK`], in production).
    pub fn spawn(client: Client, judging: FleetJudging, every: Duration) -> FleetJudge {
        let (tx, verdicts) = watch::channel(Verdicts::default());
        let judging = Arc::new(Mutex::new(judging));
        let task = tokio::spawn(run(client, judging.clone(), every, tx));
        FleetJudge { judging, verdicts, task }
    }

    /// The verdicts, renewed every tick.
    pub fn verdicts(&self) -> watch::Receiver<Verdicts> {
        self.verdicts.clone()
    }

    /// Act on the judging between ticks: [`FleetJudging::set_pools`] on a
    /// reload, [`FleetJudging::reset`] on a reset, or a look at
    /// [`FleetJudging::contributions`].
    pub fn with<R>(&self, f: impl FnOnce(&mut FleetJudging) -> R) -> R {
        f(&mut lock(&self.judging))
    }
}

impl Drop for FleetJudge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(judging: &Mutex<FleetJudging>) -> MutexGuard<'_, FleetJudging> {
    // The judging is whole between calls; a panic elsewhere must not stop it.
    judging.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type Reading = Pin<Box<dyn Future<Output = Result<Range, EtcdError>> + Send>>;

async fn run(client: Client, judging: Arc<Mutex<FleetJudging>>, every: Duration, verdicts: watch::Sender<Verdicts>) {
    let prefix = lock(&judging).evidence_prefix().to_string();
    let read = |delay: Duration| -> Reading {
        let (client, prefix) = (client.clone(), prefix.clone());
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            client.get_prefix(prefix).await
        })
    };
    let mut reading: Option<Reading> = Some(read(Duration::ZERO));
    let mut watcher: Option<Watcher> = None;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let next = lock(&judging).tick(now);
                verdicts.send_replace(Arc::new(next));
            }
            result = async { match reading.as_mut() { Some(r) => r.await, None => std::future::pending().await } } => {
                match result {
                    Ok(range) => {
                        lock(&judging).observe_all(range.kvs.iter().map(|kv| (kv.key.as_slice(), kv.value.as_slice())));
                        watcher = Some(client.watch_prefix(&prefix, range.revision + 1));
                        reading = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the fleet's guard evidence; retrying");
                        reading = Some(read(RETRY));
                    }
                }
            }
            message = async { match watcher.as_mut() { Some(w) => w.next().await, None => std::future::pending().await } } => {
                match message {
                    Some(WatchMessage::Events { events, .. }) => {
                        let mut judging = lock(&judging);
                        for event in events {
                            let value = (event.kind == EventKind::Put).then_some(event.kv.value.as_slice());
                            if let Err(e) = judging.observe(&event.kv.key, value) {
                                tracing::warn!(error = %e, "guard evidence not counted");
                            }
                        }
                    }
                    Some(WatchMessage::Connected | WatchMessage::Disconnected { .. }) => {}
                    Some(WatchMessage::Compacted { .. }) | None => {
                        // History is gone: read what the keys hold now.
                        watcher = None;
                        reading = Some(read(Duration::ZERO));
                    }
                }
            }
        }
    }
}
