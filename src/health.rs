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
//! ([`Backend::set_healthy`]), `healthy_after` consecutive successes bring it
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

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::config::{BackendAddr, HealthConfig, Scheme};
use crate::pool::{Backend, BackendKey, Transport, UpstreamFailure};
use crate::snapshot::Snapshot;

/// `User-Agent` of every probe, so backends can tell probes from traffic.
pub const USER_AGENT: &str = "cutover-health";

// ---------------------------------------------------------------------------
// Active checks: the state machine.

/// A change of a backend's health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Enough consecutive failures: take it out.
    BecameUnhealthy,
    /// Enough consecutive successes: put it back.
    BecameHealthy,
}

/// Consecutive-result counting for one backend, free of I/O and clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// The current verdict.
    healthy: bool,
    /// Consecutive results that disagree with the verdict.
    streak: u32,
    /// Failures in a row that flip a healthy backend.
    unhealthy_after: u32,
    /// Successes in a row that flip an unhealthy backend.
    healthy_after: u32,
}

impl HealthState {
    /// Counting from verdict `healthy`, with the given thresholds (a
    /// threshold of 0 is treated as 1: one result always suffices).
    pub fn new(healthy: bool, unhealthy_after: u32, healthy_after: u32) -> HealthState {
        HealthState { healthy, streak: 0, unhealthy_after: unhealthy_after.max(1), healthy_after: healthy_after.max(1) }
    }

    /// Counting with `config`'s thresholds from verdict `healthy`.
    pub fn from_config(healthy: bool, config: &HealthConfig) -> HealthState {
        HealthState::new(healthy, config.unhealthy_after, config.healthy_after)
    }

    /// The current verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Count one probe result; returns the transition it completes, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.healthy {
            // A result that agrees with the verdict breaks any streak
            // against it: only *consecutive* disagreement flips it.
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.healthy { self.unhealthy_after } else { self.healthy_after };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(if ok { Transition::BecameHealthy } else { Transition::BecameUnhealthy })
    }
}

// ---------------------------------------------------------------------------
// Active checks: one probe.

/// Why a probe counted as a failure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The backend answered, but not with a 2xx.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The TCP connect (or name lookup) failed.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// No response head within the probe's timeout, connect included.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The HTTP exchange failed (bad handshake, reset, malformed answer).
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
    /// The backend closed the connection without answering.
    #[error("connection closed before an answer")]
    Closed,
    /// The probe request could not be built from the config.
    #[error("cannot build the probe request: {0}")]
    Request(#[source] http::Error),
    /// The backend needs a transport probes do not speak yet.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
}

/// Probe `addr` once: `GET path` on a new connection, with `Host: <authority>`
/// and `User-Agent: cutover-health`. `Ok` carries the 2xx status; `timeout`
/// covers connect, handshake and the response head. The body is not read:
/// the head decides, and the connection is closed when this returns.
pub async fn probe(
    addr: &BackendAddr,
    path: &str,
    timeout: Duration,
    transport: &Transport,
) -> Result<StatusCode, ProbeError> {
    if addr.scheme == Scheme::Https && transport.tls.is_none() {
        return Err(ProbeError::Unsupported("https backend without a TLS client config"));
    }
    let tls = if addr.scheme == Scheme::Https { transport.tls.as_ref() } else { None };
    let h2 = transport.protocol == crate::config::UpstreamProtocol::H2;
    let request = Request::get(path)
        .header(header::HOST, addr.authority.as_str())
        .header(header::USER_AGENT, USER_AGENT)
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let attempt = async {
        let resolved = addr.authority.parse::<SocketAddr>().ok();
        let unacknowledged = crate::pool::conn::UNACKNOWLEDGED_FLOOR;
        let stream = crate::pool::conn::open_stream(addr, resolved, timeout, unacknowledged, tls).await.map_err(
            |e| match e {
                crate::pool::ConnectError::Io { source, .. } | crate::pool::ConnectError::Tls { source, .. } => {
                    ProbeError::Connect(source)
                }
                crate::pool::ConnectError::Timeout { timeout, .. } => ProbeError::Timeout(timeout),
                crate::pool::ConnectError::Handshake { source, .. } => ProbeError::Http(source),
            },
        )?;
        match stream {
            crate::pool::conn::Stream::Plain(io) => exchange(io, request, h2).await,
            crate::pool::conn::Stream::Tls(io) => exchange(io, request, h2).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) if status.is_success() => Ok(status),
        Ok(Ok(status)) => Err(ProbeError::Status(status)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProbeError::Timeout(timeout)),
    }
}

