//! The configuration: what the operator wrote, checked into types that cannot
//! be wrong.
//!
//! The pipeline is file → [`raw`] (serde structs mirroring the TOML, every
//! value wrapped in a span so errors can point at it) → [`validate`] → the
//! domain types below. Nothing downstream of this module ever sees a split
//! whose weights are all zero, a pool without backends or a duration that did
//! not parse: those are rejected here, each with `file:line:col`, so a reload
//! that fails validation changes nothing. The same [`load`] serves `cutover
//! check`, startup and every hot reload, so "check passes" means "reload
//! applies". [`props`] states that promise for any text, for the property
//! tests and the fuzz target.

pub mod fleet;
pub(crate) mod props;
mod raw;
pub mod restart;
pub mod schema;
mod summary;
mod validate;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

pub use validate::parse;
pub(crate) use validate::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

/// A validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The traffic listeners and their limits.
    pub server: ServerConfig,
    /// The admin API listener.
    pub admin: AdminConfig,
    /// The access log; `None` when off.
    pub access_log: Option<AccessLogConfig>,
    /// Every pool, sorted by name.
    pub pools: Vec<PoolConfig>,
    /// Every route, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[fleet]`: the etcd this replica shares state with; `None` runs alone.
    pub fleet: Option<fleet::FleetConfig>,
}

/// `[server]`: listeners, timeouts and limits of the traffic side.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Plain HTTP/1.1 + h2c listen addresses; never empty.
    pub listen: Vec<SocketAddr>,
    /// Whole request deadline, upstream included; 504 when exceeded.
    pub request_timeout: Duration,
    /// Deadline for opening a TCP connection to a backend.
    pub connect_timeout: Duration,
    /// How long an idle downstream keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// How long a pooled upstream keep-alive connection may sit unused
    /// before the proxy closes it.
    pub upstream_idle_timeout: Duration,
    /// Longest wait for in-flight requests on shutdown or backend removal.
    pub drain_timeout: Duration,
    /// After SIGTERM, how long to keep serving while `/ready` answers 503.
    pub shutdown_delay: Duration,
    /// Largest accepted request head (request line + headers); 431 above it.
    pub max_request_header_bytes: usize,
    /// Deadline for a client to send a whole request head, counted from its
    /// first byte (slowloris protection).
    pub header_read_timeout: Duration,
    /// Longest silence while a client is sending a request body (slow POST);
    /// the request then fails with 408 and counts against the client.
    pub body_read_timeout: Duration,
    /// Longest a response write may wait on a client that reads nothing
    /// (slow read); the connection is then closed.
    pub send_timeout: Duration,
    /// Runtime worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Whether request headers whose name contains `_` are forwarded
    /// (otherwise they are dropped: see [`crate::headers::drop_underscored`]).
    pub allow_underscores_in_headers: bool,
    /// Optional TLS listener.
    pub tls: Option<TlsConfig>,
    /// Request IDs, trace context and the pool header.
    pub requests: RequestHeaders,
}

/// The `[server]` keys on the headers that tie a request to its logs:
/// request IDs, W3C trace context and the pool header.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHeaders {
    /// The request ID header (lowercase); `None` turns request IDs off.
    pub request_id: Option<HeaderName>,
    /// The longest client-supplied request ID kept, in bytes.
    pub request_id_max_len: usize,
    /// Whether a trace is started for a request that carries none.
    pub start_traces: bool,
    /// A response header naming the pool that served the request.
    pub pool_header: Option<HeaderName>,
}

impl Default for RequestHeaders {
    fn default() -> RequestHeaders {
        RequestHeaders {
            request_id: Some(HeaderName::from_static("x-request-id")),
            request_id_max_len: crate::access_log::request_id::DEFAULT_MAX_LEN,
            start_traces: true,
            pool_header: None,
        }
    }
}

/// `[access_log]`: one line per finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// Where lines go.
    pub to: crate::access_log::Destination,
    /// The line format.
    pub format: crate::access_log::Format,
    /// The share of successful requests logged; failures always are.
    pub sample: f64,
    /// Whether query strings are kept.
    pub query: bool,
    /// Records that may wait for the writer before new ones are dropped.
    pub queue: usize,
    /// The longest a line waits before it is written.
    pub flush: std::time::Duration,
    /// Only requests on these listeners are logged; empty means all.
    pub listeners: Vec<SocketAddr>,
}

