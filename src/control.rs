//! Every change of routing state goes through here: reloads, admin
//! overrides, switchbacks, guard trips and resets.
//!
//! [`Control`] serialises changes behind one mutex (changes are rare; the
//! request path never takes it). Each change recomputes every route's
//! *effective* weights from three inputs — the file's split, an admin
//! override, and the set of tripped pools — builds the next [`Snapshot`]
//! off the request path, publishes it with one store, and appends a numbered
//! [`Revision`] to the history with its cause.
//!
//! The trip rule (SPEC §3) lives in [`effective_weights`]: a tripped pool
//! goes to weight 0 wherever another untripped pool of nonzero weight can
//! take its share; where it serves alone (a blue-green route just switched),
//! the route falls back to its most recent earlier split, from the history,
//! in which that pool had weight 0 and another pool served — an automatic
//! switchback. Where no such split exists the weight stays: a route is never
//! left with nothing, and the breach is only counted. Trips persist across
//! reloads until reset or until the pool's backends change (a new version),
//! so re-reading the file or editing weights cannot make a rollback flap.
//!
//! A reload is all or nothing: the file is read and validated first, and
//! any error leaves the running snapshot untouched and is kept for
//! `/status`. Unchanged content is recognised byte for byte and makes no
//! new revision. Backends that leave the config are drained here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{self, BackendAddr, Config, ConfigError, RouteConfig, TlsConfig};
use crate::exchange::BreachSender;
use crate::guard::{Breach, BreachReason, PoolGuard};
use crate::metrics::Metrics;
use crate::pool::Backend;
use crate::proxy::Proxy;
use crate::snapshot::{BuildInputs, Snapshot};
use crate::timestamp::rfc3339;

/// History entries kept in memory and in the state file.
const HISTORY_LIMIT: usize = 200;

/// What started a reload, for logs and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The file watcher saw a change.
    Watch,
    /// `SIGHUP`.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl ReloadCause {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Watch => "file change",
            ReloadCause::Signal => "SIGHUP",
            ReloadCause::Admin => "admin",
        }
    }
}

/// The result of a successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot was published with this revision.
    Applied(u64),
    /// The file's content is what already runs; the revision stays.
    Unchanged(u64),
}

impl ReloadOutcome {
    /// The revision in force after the reload.
    pub fn revision(self) -> u64 {
        match self {
            ReloadOutcome::Applied(r) | ReloadOutcome::Unchanged(r) => r,
        }
    }
}

/// The last reload attempt, as `/status` reports it.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// Whether it applied (or was unchanged).
    pub ok: bool,
    /// When it ran.
    pub time: SystemTime,
    /// The `file:line:col: message` of a failed attempt.
    pub error: Option<String>,
}

/// A route's weights as (pool, weight), in the route's split order.
pub type Weights = Vec<(String, u32)>;

/// Why a pool was tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripReason {
    /// Failure share over the guard's `max_error_rate`.
    ErrorRate,
    /// p99 over the guard's `max_p99_latency`.
    Latency,
    /// `POST /pools/{pool}/trip`.
    Manual,
}

impl TripReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ErrorRate => "error_rate",
            TripReason::Latency => "latency",
            TripReason::Manual => "manual",
        }
    }
}

impl From<BreachReason> for TripReason {
    fn from(reason: BreachReason) -> TripReason {
        match reason {
            BreachReason::ErrorRate => TripReason::ErrorRate,
            BreachReason::Latency => TripReason::Latency,
        }
    }
}

/// A pool rolled back to weight 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// Why.
    pub reason: TripReason,
    /// The figures that tripped it, for humans.
    pub detail: String,
    /// The revision the trip made.
    pub revision: u64,
    /// The pool's backends when it tripped: a new set is a new version and clears the trip.
    pub backends: Vec<String>,
}

/// An admin-set split for one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// The weights to use.
    pub split: Weights,
    /// The file's split when the override was set; a different one in a
    /// later reload is a newer intent and drops the override.
    pub file_split: Weights,
}

/// One numbered change of effective weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    /// Its number.
    pub revision: u64,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// What caused it.
    pub cause: String,
    /// Effective weights of every route.
    pub splits: BTreeMap<String, Weights>,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Unknown route or pool (404).
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense (400).
    #[error("{0}")]
    Invalid(String),
}

