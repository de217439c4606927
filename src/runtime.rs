//! Running the proxy: bind the listeners, serve until told to stop, drain.
//!
//! [`run`] takes already-bound listeners and a shutdown future (as
//! mini-redis does), so tests bind `127.0.0.1:0` and stop the proxy without
//! signals, and the binary differs only in how it binds and what it waits on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::Proxy;
use crate::server::{self, ConnLimits};
use crate::snapshot::Snapshot;

/// The sockets the proxy serves on, bound before [`run`].
#[derive(Debug)]
pub struct Listeners {
    /// Traffic listeners, one per `[server] listen` address.
    pub traffic: Vec<TcpListener>,
    /// The admin API listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// The bound traffic addresses (useful after binding port 0).
    pub fn traffic_addrs(&self) -> Vec<SocketAddr> {
        self.traffic.iter().filter_map(|l| l.local_addr().ok()).collect()
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
    Ok(Listeners { traffic, admin })
}

/// Knobs that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Seed for every random choice; `None` draws one from the OS.
    pub seed: Option<u64>,
}

/// Serve `config` on `listeners` until `shutdown` resolves, then stop
/// accepting and let open connections finish (up to `drain_timeout`).
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
    let config = Arc::new(config);
    let (snapshot, _) = Snapshot::build(config.clone(), 1, None);
    let proxy = Arc::new(Proxy::new(snapshot, seed));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = ConnLimits {
        idle_timeout: config.server.idle_timeout,
        max_request_header_bytes: config.server.max_request_header_bytes,
    };

    let mut tasks = Vec::new();
    for listener in listeners.traffic {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving traffic");
        }
        tasks.push(tokio::spawn(server::serve(listener, proxy.clone(), limits.clone(), stop_rx.clone())));
    }
    let admin_state = Arc::new(crate::admin::AdminState::new(proxy.clone(), stop_rx.clone()));
    if let Ok(addr) = listeners.admin.local_addr() {
        tracing::info!(%addr, "serving admin API");
    }
    tasks.push(tokio::spawn(crate::admin::serve(listeners.admin, admin_state, stop_rx.clone())));

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
