//! Health: which backends may take traffic, judged two ways.
//!
//! **Active checks** (`[pools.NAME.health]`) probe each backend of the pool
//! every `interval` with `GET path` on a *new* plain TCP connection — never
//! one of the request pool's connections, so a probe can neither steal a
//! warm connection from a request nor leave a half-read answer on one. A 2xx
//! head within `timeout` (connect included) is a success; any other status,
//! a refused connect or a timeout is a failure. A small pure state machine,
//! [`HealthState`], turns the stream of results into transitions:
//! `unhealthy_after` consecutive failures take the backend out
//! ([`crate::pool::Backend::set_healthy`]), `healthy_after` consecutive successes bring it
//! back. Backends start healthy, so startup traffic never waits for a first
//! probe. Checking follows the pool's config, not the routes: a pool at
//! weight 0 is checked too, so a switchback to it is instant and safe.
//!
//! The checks' lifecycle is explicit: [`HealthChecks::sync`] runs after every
//! snapshot publish and reconciles one task per (pool, backend) with the new
//! snapshot. A backend that stays, with the same `[health]` settings, keeps
//! its task and its counters — a reload must not reset what the checks have
//! learned. A backend that leaves the config (it is draining), or whose
//! settings changed, loses its task; changed settings start a new task that
//! picks up the backend's current verdict. A pool whose `[health]` section
//! disappears has its backends declared healthy again, since nothing would
//! ever bring them back otherwise. Dropping [`HealthChecks`] stops every task.
//!
//! **Passive tracking** (outlier ejection, as Envoy's `consecutive_5xx`)
//! watches real requests: [`PassivePolicy::DEFAULT`]'s 5 consecutive
//! failures (5xx answers, or no answer at all: connect failure, reset,
//! timeout) eject a backend for 10 s, doubling with each consecutive
//! ejection up to 5 min; one successful request resets both the streak and
//! the back-off. The end of an ejection is a spawned `tokio::time::sleep`, so
//! the request path reads no clock, and recording a success — by far the
//! common case — is one atomic load (plus a store only when there was a
//! streak to reset).
//!
//! Passive ejection is deliberately timid. Envoy caps ejection at 10% of a
//! cluster, which for the 2–4 backend pools of a blue/green deploy means
//! never ejecting at all; we cap it at *half* the pool (rounding down), and
//! never eject a backend when no other backend of its pool would remain
//! eligible. So a one-backend pool is never passively ejected: a whole pool
//! failing is the guard's business (it rolls the pool back, with a record in
//! the history), or the active checks' (which have positive evidence from a
//! probe). Ejecting by request outcomes alone must not quietly empty a pool.
//!
//! The module is split by idea: `state` (the verdict's state machine),
//! `probe` (one probe over HTTP/1.1 or HTTP/2), `checks` (the probe tasks
//! and their lifecycle) and `passive` (ejection by request outcomes).
//! Their public items are re-exported here, so `crate::health::X` paths
//! name them all.

mod checks;
mod passive;
mod probe;
mod state;

pub use checks::HealthChecks;
pub use passive::{consecutive_ejections, consecutive_failures, record_outcome, PassiveOutcome, PassivePolicy};
pub use probe::{probe, ProbeError, USER_AGENT};
pub use state::{HealthState, Transition};

#[cfg(test)]
mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::{BackendAddr, HealthConfig, Scheme};
    use crate::pool::Backend;

    pub(super) fn backend_at(pool: &str, authority: &str) -> Arc<Backend> {
        let addr = BackendAddr { scheme: Scheme::Http, authority: authority.into() };
        Arc::new(Backend::new(pool.into(), addr, Duration::from_secs(1)))
    }

    pub(super) fn pool(n: usize) -> Vec<Arc<Backend>> {
        (0..n).map(|i| backend_at("p", &format!("127.0.0.1:{}", 9000 + i))).collect()
    }

    pub(super) fn config(interval_ms: u64, unhealthy_after: u32, healthy_after: u32) -> HealthConfig {
        HealthConfig {
            path: "/healthz".into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms),
            unhealthy_after,
            healthy_after,
        }
    }
}
