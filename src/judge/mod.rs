//! The judge: a continuous verdict on a guarded pool — `healthy`,
//! `inconclusive` or `failing` — with the evidence and the one-line reason
//! behind it.
//!
//! A [`Judge`] is pure: it is fed the outcomes of its pool and of the pool's
//! baseline (`record`, or `record_many` for a batch of equal outcomes) and
//! asked for a [`Verdict`] at a given instant. It owns no task, no socket
//! and no clock, so a simulation drives it in simulated time as fast as the
//! CPU allows, and the guard drives it from the request path and a 250 ms
//! tick.
//!
//! Outcomes are grouped in ticks of [`TICK`]; each closed tick is one step
//! of the sequential tests of [`compare`], which stay valid however often
//! the verdict is read. With a baseline (`baseline = "POOL"`), a pool is
//! judged **against that pool over the same time**:
//!
//! - *error rule*: its failure share minus the baseline's, against
//!   `max_error_increase`;
//! - *latency rule* (with `max_latency_ratio`): its share of answers slower
//!   than `max_latency_ratio` × the baseline's p99 minus the baseline's
//!   share of them, against [`LATENCY_ALLOWANCE`] (the 1% a p99 leaves);
//! - *absolute limits* (`max_error_rate`, `max_p99_latency`) over the
//!   window, as SPEC §3, which trip only when the pool is also shown worse
//!   than its baseline — so a failure the baseline shares never trips it.
//!
//! Each relative rule is judged twice: over everything since the pool's
//! current version began (so low traffic adds up), and over a recent span
//! that restarts whenever the evidence falls back (so an hour of good
//! traffic does not dilute a late failure). `failing` needs the lower
//! confidence bound of an excess above its allowance; `healthy` needs, on at
//! least `min_requests` requests, the upper bound of every excess below its
//! allowance and no absolute limit exceeded; anything else is
//! `inconclusive`. A `failing` verdict holds until the evidence is cleared
//! ([`Judge::reset`]: a new version, or an operator's reset).
//!
//! Without a baseline the verdict is SPEC §3's rule over the window alone:
//! `failing` on a breach, `healthy` on `min_requests` without one.
//!
//! The false-alarm budget `1 − confidence` is split evenly between the
//! relative rules in use, and within each between the since-version test (a
//! bound over the version's whole life) and the recent-span test (a bound per
//! hour); the gate of the absolute limits has a tenth of it on top, split the
//! same way; `docs/rollback.md` states the method, its assumptions and bounds.
//!
//! The judge's settings ([`config`]) and what it says ([`verdict`]) have files
//! of their own; what stays here is one idea, the judge itself, whose two
//! spans, gates and debts share one tick's bookkeeping and read best together.

mod compare;
mod config;
mod math;
mod text;
mod verdict;
mod window;

use std::time::Duration;

use tokio::time::Instant;

use compare::Comparison;
pub use compare::Counts;
pub use config::{ConfigError, JudgeConfig};
pub use verdict::{Evidence, Rule, Scope, Verdict, VerdictKind};
pub use window::Edges;
use window::Window;

/// Length of a tick: the step of the sequential tests.
pub const TICK: Duration = Duration::from_millis(250);

/// Ticks between the points where the recent-span test may restart (4 s:
/// fewer points cost the bound less; a change waits at most this long for a
/// restart close before it).
const RESTART_TICKS: u64 = 16;

/// Restart points per hour, which the recent-span test's bound counts.
const RESTARTS_PER_HOUR: f64 = 3600.0 / (RESTART_TICKS as f64 * 0.25);

/// The share of the false-alarm budget `1 − confidence` that each relative
/// rule spends on its since-version test; the rest goes to its recent-span
/// test (per hour).
const VERSION_SHARE: f64 = 0.5;

/// The false-alarm budget of the "worse than its baseline" gate of the
/// absolute limits, as a share of `1 − confidence`, split evenly between
/// its since-version and its recent-span test (per hour). It is a tenth,
/// whatever the number of rules, because the gate is judged at an excess
/// of zero, where a canary just like its baseline sits exactly on the
/// boundary: at 99% a pool like its baseline is let through by the gate at
/// most once in 1,000 one-hour runs.
const GATE_SHARE: f64 = 0.1;

/// The latency rule's allowance: a pool like its baseline has about 1% of
/// its answers beyond the baseline's p99 (fewer beyond a multiple of it).
pub const LATENCY_ALLOWANCE: f64 = 0.01;