/// Send `request` on `io` and return the answer's status. The connection is
/// driven here rather than in a spawned task: when this future ends
/// (answer, error or timeout) the socket closes with it, and no probe can
/// leave a task behind.
async fn exchange<I>(io: I, mut request: Request<Empty<Bytes>>, h2: bool) -> Result<StatusCode, ProbeError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(ProbeError::Http)?;
        let mut connection = Box::pin(connection);
        let response = sender.send_request(request);
        tokio::pin!(response);
        return tokio::select! {
            answer = &mut response => answer.map(|r| r.status()).map_err(ProbeError::Http),
            ended = &mut connection => Err(match ended { Err(e) => ProbeError::Http(e), Ok(()) => ProbeError::Closed }),
        };
    }
    // The connection is used once; say so, so the backend does not keep a
    // keep-alive slot for it.
    request.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(ProbeError::Http)?;
    let mut connection = Box::pin(connection);
    let response = sender.send_request(request);
    tokio::pin!(response);
    let ended = tokio::select! {
        biased;
        answer = &mut response => return answer.map(|r| r.status()).map_err(ProbeError::Http),
        ended = &mut connection => ended,
    };
    // The connection can finish in the same poll that delivered the answer
    // (the backend honoured `Connection: close`): the answer may be waiting.
    // With the connection gone, the response future resolves either way.
    drop(connection);
    match response.await {
        Ok(answer) => Ok(answer.status()),
        Err(_) => Err(match ended {
            Err(e) => ProbeError::Http(e),
            Ok(()) => ProbeError::Closed,
        }),
    }
}

// ---------------------------------------------------------------------------
// Active checks: the per-backend task.

/// Probe `backend` every `config.interval` with `probe` until it drains,
/// applying the verdicts of a [`HealthState`] that starts from the
/// backend's current one. Generic over the probe so tests can drive it
/// under paused time without sockets.
async fn check_loop<P, F>(backend: Arc<Backend>, config: HealthConfig, mut probe: P)
where
    P: FnMut() -> F,
    F: Future<Output = Result<StatusCode, ProbeError>>,
{
    let mut state = HealthState::from_config(backend.is_healthy(), &config);
    let mut ticks = tokio::time::interval(config.interval);
    // A slow probe delays the next one rather than causing a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if backend.is_draining() {
            break;
        }
        let result = probe().await;
        if backend.is_draining() {
            // It left the config while we probed: its verdict no longer
            // matters, and in-flight requests should not be disturbed.
            break;
        }
        let reason = match &result {
            Ok(status) => format!("answered {status}"),
            Err(e) => e.to_string(),
        };
        match state.observe(result.is_ok()) {
            Some(Transition::BecameUnhealthy) => {
                backend.set_healthy(false);
                tracing::warn!(
                    pool = %backend.pool,
                    backend = %backend.addr,
                    %reason,
                    failures = config.unhealthy_after,
                    "backend marked unhealthy by health check"
                );
            }
            Some(Transition::BecameHealthy) => {
                backend.set_healthy(true);
                tracing::info!(
                    pool = %backend.pool,
                    backend = %backend.addr,
                    %reason,
                    successes = config.healthy_after,
                    "backend healthy again by health check"
                );
            }
            None if result.is_err() => tracing::debug!(
                pool = %backend.pool,
                backend = %backend.addr,
                %reason,
                "health check failed"
            ),
            None => {}
        }
    }
    tracing::debug!(pool = %backend.pool, backend = %backend.addr, "health check stopped");
}

/// One running check.
#[derive(Debug)]
struct Check {
    /// The backend it probes (identity matters: a backend removed and
    /// re-added is a new one).
    backend: Arc<Backend>,
    /// The settings it runs with.
    config: HealthConfig,
    /// The task; aborted when the check is dropped.
    task: JoinHandle<()>,
}

impl Drop for Check {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The active health checks of a proxy: one task per checked backend,
/// reconciled with each published snapshot by [`HealthChecks::sync`].
#[derive(Debug, Default)]
pub struct HealthChecks {
    /// Running checks by backend identity.
    checks: Mutex<HashMap<BackendKey, Check>>,
    /// Check tasks started so far (restarts included), for tests and logs.
    started: AtomicU64,
}

impl HealthChecks {
    /// No checks running yet.
    pub fn new() -> HealthChecks {
        HealthChecks::default()
    }

