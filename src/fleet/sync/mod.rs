//! The task that keeps this replica's state and the fleet's one: it writes
//! the decisions the writer hands it to etcd ([`write`]), applies every
//! other replica's from a watch ([`resync`]), keeps this replica listed
//! under its lease ([`listing`]), and says who may make automatic
//! decisions.
//!
//! **Fail static.** When etcd cannot be reached the replica keeps serving
//! what it last applied, makes its own automatic decisions on its own
//! traffic, and keeps its decisions as pending writes, written or given up
//! when it answers again ([`resync`]).
//!
//! **Leading.** While connected, only the elected leader makes automatic
//! decisions ([`Control::set_automatic`]); the others apply its.

mod listing;
mod resync;
mod write;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::election::Election;
use super::etcd::{Client, EtcdError, LeaseKeeper, WatchMessage, Watcher};
use super::evidence::Publisher;
use super::state::{self, ReplicaRecord};
use super::verdicts;
use super::FleetConfig;
use crate::control::{Control, Decision, DecisionSink, Maker, SharedKey, SharedValue};
use crate::metrics::FleetGauges;
use crate::timestamp::rfc3339;

/// How often the replica record and the replica list are refreshed, and a
/// lost etcd is tried again.
const TICK: Duration = Duration::from_millis(500);

/// What became of an admin call's decision in the fleet.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetOutcome {
    /// Nothing shared changed (or the call changed nothing).
    Unshared,
    /// Written to etcd: in force on every replica within a second.
    Written,
    /// etcd cannot be reached: in force on this replica, written when it
    /// answers again.
    Pending,
    /// Another replica changed the same state first; its change is in force
    /// here too, and nothing of this call is.
    Conflict {
        /// What is in force now, per etcd key.
        current: Value,
    },
}

/// The running fleet mode of one replica.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    client: Client,
    control: Arc<Control>,
    inner: Mutex<Inner>,
    /// The highest local revision whose decision has been handled.
    processed: watch::Sender<u64>,
    connected: watch::Sender<bool>,
    election: Mutex<Option<Election>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Publishes this replica's guard evidence ([`super::verdicts`]).
    publisher: Mutex<Option<Publisher>>,
    /// The fleet's verdicts as this replica's judges see them.
    judged: watch::Sender<Value>,
    gauges: FleetGauges,
    started: String,
}

#[derive(Debug, Default)]
struct Inner {
    outcomes: BTreeMap<u64, FleetOutcome>,
    replicas: Vec<ReplicaRecord>,
    pending: BTreeMap<SharedKey, Pending>,
    /// `(key, version)` → the version this replica's write replaced it with.
    overwritten: BTreeMap<(SharedKey, i64), i64>,
}

/// A decision's unit not yet written (etcd unreachable).
#[derive(Debug, Clone)]
struct Pending {
    value: SharedValue,
    based_on: i64,
    cause: String,
    maker: Maker,
}

/// The writer's decisions, queued for the task.
#[derive(Debug)]
struct Sink(mpsc::UnboundedSender<(u64, Option<Decision>)>);

impl DecisionSink for Sink {
    fn committed(&self, revision: u64, decision: Option<Decision>) {
        let _ = self.0.send((revision, decision));
    }
}