/// Which pool an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The guarded pool.
    Pool = 0,
    /// Its baseline.
    Baseline = 1,
}

/// One pool's counts in the open tick.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    failures: u64,
    /// Slower than the latency rule's threshold.
    slow: u64,
    /// Slower than `max_p99_latency`.
    over_limit: u64,
}

/// Log-thresholds of the sequential tests.
#[derive(Debug, Clone, Copy)]
struct Levels {
    /// Since-version test: `ln(1/α_v)`.
    version: f64,
    /// Recent-span test: `ln(restarts per hour / α_r)`.
    recent: f64,
    /// Upper side, for `healthy`: `ln(1/α_h)`.
    healthy: f64,
    /// The since-version test of "worse than the baseline at all" that
    /// gates an absolute limit.
    gate_version: f64,
    /// The recent-span test of the same.
    gate_recent: f64,
}

/// The latency rule's threshold, from the baseline's p99.
#[derive(Debug, Clone, Copy)]
struct SlowThreshold {
    /// Index of the threshold's edge: slower means a bucket past it.
    at: usize,
    /// The baseline's p99 it was taken from.
    p99: Duration,
    /// The threshold, rounded up to an edge.
    limit: Duration,
}

/// What [`Judge::decide`] found, before any text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Failing(Rule, Scope),
    Healthy,
    Inconclusive,
}

/// The judge of one guarded pool.
#[derive(Debug, Clone)]
pub struct Judge {
    pool: String,
    config: JudgeConfig,
    levels: Levels,
    /// When the current evidence began.
    epoch: Instant,
    open_tick: u64,
    open: [Tally; 2],
    edges: Edges,
    window: Window,
    /// The latency rule's threshold for the open tick.
    slow: Option<SlowThreshold>,
    /// Slice of the window the threshold was taken at.
    slow_slice: u64,
    /// Edge of `max_p99_latency`.
    p99_at: Option<usize>,
    errors: Option<Comparison>,
    latency: Option<Comparison>,
    /// Answers slower than `max_p99_latency`, against the baseline's: whether
    /// a pool over that limit is worse than its baseline.
    limit: Option<Comparison>,
    /// A `failing` verdict, held until reset.
    latched: Option<Verdict>,
    last: VerdictKind,
    since: Instant,
    ticks: u64,
}

impl Judge {
    /// A judge for pool `pool`, its evidence starting at `now`.
    pub fn new(pool: &str, config: JudgeConfig, now: Instant) -> Judge {
        let alpha = (1.0 - config.confidence).clamp(1e-12, 0.5);
        let with_baseline = config.baseline.is_some();
        let with_latency = with_baseline && config.max_latency_ratio.is_some();
        let rules = if with_latency { 2.0 } else { 1.0 };
        let gate = GATE_SHARE * alpha / 2.0;
        let levels = Levels {
            version: math::ln(rules / (VERSION_SHARE * alpha)),
            recent: math::ln(RESTARTS_PER_HOUR * rules / ((1.0 - VERSION_SHARE) * alpha)),
            healthy: math::ln(rules / alpha),
            gate_version: math::ln(1.0 / gate),
            gate_recent: math::ln(RESTARTS_PER_HOUR / gate),
        };
        let edges = Edges::new(config.max_p99_latency);
        let p99_at = config.max_p99_latency.map(|limit| edges.at_or_above(limit));
        let window = Window::new(config.window, edges.buckets());
        Judge {
            pool: pool.to_string(),
            levels,
            epoch: now,
            open_tick: 0,
            open: [Tally::default(); 2],
            edges,
            window,
            slow: None,
            slow_slice: 0,
            p99_at,
            errors: with_baseline.then(|| Comparison::new(config.max_error_increase)),
            latency: with_latency.then(|| Comparison::new(LATENCY_ALLOWANCE)),
            limit: (with_baseline && p99_at.is_some()).then(|| Comparison::new(0.0)),
            latched: None,
            last: VerdictKind::Inconclusive,
            since: now,
            ticks: 0,
            config,
        }
    }

    /// The pool judged.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// How it is judged.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Ticks judged since the evidence began (shows the judge ran).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The latency rule's current threshold (`max_latency_ratio` × the
    /// baseline's p99, rounded up to a histogram edge), once the baseline
    /// has answered.
    pub fn slow_threshold(&self) -> Option<Duration> {
        self.slow.map(|s| s.limit)
    }

    /// Record one finished request of `side`.
    pub fn record(&mut self, side: Side, failed: bool, latency: Duration, now: Instant) {
        self.record_many(side, 1, u64::from(failed), latency, now);
    }

