//! Pools of interchangeable backends, and the choice of one backend per
//! request.
//!
//! A [`Pool`] is rebuilt with every snapshot, but the [`Backend`]s inside it
//! are not: a backend is identified by pool name + address, and a reload that
//! keeps it hands the same `Arc<Backend>` to the new snapshot, so its idle
//! upstream connections, in-flight count and statistics carry over. A backend
//! that leaves the config is told to drain (see [`backend`]).
//!
//! Balancing policies are small functions over the pool's backend slice:
//! power of two choices on in-flight requests (the default, as in tower's
//! `p2c` and Envoy's least-request), round robin, and uniform random. All take
//! the request's RNG, so a seeded run is reproducible.

pub mod backend;
pub(crate) mod conn;
pub mod failure;
pub mod h1;
pub mod session;
pub mod slow_start;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

pub use backend::{Backend, BackendKey, Reuse};
pub use conn::{BoxError, Conn, ConnectError, SendResult, Sending, Timeouts, Transport, UpstreamConn};
pub use failure::UpstreamFailure;
pub use h1::{H1Body, H1Conn, H1Error, H1Head};

use crate::config::{LbPolicy, SlowStartConfig};
use crate::grpc::GrpcCodes;

/// Pools up to this size collect their usable backends on the stack when
/// some backend is out of rotation; larger ones allocate.
const STACK_CANDIDATES: usize = 32;

/// One pool in one snapshot.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name from the config.
    pub name: Arc<str>,
    /// Its backends, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// How a backend is chosen.
    pub lb: LbPolicy,
    /// The pool's guard window, if it has a `[guard]`; shared across
    /// snapshots so a reload keeps its history.
    pub guard: Option<Arc<crate::guard::PoolGuard>>,
    /// Where this pool's outcomes are counted for the guards that judge
    /// another pool against it (`baseline = "this pool"`).
    pub baseline_for: Vec<Arc<crate::guard::TickTally>>,
    /// Whether the pool is rolled back (tripped) in this snapshot.
    pub tripped: bool,
    /// Whether a request that may reach a backend twice goes again (on
    /// another backend when there is one) after its connection closed
    /// before any answer came. On by default.
    pub retry_unanswered: bool,
    /// How backends that join or return ramp up their share, if they do.
    pub slow_start: Option<SlowStartConfig>,
    /// The `grpc-status` codes that count as a backend's failure in a gRPC
    /// answer (see [`crate::grpc`]).
    pub grpc_failures: GrpcCodes,
    /// Round-robin cursor (only used by [`LbPolicy::RoundRobin`]).
    next: AtomicUsize,
}

impl Pool {
    /// A pool over `backends`, chosen among by `lb`.
    pub fn new(name: Arc<str>, backends: Vec<Arc<Backend>>, lb: LbPolicy) -> Pool {
        Pool {
            name,
            backends,
            lb,
            guard: None,
            baseline_for: Vec::new(),
            tripped: false,
            retry_unanswered: true,
            slow_start: None,
            grpc_failures: GrpcCodes::SERVER,
            next: AtomicUsize::new(0),
        }
    }

    /// The same pool, with backends ramping up by `slow_start`.
    pub fn with_slow_start(mut self, slow_start: Option<SlowStartConfig>) -> Pool {
        self.slow_start = slow_start;
        self
    }

    /// `backend`'s share factor now: below `1.0` while it warms up.
    pub fn share_factor(&self, backend: &Backend) -> f64 {
        match &self.slow_start {
            Some(config) if backend.warm_up().is_warming() => {
                backend.warm_up().factor(config, tokio::time::Instant::now())
            }
            _ => 1.0,
        }
    }

    /// Whether `backend`'s outcome at `now` is its warm-up's, and so left
    /// out of the pool's guard and of the tallies of guards judging against
    /// the pool: the pool has slow start, `backend` is still inside its
    /// window, and another eligible backend of the pool is warm. Those warm
    /// backends carry the version's record, so the version is unchanged and
    /// a newcomer's (or a returning backend's) cold start is not held
    /// against it. When every eligible backend is warming (a pool of new
    /// backends, or one coming back as a whole) nothing else speaks for the
    /// version, and its outcomes count. A warm backend costs one load.
    pub fn in_warm_up(&self, backend: &Backend, now: tokio::time::Instant) -> bool {
        let Some(config) = &self.slow_start else { return false };
        if !backend.warm_up().is_warming() || backend.warm_up().factor(config, now) >= 1.0 {
            return false;
        }
        self.backends
            .iter()
            .any(|b| !std::ptr::eq(&**b, backend) && b.is_eligible() && b.warm_up().factor(config, now) >= 1.0)
    }

