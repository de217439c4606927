//! Guard windows: each guarded pool's recent outcomes and latencies, and
//! the rule that decides when the pool must be rolled back.
//!
//! A [`GuardWindow`] is a ring of time slices covering `window` (ten slices,
//! so the window slides in steps of a tenth of its length, as
//! linkerd2-proxy's breaker and Hystrix's rolling counters do). Each slice
//! holds atomic counters — requests, failures and a latency histogram — so
//! recording is a handful of relaxed atomic adds and never takes a lock.
//! A slice that has aged out is zeroed by the first recorder to reach it.
//! (Two recorders racing on that reset may lose a count; a guard judging
//! hundreds of requests does not care, and a lock here would cost every
//! request.)
//!
//! The latency histogram's bucket edges include `max_p99_latency` itself,
//! so "p99 is over the threshold" is decided exactly: it holds when more than
//! 1% of the window's requests took longer than the threshold. The p99 shown
//! in `/status` is the upper edge of the bucket holding the 99th percentile.
//!
//! [`judge`] is the trip rule of SPEC §3: nothing is judged below
//! `min_requests`; above it, a failure share over `max_error_rate` or a p99
//! over `max_p99_latency` is a [`Breach`]. What a breach does to routes is
//! decided in [`crate::control`].
//!
//! Each guard also has a [`Judgement`]: the verdict (`healthy`,
//! `inconclusive`, `failing`) of [`crate::judge`], fed per tick from
//! [`TickTally`] counters. With a `baseline`, the verdict alone decides a
//! trip and the window above only shows figures, so a failure the baseline
//! shares never trips the pool; without one, the rule above decides, as
//! SPEC §3 says, and the verdict is shown beside it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::GuardConfig;
use crate::judge::Verdict;

mod judgement;
mod tally;

pub use judgement::Judgement;
pub use tally::TickTally;

/// Something that ticks guards in place of [`PoolGuard::tick`] and keeps
/// what each judge took: a fleet replica's evidence tap. The guard owns
/// the trait so that the control task can hand its ticks to a tap without
/// knowing the fleet.
pub trait TickTap: Send + Sync + std::fmt::Debug {
    /// Tick `guard` as [`PoolGuard::tick`] does, keeping its counts.
    fn tick(&self, guard: &PoolGuard, now: Instant) -> (Verdict, bool);

    /// `pool`'s guard started again (a reset): drop what it counted and
    /// the tap kept, so that no evidence from before the reset leaves.
    fn forget(&self, _pool: &str) {}
}

/// Where a guard sends a breach, to the control task. The guard owns the
/// channel's type; the control side holds its receiver.
pub type BreachSender = tokio::sync::mpsc::UnboundedSender<BreachReport>;

/// A breach as the control task receives it: which guard, of which pool.
#[derive(Debug, Clone, PartialEq)]
pub struct BreachReport {
    /// The pool's name.
    pub pool: std::sync::Arc<str>,
    /// The reporting guard's [`PoolGuard::id`]: a guard of a version the
    /// config has since replaced still reports the requests in flight to
    /// its backends, and the control side ignores it by this.
    pub guard: u64,
    /// What breached.
    pub breach: Breach,
}

/// Identities of guards, unique in the process.
static NEXT_GUARD_ID: AtomicU64 = AtomicU64::new(1);

/// Number of slices in a window.
const SLICES: u64 = 10;

/// Latency bucket upper edges in microseconds (the threshold is added).
const EDGES_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// Why a pool breached its guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreachReason {
    /// Failure share over `max_error_rate`.
    ErrorRate,
    /// p99 over `max_p99_latency`.
    Latency,
    /// Failure share over the baseline's by more than `max_error_increase`.
    ErrorIncrease,
    /// Slow answers beyond `max_latency_ratio` × the baseline's p99.
    LatencyRatio,
}

impl BreachReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BreachReason::ErrorRate => "error_rate",
            BreachReason::Latency => "latency",
            BreachReason::ErrorIncrease => "error_increase",
            BreachReason::LatencyRatio => "latency_ratio",
        }
    }
}

