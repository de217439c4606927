//! The routing state, frozen: everything a request needs, behind one
//! `ArcSwap`.
//!
//! A [`Snapshot`] holds the route table, each route's targets and effective
//! split, the pools and their backend handles, and the server limits. A
//! request loads it exactly once on entry and reads only from it, so it can
//! never see routes from one config and backends from another (the hazard
//! Pingora's own TODO warns about when state is spread over several swaps).
//! Whatever changes state — a reload, later the admin API or the guard —
//! builds a new snapshot off the request path and publishes it with one
//! store.
//!
//! Building reuses backends by identity (pool + address) from the previous
//! snapshot, so a reload keeps their connections and counters; backends that
//! disappear are returned to the caller to drain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use prometheus::IntCounter;

use crate::access_log::{AccessLog, Options};
use crate::config::{Config, ForceMatch, Scheme, StickyKey, UpstreamProtocol};
use crate::guard::PoolGuard;
use crate::metrics::Metrics;
use crate::pool::{Backend, BackendKey, Pool, Timeouts, Transport};
use crate::route::RouteTable;
use crate::split::Split;

/// The immutable routing state of one revision.
#[derive(Debug)]
pub struct Snapshot {
    /// Revision number; grows with every change of effective state.
    pub revision: u64,
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// Host/path index over `routes`.
    pub table: RouteTable,
    /// Routes, in config order.
    pub routes: Vec<Route>,
    /// Pools, sorted by name.
    pub pools: Vec<Arc<Pool>>,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// Largest accepted request head.
    pub max_request_header_bytes: usize,
    /// Longest silence inside a request body.
    pub body_read_timeout: Duration,
    /// Where dropped underscore request headers are counted.
    pub underscore_headers_dropped: IntCounter,
    /// The access log, when `[access_log]` is set; shared with the previous
    /// snapshot while its settings are unchanged.
    pub access_log: Option<Arc<AccessLog>>,
}

/// What a snapshot is built from besides the config: state that outlives
/// snapshots.
#[derive(Debug, Clone, Copy)]
pub struct BuildInputs<'a> {
    /// Where metric handles are resolved; `None` records no metrics.
    pub metrics: Option<&'a Metrics>,
    /// Guards by pool name.
    pub guards: &'a HashMap<String, Arc<PoolGuard>>,
    /// Effective weights by route name, aligned with the route's split;
    /// a route absent here uses its configured weights.
    pub effective: &'a HashMap<String, Vec<u32>>,
    /// Pools rolled back: force rules do not send traffic to them.
    pub tripped: &'a [String],
}

impl BuildInputs<'_> {
    /// No metrics, no guards, configured weights.
    pub fn plain() -> BuildInputs<'static> {
        static NO_GUARDS: std::sync::OnceLock<HashMap<String, Arc<PoolGuard>>> = std::sync::OnceLock::new();
        static NO_WEIGHTS: std::sync::OnceLock<HashMap<String, Vec<u32>>> = std::sync::OnceLock::new();
        BuildInputs {
            metrics: None,
            guards: NO_GUARDS.get_or_init(HashMap::new),
            effective: NO_WEIGHTS.get_or_init(HashMap::new),
            tripped: &[],
        }
    }
}

/// A route ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The route's name.
    pub name: Arc<str>,
    /// The pools of its split, in split order.
    pub targets: Vec<Arc<Pool>>,
    /// Effective weights over `targets`.
    pub split: Split,
    /// Stickiness, with the cookie's `Set-Cookie` suffix prepared.
    pub sticky: Option<Sticky>,
    /// Force rules as (matcher, target position).
    pub force: Vec<(ForceMatch, usize)>,
    /// `cutover_requests_total` handles by target, then backend position.
    pub codes: Vec<Vec<Arc<[IntCounter; 5]>>>,
    /// Where copies of its requests go, if anywhere (`crate::proxy`'s
    /// `mirror`).
    pub mirror: Option<Arc<RouteMirror>>,
}

/// A route's shadow pool and which of its requests are copied there.
#[derive(Debug)]
pub struct RouteMirror {
    /// The route's name, for logs.
    pub route: Arc<str>,
    /// The shadow pool.
    pub pool: Arc<Pool>,
    /// Share of the requests copied, 0 to 100.
    pub percent: u32,
    /// Only requests carrying this header are copied.
    pub header: Option<http::HeaderName>,
    /// Largest body copied.
    pub max_body: usize,
    /// `cutover_mirror_requests_total{route}` by result: sent, dropped,
    /// too_large, failed.
    pub counts: [IntCounter; 4],
    /// Copies in flight now.
    pub in_flight: std::sync::atomic::AtomicUsize,
}

/// How a route keeps a user on one pool.
#[derive(Debug)]
pub enum Sticky {
    /// By cookie; the proxy sets it when missing.
    Cookie {
        /// The cookie name.
        name: Arc<str>,
    },
    /// By request header.
    Header(http::HeaderName),
}

