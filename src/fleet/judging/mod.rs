//! One verdict for the fleet: the leader sums every replica's published
//! evidence and judges each guarded pool once, on the whole fleet's traffic.
//!
//! [`FleetJudging`] is the pure part. It is shown the evidence keys as they
//! are read or watched ([`FleetJudging::observe`]) and holds one
//! [`Judge`] per guarded pool, with the same settings as the replicas'
//! local guards. Each replica's record carries numbered slices; the
//! judging remembers, per pool and replica, the last slice it counted, so a
//! slice is counted once however many times its key is read (a re-read
//! after a compaction, a record that repeats its last slices). New slices
//! wait until the next [`FleetJudging::tick`], which hands the fleet's sums
//! to each judge at that instant (both sides of a slice in the same tick,
//! as a local guard does) and returns every pool's verdict. The judges run
//! on the leader's clock: a slice counts when it arrives, at most one
//! publishing interval after its requests ended.
//!
//! A replica whose key vanishes (its lease expired: it died or lost etcd)
//! stops contributing; what it contributed stays in the judges. A replica
//! that comes back under the same name with a new `boot` starts its
//! sequence again.
//!
//! A new leader starts with fresh judges and counts what the keys hold
//! when it reads them: each live replica's last few slices (`retain` of
//! the publisher), none of a replica already gone, nothing older. Its
//! verdicts start from that evidence, not from the previous leader's.
//!
//! [`task`] runs it against etcd on the leader.

pub mod task;

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::time::Instant;

use super::evidence::{evidence_prefix, split_key, Record};
use crate::judge::{Judge, JudgeConfig, Side, Verdict};

pub use task::{FleetJudge, Verdicts};

/// What one replica has given one pool's judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contribution {
    /// Whether its key is there now (false once its lease ended).
    pub live: bool,
    /// The run of the replica its sequence belongs to.
    pub boot: u64,
    /// The last slice counted.
    pub last_seq: u64,
    /// Slices counted since the judge's evidence began.
    pub slices: u64,
    /// The pool's requests it counted.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// The baseline's requests it counted.
    pub baseline_requests: u64,
}

/// What the judging has done, to show it ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JudgingStats {
    /// Records read (puts seen).
    pub records: u64,
    /// Slices counted.
    pub slices: u64,
    /// Slices seen again and not counted.
    pub repeated: u64,
    /// Slices cut before their pool's last reset, not counted.
    pub stale: u64,
    /// Records refused (bad key, bad JSON, other histogram edges).
    pub rejected: u64,
    /// Records of pools this judging has no judge for.
    pub unknown: u64,
    /// Ticks run.
    pub ticks: u64,
}

/// Why a key's value was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The key is not `<prefix>/evidence/<pool>/<replica>`.
    #[error("not an evidence key: {0}")]
    Key(String),
    /// The value is not a valid record for the pool's judge.
    #[error("evidence {key}: {message}")]
    Record {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The fleet's judges, fed from the replicas' evidence.
#[derive(Debug)]
pub struct FleetJudging {
    prefix: String,
    pools: BTreeMap<String, PoolJudging>,
    stats: JudgingStats,
}

#[derive(Debug)]
struct PoolJudging {
    judge: Judge,
    limit_us: Option<u64>,
    with_baseline: bool,
    /// Failures and requests by bucket, per side, since the last tick.
    pending: [(u64, Vec<u64>); 2],
    replicas: BTreeMap<String, Contribution>,
    /// When the pool's evidence was last cleared (Unix milliseconds): a
    /// slice cut before then holds evidence the reset cleared.
    reset_at_ms: u64,
}

impl PoolJudging {
    fn new(pool: &str, config: JudgeConfig, now: Instant) -> PoolJudging {
        let limit_us = config.max_p99_latency.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX));
        let with_baseline = config.baseline.is_some();
        let judge = Judge::new(pool, config, now);
        let buckets = judge.buckets();
        PoolJudging {
            judge,
            limit_us,
            with_baseline,
            pending: [(0, vec![0; buckets]), (0, vec![0; buckets])],
            replicas: BTreeMap::new(),
            reset_at_ms: 0,
        }
    }
}

impl FleetJudging {
    /// Judges for `pools` (name and settings, as the local guards have
    /// them), reading the evidence of the fleet under `prefix`.
    pub fn new(prefix: &str, pools: impl IntoIterator<Item = (String, JudgeConfig)>, now: Instant) -> FleetJudging {
        let mut judging =
            FleetJudging { prefix: evidence_prefix(prefix), pools: BTreeMap::new(), stats: JudgingStats::default() };
        judging.set_pools(pools, now);
        judging
    }

    /// The key prefix it reads: `<prefix>/evidence/`.
    pub fn evidence_prefix(&self) -> &str {
        &self.prefix
    }

    /// Judge these pools from now on (a reload): a pool whose settings are
    /// unchanged keeps its judge and evidence; a new or changed one starts
    /// afresh; one no longer listed is forgotten.
    pub fn set_pools(&mut self, pools: impl IntoIterator<Item = (String, JudgeConfig)>, now: Instant) {
        let mut next = BTreeMap::new();
        for (name, config) in pools {
            match self.pools.remove(&name) {
                Some(kept) if *kept.judge.config() == config => {
                    next.insert(name, kept);
                }
                _ => {
                    let fresh = PoolJudging::new(&name, config, now);
                    next.insert(name, fresh);
                }
            }
        }
        self.pools = next;
    }