impl From<crate::judge::Rule> for BreachReason {
    fn from(rule: crate::judge::Rule) -> BreachReason {
        use crate::judge::Rule;
        match rule {
            Rule::ErrorRate => BreachReason::ErrorRate,
            Rule::P99Latency => BreachReason::Latency,
            Rule::ErrorIncrease => BreachReason::ErrorIncrease,
            Rule::LatencyRatio => BreachReason::LatencyRatio,
        }
    }
}

/// A breached threshold, with the figures that breached it.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// Which threshold.
    pub reason: BreachReason,
    /// For humans: `error rate 0.31 > 0.01 over 30s, n=212`.
    pub detail: String,
}

/// What a window holds right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowStats {
    /// Requests recorded.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which took longer than the latency threshold (0 without one).
    pub slow: u64,
    /// Upper bucket edge holding the 99th percentile, if any request.
    pub p99: Option<Duration>,
}

impl WindowStats {
    /// Failure share, 0 when empty.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }
}

#[derive(Debug)]
struct Slice {
    /// Absolute slice number this slot currently holds.
    index: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// A sliding window of outcomes for one pool.
#[derive(Debug)]
pub struct GuardWindow {
    epoch: Instant,
    slice: Duration,
    /// Bucket upper edges, microseconds, ascending; the last bucket is open.
    edges: Box<[u64]>,
    /// Position of the threshold in `edges`, if a latency threshold is set.
    threshold_at: Option<usize>,
    slices: Box<[Slice]>,
}

impl GuardWindow {
    /// An empty window of length `window`, judging latency against `threshold`.
    pub fn new(window: Duration, threshold: Option<Duration>) -> GuardWindow {
        let mut edges: Vec<u64> = EDGES_US.to_vec();
        let threshold_us = threshold.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
        if let Some(t) = threshold_us {
            if !edges.contains(&t) {
                edges.push(t);
                edges.sort_unstable();
            }
        }
        let threshold_at = threshold_us.and_then(|t| edges.iter().position(|&e| e == t));
        let slices = (0..SLICES)
            .map(|_| Slice {
                // u64::MAX marks a slot that never held a slice.
                index: AtomicU64::new(u64::MAX),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                buckets: (0..=edges.len()).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        let slice = (window / SLICES as u32).max(Duration::from_millis(1));
        GuardWindow { epoch: Instant::now(), slice, edges: edges.into(), threshold_at, slices }
    }

    fn slice_index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(elapsed / self.slice.as_nanos().max(1)).unwrap_or(u64::MAX - 1)
    }

    /// Record one finished request.
    pub fn record(&self, now: Instant, failed: bool, latency: Duration) {
        let index = self.slice_index(now);
        let slot = &self.slices[(index % SLICES) as usize];
        let held = slot.index.load(Ordering::Acquire);
        if held != index {
            if held != u64::MAX && held > index {
                // A recorder that read the clock long ago: too old to count.
                return;
            }
            if slot.index.compare_exchange(held, index, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                slot.requests.store(0, Ordering::Relaxed);
                slot.failures.store(0, Ordering::Relaxed);
                for b in slot.buckets.iter() {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = self.edges.iter().position(|&edge| us <= edge).unwrap_or(self.edges.len());
        slot.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum of the slices inside the window at `now`.
    pub fn stats(&self, now: Instant) -> WindowStats {
        let current = self.slice_index(now);
        let mut requests = 0;
        let mut failures = 0;
        let mut buckets = vec![0u64; self.edges.len() + 1];
        for slot in self.slices.iter() {
            let held = slot.index.load(Ordering::Acquire);
            if held == u64::MAX || held > current || current - held >= SLICES {
                continue;
            }
            requests += slot.requests.load(Ordering::Relaxed);
            failures += slot.failures.load(Ordering::Relaxed);
            for (sum, b) in buckets.iter_mut().zip(slot.buckets.iter()) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        let slow = match self.threshold_at {
            Some(at) => buckets[at + 1..].iter().sum(),
            None => 0,
        };
        let total: u64 = buckets.iter().sum();
        let p99 = if total == 0 {
            None
        } else {
            // Smallest bucket whose cumulative count reaches 99% of requests.
            let need = total - total / 100;
            let mut cumulative = 0;
            let mut at = self.edges.len();
            for (i, count) in buckets.iter().enumerate() {
                cumulative += count;
                if cumulative >= need {
                    at = i;
                    break;
                }
            }
            let edge = self.edges.get(at).copied().unwrap_or_else(|| self.edges[self.edges.len() - 1]);
            Some(Duration::from_micros(edge))
        };
        WindowStats { requests, failures, slow, p99 }
    }

    /// Forget everything (a reset or a new version of the pool).
    pub fn clear(&self) {
        for slot in self.slices.iter() {
            slot.index.store(u64::MAX, Ordering::Release);
        }
    }
}

/// The trip rule: a breach once the window holds `min_requests`.
pub fn judge(config: &GuardConfig, stats: &WindowStats) -> Option<Breach> {
    if stats.requests < config.min_requests || stats.requests == 0 {
        return None;
    }
    let window = humantime::format_duration(config.window);
    let rate = stats.error_rate();
    if let Some(max) = config.max_error_rate.filter(|max| rate > *max) {
        return Some(Breach {
            reason: BreachReason::ErrorRate,
            detail: format!("error rate {} > {max} over {window}, n={}", short_rate(rate), stats.requests),
        });
    }
    if let Some(threshold) = config.max_p99_latency {
        // p99 > threshold  ⇔  more than 1% of requests were slower than it.
        if stats.slow * 100 > stats.requests {
            let p99 = stats.p99.map(|d| humantime::format_duration(d).to_string()).unwrap_or_default();
            return Some(Breach {
                reason: BreachReason::Latency,
                detail: format!(
                    "p99 latency {p99} > {} over {window}, n={} ({} slower)",
                    humantime::format_duration(threshold),
                    stats.requests,
                    stats.slow
                ),
            });
        }
    }
    None
}

/// A share with up to four decimals and no trailing zeros (`0.31`,
/// `0.0511`), so a rate just over a threshold never prints as equal to it.
fn short_rate(rate: f64) -> String {
    let text = format!("{rate:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// A guarded pool: its window, its thresholds, and an edge-triggered
/// breach flag so one breach is reported once, not once per request.
#[derive(Debug)]
pub struct PoolGuard {
    /// The pool's name.
    pub pool: std::sync::Arc<str>,
    /// This guard's identity: a new version of the pool (new backends) or
    /// new settings get a new guard, and a new identity.
    pub id: u64,
    /// Its thresholds.
    pub config: GuardConfig,
    /// Its outcomes.
    pub window: GuardWindow,
    /// Set while a breach has been reported and not yet cleared.
    breached: AtomicBool,
    /// Where breaches are reported (the control task).
    events: Option<BreachSender>,
    /// The verdict on this version of the pool.
    pub judgement: Judgement,
    /// Set once a `failing` verdict has been reported, until a reset.
    failing_reported: AtomicBool,
    /// Outcomes of the pool's backends warming up under slow start, left
    /// out of the window and the verdict.
    warming_excluded: AtomicU64,
    /// The same count in `cutover_guard_warming_excluded_total`, when
    /// metrics are on.
    warming_counter: Option<prometheus::IntCounter>,
}

impl PoolGuard {
    /// A guard with an empty window, reporting breaches to `events`.
    pub fn new(pool: std::sync::Arc<str>, config: GuardConfig, events: Option<BreachSender>) -> PoolGuard {
        let window = GuardWindow::new(config.window, config.max_p99_latency);
        let judgement = Judgement::new(&pool, config.judge(), Instant::now());
        PoolGuard {
            pool,
            id: NEXT_GUARD_ID.fetch_add(1, Ordering::Relaxed),
            config,
            window,
            breached: AtomicBool::new(false),
            events,
            judgement,
            failing_reported: AtomicBool::new(false),
            warming_excluded: AtomicU64::new(0),
            warming_counter: None,
        }
    }

    /// Whether the pool is judged against a baseline (then its verdict, not
    /// the window's thresholds, decides a trip).
    pub fn has_baseline(&self) -> bool {
        self.config.baseline.is_some()
    }

    /// Feed the tick's counts to the judge and return the verdict at `now`
    /// (the 250 ms task, each tick), with whether it is a `failing` verdict
    /// that trips the pool and was not reported before.
    pub fn tick(&self, now: Instant) -> (Verdict, bool) {
        self.tick_tapped(now, &mut |_, _, _| {})
    }

    /// [`PoolGuard::tick`], showing `tap` each side's counts as the judge
    /// takes them (see [`Judgement::tick_tapped`]): what a fleet replica
    /// publishes as its evidence.
    pub fn tick_tapped(&self, now: Instant, tap: &mut dyn FnMut(crate::judge::Side, u64, &[u64])) -> (Verdict, bool) {
        let verdict = self.judgement.tick_tapped(now, tap);
        let trips = self.has_baseline()
            && verdict.kind == crate::judge::VerdictKind::Failing
            && !self.failing_reported.swap(true, Ordering::AcqRel);
        (verdict, trips)
    }

    /// The same guard, also counting the warm-ups it leaves out in `counter`.
    pub fn with_warming_counter(mut self, counter: prometheus::IntCounter) -> PoolGuard {
        self.warming_counter = Some(counter);
        self
    }

    /// Count a finished request left out because its backend was warming
    /// up ([`crate::pool::Pool::in_warm_up`]).
    pub fn exclude_warming(&self) {
        self.warming_excluded.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = &self.warming_counter {
            counter.inc();
        }
    }

    /// How many outcomes this guard left out as warm-ups.
    pub fn warming_excluded(&self) -> u64 {
        self.warming_excluded.load(Ordering::Relaxed)
    }

    /// Record a finished request and report a new breach to the control task.
    pub fn observe(&self, now: Instant, failed: bool, latency: Duration) {
        self.judgement.record(failed, latency);
        if let Some(breach) = self.record(now, failed, latency) {
            if let Some(events) = &self.events {
                let _ = events.send(BreachReport { pool: self.pool.clone(), guard: self.id, breach });
            }
        }
    }

    /// Record a finished request; returns a breach the first time the
    /// window crosses a threshold. Only outcomes that can push the pool over
    /// a threshold (a failure, a slow answer) or that complete the minimum
    /// sample are judged, so a healthy stream of fast successes costs no sum.
    pub fn record(&self, now: Instant, failed: bool, latency: Duration) -> Option<Breach> {
        self.window.record(now, failed, latency);
        let slow = self.config.max_p99_latency.is_some_and(|t| latency > t);
        if !(failed || slow) || self.breached.load(Ordering::Relaxed) {
            return None;
        }
        self.evaluate(now)
    }

    /// Judge the window now (also called periodically, to catch a window
    /// that reaches `min_requests` on a success).
    pub fn evaluate(&self, now: Instant) -> Option<Breach> {
        if self.has_baseline() {
            // The verdict against the baseline decides instead.
            return None;
        }
        let breach = judge(&self.config, &self.window.stats(now));
        match breach {
            Some(b) => {
                if self.breached.swap(true, Ordering::AcqRel) {
                    None
                } else {
                    Some(b)
                }
            }
            None => {
                self.breached.store(false, Ordering::Release);
                None
            }
        }
    }

    /// Start afresh: empty window, breach re-armed, evidence cleared.
    pub fn reset(&self) {
        self.window.clear();
        self.breached.store(false, Ordering::Release);
        self.judgement.reset(Instant::now());
        self.failing_reported.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: f64, p99: Option<u64>, min: u64) -> GuardConfig {
        GuardConfig {
            max_error_rate: Some(rate),
            max_p99_latency: p99.map(Duration::from_millis),
            window: Duration::from_secs(30),
            min_requests: min,
            ..GuardConfig::default()
        }
    }

    const FAST: Duration = Duration::from_millis(3);

    #[tokio::test(start_paused = true)]
    async fn trips_at_the_request_that_crosses_the_rate_not_before_min_requests() {
        let guard = PoolGuard::new("canary".into(), config(0.1, None, 20), None);
        let now = Instant::now();
        // 19 failures: over the rate, but the window is below min_requests.
        for i in 0..19 {
            assert_eq!(guard.record(now, true, FAST), None, "judged at request {}", i + 1);
        }
        let breach = guard.record(now, true, FAST).expect("trip at the 20th request");
        assert_eq!(breach.reason, BreachReason::ErrorRate);
        assert_eq!(breach.detail, "error rate 1 > 0.1 over 30s, n=20");
        // Reported once while it lasts.
        assert_eq!(guard.record(now, true, FAST), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_at_the_threshold_does_not_trip() {
        let guard = PoolGuard::new("p".into(), config(0.1, None, 10), None);
        let now = Instant::now();
        for i in 0..100 {
            assert_eq!(guard.record(now, i % 10 == 9, FAST), None, "10% exactly is not over 10%");
        }
        assert!(guard.record(now, true, FAST).is_some(), "11/101 is over 10%");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reaching_min_requests_are_caught_by_evaluate() {
        let guard = PoolGuard::new("p".into(), config(0.1, None, 10), None);
        let now = Instant::now();
        for _ in 0..5 {
            guard.record(now, true, FAST);
        }
        for _ in 0..5 {
            assert_eq!(guard.record(now, false, FAST), None);
        }
        assert!(guard.evaluate(now).is_some(), "5/10 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn latency_trips_exactly_above_the_threshold() {
        let guard = PoolGuard::new("p".into(), config(1.0, Some(500), 100), None);
        let now = Instant::now();
        // 98 fast and 2 at exactly the threshold: p99 == 500ms, not over.
        for _ in 0..98 {
            guard.record(now, false, FAST);
        }
        for _ in 0..2 {
            assert_eq!(guard.record(now, false, Duration::from_millis(500)), None);
        }
        assert_eq!(guard.evaluate(now), None);
        // One answer a microsecond over the threshold: 1 of 101 is under 1%.
        assert_eq!(guard.record(now, false, Duration::from_micros(500_001)), None);
        // A second one: 2 of 102 are slower, so p99 is over 500ms.
        let breach = guard.record(now, false, Duration::from_micros(500_001)).expect("latency trip");
        assert_eq!(breach.reason, BreachReason::Latency);
        assert!(breach.detail.starts_with("p99 latency"), "{}", breach.detail);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_not_failures() {
        // The caller decides what a failure is; 4xx are recorded as successes.
        let guard = PoolGuard::new("p".into(), config(0.01, None, 10), None);
        let now = Instant::now();
        for _ in 0..50 {
            assert_eq!(guard.record(now, false, FAST), None);
        }
        assert_eq!(guard.evaluate(now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_slide_out_of_the_window() {
        let guard = PoolGuard::new("p".into(), config(0.1, None, 10), None);
        for _ in 0..10 {
            guard.record(Instant::now(), true, FAST);
        }
        assert_eq!(guard.window.stats(Instant::now()).failures, 10);
        tokio::time::advance(Duration::from_secs(31)).await;
        let stats = guard.window.stats(Instant::now());
        assert_eq!((stats.requests, stats.failures), (0, 0));
        assert_eq!(guard.evaluate(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_in_slices() {
        let guard = PoolGuard::new("p".into(), config(0.5, None, 1), None);
        guard.record(Instant::now(), false, FAST);
        tokio::time::advance(Duration::from_secs(15)).await;
        guard.record(Instant::now(), false, FAST);
        tokio::time::advance(Duration::from_secs(16)).await;
        // The first is 31 s old, the second 16 s.
        assert_eq!(guard.window.stats(Instant::now()).requests, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_empties_and_rearms() {
        let guard = PoolGuard::new("p".into(), config(0.1, None, 5), None);
        let now = Instant::now();
        for _ in 0..4 {
            guard.record(now, true, FAST);
        }
        assert!(guard.record(now, true, FAST).is_some());
        guard.reset();
        assert_eq!(guard.window.stats(now).requests, 0);
        for _ in 0..4 {
            assert_eq!(guard.record(now, true, FAST), None);
        }
        assert!(guard.record(now, true, FAST).is_some(), "re-armed after reset");
    }

    #[test]
    fn rates_print_without_false_equality() {
        assert_eq!(short_rate(0.31), "0.31");
        assert_eq!(short_rate(0.0511), "0.0511");
        assert_eq!(short_rate(0.05112), "0.0511");
        assert_eq!(short_rate(0.0), "0");
    }

    #[test]
    fn p99_reports_the_bucket_edge() {
        let w = GuardWindow::new(Duration::from_secs(10), Some(Duration::from_millis(300)));
        let now = Instant::now();
        for _ in 0..99 {
            w.record(now, false, Duration::from_millis(2));
        }
        w.record(now, false, Duration::from_millis(400));
        assert_eq!(w.stats(now).p99, Some(Duration::from_micros(2_500)));
        assert_eq!(w.stats(now).slow, 1);
    }
}
