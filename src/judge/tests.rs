//! The judge's rules, each on a seeded synthetic stream in simulated time.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::*;

const FAST: Duration = Duration::from_millis(2);

/// The configuration: canary against stable.
fn against_stable() -> JudgeConfig {
    JudgeConfig {
        baseline: Some("stable".into()),
        max_latency_ratio: Some(1.5),
        max_error_rate: Some(0.02),
        max_p99_latency: Some(Duration::from_millis(300)),
        min_requests: 50,
        ..JudgeConfig::default()
    }
}

/// One pool's behaviour: failure share and latency of each request.
#[derive(Clone, Copy)]
struct Behaviour {
    failures: f64,
    /// Latency of a request, from a uniform draw.
    latency: fn(f64) -> Duration,
}

/// 1 ms to 5 ms, with 1% between 5 and 6 ms: p99 about 5 ms.
fn like_stable(u: f64) -> Duration {
    if u < 0.99 {
        Duration::from_micros(1_000 + (u * 4_000.0) as u64)
    } else {
        Duration::from_micros(5_000 + ((u - 0.99) * 100_000.0) as u64)
    }
}

/// Sixty times slower: p99 about 300 ms.
fn sixty_times(u: f64) -> Duration {
    like_stable(u) * 60
}

fn ok(failures: f64) -> Behaviour {
    Behaviour { failures, latency: like_stable }
}

/// A seeded stream of requests split between the canary and stable.
struct Sim {
    judge: Judge,
    start: Instant,
    /// Simulated time since `start`.
    at: Duration,
    rng: SmallRng,
    /// Requests per second, both pools together.
    rate: f64,
    /// The canary's share of them.
    share: f64,
    /// Fraction of a request carried to the next tick.
    carry: f64,
}

