//! The writer's side of sharing state with other replicas: after each
//! commit it hands the shared units that changed to its [`DecisionSink`];
//! it applies the units other replicas decided; and it lets whoever runs
//! the fleet say whether this replica makes automatic decisions and which
//! verdicts they act on.
//!
//! Everything here is driven from outside (`crate::fleet`), through plain
//! data of [`super::shared`], so the writer depends on no store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::rollouts::SavedRollout;
use super::shared::{
    changed, Change, Decision, DecisionSink, Maker, Origin, PoolShared, RouteShared, SharedKey, SharedValue, Units,
};
use super::state::{backend_names, Trip};
use super::writer::{Control, State};
use super::Verdicts;
use crate::rollout::{Rollout, Saved};

impl Control {
    /// Hand every later decision to `sink` (once, at startup; a second
    /// sink is ignored).
    pub fn share_decisions_with(&self, sink: Arc<dyn DecisionSink>) {
        let mut state = self.lock();
        state.shared = units(&state);
        if self.sink.set(sink).is_err() {
            tracing::warn!("a second decision sink is ignored");
        }
    }

    /// Whether this replica makes automatic decisions (guard trips,
    /// rollout steps): alone, as the fleet's leader, or cut off from it.
    pub fn decides_automatically(&self) -> bool {
        self.automatic.load(Ordering::Relaxed)
    }

    /// Let this replica make automatic decisions, or leave them to the
    /// fleet's leader (its verdicts are still computed and shown).
    pub fn set_automatic(&self, on: bool) {
        self.automatic.store(on, Ordering::Relaxed);
    }

    /// The seam for fleet-wide judgement: from now on, the automatic
    /// decisions (trips of a pool newly judged failing, rollout steps) act
    /// on the verdicts `feed` publishes, per pool, instead of this
    /// replica's own. Local verdicts are still computed and shown in
    /// `/status`; request-path breaches still trip at once.
    pub fn act_on_verdicts_from(&self, feed: tokio::sync::watch::Receiver<Verdicts>) {
        if let Ok(mut slot) = self.verdict_feed.lock() {
            *slot = Some(feed);
        }
    }

    /// The verdicts automatic decisions act on: the feed's when one is
    /// set, else this replica's own.
    pub(super) fn acting_verdicts(&self) -> Verdicts {
        match self.verdict_feed.lock().ok().and_then(|f| f.as_ref().map(|f| f.borrow().clone())) {
            Some(verdicts) => verdicts,
            None => self.verdicts.borrow().clone(),
        }
    }

    /// Whether the verdict feed of [`Control::act_on_verdicts_from`] is set.
    pub(super) fn has_verdict_feed(&self) -> bool {
        self.verdict_feed.lock().map(|f| f.is_some()).unwrap_or(false)
    }

    /// Called at the end of every commit: hand what changed of the shared
    /// units to the sink, as a decision when this replica made it.
    pub(super) fn share(&self, state: &mut State) {
        let origin = std::mem::take(&mut state.origin);
        let Some(sink) = self.sink.get() else { return };
        let now = units(state);
        let maker = match origin {
            Origin::Operator => Some(Maker::Operator),
            Origin::Automatic => Some(Maker::Automatic),
            Origin::Remote | Origin::File => None,
        };
        let decision = maker.and_then(|maker| {
            let changes: Vec<Change> = changed(&state.shared, &now)
                .into_iter()
                .map(|(key, value)| Change {
                    key: key.clone(),
                    value: value.clone(),
                    based_on: state.versions.get(key).copied().unwrap_or(0),
                })
                .collect();
            let cause = state.history.back().map(|r| r.cause.clone()).unwrap_or_default();
            (!changes.is_empty()).then_some(Decision { revision: state.revision, cause, maker, changes })
        });
        state.shared = now;
        sink.committed(state.revision, decision);
    }

    /// Apply units decided by another replica, each with the store's
    /// version of it; a unit older than the one applied is skipped, and so
    /// is one of the same version (an echo of this replica's own write)
    /// unless `exact`: then the store's value replaces whatever this
    /// replica holds (a lost race must leave no part of the losing change).
    /// One revision for all of them, with `cause`. Returns whether anything
    /// changed.
    pub fn apply_shared(&self, units: Vec<(SharedKey, SharedValue, i64)>, cause: &str, exact: bool) -> bool {
        let mut state = self.lock();
        let now = tokio::time::Instant::now();
        let mut changed = false;
        for (key, value, version) in units {
            if state.versions.get(&key).is_some_and(|v| *v > version || (*v == version && !exact)) {
                continue;
            }
            state.versions.insert(key.clone(), version);
            changed |= match (key, value) {
                (SharedKey::Route(route), SharedValue::Route(value)) => apply_route(&mut state, &route, value, now),
                (SharedKey::Pool(pool), SharedValue::Pool(value)) => apply_pool(&mut state, &pool, value),
                (key, _) => {
                    tracing::warn!(?key, "a shared unit of the wrong kind is ignored");
                    false
                }
            };
        }
        if !changed {
            return false;
        }
        state.origin = Origin::Remote;
        self.commit(&mut state, cause.to_string());
        true
    }

