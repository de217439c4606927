//! The story the demo tells, in four phases: all traffic on blue; a
//! progressive rollout of green, started by a hot reload, promoted step by
//! step on healthy verdicts; a rollout of the canary that goes bad and is
//! aborted on a failing verdict against green, its baseline; an operator
//! moves the route by the admin API and switches back.
//!
//! Phase lengths are shares of `--duration` ([`Plan`]), and where a phase
//! waits for the proxy (a reload, a step, a promotion, an abort) it polls
//! `/status` and `/rollouts` with a deadline rather than sleeping, so a
//! short run still shows everything and every wait ends.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use super::admin::{compact, effective_shares, history_lines, pool_status, revision, rollout_of, Admin};
use super::config::{config_text, write_atomically, Backends, Stage};
use super::display::{Screen, Urls};
use super::params::{FAIL_EVERY, MAX_ERROR_RATE, ROUTE};
use super::plumbing::lock;
use super::upstreams::Failing;

/// When each phase happens, as shares of the demo's duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    /// Phase 1: all traffic on blue.
    blue_only: Duration,
    /// Each rollout step's hold.
    hold: Duration,
    /// Phase 2: green's promotion is awaited until this much time since
    /// the start has passed.
    promoted_deadline: Duration,
    /// How long to show the traffic on green after its promotion.
    on_green: Duration,
    /// Phase 3: how long the canary serves its first step healthy.
    canary_healthy: Duration,
    /// Phase 3: the abort is awaited until this much time since the start
    /// has passed, leaving the rest for the operator.
    abort_deadline: Duration,
    /// How long to show the traffic after the abort.
    after_abort: Duration,
    /// Phase 4: how long to show the operator's split before switching back.
    on_blue: Duration,
    /// Longest wait for the file watcher to apply a rewritten config.
    reload_deadline: Duration,
}

impl Plan {
    pub(super) fn for_duration(duration: Duration) -> Plan {
        let share = |s: f64| duration.mul_f64(s);
        Plan {
            blue_only: share(0.08),
            hold: share(0.04).clamp(Duration::from_millis(400), Duration::from_secs(3)),
            promoted_deadline: share(0.50),
            on_green: share(0.05),
            canary_healthy: share(0.08),
            abort_deadline: share(0.85),
            after_abort: share(0.04),
            on_blue: share(0.05),
            reload_deadline: share(0.10).clamp(Duration::from_secs(2), Duration::from_secs(5)),
        }
    }

    /// Each rollout step's hold, for the config file.
    pub(super) fn hold(&self) -> Duration {
        self.hold
    }
}

/// What the story needs.
pub(super) struct Story {
    pub(super) admin: Admin,
    pub(super) screen: Arc<Mutex<Screen>>,
    pub(super) config_path: PathBuf,
    pub(super) backends: Backends,
    pub(super) canary: Arc<Failing>,
    pub(super) started: Instant,
    pub(super) end: Instant,
    pub(super) plan: Plan,
    pub(super) urls: Urls,
}

/// Where a rollout stands, as `/rollouts` shows it: (state, step).
type Position = (String, Option<u64>);

