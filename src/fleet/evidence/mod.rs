//! A replica's guard evidence as the fleet shares it: per guarded pool, a
//! run of time slices, each with the pool's and its baseline's requests,
//! failures and latency histogram counts.
//!
//! Each replica writes one key per guarded pool,
//! `<prefix>/evidence/<pool>/<replica>`, attached to its lease, so a replica
//! that dies leaves no evidence behind. The value is a compact JSON
//! [`Record`]: the replica's last slices, each numbered by a sequence that
//! only grows within one run of the replica (`boot`), so the leader that
//! sums them ([`super::judging`]) counts each slice once however often it
//! reads the key. The buckets are the judge's ([`crate::judge::Edges`]),
//! which depend on `max_p99_latency` alone; the record names it, so a
//! leader never adds up histograms cut at different edges.
//!
//! [`tap`] gathers a replica's evidence in the guard's tick, and
//! [`publisher`] writes it.

pub mod publisher;
pub mod tap;

use serde::{Deserialize, Serialize};

pub use publisher::{Publisher, PublisherOptions, PublisherStats};
pub use tap::EvidenceTap;

/// The version of the record's format, `v` in the JSON.
pub const FORMAT: u32 = 1;

/// `<prefix>/evidence/`: where every replica's evidence lives.
pub fn evidence_prefix(prefix: &str) -> String {
    format!("{prefix}/evidence/")
}

/// `<prefix>/evidence/<pool>/<replica>`: one replica's evidence on one pool.
pub fn evidence_key(prefix: &str, pool: &str, replica: &str) -> String {
    format!("{prefix}/evidence/{pool}/{replica}")
}

/// The pool and replica of a key under `evidence_prefix` (the part after
/// it): pool names hold no `/`, replica names may.
pub fn split_key(rest: &str) -> Option<(&str, &str)> {
    let (pool, replica) = rest.split_once('/')?;
    (!pool.is_empty() && !replica.is_empty()).then_some((pool, replica))
}

/// One replica's evidence on one pool: the value of its evidence key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The format ([`FORMAT`]).
    #[serde(rename = "v")]
    pub format: u32,
    /// The replica that wrote it (the key's last part).
    pub replica: String,
    /// This run of the replica: sequence numbers start again when it
    /// changes (a replica restarted under the same name).
    pub boot: u64,
    /// The pool's `max_p99_latency` in microseconds, which fixes the
    /// histogram's edges; absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_us: Option<u64>,
    /// The slices, oldest first.
    pub slices: Vec<Slice>,
}

/// The evidence of one time slice (one publishing interval).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// Grows by at least one per slice within a `boot`.
    pub seq: u64,
    /// When the slice was cut, milliseconds since the Unix epoch (for
    /// people reading the key; the leader judges by arrival).
    pub at_ms: u64,
    /// The guarded pool's outcomes.
    pub pool: SideCounts,
    /// Its baseline's, over the same ticks (only with a baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<SideCounts>,
}

/// The most requests one side of a slice may count: a trillion, beyond
/// any replica's traffic in a publishing interval, and small enough that
/// the judge's sums over every replica's slices in a window cannot
/// overflow (the counts come from etcd, where anyone with access can write).
pub const MAX_SLICE_REQUESTS: u64 = 1_000_000_000_000;

/// One side's outcomes in a slice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideCounts {
    /// Requests.
    #[serde(rename = "n")]
    pub requests: u64,
    /// Of which failed.
    #[serde(rename = "f")]
    pub failures: u64,
    /// Requests by latency bucket, sparse: `[bucket, count]` pairs in
    /// ascending bucket order, zero counts left out.
    #[serde(rename = "b")]
    pub buckets: Vec<(u32, u64)>,
}