    /// The store took units of a decision: `(key, based_on, version)`. The
    /// writer bases its next change of each on `version`, unless a newer
    /// one was applied meanwhile.
    pub fn shared_written(&self, written: &[(SharedKey, i64, i64)]) {
        let mut state = self.lock();
        for (key, based_on, version) in written {
            let current = state.versions.get(key).copied().unwrap_or(0);
            if current == *based_on || current < *version {
                state.versions.insert(key.clone(), *version);
            }
        }
    }

    /// The store's version of `key` this replica's state is based on.
    pub fn shared_version(&self, key: &SharedKey) -> i64 {
        self.lock().versions.get(key).copied().unwrap_or(0)
    }

    /// An automatic trip lost a race (another replica changed the pool
    /// first, e.g. reset it): trip it again on the state now in force, if
    /// it is still untripped and still the same version.
    pub fn reapply_trip(&self, pool: &str, trip: &Trip) -> bool {
        let mut state = self.lock();
        if state.trips.contains_key(pool) {
            return false;
        }
        let Some(pc) = state.config.pool(pool) else { return false };
        if backend_names(&pc.backends) != trip.backends {
            return false;
        }
        let trip = Trip { revision: state.revision + 1, ..trip.clone() };
        state.trips.insert(pool.to_string(), trip.clone());
        state.origin = Origin::Automatic;
        tracing::warn!(pool, "trip re-applied after another replica changed the pool at the same time");
        self.commit(&mut state, format!("guard: pool {pool} tripped again after a concurrent change: {}", trip.detail));
        true
    }

    /// A digest of the config file in force, to tell replicas that run
    /// different files apart (FNV-1a of the text; 0 without one).
    pub fn config_digest(&self) -> u64 {
        let state = self.lock();
        let text = state.applied_text.as_deref().unwrap_or("");
        text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    }
}

/// The shared units of `state`: one per route of the config, one per pool.
/// A rollout's served hold is left out: it changes with every tick and is
/// no decision.
pub(super) fn units(state: &State) -> Units {
    let mut units = Units::new();
    for rc in &state.config.routes {
        let rollout = state.rollouts.get(&rc.name).map(|rollout| {
            let backends =
                state.config.pool(&rollout.plan().pool).map(|pc| backend_names(&pc.backends)).unwrap_or_default();
            let saved = Saved { state: rollout.state().clone(), served: Duration::ZERO };
            SavedRollout::of(&saved, backends)
        });
        let value = RouteShared { override_split: state.overrides.get(&rc.name).cloned(), rollout };
        units.insert(SharedKey::Route(rc.name.clone()), SharedValue::Route(value));
    }
    for pc in &state.config.pools {
        let value = PoolShared { trip: state.trips.get(&pc.name).cloned() };
        units.insert(SharedKey::Pool(pc.name.clone()), SharedValue::Pool(value));
    }
    units
}

fn apply_route(state: &mut State, route: &str, value: RouteShared, now: tokio::time::Instant) -> bool {
    let Some(rc) = state.config.routes.iter().find(|r| r.name == route).cloned() else { return false };
    let mut changed = false;
    match value.override_split {
        Some(ov) => {
            let pools = |w: &[(String, u32)]| w.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
            if pools(&ov.split) == pools(&rc.split) {
                if state.overrides.get(route) != Some(&ov) {
                    state.overrides.insert(route.to_string(), ov);
                    changed = true;
                }
            } else {
                tracing::warn!(
                    route,
                    "another replica's override names other pools than this replica's config; not applied"
                );
            }
        }
        None => changed |= state.overrides.remove(route).is_some(),
    }
    if let (Some(saved), Some(rollout)) = (value.rollout.and_then(|r| r.saved()), state.rollouts.get_mut(route)) {
        if *rollout.state() != saved.state {
            *rollout = Rollout::restore(rollout.plan().clone(), saved, now);
            changed = true;
        }
    }
    changed
}

fn apply_pool(state: &mut State, pool: &str, value: PoolShared) -> bool {
    let Some(pc) = state.config.pool(pool) else { return false };
    match value.trip {
        Some(trip) if backend_names(&pc.backends) == trip.backends => {
            if state.trips.get(pool) == Some(&trip) {
                return false;
            }
            tracing::warn!(pool, detail = %trip.detail, "pool tripped by the fleet");
            state.trips.insert(pool.to_string(), trip);
            true
        }
        Some(_) => {
            tracing::warn!(
                pool,
                "another replica's trip is of other backends of this pool (a different config); not applied"
            );
            false
        }
        None => {
            if let Some(guard) = state.guards.get(pool) {
                guard.reset();
            }
            state.trips.remove(pool).is_some()
        }
    }
}
