//! The judge of one version of a guarded pool, fed each tick.
//!
//! A [`Judgement`] joins the pure [`Judge`] to the request path: the
//! guarded pool's requests and its baseline's are counted in two
//! [`TickTally`]s (the baseline's is shared with the baseline pool, which
//! counts into it whether or not it has a guard of its own), and every
//! 250 ms the guard task calls [`Judgement::tick`], which hands both
//! tallies to the judge at the same instant, so both pools' outcomes of a
//! tick land in the same step of its tests, and returns the verdict. The
//! judge's lock is taken only there and by a reset, never by a request.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::tally::TickTally;
use crate::judge::{Judge, JudgeConfig, Side, Verdict};

/// The verdict on one guarded pool, and the counts that feed it.
#[derive(Debug)]
pub struct Judgement {
    pool: TickTally,
    /// Counted by the baseline pool's requests (only with a baseline).
    baseline: Option<Arc<TickTally>>,
    judge: Mutex<Fed>,
}

/// The judge and the buffer its tallies are taken into.
#[derive(Debug)]
struct Fed {
    judge: Judge,
    buckets: Vec<u64>,
}

impl Judgement {
    /// A judgement of `pool` by `config`, its evidence starting at `now`.
    pub fn new(pool: &str, config: JudgeConfig, now: Instant) -> Judgement {
        let with_baseline = config.baseline.is_some();
        let judge = Judge::new(pool, config, now);
        let edges = judge.edges().clone();
        Judgement {
            pool: TickTally::new(edges.clone()),
            baseline: with_baseline.then(|| Arc::new(TickTally::new(edges))),
            judge: Mutex::new(Fed { judge, buckets: Vec::new() }),
        }
    }

    /// Count one finished request of the guarded pool.
    pub fn record(&self, failed: bool, latency: Duration) {
        self.pool.record(failed, latency);
    }

    /// Where the baseline pool counts its requests, if there is a baseline.
    pub fn baseline_tally(&self) -> Option<&Arc<TickTally>> {
        self.baseline.as_ref()
    }

    /// Hand the tick's counts to the judge and return its verdict at `now`.
    pub fn tick(&self, now: Instant) -> Verdict {
        self.tick_tapped(now, &mut |_, _, _| {})
    }

    /// [`Judgement::tick`], showing `tap` what the judge takes: for each
    /// side (the baseline's only with a baseline), the tick's failures and
    /// its requests by latency bucket of [`Judgement::edges`].
    pub fn tick_tapped(&self, now: Instant, tap: &mut dyn FnMut(Side, u64, &[u64])) -> Verdict {
        let mut fed = self.lock();
        let Fed { judge, buckets } = &mut *fed;
        let failures = self.pool.take(buckets);
        tap(Side::Pool, failures, buckets);
        judge.record_tally(Side::Pool, failures, buckets, now);
        if let Some(baseline) = &self.baseline {
            let failures = baseline.take(buckets);
            tap(Side::Baseline, failures, buckets);
            judge.record_tally(Side::Baseline, failures, buckets, now);
        }
        judge.verdict(now)
    }

    /// Whether the pool is judged against a baseline (then a tap sees both
    /// sides each tick).
    pub fn has_baseline(&self) -> bool {
        self.baseline.is_some()
    }

    /// Ticks judged since the evidence began (shows the judge ran).
    pub fn ticks(&self) -> u64 {
        self.lock().judge.ticks()
    }

    /// Clear the evidence (an operator's reset): the verdict starts again.
    pub fn reset(&self, now: Instant) {
        let mut fed = self.lock();
        let Fed { judge, buckets } = &mut *fed;
        self.pool.take(buckets);
        if let Some(baseline) = &self.baseline {
            baseline.take(buckets);
        }
        judge.reset(now);
    }

    fn lock(&self) -> MutexGuard<'_, Fed> {
        // The judge is left whole between calls; a panic elsewhere must not
        // stop the guard.
        self.judge.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::VerdictKind;

    const FAST: Duration = Duration::from_millis(3);

    fn against_stable() -> JudgeConfig {
        JudgeConfig { baseline: Some("stable".into()), min_requests: 20, ..JudgeConfig::default() }
    }

    /// Each tick: `n` canary requests failing one in `every`, and nine times
    /// as many stable ones, all fine.
    async fn feed(judgement: &Judgement, ticks: u32, n: u32, every: u32) -> Verdict {
        let baseline = judgement.baseline_tally().expect("a baseline").clone();
        let mut verdict = judgement.tick(Instant::now());
        for _ in 0..ticks {
            for i in 0..n {
                judgement.record((i + 1) % every == 0, FAST);
            }
            for _ in 0..n * 9 {
                baseline.record(false, FAST);
            }
            tokio::time::advance(crate::judge::TICK).await;
            verdict = judgement.tick(Instant::now());
        }
        verdict
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_failing_more_than_its_baseline_is_failing() {
        let judgement = Judgement::new("canary", against_stable(), Instant::now());
        let verdict = feed(&judgement, 120, 5, 2).await;
        assert_eq!(verdict.kind, VerdictKind::Failing, "{}", verdict.reason);
        assert!(verdict.reason.starts_with("canary failing:"), "{}", verdict.reason);
        assert!(judgement.ticks() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_like_its_baseline_is_healthy_and_a_reset_clears_it() {
        let judgement = Judgement::new("canary", against_stable(), Instant::now());
        let verdict = feed(&judgement, 400, 5, u32::MAX).await;
        assert_eq!(verdict.kind, VerdictKind::Healthy, "{}", verdict.reason);
        judgement.reset(Instant::now());
        let verdict = judgement.tick(Instant::now());
        assert_eq!(verdict.kind, VerdictKind::Inconclusive, "{}", verdict.reason);
        assert_eq!(verdict.evidence.pool.requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_sees_what_the_judge_takes_and_takes_nothing_from_it() {
        let tapped = Judgement::new("canary", against_stable(), Instant::now());
        let plain = Judgement::new("canary", against_stable(), Instant::now());
        let mut seen = [(0u64, 0u64); 2];
        for _ in 0..120 {
            for judgement in [&tapped, &plain] {
                for i in 0..5 {
                    judgement.record(i % 2 == 0, FAST);
                }
                let baseline = judgement.baseline_tally().expect("a baseline");
                for _ in 0..45 {
                    baseline.record(false, FAST);
                }
            }
            tokio::time::advance(crate::judge::TICK).await;
            let now = Instant::now();
            let with_tap = tapped.tick_tapped(now, &mut |side, failures, buckets| {
                let total = &mut seen[side as usize];
                total.0 += buckets.iter().sum::<u64>();
                total.1 += failures;
            });
            let without = plain.tick(now);
            assert_eq!(with_tap.kind, without.kind);
            assert_eq!(with_tap.evidence, without.evidence, "the tap changes nothing the judge sees");
        }
        assert_eq!(seen, [(600, 360), (5400, 0)]);
        assert_eq!(plain.tick(Instant::now()).kind, VerdictKind::Failing);
    }
}