/// The owner of state changes.
#[derive(Debug)]
pub struct Control {
    proxy: Arc<Proxy>,
    metrics: Metrics,
    config_path: PathBuf,
    state: Mutex<State>,
    /// Listener settings the process was started with; a reload cannot move them.
    started: Listen,
    breaches: Option<BreachSender>,
    /// Active health checks, kept in step with every published snapshot.
    health: crate::health::HealthChecks,
}

#[derive(Debug)]
struct State {
    config: Arc<Config>,
    revision: u64,
    /// The file content that built the running snapshot, if it came from the file.
    applied_text: Option<String>,
    last_reload: Option<ReloadRecord>,
    /// Backends removed by a reload and still finishing requests.
    draining: Vec<Arc<Backend>>,
    guards: HashMap<String, Arc<PoolGuard>>,
    overrides: BTreeMap<String, Override>,
    trips: BTreeMap<String, Trip>,
    /// Oldest first.
    history: VecDeque<Revision>,
}

/// The settings fixed when the process starts: listeners are bound, the
/// runtime sized and each listener's connection settings built once.
#[derive(Debug, Clone, PartialEq)]
struct Listen {
    traffic: Vec<SocketAddr>,
    admin: SocketAddr,
    tls: Option<TlsConfig>,
    workers: Option<usize>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    send_timeout: Duration,
    max_request_header_bytes: usize,
}

impl Listen {
    fn of(config: &Config) -> Listen {
        Listen {
            traffic: config.server.listen.clone(),
            admin: config.admin.listen,
            tls: config.server.tls.clone(),
            workers: config.server.workers,
            idle_timeout: config.server.idle_timeout,
            header_read_timeout: config.server.header_read_timeout,
            send_timeout: config.server.send_timeout,
            max_request_header_bytes: config.server.max_request_header_bytes,
        }
    }

    /// The keys of `wanted` that differ from these and need a restart. A
    /// lower `max_request_header_bytes` applies at once (the proxy's own
    /// check reads the snapshot); only raising it past the read buffer sized
    /// at start needs a restart.
    fn needing_restart(&self, wanted: &Listen) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differs = |key: &'static str, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        differs("server.listen", self.traffic != wanted.traffic);
        differs("admin.listen", self.admin != wanted.admin);
        differs("server.tls", self.tls != wanted.tls);
        differs("server.workers", self.workers != wanted.workers);
        differs("server.idle_timeout", self.idle_timeout != wanted.idle_timeout);
        differs("server.header_read_timeout", self.header_read_timeout != wanted.header_read_timeout);
        differs("server.send_timeout", self.send_timeout != wanted.send_timeout);
        differs(
            "server.max_request_header_bytes (raised)",
            wanted.max_request_header_bytes > self.max_request_header_bytes,
        );
        keys
    }
}

/// What `state_file` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    revision: u64,
    overrides: BTreeMap<String, Override>,
    trips: BTreeMap<String, Trip>,
    history: Vec<Revision>,
}

impl Control {
    /// Build the first snapshot of `config` (read from `config_path` as
    /// `text`, when known), restore the state file if any, and return the
    /// control together with the proxy serving it. Breaches are reported on
    /// `breaches`; [`Control::run_guards`] must consume the other end.
    pub fn start(
        config: Config,
        config_path: PathBuf,
        text: Option<String>,
        seed: u64,
        metrics: Metrics,
        breaches: Option<BreachSender>,
    ) -> Arc<Control> {
        let config = Arc::new(config);
        let mut state = State {
            config: config.clone(),
            revision: 0,
            applied_text: text,
            last_reload: None,
            draining: Vec::new(),
            guards: HashMap::new(),
            overrides: BTreeMap::new(),
            trips: BTreeMap::new(),
            history: VecDeque::new(),
        };
        let mut cause = "startup".to_string();
        if let Some(path) = &config.admin.state_file {
            if let Some(restored) = restore(path, &config) {
                state.revision = restored.revision;
                state.overrides = restored.overrides;
                state.trips = restored.trips;
                state.history = restored.history.into();
                cause = "startup (state file restored)".to_string();
            }
        }
        sync_guards(&mut state.guards, &config, None, breaches.as_ref());
        let effective = all_effective(&state);
        state.revision += 1;
        let tripped: Vec<String> = state.trips.keys().cloned().collect();
        let inputs = BuildInputs {
            metrics: Some(&metrics),
            guards: &state.guards,
            effective: &effective.weights,
            tripped: &tripped,
        };
        let (snapshot, _) = Snapshot::build(config.clone(), state.revision, None, inputs);
        let proxy = Arc::new(Proxy::new(snapshot, seed, metrics.client_timeouts()));
        let control = Control {
            proxy,
            metrics,
            config_path,
            started: Listen::of(&config),
            state: Mutex::new(state),
            breaches,
            health: crate::health::HealthChecks::new(),
        };
        control.health.sync(&control.proxy.snapshot());
        {
            let mut state = control.lock();
            control.record_revision(&mut state, cause, &effective);
        }
        Arc::new(control)
    }