    /// Record `requests` finished requests of `side` that took `latency`,
    /// of which `failures` failed.
    pub fn record_many(&mut self, side: Side, requests: u64, failures: u64, latency: Duration, now: Instant) {
        self.advance(now);
        if requests == 0 {
            return;
        }
        let bucket = self.edges.bucket(latency);
        self.add(side, requests, failures.min(requests), bucket);
    }

    /// Count `requests` in latency `bucket`, `failures` of them failed, in
    /// the open tick and the window.
    fn add(&mut self, side: Side, requests: u64, failures: u64, bucket: usize) {
        let tally = &mut self.open[side as usize];
        tally.requests += requests;
        tally.failures += failures;
        if self.slow.is_some_and(|s| bucket > s.at) {
            tally.slow += requests;
        }
        if self.p99_at.is_some_and(|at| bucket > at) {
            tally.over_limit += requests;
        }
        self.window.add(side, requests, failures, bucket);
    }

    /// The latency buckets of a tally for [`Judge::record_tally`], for a
    /// recorder that needs its own copy to count without the judge.
    pub fn edges(&self) -> &Edges {
        &self.edges
    }

    /// Number of latency buckets of a tally for [`Judge::record_tally`].
    pub fn buckets(&self) -> usize {
        self.edges.buckets()
    }

    /// The latency bucket of `latency`, for a recorder that tallies the
    /// requests of a tick outside the judge (with atomic counters on the
    /// request path, say) and hands the tally over once per tick.
    pub fn bucket(&self, latency: Duration) -> usize {
        self.edges.bucket(latency)
    }

    /// Record a tally of `side`'s requests that ended at `at` (an instant in
    /// the tick the tally covers): `buckets[i]` requests ended in latency
    /// bucket `i` (see [`Judge::bucket`]), and `failures` of all of them
    /// failed. Buckets past [`Judge::buckets`] are counted in the last.
    pub fn record_tally(&mut self, side: Side, failures: u64, buckets: &[u64], at: Instant) {
        self.advance(at);
        let last = self.edges.buckets() - 1;
        let mut requests = 0;
        for (i, &n) in buckets.iter().enumerate().filter(|(_, &n)| n > 0) {
            self.add(side, n, 0, i.min(last));
            requests += n;
        }
        let failures = failures.min(requests);
        self.open[side as usize].failures += failures;
        self.window.add(side, 0, failures, 0);
    }

    /// Clear the evidence (a new version of the pool, or an operator's
    /// reset): the verdict starts again from `inconclusive`.
    pub fn reset(&mut self, now: Instant) {
        *self = Judge::new(&self.pool, self.config.clone(), now);
    }

    /// The verdict at `now`, on the ticks closed by then.
    pub fn verdict(&mut self, now: Instant) -> Verdict {
        let decision = self.decide_tracked(now);
        let verdict = match (&self.latched, decision) {
            (Some(latched), _) => latched.clone(),
            (None, decision) => self.explain(decision, now),
        };
        if verdict.kind == VerdictKind::Failing {
            self.latched.get_or_insert_with(|| verdict.clone());
        }
        verdict
    }

    /// Only the kind of verdict at `now`: what [`Judge::verdict`] gives,
    /// without writing its reason (cheap enough for every tick).
    pub fn kind(&mut self, now: Instant) -> VerdictKind {
        match self.decide_tracked(now) {
            Decision::Failing(..) => self.verdict(now).kind,
            Decision::Healthy => VerdictKind::Healthy,
            Decision::Inconclusive => VerdictKind::Inconclusive,
        }
    }

    /// [`Judge::decide`], noting since when the kind of verdict holds.
    fn decide_tracked(&mut self, now: Instant) -> Decision {
        let decision = self.decide(now);
        let kind = match decision {
            Decision::Failing(..) => VerdictKind::Failing,
            Decision::Healthy => VerdictKind::Healthy,
            Decision::Inconclusive => VerdictKind::Inconclusive,
        };
        if kind != self.last {
            self.last = kind;
            self.since = now;
        }
        decision
    }