impl Sim {
    fn new(config: JudgeConfig, rate: f64, seed: u64) -> Sim {
        let start = Instant::now();
        Sim {
            judge: Judge::new("canary", config, start),
            start,
            at: Duration::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            rate,
            share: 0.1,
            carry: 0.0,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.at
    }

    /// Run `span` of traffic; stop at the first tick whose verdict is
    /// `stop`, returning the time since the run began.
    fn run(&mut self, span: Duration, canary: Behaviour, stable: Behaviour, stop: VerdictKind) -> Option<Duration> {
        let began = self.at;
        let end = self.at + span;
        while self.at < end {
            self.carry += self.rate * TICK.as_secs_f64();
            let n = self.carry.floor() as u64;
            self.carry -= n as f64;
            for i in 0..n {
                let at = self.now() + TICK.mul_f64((i as f64 + 0.5) / n as f64);
                let (side, b) =
                    if self.rng.random::<f64>() < self.share { (Side::Pool, canary) } else { (Side::Baseline, stable) };
                let failed = self.rng.random::<f64>() < b.failures;
                let latency = (b.latency)(self.rng.random::<f64>());
                self.judge.record(side, failed, latency, at);
            }
            self.at += TICK;
            if self.judge.kind(self.now()) == stop {
                return Some(self.at - began);
            }
        }
        None
    }

    fn verdict(&mut self) -> Verdict {
        let now = self.now();
        self.judge.verdict(now)
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_canary_failing_far_more_than_its_baseline_fails_with_the_figures() {
    let mut sim = Sim::new(against_stable(), 200.0, 1);
    let took = sim.run(secs(60), ok(0.20), ok(0.001), VerdictKind::Failing).expect("trips");
    assert!(took < secs(10), "{took:?}");
    let v = sim.verdict();
    assert_eq!(v.kind, VerdictKind::Failing);
    assert!(matches!(v.evidence.rule, Rule::ErrorIncrease | Rule::ErrorRate), "{v:?}");
    let bound = v.evidence.bound.expect("a bound");
    assert!(bound > 0.0, "{v:?}");
    assert!(v.reason.starts_with("canary failing: "), "{}", v.reason);
    assert!(v.reason.contains(" vs stable "), "{}", v.reason);
    assert!(v.reason.contains("at 99%"), "{}", v.reason);
}

#[test]
fn the_error_rule_alone_states_its_bound_against_the_allowance() {
    // No absolute limits: only the relative rule can trip.
    let config = JudgeConfig { max_error_rate: None, max_p99_latency: None, ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 2);
    sim.run(secs(60), ok(0.20), ok(0.001), VerdictKind::Failing).expect("trips");
    let v = sim.verdict();
    assert_eq!((v.evidence.rule, v.evidence.scope), (Rule::ErrorIncrease, Scope::Version));
    let bound = v.evidence.bound.unwrap();
    assert!(bound > 0.01, "the lower bound is above the allowance: {bound}");
    assert!(bound < v.evidence.pool.share(), "and below the observed excess: {v:?}");
    assert!(v.reason.ends_with("> allowed 1.0"), "{}", v.reason);
    assert!(v.reason.contains("excess ≥ "), "{}", v.reason);
}

#[test]
fn a_failing_verdict_holds_until_reset() {
    let mut sim = Sim::new(against_stable(), 200.0, 3);
    sim.run(secs(60), ok(0.5), ok(0.001), VerdictKind::Failing).expect("trips");
    let first = sim.verdict();
    // The canary recovers; the verdict and its reason stay.
    assert_eq!(sim.run(secs(120), ok(0.0), ok(0.001), VerdictKind::Healthy), None);
    assert_eq!(sim.verdict(), first);
    let now = sim.now();
    sim.judge.reset(now);
    assert_eq!(sim.judge.ticks(), 0);
    let v = sim.verdict();
    assert_eq!(v.kind, VerdictKind::Inconclusive, "{v:?}");
    assert_eq!(v.evidence.pool.requests, 0, "evidence cleared");
}

#[test]
fn a_shared_outage_never_trips_the_canary() {
    let mut sim = Sim::new(against_stable(), 200.0, 4);
    assert_eq!(sim.run(secs(60), ok(0.001), ok(0.001), VerdictKind::Failing), None);
    let ticks = sim.judge.ticks();
    assert_eq!(sim.run(secs(600), ok(0.10), ok(0.10), VerdictKind::Failing), None);
    assert!(sim.judge.ticks() >= ticks + 2_400, "the judge ran every tick");
    let v = sim.verdict();
    assert_ne!(v.kind, VerdictKind::Healthy, "over the absolute limit is never healthy: {v:?}");
}

#[test]
fn low_traffic_adds_up_since_the_version_began() {
    // 5 requests a second in all: the canary sees one every two seconds.
    let mut sim = Sim::new(against_stable(), 5.0, 5);
    let took = sim.run(secs(120), ok(0.5), ok(0.001), VerdictKind::Failing).expect("trips");
    let v = sim.verdict();
    assert!(v.evidence.pool.requests < 50, "tripped below min_requests: {v:?}");
    assert_eq!(v.evidence.rule, Rule::ErrorIncrease, "{v:?}");
    assert!(took < secs(60), "{took:?}");
}

#[test]
fn a_burst_of_failures_at_low_traffic_counts_before_the_debt_behind_it_is_paid() {
    // One baseline request a tick. After 5 s the canary fails four requests
    // in a row, then succeeds once every 2 s: its requests then use nearly
    // all that the baseline's can cancel, so some debt stays owed for
    // minutes. Each failure counts once its own tick's charge is paid.
    let start = Instant::now();
    let mut judge = Judge::new("canary", against_stable(), start);
    let mut tripped = None;
    for tick in 0..240u32 {
        let at = start + TICK * tick + TICK / 2;
        judge.record(Side::Baseline, false, FAST, at);
        if (20..24).contains(&tick) {
            judge.record(Side::Pool, true, FAST, at);
        } else if tick > 24 && tick % 8 == 0 {
            judge.record(Side::Pool, false, FAST, at);
        }
        if tripped.is_none() && judge.kind(start + TICK * (tick + 1)) == VerdictKind::Failing {
            tripped = Some(tick);
        }
    }
    let tick = tripped.expect("trips on the four failures");
    assert!(tick < 24 + 20, "within 5 s of the fourth failure, not at a lull: tick {tick}");
    let v = judge.verdict(start + TICK * 240);
    assert_eq!((v.evidence.rule, v.evidence.scope), (Rule::ErrorIncrease, Scope::Version), "{v:?}");
    assert_eq!(v.evidence.pool.bad, 4, "{v:?}");
}

#[test]
fn a_late_failure_is_not_diluted_by_an_hour_of_good_traffic() {
    let config = JudgeConfig { max_error_rate: None, max_p99_latency: None, ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 6);
    assert_eq!(sim.run(secs(3_600), ok(0.001), ok(0.001), VerdictKind::Failing), None);
    let took = sim.run(secs(120), ok(0.10), ok(0.001), VerdictKind::Failing).expect("trips");
    assert!(took < secs(30), "{took:?}");
    let v = sim.verdict();
    assert_eq!((v.evidence.rule, v.evidence.scope), (Rule::ErrorIncrease, Scope::Recent), "{v:?}");
    assert!(v.evidence.span < secs(120), "judged on the recent span: {v:?}");
    assert!(v.evidence.pool.requests < 3_000, "{v:?}");
    assert!(v.reason.contains(" over the last "), "{}", v.reason);
}

#[test]
fn a_canary_slower_than_its_baseline_fails_the_latency_rule() {
    let config = JudgeConfig { max_p99_latency: None, ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 7);
    assert_eq!(sim.run(secs(10), ok(0.001), ok(0.001), VerdictKind::Failing), None);
    let threshold = sim.judge.slow_threshold().expect("a threshold from the baseline's p99");
    assert!(threshold >= Duration::from_micros(7_500) && threshold < Duration::from_millis(10), "{threshold:?}");
    let slow = Behaviour { failures: 0.001, latency: sixty_times };
    let took = sim.run(secs(30), slow, ok(0.001), VerdictKind::Failing).expect("trips");
    assert!(took < secs(3), "{took:?}");
    let v = sim.verdict();
    assert_eq!(v.evidence.rule, Rule::LatencyRatio, "{v:?}");
    assert!(v.reason.starts_with("canary slow: "), "{}", v.reason);
    assert!(v.reason.contains("ms (1.5 x stable p99 5."), "{}", v.reason);
}

/// A ratio whose threshold no `Duration` can hold (the configuration
/// refuses it, but the judge must not depend on that) puts the threshold
/// at the histogram's top edge instead of panicking in the guard's task.
#[test]
fn a_latency_ratio_past_any_duration_saturates() {
    let config = JudgeConfig { max_p99_latency: None, max_latency_ratio: Some(1e300), ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 9);
    assert_eq!(sim.run(secs(10), ok(0.001), ok(0.001), VerdictKind::Failing), None);
    let threshold = sim.judge.slow_threshold().expect("a threshold from the baseline's p99");
    assert!(threshold > Duration::from_secs(100), "{threshold:?}");
    let slow = Behaviour { failures: 0.001, latency: sixty_times };
    assert_eq!(sim.run(secs(10), slow, ok(0.001), VerdictKind::Failing), None, "nothing is that slow");
}

#[test]
fn a_shared_slowdown_does_not_trip_the_latency_rule() {
    let config = JudgeConfig { max_p99_latency: None, ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 8);
    let slow = Behaviour { failures: 0.001, latency: sixty_times };
    assert_eq!(sim.run(secs(20), ok(0.001), ok(0.001), VerdictKind::Failing), None);
    assert_eq!(sim.run(secs(300), slow, slow, VerdictKind::Failing), None);
}

#[test]
fn without_a_baseline_the_absolute_rule_of_spec_3_stays() {
    let config =
        JudgeConfig { max_error_rate: Some(0.1), min_requests: 20, window: secs(30), ..JudgeConfig::default() };
    let mut judge = Judge::new("p", config, Instant::now());
    let now = Instant::now();
    for _ in 0..19 {
        judge.record(Side::Pool, true, FAST, now);
    }
    assert_eq!(judge.kind(now + TICK), VerdictKind::Inconclusive, "below min_requests");
    judge.record(Side::Pool, true, FAST, now + TICK);
    let v = judge.verdict(now + TICK);
    assert_eq!((v.kind, v.evidence.rule), (VerdictKind::Failing, Rule::ErrorRate), "{v:?}");
    assert_eq!(v.reason, "p failing: error rate 100% > 10% over 30s, n=20");
}

#[test]
fn without_a_baseline_a_rate_at_the_limit_is_healthy_and_over_it_fails() {
    let config =
        JudgeConfig { max_error_rate: Some(0.1), min_requests: 10, window: secs(30), ..JudgeConfig::default() };
    let mut judge = Judge::new("p", config, Instant::now());
    let now = Instant::now();
    for i in 0..100 {
        judge.record(Side::Pool, i % 10 == 9, FAST, now);
    }
    assert_eq!(judge.kind(now), VerdictKind::Healthy, "10% exactly is not over 10%");
    judge.record(Side::Pool, true, FAST, now);
    assert_eq!(judge.kind(now), VerdictKind::Failing, "11/101 is over 10%");
}

#[test]
fn the_absolute_p99_limit_is_exact() {
    let config = JudgeConfig {
        max_error_rate: None,
        max_p99_latency: Some(Duration::from_millis(500)),
        min_requests: 100,
        ..JudgeConfig::default()
    };
    let mut judge = Judge::new("p", config, Instant::now());
    let now = Instant::now();
    judge.record_many(Side::Pool, 98, 0, FAST, now);
    judge.record_many(Side::Pool, 2, 0, Duration::from_millis(500), now);
    assert_eq!(judge.kind(now), VerdictKind::Healthy, "p99 at the limit is not over it");
    judge.record(Side::Pool, false, Duration::from_micros(500_001), now);
    assert_eq!(judge.kind(now), VerdictKind::Healthy, "1 of 101 slower is under 1%");
    judge.record(Side::Pool, false, Duration::from_micros(500_001), now);
    let v = judge.verdict(now);
    assert_eq!((v.kind, v.evidence.rule), (VerdictKind::Failing, Rule::P99Latency), "{v:?}");
    assert!(v.reason.starts_with("p slow: p99 latency "), "{}", v.reason);
}

#[test]
fn with_a_baseline_an_absolute_limit_trips_only_a_pool_worse_than_its_baseline() {
    // Both pools at 5%, over max_error_rate = 2%: shared, no trip.
    let mut shared = Sim::new(against_stable(), 200.0, 9);
    assert_eq!(shared.run(secs(300), ok(0.05), ok(0.05), VerdictKind::Failing), None);
    assert_eq!(shared.verdict().kind, VerdictKind::Inconclusive);
    // The canary alone at 2.5% against 0.1%: within the allowance of the
    // relative rule for a while, but over the absolute limit and worse.
    let config = JudgeConfig { max_error_increase: 0.05, ..against_stable() };
    let mut alone = Sim::new(config, 200.0, 10);
    alone.run(secs(600), ok(0.03), ok(0.001), VerdictKind::Failing).expect("trips");
    let v = alone.verdict();
    assert_eq!(v.evidence.rule, Rule::ErrorRate, "{v:?}");
    assert!(v.reason.contains("worse by ≥ "), "{}", v.reason);
}

#[test]
fn an_absolute_p99_limit_shared_with_the_baseline_does_not_trip() {
    let config = JudgeConfig { max_latency_ratio: None, ..against_stable() };
    let slow = Behaviour { failures: 0.001, latency: sixty_times };
    let mut shared = Sim::new(config.clone(), 200.0, 11);
    assert_eq!(shared.run(secs(120), slow, slow, VerdictKind::Failing), None);
    let mut alone = Sim::new(config, 200.0, 12);
    alone.run(secs(120), slow, ok(0.001), VerdictKind::Failing).expect("trips");
    assert_eq!(alone.verdict().evidence.rule, Rule::P99Latency);
}

#[test]
fn a_canary_like_its_baseline_becomes_healthy_on_enough_evidence() {
    let mut sim = Sim::new(against_stable(), 200.0, 13);
    assert_eq!(sim.verdict().kind, VerdictKind::Inconclusive);
    let took = sim.run(secs(600), ok(0.001), ok(0.001), VerdictKind::Healthy).expect("healthy");
    let v = sim.verdict();
    assert_eq!(v.kind, VerdictKind::Healthy, "{v:?}");
    assert!(v.evidence.pool.requests >= 50);
    assert!(v.evidence.bound.unwrap() < 0.01, "{v:?}");
    assert!(v.reason.starts_with("canary healthy: ") && v.reason.ends_with("< allowed 1.0"), "{}", v.reason);
    assert_eq!(v.since, sim.now(), "healthy since the tick it was first seen");
    assert!(took > secs(2), "never on the first few requests: {took:?}");
}

#[test]
fn healthy_waits_for_min_requests() {
    let config = JudgeConfig { min_requests: 100_000, ..against_stable() };
    let mut sim = Sim::new(config, 200.0, 14);
    assert_eq!(sim.run(secs(300), ok(0.0), ok(0.0), VerdictKind::Healthy), None);
    assert!(sim.verdict().reason.contains("fewer than min_requests = 100000"), "{}", sim.verdict().reason);
}

#[test]
fn memory_does_not_grow_with_traffic() {
    let mut judge = Judge::new("canary", against_stable(), Instant::now());
    let start = Instant::now();
    let size = |j: &Judge| format!("{j:?}").len();
    judge.record_many(Side::Baseline, 1, 0, FAST, start);
    let before = size(&judge);
    for s in 0..600u32 {
        let now = start + Duration::from_secs(u64::from(s));
        judge.record_many(Side::Pool, 1_000, 1, FAST, now);
        judge.record_many(Side::Baseline, 9_000, 9, FAST, now);
    }
    // Counts grow in digits, not in number: allow for the wider figures.
    assert!(size(&judge) < before + 4_000, "{} vs {before}", size(&judge));
}

#[test]
fn settings_are_checked_with_the_key_to_fix() {
    let check = |c: JudgeConfig| c.check("canary").map_err(|e| (e.field, e.to_string()));
    assert_eq!(check(against_stable()), Ok(()));
    let own = JudgeConfig { baseline: Some("canary".into()), ..against_stable() };
    assert_eq!(check(own).unwrap_err().0, "baseline");
    let wide = JudgeConfig { max_error_increase: 1.5, ..against_stable() };
    assert_eq!(check(wide).unwrap_err().0, "max_error_increase");
    let sure = JudgeConfig { confidence: 1.0, ..against_stable() };
    assert_eq!(check(sure).unwrap_err().0, "confidence");
    let fast_ratio = JudgeConfig { max_latency_ratio: Some(0.5), ..against_stable() };
    assert_eq!(check(fast_ratio).unwrap_err().0, "max_latency_ratio");
    let alone = JudgeConfig { baseline: None, ..against_stable() };
    let (field, text) = check(alone).unwrap_err();
    assert_eq!(field, "max_latency_ratio");
    assert!(text.starts_with("guard.max_latency_ratio: needs a baseline"), "{text}");
    let none = JudgeConfig { min_requests: 0, ..against_stable() };
    assert_eq!(check(none).unwrap_err().0, "min_requests");
}

#[test]
fn verdicts_and_rules_have_fixed_labels() {
    let labels: Vec<_> = VerdictKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels, ["healthy", "inconclusive", "failing"]);
    assert_eq!(Rule::ErrorRate.as_str(), "error_rate");
    assert_eq!(Rule::P99Latency.as_str(), "latency");
}

#[test]
fn the_worked_example_of_the_docs_holds() {
    // docs/rollback.md, "A worked example": 5 canary and 45 stable requests
    // a tick; the canary fails one request in four ticks (5%), stable two
    // in all.
    let config = JudgeConfig { max_error_rate: None, max_p99_latency: None, ..against_stable() };
    let start = Instant::now();
    let mut judge = Judge::new("canary", config, start);
    let mut verdicts = Vec::new();
    for tick in 0..48u32 {
        let at = start + TICK * tick + TICK / 2;
        judge.record_many(Side::Pool, 5, u64::from(tick % 4 == 3), FAST, at);
        judge.record_many(Side::Baseline, 45, u64::from(tick == 1 || tick == 30), FAST, at);
        verdicts.push(judge.verdict(start + TICK * (tick + 1)));
    }
    let at_10s = &verdicts[39];
    assert_eq!(
        (at_10s.evidence.pool, at_10s.evidence.baseline),
        (Counts { requests: 200, bad: 10 }, Counts { requests: 1_800, bad: 2 })
    );
    assert_eq!(at_10s.kind, VerdictKind::Inconclusive, "{at_10s:?}");
    let first = verdicts.iter().position(|v| v.kind == VerdictKind::Failing).expect("fails by 12 s");
    assert_eq!(first, 43, "at 11 s");
    let at_11s = &verdicts[43];
    assert_eq!(
        at_11s.reason, "canary failing: 5.0% of 220 vs stable 0.1% of 1,980; excess ≥ 1.1 points at 99% > allowed 1.0",
        "{at_11s:?}"
    );
    assert_eq!(verdicts[47], *at_11s, "and holds");
}

#[test]
fn a_tally_per_tick_judges_as_the_requests_one_by_one() {
    // The same seeded stream, fed request by request and as one tally per
    // tick, gives the same verdicts.
    let config = against_stable();
    let start = Instant::now();
    let mut one_by_one = Judge::new("canary", config.clone(), start);
    let mut tallied = Judge::new("canary", config, start);
    let mut rng = SmallRng::seed_from_u64(15);
    for tick in 0..400u32 {
        let at = start + TICK * tick + TICK / 2;
        for side in [Side::Pool, Side::Baseline] {
            let mut buckets = vec![0; tallied.buckets()];
            let mut failures = 0;
            let n = if side == Side::Pool { 5 } else { 45 };
            for _ in 0..n {
                let failed = rng.random::<f64>() < if side == Side::Pool { 0.03 } else { 0.001 };
                let latency = like_stable(rng.random::<f64>()) * if side == Side::Pool && tick > 200 { 3 } else { 1 };
                one_by_one.record(side, failed, latency, at);
                buckets[tallied.bucket(latency)] += 1;
                failures += u64::from(failed);
            }
            tallied.record_tally(side, failures, &buckets, at);
        }
        let now = start + TICK * (tick + 1);
        assert_eq!(one_by_one.verdict(now), tallied.verdict(now), "tick {tick}");
    }
    assert_eq!(tallied.verdict(start + TICK * 400).kind, VerdictKind::Failing, "a slower canary is caught");
}
