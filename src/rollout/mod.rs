//! Progressive rollouts: a canary's share raised step by step while it is
//! judged healthy, paused when the judgement stays open too long or an
//! operator asks, aborted on a failing verdict, promoted at the end.
//!
//! This module is the rollout's plan ([`Plan`], what the config says) and its
//! state machine ([`Rollout`], where one route's rollout stands). Both are
//! pure: time comes in as an argument and the verdict as a value, so the
//! machine is driven the same way by the control loop, by a restart that
//! reads the state file back, and by tests under paused time. What a state
//! means for traffic is one number, [`Rollout::canary_share`]; turning it
//! into a route's effective weights, tripping the canary on an abort and
//! recording the history belong to the control plane, which applies the
//! [`Event`]s that each call returns.

mod machine;
mod plan;

pub use machine::{Command, CommandError, Event, PauseReason, Rollout, Saved, State, Verdict};
pub use plan::{Plan, Start, Step};
