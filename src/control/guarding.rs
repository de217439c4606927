//! The guards' side of the single writer: breaches reported from the
//! request path, failing verdicts from the judges' 250 ms tick, and the
//! trip either one makes. Apart from the writer's other changes because it
//! is driven by the traffic, not by an operator or the file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::state::{backend_names, Trip};
use super::writer::{effective, Control, State};
use crate::guard::{Breach, BreachReason, BreachReport, PoolGuard};
use crate::judge::{Verdict, VerdictKind};

impl Control {
    /// A guard reported a breach: trip the pool if that moves any traffic.
    pub fn on_breach(&self, pool: &str, breach: &Breach) {
        let cause = format!("guard: pool {pool}: {}", breach.detail);
        self.trip_by_guard(pool, breach.reason, &breach.detail, cause);
    }

    /// A breach reported from the request path: only the pool's current
    /// guard may trip it. A superseded guard (the pool got new backends or
    /// new settings) still sees the requests in flight to the old version;
    /// its breach is counted apart, and never trips the version in force.
    pub fn on_breach_report(&self, report: &BreachReport) {
        let current = self.lock().guards.get(&*report.pool).map(|g| g.id);
        if current == Some(report.guard) {
            self.on_breach(&report.pool, &report.breach);
            return;
        }
        let (pool, reason) = (&*report.pool, report.breach.reason.as_str());
        self.metrics.superseded_breaches.with_label_values(&[pool]).inc();
        tracing::info!(
            pool,
            reason,
            detail = %report.breach.detail,
            "guard of a superseded version of the pool breached; the version in force is not tripped"
        );
    }

    /// A guard judged its pool `failing` against its baseline: trip it as
    /// a breach does, with the verdict's reason as the history's cause.
    pub fn on_failing(&self, pool: &str, verdict: &Verdict) {
        self.trip_by_guard(pool, verdict.evidence.rule.into(), &verdict.reason, format!("guard: {}", verdict.reason));
    }

    /// Start `pool`'s guard afresh (an operator's reset): its window and
    /// judge, and what the tap kept of it for the fleet.
    pub(super) fn restart_guard(&self, state: &State, pool: &str) {
        if let Some(guard) = state.guards.get(pool) {
            guard.reset();
            if let Some(tap) = self.tick_tap.get() {
                tap.forget(pool);
            }
        }
    }

    /// Trip every pool the verdict feed newly judges failing. A replica
    /// that has just come to lead acts on every pool failing then: while it
    /// followed, it only counted them.
    pub(super) fn act_on_fed_verdicts(&self, failing: &mut FedFailing) {
        let verdicts = self.acting_verdicts();
        let now: BTreeSet<String> =
            verdicts.iter().filter(|(_, v)| v.kind == VerdictKind::Failing).map(|(p, _)| p.clone()).collect();
        let leads = self.decides_automatically();
        if leads && !failing.leading {
            failing.pools.clear();
        }
        failing.leading = leads;
        for pool in now.difference(&failing.pools) {
            if let Some(verdict) = verdicts.get(pool) {
                self.on_failing(pool, verdict);
            }
        }
        failing.pools = now;
    }

    fn trip_by_guard(&self, pool: &str, reason: BreachReason, detail: &str, cause: String) {
        self.metrics.guard_breaches.with_label_values(&[pool, reason.as_str()]).inc();
        if !self.decides_automatically() {
            // A follower in a fleet: the leader decides, on its verdicts.
            tracing::debug!(pool, detail, "guard breached; the fleet's leader decides whether to trip");
            return;
        }
        let mut state = self.lock();
        if state.trips.contains_key(pool) {
            return;
        }
        let Some(pc) = state.config.pool(pool) else { return };
        let before = effective(&state);
        let trip = Trip {
            reason: reason.into(),
            detail: detail.to_string(),
            revision: state.revision + 1,
            backends: backend_names(&pc.backends),
        };
        state.trips.insert(pool.to_string(), trip);
        let after = effective(&state);
        if after.splits == before.splits {
            state.trips.remove(pool);
            tracing::warn!(
                pool,
                detail,
                "guard breached, but no other pool can take this pool's traffic; its weight stays"
            );
            return;
        }
        self.metrics.rollbacks.with_label_values(&[pool, reason.as_str()]).inc();
        tracing::warn!(pool, reason = reason.as_str(), detail, "guard tripped: pool rolled back");
        state.origin = super::shared::Origin::Automatic;
        self.commit(&mut state, cause);
    }

    /// Consume breach reports and judge every guard periodically (a window
    /// can cross `min_requests` on a success, which `record` does not judge);
    /// each tick also feeds every guard's judge, trips a pool newly judged
    /// `failing` against its baseline, publishes the verdicts, and moves
    /// every rollout on with its canary's verdict.
    pub async fn run_guards(self: Arc<Self>, mut breaches: tokio::sync::mpsc::UnboundedReceiver<BreachReport>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut fed_failing = FedFailing::default();
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = breaches.recv() => match event {
                    Some(report) => self.on_breach_report(&report),
                    None => return,
                },
                _ = tick.tick() => {
                    let guards: Vec<Arc<PoolGuard>> = self.lock().guards.values().cloned().collect();
                    let now = tokio::time::Instant::now();
                    let mut verdicts = BTreeMap::new();
                    let fed = self.has_verdict_feed();
                    for guard in guards {
                        if let Some(breach) = guard.evaluate(now) {
                            self.on_breach(&guard.pool, &breach);
                        }
                        let (verdict, trips) = match self.tick_tap.get() {
                            Some(tap) => tap.tick(&guard, now),
                            None => guard.tick(now),
                        };
                        if trips && !fed {
                            self.on_failing(&guard.pool, &verdict);
                        }
                        verdicts.insert(guard.pool.to_string(), verdict);
                    }
                    self.verdicts.send_replace(Arc::new(verdicts));
                    if fed {
                        self.act_on_fed_verdicts(&mut fed_failing);
                    }
                    self.tick_rollouts(now);
                }
            }
        }
    }
}

/// The pools the verdict feed judged failing at the last tick, and whether
/// this replica led then: a trip is made when a pool turns failing, not
/// again while it stays so, and by the leader, so a pool that turned
/// failing while this replica followed is new to it once it leads.
#[derive(Debug, Default)]
pub(super) struct FedFailing {
    pools: BTreeSet<String>,
    leading: bool,
}