impl AccessLogConfig {
    /// Whether requests arriving on `listener` are logged.
    pub fn covers(&self, listener: SocketAddr) -> bool {
        self.listeners.is_empty() || self.listeners.contains(&listener)
    }
}

/// `[server.tls]`: an HTTPS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Address of the TLS listener.
    pub listen: SocketAddr,
    /// PEM certificate chain, relative paths resolved against the config file's directory.
    pub cert: PathBuf,
    /// PEM private key, resolved like `cert`.
    pub key: PathBuf,
}

/// `[admin]`: the admin API listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address of the admin API; loopback by default.
    pub listen: SocketAddr,
    /// File holding the bearer token that mutating calls must present.
    pub token_file: Option<PathBuf>,
    /// File where runtime overrides and trips are persisted.
    pub state_file: Option<PathBuf>,
    /// Host names (besides IP literals and `localhost`) the admin API
    /// answers to, lowercase and without a port.
    pub allowed_hosts: Vec<String>,
}

/// A pool's name, as written in `[pools.NAME]`.
pub type PoolName = String;

/// `[pools.NAME]`: a set of interchangeable backends.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The pool's name (`blue`, `green`, `canary`, ...).
    pub name: PoolName,
    /// The backends, in file order, without duplicates; never empty.
    pub backends: Vec<BackendAddr>,
    /// How a backend is chosen inside the pool.
    pub lb: LbPolicy,
    /// The HTTP version spoken to the backends.
    pub protocol: UpstreamProtocol,
    /// Extra CA certificates trusted for `https://` backends, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Optional active health check.
    pub health: Option<HealthConfig>,
    /// Optional automatic-rollback thresholds.
    pub guard: Option<GuardConfig>,
    /// Optional slow start of backends that join or return to the pool.
    pub slow_start: Option<SlowStartConfig>,
    /// Whether an idempotent request without a body, whose connection
    /// closed after it was written and before any answer, is sent once more.
    pub retry_unanswered: bool,
    /// The `grpc-status` codes of a gRPC answer that count as the
    /// backend's failure (see [`crate::grpc`]).
    pub grpc_failure_codes: crate::grpc::GrpcCodes,
}

/// `slow_start` and `slow_start_aggression` of a pool: how a backend's
/// share ramps up after it joins or returns (`crate::pool::slow_start`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStartConfig {
    /// How long the ramp lasts; never zero.
    pub window: std::time::Duration,
    /// The exponent's inverse: above 1 ramps up faster early; always > 0.
    pub aggression: f64,
}

/// Whether a backend is reached over plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `host:port` or `http://host:port`.
    Http,
    /// `https://host:port`.
    Https,
}

/// One backend address as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    /// Transport to the backend.
    pub scheme: Scheme,
    /// `host:port`, host lowercased; the identity of the backend inside its pool.
    pub authority: String,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Http => f.write_str(&self.authority),
            Scheme::Https => write!(f, "https://{}", self.authority),
        }
    }
}

/// The HTTP version spoken to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive (the default).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) over plain TCP, ALPN `h2` over TLS.
    H2,
}

/// In-pool balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Power of two choices: the less loaded of two random backends.
    #[default]
    P2c,
    /// Each backend in turn.
    RoundRobin,
    /// Uniformly random.
    Random,
}

/// `[pools.NAME.health]`: active health checking.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Path probed with `GET`; a 2xx answer is healthy.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Deadline of one probe.
    pub timeout: Duration,
    /// Consecutive failures that mark a backend unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive successes that mark it healthy again.
    pub healthy_after: u32,
}

/// `[pools.NAME.guard]`: thresholds that trip an automatic rollback, and
/// the baseline the pool is judged against.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Largest tolerated failure share, in `0.0..=1.0`; always set without
    /// a baseline.
    pub max_error_rate: Option<f64>,
    /// Largest tolerated p99 latency, if judged at all.
    pub max_p99_latency: Option<Duration>,
    /// Length of the sliding window.
    pub window: Duration,
    /// Fewest requests in the window before anything is judged; at least 1.
    pub min_requests: u64,
    /// The pool this one is judged against: another pool of the config.
    pub baseline: Option<PoolName>,
    /// Allowed excess of the failure share over the baseline's, in `0..1`.
    pub max_error_increase: f64,
    /// If set (at least 1), the p99 may be at most this multiple of the
    /// baseline's.
    pub max_latency_ratio: Option<f64>,
    /// Confidence of every verdict, in `0.5..1`.
    pub confidence: f64,
}