impl SideCounts {
    /// From a dense histogram (`buckets[i]` requests in bucket `i`).
    pub fn from_dense(failures: u64, buckets: &[u64]) -> SideCounts {
        let sparse: Vec<(u32, u64)> = buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (u32::try_from(i).unwrap_or(u32::MAX), n))
            .collect();
        let requests = sparse.iter().map(|(_, n)| n).sum();
        SideCounts { requests, failures: failures.min(requests), buckets: sparse }
    }

    /// Add to a dense histogram of `dense.len()` buckets; the failures
    /// added. Call [`SideCounts::check`] first.
    pub fn add_to(&self, dense: &mut [u64]) -> u64 {
        let last = dense.len().saturating_sub(1);
        for &(i, n) in &self.buckets {
            if let Some(slot) = dense.get_mut(usize::try_from(i).unwrap_or(last).min(last)) {
                *slot += n;
            }
        }
        self.failures
    }

    /// Whether the counts are consistent with a histogram of `buckets`
    /// buckets: buckets in range and ascending, requests their sum and at
    /// most [`MAX_SLICE_REQUESTS`], failures at most the requests.
    pub fn check(&self, buckets: usize) -> Result<(), String> {
        let mut sum: u64 = 0;
        let mut previous: Option<u32> = None;
        for &(i, n) in &self.buckets {
            if usize::try_from(i).map_or(true, |i| i >= buckets) {
                return Err(format!("bucket {i} out of range (the histogram has {buckets})"));
            }
            if previous.is_some_and(|p| p >= i) {
                return Err(format!("bucket {i} out of order"));
            }
            previous = Some(i);
            sum = sum.checked_add(n).ok_or("bucket counts overflow")?;
        }
        if sum != self.requests {
            return Err(format!("{} requests but buckets holding {sum}", self.requests));
        }
        if self.requests > MAX_SLICE_REQUESTS {
            return Err(format!("{} requests, more than a slice can hold ({MAX_SLICE_REQUESTS})", self.requests));
        }
        if self.failures > self.requests {
            return Err(format!("{} failures of {} requests", self.failures, self.requests));
        }
        Ok(())
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.requests == 0
    }
}

impl Record {
    /// The compact JSON written to etcd.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of numbers and strings always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Read a record from a key's value, checking its format and counts
    /// against a histogram of `buckets` buckets.
    pub fn decode(value: &[u8], buckets: usize) -> Result<Record, String> {
        let record: Record = serde_json::from_slice(value).map_err(|e| format!("not an evidence record: {e}"))?;
        if record.format != FORMAT {
            return Err(format!("evidence format {} (this cutover reads {FORMAT})", record.format));
        }
        for slice in &record.slices {
            slice.pool.check(buckets).map_err(|e| format!("slice {}: pool: {e}", slice.seq))?;
            if let Some(base) = &slice.base {
                base.check(buckets).map_err(|e| format!("slice {}: baseline: {e}", slice.seq))?;
            }
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_compactly() {
        let mut dense = vec![0u64; 163];
        dense[40] = 120;
        dense[41] = 3;
        let record = Record {
            format: FORMAT,
            replica: "edge-1".into(),
            boot: 7,
            limit_us: Some(300_000),
            slices: vec![Slice {
                seq: 4,
                at_ms: 1_700_000_000_000,
                pool: SideCounts::from_dense(2, &dense),
                base: Some(SideCounts::default()),
            }],
        };
        let bytes = record.encode();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains(r#""pool":{"n":123,"f":2,"b":[[40,120],[41,3]]}"#), "{text}");
        assert_eq!(Record::decode(&bytes, 163).expect("valid"), record);
        let mut back = vec![0u64; 163];
        assert_eq!(record.slices[0].pool.add_to(&mut back), 2);
        assert_eq!(back, dense);
    }

    #[test]
    fn inconsistent_counts_are_refused() {
        let bad = |pool: &str| {
            let text = format!(r#"{{"v":1,"replica":"r","boot":1,"slices":[{{"seq":1,"at_ms":0,"pool":{pool}}}]}}"#);
            Record::decode(text.as_bytes(), 10).expect_err(pool)
        };
        assert!(bad(r#"{"n":3,"f":0,"b":[[1,2]]}"#).contains("3 requests but buckets holding 2"));
        assert!(bad(r#"{"n":2,"f":3,"b":[[1,2]]}"#).contains("3 failures of 2"));
        assert!(bad(r#"{"n":2,"f":0,"b":[[10,2]]}"#).contains("out of range"));
        assert!(bad(r#"{"n":2,"f":0,"b":[[2,1],[1,1]]}"#).contains("out of order"));
        // Counts whose sums over a window would overflow the judge's.
        let huge = r#"{"n":9223372036854775808,"f":0,"b":[[0,9223372036854775808]]}"#;
        assert!(bad(huge).contains("more than a slice can hold"), "{}", bad(huge));
        assert!(Record::decode(br#"{"v":2,"replica":"r","boot":1,"slices":[]}"#, 10).is_err());
        assert!(Record::decode(b"[]", 10).is_err());
    }

    #[test]
    fn keys_name_pool_and_replica() {
        let key = evidence_key("/cutover/edge", "canary", "pod/7");
        let rest = key.strip_prefix(&evidence_prefix("/cutover/edge")).expect("under the prefix");
        assert_eq!(split_key(rest), Some(("canary", "pod/7")));
        assert_eq!(split_key("canary"), None);
        assert_eq!(split_key("/r"), None);
    }
}