impl Snapshot {
    /// Build revision `revision` from `config`, reusing live backends from
    /// `previous`. Returns the snapshot and the backends that left the config.
    pub fn build(
        config: Arc<Config>,
        revision: u64,
        previous: Option<&Snapshot>,
        inputs: BuildInputs<'_>,
    ) -> (Snapshot, Vec<Arc<Backend>>) {
        let timeouts = Timeouts { connect: config.server.connect_timeout, request: config.server.request_timeout };
        let mut old: HashMap<BackendKey, Arc<Backend>> = previous
            .map(|s| s.pools.iter().flat_map(|p| p.backends.iter()).map(|b| (b.key(), b.clone())).collect())
            .unwrap_or_default();

        let mut pools: Vec<Arc<Pool>> = Vec::with_capacity(config.pools.len());
        for pc in &config.pools {
            let name: Arc<str> = Arc::from(pc.name.as_str());
            let transport = pool_transport(pc);
            let backends = pc
                .backends
                .iter()
                .map(|addr| {
                    let wanted = match addr.scheme {
                        Scheme::Https => transport.clone(),
                        Scheme::Http => Transport { tls: None, ca_file: None, ca_digest: None, ..transport.clone() },
                    };
                    match old.remove(&(name.clone(), addr.clone())) {
                        Some(kept) if kept.transport().same_as(&wanted) => {
                            kept.set_timeouts(timeouts);
                            kept
                        }
                        // Same address, new way to reach it: a new backend;
                        // the old one drains.
                        replaced => {
                            if let Some(old_backend) = replaced {
                                // Back among the leftovers, so it drains.
                                old.insert((name.clone(), addr.clone()), old_backend);
                            }
                            let backend = Backend::with_transport(name.clone(), addr.clone(), timeouts, wanted);
                            if let Some(metrics) = inputs.metrics {
                                backend.set_metrics(metrics.backend(&name, &addr.to_string()));
                            }
                            // Joining a running proxy, it warms up; at
                            // startup every backend is equally cold.
                            if previous.is_some() {
                                backend.warm_up().start();
                            }
                            Arc::new(backend)
                        }
                    }
                })
                .collect::<Vec<_>>();
            let guard = inputs.guards.get(&pc.name).cloned();
            let tripped = inputs.tripped.contains(&pc.name);
            let baseline_for = inputs
                .guards
                .values()
                .filter(|g| g.config.baseline.as_deref() == Some(pc.name.as_str()))
                .filter_map(|g| g.judgement.baseline_tally().cloned())
                .collect();
            pools.push(Arc::new(
                Pool::new(name, backends, pc.lb)
                    .with_guard(guard)
                    .with_baseline_for(baseline_for)
                    .with_tripped(tripped)
                    .with_slow_start(pc.slow_start)
                    .with_retry_unanswered(pc.retry_unanswered)
                    .with_grpc_failures(pc.grpc_failure_codes),
            ));
        }
        let removed: Vec<Arc<Backend>> = old.into_values().collect();

        let pool_by_name = |name: &str| pools.iter().find(|p| &*p.name == name).cloned();
        let routes = config
            .routes
            .iter()
            .map(|rc| {
                // Validation guarantees every split pool exists.
                let targets: Vec<Arc<Pool>> = rc.split.iter().filter_map(|(pool, _)| pool_by_name(pool)).collect();
                let weights = match inputs.effective.get(&rc.name) {
                    Some(w) if w.len() == rc.split.len() => w.clone(),
                    _ => rc.split.iter().map(|(_, w)| *w).collect(),
                };
                let split = Split::new(weights);
                let codes = targets
                    .iter()
                    .map(|pool| {
                        pool.backends
                            .iter()
                            .map(|b| {
                                let handles = match inputs.metrics {
                                    Some(m) => m.request_codes(&rc.name, &pool.name, &b.addr.to_string()),
                                    None => detached_codes(),
                                };
                                Arc::new(handles)
                            })
                            .collect()
                    })
                    .collect();
                let force = rc
                    .force
                    .iter()
                    .filter_map(|rule| {
                        let at = rc.split.iter().position(|(pool, _)| *pool == rule.pool)?;
                        Some((rule.matcher.clone(), at))
                    })
                    .collect();
                let sticky = rc.sticky.as_ref().map(|key| match key {
                    StickyKey::Cookie(name) => Sticky::Cookie { name: Arc::from(name.as_str()) },
                    StickyKey::Header(name) => Sticky::Header(name.clone()),
                });
                let mirror = rc.mirror.as_ref().and_then(|m| {
                    Some(Arc::new(RouteMirror {
                        route: Arc::from(rc.name.as_str()),
                        pool: pool_by_name(&m.pool)?,
                        percent: m.percent,
                        header: m.header.clone(),
                        max_body: m.max_body,
                        counts: match inputs.metrics {
                            Some(metrics) => metrics.mirror_requests(&rc.name),
                            None => crate::metrics::MIRROR_RESULTS.map(|r| {
                                IntCounter::new(format!("unregistered_mirror_{r}"), "unregistered").expect("valid name")
                            }),
                        },
                        in_flight: std::sync::atomic::AtomicUsize::new(0),
                    }))
                });
                Route { name: Arc::from(rc.name.as_str()), targets, split, sticky, force, codes, mirror }
            })
            .collect();

        let access_log = access_log(&config, previous, inputs.metrics);
        let table = RouteTable::new(config.routes.iter().map(|r| (&r.host, r.path_prefix.as_str())));
        let snapshot = Snapshot {
            revision,
            request_timeout: config.server.request_timeout,
            max_request_header_bytes: config.server.max_request_header_bytes,
            body_read_timeout: config.server.body_read_timeout,
            underscore_headers_dropped: match inputs.metrics {
                Some(m) => m.underscore_headers_dropped(),
                None => IntCounter::new("unregistered_headers_dropped", "unregistered").expect("valid name"),
            },
            access_log,
            config,
            table,
            routes,
            pools,
        };
        (snapshot, removed)
    }

    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| &*p.name == name)
    }
}

