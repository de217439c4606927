//! One tick's outcomes of one pool, counted on the request path for the
//! judge.
//!
//! The judge is fed once per 250 ms tick, not once per request: a request
//! only adds to atomic counters here (its latency bucket, and a failure if
//! it failed), and the guard task takes the counts out each tick and hands
//! them to the [`Judge`](crate::judge::Judge) with
//! [`record_tally`](crate::judge::Judge::record_tally). So the request path
//! never takes the judge's lock, and a tick costs the judge one call per
//! pool whatever the traffic.
//!
//! A recorder adds to the bucket before the failure, and the taker takes
//! the failures before the buckets, so a tick never holds a failure whose
//! request it lacks (the judge would clamp it away).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::judge::Edges;

/// A pool's requests by latency bucket, and its failures, since the last
/// [`TickTally::take`].
#[derive(Debug)]
pub struct TickTally {
    edges: Edges,
    failures: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl TickTally {
    /// An empty tally over the judge's latency buckets `edges`.
    pub fn new(edges: Edges) -> TickTally {
        let buckets = (0..edges.buckets()).map(|_| AtomicU64::new(0)).collect();
        TickTally { edges, failures: AtomicU64::new(0), buckets }
    }

    /// Count one finished request.
    pub fn record(&self, failed: bool, latency: Duration) {
        let bucket = self.edges.bucket(latency).min(self.buckets.len() - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Take the counts out, leaving the tally empty: the requests by bucket
    /// go into `buckets` (resized to fit), the failures are returned.
    pub fn take(&self, buckets: &mut Vec<u64>) -> u64 {
        let failures = self.failures.swap(0, Ordering::Relaxed);
        buckets.clear();
        buckets.extend(self.buckets.iter().map(|b| b.swap(0, Ordering::Relaxed)));
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_empties_the_tally() {
        let tally = TickTally::new(Edges::new(None));
        tally.record(false, Duration::from_millis(2));
        tally.record(true, Duration::from_millis(2));
        tally.record(false, Duration::from_secs(1));
        let mut buckets = Vec::new();
        assert_eq!(tally.take(&mut buckets), 1);
        assert_eq!(buckets.iter().sum::<u64>(), 3);
        assert_eq!(buckets.iter().filter(|&&n| n > 0).count(), 2, "two latencies, two buckets");
        assert_eq!(tally.take(&mut buckets), 0);
        assert_eq!(buckets.iter().sum::<u64>(), 0);
    }
}