    /// The proxy this controls.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The config file reloads read.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Re-read the config file and apply it if valid and changed.
    pub fn reload(&self, cause: ReloadCause) -> Result<ReloadOutcome, ConfigError> {
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| ConfigError {
            path: self.config_path.clone(),
            position: None,
            message: format!("cannot read config: {e}"),
        });
        let mut state = self.lock();
        let text = match text {
            Ok(text) => text,
            Err(err) => return Err(self.record_failure(&mut state, err, cause)),
        };
        if state.applied_text.as_deref() == Some(text.as_str()) {
            self.metrics.config_reloads.with_label_values(&["ok"]).inc();
            state.last_reload = Some(ReloadRecord { ok: true, time: SystemTime::now(), error: None });
            tracing::debug!(cause = cause.as_str(), "config unchanged");
            return Ok(ReloadOutcome::Unchanged(state.revision));
        }
        let config = match config::parse(&self.config_path, &text) {
            Ok(config) => config,
            Err(err) => return Err(self.record_failure(&mut state, err, cause)),
        };
        let fixed = self.started.needing_restart(&Listen::of(&config));
        if !fixed.is_empty() {
            tracing::warn!(
                keys = %fixed.join(", "),
                "these settings changed in the config and apply only after a restart; the rest of the reload applies now"
            );
        }
        let old = state.config.clone();
        // A pool whose backends changed is a new version: its trip and its
        // guard window belong to the old one.
        for (pool, trip) in std::mem::take(&mut state.trips) {
            match config.pool(&pool) {
                Some(pc) if backend_names(&pc.backends) == trip.backends => {
                    state.trips.insert(pool, trip);
                }
                Some(_) => tracing::info!(pool, "pool has new backends; its trip is cleared"),
                None => tracing::info!(pool, "pool removed; its trip is cleared"),
            }
        }
        // An override holds until the file's split for its route changes.
        for (route, ov) in std::mem::take(&mut state.overrides) {
            match config.routes.iter().find(|r| r.name == route) {
                Some(rc) if rc.split == ov.file_split => {
                    state.overrides.insert(route, ov);
                }
                _ => tracing::info!(route, "the file changed this route's split; its admin override is dropped"),
            }
        }
        let config = Arc::new(config);
        sync_guards(&mut state.guards, &config, Some(&old), self.breaches.as_ref());
        state.config = config;
        state.applied_text = Some(text);
        let revision = self.commit(&mut state, format!("reload ({})", cause.as_str()));
        self.metrics.config_reloads.with_label_values(&["ok"]).inc();
        state.last_reload = Some(ReloadRecord { ok: true, time: SystemTime::now(), error: None });
        tracing::info!(cause = cause.as_str(), revision, "config reloaded");
        Ok(ReloadOutcome::Applied(revision))
    }

    /// Like [`Control::reload`], but a file that is empty (a writer that
    /// truncated it and has not written yet) or missing (mid-recreate) is
    /// skipped rather than counted as an error: the write that completes it
    /// triggers another reload.
    pub fn reload_from_watch(&self) {
        match std::fs::metadata(&self.config_path) {
            Ok(meta) if meta.len() == 0 => tracing::debug!("config file is empty; waiting for its content"),
            Err(_) => tracing::debug!("config file is missing; waiting for it to reappear"),
            Ok(_) => {
                let _ = self.reload(ReloadCause::Watch);
            }
        }
    }

    fn record_failure(&self, state: &mut State, err: ConfigError, cause: ReloadCause) -> ConfigError {
        self.metrics.config_reloads.with_label_values(&["error"]).inc();
        state.last_reload = Some(ReloadRecord { ok: false, time: SystemTime::now(), error: Some(err.to_string()) });
        tracing::error!(cause = cause.as_str(), error = %err, "config reload failed; the running config stays in force");
        err
    }

    /// Set a route's split now, until the file's split for it changes.
    pub fn set_override(&self, route: &str, weights: &BTreeMap<String, u32>) -> Result<u64, AdminError> {
        let mut state = self.lock();
        let rc = find_route(&state.config, route)?.clone();
        for pool in weights.keys() {
            if !rc.split.iter().any(|(p, _)| p == pool) {
                let known: Vec<&str> = rc.split.iter().map(|(p, _)| p.as_str()).collect();
                return Err(AdminError::Invalid(format!(
                    "pool \"{pool}\" is not in route \"{route}\" (its pools: {})",
                    known.join(", ")
                )));
            }
        }
        // Pools the body leaves out get 0: the body is the whole split.
        let split: Weights = rc.split.iter().map(|(p, _)| (p.clone(), weights.get(p).copied().unwrap_or(0))).collect();
        if split.iter().all(|(_, w)| *w == 0) {
            return Err(AdminError::Invalid("all weights are zero; at least one pool must take traffic".into()));
        }
        state.overrides.insert(route.to_string(), Override { split: split.clone(), file_split: rc.split.clone() });
        Ok(self.commit(&mut state, format!("admin: set split of route {route} to {}", describe(&split))))
    }

    /// Drop a route's override; the file's split applies again.
    pub fn clear_override(&self, route: &str) -> Result<u64, AdminError> {
        let mut state = self.lock();
        find_route(&state.config, route)?;
        if state.overrides.remove(route).is_none() {
            return Ok(state.revision);
        }
        Ok(self.commit(&mut state, format!("admin: cleared override of route {route}")))
    }

    /// Restore the split in force before the route's last change. A second
    /// switchback undoes the first, like `cd -`.
    pub fn switchback(&self, route: &str) -> Result<u64, AdminError> {
        let mut state = self.lock();
        let rc = find_route(&state.config, route)?.clone();
        let current = all_effective(&state).splits.get(route).cloned().unwrap_or_default();
        let previous = state
            .history
            .iter()
            .rev()
            .filter_map(|rev| rev.splits.get(route))
            .map(|split| align(split, &rc))
            .find(|split| *split != current && split.iter().any(|(_, w)| *w > 0));
        let Some(previous) = previous else {
            return Err(AdminError::Invalid(format!("route \"{route}\" has no earlier split to switch back to")));
        };
        state.overrides.insert(route.to_string(), Override { split: previous.clone(), file_split: rc.split.clone() });
        Ok(self.commit(&mut state, format!("admin: switchback of route {route} to {}", describe(&previous))))
    }

    /// Roll a pool back by hand.
    pub fn trip(&self, pool: &str) -> Result<u64, AdminError> {
        let mut state = self.lock();
        let pc = state.config.pool(pool).ok_or_else(|| AdminError::NotFound(format!("no pool \"{pool}\"")))?;
        if state.trips.contains_key(pool) {
            return Ok(state.revision);
        }
        let trip = Trip {
            reason: TripReason::Manual,
            detail: "tripped by an operator".into(),
            revision: state.revision + 1,
            backends: backend_names(&pc.backends),
        };
        state.trips.insert(pool.to_string(), trip);
        self.metrics.rollbacks.with_label_values(&[pool, "manual"]).inc();
        tracing::warn!(pool, "pool tripped by an operator");
        Ok(self.commit(&mut state, format!("admin: tripped pool {pool}")))
    }

    /// Clear a pool's trip and start its guard window afresh.
    pub fn reset(&self, pool: &str) -> Result<u64, AdminError> {
        let mut state = self.lock();
        if state.config.pool(pool).is_none() {
            return Err(AdminError::NotFound(format!("no pool \"{pool}\"")));
        }
        if let Some(guard) = state.guards.get(pool) {
            guard.reset();
        }
        if state.trips.remove(pool).is_none() {
            return Ok(state.revision);
        }
        tracing::info!(pool, "trip reset by an operator");
        Ok(self.commit(&mut state, format!("admin: reset pool {pool}")))
    }

    /// A guard reported a breach: trip the pool if that moves any traffic.
    pub fn on_breach(&self, pool: &str, breach: &Breach) {
        self.metrics.guard_breaches.with_label_values(&[pool, breach.reason.as_str()]).inc();
        let mut state = self.lock();
        if state.trips.contains_key(pool) {
            return;
        }
        let Some(pc) = state.config.pool(pool) else { return };
        let before = all_effective(&state);
        let trip = Trip {
            reason: breach.reason.into(),
            detail: breach.detail.clone(),
            revision: state.revision + 1,
            backends: backend_names(&pc.backends),
        };
        state.trips.insert(pool.to_string(), trip);
        let after = all_effective(&state);
        if after.splits == before.splits {
            state.trips.remove(pool);
            tracing::warn!(
                pool,
                detail = %breach.detail,
                "guard breached, but no other pool can take this pool's traffic; its weight stays"
            );
            return;
        }
        self.metrics.rollbacks.with_label_values(&[pool, breach.reason.as_str()]).inc();
        tracing::warn!(pool, reason = breach.reason.as_str(), detail = %breach.detail, "guard tripped: pool rolled back");
        self.commit(&mut state, format!("guard: pool {pool}: {}", breach.detail));
    }

    /// Consume breach reports and judge every guard periodically (a window
    /// can cross `min_requests` on a success, which `record` does not judge).
    pub async fn run_guards(self: Arc<Self>, mut breaches: tokio::sync::mpsc::UnboundedReceiver<(Arc<str>, Breach)>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = breaches.recv() => match event {
                    Some((pool, breach)) => self.on_breach(&pool, &breach),
                    None => return,
                },
                _ = tick.tick() => {
                    let guards: Vec<Arc<PoolGuard>> = self.lock().guards.values().cloned().collect();
                    let now = tokio::time::Instant::now();
                    for guard in guards {
                        if let Some(breach) = guard.evaluate(now) {
                            self.on_breach(&guard.pool, &breach);
                        }
                    }
                }
            }
        }
    }

    /// Recompute effective weights, publish a new snapshot and record the
    /// revision. Returns the new revision.
    fn commit(&self, state: &mut State, cause: String) -> u64 {
        let effective = all_effective(state);
        state.revision += 1;
        let current = self.proxy.snapshot();
        let tripped: Vec<String> = state.trips.keys().cloned().collect();
        let inputs = BuildInputs {
            metrics: Some(&self.metrics),
            guards: &state.guards,
            effective: &effective.weights,
            tripped: &tripped,
        };
        let (snapshot, removed) = Snapshot::build(state.config.clone(), state.revision, Some(&current), inputs);
        self.proxy.publish(snapshot);
        self.health.sync(&self.proxy.snapshot());
        let drain_timeout = state.config.server.drain_timeout;
        for backend in removed {
            self.drain(state, backend, drain_timeout);
        }
        for (route, pool) in &effective.stranded {
            tracing::warn!(route, pool, "tripped pool still serves this route: no other pool can take its traffic");
        }
        self.record_revision(state, cause, &effective);
        self.persist(state);
        state.revision
    }

    fn record_revision(&self, state: &mut State, cause: String, effective: &Effective) {
        self.metrics.config_revision.set(i64::try_from(state.revision).unwrap_or(i64::MAX));
        state.history.push_back(Revision {
            revision: state.revision,
            time: rfc3339(SystemTime::now()),
            cause,
            splits: effective.splits.clone(),
        });
        while state.history.len() > HISTORY_LIMIT {
            state.history.pop_front();
        }
    }

    /// Write overrides, trips and history to `state_file`, atomically.
    fn persist(&self, state: &State) {
        let Some(path) = &state.config.admin.state_file else { return };
        let persisted = Persisted {
            version: 1,
            revision: state.revision,
            overrides: state.overrides.clone(),
            trips: state.trips.clone(),
            history: state.history.iter().cloned().collect(),
        };
        if let Err(e) = write_atomically(path, &persisted) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the state file; overrides and trips will not survive a restart");
        }
    }

    /// Stop sending to `backend` and let its in-flight requests finish.
    fn drain(&self, state: &mut State, backend: Arc<Backend>, timeout: Duration) {
        backend.start_draining();
        tracing::info!(pool = %backend.pool, backend = %backend.addr, in_flight = backend.in_flight(), "draining backend");
        state.draining.retain(|b| b.in_flight() > 0);
        state.draining.push(backend.clone());
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let addr = backend.addr.to_string();
            match finish_drain(&backend, timeout).await {
                DrainEnd::Drained => tracing::info!(pool = %backend.pool, backend = %addr, "backend drained"),
                DrainEnd::Cut(cut) => {
                    metrics.drain_cut.with_label_values(&[&*backend.pool, addr.as_str()]).inc_by(cut as u64);
                    tracing::warn!(pool = %backend.pool, backend = %addr, cut, "drain timed out; cut in-flight requests")
                }
            }
            // Wait for the cut requests to unwind before forgetting the series.
            let _ = tokio::time::timeout(Duration::from_secs(5), backend.wait_idle()).await;
            metrics.forget_backend(&backend.pool, &addr);
        });
    }

    /// Stop active health checks (at shutdown).
    pub fn stop_health(&self) {
        self.health.stop();
    }

    /// Backends still draining (removed from the config, requests in flight).
    pub fn draining(&self) -> Vec<Arc<Backend>> {
        let mut state = self.lock();
        state.draining.retain(|b| b.in_flight() > 0);
        state.draining.clone()
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.lock().last_reload.clone()
    }

    /// A consistent view of the state for `/status`.
    pub fn view(&self) -> StateView {
        let state = self.lock();
        let now = tokio::time::Instant::now();
        StateView {
            config: state.config.clone(),
            revision: state.revision,
            overrides: state.overrides.clone(),
            trips: state.trips.clone(),
            guards: state.guards.iter().map(|(p, g)| (p.clone(), g.window.stats(now))).collect(),
        }
    }

    /// The history, newest first.
    pub fn history(&self) -> Vec<Revision> {
        self.lock().history.iter().rev().cloned().collect()
    }

    /// Set the gauges that mirror state, then render `/metrics`.
    pub fn render_metrics(&self) -> Vec<u8> {
        let snapshot = self.proxy.snapshot();
        let m = &self.metrics;
        // Gauges mirror the current state only: a pool or route deleted from
        // the config disappears from them.
        m.pool_weight.reset();
        m.pool_tripped.reset();
        for pool in &snapshot.config.pools {
            m.touch_pool(&pool.name, pool.guard.is_some());
        }
        for route in &snapshot.routes {
            for (pool, weight) in route.targets.iter().zip(route.split.weights()) {
                m.pool_weight.with_label_values(&[&route.name, &pool.name]).set(i64::from(*weight));
            }
        }
        let tripped: Vec<String> = self.lock().trips.keys().cloned().collect();
        for pool in &snapshot.pools {
            m.pool_tripped.with_label_values(&[&pool.name]).set(i64::from(tripped.contains(&pool.name.to_string())));
            for b in &pool.backends {
                let addr = b.addr.to_string();
                m.in_flight.with_label_values(&[&*pool.name, addr.as_str()]).set(b.in_flight() as i64);
                m.backend_healthy.with_label_values(&[&*pool.name, addr.as_str()]).set(i64::from(b.is_eligible()));
                m.backend_draining.with_label_values(&[&*pool.name, addr.as_str()]).set(0);
            }
        }
        for b in self.draining() {
            let addr = b.addr.to_string();
            m.in_flight.with_label_values(&[&*b.pool, addr.as_str()]).set(b.in_flight() as i64);
            m.backend_draining.with_label_values(&[&*b.pool, addr.as_str()]).set(1);
        }
        m.render()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // State is only changed by whole assignments under the lock; a panic
        // elsewhere must not stop reloads and switchbacks: recover it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What `/status` needs, copied out under the lock.
#[derive(Debug)]
pub struct StateView {
    /// The config in force.
    pub config: Arc<Config>,
    /// The current revision.
    pub revision: u64,
    /// Admin overrides by route.
    pub overrides: BTreeMap<String, Override>,
    /// Trips by pool.
    pub trips: BTreeMap<String, Trip>,
    /// Guard window figures by pool.
    pub guards: BTreeMap<String, crate::guard::WindowStats>,
}

/// Effective weights of all routes.
#[derive(Debug)]
struct Effective {
    /// By route, aligned with the route's split (for building snapshots).
    weights: HashMap<String, Vec<u32>>,
    /// By route, with pool names (for history and status).
    splits: BTreeMap<String, Weights>,
    /// (route, pool) pairs where a tripped pool keeps serving.
    stranded: Vec<(String, String)>,
}

fn all_effective(state: &State) -> Effective {
    let mut out = Effective { weights: HashMap::new(), splits: BTreeMap::new(), stranded: Vec::new() };
    for rc in &state.config.routes {
        let base = match state.overrides.get(&rc.name) {
            Some(ov) => align(&ov.split, rc),
            None => rc.split.clone(),
        };
        let (split, stranded) = effective_weights(rc, base, &state.trips, &state.history);
        out.stranded.extend(stranded.into_iter().map(|p| (rc.name.clone(), p)));
        out.weights.insert(rc.name.clone(), split.iter().map(|(_, w)| *w).collect());
        out.splits.insert(rc.name.clone(), split);
    }
    out
}

/// The trip rule for one route (see the module docs). Returns the effective
/// weights and the tripped pools that had to keep serving.
pub fn effective_weights(
    route: &RouteConfig,
    base: Weights,
    trips: &BTreeMap<String, Trip>,
    history: &VecDeque<Revision>,
) -> (Weights, Vec<String>) {
    let tripped = |pool: &str| trips.contains_key(pool);
    let mut split = base;
    let mut stranded = Vec::new();
    for i in 0..split.len() {
        let (pool, weight) = (split[i].0.clone(), split[i].1);
        let Some(trip) = trips.get(&pool) else { continue };
        if weight == 0 {
            continue;
        }
        let others_serve = split.iter().enumerate().any(|(j, (p, w))| j != i && *w > 0 && !tripped(p));
        if others_serve {
            split[i].1 = 0;
            continue;
        }
        // Serving alone: switch back to the latest earlier split without it.
        let fallback = history
            .iter()
            .rev()
            .filter(|rev| rev.revision < trip.revision)
            .filter_map(|rev| rev.splits.get(&route.name))
            .map(|s| align(s, route))
            .find(|s| s.iter().any(|(p, w)| *p == pool && *w == 0) && s.iter().any(|(p, w)| *w > 0 && !tripped(p)));
        match fallback {
            Some(earlier) => split = earlier,
            None => stranded.push(pool),
        }
    }
    (split, stranded)
}

/// `split` laid out in the route's pool order; pools the route does not
/// have are dropped, pools it has and `split` lacks get 0.
fn align(split: &[(String, u32)], route: &RouteConfig) -> Weights {
    route
        .split
        .iter()
        .map(|(pool, _)| (pool.clone(), split.iter().find(|(p, _)| p == pool).map_or(0, |(_, w)| *w)))
        .collect()
}

fn describe(split: &[(String, u32)]) -> String {
    let parts: Vec<String> = split.iter().map(|(p, w)| format!("{p}={w}")).collect();
    parts.join(" ")
}

fn backend_names(backends: &[BackendAddr]) -> Vec<String> {
    backends.iter().map(|b| b.to_string()).collect()
}

fn find_route<'a>(config: &'a Config, route: &str) -> Result<&'a RouteConfig, AdminError> {
    config.routes.iter().find(|r| r.name == route).ok_or_else(|| AdminError::NotFound(format!("no route \"{route}\"")))
}