impl Default for GuardConfig {
    /// The documented defaults, with no threshold and no baseline.
    fn default() -> GuardConfig {
        GuardConfig {
            max_error_rate: None,
            max_p99_latency: None,
            window: Duration::from_secs(30),
            min_requests: 100,
            baseline: None,
            max_error_increase: 0.01,
            max_latency_ratio: None,
            confidence: 0.99,
        }
    }
}

impl GuardConfig {
    /// How the judge sees these settings.
    pub fn judge(&self) -> crate::judge::JudgeConfig {
        crate::judge::JudgeConfig {
            baseline: self.baseline.clone(),
            max_error_increase: self.max_error_increase,
            max_latency_ratio: self.max_latency_ratio,
            confidence: self.confidence,
            max_error_rate: self.max_error_rate,
            max_p99_latency: self.max_p99_latency,
            min_requests: self.min_requests,
            window: self.window,
        }
    }
}

/// `[[routes]]`: which requests go where.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique route name.
    pub name: String,
    /// Which `Host` values match.
    pub host: HostMatch,
    /// Path prefix matched on whole segments; starts with `/`.
    pub path_prefix: String,
    /// Relative weights per pool, in the order the file lists them (which is
    /// also the order of the sticky bucket ranges); at least one is nonzero
    /// and every pool exists.
    pub split: Vec<(PoolName, u32)>,
    /// Optional stickiness key.
    pub sticky: Option<StickyKey>,
    /// Force rules, in file order; the first that matches wins.
    pub force: Vec<ForceRule>,
    /// `[routes.rollout]`: the route's progressive rollout, if any.
    pub rollout: Option<crate::rollout::Plan>,
    /// Copies of some requests sent to a shadow pool, if any.
    pub mirror: Option<MirrorConfig>,
}

/// `[routes.mirror]`: copies of a share of a route's requests go to a
/// shadow pool, whose answers are discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The shadow pool; a pool of the config.
    pub pool: PoolName,
    /// Share of the requests copied, 0 to 100.
    pub percent: u32,
    /// Only requests carrying this header are copied.
    pub header: Option<HeaderName>,
    /// Largest request body copied, in bytes; a longer one is not.
    pub max_body: usize,
}

/// How a route matches the request's `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// No `host` key: any host.
    Any,
    /// An exact host name, lowercased, without port.
    Exact(String),
    /// `*.example.com`, stored as the lowercased suffix `.example.com`.
    Wildcard(String),
}

/// What keeps one user on one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    /// A cookie, set by the proxy when missing.
    Cookie(String),
    /// A request header; requests without it are split by weight.
    Header(HeaderName),
}

/// A request attribute that pins the request to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceMatch {
    /// Header `name` equals `value` exactly.
    Header(HeaderName, String),
    /// Cookie `name` equals `value` exactly.
    Cookie(String, String),
}

/// `[[routes.force]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceRule {
    /// What must match.
    pub matcher: ForceMatch,
    /// Where matching requests go; always a pool of the route's split.
    pub pool: PoolName,
}

/// A configuration that could not be read or is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file the error is in.
    pub path: PathBuf,
    /// 1-based line and column, when the error points into the file.
    pub position: Option<(usize, usize)>,
    /// What is wrong, for a human.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        match self.position {
            Some((line, col)) => format!("{}:{line}:{col}: {}", self.path.display(), self.message),
            None => format!("{}: {}", self.path.display(), self.message),
        }
    }
}

/// Read and validate the file at `path`, exactly as startup and reload do.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_text(path).map(|(config, _)| config)
}

/// As [`load`], also returning the text that was validated, so a later
/// reload can tell unchanged content from a change.
pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        position: None,
        message: format!("cannot read config: {e}"),
    })?;
    let config = parse(path, &text)?;
    Ok((config, text))
}

impl Config {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}
