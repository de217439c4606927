//! Every change of routing state goes through here: reloads now, admin
//! overrides and guard trips as they arrive.
//!
//! [`Control`] serialises changes behind one mutex (changes are rare; the
//! request path never takes it), builds the next [`Snapshot`] from the
//! current one off the request path, and publishes it with one store. A
//! reload is all or nothing: the file is read and validated first, and any
//! error leaves the running snapshot untouched and is kept for `/status`.
//! Unchanged content is recognised byte for byte and makes no new revision.
//!
//! Backends that leave the config are drained here: they take no new
//! requests from the moment the new snapshot is published, their idle
//! connections close at once, and a task waits up to `drain_timeout` for
//! their in-flight requests before cutting what is left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{self, Config, ConfigError, TlsConfig};
use crate::pool::Backend;
use crate::proxy::Proxy;
use crate::snapshot::Snapshot;

/// What started a reload, for logs and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The file watcher saw a change.
    Watch,
    /// `SIGHUP`.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl ReloadCause {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Watch => "file change",
            ReloadCause::Signal => "SIGHUP",
            ReloadCause::Admin => "admin",
        }
    }
}

/// The result of a successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot was published with this revision.
    Applied(u64),
    /// The file's content is what already runs; the revision stays.
    Unchanged(u64),
}

impl ReloadOutcome {
    /// The revision in force after the reload.
    pub fn revision(self) -> u64 {
        match self {
            ReloadOutcome::Applied(r) | ReloadOutcome::Unchanged(r) => r,
        }
    }
}

/// The last reload attempt, as `/status` reports it.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// Whether it applied (or was unchanged).
    pub ok: bool,
    /// When it ran.
    pub time: SystemTime,
    /// The `file:line:col: message` of a failed attempt.
    pub error: Option<String>,
}

/// Counts of reload attempts, by result.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReloadCounts {
    /// Attempts that applied or found the content unchanged.
    pub ok: u64,
    /// Attempts that failed to read or validate.
    pub error: u64,
}

/// The owner of state changes.
#[derive(Debug)]
pub struct Control {
    proxy: Arc<Proxy>,
    config_path: PathBuf,
    state: Mutex<State>,
    /// Listener settings the process was started with; a reload cannot move them.
    started: Listen,
}

#[derive(Debug)]
struct State {
    revision: u64,
    /// The file content that built the running snapshot, if it came from the file.
    applied_text: Option<String>,
    last_reload: Option<ReloadRecord>,
    counts: ReloadCounts,
    /// Backends removed by a reload and still finishing requests.
    draining: Vec<Arc<Backend>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Listen {
    traffic: Vec<SocketAddr>,
    admin: SocketAddr,
    tls: Option<TlsConfig>,
}

impl Listen {
    fn of(config: &Config) -> Listen {
        Listen { traffic: config.server.listen.clone(), admin: config.admin.listen, tls: config.server.tls.clone() }
    }
}

impl Control {
    /// Control over `proxy`, whose snapshot was built from `config` as read
    /// from `config_path` (content `text`, if known).
    pub fn new(proxy: Arc<Proxy>, config: &Config, config_path: PathBuf, text: Option<String>) -> Control {
        let revision = proxy.snapshot().revision;
        Control {
            proxy,
            config_path,
            started: Listen::of(config),
            state: Mutex::new(State {
                revision,
                applied_text: text,
                last_reload: None,
                counts: ReloadCounts::default(),
                draining: Vec::new(),
            }),
        }
    }

    /// The proxy this controls.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// The config file reloads read.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Re-read the config file and apply it if valid and changed.
    pub fn reload(&self, cause: ReloadCause) -> Result<ReloadOutcome, ConfigError> {
        let text = std::fs::read_to_string(&self.config_path).map_err(|e| ConfigError {
            path: self.config_path.clone(),
            position: None,
            message: format!("cannot read config: {e}"),
        });
        let mut state = self.lock();
        let text = match text {
            Ok(text) => text,
            Err(err) => return Err(self.record_failure(&mut state, err, cause)),
        };
        if state.applied_text.as_deref() == Some(text.as_str()) {
            state.counts.ok += 1;
            state.last_reload = Some(ReloadRecord { ok: true, time: SystemTime::now(), error: None });
            tracing::debug!(cause = cause.as_str(), "config unchanged");
            return Ok(ReloadOutcome::Unchanged(state.revision));
        }
        let config = match config::parse(&self.config_path, &text) {
            Ok(config) => config,
            Err(err) => return Err(self.record_failure(&mut state, err, cause)),
        };
        let revision = self.apply_locked(&mut state, config);
        state.applied_text = Some(text);
        state.counts.ok += 1;
        state.last_reload = Some(ReloadRecord { ok: true, time: SystemTime::now(), error: None });
        tracing::info!(cause = cause.as_str(), revision, "config reloaded");
        Ok(ReloadOutcome::Applied(revision))
    }

