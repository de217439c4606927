//! A rollout's plan, as validated from the config: the canary pool, its
//! steps, how long each is held, and when the rollout starts.

use std::time::Duration;

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Give the canary `percent` of the route's traffic and judge it for at
    /// least `hold` (the plan's hold when `None`).
    Weight {
        /// The canary's share, 1 to 100.
        percent: u32,
        /// This step's own hold.
        hold: Option<Duration>,
    },
    /// Wait, at the previous step's share, until an operator resumes.
    Pause,
}

/// When a rollout starts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// When the rollout first appears in the config, and whenever the
    /// canary pool's backends change (a new version).
    OnNewVersion,
    /// Only when an operator starts it.
    Manual,
}

/// A route's rollout plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The canary pool: the new version. The route's other pools are where
    /// its traffic comes from.
    pub pool: String,
    /// The steps, in order; at least one `Weight` step.
    pub steps: Vec<Step>,
    /// How long each step lasts at least.
    pub hold: Duration,
    /// How long a step may wait for a `healthy` verdict after its hold
    /// before the rollout pauses.
    pub max_hold: Duration,
    /// When the rollout starts.
    pub start: Start,
    /// How long the canary is still judged after promotion, with an
    /// automatic switchback on failure. Zero: no bake.
    pub bake: Duration,
}

impl Plan {
    /// The hold of step `index` (the plan's, unless the step has its own).
    pub fn hold_of(&self, index: usize) -> Duration {
        match self.steps.get(index) {
            Some(Step::Weight { hold: Some(hold), .. }) => *hold,
            _ => self.hold,
        }
    }

    /// The canary's share while at step `index`: a pause keeps the share of
    /// the last weight step before it (0 before any).
    pub fn share_at(&self, index: usize) -> u32 {
        self.steps[..=index.min(self.steps.len().saturating_sub(1))]
            .iter()
            .rev()
            .find_map(|step| match step {
                Step::Weight { percent, .. } => Some(*percent),
                Step::Pause => None,
            })
            .unwrap_or(0)
    }

    /// Where step `index` of the `previous` plan stands in this one, after a
    /// reload that edited the steps: the first step equal to it with the same
    /// share. `None` when that step is gone, and the rollout starts over.
    pub fn position_of(&self, index: usize, previous: &Plan) -> Option<usize> {
        let step = previous.steps.get(index)?;
        let share = previous.share_at(index);
        (0..self.steps.len()).find(|&i| &self.steps[i] == step && self.share_at(i) == share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            pool: "canary".into(),
            steps,
            hold: Duration::from_secs(60),
            max_hold: Duration::from_secs(600),
            start: Start::OnNewVersion,
            bake: Duration::ZERO,
        }
    }

    fn weight(percent: u32) -> Step {
        Step::Weight { percent, hold: None }
    }

    #[test]
    fn a_pause_keeps_the_share_before_it() {
        let plan = plan(vec![Step::Pause, weight(10), Step::Pause, weight(50)]);
        assert_eq!(plan.share_at(0), 0);
        assert_eq!(plan.share_at(1), 10);
        assert_eq!(plan.share_at(2), 10);
        assert_eq!(plan.share_at(3), 50);
    }

    #[test]
    fn a_step_may_hold_on_its_own_duration() {
        let mut plan = plan(vec![weight(10), Step::Weight { percent: 50, hold: Some(Duration::from_secs(5)) }]);
        assert_eq!(plan.hold_of(0), Duration::from_secs(60));
        assert_eq!(plan.hold_of(1), Duration::from_secs(5));
        plan.hold = Duration::from_secs(1);
        assert_eq!(plan.hold_of(0), Duration::from_secs(1));
    }

    #[test]
    fn an_edited_plan_keeps_a_step_that_still_exists() {
        let old = plan(vec![weight(5), weight(25), weight(50), weight(100)]);
        let new = plan(vec![weight(5), weight(10), weight(25), weight(100)]);
        assert_eq!(new.position_of(1, &old), Some(2), "25% moved one place");
        assert_eq!(new.position_of(2, &old), None, "50% is gone");
    }
}
