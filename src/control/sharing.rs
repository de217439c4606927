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
use std::time::{Duration, SystemTime};

use super::rollouts::SavedRollout;
use super::shared::{
    changed, Change, Decision, DecisionSink, Maker, Origin, PoolShared, RouteShared, SharedKey, SharedValue, Units,
};
use super::state::{backend_names, same_backends, Trip};
use super::writer::{Control, State};
use super::Verdicts;
use crate::guard::TickTap;
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

    /// Tick every guard through `tap` from now on (once, at startup; a
    /// second tap is ignored): the judges still take every count, and the
    /// tap keeps a copy (a fleet replica's published evidence).
    pub fn tap_ticks_with(&self, tap: Arc<dyn crate::guard::TickTap>) {
        if self.tick_tap.set(tap).is_err() {
            tracing::warn!("a second guard tap is ignored");
        }
    }

    /// Every guard of the running config, by pool.
    pub fn guards(&self) -> Vec<Arc<crate::guard::PoolGuard>> {
        self.lock().guards.values().cloned().collect()
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
                (SharedKey::Pool(pool), SharedValue::Pool(value)) => {
                    apply_pool(&mut state, &pool, value, self.tick_tap.get())
                }
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
        if !same_backends(&backend_names(&pc.backends), &trip.backends) {
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
        crate::split::fnv1a(text.as_bytes())
    }
}

/// The shared units of `state`: one per route of the config, one per pool.
/// A rollout's served hold is left out (it changes with every tick and is
/// no decision); when its current step began is in (wall-clock time, as
/// last shared while the step is the same), so that a replica that leads
/// next, or joins, continues the step's hold instead of starting it again.
pub(super) fn units(state: &State) -> Units {
    let mut units = Units::new();
    let (wall, now) = (unix_ms(SystemTime::now()), tokio::time::Instant::now());
    for rc in &state.config.routes {
        let rollout = state.rollouts.get(&rc.name).map(|rollout| {
            let backends =
                state.config.pool(&rollout.plan().pool).map(|pc| backend_names(&pc.backends)).unwrap_or_default();
            let saved =
                Saved { state: rollout.state().clone(), served: Duration::ZERO, judged_from: rollout.judged_from() };
            SavedRollout::of(&saved, backends).began_at(step_began(state, &rc.name, rollout, wall, now))
        });
        let value = RouteShared { override_split: state.overrides.get(&rc.name).cloned(), rollout };
        units.insert(SharedKey::Route(rc.name.clone()), SharedValue::Route(value));
    }
    for pc in &state.config.pools {
        let value =
            PoolShared { trip: state.trips.get(&pc.name).cloned(), reset_ms: state.resets.get(&pc.name).copied() };
        units.insert(SharedKey::Pool(pc.name.clone()), SharedValue::Pool(value));
    }
    units
}

/// How far apart two readings of when a step began may be and still name
/// the same beginning: the wall clock and the monotonic one drift apart by
/// less, and a step that starts again moves it by more.
const SAME_BEGINNING: Duration = Duration::from_secs(1);

/// When `rollout`'s current step began, in Unix milliseconds: as last
/// shared while the step is the same one, so the unit does not change from
/// one commit to the next; else from how long the step has lasted.
fn step_began(state: &State, route: &str, rollout: &Rollout, wall: u64, now: tokio::time::Instant) -> u64 {
    let fresh = wall.saturating_sub(millis(rollout.in_state_for(now)));
    let shared = match state.shared.get(&SharedKey::Route(route.to_string())) {
        Some(SharedValue::Route(unit)) => unit.rollout.as_ref(),
        _ => None,
    };
    shared
        .filter(|s| s.saved().is_some_and(|saved| saved.state == *rollout.state()))
        .and_then(SavedRollout::began_ms)
        .filter(|began| began.abs_diff(fresh) < millis(SAME_BEGINNING))
        .unwrap_or(fresh)
}

