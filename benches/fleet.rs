//! What fleet mode's one verdict costs a replica.
//!
//! - **Request path**: a request of a guarded pool costs
//!   [`PoolGuard::observe`] whether or not the replica publishes evidence;
//!   the tap runs in the guard's 250 ms tick. `observe` is measured on a
//!   guard ticked plainly and on one ticked through an [`EvidenceTap`]
//!   (the same code, so the same figure: the point is that nothing was
//!   added), and the tick itself with and without the tap.
//! - **Publishing**: what one publishing round costs at N guarded pools:
//!   the tap's cut, and each pool's record (its new slice and the 2
//!   retained ones, as in a steady state) built and encoded as the publisher writes it; the bytes
//!   written per round are printed. etcd's own cost of the writes is
//!   etcd's (one small put per pool and round).
//!
//! `cargo bench --bench fleet` runs it in a minute or so.

#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use tokio::time::Instant;

use cutover::config::GuardConfig;
use cutover::fleet::evidence::{Record, SideCounts, Slice, FORMAT};
use cutover::fleet::EvidenceTap;
use cutover::guard::PoolGuard;
use cutover::judge::Side;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

fn guard() -> PoolGuard {
    let config = GuardConfig {
        baseline: Some("stable".into()),
        max_error_rate: Some(0.02),
        max_p99_latency: Some(Duration::from_millis(300)),
        min_requests: 50,
        window: Duration::from_secs(10),
        ..GuardConfig::default()
    };
    PoolGuard::new("canary".into(), config, None)
}

/// A tick's worth of varied outcomes (200 requests, a few slow, a few failed).
fn traffic(guard: &PoolGuard) {
    let now = Instant::now();
    for i in 0..200u64 {
        let latency = Duration::from_micros(1_500 + (i * 37) % 4_000 + if i % 50 == 0 { 200_000 } else { 0 });
        guard.observe(now, i % 97 == 0, latency);
    }
}

fn request_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("request path");
    let plain = guard();
    let tapped = guard();
    let tap = EvidenceTap::new();
    let now = Instant::now();
    group.bench_function("observe, guard ticked plainly", |b| {
        b.iter(|| plain.observe(now, false, black_box(Duration::from_millis(3))))
    });
    plain.tick(now);
    group.bench_function("observe, guard ticked through the tap", |b| {
        b.iter(|| tapped.observe(now, false, black_box(Duration::from_millis(3))))
    });
    tap.tick(&tapped, now);
    group.finish();

    let mut group = c.benchmark_group("tick (per pool, every 250 ms)");
    group.bench_function("guard tick", |b| {
        b.iter_batched(|| traffic(&plain), |()| plain.tick(Instant::now()), BatchSize::PerIteration)
    });
    group.bench_function("guard tick through the tap", |b| {
        b.iter_batched(|| traffic(&tapped), |()| tap.tick(&tapped, Instant::now()), BatchSize::PerIteration)
    });
    group.finish();
}

/// Counts shaped like a pool's second: a few dozen buckets in use.
fn busy_counts(buckets: usize, spread: usize) -> Vec<u64> {
    let mut dense = vec![0u64; buckets];
    for (i, slot) in dense.iter_mut().enumerate().skip(40).take(spread) {
        *slot = 5 + (i as u64 * 13) % 40;
    }
    dense
}

fn publishing(c: &mut Criterion) {
    // The judge's histogram with a `max_p99_latency` edge.
    let edges = cutover::judge::Judge::new("p", cutover::judge::JudgeConfig::default(), Instant::now()).buckets() + 1;
    let dense = busy_counts(edges, 24);
    let slice = |seq| Slice {
        seq,
        at_ms: 1_765_000_000_000 + seq * 500,
        pool: SideCounts::from_dense(3, &dense),
        base: Some(SideCounts::from_dense(1, &busy_counts(edges, 30))),
    };
    let retained: Vec<Slice> = (1..=2).map(slice).collect();
    let mut group = c.benchmark_group("publishing round");
    for pools in [1usize, 10, 100] {
        let tap = EvidenceTap::new();
        let names: Vec<String> = (0..pools).map(|i| format!("pool-{i}")).collect();
        let fill = || {
            for name in &names {
                tap.add(name, Some(Duration::from_millis(300)), Side::Pool, 3, &dense);
                tap.add(name, Some(Duration::from_millis(300)), Side::Baseline, 1, &dense);
            }
        };
        let round = || {
            let cut = tap.cut();
            let mut bytes = 0;
            for pool in cut {
                let mut slices = retained.clone();
                slices.push(Slice { seq: 3, at_ms: 0, pool: pool.counts, base: pool.base });
                let record =
                    Record { format: FORMAT, replica: "edge-7f9c-1".into(), boot: 1, limit_us: pool.limit_us, slices };
                bytes += record.encode().len();
            }
            bytes
        };
        fill();
        let bytes = round();
        println!("publishing round at {pools} pools: {bytes} bytes written ({} per pool)", bytes / pools);
        group.bench_function(format!("{pools} pools"), |b| b.iter_batched(fill, |()| round(), BatchSize::PerIteration));
    }
    group.finish();
}

criterion_group! {
    name = fleet;
    config = config();
    targets = request_path, publishing
}
criterion_main!(fleet);
