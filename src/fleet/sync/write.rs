//! Writing this replica's decisions to etcd, and what happens when one
//! loses its compare-and-swap to another replica's change.
//!
//! A decision's keys are written in one transaction that compares each
//! key's `mod_revision` with the version the decision was made on. On a
//! conflict nothing is written; the keys' current values are applied at
//! once (so the replica never serves a mix of the two changes) and the
//! admin caller gets the current state with a 409.
//!
//! An automatic trip that loses is made again on the new state, except
//! when what won is an operator's reset of the pool: the trip was computed
//! on evidence from before the reset, which the reset cleared, and the
//! operator's word stands. If the pool still fails, its guard trips it
//! again on the evidence that arrives after the reset.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::Value;

use super::{Fleet, FleetOutcome, Pending};
use crate::control::{Decision, Maker, SharedKey, SharedValue};
use crate::fleet::etcd::{KeyValue, TxnOutcome};
use crate::fleet::state;
use crate::timestamp::rfc3339;

impl Fleet {
    /// Write one commit's decision, or keep it pending while cut off.
    pub(super) async fn handle(&self, revision: u64, decision: Option<Decision>) {
        let outcome = match decision {
            None => FleetOutcome::Unshared,
            Some(decision) if !self.is_connected() => {
                self.keep_pending(&decision);
                FleetOutcome::Pending
            }
            Some(decision) => self.write(decision).await,
        };
        {
            let mut inner = self.lock();
            if outcome != FleetOutcome::Unshared {
                inner.outcomes.insert(revision, outcome);
            }
            // Answers nobody waits for are dropped after a while.
            while inner.outcomes.len() > 256 {
                inner.outcomes.pop_first();
            }
        }
        self.processed.send_if_modified(|p| {
            let newer = revision > *p;
            *p = (*p).max(revision);
            newer
        });
    }

    pub(super) fn keep_pending(&self, decision: &Decision) {
        let mut inner = self.lock();
        for change in &decision.changes {
            let based_on = inner.pending.get(&change.key).map_or(change.based_on, |p| p.based_on);
            inner.pending.insert(
                change.key.clone(),
                Pending { value: change.value.clone(), based_on, cause: decision.cause.clone(), maker: decision.maker },
            );
        }
    }

    pub(super) async fn write(&self, decision: Decision) -> FleetOutcome {
        // A decision made before this replica's previous write of the same
        // key was confirmed is based on that write: follow the versions
        // this replica itself wrote over. Any other newer version is
        // another replica's change, and the write must conflict.
        let writes: Vec<(String, Vec<u8>, i64)> = {
            let inner = self.lock();
            decision
                .changes
                .iter()
                .map(|c| {
                    let mut based_on = c.based_on;
                    while let Some(next) = inner.overwritten.get(&(c.key.clone(), based_on)) {
                        based_on = *next;
                    }
                    let time = rfc3339(SystemTime::now());
                    let value = state::encode(&c.value, &self.config.replica, &decision.cause, decision.maker, &time);
                    (state::key_of(&self.config.prefix, &c.key), value, based_on)
                })
                .collect()
        };
        match self.client.put_all_if(&writes).await {
            Ok(TxnOutcome::Written { revision }) => {
                let confirmed: Vec<(SharedKey, i64, i64)> =
                    decision.changes.iter().zip(&writes).map(|(c, w)| (c.key.clone(), w.2, revision)).collect();
                self.remember_written(&confirmed);
                self.control.shared_written(&confirmed);
                FleetOutcome::Written
            }
            Ok(TxnOutcome::Conflict { current, .. }) => self.lost(&decision, &current),
            Err(e) => {
                tracing::warn!(error = %e, cause = %decision.cause, "cannot write the decision to etcd; kept to write on reconnect");
                self.keep_pending(&decision);
                self.set_connected(false);
                FleetOutcome::Pending
            }
        }
    }

    /// Remember which versions this replica's own writes replaced.
    pub(super) fn remember_written(&self, written: &[(SharedKey, i64, i64)]) {
        let mut inner = self.lock();
        for (key, based_on, version) in written {
            inner.overwritten.insert((key.clone(), *based_on), *version);
        }
        // Only the latest few matter: decisions queue for milliseconds.
        while inner.overwritten.len() > 1024 {
            inner.overwritten.pop_first();
        }
    }

    /// Another replica changed a key first: apply what is in etcd now, make
    /// a lost automatic trip again, and say what is in force.
    pub(super) fn lost(&self, decision: &Decision, current: &[Option<KeyValue>]) -> FleetOutcome {
        let mut shown = serde_json::Map::new();
        let mut units = Vec::new();
        let mut cause = String::new();
        let mut reset_by_operator = BTreeSet::new();
        for kv in current.iter().flatten() {
            let key = kv.key_str().to_string();
            match state::decode(&self.config.prefix, &key, &kv.value) {
                Ok(decoded) => {
                    shown.insert(key, serde_json::from_slice(&kv.value).unwrap_or(Value::Null));
                    cause = format!("fleet: {} ({})", decoded.cause, decoded.by);
                    if decoded.is_operator_reset() {
                        reset_by_operator.insert(decoded.key.clone());
                    }
                    units.push((decoded.key, decoded.value, kv.mod_revision));
                }
                Err(e) => tracing::warn!(error = %e, "unreadable fleet state in etcd; ignored"),
            }
        }
        tracing::warn!(cause = %decision.cause, "another replica changed the same state first; its change is in force");
        self.control.apply_shared(units, &cause, true);
        if decision.maker == Maker::Automatic {
            let (dropped, kept): (Vec<_>, Vec<_>) =
                decision.changes.iter().partition(|c| reset_by_operator.contains(&c.key));
            for change in dropped.iter().filter(|c| is_trip(&c.value)) {
                tracing::warn!(
                    unit = ?change.key,
                    cause = %decision.cause,
                    "an operator reset the pool first: the trip, made on evidence from before the reset, is dropped"
                );
            }
            self.retrip(kept.into_iter().map(|c| (&c.key, &c.value)));
        }
        FleetOutcome::Conflict { current: Value::Object(shown) }
    }

    /// Make again the trips among `changes` that the state in force lacks.
    pub(super) fn retrip<'a>(&self, changes: impl Iterator<Item = (&'a SharedKey, &'a SharedValue)>) {
        for (key, value) in changes {
            if let (SharedKey::Pool(pool), SharedValue::Pool(unit)) = (key, value) {
                if let Some(trip) = &unit.trip {
                    self.control.reapply_trip(pool, trip);
                }
            }
        }
    }
}

fn is_trip(value: &SharedValue) -> bool {
    matches!(value, SharedValue::Pool(unit) if unit.trip.is_some())
}