    /// The same pool, marked as rolled back or not.
    pub fn with_tripped(mut self, tripped: bool) -> Pool {
        self.tripped = tripped;
        self
    }

    /// The same pool, sending a request closed unanswered again or not.
    pub fn with_retry_unanswered(mut self, retry: bool) -> Pool {
        self.retry_unanswered = retry;
        self
    }

    /// The same pool, counting gRPC answers with one of `codes` as failures.
    pub fn with_grpc_failures(mut self, codes: GrpcCodes) -> Pool {
        self.grpc_failures = codes;
        self
    }

    /// The same pool, guarded by `guard`.
    pub fn with_guard(mut self, guard: Option<Arc<crate::guard::PoolGuard>>) -> Pool {
        self.guard = guard;
        self
    }

    /// The same pool, counting its outcomes into `tallies` for the guards
    /// judging against it.
    pub fn with_baseline_for(mut self, tallies: Vec<Arc<crate::guard::TickTally>>) -> Pool {
        self.baseline_for = tallies;
        self
    }

    /// Whether any backend can take a request now: a healthy one that is
    /// not passively ejected. A route sends the share of a pool that cannot
    /// to its other pools.
    pub fn can_serve(&self) -> bool {
        self.backends.iter().any(|b| b.is_eligible())
    }

