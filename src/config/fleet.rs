//! The `[fleet]` section as a domain type: where etcd is, under which
//! prefix this fleet keeps its keys, who this replica is, and how it
//! authenticates, with the defaults an operator gets by leaving a field out.
//!
//! It lives with the other sections' types, so that validation
//! ([`super::validate`]) builds it without reaching into the fleet; what
//! the fleet does with it (an etcd client's options, the election key) is
//! `crate::fleet::config`'s.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The default bound on one etcd call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the fleet keeps its keys unless `prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/cutover";
/// The lease TTL: how long a dead leader or replica stays counted.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The `[fleet]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd's client URLs, tried in order.
    pub endpoints: Vec<Endpoint>,
    /// The key prefix of this fleet (no trailing `/`): replicas with the same
    /// prefix share state and verdict.
    pub prefix: String,
    /// This replica's identity, unique in the fleet.
    pub replica: String,
    /// TTL of the replica's lease (leadership, published evidence).
    pub lease_ttl: Duration,
    /// Bound on one etcd call.
    pub timeout: Duration,
    /// etcd credentials, when etcd has auth enabled.
    pub auth: Option<FleetAuth>,
    /// TLS towards `https://` endpoints.
    pub tls: FleetTls,
    /// Whether every replica judges the fleet's evidence (the followers in
    /// shadow, so a new leader goes on with the verdicts), or only the leader.
    pub shadow_judging: bool,
}

/// etcd user and where its password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetAuth {
    /// The etcd user.
    pub username: String,
    /// The password, or the file holding it.
    pub password: Password,
}

/// Where a password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Written in the config (fine for a demo, not for production).
    Inline(String),
    /// Read from a file (a mounted Secret) when the client is built; one
    /// trailing newline is ignored.
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Inline(_) => f.write_str("Inline(<hidden>)"),
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// TLS files for etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetTls {
    /// A CA to trust besides the system's (etcd's own CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when etcd wants one; together, so one
    /// cannot be given without the other.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A parsed etcd client URL: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Whether the endpoint speaks TLS (`https://`).
    pub tls: bool,
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port (2379 when the URL names none).
    pub port: u16,
}

/// An endpoint URL that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("etcd endpoint {url:?}: {reason}")]
pub struct EndpointError {
    /// The URL as written.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// Parse `http://host[:port]` or `https://host[:port]`; a trailing `/`
    /// is accepted, any other path is not (the gateway lives at `/v3/`).
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let err = |reason| EndpointError { url: url.to_string(), reason };
        let uri: http::Uri = url.parse().map_err(|_| err("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(err("the scheme must be http:// or https://")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(err("a path or query is not allowed; give scheme, host and port only"));
        }
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("credentials belong in username/password, not in the URL"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("no host"));
        }
        Ok(Endpoint { tls, host: host.to_string(), port: authority.port_u16().unwrap_or(2379) })
    }
}

impl FleetConfig {
    /// A section naming only `endpoints`; everything else defaulted.
    pub fn new(endpoints: Vec<Endpoint>) -> FleetConfig {
        FleetConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            replica: default_replica_id(),
            lease_ttl: DEFAULT_LEASE_TTL,
            timeout: DEFAULT_TIMEOUT,
            auth: None,
            tls: FleetTls::default(),
            shadow_judging: true,
        }
    }
}

/// `<host name>-<pid>`: unique per process, and readable in `/status`.
/// The host name is `$HOSTNAME` (a pod's name in Kubernetes), else the
/// kernel's.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cutover".to_string());
    format!("{host}-{}", std::process::id())
}
