//! The restart diff: which settings of a reloaded config cannot apply to
//! the running process.
//!
//! Listeners are bound, the runtime is sized and each listener's connection
//! settings are built once, at start. A reload that changes them applies
//! everything else and names these keys in a warning, so the operator knows
//! a restart is owed; it never fails for them.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, TlsConfig};

/// The settings fixed when the process starts: listeners are bound, the
/// runtime sized and each listener's connection settings built once.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedAtStart {
    traffic: Vec<SocketAddr>,
    admin: SocketAddr,
    tls: Option<TlsConfig>,
    workers: Option<usize>,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    send_timeout: Duration,
    max_request_header_bytes: usize,
    /// The etcd connection, prefix and identity are fixed for the process:
    /// the replica's lease, leadership and watch are built on them.
    fleet: Option<super::fleet::FleetConfig>,
}

impl FixedAtStart {
    /// The settings of `config` that only a restart can change.
    pub fn of(config: &Config) -> FixedAtStart {
        FixedAtStart {
            traffic: config.server.listen.clone(),
            admin: config.admin.listen,
            tls: config.server.tls.clone(),
            workers: config.server.workers,
            idle_timeout: config.server.idle_timeout,
            header_read_timeout: config.server.header_read_timeout,
            send_timeout: config.server.send_timeout,
            max_request_header_bytes: config.server.max_request_header_bytes,
            fleet: config.fleet.clone(),
        }
    }

    /// The keys of `wanted` that differ from these and need a restart. A
    /// lower `max_request_header_bytes` applies at once (the proxy's own
    /// check reads the snapshot); only raising it past the read buffer sized
    /// at start needs a restart.
    pub fn needing_restart(&self, wanted: &FixedAtStart) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differs = |key: &'static str, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        differs("server.listen", self.traffic != wanted.traffic);
        differs("admin.listen", self.admin != wanted.admin);
        differs("server.tls", self.tls != wanted.tls);
        differs("server.workers", self.workers != wanted.workers);
        differs("server.idle_timeout", self.idle_timeout != wanted.idle_timeout);
        differs("server.header_read_timeout", self.header_read_timeout != wanted.header_read_timeout);
        differs("server.send_timeout", self.send_timeout != wanted.send_timeout);
        differs(
            "server.max_request_header_bytes (raised)",
            wanted.max_request_header_bytes > self.max_request_header_bytes,
        );
        differs("fleet", self.fleet != wanted.fleet);
        keys
    }
}
