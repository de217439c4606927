//! A bounded ring of per-second figures per pool, for the console's charts
//! (`GET /series`).
//!
//! The metrics are cumulative counters; a chart wants rates. Once a second
//! the sampler hands [`Series::record_second`] each pool's cumulative
//! totals — requests, failures and the latency histogram's cumulative
//! bucket counts — and the ring keeps the *differences*: what happened in
//! that second. A p99 for each second is estimated from the bucket deltas,
//! as Prometheus's `histogram_quantile` does, so the ring never holds a
//! single request's latency.
//!
//! Memory is bounded by construction: each pool keeps at most
//! [`WINDOW_SECS`] points of [`Point`]'s fixed size (32 bytes), so the ring
//! holds at most `900 × 32 B ≈ 28 KiB` per pool plus its name, and a pool
//! that leaves the config is forgotten once its last point ages out. Nothing
//! grows with traffic.
//!
//! The sampler reads the proxy's own registry ([`totals_from_families`]), so
//! the figures are exactly those `/metrics` exports; a second the sampler
//! missed (a stalled runtime) becomes one point spanning several seconds
//! rather than a spike. Time is passed in, never read here, so the tests
//! drive it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::proto::MetricFamily;
use serde::Serialize;

/// How many seconds of history each pool keeps: 15 minutes.
pub const WINDOW_SECS: u64 = 900;

/// A pool's cumulative totals at one instant, as the metrics count them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolTotals {
    /// Requests answered (every status class).
    pub requests: u64,
    /// Of those, failures: 5xx from the backend or from the proxy itself.
    pub failures: u64,
    /// The latency histogram: `(upper bound in seconds, cumulative count)`
    /// per bucket, ascending, as Prometheus exposes it (`le`); may be empty.
    pub latency: Vec<(f64, u64)>,
}

/// One pool's figures over one sampled stretch (usually one second).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix time, in seconds, at the end of the stretch.
    pub t: u64,
    /// Seconds the stretch covers (1 unless the sampler missed a tick).
    pub span: u32,
    /// Requests answered in the stretch.
    pub requests: u32,
    /// Failures in the stretch.
    pub failures: u32,
    /// Estimated p99 latency of the stretch, in milliseconds; `None` with
    /// no requests or no histogram.
    pub p99_ms: Option<f32>,
}

/// The per-pool rings and the last totals seen.
#[derive(Debug, Default)]
pub struct Series {
    pools: BTreeMap<String, Ring>,
    last_t: Option<u64>,
}

#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<Point>,
    /// The totals of the last second the pool was sampled.
    last: Option<PoolTotals>,
    /// That second.
    seen: u64,
}

/// A [`Series`] shared between the sampler and the admin handlers.
pub type SharedSeries = std::sync::Arc<Mutex<Series>>;

impl Series {
    /// An empty series.
    pub fn new() -> Series {
        Series::default()
    }

    /// A new empty [`SharedSeries`].
    pub fn shared() -> SharedSeries {
        std::sync::Arc::new(Mutex::new(Series::new()))
    }