    /// Close the ticks that ended by `now` and move the window.
    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.epoch);
        let tick = u64::try_from(elapsed.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX - 1);
        let closed = tick > self.open_tick;
        if closed {
            // The restart points are the tick boundaries at multiples of
            // RESTART_TICKS; an idle gap after the open tick changes nothing,
            // so a point inside it is as good as the open tick's end.
            let restart = tick / RESTART_TICKS > self.open_tick / RESTART_TICKS;
            self.close(restart);
            self.open_tick = tick;
        }
        let slice = self.window.slice_of(elapsed);
        self.window.roll(slice);
        // The threshold changes only between ticks, so both pools' slow
        // answers in a tick are judged against the same one.
        if closed && slice != self.slow_slice {
            self.slow_slice = slice;
            self.update_slow_threshold();
        }
    }

    /// Fold the open tick into the sequential tests.
    fn close(&mut self, restart: bool) {
        let [pool, base] = std::mem::take(&mut self.open);
        let tick = self.open_tick;
        if let Some(errors) = &mut self.errors {
            errors.fold(
                tick,
                Counts { requests: pool.requests, bad: pool.failures },
                Counts { requests: base.requests, bad: base.failures },
                restart,
            );
        }
        if let Some(latency) = &mut self.latency {
            latency.fold(
                tick,
                Counts { requests: pool.requests, bad: pool.slow },
                Counts { requests: base.requests, bad: base.slow },
                restart,
            );
        }
        if let Some(limit) = &mut self.limit {
            limit.fold(
                tick,
                Counts { requests: pool.requests, bad: pool.over_limit },
                Counts { requests: base.requests, bad: base.over_limit },
                restart,
            );
        }
        self.ticks += 1;
        if self.slow.is_none() && self.latency.is_some() {
            // The first threshold as soon as the baseline has answered.
            self.update_slow_threshold();
        }
    }

    fn update_slow_threshold(&mut self) {
        let Some(ratio) = self.config.max_latency_ratio else { return };
        if self.latency.is_none() {
            return;
        }
        let Some(bucket) = self.window.side(Side::Baseline).p99_bucket() else { return };
        let p99 = self.edges.edge(bucket);
        // Saturating: a ratio too large for a `Duration` means no answer
        // is slow enough, which is what the top bucket says.
        let limit = Duration::try_from_secs_f64(p99.as_secs_f64() * ratio).unwrap_or(Duration::MAX);
        let at = self.edges.at_or_above(limit);
        self.slow = Some(SlowThreshold { at, p99, limit: self.edges.edge(at) });
    }

    /// Whether `cmp` shows the pool worse than its baseline at all (the
    /// lower bound of the excess above zero), since the version began or
    /// over the recent span; with no baseline, trivially yes.
    fn worse_than_baseline(&self, cmp: Option<&Comparison>) -> bool {
        match cmp {
            None => true,
            Some(c) => c.lower(0.0) >= self.levels.gate_version || c.recent(0.0) >= self.levels.gate_recent,
        }
    }

    fn over_error_rate(&self) -> bool {
        let w = self.window.side(Side::Pool);
        self.config
            .max_error_rate
            .is_some_and(|max| w.requests >= self.config.min_requests && w.failures as f64 / w.requests as f64 > max)
    }

    fn over_p99(&self) -> bool {
        let w = self.window.side(Side::Pool);
        self.p99_at.is_some_and(|at| w.requests >= self.config.min_requests && w.slower_than(at) * 100 > w.requests)
    }

    fn decide(&mut self, now: Instant) -> Decision {
        self.advance(now);
        if let Some(latched) = &self.latched {
            return Decision::Failing(latched.evidence.rule, latched.evidence.scope);
        }
        let levels = self.levels;
        for (cmp, allowed, rule) in [
            (&self.errors, self.config.max_error_increase, Rule::ErrorIncrease),
            (&self.latency, LATENCY_ALLOWANCE, Rule::LatencyRatio),
        ] {
            if let Some(c) = cmp {
                if c.lower(allowed) >= levels.version {
                    return Decision::Failing(rule, Scope::Version);
                }
                if c.recent(allowed) >= levels.recent {
                    return Decision::Failing(rule, Scope::Recent);
                }
            }
        }
        if self.over_error_rate() && self.worse_than_baseline(self.errors.as_ref()) {
            return Decision::Failing(Rule::ErrorRate, Scope::Window);
        }
        if self.over_p99() && self.worse_than_baseline(self.limit.as_ref()) {
            return Decision::Failing(Rule::P99Latency, Scope::Window);
        }
        if self.over_error_rate() || self.over_p99() {
            return Decision::Inconclusive;
        }
        let healthy = match &self.errors {
            Some(errors) => {
                errors.totals().0.requests >= self.config.min_requests
                    && errors.upper(self.config.max_error_increase) >= levels.healthy
                    && self.latency.as_ref().is_none_or(|l| l.upper(LATENCY_ALLOWANCE) >= levels.healthy)
            }
            None => self.window.side(Side::Pool).requests >= self.config.min_requests,
        };
        if healthy {
            Decision::Healthy
        } else {
            Decision::Inconclusive
        }
    }

    /// The verdict for `decision`, with its evidence and reason.
    fn explain(&mut self, decision: Decision, now: Instant) -> Verdict {
        let (kind, evidence, reason) = match decision {
            Decision::Failing(rule, scope) => {
                let (evidence, reason) = self.explain_failing(rule, scope, now);
                (VerdictKind::Failing, evidence, reason)
            }
            Decision::Healthy => {
                let (evidence, reason) = self.explain_standing(true, now);
                (VerdictKind::Healthy, evidence, reason)
            }
            Decision::Inconclusive => {
                let (evidence, reason) = self.explain_standing(false, now);
                (VerdictKind::Inconclusive, evidence, reason)
            }
        };
        Verdict { kind, evidence, reason, since: self.since }
    }

    fn baseline_name(&self) -> &str {
        self.config.baseline.as_deref().unwrap_or("baseline")
    }

    fn version_span(&self) -> Duration {
        TICK * u32::try_from(self.open_tick).unwrap_or(u32::MAX)
    }

    fn explain_failing(&self, rule: Rule, scope: Scope, now: Instant) -> (Evidence, String) {
        let pool = &self.pool;
        let base = self.baseline_name();
        let conf = text::confidence(self.config.confidence);
        let window = text::span(self.config.window);
        match rule {
            Rule::ErrorIncrease | Rule::LatencyRatio => {
                let (cmp, allowed) = if rule == Rule::ErrorIncrease {
                    (self.errors.as_ref(), self.config.max_error_increase)
                } else {
                    (self.latency.as_ref(), LATENCY_ALLOWANCE)
                };
                let Some(cmp) = cmp else {
                    // Relative rules decide only with their comparison.
                    let evidence = Evidence {
                        rule,
                        scope,
                        span: self.version_span(),
                        pool: Counts::default(),
                        baseline: Counts::default(),
                        bound: None,
                        allowed,
                    };
                    return (evidence, format!("{pool} failing"));
                };
                let (span, p, b, bound, over) = if scope == Scope::Recent {
                    let s = cmp.recent_span();
                    let ticks = self.open_tick.saturating_sub(s.from_tick + 1).max(1);
                    let span = TICK * u32::try_from(ticks).unwrap_or(u32::MAX);
                    let over = format!(" over the last {}", text::span(span));
                    (span, s.pool, s.base, cmp.recent_lower_bound(self.levels.recent), over)
                } else {
                    let (p, b) = cmp.totals();
                    (self.version_span(), p, b, cmp.lower_bound(self.levels.version), String::new())
                };
                let what = if rule == Rule::ErrorIncrease {
                    format!("{pool} failing: {} of {}", text::percent(p.share()), text::count(p.requests))
                } else {
                    let (limit, p99) = self.slow.map(|s| (s.limit, s.p99)).unwrap_or_default();
                    format!(
                        "{pool} slow: {} of {} slower than {} ({} x {base} p99 {})",
                        text::percent(p.share()),
                        text::count(p.requests),
                        text::latency(limit),
                        self.config.max_latency_ratio.unwrap_or(1.0),
                        text::latency(p99)
                    )
                };
                let reason = format!(
                    "{what} vs {base} {} of {}{over}; excess ≥ {} points at {conf} > allowed {}",
                    text::percent(b.share()),
                    text::count(b.requests),
                    text::points(bound.unwrap_or(allowed)),
                    text::points(allowed)
                );
                (Evidence { rule, scope, span, pool: p, baseline: b, bound, allowed }, reason)
            }
            Rule::ErrorRate => {
                let w = self.window.side(Side::Pool);
                let bw = self.window.side(Side::Baseline);
                let p = Counts { requests: w.requests, bad: w.failures };
                let b = Counts { requests: bw.requests, bad: bw.failures };
                let max = self.config.max_error_rate.unwrap_or(0.0);
                let mut reason = format!(
                    "{pool} failing: error rate {} > {} over {window}, n={}",
                    text::percent(p.share()),
                    text::percent(max),
                    text::count(p.requests)
                );
                let bound = self.errors.as_ref().map(|e| {
                    let version = e.lower_bound(self.levels.gate_version).unwrap_or(-1.0);
                    let recent = e.recent_lower_bound(self.levels.gate_recent).unwrap_or(-1.0);
                    version.max(recent)
                });
                if let Some(bound) = bound {
                    reason.push_str(&format!(
                        ", vs {base} {} of {}; worse by ≥ {} points at {conf}",
                        text::percent(b.share()),
                        text::count(b.requests),
                        text::points(bound.max(0.0))
                    ));
                }
                let span = self.config.window.min(now.saturating_duration_since(self.epoch));
                (Evidence { rule, scope, span, pool: p, baseline: b, bound, allowed: max }, reason)
            }
            Rule::P99Latency => {
                let at = self.p99_at.unwrap_or(0);
                let w = self.window.side(Side::Pool);
                let bw = self.window.side(Side::Baseline);
                let p = Counts { requests: w.requests, bad: w.slower_than(at) };
                let b = Counts { requests: bw.requests, bad: bw.slower_than(at) };
                let limit = self.config.max_p99_latency.unwrap_or_default();
                let p99 = |side: &window::SideWindow| side.p99_bucket().map(|i| text::latency(self.edges.edge(i)));
                let mut reason = format!(
                    "{pool} slow: p99 latency {} > {} over {window}, n={} ({} slower)",
                    p99(w).unwrap_or_default(),
                    text::latency(limit),
                    text::count(p.requests),
                    text::count(p.bad)
                );
                if self.errors.is_some() {
                    reason.push_str(&format!(", vs {base} p99 {}", p99(bw).unwrap_or_else(|| "-".into())));
                }
                let span = self.config.window.min(now.saturating_duration_since(self.epoch));
                let allowed = limit.as_secs_f64();
                (Evidence { rule, scope, span, pool: p, baseline: b, bound: None, allowed }, reason)
            }
        }
    }

    /// Evidence and reason of a `healthy` or `inconclusive` verdict.
    fn explain_standing(&self, healthy: bool, now: Instant) -> (Evidence, String) {
        let pool = &self.pool;
        let word = if healthy { "healthy" } else { "inconclusive" };
        let Some(errors) = &self.errors else {
            let w = self.window.side(Side::Pool);
            let p = Counts { requests: w.requests, bad: w.failures };
            let reason = format!(
                "{pool} {word}: {} of {} failed over {}{}",
                text::percent(p.share()),
                text::count(p.requests),
                text::span(self.config.window),
                if w.requests < self.config.min_requests {
                    format!(", fewer than min_requests = {}", self.config.min_requests)
                } else {
                    String::new()
                }
            );
            let span = self.config.window.min(now.saturating_duration_since(self.epoch));
            let evidence = Evidence {
                rule: Rule::ErrorRate,
                scope: Scope::Window,
                span,
                pool: p,
                baseline: Counts::default(),
                bound: None,
                allowed: self.config.max_error_rate.unwrap_or(1.0),
            };
            return (evidence, reason);
        };
        let base = self.baseline_name();
        let conf = text::confidence(self.config.confidence);
        let allowed = self.config.max_error_increase;
        let (p, b) = errors.totals();
        let upper = errors.upper_bound(self.levels.healthy);
        let lower = errors.lower_bound(self.levels.version);
        let figures = format!(
            "{} of {} vs {base} {} of {}",
            text::percent(p.share()),
            text::count(p.requests),
            text::percent(b.share()),
            text::count(b.requests)
        );
        let reason = if healthy {
            format!(
                "{pool} healthy: {figures}; excess ≤ {} points at {conf} < allowed {}",
                text::points(upper.unwrap_or(allowed)),
                text::points(allowed)
            )
        } else if p.requests < self.config.min_requests {
            format!("{pool} inconclusive: {figures}, fewer than min_requests = {}", self.config.min_requests)
        } else if self.over_error_rate() || self.over_p99() {
            format!("{pool} inconclusive: {figures}; over an absolute limit, as {base} is")
        } else {
            format!(
                "{pool} inconclusive: {figures}; excess between {} and {} points at {conf}, allowed {}",
                text::points(lower.unwrap_or(-1.0)),
                text::points(upper.unwrap_or(1.0)),
                text::points(allowed)
            )
        };
        let bound = if healthy { upper } else { None };
        let evidence = Evidence {
            rule: Rule::ErrorIncrease,
            scope: Scope::Version,
            span: self.version_span(),
            pool: p,
            baseline: b,
            bound,
            allowed,
        };
        (evidence, reason)
    }
}

#[cfg(test)]
mod tests;
