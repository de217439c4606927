//! The judge's sliding window: both pools' recent requests, failures and
//! latency histograms, in bounded memory.
//!
//! The window is a ring of ten time slices (it slides a tenth of its length
//! at a time, as [`crate::guard`]'s does) plus a running sum, so memory is
//! fixed by the histogram's size whatever the traffic, and a read costs no
//! sum over slices. It serves two rules: the absolute limits
//! (`max_error_rate`, `max_p99_latency`, judged over the window as SPEC §3
//! says), and the baseline's p99, from which the latency rule's threshold is
//! taken. The histogram's edges are log-spaced, eight per doubling (9% apart)
//! from 100 µs to about 100 s, plus `max_p99_latency` itself, so "p99 over
//! the limit" is decided exactly.

use std::time::Duration;

use super::{math, Side};

/// Slices in a window.
const SLICES: usize = 10;

/// Edges per doubling of latency.
const PER_DOUBLING: f64 = 8.0;

/// Smallest edge, microseconds.
const FIRST_EDGE_US: f64 = 100.0;

/// Number of log-spaced edges: 100 µs × 2^20 ≈ 105 s.
const LOG_EDGES: u32 = 161;

/// Histogram bucket edges in microseconds, ascending. Bucket `i` holds
/// latencies in `(edge[i-1], edge[i]]`; the last bucket is open. A recorder
/// outside the judge holds a copy to tally a tick's requests by bucket.
#[derive(Debug, Clone)]
pub struct Edges {
    edges: Box<[u64]>,
}

impl Edges {
    /// The log-spaced edges, plus `exact` if given.
    pub(crate) fn new(exact: Option<Duration>) -> Edges {
        let mut edges: Vec<u64> =
            (0..LOG_EDGES).map(|k| (FIRST_EDGE_US * math::exp2(f64::from(k) / PER_DOUBLING)).round() as u64).collect();
        if let Some(t) = exact {
            let us = micros(t);
            if !edges.contains(&us) {
                edges.push(us);
                edges.sort_unstable();
            }
        }
        edges.dedup();
        Edges { edges: edges.into() }
    }

    /// Number of buckets (one more than edges).
    pub fn buckets(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bucket of `latency`.
    pub fn bucket(&self, latency: Duration) -> usize {
        let us = micros(latency);
        self.edges.partition_point(|&edge| edge < us)
    }

    /// Index of the first edge at or above `limit` (so a latency is over the
    /// limit, rounded up to an edge, when its bucket is past this index).
    pub(crate) fn at_or_above(&self, limit: Duration) -> usize {
        self.edges.partition_point(|&edge| edge < micros(limit)).min(self.edges.len() - 1)
    }

    /// The upper edge of bucket `i` (the last edge for the open bucket).
    pub(crate) fn edge(&self, i: usize) -> Duration {
        Duration::from_micros(self.edges[i.min(self.edges.len() - 1)])
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One pool's counts over a slice or the whole window.
#[derive(Debug, Clone)]
pub(crate) struct SideWindow {
    /// Requests that ended.
    pub(crate) requests: u64,
    /// Of which failed.
    pub(crate) failures: u64,
    /// Latency histogram over [`Edges`].
    pub(crate) buckets: Box<[u64]>,
}

impl SideWindow {
    fn new(buckets: usize) -> SideWindow {
        SideWindow { requests: 0, failures: 0, buckets: vec![0; buckets].into() }
    }

    fn clear(&mut self) {
        self.requests = 0;
        self.failures = 0;
        self.buckets.iter_mut().for_each(|b| *b = 0);
    }

    /// Requests in buckets past `at` (slower than edge `at`).
    pub(crate) fn slower_than(&self, at: usize) -> u64 {
        self.buckets[at + 1..].iter().sum()
    }

    /// The bucket holding the 99th percentile, if any request.
    pub(crate) fn p99_bucket(&self) -> Option<usize> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let need = total - total / 100;
        let mut cumulative = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count;
            if cumulative >= need {
                return Some(i);
            }
        }
        Some(self.buckets.len() - 1)
    }
}

#[derive(Debug, Clone)]
struct Slot {
    /// Absolute slice number held, `u64::MAX` when empty.
    index: u64,
    sides: [SideWindow; 2],
}

/// Both pools' outcomes over the last `window`.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    slice: Duration,
    slots: Box<[Slot]>,
    /// Newest slice number seen.
    head: u64,
    sum: [SideWindow; 2],
}

