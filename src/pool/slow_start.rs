//! Slow start: a backend that has just joined its pool, or just come back
//! to it, takes a share of the pool's picks that grows from a floor to its
//! full share over the pool's `slow_start` window.
//!
//! A cold backend (empty caches, a JIT not warm, no pooled connections of
//! its own) is at its slowest in its first seconds; given its full share at
//! once it can fail requests, and a guard can trip a healthy version for it.
//! Envoy's `slow_start_config` and HAProxy's `slowstart` ramp its share up
//! instead, and so does this module, with Envoy's formula:
//!
//! `factor = max(MIN_FACTOR, (t / window) ^ (1 / aggression))`
//!
//! where `t` is the time since the backend became eligible. `MIN_FACTOR` is
//! 10 % (Envoy's default `min_weight_percent`): even at `t = 0` the backend
//! takes some traffic, so its warm-up actually warms it.
//!
//! **How the factor enters every `lb` policy.** The policies choose by
//! position, load or turn, not by weight, so the factor is applied after
//! the choice, as an acceptance test ([`super::Pool::pick`]): a warming
//! backend that was chosen is kept with probability `factor`, and otherwise
//! the pool chooses again (another random draw, the next turn of the round
//! robin, or another pair for p2c). Under `random` this is rejection
//! sampling, and the backend's share is exactly its weight `factor` against
//! the others' `1`, as Envoy's weighted pick gives. Under p2c, the warming
//! backend wins its comparisons as often as its in-flight count says (a
//! cold backend has few, so it would win often), and the test scales those
//! wins by `factor`: a win turned down is chosen again among the others
//! (in a pool of two every pair is the same pair); under `round_robin` its
//! turn passes to the next backend. The choice is made again at most [`MAX_DRAWS`] times, then the
//! last one stands: a pool whose backends are all warming still answers in
//! bounded time, and their shares stay equal to each other.
//!
//! A warm-up is also kept out of the pool's guard: while warm backends
//! beside it carry the version, a newcomer's cold start is its own, not the
//! version's ([`super::Pool::in_warm_up`], read where an exchange records
//! its outcome).
//!
//! The clock is `tokio::time`, so unit tests run the window in paused time.
//! A backend records when its warm-up began ([`WarmUp`]) whatever its pool's
//! config; only a pool with `slow_start` reads it, and the first pick that
//! finds the window over clears it, so a warm backend costs one load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SlowStartConfig;

/// The smallest share factor of a backend in slow start.
pub const MIN_FACTOR: f64 = 0.1;

/// How many times a pick is made when warming backends are turned down.
pub const MAX_DRAWS: usize = 8;

/// A backend's share factor `elapsed` into its warm-up under `config`:
/// from [`MIN_FACTOR`] to `1.0` at the end of the window.
pub fn factor(config: &SlowStartConfig, elapsed: Duration) -> f64 {
    if config.window.is_zero() || elapsed >= config.window {
        return 1.0;
    }
    let progress = elapsed.as_secs_f64() / config.window.as_secs_f64();
    // In Rust (the `libm` crate), as the judge's functions are: the binary
    // needs no `libm.so` (src/judge/math.rs says why).
    libm::pow(progress, 1.0 / config.aggression).clamp(MIN_FACTOR, 1.0)
}

/// When a backend's warm-up began, if it is warming.
///
/// Kept as nanoseconds past the backend's creation (`0`: not warming), so
/// reading it on the request path is one relaxed load.
#[derive(Debug)]
pub struct WarmUp {
    /// The origin of `since`.
    born: Instant,
    /// Nanoseconds from `born` to the start of the warm-up, plus one; `0`
    /// when the backend is warm.
    since: AtomicU64,
}

impl WarmUp {
    /// A warm backend's state (backends at startup start warm).
    pub fn warm() -> WarmUp {
        WarmUp { born: Instant::now(), since: AtomicU64::new(0) }
    }

    /// Begin a warm-up now.
    pub fn start(&self) {
        let nanos = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.since.store(nanos.saturating_add(1), Ordering::Relaxed);
    }

    /// Whether a warm-up may be under way (no pool has found it over yet).
    pub fn is_warming(&self) -> bool {
        self.since.load(Ordering::Relaxed) != 0
    }