/// How a pool's `https://` backends are reached. A CA file that cannot be
/// read any more (it was valid when the config was checked) leaves the
/// system roots only, with an error logged.
fn pool_transport(pc: &crate::config::PoolConfig) -> Transport {
    let needs_tls = pc.backends.iter().any(|b| b.scheme == Scheme::Https);
    let alpn: &[&[u8]] = match pc.protocol {
        UpstreamProtocol::H2 => &[b"h2"],
        UpstreamProtocol::Http1 => &[b"http/1.1"],
    };
    let tls = if needs_tls {
        match crate::tls::client_config(pc.ca_file.as_deref(), alpn) {
            Ok(config) => Some(config),
            Err(e) => {
                tracing::error!(pool = %pc.name, error = %e, "cannot use ca_file; trusting the system roots only");
                crate::tls::client_config(None, alpn).ok()
            }
        }
    } else {
        None
    };
    // FNV-1a of the CA file as read now: a file rotated in place (same
    // path, new certificates) makes the pool's backends new backends, whose
    // connections trust the new CA, while the old ones drain.
    let ca_digest = pc
        .ca_file
        .as_deref()
        .filter(|_| needs_tls)
        .and_then(|path| std::fs::read(path).ok())
        .map(|bytes| crate::split::fnv1a(&bytes));
    Transport { protocol: pc.protocol, tls, ca_file: pc.ca_file.clone(), ca_digest }
}

/// The access log for `config`: the previous snapshot's while its settings
/// are unchanged (one writer, one open file), otherwise a new one. A
/// destination that cannot be opened leaves the log off, with an error
/// logged, rather than failing the reload.
fn access_log(config: &Config, previous: Option<&Snapshot>, metrics: Option<&Metrics>) -> Option<Arc<AccessLog>> {
    let wanted = config.access_log.as_ref()?;
    if let Some(previous) = previous {
        if previous.config.access_log.as_ref().is_some_and(|had| same_sink(had, wanted)) {
            if let Some(log) = &previous.access_log {
                return Some(log.clone());
            }
        }
    }
    let options = Options {
        destination: wanted.to.clone(),
        format: wanted.format,
        sample: wanted.sample,
        queue: wanted.queue,
        flush: wanted.flush,
    };
    let dropped = match metrics {
        Some(m) => m.access_log_dropped.clone(),
        None => IntCounter::new("unregistered_access_log_dropped", "unregistered").expect("valid name"),
    };
    match AccessLog::start(&options, dropped) {
        Ok(log) => Some(Arc::new(log)),
        Err(e) => {
            tracing::error!(error = %e, "access log is off");
            None
        }
    }
}

/// Whether two settings can share one writer: everything the writer owns
/// is the same (the listeners and `query` are read per request).
fn same_sink(a: &crate::config::AccessLogConfig, b: &crate::config::AccessLogConfig) -> bool {
    a.to == b.to && a.format == b.format && a.sample == b.sample && a.queue == b.queue && a.flush == b.flush
}

/// Counters registered nowhere, for snapshots built without metrics.
fn detached_codes() -> [IntCounter; 5] {
    crate::metrics::CODE_CLASSES
        .map(|c| IntCounter::new(format!("unregistered_{c}"), "unregistered").expect("valid name"))
}

/// `Set-Cookie` value pinning a user to `token` under cookie `name`.
pub fn sticky_cookie(name: &str, token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={token}; Path=/; HttpOnly")).ok()
}
