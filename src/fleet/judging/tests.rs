use std::time::Duration;

use super::*;
use crate::fleet::evidence::{evidence_key, SideCounts, Slice, FORMAT};
use crate::judge::{VerdictKind, TICK};

const PREFIX: &str = "/f";

/// No baseline: SPEC §3's rule, which needs `min_requests` in the window.
fn by_rate() -> JudgeConfig {
    JudgeConfig {
        max_error_rate: Some(0.1),
        min_requests: 100,
        window: Duration::from_secs(10),
        ..JudgeConfig::default()
    }
}

fn against_stable() -> JudgeConfig {
    JudgeConfig { baseline: Some("stable".into()), min_requests: 20, ..JudgeConfig::default() }
}

/// `requests` fast requests of which `failures` failed, in bucket 30.
fn counts(requests: u64, failures: u64) -> SideCounts {
    let mut dense = vec![0; 31];
    dense[30] = requests;
    SideCounts::from_dense(failures, &dense)
}

fn record(replica: &str, boot: u64, slices: &[(u64, u64, u64)]) -> Vec<u8> {
    let slices = slices
        .iter()
        .map(|&(seq, requests, failures)| Slice { seq, at_ms: 0, pool: counts(requests, failures), base: None })
        .collect();
    Record { format: FORMAT, replica: replica.into(), boot, limit_us: None, slices }.encode()
}

fn key(replica: &str) -> Vec<u8> {
    evidence_key(PREFIX, "canary", replica).into_bytes()
}

fn judging(config: JudgeConfig) -> FleetJudging {
    FleetJudging::new(PREFIX, [("canary".to_string(), config)], Instant::now())
}

#[tokio::test(start_paused = true)]
async fn five_replicas_below_min_requests_add_up_to_a_verdict() {
    let mut fleet = judging(by_rate());
    let mut locals: Vec<Judge> = (0..5).map(|_| Judge::new("canary", by_rate(), Instant::now())).collect();
    let mut failing_at = None;
    // 8 requests a second per replica, half failing: 80 in a 10 s window,
    // below min_requests = 100 for each; 400 for the fleet.
    for second in 1..=30u64 {
        for (r, local) in locals.iter_mut().enumerate() {
            let slice = counts(8, 4);
            let mut dense = vec![0; local.buckets()];
            let failures = slice.add_to(&mut dense);
            local.record_tally(Side::Pool, failures, &dense, Instant::now());
            let value = record(&format!("r{r}"), 1, &[(second, 8, 4)]);
            assert_eq!(fleet.observe(&key(&format!("r{r}")), Some(&value)), Ok(1));
        }
        for _ in 0..4 {
            tokio::time::advance(TICK).await;
            let now = Instant::now();
            let verdict = &fleet.tick(now)["canary"];
            if verdict.kind == VerdictKind::Failing && failing_at.is_none() {
                failing_at = Some(second);
            }
            for local in &mut locals {
                assert_eq!(local.verdict(now).kind, VerdictKind::Inconclusive, "one replica alone cannot judge");
            }
        }
    }
    let second = failing_at.expect("the fleet's judge trips");
    assert!(second <= 3, "100 requests are there after 2.5 s; tripped after {second} s");
    let contributions = fleet.contributions("canary").expect("judged");
    assert_eq!(contributions.len(), 5);
    assert!(contributions.values().all(|c| c.live && c.requests == 240 && c.failures == 120 && c.slices == 30));
}

#[tokio::test(start_paused = true)]
async fn a_slice_read_again_is_not_counted_again() {
    let mut fleet = judging(by_rate());
    let first = record("a", 1, &[(1, 10, 0), (2, 10, 0)]);
    assert_eq!(fleet.observe(&key("a"), Some(&first)), Ok(2));
    assert_eq!(fleet.observe(&key("a"), Some(&first)), Ok(0), "the same record again");
    // The next record repeats its last slice and adds one.
    let next = record("a", 1, &[(2, 10, 0), (4, 10, 0)]);
    assert_eq!(fleet.observe(&key("a"), Some(&next)), Ok(1));
    // A whole re-read, as after a compaction.
    assert_eq!(fleet.observe_all([(key("a").as_slice(), next.as_slice())]), 0);
    let stats = fleet.stats();
    assert_eq!((stats.slices, stats.repeated, stats.records), (3, 5, 4));
    tokio::time::advance(TICK).await;
    fleet.tick(Instant::now());
    tokio::time::advance(TICK).await;
    let verdict = &fleet.tick(Instant::now())["canary"];
    assert_eq!(verdict.evidence.pool.requests, 30, "{}", verdict.reason);
}

#[tokio::test(start_paused = true)]
async fn a_replica_gone_keeps_what_it_gave_and_a_new_run_counts_again() {
    let mut fleet = judging(by_rate());
    fleet.observe(&key("a"), Some(&record("a", 1, &[(5, 10, 1)]))).expect("counted");
    fleet.observe(&key("a"), None).expect("deleted");
    let c = &fleet.contributions("canary").expect("judged")["a"];
    assert!(!c.live);
    assert_eq!((c.requests, c.failures, c.last_seq), (10, 1, 5));
    // The same run writes again under a new lease: only new slices count.
    assert_eq!(fleet.observe(&key("a"), Some(&record("a", 1, &[(5, 10, 1), (6, 10, 0)]))), Ok(1));
    // A restart under the same name numbers from 1 again.
    assert_eq!(fleet.observe(&key("a"), Some(&record("a", 2, &[(1, 10, 0)]))), Ok(1));
    let c = &fleet.contributions("canary").expect("judged")["a"];
    assert!(c.live);
    assert_eq!((c.requests, c.slices, c.boot, c.last_seq), (30, 3, 2, 1));
    // A whole read without the key marks it gone.
    fleet.observe_all(std::iter::empty());
    assert!(!fleet.contributions("canary").expect("judged")["a"].live);
}

