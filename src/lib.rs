//! cutover: a layer-7 HTTP reverse proxy for zero-downtime releases.
//!
//! It splits traffic between pools of backends (blue, green, canary) by
//! weight, hot-reloads its TOML config, drains removed backends, and rolls a
//! failing pool back by itself. `../SPEC.md`-level behaviour is described in
//! `docs/`; this page is the map of the code.
//!
//! How a request flows, and which module owns each step:
//!
//! - [`server`] accepts connections and serves HTTP/1.1 and h2c on them;
//! - [`proxy`] loads the one [`snapshot::Snapshot`] for the request, then
//! - [`route`] picks the route by host and path,
//! - [`split`] picks the pool (forced, sticky or weighted),
//! - [`pool`] picks the backend and owns its upstream connections,
//! - [`headers`] rewrites hop-by-hop and `X-Forwarded-*` headers,
//! - [`body`] streams the answer back, and [`error`] answers what failed,
//!   tagged by where the failure came from.
//!
//! Around it: [`config`] turns the file into validated types (used by
//! `cutover check`, startup and reload alike); [`control`] owns every change
//! of state (reloads, overrides, trips) and publishes snapshots; [`guard`]
//! keeps each pool's sliding window and trip rule; [`exchange`] records each
//! request's outcome once; [`health`] runs active checks and passive
//! ejection; [`tunnel`] carries upgraded connections; [`memory`] gives
//! memory back after a burst; [`metrics`] declares every metric; [`admin`]
//! serves the admin API; and [`runtime`] ties listeners, reloads and
//! shutdown together. [`demo`] is `cutover demo`: the
//! real proxy run against demo upstreams, with load and a live display.

// No unsafe code but two calls into glibc's malloc, in `memory`.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod body;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod guard;
pub mod headers;
pub mod health;
pub mod judge;
pub mod memory;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod tls;
pub mod tunnel;

pub use runtime::{bind, run, Listeners, RunOptions};
