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
use super::rollouts::SavedRollout;
use super::state::{backend_names, same_backends, Override, Revision, Trip};
use super::weights::{all_effective, Effective};
use super::{drain, history};
use crate::config::restart::FixedAtStart;
use crate::config::{self, Config, ConfigError, RouteConfig};
use crate::exchange::BreachSender;
use crate::guard::PoolGuard;
use crate::judge::VerdictKind;
use crate::metrics::{BackendGauges, Metrics, StateGauges};
use crate::pool::Backend;
use crate::proxy::Proxy;
use crate::rollout::{Rollout, Saved, State as RolloutState, Verdict as RolloutVerdict};
use crate::snapshot::{BuildInputs, Snapshot};
use crate::timestamp::rfc3339;

/// The owner of state changes.
#[derive(Debug)]
pub struct Control {
    pub(super) proxy: Arc<Proxy>,
    pub(super) metrics: Metrics,
    pub(super) config_path: PathBuf,
    pub(super) state: Mutex<State>,
    /// Listener settings the process was started with; a reload cannot move them.
    pub(super) started: FixedAtStart,
    pub(super) breaches: Option<BreachSender>,
    /// Active health checks, kept in step with every published snapshot.
    pub(super) health: crate::health::HealthChecks,
    /// Every guarded pool's verdict, published each 250 ms tick.
    pub(super) verdicts: tokio::sync::watch::Sender<Verdicts>,
    /// Where decisions go in fleet mode ([`super::sharing`]).
    pub(super) sink: std::sync::OnceLock<Arc<dyn super::shared::DecisionSink>>,
    /// Whether this replica makes automatic decisions (alone: always).
    pub(super) automatic: std::sync::atomic::AtomicBool,
    /// Verdicts to act on instead of this replica's own (fleet judgement).
    pub(super) verdict_feed: Mutex<Option<tokio::sync::watch::Receiver<Verdicts>>>,
    /// Ticks the guards in place of their own tick (a fleet replica's
    /// evidence tap), once set.
    pub(super) tick_tap: std::sync::OnceLock<Arc<dyn crate::guard::TickTap>>,
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) config: Arc<Config>,
    pub(super) revision: u64,
    /// The file content that built the running snapshot, if it came from the file.
    pub(super) applied_text: Option<String>,
    /// The last file content a watched reload refused, and why: the watch
    /// (and its polling fallback, every couple of seconds) does not refuse
    /// the same content again, so a broken file is reported once.
    pub(super) rejected: Option<(String, ConfigError)>,
    pub(super) last_reload: Option<ReloadRecord>,
    /// Backends removed by a reload and still finishing requests.
    pub(super) draining: Vec<Arc<Backend>>,
    pub(super) guards: HashMap<String, Arc<PoolGuard>>,
    pub(super) overrides: BTreeMap<String, Override>,
    pub(super) trips: BTreeMap<String, Trip>,
    /// When an operator last reset each pool (Unix milliseconds), here or
    /// on another replica: part of the pool's shared unit.
    pub(super) resets: BTreeMap<String, u64>,
    /// Oldest first.
    pub(super) history: VecDeque<Revision>,
    /// Progressive rollouts by route.
    pub(super) rollouts: BTreeMap<String, Rollout>,
    /// Each rollout's latest verdict, for `/rollouts`.
    pub(super) rollout_verdicts: BTreeMap<String, RolloutVerdict>,
    /// When the state file was last written, so that a rollout's served hold
    /// is saved now and then between changes.
    pub(super) persisted_at: tokio::time::Instant,
    /// Where the change being committed comes from (reset by each commit).
    pub(super) origin: super::shared::Origin,
    /// The shared units as last handed to the sink or applied.
    pub(super) shared: super::shared::Units,
    /// The store's version of each shared unit this state is based on.
    pub(super) versions: BTreeMap<super::shared::SharedKey, i64>,
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
            rejected: None,
            last_reload: None,
            draining: Vec::new(),
            guards: HashMap::new(),
            overrides: BTreeMap::new(),
            trips: BTreeMap::new(),
            resets: BTreeMap::new(),
            history: VecDeque::new(),
            rollouts: BTreeMap::new(),
            rollout_verdicts: BTreeMap::new(),
            persisted_at: tokio::time::Instant::now(),
            origin: Default::default(),
            shared: Default::default(),
            versions: BTreeMap::new(),
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
        sync_guards(&mut state.guards, &config, None, breaches.as_ref(), &metrics);
        let now = tokio::time::Instant::now();
        let mut started = Vec::new();
        for rc in &config.routes {
            let Some(plan) = rc.rollout.clone() else { continue };
            let backends = config.pool(&plan.pool).map(|pc| backend_names(&pc.backends)).unwrap_or_default();
            let events = match saved_rollouts.get(&rc.name).and_then(|s| Some((s.saved()?, s.backends.clone()))) {
                Some((saved, was)) => {
                    let mut rollout = Rollout::restore(plan, saved, now);
                    let events = if same_backends(&was, &backends) { Vec::new() } else { rollout.new_version(now) };
                    state.rollouts.insert(rc.name.clone(), rollout);
                    events
                }
                // A canary tripped before the restart stays tripped: a
                // restart does not undo a rollback, so its rollout is aborted.
                None if state.trips.contains_key(&plan.pool) => {
                    let reason = "the canary was tripped before the restart".to_string();
                    let saved = Saved {
                        state: RolloutState::Aborted { step: 0, reason },
                        served: Duration::ZERO,
                        judged_from: Duration::ZERO,
                    };
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
            if let Some(c) = state.absorb(&metrics, &route, &events) {
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
        let proxy =
            Arc::new(Proxy::new(snapshot, seed, metrics.client_timeouts(), metrics.client_connections_parked.clone()));
        let control = Control {
            proxy,
            metrics,
            config_path,
            started: FixedAtStart::of(&config),
            state: Mutex::new(state),
            breaches,
            health: crate::health::HealthChecks::new(),
            verdicts: tokio::sync::watch::Sender::new(Verdicts::default()),
            sink: std::sync::OnceLock::new(),
            automatic: std::sync::atomic::AtomicBool::new(true),
            verdict_feed: Mutex::new(None),
            tick_tap: std::sync::OnceLock::new(),
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
        if cause == ReloadCause::Watch {
            if let Some((_, err)) = state.rejected.as_ref().filter(|(refused, _)| *refused == text) {
                tracing::debug!("config unchanged since it was refused");
                return Err(err.clone());
            }
        }
        let config = match config::parse(&self.config_path, &text) {
            Ok(config) => config,
            Err(err) => {
                state.rejected = Some((text, err.clone()));
                return Err(self.record_failure(&mut state, err, cause));
            }
        };
        state.rejected = None;
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
                Some(pc) if same_backends(&backend_names(&pc.backends), &trip.backends) => {
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
        sync_guards(&mut state.guards, &config, Some(&old), self.breaches.as_ref(), &self.metrics);
        state.config = config.clone();
        state.applied_text = Some(text);
        let mut why = format!("reload ({})", cause.as_str());
        for c in self.reload_rollouts(&mut state, &old, &config) {
            why = format!("{why}; {c}");
        }
        state.origin = super::shared::Origin::File;
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

    /// Recompute effective weights, publish a new snapshot and record the
    /// revision. Returns the new revision.
    pub(super) fn commit(&self, state: &mut State, cause: String) -> u64 {
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
        self.share(state);
        state.revision
    }

    pub(super) fn record_revision(&self, state: &mut State, cause: String, effective: &Effective) {
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
    pub(super) fn persist(&self, state: &mut State) {
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
    pub(super) fn drain(&self, state: &mut State, backend: Arc<Backend>, timeout: Duration) {
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
            warming_excluded: state.guards.iter().map(|(p, g)| (p.clone(), g.warming_excluded())).collect(),
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // State is only changed by whole assignments under the lock; a panic
        // elsewhere must not stop reloads and switchbacks: recover it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every route's effective weights in `state`.
pub(super) fn effective(state: &State) -> Effective {
    let shares = state
        .rollouts
        .iter()
        .filter_map(|(route, r)| Some((route.clone(), (r.plan().pool.clone(), r.canary_share()?))))
        .collect();
    all_effective(&state.config, &state.overrides, &state.trips, &state.history, &shares)
}

pub(super) fn describe(split: &[(String, u32)]) -> String {
    let parts: Vec<String> = split.iter().map(|(p, w)| format!("{p}={w}")).collect();
    parts.join(" ")
}

pub(super) fn find_route<'a>(config: &'a Config, route: &str) -> Result<&'a RouteConfig, AdminError> {
    config.routes.iter().find(|r| r.name == route).ok_or_else(|| AdminError::NotFound(format!("no route \"{route}\"")))
}

/// Keep guards whose pool, thresholds and backends are unchanged (a reload
/// keeps their windows); create the others afresh.
pub(super) fn sync_guards(
    guards: &mut HashMap<String, Arc<PoolGuard>>,
    config: &Config,
    old: Option<&Config>,
    breaches: Option<&BreachSender>,
    metrics: &Metrics,
) {
    let mut next = HashMap::new();
    for pc in &config.pools {
        let Some(gc) = &pc.guard else { continue };
        let same_version = old
            .and_then(|o| o.pool(&pc.name))
            .is_some_and(|op| backend_names(&op.backends) == backend_names(&pc.backends));
        match guards.remove(&pc.name) {
            Some(g) if g.config == *gc && (same_version || old.is_none()) => {
                next.insert(pc.name.clone(), g);
            }
            _ => {
                let warming = metrics.guard_warming_excluded.with_label_values(&[&pc.name]);
                let guard = PoolGuard::new(Arc::from(pc.name.as_str()), gc.clone(), breaches.cloned())
                    .with_warming_counter(warming);
                next.insert(pc.name.clone(), Arc::new(guard));
            }
        }
    }
    *guards = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broken file is refused and reported once by the watch, however
    /// often the watch (or its polling fallback) looks at it again; an
    /// operator's reload reports it every time, and new content is read.
    #[tokio::test]
    async fn the_watch_reports_a_refused_file_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cutover.toml");
        let good = "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\n";
        std::fs::write(&path, good).expect("write");
        let config = crate::config::parse(&path, good).expect("valid");
        let control = Control::start(config, path.clone(), Some(good.to_string()), 1, Metrics::new(), None);
        let errors = || control.metrics().config_reloads.with_label_values(&["error"]).get();
        std::fs::write(&path, "[pools.blue\n").expect("write");
        for _ in 0..3 {
            assert!(control.reload(ReloadCause::Watch).is_err());
        }
        assert_eq!(errors(), 1, "refused and reported once");
        assert!(control.reload(ReloadCause::Admin).is_err());
        assert_eq!(errors(), 2, "an operator's reload reports it again");
        std::fs::write(&path, "[pools.blue]\nbackends = []\n").expect("write");
        assert!(control.reload(ReloadCause::Watch).is_err());
        assert_eq!(errors(), 3, "new content is read");
    }
}