    /// Clear `pool`'s evidence (a reset, a new version of the pool): its
    /// verdict starts again from what arrives next, and slices cut before
    /// now (by the wall clock) that arrive later are not counted either.
    /// Slices already counted stay counted; false if the pool is not judged.
    pub fn reset(&mut self, pool: &str, now: Instant) -> bool {
        let Some(judging) = self.pools.get_mut(pool) else { return false };
        judging.judge.reset(now);
        let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        judging.reset_at_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
        for (failures, buckets) in &mut judging.pending {
            *failures = 0;
            buckets.iter_mut().for_each(|n| *n = 0);
        }
        for c in judging.replicas.values_mut() {
            *c = Contribution { live: c.live, boot: c.boot, last_seq: c.last_seq, ..Contribution::default() };
        }
        true
    }

    /// Take in one evidence key: its value as written, or `None` if it was
    /// deleted. The slices counted (0 for a deletion, a repeat, or a pool
    /// without a judge).
    pub fn observe(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<usize, EvidenceError> {
        let text = String::from_utf8_lossy(key);
        let Some((pool, replica)) = text.strip_prefix(self.prefix.as_str()).and_then(split_key) else {
            self.stats.rejected += 1;
            return Err(EvidenceError::Key(text.into_owned()));
        };
        let Some(judging) = self.pools.get_mut(pool) else {
            if value.is_some() {
                self.stats.unknown += 1;
            }
            return Ok(0);
        };
        let Some(value) = value else {
            if let Some(c) = judging.replicas.get_mut(replica) {
                c.live = false;
            }
            return Ok(0);
        };
        self.stats.records += 1;
        let refuse = |message: String| EvidenceError::Record { key: text.to_string(), message };
        let record = match Record::decode(value, judging.judge.buckets()) {
            Ok(record) => record,
            Err(message) => {
                self.stats.rejected += 1;
                return Err(refuse(message));
            }
        };
        if record.limit_us != judging.limit_us {
            self.stats.rejected += 1;
            return Err(refuse(format!(
                "counted with max_p99_latency {} µs, judged here with {} µs (the replicas run other settings)",
                record.limit_us.map_or("none".into(), |l| l.to_string()),
                judging.limit_us.map_or("none".into(), |l| l.to_string())
            )));
        }
        if record.replica != replica {
            self.stats.rejected += 1;
            return Err(refuse(format!("written by replica \"{}\" under another's key", record.replica)));
        }
        let c = judging.replicas.entry(replica.to_string()).or_default();
        if c.boot != record.boot {
            // A new run of the replica numbers its slices from the start.
            c.boot = record.boot;
            c.last_seq = 0;
        }
        c.live = true;
        let mut counted = 0;
        for slice in &record.slices {
            if slice.seq <= c.last_seq {
                self.stats.repeated += 1;
                continue;
            }
            c.last_seq = slice.seq;
            if slice.at_ms < judging.reset_at_ms {
                self.stats.stale += 1;
                continue;
            }
            let (failures, buckets) = &mut judging.pending[Side::Pool as usize];
            *failures += slice.pool.add_to(buckets);
            c.requests += slice.pool.requests;
            c.failures += slice.pool.failures;
            if let (true, Some(base)) = (judging.with_baseline, &slice.base) {
                let (failures, buckets) = &mut judging.pending[Side::Baseline as usize];
                *failures += base.add_to(buckets);
                c.baseline_requests += base.requests;
            }
            c.slices += 1;
            counted += 1;
        }
        self.stats.slices += counted as u64;
        Ok(counted)
    }

    /// Take in a whole read of the evidence prefix: every key found, and
    /// every replica not found marked gone. Errors of single keys are
    /// logged and skipped.
    pub fn observe_all<'a>(&mut self, kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> usize {
        for judging in self.pools.values_mut() {
            judging.replicas.values_mut().for_each(|c| c.live = false);
        }
        let mut counted = 0;
        for (key, value) in kvs {
            match self.observe(key, Some(value)) {
                Ok(n) => counted += n,
                Err(e) => tracing::warn!(error = %e, "guard evidence not counted"),
            }
        }
        counted
    }

    /// Hand every pool's new evidence to its judge at `now` and return
    /// every pool's verdict.
    pub fn tick(&mut self, now: Instant) -> BTreeMap<String, Verdict> {
        self.stats.ticks += 1;
        let mut verdicts = BTreeMap::new();
        for (name, judging) in &mut self.pools {
            let PoolJudging { judge, pending, with_baseline, .. } = judging;
            for side in [Side::Pool, Side::Baseline] {
                if side == Side::Baseline && !*with_baseline {
                    continue;
                }
                let (failures, buckets) = &mut pending[side as usize];
                judge.record_tally(side, *failures, buckets, now);
                *failures = 0;
                buckets.iter_mut().for_each(|n| *n = 0);
            }
            verdicts.insert(name.clone(), judge.verdict(now));
        }
        verdicts
    }

    /// What each replica has given `pool`'s judge.
    pub fn contributions(&self, pool: &str) -> Option<&BTreeMap<String, Contribution>> {
        self.pools.get(pool).map(|p| &p.replicas)
    }

    /// What the judging has done so far.
    pub fn stats(&self) -> JudgingStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
