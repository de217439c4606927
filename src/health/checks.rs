//! The active checks' lifecycle: one probe task per (pool, backend),
//! reconciled with every published snapshot by [`HealthChecks::sync`], so
//! a reload keeps what the checks have learned about a backend that stays.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::StatusCode;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::probe::{probe, ProbeError};
use super::state::{HealthState, Transition};
use crate::config::HealthConfig;
use crate::pool::{Backend, BackendKey};
use crate::snapshot::Snapshot;

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
    // Probes never overlap: one that outlasts the interval (a timeout
    // longer than it is allowed) is followed by the next as soon as it
    // ends or times out, and the interval counts again from there, rather
    // than a burst of missed ticks.
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::time::Duration;

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

    /// A probe that takes `takes` to fail, recording when each started and
    /// ended, and how many ran at once at most.
    #[allow(clippy::type_complexity)]
    fn slow(
        takes: Duration,
        log: Arc<Mutex<Vec<(tokio::time::Instant, tokio::time::Instant)>>>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<StatusCode, ProbeError>> + Send>> {
        move || {
            let (log, running, most) = (log.clone(), running.clone(), most.clone());
            Box::pin(async move {
                let start = tokio::time::Instant::now();
                most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
                running.fetch_sub(1, Ordering::SeqCst);
                log.lock().unwrap().push((start, tokio::time::Instant::now()));
                Err(ProbeError::Timeout(takes))
            })
        }
    }

    /// `timeout` longer than `interval`: a probe that runs 3 s under a 1 s
    /// interval is followed by the next as soon as it ends, never by two at
    /// once, and its failures still count.
    #[tokio::test(start_paused = true)]
    async fn a_probe_longer_than_the_interval_delays_the_next_one() {
        let b = backend_at("p", "127.0.0.1:9000");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let takes = Duration::from_secs(3);
        let task =
            tokio::spawn(check_loop(b.clone(), config(1_000, 3, 1), slow(takes, log.clone(), running, most.clone())));
        tokio::time::sleep(Duration::from_millis(9_500)).await;
        let probes = log.lock().unwrap().clone();
        assert_eq!(probes.len(), 3, "probes ending at 3, 6 and 9 s: {probes:?}");
        for pair in probes.windows(2) {
            assert_eq!(pair[1].0, pair[0].1, "the next probe starts as the previous ends: {probes:?}");
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "probes of one backend never overlap");
        assert!(!b.is_healthy(), "three slow failures mark it down");
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
}