    /// Record the cumulative `totals` of every pool at unix second `now`.
    ///
    /// The first call only sets the starting totals. A call for a second
    /// already recorded (or earlier: a clock stepped back) changes nothing,
    /// so the next call's deltas cover the whole stretch. A counter that
    /// went down (its backends' series were recreated) counts from zero.
    pub fn record_second<'a>(&mut self, now: u64, totals: impl IntoIterator<Item = (&'a str, &'a PoolTotals)>) {
        if self.last_t.is_some_and(|last| now <= last) {
            return;
        }
        self.last_t = Some(now);
        for (name, current) in totals {
            let ring = self.pools.entry(name.to_string()).or_default();
            if let Some(last) = &ring.last {
                // Since this pool's own last sample: a pool absent for a
                // while comes back with one point over the whole gap.
                ring.points.push_back(delta(now, now - ring.seen, last, current));
            }
            ring.last = Some(current.clone());
            ring.seen = now;
        }
        let oldest = now.saturating_sub(WINDOW_SECS);
        self.pools.retain(|_, ring| {
            while ring.points.front().is_some_and(|p| p.t <= oldest) {
                ring.points.pop_front();
            }
            // A pool gone from the totals keeps its `last` for a window, so
            // it resumes cleanly if it comes back; then it is forgotten.
            !ring.points.is_empty() || ring.seen > oldest
        });
    }

    /// Every pool's points later than unix second `since`, oldest first.
    pub fn since(&self, since: u64) -> SeriesView {
        let pools = self
            .pools
            .iter()
            .map(|(name, ring)| (name.clone(), ring.points.iter().filter(|p| p.t > since).copied().collect()))
            .collect();
        SeriesView { now: self.last_t, window: WINDOW_SECS, pools }
    }

    /// Points held in total (for tests and the memory bound).
    pub fn len(&self) -> usize {
        self.pools.values().map(|r| r.points.len()).sum()
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `GET /series` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesView {
    /// Unix second of the latest sample, `None` before the first.
    pub now: Option<u64>,
    /// Seconds of history kept.
    pub window: u64,
    /// Each pool's points, oldest first.
    pub pools: BTreeMap<String, Vec<Point>>,
}

fn delta(now: u64, span: u64, last: &PoolTotals, current: &PoolTotals) -> Point {
    let diff = |cur: u64, prev: u64| if cur >= prev { cur - prev } else { cur };
    let requests = diff(current.requests, last.requests);
    let failures = diff(current.failures, last.failures).min(requests);
    let buckets: Vec<(f64, u64)> = current
        .latency
        .iter()
        .enumerate()
        .map(|(i, &(bound, count))| {
            let prev = last.latency.get(i).filter(|(b, _)| *b == bound).map_or(0, |&(_, c)| c);
            (bound, diff(count, prev))
        })
        .collect();
    Point {
        t: now,
        span: u32::try_from(span).unwrap_or(u32::MAX),
        requests: u32::try_from(requests).unwrap_or(u32::MAX),
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        p99_ms: quantile(&buckets, 0.99).map(|s| (s * 1000.0) as f32),
    }
}

/// The `q` quantile, in seconds, of cumulative `(upper bound, count)`
/// buckets: linear inside the bucket that holds it, from the previous
/// bound (0 for the first). Past the last finite bound the answer is that
/// bound — a floor, as Prometheus gives.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.iter().map(|&(_, c)| c).max()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if !bound.is_finite() {
                return Some(lower.0);
            }
            let inside = (count - lower.1) as f64;
            let share = if inside > 0.0 { (rank - lower.1 as f64) / inside } else { 1.0 };
            return Some(lower.0 + (bound - lower.0) * share.clamp(0.0, 1.0));
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// Each pool's totals, summed over its backends and routes, read from a
/// gather of the proxy's registry (`cutover_requests_total`, failures
/// being `code="5xx"`, and `cutover_request_duration_seconds`).
pub fn totals_from_families(families: &[MetricFamily]) -> BTreeMap<String, PoolTotals> {
    let mut totals: BTreeMap<String, PoolTotals> = BTreeMap::new();
    let label = |m: &prometheus::proto::Metric, name: &str| {
        m.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string())
    };
    for family in families {
        match family.name() {
            "cutover_requests_total" => {
                for m in family.get_metric() {
                    let Some(pool) = label(m, "pool") else { continue };
                    let n = m.get_counter().get_value() as u64;
                    let entry = totals.entry(pool).or_default();
                    entry.requests += n;
                    if label(m, "code").as_deref() == Some("5xx") {
                        entry.failures += n;
                    }
                }
            }
            "cutover_request_duration_seconds" => {
                for m in family.get_metric() {
                    let Some(pool) = label(m, "pool") else { continue };
                    let entry = totals.entry(pool).or_default();
                    for (i, b) in m.get_histogram().get_bucket().iter().enumerate() {
                        match entry.latency.get_mut(i) {
                            Some(slot) if slot.0 == b.upper_bound() => slot.1 += b.cumulative_count(),
                            Some(_) => {}
                            None => entry.latency.push((b.upper_bound(), b.cumulative_count())),
                        }
                    }
                    // The exposition leaves `+Inf` implied: it is the count.
                    let count = m.get_histogram().get_sample_count();
                    let n = entry.latency.len();
                    match entry.latency.last_mut() {
                        Some(last) if n > 0 && last.0.is_infinite() => last.1 += count,
                        _ => entry.latency.push((f64::INFINITY, count)),
                    }
                }
            }
            _ => {}
        }
    }
    totals
}

