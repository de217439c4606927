//! Running the proxy: bind the listeners, serve, reload, shut down
//! gracefully.
//!
//! [`run`] takes already-bound listeners and a shutdown future (as
//! mini-redis does), so tests bind `127.0.0.1:0` and stop the proxy without
//! signals, and the binary differs only in how it binds and what it waits on.
//!
//! Shutdown follows what a Kubernetes rollout needs. When `shutdown`
//! resolves, `/ready` turns 503 at once while traffic is still served for
//! `shutdown_delay` (the time load balancers need to stop sending: this
//! replaces a preStop sleep); then the listeners close, idle keep-alive
//! connections close, busy HTTP/1 connections get `Connection: close` on
//! their last response and HTTP/2 ones a `GOAWAY`, and in-flight requests
//! get up to `drain_timeout` before `run` returns.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::{Control, ReloadCause};
use crate::lifecycle::{stopped, Lifecycle, OpenConnections};
use crate::metrics::Metrics;
use crate::server::{self, ConnLimits};

/// The sockets the proxy serves on, bound before [`run`].
#[derive(Debug)]
pub struct Listeners {
    /// Traffic listeners, one per `[server] listen` address.
    pub traffic: Vec<TcpListener>,
    /// The admin API listener.
    pub admin: TcpListener,
    /// The HTTPS listener, when `[server.tls]` is set.
    pub tls: Option<TcpListener>,
}

impl Listeners {
    /// The bound traffic addresses (useful after binding port 0).
    pub fn traffic_addrs(&self) -> Vec<SocketAddr> {
        self.traffic.iter().filter_map(|l| l.local_addr().ok()).collect()
    }

    /// The bound HTTPS address, if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Bind every listener the config names; the error names the address.
pub async fn bind(config: &Config) -> Result<Listeners, (SocketAddr, io::Error)> {
    let mut traffic = Vec::with_capacity(config.server.listen.len());
    for &addr in &config.server.listen {
        traffic.push(TcpListener::bind(addr).await.map_err(|e| (addr, e))?);
    }
    let admin_addr = config.admin.listen;
    let admin = TcpListener::bind(admin_addr).await.map_err(|e| (admin_addr, e))?;
    let tls = match &config.server.tls {
        Some(tls) => Some(TcpListener::bind(tls.listen).await.map_err(|e| (tls.listen, e))?),
        None => None,
    };
    Ok(Listeners { traffic, admin, tls })
}

/// Knobs that are not part of the config file.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Seed for every random choice; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// The file the config came from, and its text: reloads re-read it.
    /// `None` disables reloading.
    pub source: Option<(PathBuf, String)>,
    /// Watch the config file's directory and reload on change.
    pub watch: bool,
    /// Reload on each signal this stream yields: the binary passes a
    /// `SIGHUP` stream created before binding, so a signal that arrives
    /// while starting up is queued rather than killing the process.
    #[cfg(unix)]
    pub reload_signal: Option<tokio::signal::unix::Signal>,
}

