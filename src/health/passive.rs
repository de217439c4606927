//! Passive tracking (outlier ejection, as Envoy's `consecutive_5xx`):
//! real requests' outcomes eject a backend after consecutive failures, for
//! a back-off that doubles with each consecutive ejection. Never more than
//! half a pool, and never its last eligible backend; should the rest of the
//! pool fail after an ejection, the pool's choice falls back to its ejected
//! backends ([`crate::pool::Pool::pick`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;

use tokio::runtime::Handle;

use crate::pool::{Backend, UpstreamFailure};

/// What one upstream exchange says about its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveOutcome {
    /// The backend answered with a non-5xx status (4xx is the client's
    /// business, not the backend's failure).
    Success,
    /// The backend answered 5xx.
    ServerError,
    /// No connection could be opened.
    ConnectFailure,
    /// Connected, but no usable answer: reset, timeout, malformed.
    NoAnswer,
}

impl PassiveOutcome {
    /// The outcome of an answer with `status`.
    pub fn from_status(status: StatusCode) -> PassiveOutcome {
        if status.is_server_error() {
            PassiveOutcome::ServerError
        } else {
            PassiveOutcome::Success
        }
    }

    /// Whether it counts against the backend.
    pub fn is_failure(self) -> bool {
        self != PassiveOutcome::Success
    }

    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PassiveOutcome::Success => "success",
            PassiveOutcome::ServerError => "5xx",
            PassiveOutcome::ConnectFailure => "connect failure",
            PassiveOutcome::NoAnswer => "no answer",
        }
    }
}

impl From<UpstreamFailure> for PassiveOutcome {
    fn from(failure: UpstreamFailure) -> PassiveOutcome {
        match failure {
            UpstreamFailure::Connect => PassiveOutcome::ConnectFailure,
            UpstreamFailure::Timeout | UpstreamFailure::Reset | UpstreamFailure::Protocol => PassiveOutcome::NoAnswer,
        }
    }
}

/// Thresholds of passive tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivePolicy {
    /// Consecutive failures that eject a backend.
    pub consecutive_failures: u32,
    /// Length of a first ejection.
    pub base_ejection: Duration,
    /// Longest ejection, however many came before.
    pub max_ejection: Duration,
}

impl PassivePolicy {
    /// Envoy's `consecutive_5xx` defaults, with a back-off capped at 5 min.
    pub const DEFAULT: PassivePolicy = PassivePolicy {
        consecutive_failures: 5,
        base_ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(300),
    };

    /// How long the `n`th consecutive ejection (from 1) lasts: the base,
    /// doubled per earlier ejection, capped.
    pub fn ejection_time(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(31);
        self.base_ejection.saturating_mul(1u32 << doublings).min(self.max_ejection)
    }

    /// Record one completed upstream exchange with `backend`, one of
    /// `pool_backends` (the pool as the request's snapshot has it), and
    /// eject it if this completes a streak of failures and the pool can
    /// spare it. Must run inside a tokio runtime (an ejection spawns its
    /// end); a success touches nothing but the backend's own counter word.
    pub fn record(&self, backend: &Arc<Backend>, pool_backends: &[Arc<Backend>], outcome: PassiveOutcome) {
        let counts = backend.passive_counts();
        if !outcome.is_failure() {
            // The hot path: a load, and a store only if there is a streak
            // or a back-off to forget.
            if counts.load(Ordering::Relaxed) != 0 {
                counts.store(0, Ordering::Relaxed);
            }
            return;
        }
        if backend.is_ejected() {
            // Answers to requests sent before the ejection: already judged.
            return;
        }
        let failures = add_failure(counts);
        if failures < self.consecutive_failures.max(1) {
            return;
        }
        self.try_eject(backend, pool_backends, failures, outcome);
    }

