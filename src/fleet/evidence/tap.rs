//! Where a replica's guard evidence gathers between two publications.
//!
//! The guard's 250 ms task feeds each pool's judge through
//! [`EvidenceTap::tick`], which shows the tap what the judge takes
//! ([`PoolGuard::tick_tapped`]) and adds it to the pool's counts since the
//! last publication. The local judge keeps every count (a replica judges
//! its own traffic whatever the fleet does), and a request does no more
//! work than without a fleet: the tap runs in the tick, once per pool.
//! The publisher [`EvidenceTap::cut`]s the counts once per interval.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::SideCounts;
use crate::guard::{PoolGuard, TickTap};
use crate::judge::{Side, Verdict};

/// Every guarded pool's evidence since the last [`EvidenceTap::cut`].
#[derive(Debug, Default)]
pub struct EvidenceTap {
    pools: Mutex<BTreeMap<String, Pending>>,
}

/// One pool's counts since the last cut.
#[derive(Debug, Default)]
struct Pending {
    limit_us: Option<u64>,
    sides: [Dense; 2],
    with_baseline: bool,
}

#[derive(Debug, Default)]
struct Dense {
    failures: u64,
    buckets: Vec<u64>,
}

/// One pool's evidence of one slice, as [`EvidenceTap::cut`] hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSlice {
    /// The pool.
    pub pool: String,
    /// Its `max_p99_latency` in microseconds (fixes the buckets' edges).
    pub limit_us: Option<u64>,
    /// The pool's outcomes.
    pub counts: SideCounts,
    /// The baseline's, if the pool has one.
    pub base: Option<SideCounts>,
}

impl EvidenceTap {
    /// An empty tap.
    pub fn new() -> EvidenceTap {
        EvidenceTap::default()
    }

    /// Tick `guard` (as [`PoolGuard::tick`]) and keep what its judge took.
    pub fn tick(&self, guard: &PoolGuard, now: Instant) -> (Verdict, bool) {
        let mut pools = self.lock();
        let pending = pools.entry(guard.pool.to_string()).or_default();
        pending.prepare(guard.config.max_p99_latency, guard.has_baseline());
        guard.tick_tapped(now, &mut |side, failures, buckets| pending.add(side, failures, buckets))
    }

    /// Add one tick's counts of `pool` (for a caller that tallies without a
    /// [`PoolGuard`]): `side`'s failures and requests by bucket of the
    /// judge's edges for `max_p99_latency = limit`.
    pub fn add(&self, pool: &str, limit: Option<Duration>, side: Side, failures: u64, buckets: &[u64]) {
        let mut pools = self.lock();
        let pending = pools.entry(pool.to_string()).or_default();
        pending.prepare(limit, pending.with_baseline || side == Side::Baseline);
        pending.add(side, failures, buckets);
    }

    /// Take every pool's counts since the last cut, leaving the tap empty;
    /// pools that saw no request are left out.
    pub fn cut(&self) -> Vec<PoolSlice> {
        let mut pools = self.lock();
        let mut slices = Vec::new();
        for (name, pending) in pools.iter_mut() {
            let [pool, base] = &mut pending.sides;
            let counts = SideCounts::from_dense(pool.failures, &pool.buckets);
            let base_counts = pending.with_baseline.then(|| SideCounts::from_dense(base.failures, &base.buckets));
            for side in [pool, base] {
                side.failures = 0;
                side.buckets.iter_mut().for_each(|n| *n = 0);
            }
            if counts.is_empty() && base_counts.as_ref().is_none_or(SideCounts::is_empty) {
                continue;
            }
            slices.push(PoolSlice { pool: name.clone(), limit_us: pending.limit_us, counts, base: base_counts });
        }
        slices
    }

    /// Drop `pool`'s counts since the last cut (its guard started again).
    pub fn forget(&self, pool: &str) {
        self.lock().remove(pool);
    }