impl Story {
    pub(super) async fn tell(&self) -> Result<(), String> {
        let plan = self.plan;
        let status = self.admin.get("/status").await?;
        self.phase(
            "1/4",
            "blue",
            "all traffic on blue",
            &format!(
                "The config file says split = {{ blue = 100, green = 0, canary = 0 }}; revision {}.",
                revision(&status).unwrap_or(0)
            ),
        );
        self.hold(plan.blue_only).await;

        // Phase 2: a rollout of green, started by a config edit that the
        // proxy's own file watcher applies, promoted step by step.
        self.phase(
            "2/4",
            "rolling out green",
            "a progressive rollout of green, started by editing the config file",
            &format!(
                "Rewriting {} with [routes.rollout] pool = \"green\", steps = [10, 50, 100], hold = \"{}ms\"\n   \
                 (written to a temp file and renamed over it, as editors do; the proxy watches the file).\n   \
                 Each step is held, then taken only on a healthy verdict of green's guard \
                 (max_error_rate = {MAX_ERROR_RATE}, at least 20 requests).",
                self.config_path.display(),
                plan.hold.as_millis()
            ),
        );
        let reloaded = self.reload(Stage::GreenRollout).await?;
        let cause = self.cause_of(reloaded).await;
        self.event(&format!("   Hot reload applied: revision {reloaded} ({cause}). No connection was dropped."));
        let deadline = self.started + plan.promoted_deadline;
        let end = self.follow("green", Stage::GreenRollout, deadline, None, |(state, _)| state == "promoted").await?;
        if end.0 == "promoted" {
            let status = self.admin.get("/status").await?;
            let at = revision(&status).unwrap_or(0);
            self.event(&self.screen_alert(&format!(
                "   >>> {:.1}s: green PROMOTED through every step (revision {at}, {}). It serves the route: {}.",
                self.started.elapsed().as_secs_f64(),
                self.cause_of(at).await,
                effective_shares(&status)
            )));
        } else {
            self.event("   Green was not promoted in the time this demo allows; going on.");
        }
        self.hold(plan.on_green).await;

        // Phase 3: the next release, a canary judged against green, goes bad.
        self.phase(
            "3/4",
            "rolling out canary",
            "the next release, a canary, is rolled out over green, and goes bad",
            "Rewriting the file: split = { blue = 0, green = 100, canary = 0 }, [routes.rollout] pool = \"canary\",\n   \
             steps = [20, 50, 100]. The canary's guard judges it against green, its baseline, over the same time.",
        );
        let reloaded = self.reload(Stage::CanaryRollout).await?;
        self.event(&format!("   Hot reload applied: revision {reloaded} ({}).", self.cause_of(reloaded).await));
        let first_step = self.started + plan.abort_deadline;
        let at_step = self.follow("canary", Stage::CanaryRollout, first_step, None, |(_, step)| step.is_some()).await?;
        if at_step.1.is_some() {
            self.hold(plan.canary_healthy).await;
        }
        self.event(&format!(
            "   The canary now fails {} in {} requests (HTTP 500); green fails none.",
            FAIL_EVERY.0, FAIL_EVERY.1
        ));
        let failing_since = Instant::now();
        self.canary.start();
        let deadline = self.started + plan.abort_deadline;
        let end = self
            .follow("canary", Stage::CanaryRollout, deadline, Some(at_step), |(state, _)| state == "aborted")
            .await?;
        if end.0 == "aborted" {
            let rollout = rollout_of(&self.admin.get("/rollouts").await?).unwrap_or_default();
            let status = self.admin.get("/status").await?;
            self.event(&self.screen_alert(&format!(
                "   >>> {:.1}s: the canary's rollout ABORTED at step {} of 3, {:.1}s after it started failing: {}.",
                self.started.elapsed().as_secs_f64(),
                rollout["step"].as_u64().map_or(0, |s| s + 1),
                failing_since.elapsed().as_secs_f64(),
                rollout["reason"].as_str().unwrap_or("?")
            )));
            self.event(&format!(
                "   Rolled back: the canary's weight is 0 and the route is back where it came from: {}.\n   \
                 The judge's evidence: {}.",
                effective_shares(&status),
                evidence(&status, "canary")
            ));
        } else {
            self.event("   The canary's rollout was not aborted in the time this demo allows; going on.");
        }
        self.hold(plan.after_abort).await;

        // Phase 4: an operator moves traffic by the admin API, then switches back.
        self.phase("4/4", "operator", "an operator moves the route to blue, then switches back (admin API)", "");
        self.event(&format!(
            "   $ curl -X PUT http://{}/routes/{ROUTE}/split -H 'Content-Type: application/json' -d '{{\"blue\":100,\"green\":0}}'",
            self.urls.admin
        ));
        let (code, body) =
            self.admin.send(Method::PUT, &format!("/routes/{ROUTE}/split"), Some(r#"{"blue":100,"green":0}"#)).await?;
        if code != StatusCode::OK {
            return Err(format!("PUT /routes/{ROUTE}/split answered {code}: {body}"));
        }
        self.event(&format!("   {code}: {} -> revision {}", compact(&body), body["revision"]));
        lock(&self.screen).phase = "4/4 on blue".into();
        self.hold(plan.on_blue).await;

        self.event(&format!(
            "   $ curl -X POST http://{}/routes/{ROUTE}/switchback -H 'X-Cutover-Admin: 1'",
            self.urls.admin
        ));
        let (code, body) = self.admin.send(Method::POST, &format!("/routes/{ROUTE}/switchback"), None).await?;
        if code != StatusCode::OK {
            return Err(format!("POST /routes/{ROUTE}/switchback answered {code}: {body}"));
        }
        let switched = body["revision"].as_u64().unwrap_or(0);
        lock(&self.screen).phase = "4/4 switched back".into();
        let status = self.admin.get("/status").await?;
        self.event(&format!(
            "   {code}: {} -> switchback to revision {switched}; the route is now {}.",
            compact(&body),
            effective_shares(&status)
        ));
        let history = self.admin.get("/history").await?;
        self.event(&format!(
            "   $ curl http://{}/history   (newest first)\n{}",
            self.urls.admin,
            history_lines(&history, 12)
        ));

        let left = self.end.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            self.event(&format!(
                "   The story is told; traffic keeps flowing for {:.0}s more. Try the curl lines above.",
                left.as_secs_f64()
            ));
        }
        tokio::time::sleep_until(self.end).await;
        Ok(())
    }

    /// Rewrite the config file for `stage` and wait for the proxy to apply
    /// it (through its file watcher, or `POST /reload` past the deadline);
    /// the new revision.
    async fn reload(&self, stage: Stage) -> Result<u64, String> {
        let before = revision(&self.admin.get("/status").await?).unwrap_or(0);
        write_atomically(&self.config_path, &config_text(&self.backends, stage, self.plan.hold))
            .map_err(|e| e.to_string())?;
        let pool = stage.rolled_out().unwrap_or("blue");
        if let Some(revision) =
            self.wait_for_rollout_of(pool, before, Instant::now() + self.plan.reload_deadline).await?
        {
            return Ok(revision);
        }
        self.event(&format!(
            "   The file watcher has not applied it within {:?}; asking POST /reload instead.",
            self.plan.reload_deadline
        ));
        let (code, body) = self.admin.send(Method::POST, "/reload", None).await?;
        if code != StatusCode::OK {
            return Err(format!("POST /reload answered {code}: {body}"));
        }
        Ok(body["revision"].as_u64().unwrap_or(0))
    }

    /// Narrate `pool`'s rollout, a line per step it takes after `seen`,
    /// until `done` holds or the deadline; where it stands then.
    async fn follow(
        &self,
        pool: &str,
        stage: Stage,
        deadline: Instant,
        mut seen: Option<Position>,
        done: impl Fn(&Position) -> bool,
    ) -> Result<Position, String> {
        let steps = stage.steps();
        loop {
            let rollout = rollout_of(&self.admin.get("/rollouts").await?).unwrap_or_default();
            let position: Position =
                (rollout["state"].as_str().unwrap_or("none").to_string(), rollout["step"].as_u64());
            if rollout["pool"] == pool && seen.as_ref() != Some(&position) {
                if let (true, Some(step)) = (position.0 == "progressing", position.1) {
                    let status = self.admin.get("/status").await?;
                    let verdict = match step {
                        0 => "the rollout started".to_string(),
                        _ => format!("on a healthy verdict ({})", evidence(&status, pool)),
                    };
                    let share = steps.get(step as usize).copied().unwrap_or(0);
                    self.event(&format!(
                        "   {:.1}s: step {} of {}: {pool} at {share}%, {verdict} (revision {}).",
                        self.started.elapsed().as_secs_f64(),
                        step + 1,
                        steps.len(),
                        revision(&status).unwrap_or(0)
                    ));
                    let number = if stage == Stage::GreenRollout { "2/4" } else { "3/4" };
                    lock(&self.screen).phase = format!("{number} {pool} {share}%");
                }
                seen = Some(position.clone());
            }
            if rollout["pool"] == pool && done(&position) {
                return Ok(position);
            }
            if Instant::now() >= deadline {
                return Ok(position);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Announce a phase; `short` labels it in the live table.
    pub(super) fn phase(&self, number: &str, short: &str, title: &str, detail: &str) {
        let mut screen = lock(&self.screen);
        screen.phase = format!("{number} {short}");
        let at = self.started.elapsed().as_secs_f64();
        let mut text = screen.bold(&format!("\n== phase {number} ({at:.1}s): {title}"));
        if !detail.is_empty() {
            text.push_str("\n   ");
            text.push_str(detail);
        }
        screen.event(&text);
    }

    pub(super) fn event(&self, text: &str) {
        lock(&self.screen).event(text);
    }

    pub(super) fn screen_alert(&self, text: &str) -> String {
        lock(&self.screen).alert(text)
    }

    /// Sleep `length`, but never past the end of the demo.
    pub(super) async fn hold(&self, length: Duration) {
        tokio::time::sleep_until((Instant::now() + length).min(self.end)).await;
    }

    /// Poll until the revision is past `before` and `/rollouts` shows a
    /// rollout of `pool` (or, for blue, none); `None` at the deadline.
    async fn wait_for_rollout_of(&self, pool: &str, before: u64, deadline: Instant) -> Result<Option<u64>, String> {
        loop {
            let status = self.admin.get("/status").await?;
            if let Some(revision) = revision(&status).filter(|r| *r > before) {
                let rollouts = self.admin.get("/rollouts").await?;
                let rolled = rollout_of(&rollouts).and_then(|r| r["pool"].as_str().map(str::to_string));
                if rolled.as_deref().unwrap_or("blue") == pool {
                    return Ok(Some(revision));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cause `/history` gives for `revision`.
    pub(super) async fn cause_of(&self, revision: u64) -> String {
        let Ok(history) = self.admin.get("/history").await else { return "cause unknown".into() };
        history
            .as_array()
            .and_then(|revs| revs.iter().find(|r| r["revision"].as_u64() == Some(revision)))
            .and_then(|r| r["cause"].as_str())
            .unwrap_or("cause unknown")
            .to_string()
    }
}

/// The judge's evidence on `pool` in `/status`, in a few words.
fn evidence(status: &Value, pool: &str) -> String {
    let Some(guard) = pool_status(status, pool).map(|p| &p["guard"]) else { return "no guard".into() };
    let side = |v: &Value| {
        format!("{} of {} failed", v["failures"].as_u64().unwrap_or(0), v["requests"].as_u64().unwrap_or(0))
    };
    let evidence = &guard["evidence"];
    match guard["baseline"].as_str() {
        Some(baseline) => format!("{pool} {} vs {baseline} {}", side(&evidence["pool"]), side(&evidence["baseline"])),
        None => format!(
            "{pool}'s guard: {} over {:.1}s",
            side(&evidence["pool"]),
            evidence["span_s"].as_f64().unwrap_or(0.0)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_short_demo_still_has_room_for_every_phase() {
        for secs in [10, 15, 20, 60, 600] {
            let d = Duration::from_secs(secs);
            let plan = Plan::for_duration(d);
            // Green's three holds and the reload fit before its deadline.
            let green = plan.blue_only + plan.reload_deadline.min(Duration::from_secs(1)) + plan.hold * 3;
            assert!(green + Duration::from_secs(1) < plan.promoted_deadline, "{secs}s: {plan:?}");
            let canary = plan.promoted_deadline + plan.on_green + plan.canary_healthy;
            assert!(canary + Duration::from_secs(2) < plan.abort_deadline, "{secs}s: {plan:?}");
            let after = plan.abort_deadline + plan.after_abort + plan.on_blue;
            assert!(after <= d, "{secs}s: {plan:?}");
        }
    }
}
