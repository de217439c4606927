//! What the single writer needs to run rollouts ([`crate::rollout`]): a
//! canary share turned into a route's weights, the canary's verdict read
//! from its guard, the history's words for each event, and the form a
//! rollout takes in the state file.
//!
//! The state machine itself is pure and knows nothing of routes, guards or
//! files; these are the pieces that connect it to them, each a plain
//! function so that it is tested on its own.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{Trip, Weights};
use crate::guard::{judge, PoolGuard};
use crate::rollout::{Event, PauseReason, Rollout, Saved, State, Step, Verdict};

/// The route's weights with `canary` at `share` percent: the other pools
/// share the rest in proportion to their configured weights. Exact: the
/// canary's weight is `share × S` and pool `i`'s `(100 − share) × wᵢ`,
/// where `S` is the others' configured sum, reduced by their common divisor.
pub(super) fn with_canary_share(split: &Weights, canary: &str, share: u32) -> Weights {
    let others: u64 = split.iter().filter(|(p, _)| p != canary).map(|(_, w)| u64::from(*w)).sum();
    if others == 0 {
        // Nothing else to take traffic from: the canary serves alone.
        return split.iter().map(|(p, _)| (p.clone(), u32::from(p == canary))).collect();
    }
    let share = u64::from(share.min(100));
    let raw: Vec<u64> =
        split.iter().map(|(p, w)| if p == canary { share * others } else { (100 - share) * u64::from(*w) }).collect();
    let divisor = raw.iter().copied().filter(|w| *w > 0).fold(0, gcd).max(1);
    let mut reduced: Vec<u64> = raw.iter().map(|w| w / divisor).collect();
    // Keep within u32 for very large configured weights (parts per million then).
    let total: u64 = reduced.iter().sum();
    if reduced.iter().any(|w| *w > u64::from(u32::MAX)) {
        reduced = reduced.iter().map(|w| (w * 1_000_000).div_ceil(total.max(1))).collect();
    }
    split.iter().zip(reduced).map(|((p, _), w)| (p.clone(), u32::try_from(w).unwrap_or(u32::MAX))).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The canary's verdict from today's guard: failing when the pool is
/// tripped or its window breaches, healthy when the window holds at least
/// `min_requests` requests without a breach, inconclusive otherwise (and
/// always for a pool without a guard: nothing judges it).
pub(super) fn guard_verdict(guard: Option<&PoolGuard>, trip: Option<&Trip>, now: tokio::time::Instant) -> Verdict {
    if let Some(trip) = trip {
        return Verdict::Failing(trip.detail.clone());
    }
    let Some(guard) = guard else { return Verdict::Inconclusive };
    let stats = guard.window.stats(now);
    match judge(&guard.config, &stats) {
        Some(breach) => Verdict::Failing(breach.detail),
        None if stats.requests >= guard.config.min_requests.max(1) => Verdict::Healthy,
        None => Verdict::Inconclusive,
    }
}

/// The verdict as `/rollouts` shows it: `{kind, reason}`.
pub(super) fn verdict_kind(verdict: &Verdict) -> (&'static str, Option<&str>) {
    match verdict {
        Verdict::Healthy => ("healthy", None),
        Verdict::Inconclusive => ("inconclusive", None),
        Verdict::Failing(reason) => ("failing", Some(reason.as_str())),
    }
}

/// The history's cause for the events of one change of route `route`
/// rolling out `pool`, or `None` when there are none.
pub(super) fn cause(route: &str, pool: &str, events: &[Event]) -> Option<String> {
    let parts: Vec<String> = events
        .iter()
        .map(|event| match event {
            Event::Started => "rollout started".to_string(),
            Event::Advanced { step, share } => format!("rollout step {}: {pool} {share}%", step + 1),
            Event::Paused(reason) => format!("rollout paused: {}", reason.as_str()),
            Event::Resumed => "rollout resumed".to_string(),
            Event::Aborted(reason) => format!("rollout aborted: {reason}"),
            Event::Promoted => "rollout promoted".to_string(),
            Event::Baked => "rollout baked".to_string(),
            Event::BakeFailed(reason) => format!("rollout aborted: failed during bake: {reason}"),
        })
        .collect();
    (!parts.is_empty()).then(|| format!("route {route}: {}", parts.join("; ")))
}

/// The abort's class, for the `reason` label of `cutover_rollout_aborts_total`
/// (a bounded set, unlike the one-line reasons).
pub(super) fn abort_class(event: &Event) -> Option<&'static str> {
    match event {
        Event::Aborted(reason) if reason.starts_with("aborted by an operator") => Some("operator"),
        Event::Aborted(reason) if reason == "the route was switched back" => Some("switchback"),
        Event::Aborted(_) => Some("failing"),
        Event::BakeFailed(_) => Some("bake"),
        _ => None,
    }
}

