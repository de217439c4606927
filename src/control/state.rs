//! The records the single writer keeps, and the state file holds: admin
//! overrides, trips and numbered revisions.
//!
//! They are plain data, shared by the trip rule ([`super::weights`]), the
//! history and state file ([`super::history`]) and the writer itself, and
//! they serialise as the state file and `/history` show them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::BackendAddr;
use crate::guard::BreachReason;

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
    /// A rollout aborted: a failing verdict, an operator's abort or a switchback.
    Rollout,
    /// Failing against its baseline: failure share over the baseline's by
    /// more than `max_error_increase`.
    ErrorIncrease,
    /// Failing against its baseline: slower than `max_latency_ratio` × the
    /// baseline's p99.
    LatencyRatio,
}

impl TripReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TripReason::ErrorRate => "error_rate",
            TripReason::Latency => "latency",
            TripReason::Manual => "manual",
            TripReason::Rollout => "rollout",
            TripReason::ErrorIncrease => "error_increase",
            TripReason::LatencyRatio => "latency_ratio",
        }
    }
}

impl From<BreachReason> for TripReason {
    fn from(reason: BreachReason) -> TripReason {
        match reason {
            BreachReason::ErrorRate => TripReason::ErrorRate,
            BreachReason::Latency => TripReason::Latency,
            BreachReason::ErrorIncrease => TripReason::ErrorIncrease,
            BreachReason::LatencyRatio => TripReason::LatencyRatio,
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

impl Trip {
    /// Whether `other` is the same trip, whatever revision each replica
    /// numbered it with.
    pub fn same_trip(&self, other: &Trip) -> bool {
        self.reason == other.reason && self.detail == other.detail && same_backends(&self.backends, &other.backends)
    }
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

/// A pool's backends as a trip records them.
pub(super) fn backend_names(backends: &[BackendAddr]) -> Vec<String> {
    let mut names: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
    names.sort_unstable();
    names
}

/// Whether two lists name the same backends, in whatever order: a pool's
/// version is its set of backends, and a file that lists them in another
/// order (a generator's, a template's) is the same version. Lists recorded
/// before names were kept sorted compare the same way.
pub(super) fn same_backends(a: &[String], b: &[String]) -> bool {
    let sorted = |list: &[String]| {
        let mut list = list.to_vec();
        list.sort_unstable();
        list
    };
    a.len() == b.len() && sorted(a) == sorted(b)
}