    /// Forget pools not in `keep` (no longer guarded).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|pool, _| keep(pool));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Pending>> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TickTap for EvidenceTap {
    fn tick(&self, guard: &PoolGuard, now: Instant) -> (Verdict, bool) {
        EvidenceTap::tick(self, guard, now)
    }

    fn forget(&self, pool: &str) {
        EvidenceTap::forget(self, pool);
    }
}

impl Pending {
    /// Counts cut at other edges cannot be added to these: a pool whose
    /// `max_p99_latency` changed starts its slice again.
    fn prepare(&mut self, limit: Option<Duration>, with_baseline: bool) {
        let limit_us = limit.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        if limit_us != self.limit_us {
            *self = Pending { limit_us, ..Pending::default() };
        }
        self.with_baseline = with_baseline;
    }

    fn add(&mut self, side: Side, failures: u64, buckets: &[u64]) {
        let dense = &mut self.sides[side as usize];
        if dense.buckets.len() < buckets.len() {
            dense.buckets.resize(buckets.len(), 0);
        }
        for (sum, n) in dense.buckets.iter_mut().zip(buckets) {
            *sum += n;
        }
        dense.failures += failures;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuardConfig;
    use crate::judge::VerdictKind;

    const FAST: Duration = Duration::from_millis(3);

    #[tokio::test(start_paused = true)]
    async fn a_reset_guard_leaves_nothing_of_before_to_publish() {
        let guard = PoolGuard::new("canary".into(), GuardConfig { min_requests: 5, ..GuardConfig::default() }, None);
        let tap = EvidenceTap::new();
        for _ in 0..10 {
            guard.observe(Instant::now(), true, FAST);
        }
        tokio::time::advance(crate::judge::TICK).await;
        tap.tick(&guard, Instant::now());
        guard.reset();
        tap.forget("canary");
        assert!(tap.cut().is_empty(), "the counts from before the reset are gone");
        guard.observe(Instant::now(), false, FAST);
        tokio::time::advance(crate::judge::TICK).await;
        tap.tick(&guard, Instant::now());
        let slices = tap.cut();
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].counts.requests, 1, "what came after is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tick_fills_the_tap_and_the_local_judge_alike() {
        let config = GuardConfig {
            baseline: Some("stable".into()),
            min_requests: 20,
            max_p99_latency: Some(Duration::from_millis(300)),
            ..GuardConfig::default()
        };
        let guard = PoolGuard::new("canary".into(), config, None);
        let tap = EvidenceTap::new();
        let baseline = guard.judgement.baseline_tally().expect("a baseline").clone();
        let mut verdict = None;
        for _ in 0..80 {
            for i in 0..5 {
                guard.observe(Instant::now(), i == 0, FAST);
            }
            for _ in 0..20 {
                baseline.record(false, FAST);
            }
            tokio::time::advance(crate::judge::TICK).await;
            verdict = Some(tap.tick(&guard, Instant::now()).0);
        }
        assert_eq!(verdict.expect("ticked").kind, VerdictKind::Failing, "the local judge got every count");
        let slices = tap.cut();
        assert_eq!(slices.len(), 1);
        let slice = &slices[0];
        assert_eq!((slice.pool.as_str(), slice.limit_us), ("canary", Some(300_000)));
        assert_eq!((slice.counts.requests, slice.counts.failures), (400, 80));
        assert_eq!(slice.base.as_ref().map(|b| (b.requests, b.failures)), Some((1600, 0)));
        assert!(tap.cut().is_empty(), "a cut empties the tap");
    }

    #[test]
    fn a_new_latency_limit_starts_the_slice_again() {
        let tap = EvidenceTap::new();
        tap.add("p", None, Side::Pool, 1, &[0, 2]);
        tap.add("p", Some(Duration::from_millis(5)), Side::Pool, 0, &[3]);
        let slices = tap.cut();
        assert_eq!(slices[0].limit_us, Some(5_000));
        assert_eq!((slices[0].counts.requests, slices[0].counts.failures), (3, 0));
        assert_eq!(slices[0].base, None);
    }
}