/// Serve `config` on `listeners` until `shutdown` resolves, then shut down
/// gracefully (see the module docs).
pub async fn run(
    config: Config,
    listeners: Listeners,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let seed = options.seed.unwrap_or_else(|| {
        use rand::{Rng, SeedableRng};
        rand::rngs::SmallRng::from_os_rng().random()
    });
    let limits = ConnLimits {
        idle_timeout: config.server.idle_timeout,
        max_request_header_bytes: config.server.max_request_header_bytes,
        header_read_timeout: config.server.header_read_timeout,
        send_timeout: config.server.send_timeout,
    };
    // The certificate is checked before anything serves: a proxy that
    // cannot terminate TLS must not start half-working.
    let server_tls = match &config.server.tls {
        Some(tls) => Some(Arc::new(crate::tls::ServerTls::load(&tls.cert, &tls.key).map_err(io::Error::other)?)),
        None => None,
    };
    let (path, text) = match options.source {
        Some((path, text)) => (path, Some(text)),
        None => (PathBuf::new(), None),
    };
    let reloadable = text.is_some();
    // The addresses `[access_log] listeners` names, in the order `bind` binds them.
    let named: Vec<SocketAddr> =
        config.server.listen.iter().copied().chain(config.server.tls.as_ref().map(|t| t.listen)).collect();
    let (breaches_tx, breaches_rx) = tokio::sync::mpsc::unbounded_channel();
    let fleet_config = config.fleet.clone();
    let control = Control::start(config, path.clone(), text, seed, Metrics::new(), Some(breaches_tx));
    let proxy = control.proxy().clone();
    // A replica of a fleet reads the fleet's state before it serves its
    // first request (bounded: past `[fleet] timeout` it starts from the
    // state file, fail static).
    let fleet = match fleet_config {
        Some(config) => Some(crate::fleet::Fleet::start(control.clone(), config).await.map_err(io::Error::other)?),
        None => None,
    };
    let _fleet_stops_with_run = fleet.as_ref().map(crate::fleet::Fleet::stop_on_drop);

    let (stopping_tx, stopping) = watch::channel(false);
    let (closing_tx, closing) = watch::channel(false);
    let lifecycle = Lifecycle { stopping, closing: closing.clone() };
    let open = Arc::new(OpenConnections::default());

    let mut listener_tasks = Vec::new();
    for (at, listener) in listeners.traffic.into_iter().enumerate() {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving traffic");
        }
        let name = named.get(at).copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        listener_tasks.push(tokio::spawn(server::serve(
            listener,
            name,
            proxy.clone(),
            limits,
            None,
            open.clone(),
            closing.clone(),
        )));
    }
    if let (Some(listener), Some(tls)) = (listeners.tls, &server_tls) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving HTTPS");
        }
        let name = named.last().copied().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        listener_tasks.push(tokio::spawn(server::serve(
            listener,
            name,
            proxy.clone(),
            limits,
            Some(tls.clone()),
            open.clone(),
            closing.clone(),
        )));
    }
    if let Ok(addr) = listeners.admin.local_addr() {
        tracing::info!(%addr, "serving admin API");
    }
    let (admin_stop_tx, admin_stop) = watch::channel(false);
    let series = crate::console::series::Series::shared();
    let admin_state = Arc::new(
        crate::admin::AdminState::new(control.clone(), lifecycle.clone(), reloadable, series.clone())
            .with_fleet(fleet.clone()),
    );
    let admin_task = tokio::spawn(crate::admin::serve(listeners.admin, admin_state, admin_stop.clone()));

    let mut background = vec![
        tokio::spawn(control.clone().run_guards(breaches_rx)),
        tokio::spawn(close_idle_upstream_connections(proxy.clone(), closing.clone())),
        tokio::spawn(crate::memory::release_after_bursts(closing.clone())),
        tokio::spawn(crate::console::series::sample(series, control.metrics().clone(), admin_stop)),
    ];
    if reloadable && options.watch {
        let control = control.clone();
        let mut stop = closing.clone();
        background.push(tokio::spawn(crate::config::watch::watch(
            path.clone(),
            move || control.reload_from_watch(),
            async move { stopped(&mut stop).await },
        )));
    }
    if let Some(tls) = &server_tls {
        // Rotated certificates apply without a restart; one watch per
        // directory holding the certificate or the key.
        let mut dirs: Vec<&std::path::Path> = Vec::new();
        for file in tls.files() {
            if !dirs.contains(&file.parent().unwrap_or(file)) {
                dirs.push(file.parent().unwrap_or(file));
                let tls = tls.clone();
                let mut stop = closing.clone();
                background.push(tokio::spawn(crate::config::watch::watch(
                    file.to_path_buf(),
                    move || tls.reload(),
                    async move { stopped(&mut stop).await },
                )));
            }
        }
    }
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
        Ok(usr1) => background.push(tokio::spawn(reopen_access_log_on_signal(usr1, proxy.clone()))),
        Err(e) => tracing::warn!(error = %e, "SIGUSR1 cannot reopen the access log"),
    }
    #[cfg(unix)]
    if let Some(hangup) = options.reload_signal {
        background.push(tokio::spawn(reload_on_signal(
            hangup,
            control.clone(),
            reloadable,
            server_tls.clone(),
            closing.clone(),
        )));
    }

    shutdown.await;
    let delay = proxy.snapshot().config.server.shutdown_delay;
    let drain_timeout = proxy.snapshot().config.server.drain_timeout;
    tracing::info!(?delay, "shutting down: /ready now answers 503");
    stopping_tx.send_replace(true);
    tokio::time::sleep(delay).await;

    tracing::info!(open = open.count(), "closing listeners; waiting for in-flight requests");
    closing_tx.send_replace(true);
    for task in listener_tasks {
        let _ = task.await;
    }
    let tunnels = proxy.tunnels();
    let drained = async {
        open.all_closed().await;
        tunnels.all_closed().await;
    };
    if tokio::time::timeout(drain_timeout, drained).await.is_err() {
        tracing::warn!(
            connections = open.count(),
            tunnels = tunnels.count(),
            "drain_timeout reached; closing what is still open"
        );
    }
    tunnels.close_all();
    control.stop_health();
    if let Some(fleet) = &fleet {
        fleet.leave().await;
    }
    admin_stop_tx.send_replace(true);
    let _ = admin_task.await;
    for task in background {
        task.abort();
    }
    // The last requests' lines, before the process exits.
    if let Some(log) = proxy.snapshot().access_log.clone() {
        let grace = Duration::from_secs(2);
        if !tokio::task::spawn_blocking(move || log.flush(grace)).await.unwrap_or(false) {
            tracing::warn!("access log lines still queued at exit are lost");
        }
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// Close pooled upstream connections once they have been idle for
/// `[server] upstream_idle_timeout`, until the proxy starts closing.
///
/// One sweep over the current snapshot's backends every sixth of the timeout
/// (at least 10 ms, at most 10 s; read each time, so a reload applies),
/// instead of a timer per connection or a clock read per request. A
/// connection therefore closes after between five sixths of the timeout
/// (the timeout less 10 s, for timeouts over a minute) and the timeout:
/// not later (except for timeouts under 60 ms, by up to 10 ms), so a
/// backend or middlebox with a longer idle limit never closes it first.
async fn close_idle_upstream_connections(proxy: Arc<crate::proxy::Proxy>, mut closing: watch::Receiver<bool>) {
    let mut last_sweep = tokio::time::Instant::now();
    let mut limit = proxy.snapshot().config.server.upstream_idle_timeout;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(idle_sweep_period(limit)) => {}
            _ = stopped(&mut closing) => return,
        }
        let now = tokio::time::Instant::now();
        let elapsed = now.saturating_duration_since(last_sweep);
        last_sweep = now;
        let snapshot = proxy.snapshot();
        limit = snapshot.config.server.upstream_idle_timeout;
        let closed: usize = snapshot
            .pools
            .iter()
            .flat_map(|pool| pool.backends.iter())
            .map(|backend| backend.close_idle(elapsed, limit))
            .sum();
        if closed > 0 {
            tracing::debug!(closed, ?limit, "closed idle upstream connections");
        }
    }
}