/// One route's rollout as `GET /rollouts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    /// The route.
    pub route: String,
    /// The canary pool.
    pub pool: String,
    /// `idle`, `progressing`, `paused`, `aborted` or `promoted`.
    pub state: &'static str,
    /// The current step, 0-based, where the state has one.
    pub step: Option<usize>,
    /// The plan's steps: a percent, `{weight, hold_ms}` or `{pause: true}`.
    pub steps: Vec<serde_json::Value>,
    /// The canary's share in percent while the rollout sets the weights.
    pub canary_share: Option<u32>,
    /// Time left in the current hold (or bake), in milliseconds.
    pub hold_left_ms: Option<u64>,
    /// Whether a promoted rollout is still baking.
    pub baking: bool,
    /// The canary's latest verdict: `{kind, reason}`.
    pub verdict: serde_json::Value,
    /// Why it is paused or aborted.
    pub reason: Option<String>,
}

impl RolloutView {
    /// The view of `rollout` on `route`, judged `verdict`, at `now`.
    pub(super) fn of(route: &str, rollout: &Rollout, verdict: &Verdict, now: tokio::time::Instant) -> RolloutView {
        let plan = rollout.plan();
        let steps = plan
            .steps
            .iter()
            .map(|step| match step {
                Step::Weight { percent, hold: None } => serde_json::json!(percent),
                Step::Weight { percent, hold: Some(hold) } => {
                    serde_json::json!({ "weight": percent, "hold_ms": millis(*hold) })
                }
                Step::Pause => serde_json::json!({ "pause": true }),
            })
            .collect();
        let (step, reason, baking) = match rollout.state() {
            State::Idle => (None, None, false),
            State::Progressing { step } => (Some(*step), None, false),
            State::Paused { step, reason } => (Some(*step), Some(reason.as_str().to_string()), false),
            State::Aborted { step, reason } => (Some(*step), Some(reason.clone()), false),
            State::Promoted { baking } => (None, None, *baking),
        };
        let (kind, why) = verdict_kind(verdict);
        RolloutView {
            route: route.to_string(),
            pool: plan.pool.clone(),
            state: rollout.state().name(),
            step,
            steps,
            canary_share: rollout.canary_share(),
            hold_left_ms: rollout.hold_left(now).map(millis),
            baking,
            verdict: serde_json::json!({ "kind": kind, "reason": why }),
            reason,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A rollout in the state file, and in the fleet's shared state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRollout {
    /// The state's name (`State::name`).
    state: String,
    /// The current step, where the state has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<usize>,
    /// Why it is paused or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Whether a promoted rollout is still baking.
    #[serde(default)]
    baking: bool,
    /// Time already served at the current step, in milliseconds.
    served_ms: u64,
    /// When the current step (or the bake) began, in milliseconds since
    /// the Unix epoch, in the fleet's shared state: whichever replica leads
    /// next continues the hold from there. The state file keeps `served_ms`
    /// instead (time while the process is down is not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    began_ms: Option<u64>,
    /// The canary's backends when saved: different ones at start are a new version.
    #[serde(default)]
    pub(super) backends: Vec<String>,
    /// How far into the current step, in milliseconds, an operator's resume
    /// began the current stretch of judging (`Saved::judged_from`); absent
    /// when it began with the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    judged_from_ms: Option<u64>,
}

impl SavedRollout {
    /// The state file's form of `saved`, with the canary's backends.
    pub(super) fn of(saved: &Saved, backends: Vec<String>) -> SavedRollout {
        let (step, reason, baking) = match &saved.state {
            State::Idle => (None, None, false),
            State::Progressing { step } => (Some(*step), None, false),
            State::Paused { step, reason } => (Some(*step), Some(pause_key(reason).to_string()), false),
            State::Aborted { step, reason } => (Some(*step), Some(reason.clone()), false),
            State::Promoted { baking } => (None, None, *baking),
        };
        let served_ms = u64::try_from(saved.served.as_millis()).unwrap_or(u64::MAX);
        SavedRollout {
            state: saved.state.name().to_string(),
            step,
            reason,
            baking,
            served_ms,
            began_ms: None,
            backends,
            judged_from_ms: Some(millis(saved.judged_from)).filter(|&ms| ms > 0),
        }
    }

    /// The same, saying when the current step began (Unix milliseconds).
    pub(super) fn began_at(self, began_ms: u64) -> SavedRollout {
        SavedRollout { began_ms: Some(began_ms), ..self }
    }

    /// When the current step began (Unix milliseconds), where it says.
    pub(super) fn began_ms(&self) -> Option<u64> {
        self.began_ms
    }

    /// Back to a [`Saved`]; `None` for a state this build does not know.
    pub(super) fn saved(&self) -> Option<Saved> {
        let step = self.step.unwrap_or(0);
        let state = match self.state.as_str() {
            "idle" => State::Idle,
            "progressing" => State::Progressing { step },
            "paused" => State::Paused { step, reason: pause_reason(self.reason.as_deref().unwrap_or("operator")) },
            "aborted" => State::Aborted { step, reason: self.reason.clone().unwrap_or_default() },
            "promoted" => State::Promoted { baking: self.baking },
            _ => return None,
        };
        let judged_from = Duration::from_millis(self.judged_from_ms.unwrap_or(0));
        Some(Saved { state, served: Duration::from_millis(self.served_ms), judged_from })
    }
}

fn pause_key(reason: &PauseReason) -> &'static str {
    match reason {
        PauseReason::Step => "step",
        PauseReason::Operator => "operator",
        PauseReason::Inconclusive => "inconclusive",
        PauseReason::Override => "override",
    }
}

fn pause_reason(key: &str) -> PauseReason {
    match key {
        "step" => PauseReason::Step,
        "inconclusive" => PauseReason::Inconclusive,
        "override" => PauseReason::Override,
        _ => PauseReason::Operator,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(split: &[(&str, u32)]) -> Weights {
        split.iter().map(|(p, w)| (p.to_string(), *w)).collect()
    }

    #[test]
    fn the_canary_takes_its_share_and_the_others_keep_their_proportions() {
        let split = w(&[("blue", 60), ("green", 20), ("canary", 0)]);
        let out = with_canary_share(&split, "canary", 25);
        let total: u32 = out.iter().map(|(_, w)| w).sum();
        let share = |p: &str| f64::from(out.iter().find(|(q, _)| q == p).unwrap().1) / f64::from(total);
        assert!((share("canary") - 0.25).abs() < 1e-9, "{out:?}");
        assert!((share("blue") - 0.5625).abs() < 1e-9, "{out:?}");
        assert!((share("green") - 0.1875).abs() < 1e-9, "{out:?}");
        assert_eq!(with_canary_share(&split, "canary", 100), w(&[("blue", 0), ("green", 0), ("canary", 1)]));
    }

    #[test]
    fn large_weights_stay_within_u32() {
        let split = w(&[("a", 1_000_000), ("b", 999_999), ("canary", 0)]);
        let out = with_canary_share(&split, "canary", 37);
        let total: u64 = out.iter().map(|(_, w)| u64::from(*w)).sum();
        let canary = out[2].1 as f64 / total as f64;
        assert!((canary - 0.37).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn every_state_survives_the_state_file() {
        let states = [
            State::Idle,
            State::Progressing { step: 2 },
            State::Paused { step: 1, reason: PauseReason::Inconclusive },
            State::Paused { step: 1, reason: PauseReason::Step },
            State::Aborted { step: 1, reason: "error rate 0.5 > 0.05".into() },
            State::Promoted { baking: true },
        ];
        for state in states {
            // A resume's offset into the step travels too (absent when zero).
            for judged_from in [Duration::ZERO, Duration::from_millis(900)] {
                let saved = Saved { state: state.clone(), served: Duration::from_millis(1500), judged_from };
                let json = serde_json::to_string(&SavedRollout::of(&saved, Vec::new())).unwrap();
                assert_eq!(json.contains("judged_from_ms"), !judged_from.is_zero(), "{json}");
                let back: SavedRollout = serde_json::from_str(&json).unwrap();
                assert_eq!(back.saved(), Some(saved), "{json}");
            }
        }
    }
}