/// Keep guards whose pool, thresholds and backends are unchanged (a reload
/// keeps their windows); create the others afresh.
fn sync_guards(
    guards: &mut HashMap<String, Arc<PoolGuard>>,
    config: &Config,
    old: Option<&Config>,
    breaches: Option<&BreachSender>,
) {
    let mut next = HashMap::new();
    for pc in &config.pools {
        let Some(gc) = &pc.guard else { continue };
        let same_version = old.and_then(|o| o.pool(&pc.name)).is_some_and(|op| op.backends == pc.backends);
        match guards.remove(&pc.name) {
            Some(g) if g.config == *gc && (same_version || old.is_none()) => {
                next.insert(pc.name.clone(), g);
            }
            _ => {
                let guard = PoolGuard::new(Arc::from(pc.name.as_str()), gc.clone(), breaches.cloned());
                next.insert(pc.name.clone(), Arc::new(guard));
            }
        }
    }
    *guards = next;
}

/// Read `state_file`, keeping only what still applies to `config`. A
/// missing file is normal; a corrupt one is reported and ignored.
fn restore(path: &Path, config: &Config) -> Option<Persisted> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting without it");
            return None;
        }
    };
    let mut persisted: Persisted = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "the state file is corrupt; starting without it");
            return None;
        }
    };
    persisted.trips.retain(|pool, trip| {
        let keep = config.pool(pool).is_some_and(|pc| backend_names(&pc.backends) == trip.backends);
        if !keep {
            tracing::info!(pool, "state file: trip dropped (pool gone or has new backends)");
        }
        keep
    });
    persisted.overrides.retain(|route, ov| {
        let keep = config.routes.iter().any(|r| r.name == *route && r.split == ov.file_split);
        if !keep {
            tracing::info!(route, "state file: override dropped (the file's split changed)");
        }
        keep
    });
    tracing::info!(
        path = %path.display(),
        trips = persisted.trips.len(),
        overrides = persisted.overrides.len(),
        "state restored"
    );
    Some(persisted)
}