impl Window {
    /// An empty window of length `window` over `buckets` latency buckets.
    pub(crate) fn new(window: Duration, buckets: usize) -> Window {
        let side = SideWindow::new(buckets);
        let slot = Slot { index: u64::MAX, sides: [side.clone(), side.clone()] };
        Window {
            slice: (window / SLICES as u32).max(Duration::from_millis(1)),
            slots: vec![slot; SLICES].into(),
            head: 0,
            sum: [side.clone(), side],
        }
    }

    /// The slice number of `elapsed` (time since the judge's epoch).
    pub(crate) fn slice_of(&self, elapsed: Duration) -> u64 {
        u64::try_from(elapsed.as_nanos() / self.slice.as_nanos().max(1)).unwrap_or(u64::MAX - 1)
    }

    /// Move the window to slice `index`, dropping slices that leave it.
    /// Returns whether it moved.
    pub(crate) fn roll(&mut self, index: u64) -> bool {
        if index <= self.head {
            return false;
        }
        self.head = index;
        for slot in self.slots.iter_mut() {
            if slot.index != u64::MAX && self.head - slot.index >= SLICES as u64 {
                for (sum, side) in self.sum.iter_mut().zip(slot.sides.iter()) {
                    sum.requests -= side.requests;
                    sum.failures -= side.failures;
                    for (s, b) in sum.buckets.iter_mut().zip(side.buckets.iter()) {
                        *s -= b;
                    }
                }
                slot.index = u64::MAX;
                slot.sides.iter_mut().for_each(SideWindow::clear);
            }
        }
        true
    }

    /// Add `requests` of which `failures` failed, all in latency `bucket`,
    /// to the newest slice.
    pub(crate) fn add(&mut self, side: Side, requests: u64, failures: u64, bucket: usize) {
        let head = self.head;
        let slot = &mut self.slots[(head % SLICES as u64) as usize];
        slot.index = head;
        let s = side as usize;
        for w in [&mut slot.sides[s], &mut self.sum[s]] {
            w.requests += requests;
            w.failures += failures;
            w.buckets[bucket] += requests;
        }
    }

    /// One pool's sum over the window.
    pub(crate) fn side(&self, side: Side) -> &SideWindow {
        &self.sum[side as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_log_spaced_and_hold_the_exact_limit() {
        let edges = Edges::new(Some(Duration::from_millis(300)));
        let at = edges.at_or_above(Duration::from_millis(300));
        assert_eq!(edges.edge(at), Duration::from_millis(300));
        assert_eq!(edges.bucket(Duration::from_millis(300)), at, "the limit itself is not over it");
        assert_eq!(edges.bucket(Duration::from_micros(300_001)), at + 1);
        // Neighbouring edges are about 9% apart (rounding to whole µs aside).
        for i in 1..edges.buckets() - 2 {
            let (lo, hi) = (edges.edge(i - 1).as_micros() as f64, edges.edge(i).as_micros() as f64);
            assert!(hi / lo <= 1.095, "{lo} {hi}");
        }
        assert_eq!(edges.bucket(Duration::ZERO), 0);
        assert_eq!(edges.bucket(Duration::from_secs(1_000)), edges.buckets() - 1);
    }

    #[test]
    fn slices_leave_the_window_and_the_sum_follows() {
        let edges = Edges::new(None);
        let mut w = Window::new(Duration::from_secs(10), edges.buckets());
        w.roll(0);
        w.add(Side::Pool, 10, 2, 3);
        w.roll(5);
        w.add(Side::Pool, 5, 0, 3);
        w.add(Side::Baseline, 7, 1, 4);
        assert_eq!((w.side(Side::Pool).requests, w.side(Side::Pool).failures), (15, 2));
        w.roll(10);
        assert_eq!((w.side(Side::Pool).requests, w.side(Side::Pool).failures), (5, 0));
        assert_eq!(w.side(Side::Baseline).buckets[4], 7);
        w.roll(100);
        assert_eq!(w.side(Side::Pool).requests, 0);
        assert_eq!(w.side(Side::Pool).buckets.iter().sum::<u64>(), 0);
    }

    #[test]
    fn p99_is_the_bucket_of_the_99th_percentile() {
        let mut side = SideWindow::new(10);
        side.buckets[2] = 99;
        side.buckets[7] = 1;
        assert_eq!(side.p99_bucket(), Some(2));
        side.buckets[7] = 2;
        assert_eq!(side.p99_bucket(), Some(7));
        assert_eq!(side.slower_than(2), 2);
        assert_eq!(SideWindow::new(3).p99_bucket(), None);
    }
}