    /// Reconcile the running checks with `snapshot`: start a check for each
    /// backend of a pool with `[health]` that has none, restart those whose
    /// settings changed, stop those whose backend left or whose pool lost
    /// its `[health]`, and leave the rest — and their counters — alone.
    /// Call it after every publish; with nothing changed it is a no-op.
    /// Must run inside a tokio runtime (it spawns the tasks).
    pub fn sync(&self, snapshot: &Snapshot) {
        let Ok(runtime) = Handle::try_current() else {
            tracing::error!("health checks need a tokio runtime; none are running");
            return;
        };
        let mut checks = self.lock();
        let mut wanted: HashSet<BackendKey> = HashSet::new();
        for pool in &snapshot.pools {
            let health = snapshot.config.pool(&pool.name).and_then(|p| p.health.as_ref());
            for backend in &pool.backends {
                let key = backend.key();
                let Some(config) = health else {
                    // No check any more: a verdict it left behind would
                    // keep the backend out forever, with nothing to bring it
                    // back. Without checks, backends are presumed healthy.
                    if checks.remove(&key).is_some() && !backend.is_healthy() {
                        backend.set_healthy(true);
                        tracing::info!(pool = %pool.name, backend = %backend.addr,
                            "health check removed; backend presumed healthy");
                    }
                    continue;
                };
                let current = checks
                    .get(&key)
                    .is_some_and(|c| Arc::ptr_eq(&c.backend, backend) && c.config == *config && !c.task.is_finished());
                if !current {
                    let check = Check {
                        backend: backend.clone(),
                        config: config.clone(),
                        task: runtime.spawn(check_backend(backend.clone(), config.clone())),
                    };
                    self.started.fetch_add(1, Ordering::Relaxed);
                    // Replacing an outdated check drops it, which aborts it.
                    checks.insert(key.clone(), check);
                }
                wanted.insert(key);
            }
        }
        checks.retain(|key, _| wanted.contains(key));
    }

    /// Stop every check (at shutdown; dropping does the same).
    pub fn stop(&self) {
        self.lock().clear();
    }

    /// Backends being checked now.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    /// Check tasks started so far, restarts included.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BackendKey, Check>> {
        // Every update of the map is a single insert, remove or retain: a
        // panic elsewhere cannot leave it half-changed.
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The real check of one backend: [`check_loop`] over [`probe`].
async fn check_backend(backend: Arc<Backend>, config: HealthConfig) {
    tracing::debug!(pool = %backend.pool, backend = %backend.addr, path = %config.path,
        interval = ?config.interval, "health check started");
    let addr = backend.addr.clone();
    let transport = backend.transport().clone();
    let (path, timeout) = (config.path.clone(), config.timeout);
    check_loop(backend, config, move || {
        let (addr, path, transport) = (addr.clone(), path.clone(), transport.clone());
        async move { probe(&addr, &path, timeout, &transport).await }
    })
    .await;
}

// ---------------------------------------------------------------------------
// Passive tracking.

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
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn backend_at(pool: &str, authority: &str) -> Arc<Backend> {
        let addr = BackendAddr { scheme: Scheme::Http, authority: authority.into() };
        Arc::new(Backend::new(pool.into(), addr, Duration::from_secs(1)))
    }

    fn pool(n: usize) -> Vec<Arc<Backend>> {
        (0..n).map(|i| backend_at("p", &format!("127.0.0.1:{}", 9000 + i))).collect()
    }

    fn config(interval_ms: u64, unhealthy_after: u32, healthy_after: u32) -> HealthConfig {
        HealthConfig {
            path: "/healthz".into(),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(interval_ms),
            unhealthy_after,
            healthy_after,
        }
    }

    // --- the state machine ---

