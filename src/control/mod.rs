//! Every change of routing state goes through here: reloads, admin
//! overrides, switchbacks, guard trips and resets.
//!
//! One writer ([`Control`]) owns the state and publishes snapshots; the
//! rest of this folder is what it is made of, each part knowing nothing of
//! the writer:
//!
//! - [`writer`]: [`Control`], the single writer: reloads,
//!   breaches, and the commit that builds and publishes the next snapshot;
//! - [`operator`]: the operator's commands (overrides, switchbacks,
//!   manual trips, resets), as the writer's callers;
//! - [`weights`]: the trip rule, a pure computation of effective weights
//!   (SPEC §3), tested case by case;
//! - [`history`]: the numbered revisions and the state file;
//! - [`outcome`]: what the writer's callers get back (reload causes and
//!   outcomes, refusals, the `/status` view);
//! - [`rollouts`]: what connects rollouts to routes: canary shares as
//!   weights, verdicts from guards, history causes, the state file's form;
//! - [`drain`]: draining the backends a change removed;
//! - [`state`]: the records they share (overrides, trips, revisions);
//! - [`shared`] and [`sharing`]: what of the state a fleet's replicas
//!   share, the decisions handed to the fleet, and the other replicas'
//!   decisions applied.
//!
//! The gauges that mirror this state are rendered by [`crate::metrics`];
//! which settings need a restart is [`crate::config::restart`]'s to say.

mod drain;
mod guarding;
mod history;
mod operator;
mod outcome;
mod rolling;
mod rollouts;
mod shared;
mod sharing;
mod state;
mod weights;
mod writer;

pub use drain::{finish_drain, DrainEnd};
pub use outcome::{AdminError, ReloadCause, ReloadOutcome, ReloadRecord, StateView, Verdicts};
pub use rollouts::{RolloutView, SavedRollout};
pub use shared::{Change, Decision, DecisionSink, Maker, PoolShared, RouteShared, SharedKey, SharedValue};
pub use state::{Override, Revision, Trip, TripReason, Weights};
pub use weights::effective_weights;
pub use writer::Control;
