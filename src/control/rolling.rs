//! Progressive rollouts in the single writer: each 250 ms tick moves every
//! route's [`Rollout`] on with its canary's verdict, operators' commands
//! reach it through the admin API, a reload replans it, and what happens is
//! applied as weights, trips and history revisions.

use std::time::Duration;

use super::outcome::AdminError;
use super::rollouts::{abort_class, cause as rollout_cause, guard_verdict, RolloutView};
use super::state::{backend_names, Trip, TripReason};
use super::writer::{find_route, Control, State};
use crate::config::Config;
use crate::judge::Verdict;
use crate::metrics::Metrics;
use crate::rollout::{Command, Event, Rollout, State as RolloutState, Verdict as RolloutVerdict};

impl Control {
    /// Move every rollout on with time and its canary's verdict, and apply
    /// what happens (one revision per route that changed).
    pub fn tick_rollouts(&self, now: tokio::time::Instant) {
        if !self.decides_automatically() {
            // A follower in a fleet: the leader steps rollouts; their
            // states arrive as shared units.
            return;
        }
        let verdicts = self.acting_verdicts();
        let mut state = self.lock();
        let routes: Vec<String> = state.rollouts.keys().cloned().collect();
        let mut held = false;
        for route in routes {
            let Some(pool) = state.rollouts.get(&route).map(|r| r.plan().pool.clone()) else { continue };
            let guard = state.guards.get(&pool).map(|g| g.as_ref());
            // A guard with a baseline is judged by its judge; one without, by its window.
            let judged = guard.filter(|g| g.has_baseline()).and_then(|_| verdicts.get(&pool).cloned());
            let verdict = match judged {
                Some(judged) if !state.trips.contains_key(&pool) => from_judge(&judged),
                _ => guard_verdict(guard, state.trips.get(&pool), now),
            };
            let Some(rollout) = state.rollouts.get_mut(&route) else { continue };
            let events = rollout.tick(now, &verdict);
            held |= rollout.hold_left(now).is_some();
            state.rollout_verdicts.insert(route.clone(), verdict);
            if let Some(cause) = state.absorb(&self.metrics, &route, &events) {
                state.origin = super::shared::Origin::Automatic;
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
        let cause = state
            .absorb(&self.metrics, route, &events)
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
    pub(super) fn reload_rollouts(&self, state: &mut State, old: &Config, config: &Config) -> Vec<String> {
        let now = tokio::time::Instant::now();
        state.rollouts.retain(|route, _| config.routes.iter().any(|r| r.name == *route && r.rollout.is_some()));
        state.rollout_verdicts.retain(|route, _| config.routes.iter().any(|r| r.name == *route && r.rollout.is_some()));
        let mut causes = Vec::new();
        for rc in &config.routes {
            let Some(plan) = rc.rollout.clone() else { continue };
            let new_backends = config.pool(&plan.pool).map(|pc| backend_names(&pc.backends));
            let old_backends = old.pool(&plan.pool).map(|pc| backend_names(&pc.backends));
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
            causes.extend(state.absorb(&self.metrics, &rc.name, &events));
        }
        causes
    }

    /// Set the rollout gauges from the rollouts' state.
    pub(super) fn show_rollouts(&self) {
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

impl State {
    /// Apply what a rollout's `events` mean beyond its weights: an abort trips
    /// the canary (today's rollback) and is counted; a start clears the
    /// canary's trip and starts its guard window afresh, since the operator or
    /// a new version asks for a new judgement. Returns the history's cause.
    pub(super) fn absorb(&mut self, metrics: &Metrics, route: &str, events: &[Event]) -> Option<String> {
        let state = self;
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
        rollout_cause(route, &pool, events)
    }
}