    #[test]
    fn failures_must_be_consecutive_to_mark_unhealthy() {
        let mut s = HealthState::new(true, 3, 2);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(true), None, "a success breaks the streak");
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), Some(Transition::BecameUnhealthy));
        assert!(!s.is_healthy());
        assert_eq!(s.observe(false), None, "already unhealthy: no new transition");
    }

    #[test]
    fn successes_must_be_consecutive_to_recover() {
        let mut s = HealthState::new(false, 3, 2);
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(false), None, "a failure breaks the streak");
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(true), Some(Transition::BecameHealthy));
        assert!(s.is_healthy());
        assert_eq!(s.observe(true), None);
    }

    #[test]
    fn thresholds_of_one_flip_at_once_and_zero_counts_as_one() {
        let mut s = HealthState::new(true, 1, 1);
        assert_eq!(s.observe(false), Some(Transition::BecameUnhealthy));
        assert_eq!(s.observe(true), Some(Transition::BecameHealthy));
        let mut z = HealthState::new(true, 0, 0);
        assert_eq!(z.observe(false), Some(Transition::BecameUnhealthy));
        assert_eq!(z.observe(true), Some(Transition::BecameHealthy));
    }

    #[test]
    fn results_that_agree_never_transition() {
        let mut s = HealthState::new(true, 2, 2);
        for _ in 0..100 {
            assert_eq!(s.observe(true), None);
        }
    }

    // --- the check loop, under paused time, with a scripted probe ---

    /// A probe whose answer the test flips, counting calls.
    fn scripted(
        ok: Arc<AtomicBool>,
        calls: Arc<AtomicUsize>,
    ) -> impl FnMut() -> std::future::Ready<Result<StatusCode, ProbeError>> {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if ok.load(Ordering::SeqCst) {
                Ok(StatusCode::OK)
            } else {
                Err(ProbeError::Status(StatusCode::SERVICE_UNAVAILABLE))
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn check_loop_marks_down_and_up_by_consecutive_probes() {
        let b = backend_at("p", "127.0.0.1:9000");
        let ok = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(check_loop(b.clone(), config(1_000, 3, 2), scripted(ok.clone(), calls.clone())));
        // The first probe runs at once; the backend was healthy before it.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(b.is_healthy());

        ok.store(false, Ordering::SeqCst);
        // Probes at 1 s and 2 s fail: two of three.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(b.is_healthy(), "two failures are not three");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!b.is_healthy(), "third consecutive failure marks it down");

        ok.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!b.is_healthy(), "one success is not two");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(b.is_healthy(), "second consecutive success brings it back");
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn check_loop_keeps_an_unhealthy_verdict_it_inherits() {
        let b = backend_at("p", "127.0.0.1:9000");
        b.set_healthy(false);
        let ok = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(check_loop(b.clone(), config(1_000, 1, 3), scripted(ok, calls)));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert!(!b.is_healthy(), "a restarted check resumes from the verdict");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(b.is_healthy());
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn check_loop_stops_when_the_backend_drains() {
        let b = backend_at("p", "127.0.0.1:9000");
        let calls = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(check_loop(
            b.clone(),
            config(1_000, 1, 1),
            scripted(Arc::new(AtomicBool::new(true)), calls.clone()),
        ));
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        b.start_draining();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(task.is_finished(), "the task must end once its backend drains");
        let after = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), after);
    }

    // --- one probe, against real sockets ---

    /// A one-shot server on 127.0.0.1 that reads a request head, answers
    /// `reply` (or nothing, when `None`), and hands back what it read.
    async fn one_shot(reply: Option<&'static str>) -> (SocketAddr, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            match reply {
                Some(reply) => stream.write_all(reply.as_bytes()).await.unwrap(),
                // Hold the connection open without answering.
                None => tokio::time::sleep(Duration::from_secs(5)).await,
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, task)
    }

    fn http(addr: SocketAddr) -> BackendAddr {
        BackendAddr { scheme: Scheme::Http, authority: addr.to_string() }
    }

    #[tokio::test]
    async fn probe_sends_get_with_host_and_user_agent_and_accepts_2xx() {
        let (addr, server) = one_shot(Some("HTTP/1.1 204 No Content\r\n\r\n")).await;
        let status = probe(&http(addr), "/healthz?deep=1", Duration::from_secs(5), &Transport::plain()).await;
        assert_eq!(status.unwrap(), StatusCode::NO_CONTENT);
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /healthz?deep=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
        assert!(head.contains("user-agent: cutover-health\r\n"), "{head}");
    }

    #[tokio::test]
    async fn probe_fails_on_non_2xx() {
        let (addr, _server) = one_shot(Some("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")).await;
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Status(s) if s == StatusCode::SERVICE_UNAVAILABLE), "{err}");
        assert_eq!(err.to_string(), "answered 503 Service Unavailable");
    }

    #[tokio::test]
    async fn probe_fails_on_refused_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Connect(_)), "{err}");
    }

    #[tokio::test]
    async fn probe_times_out_on_a_silent_backend() {
        let (addr, _server) = one_shot(None).await;
        let err = probe(&http(addr), "/healthz", Duration::from_millis(100), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn probe_fails_when_the_backend_hangs_up() {
        let (addr, _server) = one_shot(Some("")).await;
        let err = probe(&http(addr), "/healthz", Duration::from_secs(5), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Http(_) | ProbeError::Closed), "{err}");
    }

    #[tokio::test]
    async fn probe_reports_tls_backends_as_unsupported() {
        let addr = BackendAddr { scheme: Scheme::Https, authority: "127.0.0.1:1".into() };
        let err = probe(&addr, "/healthz", Duration::from_secs(1), &Transport::plain()).await.unwrap_err();
        assert!(matches!(err, ProbeError::Unsupported(_)), "{err}");
    }

    // --- the lifecycle of checks across snapshots ---

    fn snapshot_of(toml: &str, revision: u64, previous: Option<&Snapshot>) -> (Snapshot, Vec<Arc<Backend>>) {
        let text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{toml}");
        let config = crate::config::parse(std::path::Path::new("test.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        Snapshot::build(Arc::new(config), revision, previous, crate::snapshot::BuildInputs::plain())
    }

    /// Blue with two backends and `health` (may be empty), green unchecked
    /// at weight 0. Backends are on ports nothing listens on; with an hour
    /// between probes only the first runs, and three failures are needed.
    fn lifecycle_config(blue_backends: &str, health: &str) -> String {
        format!(
            "[pools.blue]\nbackends = [{blue_backends}]\n{health}\
             [pools.green]\nbackends = [\"127.0.0.1:3\"]\n\
             [[routes]]\nname = \"r\"\nsplit = {{ blue = 100, green = 0 }}\n"
        )
    }

    const HOURLY: &str = "[pools.blue.health]\ninterval = \"1h\"\ntimeout = \"1s\"\nunhealthy_after = 3\n";

    #[tokio::test]
    async fn sync_starts_keeps_restarts_and_stops_checks() {
        let checks = HealthChecks::new();
        let both = "\"127.0.0.1:1\", \"127.0.0.1:2\"";
        let (s1, _) = snapshot_of(&lifecycle_config(both, HOURLY), 1, None);
        checks.sync(&s1);
        assert_eq!(checks.running(), 2, "blue's two backends; green has no [health]");
        assert_eq!(checks.started(), 2);

        // Unchanged settings: the same tasks keep running, and the verdict stays.
        let blue1 = s1.pool("blue").unwrap().backends[0].clone();
        blue1.set_healthy(false);
        let (s2, removed) = snapshot_of(&lifecycle_config(both, HOURLY), 2, Some(&s1));
        assert!(removed.is_empty());
        checks.sync(&s2);
        assert_eq!(checks.started(), 2, "a reload must not restart checks");
        assert!(!blue1.is_healthy(), "a reload must not reset a verdict");

        // Changed settings: restarted, still from the current verdict.
        let faster = HOURLY.replace("1h", "30m");
        let (s3, _) = snapshot_of(&lifecycle_config(both, &faster), 3, Some(&s2));
        checks.sync(&s3);
        assert_eq!(checks.started(), 4);
        assert_eq!(checks.running(), 2);
        assert!(!blue1.is_healthy());

        // A backend leaves: its check stops.
        let (s4, removed) = snapshot_of(&lifecycle_config("\"127.0.0.1:1\"", &faster), 4, Some(&s3));
        assert_eq!(removed.len(), 1);
        removed[0].start_draining();
        checks.sync(&s4);
        assert_eq!(checks.running(), 1);

        // [health] removed: no checks, and the verdict they left is lifted.
        let (s5, _) = snapshot_of(&lifecycle_config("\"127.0.0.1:1\"", ""), 5, Some(&s4));
        checks.sync(&s5);
        assert_eq!(checks.running(), 0);
        assert!(blue1.is_healthy());

        // Back again, then stopped for good.
        checks.sync(&s4);
        assert_eq!(checks.running(), 1);
        checks.stop();
        assert_eq!(checks.running(), 0);
    }

    #[tokio::test]
    async fn dropping_the_checks_aborts_their_tasks() {
        let (s, _) = snapshot_of(&lifecycle_config("\"127.0.0.1:1\"", HOURLY), 1, None);
        let checks = HealthChecks::new();
        checks.sync(&s);
        let backend = s.pool("blue").unwrap().backends[0].clone();
        // The snapshot, this test, the check's record and its task.
        assert_eq!(Arc::strong_count(&backend), 4);
        drop(checks);
        // An aborted task's future is dropped when the runtime next gets to
        // it, and with it the task's clone of the backend.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&backend) > 2 {
            assert!(tokio::time::Instant::now() < deadline, "check task still alive");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

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
