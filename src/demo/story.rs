//! The story the demo tells, in four phases: all traffic on blue; a hot
//! reload sends 20% to the canary; the canary fails and the guard trips it;
//! an operator shifts the route to green and switches back.
//!
//! Phase lengths are shares of `--duration` ([`Plan`]), and where a phase
//! waits for the proxy (a reload, a trip) it polls `/status` with a
//! deadline rather than sleeping, so a short run still shows everything.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;

use super::admin::{compact, effective_split, effective_weight, history_lines, revision, trip_of, Admin, TripSeen};
use super::config::{config_text, write_atomically, Backends, Split};
use super::display::{Screen, Urls};
use super::params::{FAIL_EVERY, MAX_ERROR_RATE, ROUTE};
use super::plumbing::lock;
use super::upstreams::Failing;

/// When each phase happens, as shares of the demo's duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    /// Phase 1: all traffic on blue.
    blue_only: Duration,
    /// Phase 2: the canary at 20%, healthy.
    canary_healthy: Duration,
    /// Phase 3: the canary fails; the trip is awaited until this much time
    /// since the start has passed, leaving the rest for the switchback.
    trip_deadline: Duration,
    /// How long to show the traffic back on blue after the trip.
    after_trip: Duration,
    /// Phase 4: how long to show the traffic on green before switching back.
    on_green: Duration,
    /// Longest wait for the file watcher to apply a rewritten config.
    reload_deadline: Duration,
}

impl Plan {
    pub(super) fn for_duration(duration: Duration) -> Plan {
        let share = |s: f64| duration.mul_f64(s);
        Plan {
            blue_only: share(0.12),
            canary_healthy: share(0.15),
            trip_deadline: share(0.70),
            after_trip: share(0.10),
            on_green: share(0.12),
            reload_deadline: share(0.10).clamp(Duration::from_secs(2), Duration::from_secs(5)),
        }
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

        // Phase 2: a config edit, applied by the proxy's own file watcher.
        let before = revision(&status).unwrap_or(0);
        self.phase(
            "2/4",
            "canary at 20%",
            "a canary release, by editing the config file",
            &format!(
                "Rewriting {} with split = {{ blue = 80, green = 0, canary = 20 }}\n   \
                 (written to a temp file and renamed over it, as editors do; the proxy watches the file).",
                self.config_path.display()
            ),
        );
        write_atomically(&self.config_path, &config_text(&self.backends, &Split::CANARY_20))
            .map_err(|e| e.to_string())?;
        let reloaded = self.wait_for_revision_after(before, Instant::now() + plan.reload_deadline).await?;
        let revision = match reloaded {
            Some(revision) => revision,
            None => {
                self.event(&format!(
                    "   The file watcher has not applied it within {:?}; asking POST /reload instead.",
                    plan.reload_deadline
                ));
                let (code, body) = self.admin.send(Method::POST, "/reload", None).await?;
                if code != StatusCode::OK {
                    return Err(format!("POST /reload answered {code}: {body}"));
                }
                body["revision"].as_u64().unwrap_or(0)
            }
        };
        let cause = self.cause_of(revision).await;
        self.event(&format!("   Hot reload applied: revision {revision} ({cause}). No connection was dropped."));
        self.hold(plan.canary_healthy).await;

        // Phase 3: the canary goes bad; the guard must trip it by itself.
        self.phase(
            "3/4",
            "canary failing",
            "the canary goes bad",
            &format!(
                "The canary now fails {} in {} requests (HTTP 500). Its guard: max_error_rate = {MAX_ERROR_RATE}, \
                 window = \"10s\", min_requests = 50.",
                FAIL_EVERY.0, FAIL_EVERY.1
            ),
        );
        let failing_since = Instant::now();
        self.canary.start();
        let deadline = self.started + plan.trip_deadline;
        match self.wait_for_trip(deadline).await? {
            Some(trip) => {
                let after = failing_since.elapsed().as_secs_f64();
                self.event(&self.screen_alert(&format!(
                    "   >>> {:.1}s: the guard TRIPPED the canary, {after:.1}s after it started failing: \
                     {} (reason {}, revision {}).",
                    self.started.elapsed().as_secs_f64(),
                    trip.detail,
                    trip.reason,
                    trip.revision
                )));
                self.event(&format!(
                    "   Its weight is now 0: the proxy sends its share to blue. Effective split: {}.",
                    trip.effective
                ));
            }
            None => self.event("   The guard has not tripped the canary in the time this demo allows; going on."),
        }
        self.hold(plan.after_trip).await;

        // Phase 4: an operator moves traffic by the admin API, then switches back.
        self.phase("4/4", "operator", "an operator shifts to green, then switches back (admin API)", "");
        self.event(&format!(
            "   $ curl -X PUT http://{}/routes/{ROUTE}/split -H 'Content-Type: application/json' -d '{{\"blue\":0,\"green\":100}}'",
            self.urls.admin
        ));
        let (code, body) =
            self.admin.send(Method::PUT, &format!("/routes/{ROUTE}/split"), Some(r#"{"blue":0,"green":100}"#)).await?;
        if code != StatusCode::OK {
            return Err(format!("PUT /routes/{ROUTE}/split answered {code}: {body}"));
        }
        self.event(&format!("   {code}: {} -> revision {}", compact(&body), body["revision"]));
        lock(&self.screen).phase = "4/4 on green".into();
        self.hold(plan.on_green).await;

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
            "   {code}: {} -> switchback to revision {switched}; effective split now {}.",
            compact(&body),
            effective_split(&status)
        ));
        let history = self.admin.get("/history").await?;
        self.event(&format!(
            "   $ curl http://{}/history   (newest first)\n{}",
            self.urls.admin,
            history_lines(&history, 6)
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

    /// Poll `/status` until its revision is past `before` and the canary
    /// has weight in the route; `None` at the deadline.
    pub(super) async fn wait_for_revision_after(&self, before: u64, deadline: Instant) -> Result<Option<u64>, String> {
        loop {
            let status = self.admin.get("/status").await?;
            if let Some(revision) = revision(&status).filter(|r| *r > before) {
                if effective_weight(&status, "canary").unwrap_or(0) > 0 {
                    return Ok(Some(revision));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll `/status` until the canary shows a trip; `None` at the deadline.
    pub(super) async fn wait_for_trip(&self, deadline: Instant) -> Result<Option<TripSeen>, String> {
        loop {
            let status = self.admin.get("/status").await?;
            if let Some(trip) = trip_of(&status, "canary") {
                return Ok(Some(trip));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_short_demo_still_has_room_for_every_phase() {
        for secs in [10, 15, 60, 600] {
            let d = Duration::from_secs(secs);
            let plan = Plan::for_duration(d);
            let before_trip = plan.blue_only + plan.reload_deadline + plan.canary_healthy;
            assert!(before_trip + Duration::from_secs(2) < plan.trip_deadline, "{secs}s: {plan:?}");
            let after = plan.trip_deadline + plan.after_trip + plan.on_green;
            assert!(after <= d, "{secs}s: {plan:?}");
        }
    }
}
