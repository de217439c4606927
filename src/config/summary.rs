//! What `cutover check` prints of a valid config: listeners, pools with
//! their guards, routes with their splits and, for a route with a rollout,
//! its plan — the steps and holds it will take and what judges each step —
//! so an operator sees before a reload how a release will proceed.

use std::fmt::Write;
use std::time::Duration;

use super::{Config, GuardConfig, HostMatch};
use crate::rollout::{Plan, Start, Step};

impl Config {
    /// A human summary of routes, pools, weights and rollout plans.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let listen: Vec<String> = self.server.listen.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "listen: {}  admin: {}", listen.join(", "), self.admin.listen);
        let _ = writeln!(out, "pools:");
        for pool in &self.pools {
            let backends: Vec<String> = pool.backends.iter().map(|b| b.to_string()).collect();
            let guard = match &pool.guard {
                Some(g) => {
                    let mut parts = Vec::new();
                    if let Some(baseline) = &g.baseline {
                        parts.push(format!("vs {baseline} +{}", g.max_error_increase));
                    }
                    if let Some(rate) = g.max_error_rate {
                        parts.push(format!("error rate <= {rate}"));
                    }
                    format!("  guard: {}", parts.join(", "))
                }
                None => String::new(),
            };
            let _ = writeln!(out, "  {:<12} {}{guard}", pool.name, backends.join(", "));
        }
        let _ = writeln!(out, "routes:");
        for route in &self.routes {
            let host = match &route.host {
                HostMatch::Any => "*".to_string(),
                HostMatch::Exact(h) => h.clone(),
                HostMatch::Wildcard(suffix) => format!("*{suffix}"),
            };
            let total: u64 = route.split.iter().map(|(_, w)| u64::from(*w)).sum();
            let split: Vec<String> = route
                .split
                .iter()
                .map(|(pool, w)| format!("{pool} {w} ({:.0}%)", 100.0 * f64::from(*w) / total as f64))
                .collect();
            let _ = writeln!(out, "  {:<12} {host}{}  ->  {}", route.name, route.path_prefix, split.join(", "));
            if let Some(plan) = &route.rollout {
                let guard = self.pool(&plan.pool).and_then(|p| p.guard.as_ref());
                out.push_str(&rollout_lines(plan, guard));
            }
        }
        out
    }
}

/// A rollout plan under its route: the steps with their holds, then how
/// each step is judged and when the rollout starts.
fn rollout_lines(plan: &Plan, guard: Option<&GuardConfig>) -> String {
    let steps: Vec<String> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| match step {
            Step::Weight { percent, .. } => format!("{percent}% for {}", human(plan.hold_of(i))),
            Step::Pause => "pause for an operator".to_string(),
        })
        .collect();
    let start = match plan.start {
        Start::OnNewVersion => "starts by itself on a new version",
        Start::Manual => "starts when an operator starts it",
    };
    let bake = if plan.bake.is_zero() { "no bake".to_string() } else { format!("bake {}", human(plan.bake)) };
    let judged = match guard {
        Some(g) => match &g.baseline {
            Some(baseline) => {
                let mut text = format!(
                    "against baseline {baseline}: error increase <= {} at confidence {}",
                    g.max_error_increase, g.confidence
                );
                if let Some(ratio) = g.max_latency_ratio {
                    let _ = write!(text, ", latency <= {ratio} x its p99");
                }
                text
            }
            None => {
                let mut limits = Vec::new();
                if let Some(rate) = g.max_error_rate {
                    limits.push(format!("error rate <= {rate}"));
                }
                if let Some(p99) = g.max_p99_latency {
                    limits.push(format!("p99 <= {}", human(p99)));
                }
                format!(
                    "by {}'s guard: {} over {}, at least {} requests",
                    plan.pool,
                    limits.join(", "),
                    human(g.window),
                    g.min_requests
                )
            }
        },
        None => format!("by nothing: pool {} has no guard, so each step pauses after max_hold", plan.pool),
    };
    format!(
        "    rollout of {}: {}\n      each step needs a healthy verdict {judged}; inconclusive for {} \
         pauses; failing aborts\n      {start}; {bake}\n",
        plan.pool,
        steps.join(", "),
        human(plan.max_hold)
    )
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_rollout_is_summarised_with_its_steps_holds_and_judgement() {
        let text = r#"
[pools.stable]
backends = ["127.0.0.1:9001"]
[pools.canary]
backends = ["127.0.0.1:9002"]
[pools.canary.guard]
baseline = "stable"
max_latency_ratio = 1.5
[[routes]]
name = "shop"
split = { stable = 100, canary = 0 }
[routes.rollout]
pool = "canary"
steps = [5, { weight = 25, hold = "10m" }, { pause = true }, 100]
hold = "5m"
max_hold = "30m"
bake = "1h"
"#;
        let config = crate::config::parse(Path::new("t.toml"), text).unwrap();
        let summary = config.summary();
        for expected in [
            "rollout of canary: 5% for 5m, 25% for 10m, pause for an operator, 100% for 5m",
            "healthy verdict against baseline stable: error increase <= ",
            "latency <= 1.5 x its p99",
            "inconclusive for 30m pauses; failing aborts",
            "starts by itself on a new version; bake 1h",
        ] {
            assert!(summary.contains(expected), "{expected:?} not in:\n{summary}");
        }
    }

    #[test]
    fn a_rollout_without_a_guard_says_nothing_judges_it() {
        let text = r#"
[pools.stable]
backends = ["127.0.0.1:9001"]
[pools.canary]
backends = ["127.0.0.1:9002"]
[[routes]]
name = "shop"
split = { stable = 100, canary = 0 }
[routes.rollout]
pool = "canary"
steps = [50, 100]
start = "manual"
"#;
        let config = crate::config::parse(Path::new("t.toml"), text).unwrap();
        let summary = config.summary();
        assert!(summary.contains("pool canary has no guard"), "{summary}");
        assert!(summary.contains("starts when an operator starts it; no bake"), "{summary}");
    }
}
