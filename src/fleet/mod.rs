//! Fleet mode: many cutover replicas acting as one system, with one state
//! and one verdict kept in etcd v3.
//!
//! This folder holds the foundation: [`etcd`], a client for etcd's JSON
//! gateway (reads, conditional writes, leases, watches); [`election`], a
//! lease-backed leader election on it; and [`config`], the `[fleet]`
//! section's domain type. Nothing here touches the request path: the
//! replicas' shared state and evidence are built on these pieces.
//!
//! One verdict: every replica publishes its guard evidence ([`evidence`]:
//! a tap in the guard's tick and a publisher under the replica's lease),
//! and the leader sums it and judges each pool once ([`judging`]).

pub mod config;
pub mod election;
pub mod etcd;
pub mod evidence;
pub mod judging;

pub use config::FleetConfig;
pub use election::Election;
pub use evidence::{EvidenceTap, Publisher, PublisherOptions};
pub use judging::{FleetJudge, FleetJudging};
