//! The part of the writer's state that the replicas of a fleet share, as
//! plain data, and the seam through which the writer hands its decisions
//! to whoever shares them.
//!
//! The shared state is cut into independent units so that changes to
//! different routes never conflict: one [`RouteShared`] per route (its
//! admin override and its rollout's state) and one [`PoolShared`] per pool
//! (its trip). After every commit the writer compares the units with the
//! ones it last shared and hands what changed to its [`DecisionSink`] as
//! one [`Decision`]: the sink writes the changed units together or not at
//! all. Each unit carries the store's version it was based on, so the sink
//! can refuse to overwrite a change it has not seen. The writer knows
//! nothing of the store: `crate::fleet` implements the sink.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rollouts::SavedRollout;
use super::state::{Override, Trip};

/// One independently shared unit of state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SharedKey {
    /// A route: its override and its rollout.
    Route(String),
    /// A pool: its trip.
    Pool(String),
}

/// What a route's unit holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteShared {
    /// The admin override in force, if any.
    #[serde(rename = "override")]
    pub override_split: Option<Override>,
    /// The route's rollout, if it has one.
    pub rollout: Option<SavedRollout>,
}

/// What a pool's unit holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolShared {
    /// The pool's trip, if tripped.
    pub trip: Option<Trip>,
    /// When an operator last reset the pool, in Unix milliseconds: a reset
    /// changes the unit even where no trip was cleared, so that every
    /// replica starts the pool's guard (and the leader its fleet judge)
    /// again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_ms: Option<u64>,
}

/// A unit's value.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedValue {
    /// A route's.
    Route(RouteShared),
    /// A pool's.
    Pool(PoolShared),
}

/// One change of one unit within a [`Decision`].
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Which unit.
    pub key: SharedKey,
    /// Its new value.
    pub value: SharedValue,
    /// The store's version of the unit this change was made on (0: never
    /// stored), as last applied or written by this replica.
    pub based_on: i64,
}

/// Who made a decision: an operator (through the admin API) or the writer
/// itself (a guard's trip, a rollout's step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Maker {
    /// An admin call.
    Operator,
    /// A guard's verdict or a rollout's tick.
    Automatic,
}

/// The shared units one commit changed, to be stored together.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The local revision the commit made.
    pub revision: u64,
    /// The revision's cause, as `/history` shows it.
    pub cause: String,
    /// Who made it.
    pub maker: Maker,
    /// The units it changed.
    pub changes: Vec<Change>,
}

/// Where the writer hands its decisions. Called under the writer's lock,
/// once per commit in revision order, so it must not block: it queues.
pub trait DecisionSink: Send + Sync + std::fmt::Debug {
    /// Revision `revision` was committed; `decision` is what it changed of
    /// the shared state when this replica made the change (`None`: nothing
    /// shared changed, or the change came from the store or the file).
    fn committed(&self, revision: u64, decision: Option<Decision>);
}

/// Where a commit's change came from; decides whether it is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Origin {
    /// An admin call: shared.
    #[default]
    Operator,
    /// A guard or a rollout tick: shared.
    Automatic,
    /// The store (another replica's decision): already shared.
    Remote,
    /// The config file: each replica's own, not shared.
    File,
}

/// The shared units of a state, by key.
pub(super) type Units = BTreeMap<SharedKey, SharedValue>;

/// The units that differ between `before` and `after` (a unit gone from
/// `after` is not a change: routes and pools leave with the file).
pub(super) fn changed<'a>(before: &Units, after: &'a Units) -> Vec<(&'a SharedKey, &'a SharedValue)> {
    after.iter().filter(|(key, value)| before.get(*key) != Some(*value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_units_that_changed_are_decided() {
        let trip = Trip {
            reason: super::super::state::TripReason::Manual,
            detail: "by hand".into(),
            revision: 2,
            backends: vec!["127.0.0.1:1".into()],
        };
        let mut before = Units::new();
        before.insert(SharedKey::Pool("blue".into()), SharedValue::Pool(PoolShared::default()));
        before.insert(SharedKey::Pool("green".into()), SharedValue::Pool(PoolShared::default()));
        let mut after = before.clone();
        after.insert(
            SharedKey::Pool("green".into()),
            SharedValue::Pool(PoolShared { trip: Some(trip), reset_ms: None }),
        );
        let changes = changed(&before, &after);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, &SharedKey::Pool("green".into()));
        assert!(changed(&after, &after).is_empty());
    }

    #[test]
    fn units_serialise_as_the_store_keeps_them() {
        let value = RouteShared { override_split: None, rollout: None };
        let json = serde_json::to_string(&value).expect("serialises");
        assert_eq!(json, r#"{"override":null,"rollout":null}"#);
        assert_eq!(serde_json::from_str::<RouteShared>(&json).expect("parses"), value);
    }
}