impl Fleet {
    /// Join the fleet `config` names: read its state and apply it before
    /// returning (waiting at most `config.timeout`; past it, the replica
    /// starts from what it has and catches up when etcd answers), then keep
    /// in step in the background. Fails only when the client cannot be
    /// built (a missing password or certificate file).
    pub async fn start(control: Arc<Control>, config: FleetConfig) -> Result<Arc<Fleet>, EtcdError> {
        let client = Client::new(config.client_options()?)?;
        let gauges = control.metrics().fleet_gauges();
        let (tx, decisions) = mpsc::unbounded_channel();
        control.share_decisions_with(Arc::new(Sink(tx)));
        let election = Election::start(client.clone(), config.leader_key(), config.replica.clone(), config.lease_ttl);
        let fleet = Arc::new(Fleet {
            config,
            client,
            control,
            inner: Mutex::new(Inner::default()),
            processed: watch::Sender::new(0),
            connected: watch::Sender::new(false),
            election: Mutex::new(Some(election)),
            tasks: Mutex::new(Vec::new()),
            publisher: Mutex::new(None),
            judged: watch::Sender::new(Value::Null),
            gauges,
            started: rfc3339(SystemTime::now()),
        });
        let first = tokio::time::timeout(fleet.config.timeout, fleet.resync()).await;
        let watcher = match first {
            Ok(Ok(revision)) => {
                tracing::info!(
                    replica = %fleet.config.replica,
                    prefix = %fleet.config.prefix,
                    "fleet state read from etcd; serving with it"
                );
                fleet.set_connected(true);
                Some(fleet.client.watch_prefix(state::state_prefix(&fleet.config.prefix), revision + 1))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "etcd unreachable at startup; serving the state file's state (fail static) until it answers");
                None
            }
            Err(_) => {
                tracing::warn!(timeout = ?fleet.config.timeout, "etcd did not answer at startup; serving the state file's state (fail static) until it answers");
                None
            }
        };
        fleet.update_authority();
        let task = tokio::spawn(fleet.clone().run(decisions, watcher));
        let leading = fleet.election.lock().ok().and_then(|e| e.as_ref().map(|e| e.is_leader()));
        let leading = leading.unwrap_or_else(|| watch::channel(false).1);
        let authority = tokio::spawn(fleet.clone().follow_leadership(leading.clone()));
        let feeding =
            verdicts::Feeding { leading, connected: fleet.connected.subscribe(), judged: fleet.judged.clone() };
        let (publisher, feeding) = verdicts::start(fleet.control.clone(), fleet.client.clone(), &fleet.config, feeding);
        if let Ok(mut slot) = fleet.publisher.lock() {
            *slot = Some(publisher);
        }
        if let Ok(mut tasks) = fleet.tasks.lock() {
            tasks.push(task);
            tasks.push(authority);
            tasks.push(feeding);
        }
        Ok(fleet)
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.config.replica
    }

    /// Whether this replica is in step with etcd now.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Whether this replica leads the fleet now.
    pub fn is_leader(&self) -> bool {
        self.election.lock().ok().and_then(|e| e.as_ref().map(|e| *e.is_leader().borrow())).unwrap_or(false)
    }

    /// The leader's name, as last seen.
    pub fn leader(&self) -> Option<String> {
        self.election.lock().ok().and_then(|e| e.as_ref().and_then(|e| e.leader().borrow().clone()))
    }

    /// What became of the decision of local revision `revision`, waiting
    /// for the write (bounded: past twice the etcd timeout, it is pending).
    pub async fn outcome(&self, revision: u64) -> FleetOutcome {
        let mut processed = self.processed.subscribe();
        let bound = self.config.timeout * 2 + Duration::from_secs(1);
        if tokio::time::timeout(bound, processed.wait_for(|p| *p >= revision)).await.is_err() {
            return FleetOutcome::Pending;
        }
        self.lock().outcomes.remove(&revision).unwrap_or(FleetOutcome::Unshared)
    }

    /// The `fleet` block of `/status`.
    pub fn status(&self) -> Value {
        let inner = self.lock();
        let own = format!("{:016x}", self.control.config_digest());
        let replicas: Vec<Value> = inner
            .replicas
            .iter()
            .map(|r| json!({"name": r.replica, "config": r.config, "same_config": r.config == own, "started": r.started}))
            .collect();
        let different: Vec<&str> =
            inner.replicas.iter().filter(|r| r.config != own).map(|r| r.replica.as_str()).collect();
        json!({
            "replica": self.config.replica,
            "prefix": self.config.prefix,
            "connected": self.is_connected(),
            "leader": self.leader(),
            "is_leader": self.is_leader(),
            "automatic_decisions": self.control.decides_automatically(),
            "pending_writes": inner.pending.len(),
            "config": own,
            "replicas": replicas,
            "different_config": different,
            "judged": self.judged.borrow().clone(),
        })
    }

    /// Leave the fleet: stop, give up leadership and the replica's record
    /// now, so another replica leads at once.
    pub async fn leave(&self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        let publisher = self.publisher.lock().ok().and_then(|mut p| p.take());
        if let Some(publisher) = publisher {
            let _ = tokio::time::timeout(verdicts::SHUTDOWN, publisher.shutdown()).await;
        }
        let election = self.election.lock().ok().and_then(|mut e| e.take());
        if let Some(election) = election {
            let _ = tokio::time::timeout(self.config.timeout, election.resign(&self.client)).await;
        }
        let _ = tokio::time::timeout(self.config.timeout, self.client.delete(self.replica_key())).await;
    }

    /// A guard that stops this replica's part in the fleet when dropped,
    /// without resigning: as a crash would, so the lease runs out and
    /// another replica takes over within the TTL. `run` holds it, so a
    /// replica whose runtime ends takes its fleet tasks with it.
    pub fn stop_on_drop(self: &Arc<Self>) -> StopOnDrop {
        StopOnDrop(self.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replica_key(&self) -> String {
        format!("{}{}", state::replicas_prefix(&self.config.prefix), self.config.replica)
    }

    fn set_connected(&self, connected: bool) {
        let was = self.connected.send_replace(connected);
        self.gauges.connected.set(i64::from(connected));
        if was && !connected {
            tracing::warn!("lost etcd: serving the last applied state (fail static); decisions are kept and written when it answers");
        } else if !was && connected {
            tracing::info!("etcd reached: state resynchronised with the fleet");
        }
        self.update_authority();
    }

    /// Automatic decisions: by the leader while connected, by everyone
    /// on their own traffic while cut off.
    fn update_authority(&self) {
        let leading = self.is_leader();
        self.gauges.leader.set(i64::from(leading));
        self.control.set_automatic(leading || !self.is_connected());
    }

    /// Hands automatic decisions over the moment leadership moves. A task
    /// of its own: the sync loop can be inside an etcd call for up to
    /// `timeout`, and a new leader must not wait that long to act (nor a
    /// deposed one keep acting).
    async fn follow_leadership(self: Arc<Self>, mut leading: watch::Receiver<bool>) {
        while leading.changed().await.is_ok() {
            let now = *leading.borrow_and_update();
            tracing::info!(replica = %self.config.replica, leading = now, "fleet leadership changed");
            self.update_authority();
        }
    }

    async fn run(
        self: Arc<Self>,
        mut decisions: mpsc::UnboundedReceiver<(u64, Option<Decision>)>,
        mut watcher: Option<Watcher>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease: Option<LeaseKeeper> = None;
        let mut published: Option<ReplicaRecord> = None;
        loop {
            tokio::select! {
                decision = decisions.recv() => match decision {
                    Some((revision, decision)) => self.handle(revision, decision).await,
                    None => return,
                },
                message = next(&mut watcher) => match message {
                    Some(WatchMessage::Events { events, .. }) => self.apply_events(events),
                    Some(WatchMessage::Connected) => {}
                    Some(WatchMessage::Disconnected { error }) => {
                        tracing::debug!(%error, "etcd watch broke");
                        watcher = None;
                        self.set_connected(false);
                    }
                    Some(WatchMessage::Compacted { .. }) | None => {
                        watcher = None;
                        self.set_connected(false);
                    }
                },
                _ = tick.tick() => {
                    // Cut off (the watch broke, or a write failed while it
                    // still ran): read the state again and watch from there.
                    if watcher.is_none() || !self.is_connected() {
                        match self.resync().await {
                            Ok(revision) => {
                                watcher = Some(self.client.watch_prefix(state::state_prefix(&self.config.prefix), revision + 1));
                                self.set_connected(true);
                            }
                            Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                        }
                    }
                    if self.is_connected() {
                        self.keep_listed(&mut lease, &mut published).await;
                    }
                }
            }
        }
    }
}

/// See [`Fleet::stop_on_drop`].
#[derive(Debug)]
pub struct StopOnDrop(Arc<Fleet>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.0.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
        let election = self.0.election.lock().ok().and_then(|mut e| e.take());
        drop(election);
    }
}

async fn next(watcher: &mut Option<Watcher>) -> Option<WatchMessage> {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}