    fn try_eject(
        &self,
        backend: &Arc<Backend>,
        pool_backends: &[Arc<Backend>],
        failures: u32,
        outcome: PassiveOutcome,
    ) {
        // Counting the pool's ejections and ejecting must be one step, or
        // two backends failing at once could both see room for one more and
        // empty the pool. Ejections are rare: one lock for all is enough.
        let _decision = EJECTIONS.lock().unwrap_or_else(PoisonError::into_inner);
        if backend.is_ejected() {
            return;
        }
        let ejected = pool_backends.iter().filter(|b| b.is_ejected()).count();
        let others_eligible = pool_backends.iter().any(|b| !Arc::ptr_eq(b, backend) && b.is_eligible());
        if ejected >= pool_backends.len() / 2 || !others_eligible {
            // Leave the streak counted: once the pool has room again, the
            // next failure ejects. Warn once per streak, not per failure.
            if failures == self.consecutive_failures.max(1) {
                tracing::warn!(pool = %backend.pool, backend = %backend.addr, failures,
                    ejected, backends = pool_backends.len(),
                    "backend keeps failing but is not ejected: the pool cannot spare it");
            }
            return;
        }
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let n = begin_ejection(backend.passive_counts());
        backend.set_ejected(true);
        let duration = self.ejection_time(n);
        tracing::warn!(pool = %backend.pool, backend = %backend.addr, failures,
            last = outcome.as_str(), ejection = n, ?duration,
            "backend ejected after consecutive failures");
        let backend = backend.clone();
        runtime.spawn(async move {
            tokio::time::sleep(duration).await;
            backend.set_ejected(false);
            tracing::info!(pool = %backend.pool, backend = %backend.addr,
                "ejection over; backend back in rotation");
        });
    }
}

impl Default for PassivePolicy {
    fn default() -> PassivePolicy {
        PassivePolicy::DEFAULT
    }
}

/// Serialises ejection decisions (see [`PassivePolicy::try_eject`]).
static EJECTIONS: Mutex<()> = Mutex::new(());

/// Low half of the packed counter word: consecutive failures.
const FAILURES_MASK: u64 = 0xffff_ffff;

/// Count one more failure; returns the streak, saturating.
fn add_failure(counts: &AtomicU64) -> u32 {
    let mut now = counts.load(Ordering::Relaxed);
    loop {
        let failures = (now & FAILURES_MASK) as u32;
        let next = (now & !FAILURES_MASK) | u64::from(failures.saturating_add(1));
        match counts.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return failures.saturating_add(1),
            Err(actual) => now = actual,
        }
    }
}

/// Start an ejection: clear the streak, count the ejection; returns how
/// many consecutive ejections this makes.
fn begin_ejection(counts: &AtomicU64) -> u32 {
    let mut now = counts.load(Ordering::Relaxed);
    loop {
        let n = ((now >> 32) as u32).saturating_add(1);
        match counts.compare_exchange_weak(now, u64::from(n) << 32, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return n,
            Err(actual) => now = actual,
        }
    }
}

/// Consecutive failures `backend` has now (passive tracking).
pub fn consecutive_failures(backend: &Backend) -> u32 {
    (backend.passive_counts().load(Ordering::Relaxed) & FAILURES_MASK) as u32
}

/// Consecutive ejections of `backend` since its last success.
pub fn consecutive_ejections(backend: &Backend) -> u32 {
    (backend.passive_counts().load(Ordering::Relaxed) >> 32) as u32
}