fn write_atomically(path: &Path, persisted: &Persisted) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(persisted).map_err(std::io::Error::other)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every in-flight request finished in time.
    Drained,
    /// `drain_timeout` passed; this many requests were cut.
    Cut(usize),
}

/// Wait up to `timeout` for a draining backend's requests, then cut the rest.
pub async fn finish_drain(backend: &Backend, timeout: Duration) -> DrainEnd {
    match tokio::time::timeout(timeout, backend.wait_idle()).await {
        Ok(()) => DrainEnd::Drained,
        Err(_) => DrainEnd::Cut(backend.cut_in_flight()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddr, HostMatch, Scheme};

    fn backend() -> Arc<Backend> {
        let addr = BackendAddr { scheme: Scheme::Http, authority: "127.0.0.1:1".into() };
        Arc::new(Backend::new("canary".into(), addr, Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_when_the_last_request_finishes() {
        let b = backend();
        let first = b.begin_request();
        let second = b.begin_request();
        b.start_draining();
        let drain = tokio::spawn({
            let b = b.clone();
            async move { finish_drain(&b, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!drain.is_finished(), "drained with a request still in flight");
        drop(second);
        assert_eq!(drain.await.unwrap(), DrainEnd::Drained);
        assert_eq!(b.cut_requests(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_cuts_what_outlives_the_timeout() {
        let b = backend();
        let _stuck = b.begin_request();
        b.start_draining();
        let started = tokio::time::Instant::now();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Cut(1));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(b.cut_requests(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_backend_drains_at_once() {
        let b = backend();
        b.start_draining();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Drained);
    }

    fn route(split: &[(&str, u32)]) -> RouteConfig {
        RouteConfig {
            name: "shop".into(),
            host: HostMatch::Any,
            path_prefix: "/".into(),
            split: w(split),
            sticky: None,
            force: Vec::new(),
        }
    }

    fn w(split: &[(&str, u32)]) -> Weights {
        split.iter().map(|(p, w)| (p.to_string(), *w)).collect()
    }

    fn tripped(pool: &str, revision: u64) -> BTreeMap<String, Trip> {
        let trip = Trip { reason: TripReason::ErrorRate, detail: String::new(), revision, backends: Vec::new() };
        BTreeMap::from([(pool.to_string(), trip)])
    }

    fn rev(revision: u64, split: &[(&str, u32)]) -> Revision {
        Revision {
            revision,
            time: String::new(),
            cause: String::new(),
            splits: BTreeMap::from([("shop".to_string(), w(split))]),
        }
    }

    #[test]
    fn a_tripped_canary_goes_to_zero_and_its_share_to_the_others() {
        let r = route(&[("blue", 90), ("canary", 10)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("canary", 5), &VecDeque::new());
        assert_eq!(split, w(&[("blue", 90), ("canary", 0)]));
        assert!(stranded.is_empty());
    }

    #[test]
    fn a_pool_serving_alone_switches_back_to_the_last_split_without_it() {
        let r = route(&[("blue", 0), ("green", 100)]);
        let history = VecDeque::from([
            rev(1, &[("blue", 100), ("green", 0)]),
            rev(2, &[("blue", 50), ("green", 50)]),
            rev(3, &[("blue", 0), ("green", 100)]),
        ]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 4), &history);
        assert_eq!(split, w(&[("blue", 100), ("green", 0)]));
        assert!(stranded.is_empty());
    }

    #[test]
    fn history_after_the_trip_is_not_a_fallback() {
        let r = route(&[("blue", 0), ("green", 100)]);
        let history = VecDeque::from([rev(1, &[("blue", 0), ("green", 100)]), rev(5, &[("blue", 100), ("green", 0)])]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 2), &history);
        assert_eq!(split, r.split);
        assert_eq!(stranded, vec!["green".to_string()]);
    }

    #[test]
    fn a_route_is_never_left_with_nothing() {
        let r = route(&[("green", 100)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 2), &VecDeque::new());
        assert_eq!(split, w(&[("green", 100)]));
        assert_eq!(stranded, vec!["green".to_string()]);
    }

    #[test]
    fn weight_zero_pools_are_untouched() {
        let r = route(&[("blue", 100), ("canary", 0)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("canary", 2), &VecDeque::new());
        assert_eq!(split, r.split);
        assert!(stranded.is_empty());
    }
}