/// Sample `metrics` into `series` once a second until `shutdown` turns
/// true: the task the runtime spawns beside the admin listener.
///
/// The wall clock is read once, at the start; each sample's second is
/// that plus the monotonic time since, so a clock step never reorders the
/// ring, and paused tokio time drives it in tests.
pub async fn sample(
    series: SharedSeries,
    metrics: crate::metrics::Metrics,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let start_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = start_unix + start.elapsed().as_secs();
        let totals = totals_from_families(&metrics.registry.gather());
        if let Ok(mut series) = series.lock() {
            series.record_second(now, totals.iter().map(|(k, v)| (k.as_str(), v)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, failures: u64, latency: &[(f64, u64)]) -> PoolTotals {
        PoolTotals { requests, failures, latency: latency.to_vec() }
    }

    fn record(series: &mut Series, now: u64, pools: &[(&str, PoolTotals)]) {
        series.record_second(now, pools.iter().map(|(n, t)| (*n, t)));
    }

    #[test]
    fn the_first_second_sets_the_start_and_later_ones_record_deltas() {
        let mut s = Series::new();
        record(&mut s, 100, &[("canary", totals(50, 5, &[]))]);
        assert!(s.is_empty(), "no delta before a second sample");
        record(&mut s, 101, &[("canary", totals(60, 8, &[]))]);
        record(&mut s, 102, &[("canary", totals(60, 8, &[]))]);
        let view = s.since(0);
        assert_eq!(view.now, Some(102));
        let points = &view.pools["canary"];
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].t, points[0].span, points[0].requests, points[0].failures), (101, 1, 10, 3));
        assert_eq!((points[1].requests, points[1].failures, points[1].p99_ms), (0, 0, None));
    }

    #[test]
    fn a_missed_tick_becomes_one_point_spanning_the_gap_and_a_repeat_is_ignored() {
        let mut s = Series::new();
        record(&mut s, 10, &[("a", totals(0, 0, &[]))]);
        record(&mut s, 13, &[("a", totals(30, 0, &[]))]);
        record(&mut s, 13, &[("a", totals(99, 0, &[]))]);
        record(&mut s, 12, &[("a", totals(99, 0, &[]))]);
        record(&mut s, 14, &[("a", totals(40, 0, &[]))]);
        let points = &s.since(0).pools["a"];
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].t, points[0].span, points[0].requests), (13, 3, 30));
        assert_eq!((points[1].t, points[1].span, points[1].requests), (14, 1, 10));
    }

    #[test]
    fn a_pool_absent_for_a_while_comes_back_with_one_point_over_the_gap() {
        let mut s = Series::new();
        record(&mut s, 1, &[("a", totals(0, 0, &[])), ("b", totals(0, 0, &[]))]);
        record(&mut s, 2, &[("a", totals(1, 0, &[]))]);
        record(&mut s, 3, &[("a", totals(2, 0, &[]))]);
        record(&mut s, 4, &[("a", totals(3, 0, &[])), ("b", totals(30, 0, &[]))]);
        let b = &s.since(0).pools["b"];
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].t, b[0].span, b[0].requests), (4, 3, 30));
    }

    #[test]
    fn a_counter_that_goes_down_counts_from_zero() {
        let mut s = Series::new();
        record(&mut s, 1, &[("a", totals(100, 10, &[]))]);
        record(&mut s, 2, &[("a", totals(7, 1, &[]))]);
        let p = s.since(0).pools["a"][0];
        assert_eq!((p.requests, p.failures), (7, 1));
    }

    #[test]
    fn the_ring_holds_at_most_the_window_and_since_filters_by_time() {
        let mut s = Series::new();
        for t in 0..=(WINDOW_SECS * 3) {
            record(&mut s, 1_000 + t, &[("a", totals(t, 0, &[])), ("b", totals(2 * t, t, &[]))]);
        }
        let view = s.since(0);
        for points in view.pools.values() {
            assert_eq!(points.len() as u64, WINDOW_SECS);
            assert!(points.windows(2).all(|w| w[0].t + 1 == w[1].t), "oldest first, one a second");
        }
        assert_eq!(s.len() as u64, 2 * WINDOW_SECS);
        let now = view.now.unwrap();
        let recent = s.since(now - 5);
        assert_eq!(recent.pools["b"].len(), 5);
        assert!(recent.pools["b"].iter().all(|p| p.t > now - 5 && p.requests == 2 && p.failures == 1));
    }

    #[test]
    fn a_pool_that_leaves_is_forgotten_once_its_points_age_out() {
        let mut s = Series::new();
        record(&mut s, 0, &[("old", totals(0, 0, &[]))]);
        record(&mut s, 1, &[("old", totals(5, 0, &[]))]);
        for t in 2..(WINDOW_SECS + 2) {
            record(&mut s, t, &[("new", totals(t, 0, &[]))]);
        }
        assert!(!s.since(0).pools.contains_key("old"), "{:?}", s.since(0).pools.keys());
        assert!(s.since(0).pools.contains_key("new"));
    }

    #[test]
    fn p99_comes_from_the_second_s_bucket_deltas() {
        let mut s = Series::new();
        let before = [(0.001, 0), (0.002, 0), (0.004, 0), (f64::INFINITY, 0)];
        // 100 requests this second: 98 under 1 ms, 2 between 2 and 4 ms.
        let after = [(0.001, 98), (0.002, 98), (0.004, 100), (f64::INFINITY, 100)];
        record(&mut s, 1, &[("a", totals(0, 0, &before))]);
        record(&mut s, 2, &[("a", totals(100, 0, &after))]);
        let p99 = s.since(0).pools["a"][0].p99_ms.unwrap();
        assert!((p99 - 3.0).abs() < 1e-3, "rank 99 is half way into the 2-4 ms bucket: {p99}");
        // An old slow second does not leak into the next one.
        let later = [(0.001, 196), (0.002, 196), (0.004, 200), (f64::INFINITY, 200)];
        let more = [(0.001, 294), (0.002, 294), (0.004, 296), (f64::INFINITY, 300)];
        record(&mut s, 3, &[("a", totals(200, 0, &later))]);
        record(&mut s, 4, &[("a", totals(300, 0, &more))]);
        let points = &s.since(2).pools["a"];
        assert!((points[0].p99_ms.unwrap() - 3.0).abs() < 1e-3);
        assert_eq!(points[1].p99_ms, Some(4.0), "past the last finite bound, the bound is the floor");
    }

    #[test]
    fn quantile_of_nothing_is_none() {
        assert_eq!(quantile(&[], 0.99), None);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.99), None);
    }

    #[test]
    fn totals_are_read_from_the_registry_per_pool() {
        let metrics = crate::metrics::Metrics::new();
        let [_, ok, _, _, err] = metrics.request_codes("shop", "canary", "127.0.0.1:1");
        ok.inc_by(7);
        err.inc_by(3);
        let [_, ok2, ..] = metrics.request_codes("api", "canary", "127.0.0.1:2");
        ok2.inc_by(10);
        let backend = metrics.backend("canary", "127.0.0.1:1");
        backend.duration.observe(0.0015);
        backend.duration.observe(0.0015);
        metrics.backend("canary", "127.0.0.1:2").duration.observe(0.0005);
        let totals = totals_from_families(&metrics.registry.gather());
        let canary = &totals["canary"];
        assert_eq!((canary.requests, canary.failures), (20, 3));
        assert_eq!(canary.latency.first(), Some(&(0.001, 1)));
        assert_eq!(canary.latency.get(1), Some(&(0.002, 3)));
        assert_eq!(canary.latency.last().map(|b| b.1), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sampler_records_each_second_from_the_registry_until_shutdown() {
        let metrics = crate::metrics::Metrics::new();
        let [_, ok, _, _, err] = metrics.request_codes("shop", "canary", "127.0.0.1:1");
        let series = Series::shared();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(sample(series.clone(), metrics.clone(), stopped));
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..3 {
            ok.inc_by(9);
            err.inc();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let view = series.lock().unwrap().since(0);
        let points = &view.pools["canary"];
        assert_eq!(points.len(), 3, "{points:?}");
        assert!(points.iter().all(|p| p.span == 1 && p.requests == 10 && p.failures == 1), "{points:?}");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("the sampler stops on shutdown").unwrap();
        let held = series.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(series.lock().unwrap().len(), held, "nothing sampled after shutdown");
    }

    #[test]
    fn the_view_serialises_as_the_api_documents() {
        let mut s = Series::new();
        record(&mut s, 1, &[("a", totals(0, 0, &[]))]);
        record(&mut s, 2, &[("a", totals(4, 1, &[]))]);
        let json = serde_json::to_value(s.since(0)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"now": 2, "window": 900, "pools": {"a": [
                {"t": 2, "span": 1, "requests": 4, "failures": 1, "p99_ms": null}
            ]}})
        );
    }
}
