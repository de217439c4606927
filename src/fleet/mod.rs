//! Fleet mode: many cutover replicas acting as one system, with one state
//! and one verdict kept in etcd v3.
//!
//! This folder holds the foundation: [`etcd`], a client for etcd's JSON
//! gateway (reads, conditional writes, leases, watches); [`election`], a
//! lease-backed leader election on it; and [`config`], the `[fleet]`
//! section's domain type; [`state`], the shared state's keys in etcd and
//! their JSON; and [`sync`], the task that writes this replica's decisions,
//! applies the others' and keeps the replica listed. Nothing here touches
//! the request path.
//!
//! One verdict: every replica publishes its guard evidence ([`evidence`]:
//! a tap in the guard's tick and a publisher under the replica's lease),
//! and the leader sums it and judges each pool once ([`judging`]);
//! [`verdicts`] wires both to the writer.

pub mod config;
pub mod election;
pub mod etcd;
pub mod evidence;
pub mod judging;
pub mod state;
pub mod sync;
mod verdicts;

pub use config::FleetConfig;
pub use election::Election;
pub use evidence::{EvidenceTap, Publisher, PublisherOptions};
pub use judging::{FleetJudge, FleetJudging};
pub use sync::{Fleet, FleetOutcome};