    /// Like [`Control::reload`], but a file that is empty (a writer that
    /// truncated it and has not written yet) is skipped rather than
    /// counted as an error: the write that fills it triggers another reload.
    pub fn reload_from_watch(&self) {
        match std::fs::metadata(&self.config_path) {
            Ok(meta) if meta.len() == 0 => {
                tracing::debug!("config file is empty; waiting for its content");
                return;
            }
            // Deleted, perhaps mid-recreate: the recreation triggers again.
            Err(_) => return,
            Ok(_) => {}
        }
        let _ = self.reload(ReloadCause::Watch);
    }

    fn record_failure(&self, state: &mut State, err: ConfigError, cause: ReloadCause) -> ConfigError {
        state.counts.error += 1;
        state.last_reload = Some(ReloadRecord { ok: false, time: SystemTime::now(), error: Some(err.to_string()) });
        tracing::error!(cause = cause.as_str(), error = %err, "config reload failed; the running config stays in force");
        err
    }

    /// Build and publish a snapshot of `config`; returns the new revision.
    fn apply_locked(&self, state: &mut State, config: Config) -> u64 {
        let wanted = Listen::of(&config);
        if wanted != self.started {
            tracing::warn!(
                "listener addresses changed in the config; they apply after a restart (now serving on {:?}, admin {})",
                self.started.traffic,
                self.started.admin
            );
        }
        state.revision += 1;
        let drain_timeout = config.server.drain_timeout;
        let current = self.proxy.snapshot();
        let (snapshot, removed) = Snapshot::build(Arc::new(config), state.revision, Some(&current));
        self.proxy.publish(snapshot);
        for backend in removed {
            self.drain(state, backend, drain_timeout);
        }
        state.revision
    }

    /// Stop sending to `backend` and let its in-flight requests finish.
    fn drain(&self, state: &mut State, backend: Arc<Backend>, timeout: Duration) {
        backend.start_draining();
        tracing::info!(pool = %backend.pool, backend = %backend.addr, in_flight = backend.in_flight(), "draining backend");
        state.draining.retain(|b| b.in_flight() > 0);
        state.draining.push(backend.clone());
        tokio::spawn(async move {
            match finish_drain(&backend, timeout).await {
                DrainEnd::Drained => tracing::info!(pool = %backend.pool, backend = %backend.addr, "backend drained"),
                DrainEnd::Cut(cut) => {
                    tracing::warn!(pool = %backend.pool, backend = %backend.addr, cut, "drain timed out; cut in-flight requests")
                }
            }
        });
    }

    /// Backends still draining (removed from the config, requests in flight).
    pub fn draining(&self) -> Vec<Arc<Backend>> {
        let mut state = self.lock();
        state.draining.retain(|b| b.in_flight() > 0);
        state.draining.clone()
    }

    /// The last reload attempt, if any.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.lock().last_reload.clone()
    }

    /// Reload attempts so far, by result.
    pub fn reload_counts(&self) -> ReloadCounts {
        self.lock().counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in
        // a way that matters more than stopping reloads would: recover it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every in-flight request finished in time.
    Drained,
    /// `drain_timeout` passed; this many requests were cut.
    Cut(usize),
}

/// Wait up to `timeout` for a draining backend's requests, then cut the rest.
pub async fn finish_drain(backend: &Backend, timeout: Duration) -> DrainEnd {
    match tokio::time::timeout(timeout, backend.wait_idle()).await {
        Ok(()) => DrainEnd::Drained,
        Err(_) => DrainEnd::Cut(backend.cut_in_flight()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendAddr, Scheme};

    fn backend() -> Arc<Backend> {
        let addr = BackendAddr { scheme: Scheme::Http, authority: "127.0.0.1:1".into() };
        Arc::new(Backend::new("canary".into(), addr, Duration::from_secs(1)))
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_when_the_last_request_finishes() {
        let b = backend();
        let first = b.begin_request();
        let second = b.begin_request();
        b.start_draining();
        let drain = tokio::spawn({
            let b = b.clone();
            async move { finish_drain(&b, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!drain.is_finished(), "drained with a request still in flight");
        drop(second);
        assert_eq!(drain.await.unwrap(), DrainEnd::Drained);
        assert_eq!(b.cut_requests(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_cuts_what_outlives_the_timeout() {
        let b = backend();
        let _stuck = b.begin_request();
        b.start_draining();
        let started = tokio::time::Instant::now();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Cut(1));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(b.cut_requests(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_backend_drains_at_once() {
        let b = backend();
        b.start_draining();
        assert_eq!(finish_drain(&b, Duration::from_secs(30)).await, DrainEnd::Drained);
    }
}
