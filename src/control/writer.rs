//! The single writer: every change of routing state goes through
//! [`Control`].
//!
//! Changes are serialised behind one mutex (they are rare; the request path
//! never takes it). Each change recomputes every route's effective weights
//! ([`super::weights`]), builds the next [`Snapshot`] off the request path,
//! publishes it with one store, keeps active health checks in step with it,
//! drains the backends it removed ([`super::drain`]), and records a numbered
//! revision with its cause ([`super::history`]).
//!
//! A reload is all or nothing: the file is read and validated first, and
//! any error leaves the running snapshot untouched and is kept for
//! `/status`. Unchanged content is recognised byte for byte and makes no
//! new revision. Trips persist across reloads until reset or until the
//! pool's backends change (a new version), and an override holds until the
//! file's split for its route changes, so re-reading the file or editing
//! weights cannot make a rollback flap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::outcome::{AdminError, ReloadCause, ReloadOutcome, ReloadRecord, StateView, Verdicts};
use super::rollouts::{abort_class, cause as rollout_cause, guard_verdict, RolloutView, SavedRollout};
use super::state::{backend_names, Override, Revision, Trip, TripReason, Weights};
use super::weights::{align, all_effective, Effective};
use super::{drain, history};
use crate::config::restart::FixedAtStart;
use crate::config::{self, Config, ConfigError, RouteConfig};
use crate::exchange::BreachSender;
use crate::guard::{Breach, BreachReason, BreachReport, PoolGuard};
use crate::judge::{Verdict, VerdictKind};
use crate::metrics::{BackendGauges, Metrics, StateGauges};
use crate::pool::Backend;
use crate::proxy::Proxy;
use crate::rollout::{Command, Event, Rollout, Saved, State as RolloutState, Verdict as RolloutVerdict};
use crate::snapshot::{BuildInputs, Snapshot};
use crate::timestamp::rfc3339;

