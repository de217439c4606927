//! `[routes.rollout]`: a route's progressive rollout, validated into a
//! [`Plan`]: the canary must be one of the route's split pools, the steps
//! non-empty with percents from 1 to 100 that never go down, the durations
//! well formed.

use std::time::Duration;

use toml::Spanned;

use super::super::raw::{RawDuration, RawRollout, RawStep};
use super::values::{Cx, Result};
use crate::rollout::{Plan, Start, Step};

/// Each step's hold when the file gives none.
const DEFAULT_HOLD: Duration = Duration::from_secs(5 * 60);
/// How long a step waits for a healthy verdict past its hold, by default.
const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(30 * 60);

impl Cx<'_> {
    pub(super) fn rollout(&self, route: &str, raw: &Spanned<RawRollout>, split: &[(String, u32)]) -> Result<Plan> {
        let table = raw.span();
        let raw = raw.get_ref();
        let pool = raw.pool.as_ref().ok_or_else(|| {
            self.err(table.clone(), format!("route \"{route}\": rollout has no pool; add pool = \"NAME\" (the canary)"))
        })?;
        let pool_name = pool.get_ref();
        if !split.iter().any(|(p, _)| p == pool_name) {
            let known: Vec<&str> = split.iter().map(|(p, _)| p.as_str()).collect();
            return Err(self.err(
                pool.span(),
                format!(
                    "route \"{route}\": rollout pool \"{pool_name}\" is not in the route's split (its pools: {}); \
                     add it to the split, e.g. with weight 0",
                    known.join(", ")
                ),
            ));
        }
        if split.len() < 2 {
            return Err(self.err(
                pool.span(),
                format!("route \"{route}\": a rollout needs a second pool in the split to take traffic from"),
            ));
        }
        let steps = raw.steps.as_ref().ok_or_else(|| {
            self.err(
                table.clone(),
                format!("route \"{route}\": rollout has no steps; add e.g. steps = [5, 25, 50, 100]"),
            )
        })?;
        let mut out = Vec::with_capacity(steps.get_ref().len());
        let mut last = 0;
        for step in steps.get_ref() {
            let at = step.span();
            let fail = |why: String| self.err(at.clone(), format!("route \"{route}\": rollout step {why}"));
            let (percent, hold) = match step.get_ref() {
                RawStep::Percent(p) => (*p, None),
                RawStep::Table(t) => match (t.weight, t.pause) {
                    (None, Some(true)) if t.hold.is_none() => {
                        out.push(Step::Pause);
                        continue;
                    }
                    (None, Some(true)) => {
                        return Err(fail("{ pause = true } takes no hold; it waits for an operator".into()))
                    }
                    (Some(_), Some(_)) => {
                        return Err(fail("has both weight and pause; write one step for each".into()))
                    }
                    (None, _) => return Err(fail("table needs weight = PERCENT, or pause = true".into())),
                    (Some(p), None) => {
                        // A step table's values have no spans of their own: point at the step.
                        let what = format!("route \"{route}\": rollout step hold");
                        let hold = t
                            .hold
                            .as_ref()
                            .map(|h| self.duration(&Spanned::new(at.clone(), RawDuration(h.0.clone())), &what, false))
                            .transpose()?;
                        (p, hold)
                    }
                },
            };
            if !(1..=100).contains(&percent) {
                return Err(fail(format!("{percent}% is out of range; a step's share is a percent from 1 to 100")));
            }
            let percent = u32::try_from(percent).unwrap_or(100);
            if percent < last {
                return Err(fail(format!("{percent}% is below the step before it ({last}%); steps never go down")));
            }
            last = percent;
            out.push(Step::Weight { percent, hold });
        }
        if !out.iter().any(|s| matches!(s, Step::Weight { .. })) {
            return Err(self.err(
                steps.span(),
                format!("route \"{route}\": rollout steps are empty; give at least one percent, e.g. steps = [100]"),
            ));
        }
        let hold =
            self.duration_or(raw.hold.as_ref(), &format!("route \"{route}\": rollout hold"), DEFAULT_HOLD, false)?;
        let max_hold = self.duration_or(
            raw.max_hold.as_ref(),
            &format!("route \"{route}\": rollout max_hold"),
            DEFAULT_MAX_HOLD,
            true,
        )?;
        let bake =
            self.duration_or(raw.bake.as_ref(), &format!("route \"{route}\": rollout bake"), Duration::ZERO, true)?;
        let start = match raw.start.as_ref() {
            None => Start::OnNewVersion,
            Some(s) => match s.get_ref().as_str() {
                "on_new_version" => Start::OnNewVersion,
                "manual" => Start::Manual,
                other => {
                    return Err(self.err(
                        s.span(),
                        format!("route \"{route}\": rollout start \"{other}\" is unknown; write \"on_new_version\" or \"manual\""),
                    ))
                }
            },
        };
        Ok(Plan { pool: pool_name.clone(), steps: out, hold, max_hold, start, bake })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_err, parse_ok, with_routes};
    use super::*;

    fn route(rollout: &str) -> String {
        with_routes(&format!(
            "[[routes]]\nname = \"shop\"\nsplit = {{ blue = 100, canary = 0 }}\n[routes.rollout]\n{rollout}"
        ))
    }

    #[test]
    fn a_plan_with_every_kind_of_step() {
        let config = parse_ok(&route(
            "pool = \"canary\"\nsteps = [5, { weight = 25, hold = \"10m\" }, { pause = true }, 100]\nhold = \"1m\"\n\
             max_hold = \"3m\"\nstart = \"manual\"\nbake = \"30s\"\n",
        ));
        let plan = config.routes[0].rollout.clone().expect("a plan");
        assert_eq!(plan.pool, "canary");
        assert_eq!(
            plan.steps,
            vec![
                Step::Weight { percent: 5, hold: None },
                Step::Weight { percent: 25, hold: Some(Duration::from_secs(600)) },
                Step::Pause,
                Step::Weight { percent: 100, hold: None },
            ]
        );
        assert_eq!(
            (plan.hold, plan.max_hold, plan.bake),
            (Duration::from_secs(60), Duration::from_secs(180), Duration::from_secs(30))
        );
        assert_eq!(plan.start, Start::Manual);
    }

    #[test]
    fn defaults() {
        let plan = parse_ok(&route("pool = \"canary\"\nsteps = [100]\n")).routes[0].rollout.clone().unwrap();
        assert_eq!(
            (plan.hold, plan.max_hold, plan.bake, plan.start),
            (DEFAULT_HOLD, DEFAULT_MAX_HOLD, Duration::ZERO, Start::OnNewVersion)
        );
    }

    #[test]
    fn bad_plans_point_at_the_value() {
        // The rollout table starts on line 8; its keys from line 9.
        assert_err(
            &route("pool = \"green\"\nsteps = [5]\n"),
            "rollout pool \"green\" is not in the route's split",
            (9, 8),
        );
        assert_err(&route("pool = \"canary\"\n"), "rollout has no steps", (8, 1));
        assert_err(&route("pool = \"canary\"\nsteps = []\n"), "rollout steps are empty", (10, 9));
        assert_err(&route("pool = \"canary\"\nsteps = [5, 0]\n"), "0% is out of range", (10, 13));
        assert_err(&route("pool = \"canary\"\nsteps = [50, 25]\n"), "steps never go down", (10, 14));
        assert_err(&route("pool = \"canary\"\nsteps = [101]\n"), "101% is out of range", (10, 10));
        assert_err(&route("pool = \"canary\"\nsteps = [{ hold = \"1m\" }]\n"), "needs weight", (10, 10));
        assert_err(&route("pool = \"canary\"\nsteps = [5]\nstart = \"now\"\n"), "start \"now\" is unknown", (11, 9));
        assert_err(
            &route("pool = \"canary\"\nsteps = [5]\nhold = \"0s\"\n"),
            "rollout hold must be greater than zero",
            (11, 8),
        );
        assert_err(&route("pool = \"canary\"\nsteps = [\"5\"]\n"), "a percent like 25", (10, 10));
    }
}