    /// A backend for a new request, skipping `exclude` (a backend that just
    /// failed to connect). Unhealthy backends are never chosen, and
    /// passively ejected ones only when no other backend is left: an
    /// ejection leaves the pool at least one backend when it is made, but
    /// the others may fail after it, and a backend that is up but serving
    /// out its ejection is better than none. A backend in slow start is
    /// kept with the probability of its share factor, and otherwise the
    /// choice is made again ([`slow_start`] says why).
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R, exclude: Option<&Backend>) -> Option<&Arc<Backend>> {
        let mut chosen = self.pick_once(rng, exclude)?;
        let Some(config) = &self.slow_start else { return Some(chosen) };
        for _ in 1..slow_start::MAX_DRAWS {
            if !chosen.warm_up().is_warming() {
                break;
            }
            let factor = chosen.warm_up().factor(config, tokio::time::Instant::now());
            if factor >= 1.0 || rng.random::<f64>() < factor {
                break;
            }
            // p2c chooses again without the backend it turned down: in a
            // pool of two every pair is the same pair, and the less loaded
            // newcomer would win each draw and stand after the last. (A
            // retry's choice, which already leaves one out, draws again.)
            let skip = match (self.lb, exclude) {
                (LbPolicy::P2c, None) => Some(&**chosen),
                _ => exclude,
            };
            match self.pick_once(rng, skip) {
                Some(next) => chosen = next,
                None => break,
            }
        }
        Some(chosen)
    }

    /// One choice by `lb`, with no slow start.
    fn pick_once<R: Rng + ?Sized>(&self, rng: &mut R, exclude: Option<&Backend>) -> Option<&Arc<Backend>> {
        let excluded = |b: &Arc<Backend>| exclude.is_some_and(|x| std::ptr::eq(x, &**b));
        let n = self.backends.len();
        // Fast path: every backend usable, as almost always.
        if exclude.is_none() && self.backends.iter().all(|b| b.is_eligible()) {
            return self.pick_among(rng, n, |i| &self.backends[i]);
        }
        // The usable backends' indices, read once so a health change in the
        // middle cannot shift them. Every backend must fit: a pool larger
        // than the stack buffer spills to the heap rather than leaving its
        // tail unchosen.
        let mut stack = [0usize; STACK_CANDIDATES];
        let mut heap = Vec::new();
        let candidates: &mut [usize] = if n <= STACK_CANDIDATES {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        let mut gather = |usable: fn(&Backend) -> bool| {
            let mut count = 0;
            for (i, b) in self.backends.iter().enumerate() {
                if usable(b) && !excluded(b) {
                    candidates[count] = i;
                    count += 1;
                }
            }
            count
        };
        // Ejected backends only when nothing else is left (see `pick`).
        let count = match gather(Backend::is_eligible) {
            0 => gather(Backend::is_healthy),
            n => n,
        };
        if count == 0 {
            return None;
        }
        let candidates = &candidates[..count];
        self.pick_among(rng, count, |i| &self.backends[candidates[i]])
    }

    fn pick_among<'a, R: Rng + ?Sized>(
        &'a self,
        rng: &mut R,
        n: usize,
        at: impl Fn(usize) -> &'a Arc<Backend>,
    ) -> Option<&'a Arc<Backend>> {
        match n {
            0 => None,
            1 => Some(at(0)),
            _ => Some(match self.lb {
                LbPolicy::RoundRobin => at(self.next.fetch_add(1, Ordering::Relaxed) % n),
                LbPolicy::Random => at(rng.random_range(0..n)),
                LbPolicy::P2c => {
                    let first = rng.random_range(0..n);
                    let mut second = rng.random_range(0..n - 1);
                    if second >= first {
                        second += 1;
                    }
                    let (a, b) = (at(first), at(second));
                    if b.in_flight() < a.in_flight() {
                        b
                    } else {
                        a
                    }
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddr, Scheme};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn pool(n: usize, lb: LbPolicy) -> Pool {
        let backends = (0..n)
            .map(|i| {
                let addr = BackendAddr { scheme: Scheme::Http, authority: format!("127.0.0.1:{}", 9000 + i) };
                Arc::new(Backend::new("p".into(), addr, Duration::from_secs(1)))
            })
            .collect();
        Pool::new("p".into(), backends, lb)
    }

    fn index(p: &Pool, b: &Arc<Backend>) -> usize {
        p.backends.iter().position(|x| Arc::ptr_eq(x, b)).unwrap()
    }

    /// An ejected backend serves when nothing else can: the rest of the
    /// pool went down after it was ejected (a rolling restart), or the
    /// last other backend just failed to connect. An unhealthy one never.
    #[test]
    fn an_ejected_backend_serves_when_no_other_can() {
        let p = pool(3, LbPolicy::P2c);
        let mut rng = SmallRng::seed_from_u64(3);
        p.backends[0].set_ejected(true);
        p.backends[1].set_healthy(false);
        for _ in 0..50 {
            assert_eq!(p.pick(&mut rng, None).map(|b| index(&p, b)), Some(2), "the eligible one first");
        }
        let last = p.backends[2].clone();
        assert_eq!(p.pick(&mut rng, Some(&last)).map(|b| index(&p, b)), Some(0), "then the ejected one");
        last.set_healthy(false);
        assert!(!p.can_serve(), "a route sends this pool's share elsewhere first");
        assert_eq!(p.pick(&mut rng, None).map(|b| index(&p, b)), Some(0), "and here it is the last resort");
        p.backends[0].set_healthy(false);
        assert!(p.pick(&mut rng, None).is_none(), "no unhealthy backend, ever");
    }

    #[test]
    fn round_robin_cycles() {
        let p = pool(3, LbPolicy::RoundRobin);
        let mut rng = SmallRng::seed_from_u64(0);
        let seq: Vec<usize> = (0..6).map(|_| index(&p, p.pick(&mut rng, None).unwrap())).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn p2c_prefers_the_less_loaded() {
        let p = pool(2, LbPolicy::P2c);
        let _busy: Vec<_> = (0..5).map(|_| p.backends[0].begin_request()).collect();
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            assert_eq!(index(&p, p.pick(&mut rng, None).unwrap()), 1);
        }
    }

    #[test]
    fn random_spreads_over_all() {
        let p = pool(4, LbPolicy::Random);
        let mut rng = SmallRng::seed_from_u64(9);
        let mut seen = [0; 4];
        for _ in 0..4_000 {
            seen[index(&p, p.pick(&mut rng, None).unwrap())] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn exclusion_picks_another_backend() {
        for lb in [LbPolicy::P2c, LbPolicy::RoundRobin, LbPolicy::Random] {
            let p = pool(2, lb);
            let mut rng = SmallRng::seed_from_u64(5);
            for _ in 0..50 {
                let b = p.pick(&mut rng, Some(&p.backends[0])).unwrap();
                assert_eq!(index(&p, b), 1);
            }
            let single = pool(1, lb);
            assert!(single.pick(&mut rng, Some(&single.backends[0])).is_none());
        }
    }

    #[test]
    fn unhealthy_backends_are_skipped() {
        let p = pool(2, LbPolicy::P2c);
        p.backends[1].set_healthy(false);
        let mut rng = SmallRng::seed_from_u64(5);
        for _ in 0..50 {
            assert_eq!(index(&p, p.pick(&mut rng, None).unwrap()), 0);
        }
        p.backends[0].set_healthy(false);
        assert!(!p.can_serve());
        assert!(p.pick(&mut rng, None).is_none());
    }
}