pub(super) fn unix_ms(time: SystemTime) -> u64 {
    millis(time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn apply_route(state: &mut State, route: &str, value: RouteShared, now: tokio::time::Instant) -> bool {
    let Some(rc) = state.config.routes.iter().find(|r| r.name == route).cloned() else { return false };
    let mut changed = false;
    match value.override_split {
        // An override holds while the file's split is the one it was set
        // over, as a reload and a restart here decide: one set over another
        // split is an older intent (a reload that changed the split dropped
        // it on every replica, but left it in the store) or a newer one of a
        // file this replica does not run yet.
        Some(ov) if ov.file_split != rc.split => {
            tracing::warn!(
                route,
                "another replica's override was set over another split of the route in the file; not applied"
            );
        }
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
    let Some(shared) = value.rollout else { return changed };
    // A rollout of other canary backends is another version's, as for a
    // trip and at a restart: this replica's own rollout of its version
    // stands until a replica running it decides.
    let canary = state.rollouts.get(route).and_then(|r| state.config.pool(&r.plan().pool));
    if canary.is_some_and(|pc| !same_backends(&backend_names(&pc.backends), &shared.backends)) {
        tracing::warn!(route, "another replica's rollout is of other canary backends (another version); not applied");
        return changed;
    }
    let (Some(mut saved), Some(rollout)) = (shared.saved(), state.rollouts.get_mut(route)) else { return changed };
    // The step's hold counts from when it began on the replica that
    // stepped, not from when this replica heard of it.
    if let Some(began) = shared.began_ms() {
        saved.served = Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(began));
    }
    let apart = millis(saved.served).abs_diff(millis(rollout.in_state_for(now)));
    let began_elsewhere = shared.began_ms().is_some() && apart >= millis(SAME_BEGINNING);
    if *rollout.state() != saved.state || began_elsewhere {
        *rollout = Rollout::restore(rollout.plan().clone(), saved, now);
        changed = true;
    }
    changed
}

fn apply_pool(state: &mut State, pool: &str, value: PoolShared, tap: Option<&Arc<dyn TickTap>>) -> bool {
    let Some(pc) = state.config.pool(pool) else { return false };
    // A reset made elsewhere restarts this replica's guard of the pool
    // (below, with the trip it cleared, if any) and is kept, so that what
    // this replica shares of the pool is what it applied.
    let reset = match value.reset_ms {
        Some(at) if state.resets.get(pool) != Some(&at) => {
            state.resets.insert(pool.to_string(), at);
            true
        }
        _ => false,
    };
    match value.trip {
        Some(trip) if same_backends(&backend_names(&pc.backends), &trip.backends) => {
            if state.trips.get(pool).is_some_and(|held| held.same_trip(&trip)) {
                return reset;
            }
            tracing::warn!(pool, detail = %trip.detail, "pool tripped by the fleet");
            // The trip's revision is the tripping replica's own count. Here
            // it becomes the revision this apply commits, as a trip made here
            // would: a tripped pool left serving alone falls back to this
            // replica's latest earlier split without it, found by revision.
            let trip = Trip { revision: state.revision + 1, ..trip };
            state.trips.insert(pool.to_string(), trip);
            true
        }
        Some(_) => {
            tracing::warn!(
                pool,
                "another replica's trip is of other backends of this pool (a different config); not applied"
            );
            reset
        }
        None => {
            if let Some(guard) = state.guards.get(pool) {
                guard.reset();
                if let Some(tap) = tap {
                    tap.forget(pool);
                }
            }
            state.trips.remove(pool).is_some() || reset
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::control::TripReason;
    use crate::guard::{Breach, BreachReason};

    const CONFIG: &str =
        "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.green]\nbackends = [\"127.0.0.1:9002\"]\n\
                          [[routes]]\nname = \"shop\"\nsplit = { blue = 1, green = 1 }\n";

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(u64, Option<Decision>)>>);

    impl DecisionSink for Recorder {
        fn committed(&self, revision: u64, decision: Option<Decision>) {
            self.0.lock().expect("lock").push((revision, decision));
        }
    }

    impl Recorder {
        fn last(&self) -> (u64, Option<Decision>) {
            self.0.lock().expect("lock").last().cloned().expect("a commit")
        }
    }

    fn control() -> (Arc<Control>, Arc<Recorder>) {
        let config = crate::config::parse(std::path::Path::new("t.toml"), CONFIG).expect("valid");
        let control = Control::start(config, PathBuf::new(), None, 1, crate::metrics::Metrics::new(), None);
        let recorder = Arc::new(Recorder::default());
        control.share_decisions_with(recorder.clone());
        (control, recorder)
    }

    fn trip() -> Trip {
        Trip {
            reason: TripReason::Manual,
            detail: "by hand".into(),
            revision: 9,
            backends: vec!["127.0.0.1:9002".into()],
        }
    }

    #[tokio::test]
    async fn each_commit_hands_over_the_units_it_changed_based_on_their_stored_versions() {
        let (control, recorder) = control();
        let weights = [("blue".to_string(), 0), ("green".to_string(), 5)].into_iter().collect();
        let revision = control.set_override("shop", &weights).expect("set");
        let (at, decision) = recorder.last();
        let decision = decision.expect("a decision");
        assert_eq!((at, decision.revision, decision.maker), (revision, revision, Maker::Operator));
        assert_eq!(decision.changes.len(), 1, "{decision:?}");
        assert_eq!((&decision.changes[0].key, decision.changes[0].based_on), (&SharedKey::Route("shop".into()), 0));
        assert!(decision.cause.starts_with("admin: set split of route shop"), "{}", decision.cause);

        // The store took it at version 12: the next change builds on that.
        control.shared_written(&[(SharedKey::Route("shop".into()), 0, 12)]);
        control.clear_override("shop").expect("clear");
        let decision = recorder.last().1.expect("a decision");
        assert_eq!(decision.changes[0].based_on, 12);

        control.trip("green").expect("trip");
        let decision = recorder.last().1.expect("a decision");
        assert_eq!(decision.changes.len(), 1);
        assert_eq!(decision.changes[0].key, SharedKey::Pool("green".into()));
    }

    #[tokio::test]
    async fn another_replicas_units_apply_once_and_are_not_handed_back() {
        let (control, recorder) = control();
        let green = SharedKey::Pool("green".into());
        let tripped = SharedValue::Pool(PoolShared { trip: Some(trip()), reset_ms: None });
        assert!(control.apply_shared(vec![(green.clone(), tripped.clone(), 5)], "fleet: x (b)", false));
        assert!(control.view().trips.contains_key("green"));
        assert_eq!(recorder.last().1, None, "an applied unit is no decision of this replica");
        assert_eq!(control.history()[0].cause, "fleet: x (b)");
        // The echo of the same version changes nothing.
        let untripped = SharedValue::Pool(PoolShared { trip: None, reset_ms: None });
        assert!(!control.apply_shared(vec![(green.clone(), untripped.clone(), 5)], "echo", false));
        assert!(control.view().trips.contains_key("green"));
        // A lost race applies the store's value even at the same version.
        assert!(control.apply_shared(vec![(green.clone(), untripped, 5)], "lost", true));
        assert!(!control.view().trips.contains_key("green"));
        // A trip of other backends (another version of the pool) is not applied.
        let other = Trip { backends: vec!["127.0.0.1:1".into()], ..trip() };
        let value = SharedValue::Pool(PoolShared { trip: Some(other), reset_ms: None });
        assert!(!control.apply_shared(vec![(green.clone(), value, 6)], "other version", false));
        // An override of other pools than the route's is not applied.
        let ov = crate::control::Override { split: vec![("red".into(), 1)], file_split: vec![("red".into(), 1)] };
        let value = SharedValue::Route(RouteShared { override_split: Some(ov), rollout: None });
        assert!(!control.apply_shared(vec![(SharedKey::Route("shop".into()), value, 7)], "other pools", false));
        assert!(control.view().overrides.is_empty());
    }

    /// A trip another replica made carries that replica's revision count,
    /// which says nothing of this replica's history: applied here, it is
    /// numbered as this replica's own, so that a pool it leaves serving
    /// alone falls back to this replica's latest earlier split without it.
    #[tokio::test]
    async fn a_shared_trip_is_numbered_in_this_replicas_history() {
        let (control, _recorder) = control();
        let split =
            |blue: u32, green: u32| [("blue".to_string(), blue), ("green".to_string(), green)].into_iter().collect();
        control.set_override("shop", &split(1, 0)).expect("blue alone");
        let green_alone = control.set_override("shop", &split(0, 1)).expect("green alone");
        // Tripped on a replica that had made one revision: 1 is below
        // every split of this replica's but its first.
        let tripped = Trip { revision: 1, ..trip() };
        let value = SharedValue::Pool(PoolShared { trip: Some(tripped.clone()), reset_ms: None });
        assert!(control.apply_shared(vec![(SharedKey::Pool("green".into()), value.clone(), 5)], "fleet: trip", false));
        let held = control.view().trips.get("green").cloned().expect("tripped");
        assert_eq!(held.revision, green_alone + 1, "the revision this apply committed");
        let now = &control.history()[0];
        assert_eq!(now.splits.get("shop"), Some(&vec![("blue".to_string(), 1), ("green".to_string(), 0)]), "{now:?}");
        // The same trip again, as a lost race re-reads it, changes nothing.
        assert!(!control.apply_shared(vec![(SharedKey::Pool("green".into()), value, 5)], "lost", true));
    }

    #[tokio::test]
    async fn a_follower_judges_but_does_not_trip_and_a_lost_trip_is_made_again() {
        let (control, recorder) = control();
        control.set_automatic(false);
        let breach = Breach { reason: BreachReason::ErrorRate, detail: "error rate 0.5 > 0.1".into() };
        control.on_breach("green", &breach);
        assert!(!control.view().trips.contains_key("green"), "only the leader trips");
        let breaches = control.metrics().guard_breaches.with_label_values(&["green", "error_rate"]).get();
        assert_eq!(breaches, 1, "the breach was seen");

        control.set_automatic(true);
        control.on_breach("green", &breach);
        assert!(control.view().trips.contains_key("green"));
        assert_eq!(recorder.last().1.expect("a decision").maker, Maker::Automatic);

        // Another replica reset the pool first; the trip is made again on that.
        let green = SharedKey::Pool("green".into());
        let reset = SharedValue::Pool(PoolShared { trip: None, reset_ms: None });
        assert!(control.apply_shared(vec![(green, reset, 8)], "fleet: reset (b)", true));
        assert!(control.reapply_trip("green", &trip()));
        assert!(control.view().trips.contains_key("green"));
        let decision = recorder.last().1.expect("a decision");
        assert_eq!((decision.maker, decision.changes[0].based_on), (Maker::Automatic, 8));
        assert!(!control.reapply_trip("green", &trip()), "already tripped");
    }

    /// A control whose route `shop` has a manual rollout of `green`.
    fn control_with_rollout() -> Arc<Control> {
        let text = format!(
            "{CONFIG}[routes.rollout]\npool = \"green\"\nsteps = [50, 100]\nhold = \"10s\"\nstart = \"manual\"\n"
        );
        let config = crate::config::parse(std::path::Path::new("t.toml"), &text).expect("valid");
        let control = Control::start(config, PathBuf::new(), None, 1, crate::metrics::Metrics::new(), None);
        control.share_decisions_with(Arc::new(Recorder::default()));
        control
    }

    /// An operator's reset of a pool that is not tripped still makes a
    /// revision and changes the pool's shared unit, and a replica that
    /// applies it starts its guard of the pool again, so that no replica
    /// (the leader's fleet judge least of all) keeps judging on the
    /// evidence from before the reset.
    #[tokio::test]
    async fn a_reset_without_a_trip_is_shared_and_restarts_every_guard() {
        let text = format!("{CONFIG}[pools.green.guard]\nmax_error_rate = 0.5\nmin_requests = 1000\n");
        let start = || {
            let config = crate::config::parse(std::path::Path::new("t.toml"), &text).expect("valid");
            let control = Control::start(config, PathBuf::new(), None, 1, crate::metrics::Metrics::new(), None);
            let recorder = Arc::new(Recorder::default());
            control.share_decisions_with(recorder.clone());
            (control, recorder)
        };
        let ((here, recorder), (there, _)) = (start(), start());
        let before = here.view().revision;
        let revision = here.reset("green").expect("reset");
        assert!(revision > before, "a revision of its own");
        let decision = recorder.last().1.expect("a decision to share");
        assert_eq!(decision.maker, Maker::Operator);
        let change = decision.changes.iter().find(|c| c.key == SharedKey::Pool("green".into())).expect("green's unit");
        assert!(matches!(&change.value, SharedValue::Pool(unit) if unit.trip.is_none() && unit.reset_ms.is_some()));

        let guard = there.guards().into_iter().find(|g| &*g.pool == "green").expect("green's guard");
        let now = tokio::time::Instant::now();
        for _ in 0..10 {
            guard.record(now, true, Duration::from_millis(1));
        }
        assert_eq!(there.view().guards["green"].requests, 10);
        assert!(there.apply_shared(vec![(change.key.clone(), change.value.clone(), 4)], "fleet: reset (a)", false));
        assert_eq!(there.view().guards["green"].requests, 0, "the guard started again");
        assert!(!there.apply_shared(vec![(change.key.clone(), change.value.clone(), 4)], "echo", true), "once");
    }

    #[tokio::test]
    async fn a_shared_step_goes_on_from_when_it_began_on_the_replica_that_stepped() {
        let control = control_with_rollout();
        // Another replica stepped 4 s ago.
        let began = unix_ms(SystemTime::now()) - 4_000;
        let saved = Saved {
            state: crate::rollout::State::Progressing { step: 0 },
            served: Duration::ZERO,
            judged_from: Duration::ZERO,
        };
        let rollout = SavedRollout::of(&saved, vec!["127.0.0.1:9002".into()]).began_at(began);
        let unit = SharedValue::Route(RouteShared { override_split: None, rollout: Some(rollout) });
        let shop = SharedKey::Route("shop".into());
        assert!(control.apply_shared(vec![(shop.clone(), unit, 3)], "fleet: step (a)", false));
        let left = control.rollouts()[0].hold_left_ms.expect("holding the step");
        assert!((5_000..=6_000).contains(&left), "4 s of the 10 s hold are served: {left} ms left");
        // What this replica would share names the same beginning.
        let units = units(&control.lock());
        let Some(SharedValue::Route(RouteShared { rollout: Some(shared), .. })) = units.get(&shop) else {
            panic!("a route unit with a rollout")
        };
        let again = shared.began_ms().expect("began");
        assert!(again.abs_diff(began) < 100, "{again} vs {began}");
    }

    /// The store keeps the last shared rollout of a route until a replica
    /// shares another: after the canary's backends changed (a new version,
    /// each replica's rollout started again on reload), the old version's
    /// state is not applied to a replica that joins, and neither is an
    /// override set over another split of the route in the file.
    #[tokio::test]
    async fn another_versions_rollout_and_a_stale_override_are_not_applied() {
        let control = control_with_rollout();
        let shop = SharedKey::Route("shop".into());
        let promoted = Saved {
            state: crate::rollout::State::Promoted { baking: false },
            served: Duration::ZERO,
            judged_from: Duration::ZERO,
        };
        let old_version = SavedRollout::of(&promoted, vec!["127.0.0.1:9999".into()]);
        let unit = SharedValue::Route(RouteShared { override_split: None, rollout: Some(old_version) });
        assert!(!control.apply_shared(vec![(shop.clone(), unit, 3)], "fleet: old version", false));
        assert_eq!(control.rollouts()[0].state, "idle", "this version's rollout stands");
        // The same state of this version's backends is applied.
        let this_version = SavedRollout::of(&promoted, vec!["127.0.0.1:9002".into()]);
        let unit = SharedValue::Route(RouteShared { override_split: None, rollout: Some(this_version) });
        assert!(control.apply_shared(vec![(shop.clone(), unit, 4)], "fleet: this version", false));
        assert_eq!(control.rollouts()[0].state, "promoted");

        let stale = crate::control::Override {
            split: vec![("blue".into(), 0), ("green".into(), 100)],
            file_split: vec![("blue".into(), 9), ("green".into(), 1)],
        };
        let unit = SharedValue::Route(RouteShared { override_split: Some(stale.clone()), rollout: None });
        assert!(!control.apply_shared(vec![(shop.clone(), unit, 5)], "fleet: stale override", false));
        assert!(control.view().overrides.is_empty());
        let current = crate::control::Override { file_split: vec![("blue".into(), 1), ("green".into(), 1)], ..stale };
        let unit = SharedValue::Route(RouteShared { override_split: Some(current), rollout: None });
        assert!(control.apply_shared(vec![(shop, unit, 6)], "fleet: override", false));
        assert!(control.view().overrides.contains_key("shop"));
    }

    fn verdict(kind: crate::judge::VerdictKind) -> crate::judge::Verdict {
        use crate::judge::{Evidence, Rule, Scope};
        crate::judge::Verdict {
            kind,
            evidence: Evidence {
                rule: Rule::ErrorRate,
                scope: Scope::Window,
                span: Duration::from_secs(30),
                pool: Default::default(),
                baseline: Default::default(),
                bound: None,
                allowed: 0.1,
            },
            reason: "green failing across the fleet".into(),
            since: tokio::time::Instant::now(),
        }
    }

    /// A pool that turned failing while this replica followed is tripped
    /// as soon as this replica leads (the leader it follows may have died
    /// before it acted), though the verdict never turned again.
    #[tokio::test]
    async fn a_new_leader_trips_a_pool_already_failing() {
        use crate::judge::VerdictKind;
        let (control, _) = control();
        let (feed, rx) = tokio::sync::watch::channel(Verdicts::default());
        control.act_on_verdicts_from(rx);
        let mut failing = super::super::guarding::FedFailing::default();
        control.set_automatic(false);
        feed.send_replace(Arc::new([("green".to_string(), verdict(VerdictKind::Failing))].into_iter().collect()));
        control.act_on_fed_verdicts(&mut failing);
        control.act_on_fed_verdicts(&mut failing);
        assert!(!control.view().trips.contains_key("green"), "only the leader trips");
        let seen = control.metrics().guard_breaches.with_label_values(&["green", "error_rate"]).get();
        assert_eq!(seen, 1, "the follower counted the turn once");
        control.set_automatic(true);
        control.act_on_fed_verdicts(&mut failing);
        assert!(control.view().trips.contains_key("green"), "the new leader tripped the failing pool");
    }

    #[tokio::test]
    async fn fed_verdicts_trip_a_pool_when_it_turns_failing_and_only_then() {
        use crate::judge::VerdictKind;
        let (control, _) = control();
        let (feed, rx) = tokio::sync::watch::channel(Verdicts::default());
        control.act_on_verdicts_from(rx);
        assert!(control.has_verdict_feed());
        let mut failing = super::super::guarding::FedFailing::default();
        let send = |kind| {
            let verdicts = [("green".to_string(), verdict(kind))].into_iter().collect();
            feed.send_replace(Arc::new(verdicts));
        };
        send(VerdictKind::Healthy);
        control.act_on_fed_verdicts(&mut failing);
        assert!(!control.view().trips.contains_key("green"));
        send(VerdictKind::Failing);
        control.act_on_fed_verdicts(&mut failing);
        assert!(control.view().trips.contains_key("green"), "the fed verdict tripped it");
        assert_eq!(control.history()[0].cause, "guard: green failing across the fleet");
        // Reset by an operator while the feed still says failing: no new trip
        // until the pool turns failing again.
        control.reset("green").expect("reset");
        control.act_on_fed_verdicts(&mut failing);
        assert!(!control.view().trips.contains_key("green"));
        send(VerdictKind::Healthy);
        control.act_on_fed_verdicts(&mut failing);
        send(VerdictKind::Failing);
        control.act_on_fed_verdicts(&mut failing);
        assert!(control.view().trips.contains_key("green"));
    }
}