/// The owner of state changes.
#[derive(Debug)]
pub struct Control {
    proxy: Arc<Proxy>,
    metrics: Metrics,
    config_path: PathBuf,
    state: Mutex<State>,
    /// Listener settings the process was started with; a reload cannot move them.
    started: FixedAtStart,
    breaches: Option<BreachSender>,
    /// Active health checks, kept in step with every published snapshot.
    health: crate::health::HealthChecks,
    /// Every guarded pool's verdict, published each 250 ms tick.
    verdicts: tokio::sync::watch::Sender<Verdicts>,
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
    /// Progressive rollouts by route.
    rollouts: BTreeMap<String, Rollout>,
    /// Each rollout's latest verdict, for `/rollouts`.
    rollout_verdicts: BTreeMap<String, RolloutVerdict>,
    /// When the state file was last written, so that a rollout's served hold
    /// is saved now and then between changes.
    persisted_at: tokio::time::Instant,
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
            rollouts: BTreeMap::new(),
            rollout_verdicts: BTreeMap::new(),
            persisted_at: tokio::time::Instant::now(),
        };
        let mut cause = "startup".to_string();
        let mut saved_rollouts = BTreeMap::new();
        if let Some(path) = &config.admin.state_file {
            if let Some(restored) = history::restore(path, &config) {
                state.revision = restored.revision;
                state.overrides = restored.overrides;
                state.trips = restored.trips;
                state.history = restored.history.into();
                saved_rollouts = restored.rollouts;
                cause = "startup (state file restored)".to_string();
            }
        }
        sync_guards(&mut state.guards, &config, None, breaches.as_ref());
        let now = tokio::time::Instant::now();
        let mut started = Vec::new();
        for rc in &config.routes {
            let Some(plan) = rc.rollout.clone() else { continue };
            let backends = config.pool(&plan.pool).map(|pc| backend_names(&pc.backends)).unwrap_or_default();
            let events = match saved_rollouts.get(&rc.name).and_then(|s| Some((s.saved()?, s.backends.clone()))) {
                Some((saved, was)) => {
                    let mut rollout = Rollout::restore(plan, saved, now);
                    let events = if was == backends { Vec::new() } else { rollout.new_version(now) };
                    state.rollouts.insert(rc.name.clone(), rollout);
                    events
                }
                // A canary tripped before the restart stays tripped: a
                // restart does not undo a rollback, so its rollout is aborted.
                None if state.trips.contains_key(&plan.pool) => {
                    let reason = "the canary was tripped before the restart".to_string();
                    let saved = Saved { state: RolloutState::Aborted { step: 0, reason }, served: Duration::ZERO };
                    state.rollouts.insert(rc.name.clone(), Rollout::restore(plan, saved, now));
                    Vec::new()
                }
                None => {
                    let (rollout, events) = Rollout::new(plan, now);
                    state.rollouts.insert(rc.name.clone(), rollout);
                    events
                }
            };
            started.push((rc.name.clone(), events));
        }
        for (route, events) in started {
            if let Some(c) = absorb(&mut state, &metrics, &route, &events) {
                cause = format!("{cause}; {c}");
            }
        }
        let effective = effective(&state);
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
            started: FixedAtStart::of(&config),
            state: Mutex::new(state),
            breaches,
            health: crate::health::HealthChecks::new(),
            verdicts: tokio::sync::watch::Sender::new(Verdicts::default()),
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
        let fixed = self.started.needing_restart(&FixedAtStart::of(&config));
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
        state.config = config.clone();
        state.applied_text = Some(text);
        let mut why = format!("reload ({})", cause.as_str());
        for c in self.reload_rollouts(&mut state, &old, &config) {
            why = format!("{why}; {c}");
        }
        let revision = self.commit(&mut state, why);
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
        let events = state.rollouts.get_mut(route).map(Rollout::overridden).unwrap_or_default();
        let mut cause = format!("admin: set split of route {route} to {}", describe(&split));
        if let Some(c) = absorb(&mut state, &self.metrics, route, &events) {
            cause = format!("{cause}; {c}");
        }
        Ok(self.commit(&mut state, cause))
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
        let current = effective(&state).splits.get(route).cloned().unwrap_or_default();
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
        let events = state.rollouts.get_mut(route).map(Rollout::switched_back).unwrap_or_default();
        let mut cause = format!("admin: switchback of route {route} to {}", describe(&previous));
        if let Some(c) = absorb(&mut state, &self.metrics, route, &events) {
            cause = format!("{cause}; {c}");
        }
        Ok(self.commit(&mut state, cause))
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
        let cause = format!("guard: pool {pool}: {}", breach.detail);
        self.trip_by_guard(pool, breach.reason, &breach.detail, cause);
    }

    /// A breach reported from the request path: only the pool's current
    /// guard may trip it. A superseded guard (the pool got new backends or
    /// new settings) still sees the requests in flight to the old version;
    /// its breach is counted apart, and never trips the version in force.
    pub fn on_breach_report(&self, report: &BreachReport) {
        let current = self.lock().guards.get(&*report.pool).map(|g| g.id);
        if current == Some(report.guard) {
            self.on_breach(&report.pool, &report.breach);
            return;
        }
        let (pool, reason) = (&*report.pool, report.breach.reason.as_str());
        self.metrics.superseded_breaches.with_label_values(&[pool]).inc();
        tracing::info!(
            pool,
            reason,
            detail = %report.breach.detail,
            "guard of a superseded version of the pool breached; the version in force is not tripped"
        );
    }

    /// A guard judged its pool `failing` against its baseline: trip it as
    /// a breach does, with the verdict's reason as the history's cause.
    pub fn on_failing(&self, pool: &str, verdict: &Verdict) {
        self.trip_by_guard(pool, verdict.evidence.rule.into(), &verdict.reason, format!("guard: {}", verdict.reason));
    }

    fn trip_by_guard(&self, pool: &str, reason: BreachReason, detail: &str, cause: String) {
        self.metrics.guard_breaches.with_label_values(&[pool, reason.as_str()]).inc();
        let mut state = self.lock();
        if state.trips.contains_key(pool) {
            return;
        }
        let Some(pc) = state.config.pool(pool) else { return };
        let before = effective(&state);
        let trip = Trip {
            reason: reason.into(),
            detail: detail.to_string(),
            revision: state.revision + 1,
            backends: backend_names(&pc.backends),
        };
        state.trips.insert(pool.to_string(), trip);
        let after = effective(&state);
        if after.splits == before.splits {
            state.trips.remove(pool);
            tracing::warn!(
                pool,
                detail,
                "guard breached, but no other pool can take this pool's traffic; its weight stays"
            );
            return;
        }
        self.metrics.rollbacks.with_label_values(&[pool, reason.as_str()]).inc();
        tracing::warn!(pool, reason = reason.as_str(), detail, "guard tripped: pool rolled back");
        self.commit(&mut state, cause);
    }

    /// Consume breach reports and judge every guard periodically (a window
    /// can cross `min_requests` on a success, which `record` does not judge);
    /// each tick also feeds every guard's judge, trips a pool newly judged
    /// `failing` against its baseline, publishes the verdicts, and moves
    /// every rollout on with its canary's verdict.
    pub async fn run_guards(self: Arc<Self>, mut breaches: tokio::sync::mpsc::UnboundedReceiver<BreachReport>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = breaches.recv() => match event {
                    Some(report) => self.on_breach_report(&report),
                    None => return,
                },
                _ = tick.tick() => {
                    let guards: Vec<Arc<PoolGuard>> = self.lock().guards.values().cloned().collect();
                    let now = tokio::time::Instant::now();
                    let mut verdicts = BTreeMap::new();
                    for guard in guards {
                        if let Some(breach) = guard.evaluate(now) {
                            self.on_breach(&guard.pool, &breach);
                        }
                        let (verdict, trips) = guard.tick(now);
                        if trips {
                            self.on_failing(&guard.pool, &verdict);
                        }
                        verdicts.insert(guard.pool.to_string(), verdict);
                    }
                    self.verdicts.send_replace(Arc::new(verdicts));
                    self.tick_rollouts(now);
                }
            }
        }
    }

    /// Move every rollout on with time and its canary's verdict, and apply
    /// what happens (one revision per route that changed).
    pub fn tick_rollouts(&self, now: tokio::time::Instant) {
        let mut state = self.lock();
        let routes: Vec<String> = state.rollouts.keys().cloned().collect();
        let mut held = false;
        for route in routes {
            let Some(pool) = state.rollouts.get(&route).map(|r| r.plan().pool.clone()) else { continue };
            let guard = state.guards.get(&pool).map(|g| g.as_ref());
            // A guard with a baseline is judged by its judge; one without, by its window.
            let judged = guard.filter(|g| g.has_baseline()).and_then(|_| self.verdict(&pool));
            let verdict = match judged {
                Some(judged) if !state.trips.contains_key(&pool) => from_judge(&judged),
                _ => guard_verdict(guard, state.trips.get(&pool), now),
            };
            let Some(rollout) = state.rollouts.get_mut(&route) else { continue };
            let events = rollout.tick(now, &verdict);
            held |= rollout.hold_left(now).is_some();
            state.rollout_verdicts.insert(route.clone(), verdict);
            if let Some(cause) = absorb(&mut state, &self.metrics, &route, &events) {
                self.commit(&mut state, cause);
            }
        }
        // Keep the hold served at the current step in the state file, so a
        // restart loses at most this much of it.
        if held && now.saturating_duration_since(state.persisted_at) >= PERSIST_HOLD_EVERY {
            self.persist(&mut state);
        }
    }

    /// An operator's command to a route's rollout. Starting, resuming,
    /// promoting or restarting hands the route back to the rollout: an
    /// admin override of its split is dropped.
    pub fn rollout_command(&self, route: &str, command: Command) -> Result<u64, AdminError> {
        let mut state = self.lock();
        find_route(&state.config, route)?;
        let now = tokio::time::Instant::now();
        let rollout = state
            .rollouts
            .get_mut(route)
            .ok_or_else(|| AdminError::NotFound(format!("route \"{route}\" has no rollout")))?;
        let events = rollout.command(command, now).map_err(|e| AdminError::Conflict(e.to_string()))?;
        if matches!(command, Command::Start | Command::Resume | Command::Promote | Command::Restart) {
            state.overrides.remove(route);
        }
        let cause = absorb(&mut state, &self.metrics, route, &events)
            .unwrap_or_else(|| format!("route {route}: rollout {command:?}").to_lowercase());
        Ok(self.commit(&mut state, format!("admin: {cause}")))
    }

    /// Every route's rollout, for `GET /rollouts`.
    pub fn rollouts(&self) -> Vec<RolloutView> {
        let state = self.lock();
        let now = tokio::time::Instant::now();
        state
            .rollouts
            .iter()
            .map(|(route, rollout)| {
                let verdict = state.rollout_verdicts.get(route).cloned().unwrap_or(RolloutVerdict::Inconclusive);
                RolloutView::of(route, rollout, &verdict, now)
            })
            .collect()
    }

    /// Rollouts after a reload: dropped with their plan, created with a new
    /// one, replanned when edited, restarted when the canary has new
    /// backends. Returns the history causes.
    fn reload_rollouts(&self, state: &mut State, old: &Config, config: &Config) -> Vec<String> {
        let now = tokio::time::Instant::now();
        state.rollouts.retain(|route, _| config.routes.iter().any(|r| r.name == *route && r.rollout.is_some()));
        state.rollout_verdicts.retain(|route, _| config.routes.iter().any(|r| r.name == *route && r.rollout.is_some()));
        let mut causes = Vec::new();
        for rc in &config.routes {
            let Some(plan) = rc.rollout.clone() else { continue };
            let new_backends = config.pool(&plan.pool).map(|pc| pc.backends.clone());
            let old_backends = old.pool(&plan.pool).map(|pc| pc.backends.clone());
            let events = match state.rollouts.get_mut(&rc.name) {
                None => {
                    let (rollout, events) = Rollout::new(plan, now);
                    state.rollouts.insert(rc.name.clone(), rollout);
                    events
                }
                Some(rollout) => {
                    let same_pool = rollout.plan().pool == plan.pool;
                    let mut events = Vec::new();
                    if *rollout.plan() != plan {
                        events.extend(rollout.replan(plan, now));
                    }
                    if !same_pool || new_backends != old_backends {
                        events.extend(rollout.new_version(now));
                    }
                    events
                }
            };
            causes.extend(absorb(state, &self.metrics, &rc.name, &events));
        }
        causes
    }

    /// Recompute effective weights, publish a new snapshot and record the
    /// revision. Returns the new revision.
    fn commit(&self, state: &mut State, cause: String) -> u64 {
        let effective = effective(state);
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
        let revision = Revision {
            revision: state.revision,
            time: rfc3339(SystemTime::now()),
            cause,
            splits: effective.splits.clone(),
        };
        history::push(&mut state.history, revision);
    }

    /// Write overrides, trips, history and rollouts to `state_file`, if set.
    fn persist(&self, state: &mut State) {
        let Some(path) = &state.config.admin.state_file else { return };
        let now = tokio::time::Instant::now();
        state.persisted_at = now;
        let rollouts = state
            .rollouts
            .iter()
            .map(|(route, rollout)| {
                let backends =
                    state.config.pool(&rollout.plan().pool).map(|pc| backend_names(&pc.backends)).unwrap_or_default();
                (route.clone(), SavedRollout::of(&rollout.save(now), backends))
            })
            .collect();
        history::save(path, state.revision, &state.overrides, &state.trips, &state.history, rollouts);
    }

    /// Stop sending to `backend` and let its in-flight requests finish.
    fn drain(&self, state: &mut State, backend: Arc<Backend>, timeout: Duration) {
        drain::start(backend.clone(), timeout, self.metrics.clone());
        state.draining.retain(|b| b.in_flight() > 0);
        state.draining.push(backend);
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
            verdicts: self.verdicts.borrow().clone(),
        }
    }

    /// The latest verdict on guarded pool `pool` (computed every 250 ms);
    /// `None` for a pool without a guard, or before the first tick.
    pub fn verdict(&self, pool: &str) -> Option<crate::judge::Verdict> {
        self.verdicts.borrow().get(pool).cloned()
    }

    /// Every guarded pool's verdict, updated each 250 ms tick: `borrow()`
    /// for the latest, `changed().await` to wait for the next tick's.
    pub fn watch_verdicts(&self) -> tokio::sync::watch::Receiver<Verdicts> {
        self.verdicts.subscribe()
    }

    /// The history, newest first.
    pub fn history(&self) -> Vec<Revision> {
        self.lock().history.iter().rev().cloned().collect()
    }

    /// Set the gauges that mirror state, then render `/metrics`.
    pub fn render_metrics(&self) -> Vec<u8> {
        let snapshot = self.proxy.snapshot();
        let tripped: Vec<String> = self.lock().trips.keys().cloned().collect();
        let backend = |pool: &str, b: &Backend, draining: bool| BackendGauges {
            pool: pool.to_string(),
            addr: b.addr.to_string(),
            in_flight: b.in_flight(),
            healthy: b.is_eligible(),
            draining,
            weight_factor: 1.0,
        };
        let mut pools = Vec::with_capacity(snapshot.pools.len());
        let mut backends = Vec::new();
        for pool in &snapshot.pools {
            pools.push((pool.name.to_string(), tripped.contains(&pool.name.to_string())));
            backends.extend(
                pool.backends
                    .iter()
                    .map(|b| BackendGauges { weight_factor: pool.share_factor(b), ..backend(&pool.name, b, false) }),
            );
        }
        backends.extend(self.draining().iter().map(|b| backend(&b.pool, b, true)));
        let gauges = StateGauges {
            guarded: snapshot.config.pools.iter().map(|p| (p.name.clone(), p.guard.is_some())).collect(),
            weights: snapshot
                .routes
                .iter()
                .flat_map(|r| {
                    r.targets.iter().zip(r.split.weights()).map(|(p, w)| (r.name.to_string(), p.name.to_string(), *w))
                })
                .collect(),
            tripped: pools,
            backends,
            verdicts: {
                let verdicts = self.verdicts.borrow().clone();
                snapshot
                    .config
                    .pools
                    .iter()
                    .filter(|p| p.guard.is_some())
                    .map(|p| {
                        let kind = verdicts.get(&p.name).map_or(VerdictKind::Inconclusive, |v| v.kind);
                        (p.name.clone(), kind.as_str())
                    })
                    .collect()
            },
        };
        self.metrics.show_state(&gauges);
        self.show_rollouts();
        self.metrics.render()
    }

    /// Set the rollout gauges from the rollouts' state.
    fn show_rollouts(&self) {
        let state = self.lock();
        // Routes whose rollout a reload removed lose their series.
        self.metrics.rollout_step.reset();
        self.metrics.rollout_weight.reset();
        self.metrics.rollout_state.reset();
        for (route, rollout) in &state.rollouts {
            let step = match rollout.state() {
                RolloutState::Progressing { step }
                | RolloutState::Paused { step, .. }
                | RolloutState::Aborted { step, .. } => step + 1,
                RolloutState::Promoted { .. } => rollout.plan().steps.len(),
                RolloutState::Idle => 0,
            };
            self.metrics.rollout_step.with_label_values(&[route]).set(i64::try_from(step).unwrap_or(i64::MAX));
            self.metrics.rollout_weight.with_label_values(&[route]).set(i64::from(rollout.canary_share().unwrap_or(0)));
            for name in RolloutState::NAMES {
                self.metrics
                    .rollout_state
                    .with_label_values(&[route, name])
                    .set(i64::from(rollout.state().name() == name));
            }
            for reason in ["failing", "operator", "switchback", "bake"] {
                let _ = self.metrics.rollout_aborts.with_label_values(&[route, reason]);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // State is only changed by whole assignments under the lock; a panic
        // elsewhere must not stop reloads and switchbacks: recover it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The judge's verdict as a rollout takes it.
fn from_judge(verdict: &Verdict) -> RolloutVerdict {
    match verdict.kind {
        crate::judge::VerdictKind::Healthy => RolloutVerdict::Healthy,
        crate::judge::VerdictKind::Inconclusive => RolloutVerdict::Inconclusive,
        crate::judge::VerdictKind::Failing => RolloutVerdict::Failing(verdict.reason.clone()),
    }
}

/// How often a rollout holding a step writes its served hold to the state file.
const PERSIST_HOLD_EVERY: Duration = Duration::from_secs(2);

/// Every route's effective weights in `state`.
fn effective(state: &State) -> Effective {
    let shares = state
        .rollouts
        .iter()
        .filter_map(|(route, r)| Some((route.clone(), (r.plan().pool.clone(), r.canary_share()?))))
        .collect();
    all_effective(&state.config, &state.overrides, &state.trips, &state.history, &shares)
}

/// Apply what a rollout's `events` mean beyond its weights: an abort trips
/// the canary (today's rollback) and is counted; a start clears the
/// canary's trip and starts its guard window afresh, since the operator or
/// a new version asks for a new judgement. Returns the history's cause.
fn absorb(state: &mut State, metrics: &Metrics, route: &str, events: &[Event]) -> Option<String> {
    let pool = state.rollouts.get(route)?.plan().pool.clone();
    for event in events {
        match event {
            Event::Started => {
                if state.trips.remove(&pool).is_some() {
                    tracing::info!(route, pool, "rollout started: the canary's trip is cleared");
                }
                if let Some(guard) = state.guards.get(&pool) {
                    guard.reset();
                }
                state.rollout_verdicts.insert(route.to_string(), RolloutVerdict::Inconclusive);
            }
            Event::Aborted(reason) | Event::BakeFailed(reason) => {
                if let Some(class) = abort_class(event) {
                    metrics.rollout_aborts.with_label_values(&[route, class]).inc();
                }
                tracing::warn!(route, pool, reason, "rollout aborted");
                if !state.trips.contains_key(&pool) {
                    if let Some(pc) = state.config.pool(&pool) {
                        let trip = Trip {
                            reason: TripReason::Rollout,
                            detail: format!("rollout of route {route} aborted: {reason}"),
                            revision: state.revision + 1,
                            backends: backend_names(&pc.backends),
                        };
                        state.trips.insert(pool.clone(), trip);
                        metrics.rollbacks.with_label_values(&[&pool, "rollout"]).inc();
                    }
                }
            }
            _ => {}
        }
    }
    rollout_cause(route, events)
}

fn describe(split: &[(String, u32)]) -> String {
    let parts: Vec<String> = split.iter().map(|(p, w)| format!("{p}={w}")).collect();
    parts.join(" ")
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
