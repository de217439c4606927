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

use crate::config::{Config, ForceMatch, StickyKey};
use crate::pool::{Backend, BackendKey, Pool};
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
    pub fn build(config: Arc<Config>, revision: u64, previous: Option<&Snapshot>) -> (Snapshot, Vec<Arc<Backend>>) {
        let connect_timeout = config.server.connect_timeout;
        let mut old: HashMap<BackendKey, Arc<Backend>> = previous
            .map(|s| s.pools.iter().flat_map(|p| p.backends.iter()).map(|b| (b.key(), b.clone())).collect())
            .unwrap_or_default();

        let mut pools: Vec<Arc<Pool>> = Vec::with_capacity(config.pools.len());
        for pc in &config.pools {
            let name: Arc<str> = Arc::from(pc.name.as_str());
            let backends = pc
                .backends
                .iter()
                .map(|addr| match old.remove(&(name.clone(), addr.clone())) {
                    Some(kept) => {
                        kept.set_connect_timeout(connect_timeout);
                        kept
                    }
                    None => Arc::new(Backend::new(name.clone(), addr.clone(), connect_timeout)),
                })
                .collect();
            pools.push(Arc::new(Pool::new(name, backends, pc.lb)));
        }
        let removed: Vec<Arc<Backend>> = old.into_values().collect();

        let pool_by_name = |name: &str| pools.iter().find(|p| &*p.name == name).cloned();
        let routes = config
            .routes
            .iter()
            .map(|rc| {
                // Validation guarantees every split pool exists.
                let targets: Vec<Arc<Pool>> = rc.split.iter().filter_map(|(pool, _)| pool_by_name(pool)).collect();
                let split = Split::new(rc.split.iter().map(|(_, w)| *w).collect());
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
                Route { name: Arc::from(rc.name.as_str()), targets, split, sticky, force }
            })
            .collect();

        let table = RouteTable::new(config.routes.iter().map(|r| (&r.host, r.path_prefix.as_str())));
        let snapshot = Snapshot {
            revision,
            request_timeout: config.server.request_timeout,
            max_request_header_bytes: config.server.max_request_header_bytes,
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

/// `Set-Cookie` value pinning a user to `token` under cookie `name`.
pub fn sticky_cookie(name: &str, token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={token}; Path=/; HttpOnly")).ok()
}
