//! Writing a replica's evidence to etcd, batched off the request path.
//!
//! Every interval (500 ms by default) the [`Publisher`] cuts the
//! [`EvidenceTap`] into one slice per pool that saw traffic, numbers the
//! slices, and writes each such pool's [`Record`] under the replica's own
//! lease. A record holds the slices no write has carried yet plus the last
//! few written ones (`retain`), so a leader that takes over finds a few
//! seconds of every live replica's evidence, and a leader that missed a
//! write still finds its slices in the next.
//!
//! Publishing never affects serving: a failed write is counted and logged,
//! and its slices wait for the next interval in a bounded backlog
//! (`backlog` slices per pool; the oldest are dropped and counted). A lost
//! lease is taken anew and every pool's record rewritten under it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use super::tap::PoolSlice;
use super::{evidence_key, EvidenceTap, Record, Slice, FORMAT};
use crate::fleet::etcd::{lease_ttl, Client, EtcdError, LeaseKeeper};
use crate::fleet::FleetConfig;

/// How a [`Publisher`] publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherOptions {
    /// The fleet's key prefix.
    pub prefix: String,
    /// This replica's name (the key's last part).
    pub replica: String,
    /// TTL of the lease the evidence is attached to.
    pub lease_ttl: Duration,
    /// How often the evidence is cut and written.
    pub interval: Duration,
    /// Written slices kept in each record, for a leader that takes over.
    pub retain: usize,
    /// Most slices a record holds; beyond, the oldest are dropped.
    pub backlog: usize,
}

/// Default [`PublisherOptions::interval`]. The fleet's verdict lags what
/// one process seeing all the traffic would say by at most this, one
/// judge's tick and an etcd round trip: under the 1 s the fleet allows.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// Default [`PublisherOptions::retain`]: the last second at the default
/// interval. Each written slice stays in etcd's history until etcd compacts
/// it, so a record repeats few: the leader's watch sees every write anyway,
/// and only a new leader reads no more than these.
pub const DEFAULT_RETAIN: usize = 2;
/// Default [`PublisherOptions::backlog`]: a minute at the default interval.
pub const DEFAULT_BACKLOG: usize = 120;

