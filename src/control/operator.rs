//! The operator's commands: overrides, switchbacks, manual trips and
//! resets, as the admin API and the fleet hand them to [`Control`].
//!
//! Each one checks its input against the running config, changes the state
//! under the writer's lock and commits it as one revision whose cause names
//! the command; a command that changes nothing answers the current
//! revision and records none. They live apart from the writer's machinery
//! (reloads, commits, snapshots) because they are its callers, not part of
//! it.

use std::collections::BTreeMap;

use super::outcome::AdminError;
use super::state::{backend_names, Override, Trip, TripReason, Weights};
use super::weights::align;
use super::writer::{describe, effective, find_route};
use super::Control;
use crate::rollout::Rollout;

impl Control {
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
        if let Some(c) = state.absorb(&self.metrics, route, &events) {
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
        if let Some(c) = state.absorb(&self.metrics, route, &events) {
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
        self.restart_guard(&state, pool);
        // A revision whether or not a trip is cleared: in a fleet the reset
        // travels in the pool's shared unit, and every replica starts the
        // pool's guard again.
        state.resets.insert(pool.to_string(), super::sharing::unix_ms(std::time::SystemTime::now()));
        if state.trips.remove(pool).is_some() {
            tracing::info!(pool, "trip reset by an operator");
        }
        Ok(self.commit(&mut state, format!("admin: reset pool {pool}")))
    }
}
