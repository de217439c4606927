//! cutover: a layer-7 HTTP reverse proxy for zero-downtime releases.
//!
//! It splits traffic between pools of backends (blue, green, canary) by
//! weight, hot-reloads its TOML config, drains removed backends, and rolls a
//! failing pool back by itself. `../SPEC.md`-level behaviour is described in
//! `docs/`; this page is the map of the code.
//!
//! How a request flows, and which module owns each step:
//!
//! - [`server`] accepts connections and serves HTTP/1.1 and HTTP/2 on them
//!   (accept loop, protocol sniffing, the per-connection watchdog, the raw
//!   head scan, each in a file of its own);
//! - [`proxy`] loads the one [`snapshot::Snapshot`] for the request, then
//! - [`route`] picks the route by host and path,
//! - [`split`] picks the pool (forced, sticky or weighted),
//! - [`pool`] picks the backend and owns its upstream connections,
//! - [`headers`] rewrites hop-by-hop and `X-Forwarded-*` headers,
//! - [`body`] streams the answer back, and [`error`] answers what failed,
//!   tagged by where the failure came from; [`exchange`] records each
//!   request's outcome once, and [`tunnel`] carries upgraded connections.
//!
//! Around it: [`config`] turns the file into validated types (`raw`, then
//! `validate/` by section; used by `cutover check`, startup and reload
//! alike), watches it, and names the settings a reload cannot change;
//! [`control`] is the single writer of routing state (reloads, overrides,
//! trips; the trip rule; the history and state file; drains) and publishes
//! snapshots; [`guard`] keeps each pool's sliding window and trip rule,
//! and [`judge`] the verdict against a baseline with its confidence;
//! [`rollout`] is a progressive rollout's plan and state machine;
//! [`health`] runs active checks and passive ejection; [`access_log`]
//! writes one line per request off the request path, with request IDs and
//! trace context; [`metrics`] declares every metric and renders the gauges
//! that mirror state; [`admin`] serves the admin API, and [`console`] its
//! operator page and the per-second figures behind its charts; [`cli`] is
//! the operator's command line over that API; [`fleet`] speaks to etcd for
//! replicas that share one state; [`memory`] gives memory back after a
//! burst; and [`runtime`] ties listeners, reloads and shutdown together.
//!
//! Dependencies point one way, down these layers, and never back up:
//!
//! 1. [`runtime`], then [`admin`] (HTTP in front of [`control`]) and
//!    [`console`]; [`cli`] beside them, a client of the admin API;
//! 2. the control plane ([`control`], [`rollout`], [`fleet`]) and the
//!    traffic listeners ([`server`]);
//! 3. the request path: [`proxy`], [`tunnel`], [`exchange`], [`health`],
//!    [`error`], [`body`], [`snapshot`], [`pool`], [`guard`], [`route`],
//!    [`access_log`];
//! 4. the ground, importing nothing above it: [`config`], [`judge`] (pure,
//!    importing nothing of the crate; the config validator asks it what
//!    settings it can work with), [`metrics`],
//!    [`split`], [`headers`], [`grpc`] (a gRPC answer's status, which decides
//!    whether it failed), [`tls`], [`memory`], and the small shared
//!    pieces every layer uses, [`lifecycle`] (shutdown flags, open-connection
//!    counting), [`timestamp`] and [`reads`] (bytes cut into reads, for the
//!    parsers' property tests and fuzz targets).
//!
//! The binary (`main.rs`) adds the command line and `cutover demo`, whose
//! module tree is the binary's own and uses only this crate's public API.

// No unsafe code but two calls into glibc's malloc, in `memory`.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs, unreachable_pub)]

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod console;
pub mod control;
pub mod error;
pub mod exchange;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod guard;
pub mod headers;
pub mod health;
pub mod judge;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod pool;
pub mod proxy;
#[doc(hidden)]
pub mod reads;
pub mod request_body;
pub mod rollout;
pub mod route;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod split;
pub mod timestamp;
pub mod tls;
pub mod tunnel;

pub use runtime::{bind, run, Listeners, RunOptions};