    /// The share factor at `now` under `config`; `1.0` when warm. A
    /// warm-up found over is cleared.
    pub fn factor(&self, config: &SlowStartConfig, now: Instant) -> f64 {
        let since = self.since.load(Ordering::Relaxed);
        if since == 0 {
            return 1.0;
        }
        let began = self.born + Duration::from_nanos(since - 1);
        let f = factor(config, now.saturating_duration_since(began));
        if f >= 1.0 {
            // Only if no new warm-up began meanwhile.
            let _ = self.since.compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secs: u64, aggression: f64) -> SlowStartConfig {
        SlowStartConfig { window: Duration::from_secs(secs), aggression }
    }

    #[test]
    fn the_factor_grows_from_the_floor_to_one() {
        let c = config(10, 1.0);
        assert_eq!(factor(&c, Duration::ZERO), MIN_FACTOR);
        assert!((factor(&c, Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(factor(&c, Duration::from_secs(10)), 1.0);
        assert_eq!(factor(&c, Duration::from_secs(60)), 1.0);
        // A higher aggression ramps up faster early (Envoy's exponent 1/a).
        let fast = config(10, 2.0);
        assert!((factor(&fast, Duration::from_secs(4)) - 0.4f64.sqrt()).abs() < 1e-9);
        assert!(factor(&fast, Duration::from_secs(4)) > factor(&c, Duration::from_secs(4)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_up_runs_its_window_then_clears() {
        let c = config(30, 1.0);
        let w = WarmUp::warm();
        assert!(!w.is_warming());
        assert_eq!(w.factor(&c, Instant::now()), 1.0);
        w.start();
        assert!(w.is_warming());
        assert_eq!(w.factor(&c, Instant::now()), MIN_FACTOR);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!((w.factor(&c, Instant::now()) - 0.5).abs() < 1e-6);
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(w.factor(&c, Instant::now()), 1.0);
        assert!(!w.is_warming(), "a finished warm-up is cleared");
        // Another ineligible spell starts it over.
        w.start();
        assert_eq!(w.factor(&c, Instant::now()), MIN_FACTOR);
    }

    /// `n` backends, the last one warming since now, under `lb`.
    fn pool_of(n: u16, lb: crate::config::LbPolicy, window: u64) -> super::super::Pool {
        use crate::config::{BackendAddr, Scheme};
        use std::sync::Arc;
        let backends: Vec<_> = (0..n)
            .map(|i| {
                let addr = BackendAddr { scheme: Scheme::Http, authority: format!("127.0.0.1:{}", 9000 + i) };
                Arc::new(super::super::Backend::new("p".into(), addr, Duration::from_secs(1)))
            })
            .collect();
        if let Some(last) = backends.last() {
            last.warm_up().start();
        }
        super::super::Pool::new("p".into(), backends, lb).with_slow_start(Some(config(window, 1.0)))
    }

    /// Four backends, the last one warming since now, under `lb`.
    fn pool_with_a_newcomer(lb: crate::config::LbPolicy, window: u64) -> super::super::Pool {
        pool_of(4, lb, window)
    }

    /// The newcomer's share of `n` picks.
    fn newcomer_share(pool: &super::super::Pool, rng: &mut rand::rngs::SmallRng, n: usize) -> f64 {
        let newcomer = &pool.backends[3];
        let hits = (0..n).filter(|_| std::sync::Arc::ptr_eq(pool.pick(rng, None).unwrap(), newcomer)).count();
        hits as f64 / n as f64
    }

    /// In a pool of two under p2c every pair is the same pair, and a
    /// newcomer less loaded than the other backend wins every comparison:
    /// its wins are still scaled by its factor.
    #[tokio::test(start_paused = true)]
    async fn p2c_ramps_a_less_loaded_newcomer_in_a_pool_of_two() {
        use crate::config::LbPolicy;
        use rand::SeedableRng;
        use std::sync::Arc;
        let pool = pool_of(2, LbPolicy::P2c, 10);
        let _busy: Vec<_> = (0..3).map(|_| pool.backends[0].begin_request()).collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        let newcomer = &pool.backends[1];
        let n = 20_000;
        let hits = (0..n).filter(|_| Arc::ptr_eq(pool.pick(&mut rng, None).unwrap(), newcomer)).count();
        let share = hits as f64 / n as f64;
        // Kept with probability 0.1 each time it wins: about a tenth, where
        // without slow start it would take every request.
        assert!(share > 0.07 && share < 0.13, "share {share} at the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn every_lb_policy_ramps_a_newcomer_up() {
        use crate::config::LbPolicy;
        use rand::SeedableRng;
        for lb in [LbPolicy::P2c, LbPolicy::RoundRobin, LbPolicy::Random] {
            let pool = pool_with_a_newcomer(lb, 10);
            let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
            // At the floor, its weight is 0.1 against the others' 1: a
            // share of 0.1 / 3.1 = 3.2 % where its full share is 25 %.
            let early = newcomer_share(&pool, &mut rng, 20_000);
            assert!(early > 0.01 && early < 0.06, "{lb:?}: share {early} at the floor");
            assert!((pool.share_factor(&pool.backends[3]) - MIN_FACTOR).abs() < 1e-9);
            // Half-way: weight 0.5, a share of 0.5 / 3.5 = 14 %.
            tokio::time::advance(Duration::from_secs(5)).await;
            let half = newcomer_share(&pool, &mut rng, 20_000);
            assert!(half > 0.10 && half < 0.19, "{lb:?}: share {half} half-way");
            // After the window: its full quarter, and the warm-up cleared.
            tokio::time::advance(Duration::from_secs(5)).await;
            let full = newcomer_share(&pool, &mut rng, 20_000);
            assert!(full > 0.23 && full < 0.27, "{lb:?}: share {full} after the window");
            assert!(!pool.backends[3].warm_up().is_warming());
            assert_eq!(pool.share_factor(&pool.backends[3]), 1.0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_without_slow_start_ignores_warm_ups() {
        let pool = pool_with_a_newcomer(crate::config::LbPolicy::Random, 10).with_slow_start(None);
        use rand::SeedableRng;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let share = newcomer_share(&pool, &mut rng, 20_000);
        assert!(share > 0.23 && share < 0.27, "share {share}");
        assert_eq!(pool.share_factor(&pool.backends[3]), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn returning_to_eligibility_starts_a_warm_up() {
        let pool = pool_with_a_newcomer(crate::config::LbPolicy::Random, 10);
        let b = &pool.backends[0];
        assert!(!b.warm_up().is_warming());
        b.set_healthy(false);
        assert!(!b.warm_up().is_warming(), "an ineligible backend takes no picks to ramp");
        b.set_healthy(true);
        assert_eq!(pool.share_factor(b), MIN_FACTOR);
        let c = &pool.backends[1];
        c.set_ejected(true);
        c.set_ejected(false);
        assert_eq!(pool.share_factor(c), MIN_FACTOR);
        // Healthy again while still ejected: no warm-up until it is eligible.
        let d = &pool.backends[2];
        d.set_ejected(true);
        d.set_healthy(true);
        assert!(!d.warm_up().is_warming());
    }

    #[tokio::test(start_paused = true)]
    async fn a_warm_up_is_left_out_of_the_guard_only_beside_warm_backends() {
        let pool = pool_with_a_newcomer(crate::config::LbPolicy::Random, 10);
        let now = Instant::now;
        assert!(pool.in_warm_up(&pool.backends[3], now()), "the newcomer, beside three warm backends");
        assert!(!pool.in_warm_up(&pool.backends[0], now()), "a warm backend counts");
        // Without slow start, nothing is a warm-up.
        let plain = pool_with_a_newcomer(crate::config::LbPolicy::Random, 10).with_slow_start(None);
        assert!(!plain.in_warm_up(&plain.backends[3], now()));
        // The warm ones out of rotation: nothing else speaks for the version.
        for b in &pool.backends[..3] {
            b.set_healthy(false);
        }
        assert!(!pool.in_warm_up(&pool.backends[3], now()), "the only eligible backend counts");
        // Every backend warming (a new set of backends): they all count.
        for b in &pool.backends[..3] {
            b.set_healthy(true);
        }
        assert!(pool.backends.iter().all(|b| b.warm_up().is_warming()));
        assert!(!pool.in_warm_up(&pool.backends[3], now()), "a pool of newcomers counts");
        // After the window, the newcomer counts like the others.
        let pool = pool_with_a_newcomer(crate::config::LbPolicy::Random, 10);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!pool.in_warm_up(&pool.backends[3], now()));
    }
}
