//! An etcd v3 client over etcd's JSON gateway (`/v3/...`), on the hyper
//! client cutover already builds.
//!
//! Why the gateway and not gRPC: the gRPC client crates generate their code
//! with `protoc` at build time, and `cargo build` must need nothing but the
//! Rust toolchain on a fresh machine. The gateway is part of every etcd
//! since 3.3 (at `/v3/` from 3.4), on the same client port, and speaks the
//! same API as JSON; the fleet's traffic (a few writes per second, one
//! watch, one lease) gains nothing from gRPC's framing.
//!
//! The pieces, bottom up: [`endpoint`] (a checked URL), [`wire`] (the JSON
//! and its proto3 quirks), `transport` (connections, failover, auth,
//! timeouts), [`client`] (reads, writes, conditional writes, leases), [`txn`]
//! (several keys written together, or none),
//! [`lease`] (keeping a lease alive) and [`watch`] (a prefix's changes
//! across reconnects). [`tls`] builds the TLS client config.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod lease;
pub mod tls;
mod transport;
pub mod txn;
pub mod watch;
pub mod wire;

pub use client::{lease_ttl, CasOutcome, Client, ClientOptions, Lease, Range, DEFAULT_TIMEOUT};
pub use endpoint::{Endpoint, EndpointError};
pub use error::EtcdError;
pub use lease::LeaseKeeper;
pub use transport::{Credentials, MAX_ANSWER_BYTES};
pub use txn::TxnOutcome;
pub use watch::{Event, EventKind, WatchMessage, Watcher};
pub use wire::KeyValue;