/// How often idle upstream connections are swept for `limit`: a sixth of
/// it, between 10 ms and 10 s.
fn idle_sweep_period(limit: Duration) -> Duration {
    (limit / 6).clamp(Duration::from_millis(10), Duration::from_secs(10))
}

/// SIGUSR1: the access log opens its file again (after logrotate renamed it).
#[cfg(unix)]
async fn reopen_access_log_on_signal(mut usr1: tokio::signal::unix::Signal, proxy: Arc<crate::proxy::Proxy>) {
    while usr1.recv().await.is_some() {
        if let Some(log) = &proxy.snapshot().access_log {
            tracing::info!("reopening the access log");
            log.reopen();
        }
    }
}

#[cfg(unix)]
async fn reload_on_signal(
    mut hangup: tokio::signal::unix::Signal,
    control: Arc<Control>,
    reloadable: bool,
    server_tls: Option<Arc<crate::tls::ServerTls>>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            received = hangup.recv() => {
                if received.is_none() {
                    return;
                }
                if reloadable {
                    let _ = control.reload(ReloadCause::Signal);
                }
                // SIGHUP also re-reads the certificate, as nginx's does.
                if let Some(tls) = &server_tls {
                    tls.reload();
                }
            }
            _ = stopped(&mut closing) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_sweeps_come_often_enough_to_close_before_the_timeout() {
        // A sixth of the timeout: closed between 5/6 of it and all of it.
        assert_eq!(idle_sweep_period(Duration::from_secs(60)), Duration::from_secs(10));
        assert_eq!(idle_sweep_period(Duration::from_millis(300)), Duration::from_millis(50));
        // Long timeouts are still swept every 10 s, so the overshoot stays bounded.
        assert_eq!(idle_sweep_period(Duration::from_secs(3600)), Duration::from_secs(10));
        // Tiny ones do not turn the sweep into a busy loop.
        assert_eq!(idle_sweep_period(Duration::from_millis(1)), Duration::from_millis(10));
    }
}