/// Record an upstream exchange under [`PassivePolicy::DEFAULT`]; the hook
/// the request path calls once per attempt (see [`PassivePolicy::record`]).
pub fn record_outcome(backend: &Arc<Backend>, pool_backends: &[Arc<Backend>], outcome: PassiveOutcome) {
    PassivePolicy::DEFAULT.record(backend, pool_backends, outcome);
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    // --- passive tracking ---

    const P: PassivePolicy = PassivePolicy::DEFAULT;

    #[tokio::test(start_paused = true)]
    async fn five_consecutive_failures_eject_for_ten_seconds() {
        let backends = pool(2);
        let bad = &backends[0];
        for _ in 0..4 {
            P.record(bad, &backends, PassiveOutcome::ServerError);
        }
        assert!(!bad.is_ejected(), "four failures are not five");
        P.record(bad, &backends, PassiveOutcome::ConnectFailure);
        assert!(bad.is_ejected());
        assert!(!bad.is_eligible());
        assert!(bad.is_healthy(), "ejection is not the active verdict");
        assert_eq!(consecutive_failures(bad), 0);
        assert_eq!(consecutive_ejections(bad), 1);

        tokio::time::sleep(Duration::from_millis(9_990)).await;
        assert!(bad.is_ejected());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!bad.is_ejected(), "back after 10 s");
        assert!(bad.is_eligible());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_breaks_the_streak() {
        let backends = pool(2);
        let bad = &backends[0];
        for _ in 0..4 {
            P.record(bad, &backends, PassiveOutcome::NoAnswer);
        }
        P.record(bad, &backends, PassiveOutcome::Success);
        assert_eq!(consecutive_failures(bad), 0);
        for _ in 0..4 {
            P.record(bad, &backends, PassiveOutcome::ServerError);
        }
        assert!(!bad.is_ejected());
        P.record(bad, &backends, PassiveOutcome::from_status(StatusCode::NOT_FOUND));
        assert_eq!(consecutive_failures(bad), 0, "4xx is a success for the backend");
    }

    async fn eject(p: &PassivePolicy, backend: &Arc<Backend>, all: &[Arc<Backend>]) {
        for _ in 0..p.consecutive_failures {
            p.record(backend, all, PassiveOutcome::ServerError);
        }
        assert!(backend.is_ejected());
    }

    /// Wait out an ejection, returning how long it lasted (in whole seconds).
    async fn ejection_secs(backend: &Backend) -> u64 {
        let start = tokio::time::Instant::now();
        while backend.is_ejected() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (start.elapsed().as_millis() / 1_000) as u64
    }

    #[tokio::test(start_paused = true)]
    async fn ejections_double_up_to_five_minutes_and_reset_on_success() {
        let backends = pool(2);
        let bad = &backends[0];
        let mut lengths = Vec::new();
        for _ in 0..7 {
            eject(&P, bad, &backends).await;
            lengths.push(ejection_secs(bad).await);
        }
        assert_eq!(lengths, vec![10, 20, 40, 80, 160, 300, 300]);
        P.record(bad, &backends, PassiveOutcome::Success);
        assert_eq!(consecutive_ejections(bad), 0);
        eject(&P, bad, &backends).await;
        assert_eq!(ejection_secs(bad).await, 10, "a success resets the back-off");
    }

    #[test]
    fn ejection_time_saturates() {
        assert_eq!(P.ejection_time(0), Duration::from_secs(10));
        assert_eq!(P.ejection_time(1), Duration::from_secs(10));
        assert_eq!(P.ejection_time(3), Duration::from_secs(40));
        assert_eq!(P.ejection_time(u32::MAX), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_backend_pool_is_never_ejected() {
        let backends = pool(1);
        for _ in 0..50 {
            P.record(&backends[0], &backends, PassiveOutcome::ConnectFailure);
        }
        assert!(!backends[0].is_ejected());
        assert!(backends[0].is_eligible());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_half_the_pool_is_ejected() {
        for (n, cap) in [(2, 1), (3, 1), (4, 2), (5, 2)] {
            let backends = pool(n);
            for b in &backends {
                for _ in 0..10 {
                    P.record(b, &backends, PassiveOutcome::ServerError);
                }
            }
            let ejected = backends.iter().filter(|b| b.is_ejected()).count();
            assert_eq!(ejected, cap, "pool of {n}");
            // Once one comes back, the next failure of a waiting one ejects it.
            tokio::time::sleep(Duration::from_secs(11)).await;
            assert!(backends.iter().all(|b| !b.is_ejected()));
            let waiting = backends.iter().find(|b| consecutive_failures(b) >= 5).unwrap();
            P.record(waiting, &backends, PassiveOutcome::ServerError);
            assert!(waiting.is_ejected(), "pool of {n}: a counted streak ejects when room appears");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_ejects_the_last_eligible_backend() {
        let backends = pool(4);
        backends[1].set_healthy(false);
        backends[2].set_healthy(false);
        backends[3].set_healthy(false);
        for _ in 0..10 {
            P.record(&backends[0], &backends, PassiveOutcome::ServerError);
        }
        assert!(!backends[0].is_ejected(), "the only eligible backend stays");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_while_ejected_do_not_count() {
        let backends = pool(2);
        let bad = &backends[0];
        eject(&P, bad, &backends).await;
        for _ in 0..20 {
            P.record(bad, &backends, PassiveOutcome::ServerError);
        }
        assert_eq!(consecutive_failures(bad), 0);
        assert_eq!(ejection_secs(bad).await, 10, "late failures do not extend it");
    }

    #[test]
    fn upstream_failures_map_to_outcomes() {
        assert_eq!(PassiveOutcome::from(UpstreamFailure::Connect), PassiveOutcome::ConnectFailure);
        assert_eq!(PassiveOutcome::from(UpstreamFailure::Timeout), PassiveOutcome::NoAnswer);
        assert_eq!(PassiveOutcome::from(UpstreamFailure::Reset), PassiveOutcome::NoAnswer);
        assert_eq!(PassiveOutcome::from_status(StatusCode::BAD_GATEWAY), PassiveOutcome::ServerError);
        assert_eq!(PassiveOutcome::from_status(StatusCode::OK), PassiveOutcome::Success);
    }
}