impl PublisherOptions {
    /// The defaults for the fleet of `config`.
    pub fn from_fleet(config: &FleetConfig) -> PublisherOptions {
        PublisherOptions {
            prefix: config.prefix.clone(),
            replica: config.replica.clone(),
            lease_ttl: config.lease_ttl,
            interval: DEFAULT_INTERVAL,
            retain: DEFAULT_RETAIN,
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// What a publisher has done, for tests and `/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Intervals run (shows the publisher ran).
    pub rounds: u64,
    /// Slices cut from the tap.
    pub slices: u64,
    /// Records written.
    pub writes: u64,
    /// Writes (or lease grants) that failed.
    pub failures: u64,
    /// Slices dropped from a full backlog.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    rounds: AtomicU64,
    slices: AtomicU64,
    writes: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
}

/// A running publisher; dropping it stops publishing (its evidence then
/// expires with its lease), [`Publisher::shutdown`] deletes it at once.
#[derive(Debug)]
pub struct Publisher {
    client: Client,
    counters: Arc<Counters>,
    lease: Arc<Mutex<Option<i64>>>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Publish what `tap` gathers, from now on.
    pub fn spawn(client: Client, tap: Arc<EvidenceTap>, options: PublisherOptions) -> Publisher {
        let counters = Arc::new(Counters::default());
        let lease = Arc::new(Mutex::new(None));
        let run = Run {
            client: client.clone(),
            tap,
            boot: boot_id(),
            options,
            counters: counters.clone(),
            lease_id: lease.clone(),
            keeper: None,
            pools: BTreeMap::new(),
            seq: 0,
        };
        let task = tokio::spawn(run.run());
        Publisher { client, counters, lease, task }
    }

    /// What it has done so far.
    pub fn stats(&self) -> PublisherStats {
        let c = &self.counters;
        PublisherStats {
            rounds: c.rounds.load(Ordering::Relaxed),
            slices: c.slices.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// The lease the evidence is attached to, once granted.
    pub fn lease(&self) -> Option<i64> {
        self.lease.lock().ok().and_then(|l| *l)
    }

    /// Stop publishing and revoke the lease, deleting this replica's
    /// evidence now (a replica shutting down).
    pub async fn shutdown(self) -> Result<(), EtcdError> {
        self.task.abort();
        match self.lease() {
            Some(lease) => self.client.lease_revoke(lease).await,
            None => Ok(()),
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Distinguishes this run of the process from an earlier one under the
/// same replica name: the start time in nanoseconds, mixed with the pid.
fn boot_id() -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (nanos as u64) ^ (u64::from(std::process::id()) << 48) ^ NEXT_BOOT.fetch_add(1, Ordering::Relaxed)
}

/// Publishers in one process (tests run several) get distinct boots.
static NEXT_BOOT: AtomicU64 = AtomicU64::new(0);

/// One pool's slices not yet dropped.
#[derive(Debug, Default)]
struct Backlog {
    limit_us: Option<u64>,
    slices: VecDeque<Slice>,
    /// Whether the slices changed since the last successful write.
    dirty: bool,
}

struct Run {
    client: Client,
    tap: Arc<EvidenceTap>,
    boot: u64,
    options: PublisherOptions,
    counters: Arc<Counters>,
    lease_id: Arc<Mutex<Option<i64>>>,
    keeper: Option<LeaseKeeper>,
    pools: BTreeMap<String, Backlog>,
    seq: u64,
}

impl Run {
    async fn run(mut self) {
        let mut every = tokio::time::interval_at(
            tokio::time::Instant::now() + self.options.interval,
            self.options.interval.max(Duration::from_millis(10)),
        );
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.counters.rounds.fetch_add(1, Ordering::Relaxed);
            self.take(self.tap.cut());
            self.write().await;
        }
    }

    /// Number the new slices and queue them, dropping the oldest of a full
    /// backlog.
    fn take(&mut self, cut: Vec<PoolSlice>) {
        if cut.is_empty() {
            return;
        }
        self.seq += 1;
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        for slice in cut {
            let backlog = self.pools.entry(slice.pool).or_default();
            if backlog.limit_us != slice.limit_us {
                // Counts at other edges cannot be summed with these.
                backlog.slices.clear();
                backlog.limit_us = slice.limit_us;
            }
            backlog.slices.push_back(Slice { seq: self.seq, at_ms, pool: slice.counts, base: slice.base });
            backlog.dirty = true;
            while backlog.slices.len() > self.options.backlog.max(1) {
                backlog.slices.pop_front();
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.slices.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The lease to write under: the held one while alive, else a new one
    /// (after which every record is written again: the old keys went with
    /// the old lease).
    async fn lease(&mut self) -> Option<i64> {
        if let Some(keeper) = self.keeper.as_ref().filter(|k| k.is_alive()) {
            return Some(keeper.id());
        }
        self.keeper = None;
        match self.client.lease_grant(self.options.lease_ttl).await {
            Ok(lease) => {
                let ttl = lease_ttl(lease.ttl_secs);
                self.keeper = Some(LeaseKeeper::spawn(self.client.clone(), lease.id, ttl));
                if let Ok(mut id) = self.lease_id.lock() {
                    *id = Some(lease.id);
                }
                for backlog in self.pools.values_mut() {
                    backlog.dirty = !backlog.slices.is_empty();
                }
                Some(lease.id)
            }
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot take an etcd lease for the guard evidence; retrying");
                None
            }
        }
    }

    /// Write every pool's changed record; stop at the first failure (the
    /// rest wait for the next interval rather than each waiting out a
    /// timeout).
    async fn write(&mut self) {
        if !self.pools.values().any(|b| b.dirty) {
            return;
        }
        let Some(lease) = self.lease().await else { return };
        let names: Vec<String> = self.pools.iter().filter(|(_, b)| b.dirty).map(|(n, _)| n.clone()).collect();
        for pool in names {
            let Some(backlog) = self.pools.get_mut(&pool) else { continue };
            let record = Record {
                format: FORMAT,
                replica: self.options.replica.clone(),
                boot: self.boot,
                limit_us: backlog.limit_us,
                slices: backlog.slices.iter().cloned().collect(),
            };
            let key = evidence_key(&self.options.prefix, &pool, &self.options.replica);
            match self.client.put(&key, record.encode(), Some(lease)).await {
                Ok(_) => {
                    self.counters.writes.fetch_add(1, Ordering::Relaxed);
                    backlog.dirty = false;
                    while backlog.slices.len() > self.options.retain {
                        backlog.slices.pop_front();
                    }
                }
                Err(e) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(pool, error = %e, "cannot publish the guard evidence; it waits for the next try");
                    if matches!(e, EtcdError::Server { code: GRPC_NOT_FOUND, .. }) {
                        // The lease is gone: take a new one next time.
                        self.keeper = None;
                    }
                    return;
                }
            }
        }
    }
}

/// gRPC NOT_FOUND: what a write under an expired lease answers.
const GRPC_NOT_FOUND: i64 = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::evidence::SideCounts;

    fn run(backlog: usize) -> Run {
        let endpoint = crate::fleet::etcd::Endpoint::parse("http://127.0.0.1:1").expect("endpoint");
        let client = Client::new(crate::fleet::etcd::ClientOptions::new(vec![endpoint])).expect("a client");
        Run {
            client,
            tap: Arc::new(EvidenceTap::new()),
            boot: 1,
            options: PublisherOptions {
                prefix: "/f".into(),
                replica: "r".into(),
                lease_ttl: Duration::from_secs(10),
                interval: DEFAULT_INTERVAL,
                retain: 2,
                backlog,
            },
            counters: Arc::default(),
            lease_id: Arc::default(),
            keeper: None,
            pools: BTreeMap::new(),
            seq: 0,
        }
    }

    fn cut(pool: &str, requests: u64) -> Vec<PoolSlice> {
        vec![PoolSlice {
            pool: pool.into(),
            limit_us: None,
            counts: SideCounts::from_dense(0, &[requests]),
            base: None,
        }]
    }

    #[test]
    fn a_full_backlog_drops_the_oldest_and_counts_them() {
        let mut run = run(3);
        for n in 1..=5 {
            run.take(cut("p", n));
        }
        let seqs: Vec<u64> = run.pools["p"].slices.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(run.counters.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(run.counters.slices.load(Ordering::Relaxed), 5);
        run.take(Vec::new());
        assert_eq!(run.seq, 5, "an empty cut is no slice");
    }
}