#[tokio::test(start_paused = true)]
async fn evidence_the_judge_cannot_use_is_refused() {
    let mut fleet = judging(by_rate());
    assert!(matches!(fleet.observe(b"/f/evidence/canary", Some(b"{}")), Err(EvidenceError::Key(_))));
    assert!(matches!(fleet.observe(b"/other/x/y", Some(b"{}")), Err(EvidenceError::Key(_))));
    let bad = fleet.observe(&key("a"), Some(b"not json")).expect_err("bad json");
    assert!(bad.to_string().contains("not an evidence record"), "{bad}");
    let mut other_edges: Record = serde_json::from_slice(&record("a", 1, &[(1, 1, 0)])).expect("json");
    other_edges.limit_us = Some(300_000);
    let bad = fleet.observe(&key("a"), Some(&other_edges.encode())).expect_err("other edges");
    assert!(bad.to_string().contains("max_p99_latency"), "{bad}");
    let bad = fleet.observe(&key("b"), Some(&record("a", 1, &[(1, 1, 0)]))).expect_err("another's key");
    assert!(bad.to_string().contains("another's key"), "{bad}");
    let unknown = evidence_key(PREFIX, "blue", "a").into_bytes();
    assert_eq!(fleet.observe(&unknown, Some(&record("a", 1, &[(1, 1, 0)]))), Ok(0));
    let stats = fleet.stats();
    assert_eq!((stats.rejected, stats.unknown, stats.slices), (5, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn both_sides_of_a_slice_are_judged_together() {
    let mut fleet = judging(against_stable());
    let mut failing = false;
    for seq in 1..=40 {
        for replica in ["a", "b"] {
            let slice = Slice { seq, at_ms: 0, pool: counts(5, 2), base: Some(counts(45, 0)) };
            let value =
                Record { format: FORMAT, replica: replica.into(), boot: 1, limit_us: None, slices: vec![slice] };
            fleet.observe(&key(replica), Some(&value.encode())).expect("counted");
        }
        tokio::time::advance(TICK).await;
        failing |= fleet.tick(Instant::now())["canary"].kind == VerdictKind::Failing;
    }
    assert!(failing, "40% against 0%");
    let c = &fleet.contributions("canary").expect("judged")["a"];
    assert_eq!((c.requests, c.failures, c.baseline_requests), (200, 80, 1800));
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_unchanged_judges_and_a_reset_clears_one() {
    let mut fleet = judging(by_rate());
    fleet.observe(&key("a"), Some(&record("a", 1, &[(1, 50, 0)]))).expect("counted");
    tokio::time::advance(TICK).await;
    fleet.tick(Instant::now());
    fleet.set_pools([("canary".to_string(), by_rate()), ("blue".to_string(), by_rate())], Instant::now());
    tokio::time::advance(TICK).await;
    let verdicts = fleet.tick(Instant::now());
    assert_eq!(verdicts["canary"].evidence.pool.requests, 50, "kept");
    assert_eq!(verdicts["blue"].evidence.pool.requests, 0);
    assert!(fleet.reset("canary", Instant::now()));
    assert!(!fleet.reset("green", Instant::now()));
    assert_eq!(fleet.contributions("canary").expect("judged")["a"].requests, 0);
    assert_eq!(fleet.observe(&key("a"), Some(&record("a", 1, &[(1, 50, 0)]))), Ok(0), "counted before the reset");
    fleet.set_pools([("canary".to_string(), against_stable())], Instant::now());
    assert!(fleet.contributions("blue").is_none());
    assert!(fleet.contributions("canary").expect("judged").is_empty(), "new settings, new judge");
}

#[tokio::test(start_paused = true)]
async fn slices_cut_before_a_reset_that_arrive_after_it_are_not_counted() {
    let mut fleet = judging(by_rate());
    assert!(fleet.reset("canary", Instant::now()));
    // Cut before the reset (at the epoch), published after it: dropped.
    assert_eq!(fleet.observe(&key("a"), Some(&record("a", 1, &[(1, 50, 50)]))), Ok(0));
    assert_eq!(fleet.stats().stale, 1);
    assert_eq!(fleet.observe(&key("a"), Some(&record("a", 1, &[(1, 50, 50)]))), Ok(0), "and never later");
    assert_eq!(fleet.stats().stale, 1, "a repeat is a repeat");
    // Cut after the reset: counted.
    let later = u64::try_from(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_millis())
        .expect("fits")
        + 60_000;
    let slice = Slice { seq: 2, at_ms: later, pool: counts(50, 50), base: None };
    let value = Record { format: FORMAT, replica: "a".into(), boot: 1, limit_us: None, slices: vec![slice] }.encode();
    assert_eq!(fleet.observe(&key("a"), Some(&value)), Ok(1));
    assert_eq!(fleet.contributions("canary").expect("judged")["a"].requests, 50);
}
